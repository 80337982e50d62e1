"""submissions/ledger.csv: every file sent to Kaggle, with its sha256, OOF score and leaderboard score.

Rewritten whole and atomically on each change, so a killed process never leaves half a ledger.
Every value is kept as text (a sha256 or a Kaggle ref must never become a float).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from comp.errors import CompError
from comp.io import write_csv
from comp.runs import LEDGER

COLUMNS = ["time", "file", "sha256", "message", "oof_score", "kaggle_ref", "status", "public_score"]
KERNEL_COLUMNS = ["kernel", "kernel_version", "dataset_version"]  # code submissions: which notebook and data
COLUMNS += KERNEL_COLUMNS


def read_ledger(path: Path = LEDGER) -> pd.DataFrame:
    """The ledger's rows (all text); an empty table when there is no ledger yet."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS, dtype=str)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CompError(f"{path} is not a readable CSV: {exc}", hint="Restore it from git or fix it by hand.") from None
    for column in KERNEL_COLUMNS:  # a ledger written before code submissions
        if column not in table.columns:
            table[column] = ""
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise CompError(
            f"{path} lacks the column(s) {', '.join(missing)}; its columns are {', '.join(table.columns)}.",
            hint=f"The ledger's header is: {','.join(COLUMNS)}.",
        )
    return table


def find_by_sha256(sha256: str, path: Path = LEDGER) -> dict[str, str] | None:
    """The first ledger row of a file with this content, or None."""
    table = read_ledger(path)
    rows = table[table["sha256"] == sha256]
    return None if rows.empty else rows.iloc[0].to_dict()


def find_kernel_submission(kernel: str, version: int, file: str, path: Path = LEDGER) -> dict[str, str] | None:
    """The first ledger row of this kernel version's output file, or None."""
    table = read_ledger(path)
    rows = table[(table["kernel"] == kernel) & (table["kernel_version"] == str(version)) & (table["file"] == file)]
    return None if rows.empty else rows.iloc[0].to_dict()


def oof_by_ref(path: Path = LEDGER) -> dict[str, str]:
    """Kaggle ref -> OOF score, for the rows that have both."""
    table = read_ledger(path)
    known = table[(table["kaggle_ref"] != "") & (table["oof_score"] != "")]
    return dict(zip(known["kaggle_ref"], known["oof_score"], strict=True))


def append_entry(entry: dict[str, object], path: Path = LEDGER) -> None:
    unknown = set(entry) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown ledger columns: {sorted(unknown)}")
    row = {c: "" if entry.get(c) is None else str(entry[c]) for c in COLUMNS}
    table = read_ledger(path)
    table = pd.concat([table, pd.DataFrame([row], columns=table.columns)], ignore_index=True)
    write_csv(path, table)


def update_entry(kaggle_ref: str, values: dict[str, object], path: Path = LEDGER) -> bool:
    """Set columns of the row with this Kaggle ref; False when no row has it or nothing changed."""
    table = read_ledger(path)
    rows = table["kaggle_ref"] == str(kaggle_ref)
    new = {c: "" if v is None else str(v) for c, v in values.items()}
    if not rows.any() or all((table.loc[rows, c] == v).all() for c, v in new.items()):
        return False
    for column, value in new.items():
        table.loc[rows, column] = value
    write_csv(path, table)
    return True
