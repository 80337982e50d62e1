"""The validator's checks, one part of a submission CSV each: its structure as read (encoding,
ragged rows), its columns, its ids, and its values (labels, or probabilities and their row sums).

Each finding is a Problem that says where it is (line, column), what is wrong and the fix; a kind
of problem found on many rows is listed for the first few rows, then counted.
"""

from __future__ import annotations

import csv
import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from comp.data.competition import column_name
from comp.submission.formats import as_number, is_integer_text, preview, sample_k, value_columns

SUM_TOLERANCE = 1e-3  # probabilities rounded to a few decimals still sum to 1 within this
ROWS_SHOWN = 5  # row-level problems of one kind listed one by one before the rest are counted
Severity = Literal["error", "warning"]
NAN_TEXTS = {"nan", "na", "n/a", "null", "none", "<na>", "inf", "-inf", "+inf", "infinity", "-infinity"}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a submission file."""

    row: int | None  # line number in the file (the header is line 1); None for file-level problems
    column: str | None
    message: str
    fix: str
    severity: Severity = "error"  # "warning": Kaggle accepts the file, but it differs from the sample

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def describe(self) -> str:
        """One line: where, what, and the fix in brackets."""
        places = [f"line {self.row}" if self.row is not None else "", f"column '{self.column}'" if self.column else ""]
        where = ", ".join(p for p in places if p)
        return f"{where + ': ' if where else ''}{self.message} ({self.fix})"


def _capped(problems: list[Problem]) -> list[Problem]:
    """The first few row-level problems of one kind, then one line that counts the rest."""
    if len(problems) <= ROWS_SHOWN:
        return problems
    first, rest = problems[0], len(problems) - ROWS_SHOWN
    return problems[:ROWS_SHOWN] + [
        Problem(None, first.column, f"{rest} more row(s) with the same problem", first.fix, first.severity)
    ]


@dataclass
class SubmissionTable:
    """A submission as read: the raw header, its rows as text, and each row's line in the file."""

    header: list[str]
    rows: list[list[str]]
    lines: list[int]

    def column(self, name: str) -> list[str]:
        position = self.header.index(name)
        return [row[position] for row in self.rows]


def read_table(path: Path) -> tuple[SubmissionTable | None, list[Problem]]:
    """Parse the CSV; structural problems (encoding, empty file, ragged rows) stop the validation."""
    rows, lines, problems = [], [], []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            end_of_previous = 0
            for row in reader:
                start, end_of_previous = end_of_previous + 1, reader.line_num
                if row:  # blank lines are skipped, as pandas and Kaggle do
                    rows.append(row)
                    lines.append(start)
    except UnicodeDecodeError as exc:
        return None, [
            Problem(
                None,
                None,
                f"The file is not UTF-8 text ({exc.reason} at byte {exc.start}).",
                "Save it as UTF-8 CSV.",
            )
        ]
    except csv.Error as exc:
        return None, [Problem(None, None, f"The file is not a readable CSV: {exc}.", "Write it with a CSV writer.")]
    if not rows:
        return None, [Problem(None, None, "The file is empty.", "Write the header and one row per sample id.")]
    header = rows[0]
    if header[0].startswith("\ufeff"):
        problems.append(
            Problem(
                1,
                header[0],
                "The file starts with a byte-order mark (BOM).",
                "Save it as UTF-8 without BOM (pandas: to_csv(..., encoding='utf-8')).",
                "warning",
            )
        )
        header[0] = header[0].lstrip("\ufeff")
    ragged = [
        Problem(
            line,
            None,
            f"The row has {len(row)} field(s); the header has {len(header)}.",
            "Quote values that contain commas, and write one value per column.",
        )
        for row, line in zip(rows[1:], lines[1:], strict=True)
        if len(row) != len(header)
    ]
    if ragged:
        return None, problems + _capped(ragged)
    return SubmissionTable(header, rows[1:], lines[1:]), problems


