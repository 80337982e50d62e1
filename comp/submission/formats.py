"""Submissions in the competition's own format, and the validator that checks a CSV before it leaves.

The sample submission is the template: its first column holds the ids and the other columns say
the format (DESIGN.md, "Sample submission formats"): one label column, one probability column per
class, or one probability column for a binary task. Rows are aligned by id, never by row order.
"""

from __future__ import annotations

import csv
import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from comp.config import Config
from comp.data.competition import column_name, load_classes, read_csv_text
from comp.errors import CompError
from comp.io import write_csv
from comp.runs import run_dir

FORMATS = ("label", "probabilities", "binary")
# Kaggle's upload limit varies by competition; past this size uploads get slow or are refused.
SIZE_WARNING_BYTES = 100 * 1024**2
SUM_TOLERANCE = 1e-3  # probabilities rounded to a few decimals still sum to 1 within this
ROWS_SHOWN = 5  # row-level problems of one kind listed one by one before the rest are counted
NAN_TEXTS = {"nan", "na", "n/a", "null", "none", "<na>", "inf", "-inf", "+inf", "infinity", "-infinity"}
_INTEGER = re.compile(r"[+-]?\d+")


def _value_columns(sample: pd.DataFrame) -> list[str]:
    return [str(c) for c in sample.columns[1:]]


def _is_integer_text(text: str) -> bool:
    return bool(_INTEGER.fullmatch(text.strip()))


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _preview(items, n: int = 5) -> str:
    items = list(items)
    shown = ", ".join(repr(str(i)) for i in items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


# ----------------------------------------------------------------------------- format


def read_sample_submission(path: str | Path) -> pd.DataFrame:
    """The sample submission with every value kept as its text; its first column holds the ids."""
    sample = read_csv_text(Path(path))
    if sample.shape[1] < 2 or sample.empty:
        raise CompError(
            f"Sample submission {path} needs an id column, at least one prediction column and rows.",
            hint="Check data.root and data.sample_submission, or download the competition again.",
        )
    return sample


def detect_format(sample: pd.DataFrame, classes: list | None, fmt: str = "auto") -> str:
    """'label', 'probabilities' or 'binary', from the sample's columns; `fmt` settles what auto cannot.

    `classes=None` means the classes are unknown (the validator without a run): the checks that
    need them are skipped.
    """
    if fmt not in ("auto", *FORMATS):
        raise CompError(f"submission.format is {fmt!r}; it must be one of auto, {', '.join(FORMATS)}.")
    columns = _value_columns(sample)
    if len(columns) > 1:
        if fmt in ("label", "binary"):
            raise CompError(
                f"submission.format is {fmt}, but the sample submission has {len(columns)} columns after "
                f"the id ({_preview(columns)}); the {fmt} format has exactly one.",
                hint="Set submission.format to probabilities or auto.",
            )
        _check_probability_columns(columns, classes)
        return "probabilities"
    if fmt == "probabilities":
        raise CompError(
            f"submission.format is probabilities, but the sample submission has one column after the id "
            f"({columns[0]!r}); the probabilities format has one column per class.",
            hint="Set submission.format to label, binary or auto.",
        )
    if fmt == "binary" and classes is not None and len(classes) != 2:
        raise CompError(
            f"submission.format is binary, but there are {len(classes)} classes, not two.",
            hint="Set submission.format to label or auto.",
        )
    if fmt != "auto":
        return fmt
    return _single_column_format(sample, classes)


def _single_column_format(sample: pd.DataFrame, classes: list | None) -> str:
    """One column: a binary probability when there are two classes and the values are fractions."""
    if classes is not None and len(classes) != 2:
        return "label"
    values = [v for v in sample.iloc[:, 1] if v.strip()]
    if not values:
        raise CompError(
            f"Cannot tell whether the sample submission's column {sample.columns[1]!r} holds labels or "
            "binary probabilities: its values are empty.",
            hint="Set submission.format to label or binary.",
        )
    numbers = [_as_number(v) for v in values]
    if all(n is not None for n in numbers) and not all(_is_integer_text(v) for v in values):
        return "binary"
    return "label"


def _check_probability_columns(columns: list[str], classes: list | None) -> None:
    if classes is None:
        return
    names = [column_name(c) for c in classes]
    missing = [n for n in names if n not in columns]
    extra = [c for c in columns if c not in names]
    if missing or extra:
        parts = [
            f"no column for the classes {_preview(missing)}" if missing else "",
            f"columns that are not classes {_preview(extra)}" if extra else "",
        ]
        raise CompError(
            "The sample submission's probability columns don't match the class labels: "
            + "; ".join(p for p in parts if p)
            + ".",
            hint="Probability columns are matched to classes by name (runs/<name>/classes.json): check that "
            "data.sample_submission belongs to the competition the model was trained on.",
        )


def positive_index(classes: list, column: str, positive_class=None) -> int:
    """The class whose probability a binary column holds: `positive_class`, else the class the column
    is named after, else the larger label."""
    names = [column_name(c) for c in classes]
    if positive_class is not None:
        if column_name(positive_class) not in names:
            raise CompError(
                f"submission.positive_class is {positive_class!r}, which is not one of the classes {_preview(names)}.",
                hint="Set it to one of the class labels, or to null.",
            )
        return names.index(column_name(positive_class))
    if column in names:
        return names.index(column)
    return classes.index(max(classes))


# ----------------------------------------------------------------------------- writing


def _class_probabilities(probs: pd.DataFrame, classes: list) -> np.ndarray:
    """The predictions as a float array in class order, refusing missing columns and NaN/inf."""
    names = [column_name(c) for c in classes]
    missing = [n for n in names if n not in probs.columns]
    extra = [str(c) for c in probs.columns if str(c) not in names]
    if missing or extra:
        raise CompError(
            f"The predictions' columns don't match the classes (missing {_preview(missing)}, "
            f"unexpected {_preview(extra)}).",
            hint="Predict again with the run's classes.json, or blend runs with the same classes.",
        )
    values = probs[names].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        raise CompError(
            f"{bad.sum()} prediction row(s) hold NaN or inf (ids {_preview(probs.index[bad])}).",
            hint="Predict again; if it repeats, the model diverged (lower train.lr, or train.amp=false).",
        )
    return values


def _align(probs: pd.DataFrame, values: np.ndarray, ids: pd.Series) -> np.ndarray:
    """Rows of `values` for the sample's ids, in the sample's order."""
    index = pd.Index(probs.index.astype(str))
    if index.has_duplicates:
        raise CompError(
            f"The predictions hold duplicate ids ({_preview(index[index.duplicated()].unique())}).",
            hint="Each test id must be predicted once; predict again.",
        )
    positions = index.get_indexer(ids)
    missing = ids[positions < 0]
    if len(missing):
        raise CompError(
            f"{len(missing)} of the sample submission's {len(ids)} ids have no prediction "
            f"(first: {_preview(missing)}).",
            hint="Predictions are matched to the sample by id: predict the test set of this competition "
            "(data.root, data.sample_submission) again.",
        )
    return values[positions]


def _normalise(values: np.ndarray, ids: pd.Series) -> np.ndarray:
    clipped = np.clip(values, 0.0, 1.0)
    sums = clipped.sum(axis=1, keepdims=True)
    empty = sums[:, 0] <= 0
    if empty.any():
        raise CompError(
            f"{empty.sum()} prediction row(s) have no positive probability (ids {_preview(ids[empty])}).",
            hint="Predict again; these rows cannot be renormalised.",
        )
    return clipped / sums


def make_submission(
    sample: pd.DataFrame, probs: pd.DataFrame, classes: list, fmt: str = "auto", positive_class=None
) -> pd.DataFrame:
    """The sample's columns and ids, in its order, filled from `probs` (indexed by id, a column per class)."""
    fmt = detect_format(sample, classes, fmt)
    ids = sample.iloc[:, 0].astype(str)
    values = _align(probs, _class_probabilities(probs, classes), ids)
    id_column, columns = sample.columns[0], _value_columns(sample)
    out = pd.DataFrame({id_column: ids.to_numpy(dtype=object)})
    if fmt == "label":
        labels = [classes[i] for i in values.argmax(axis=1)]  # the label's own type: 10 stays the int 10
        out[columns[0]] = pd.Series(labels, dtype=object)
    elif fmt == "binary":
        out[columns[0]] = _normalise(values, ids)[:, positive_index(classes, columns[0], positive_class)]
    else:
        normalised = _normalise(values, ids)
        names = [column_name(c) for c in classes]
        for column in columns:
            out[column] = normalised[:, names.index(column)]
    return out


def write_submission(frame: pd.DataFrame, path: str | Path) -> None:
    """Write the CSV atomically: no index, ids as text, labels as written by make_submission."""
    if frame.isna().any().any():
        raise CompError(
            f"Refusing to write {path}: the submission holds missing values.",
            hint="Build it with make_submission, which fills every row of the sample.",
        )
    write_csv(path, frame, lineterminator="\n")


# ----------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a submission file."""

    row: int | None  # line number in the file (the header is line 1); None for file-level problems
    column: str | None
    message: str
    fix: str
    severity: str = "error"  # "warning": Kaggle accepts the file, but it differs from the sample

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


def _capped(problems: list[Problem]) -> list[Problem]:
    """The first few row-level problems of one kind, then one line that counts the rest."""
    if len(problems) <= ROWS_SHOWN:
        return problems
    first, rest = problems[0], len(problems) - ROWS_SHOWN
    return problems[:ROWS_SHOWN] + [
        Problem(None, first.column, f"{rest} more row(s) with the same problem", first.fix, first.severity)
    ]


@dataclass
class _Table:
    """A submission as read: the raw header, its rows as text, and each row's line in the file."""

    header: list[str]
    rows: list[list[str]]
    lines: list[int]

    def column(self, name: str) -> list[str]:
        position = self.header.index(name)
        return [row[position] for row in self.rows]


def _read_table(path: Path) -> tuple[_Table | None, list[Problem]]:
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
    return _Table(header, rows[1:], lines[1:]), problems


def _check_columns(header: list[str], expected: list[str]) -> list[Problem]:
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


def _check_ids(table: _Table, id_column: str, sample_ids: list[str]) -> list[Problem]:
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
                f"{len(missing)} id(s) of the sample submission are missing (first: {_preview(missing)}).",
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
        integers = all(_is_integer_text(v) for v in sample_values if v.strip())
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
        elif integers and not _is_integer_text(text):
            number = _as_number(text)
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
                    f"Use one of: {_preview(map(column_name, classes), 10)}.",
                )
            )
    return _capped(empty) + _capped(missing) + _capped(not_integer) + _capped(unknown)