def check_columns(header: list[str], expected: list[str]) -> list[Problem]:
    problems = []
    for name in sorted({n for n in header if header.count(n) > 1}):
        problems.append(
            Problem(
                1,
                name,
                f"Column {name!r} appears {header.count(name)} times.",
                "Keep one column of each name.",
            )
        )
    missing = [n for n in expected if n not in header]
    for name in [n for n in header if n not in expected]:
        close = difflib.get_close_matches(name, missing, n=1, cutoff=0.6)
        fix = f"Rename it to {close[0]!r}." if close else "Remove it: Kaggle refuses columns the sample lacks."
        problems.append(Problem(1, name, f"Column {name!r} is not in the sample submission.", fix))
    for name in missing:
        problems.append(
            Problem(
                1,
                name,
                f"Column {name!r} of the sample submission is missing.",
                f"Write the sample's columns: {', '.join(expected)}.",
            )
        )
    if not problems and header != expected:
        problems.append(
            Problem(
                1,
                None,
                "The columns are in another order than the sample's.",
                f"Write them in the sample's order: {', '.join(expected)}.",
                "warning",
            )
        )
    return problems


def _loose_id(text: str) -> str:
    """An id with the usual accidents undone: case, spaces, a file extension, leading zeros, '.0'."""
    stem = text.strip().lower().rsplit(".", 1)[0]
    if stem.isdigit():
        return stem.lstrip("0") or "0"
    return stem


def check_ids(table: SubmissionTable, id_column: str, sample_ids: list[str]) -> list[Problem]:
    ids = table.column(id_column)
    problems = []
    if len(ids) != len(sample_ids):
        problems.append(
            Problem(
                None,
                None,
                f"The file has {len(ids)} rows; the sample submission has {len(sample_ids)}.",
                "Write exactly one row per id of the sample submission.",
            )
        )
    expected = set(sample_ids)
    loose = {_loose_id(i): i for i in sample_ids}
    first_line: dict[str, int] = {}
    empty, duplicates, unknown = [], [], []
    for value, line in zip(ids, table.lines, strict=True):
        if not value.strip():
            empty.append(Problem(line, id_column, "The id is empty.", "Write the sample submission's id."))
        elif value in first_line:
            duplicates.append(
                Problem(
                    line,
                    id_column,
                    f"Id {value!r} appears again (first on line {first_line[value]}).",
                    "Keep one row per id.",
                )
            )
        else:
            first_line[value] = line
            if value not in expected:
                meant = loose.get(_loose_id(value))
                fix = (
                    f"Write the id exactly as the sample does: {meant!r}."
                    if meant
                    else "Remove the row: only the sample submission's ids are scored."
                )
                unknown.append(Problem(line, id_column, f"Id {value!r} is not in the sample submission.", fix))
    problems += _capped(empty) + _capped(duplicates) + _capped(unknown)
    missing = [i for i in sample_ids if i not in first_line]
    if missing:
        problems.append(
            Problem(
                None,
                id_column,
                f"{len(missing)} id(s) of the sample submission are missing (first: {preview(missing)}).",
                "Write one row for every id of the sample.",
            )
        )
    if not problems and ids != sample_ids:
        line = next(line for value, want, line in zip(ids, sample_ids, table.lines, strict=True) if value != want)
        problems.append(
            Problem(
                line,
                id_column,
                "The rows are in another order than the sample's.",
                "Kaggle matches rows by id, so this scores the same; to match the sample, write the rows in its order.",
                "warning",
            )
        )
    return problems


def _check_labels(
    values: list[str], lines: list[int], column: str, classes: list | None, sample_values: list[str]
) -> list[Problem]:
    names = set(map(column_name, classes)) if classes is not None else None
    if classes is not None:
        integers = all(isinstance(c, int) for c in classes)
    else:
        integers = all(is_integer_text(v) for v in sample_values if v.strip())
    empty, missing, not_integer, unknown = [], [], [], []
    for value, line in zip(values, lines, strict=True):
        text = value.strip()
        if names is not None and value in names:
            continue
        if not text:
            empty.append(Problem(line, column, "The label is empty.", "Write the predicted class label."))
        elif text.lower() in NAN_TEXTS:
            missing.append(
                Problem(
                    line,
                    column,
                    f"The label is a missing value ({value!r}).",
                    "Write the predicted class label.",
                )
            )
        elif integers and not is_integer_text(text):
            number = as_number(text)
            fix = (
                f"Write integer labels without a decimal point ({int(number)}, not {value})."
                if number is not None and number.is_integer()
                else "Write an integer class label."
            )
            not_integer.append(Problem(line, column, f"{value!r} is not an integer label.", fix))
        elif names is not None:
            unknown.append(
                Problem(
                    line,
                    column,
                    f"{value!r} is not one of the {len(names)} class labels.",
                    f"Use one of: {preview(map(column_name, classes), 10)}.",
                )
            )
    return _capped(empty) + _capped(missing) + _capped(not_integer) + _capped(unknown)