def _check_probabilities(values: list[str], lines: list[int], column: str) -> tuple[list[Problem], np.ndarray]:
    """Problems of one probability column, and its values as floats (NaN where unusable)."""
    numbers = np.full(len(values), np.nan)
    fix = "Write a probability between 0 and 1."
    empty, not_number, not_finite, out_of_range = [], [], [], []
    for i, (value, line) in enumerate(zip(values, lines, strict=True)):
        text = value.strip()
        number = _as_number(text) if text else None
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
    table: _Table, columns: list[str], parsed: dict[str, np.ndarray], sample: pd.DataFrame
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


def _check_values(table: _Table, sample: pd.DataFrame, fmt: str, classes: list | None) -> list[Problem]:
    columns = [c for c in _value_columns(sample) if c in table.header]
    if fmt == "label":
        return [p for c in columns for p in _check_labels(table.column(c), table.lines, c, classes, list(sample[c]))]
    problems, parsed = [], {}
    for column in columns:
        found, parsed[column] = _check_probabilities(table.column(column), table.lines, column)
        problems += found
    if fmt == "probabilities" and len(columns) == len(_value_columns(sample)):
        problems += _check_row_sums(table, columns, parsed, sample)
    return problems


def validate_submission(
    csv_path: str | Path,
    sample_path: str | Path,
    classes: list | None = None,
    fmt: str = "auto",
    positive_class=None,
) -> list[Problem]:
    """Everything wrong with a submission CSV, checked against the sample submission.

    Checks the file's size and encoding, the columns (names and order), the ids (set, order,
    duplicates, row count), the empty, NaN and inf values, the labels' type and vocabulary (the
    vocabulary only when `classes` is known), and the probabilities' range and row sums.
    Problems with severity "warning" do not make the file invalid.
    """
    sample = read_sample_submission(sample_path)
    fmt = detect_format(sample, classes, fmt)
    if fmt == "binary" and classes is not None:
        positive_index(classes, _value_columns(sample)[0], positive_class)  # a bad setting is a config error
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise CompError(f"Submission file {csv_path} not found.", hint="Check the path (submissions/ holds comp's).")
    problems = []
    size = csv_path.stat().st_size
    if size > SIZE_WARNING_BYTES:
        problems.append(
            Problem(
                None,
                None,
                f"The file is {size / 1024**2:.0f} MB.",
                "Kaggle may refuse or time out on large uploads: zip it, or round the probabilities to fewer digits.",
                "warning",
            )
        )
    table, found = _read_table(csv_path)
    problems += found
    if table is None:
        return problems
    expected = [str(c) for c in sample.columns]
    problems += _check_columns(table.header, expected)
    if expected[0] in table.header:
        problems += _check_ids(table, expected[0], list(sample.iloc[:, 0]))
    return problems + _check_values(table, sample, fmt, classes)


def validate_with_config(csv_path: str | Path, config: Config) -> tuple[list[Problem], list | None]:
    """validate_submission with the config's sample submission, format and the run's classes.json.

    Returns the problems and the classes used (None when the run has no classes.json yet).
    """
    classes_path = run_dir(config.name) / "classes.json"
    try:
        classes = load_classes(classes_path) if classes_path.exists() else None
    except ValueError:
        classes = "unreadable"
    if classes is not None and not isinstance(classes, list):
        raise CompError(
            f"{classes_path} must hold a JSON list of class labels.",
            hint="Delete it and run `comp train` again.",
        )
    sample_path = Path(config.data.root) / config.data.sample_submission
    problems = validate_submission(
        csv_path, sample_path, classes, config.submission.format, config.submission.positive_class
    )
    return problems, classes