def _check_label_lists(
    values: list[str], lines: list[int], column: str, classes: list | None, k: int | None
) -> list[Problem]:
    """Space-separated labels a cell: known labels, each once; at most k of them (top_k), at least one (tags)."""
    names = set(map(column_name, classes)) if classes is not None else None
    empty, repeated, unknown, too_many, too_few = [], [], [], [], []
    for value, line in zip(values, lines, strict=True):
        labels = value.split()
        if not labels:
            empty.append(Problem(line, column, "The cell holds no label.", "Write at least one label."))
            continue
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            repeated.append(Problem(line, column, f"{preview(twice)} written twice.", "Write each label once."))
        strange = [label for label in labels if names is not None and label not in names]
        if strange:
            fix = f"Use the class labels: {preview(sorted(names), 10)}."
            unknown.append(Problem(line, column, f"{preview(strange)} not among the class labels.", fix))
        if k is not None and len(labels) > k:
            fix = f"Write the {k} most probable labels, best first."
            too_many.append(Problem(line, column, f"{len(labels)} labels; the sample's rows hold {k}.", fix))
        elif k is not None and len(labels) < k:
            fix = f"Write {k} labels: the metric gives the extra guesses a chance."
            too_few.append(Problem(line, column, f"{len(labels)} label(s); the sample's hold {k}.", fix, "warning"))
    return _capped(empty) + _capped(repeated) + _capped(unknown) + _capped(too_many) + _capped(too_few)


def _check_probabilities(values: list[str], lines: list[int], column: str) -> tuple[list[Problem], np.ndarray]:
    """Problems of one probability column, and its values as floats (NaN where unusable)."""
    numbers = np.full(len(values), np.nan)
    fix = "Write a probability between 0 and 1."
    empty, not_number, not_finite, out_of_range = [], [], [], []
    for i, (value, line) in enumerate(zip(values, lines, strict=True)):
        text = value.strip()
        number = as_number(text) if text else None
        if not text:
            empty.append(Problem(line, column, "The value is empty.", fix))
        elif text.lower() in NAN_TEXTS or (number is not None and not math.isfinite(number)):
            not_finite.append(Problem(line, column, f"The value is {value!r}, not a finite number.", fix))
        elif number is None:
            not_number.append(Problem(line, column, f"{value!r} is not a number.", fix))
        elif not 0.0 <= number <= 1.0:
            out_of_range.append(Problem(line, column, f"{value} is outside [0, 1].", "Clip probabilities to [0, 1]."))
        else:
            numbers[i] = number
    return _capped(empty) + _capped(not_finite) + _capped(not_number) + _capped(out_of_range), numbers


def _sums_to_one(frame: np.ndarray) -> np.ndarray:
    return np.abs(frame.sum(axis=1) - 1.0) <= SUM_TOLERANCE


def _check_row_sums(
    table: SubmissionTable, columns: list[str], parsed: dict[str, np.ndarray], sample: pd.DataFrame
) -> list[Problem]:
    """Rows must sum to 1 when the sample's rows do (some samples hold zeros, and Kaggle renormalises)."""
    sample_values = sample[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    if not _sums_to_one(sample_values).all():
        return []
    values = np.column_stack([parsed[c] for c in columns])
    usable = np.isfinite(values).all(axis=1)
    wrong = usable & ~_sums_to_one(np.nan_to_num(values))
    sums = values.sum(axis=1)
    return _capped(
        [
            Problem(
                table.lines[i],
                None,
                f"The row's probabilities sum to {sums[i]:.6g}, not 1.",
                "Divide each row by its sum.",
            )
            for i in np.flatnonzero(wrong)
        ]
    )


def check_values(
    table: SubmissionTable, sample: pd.DataFrame, fmt: str, classes: list | None, task: str | None = None
) -> list[Problem]:
    columns = [c for c in value_columns(sample) if c in table.header]
    if fmt == "label":
        return [p for c in columns for p in _check_labels(table.column(c), table.lines, c, classes, list(sample[c]))]
    if fmt in ("tags", "top_k"):
        k = sample_k(sample) if fmt == "top_k" else None
        return [p for c in columns for p in _check_label_lists(table.column(c), table.lines, c, classes, k)]
    problems, parsed = [], {}
    for column in columns:
        found, parsed[column] = _check_probabilities(table.column(column), table.lines, column)
        problems += found
    if fmt == "probabilities" and len(columns) == len(value_columns(sample)) and task != "multilabel":
        problems += _check_row_sums(table, columns, parsed, sample)
    return problems
