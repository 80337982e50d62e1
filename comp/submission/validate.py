"""The validator: everything wrong with a submission CSV, checked against the sample submission
before the file leaves for Kaggle (`comp validate`, and `comp submit` before it sends anything).

Errors make the file invalid; warnings (a byte-order mark, another column or row order, a large
file) are differences from the sample that Kaggle accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text

from comp.config import Config
from comp.data.competition import load_classes
from comp.errors import CompError
from comp.runs import classes_file, read_cv, run_dir
from comp.submission.checks import Problem, check_columns, check_ids, check_values, read_table
from comp.submission.formats import detect_format, positive_index, read_sample_submission, value_columns

# Kaggle's upload limit varies by competition; past this size uploads get slow or are refused.
SIZE_WARNING_BYTES = 100 * 1024**2


@dataclass
class Validation:
    """What `comp validate` found in a file: its problems, and whether the run's classes were known."""

    file: Path
    problems: list[Problem]
    classes: list | None  # the run's classes the labels were checked against; None: no classes.json yet
    classes_path: Path

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if not p.is_error]

    @property
    def is_valid(self) -> bool:
        return not self.errors

    def __rich__(self) -> Group:
        parts = []
        if self.classes is None:
            parts.append(Text(f"No {self.classes_path}: the label vocabulary was not checked."))
        if self.problems:
            table = Table("line", "column", "problem", "fix", title=str(self.file))
            for p in self.problems:
                cells = ("" if p.row is None else str(p.row), p.column or "", p.message, p.fix)
                table.add_row(*map(Text, cells), style=None if p.is_error else "yellow")
            parts.append(table)
        if self.errors:
            verdict = (f"{self.file} is not a valid submission", "bold red"), f": {len(self.errors)} problem(s)."
        else:
            verdict = ((f"{self.file} is a valid submission", "green"),)
        return Group(*parts, Text.assemble(*verdict))


def validate_submission(
    csv_path: str | Path,
    sample_path: str | Path,
    classes: list | None = None,
    fmt: str = "auto",
    positive_class=None,
    task: str | None = None,
) -> list[Problem]:
    """Everything wrong with a submission CSV, checked against the sample submission.

    Checks the file's size and encoding, the columns (names and order), the ids (set, order,
    duplicates, row count), the empty, NaN and inf values, the labels' type and vocabulary (the
    vocabulary only when `classes` is known), the space-separated label lists of the tags and top_k
    formats, and the probabilities' range and row sums (not for a multilabel `task`: each tag's own).
    Problems with severity "warning" do not make the file invalid.
    """
    sample = read_sample_submission(sample_path)
    fmt = detect_format(sample, classes, fmt, task)
    if fmt == "binary" and classes is not None:
        positive_index(classes, value_columns(sample)[0], positive_class)  # a bad setting is a config error
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
    table, found = read_table(csv_path)
    problems += found
    if table is None:
        return problems
    expected = [str(c) for c in sample.columns]
    problems += check_columns(table.header, expected)
    if expected[0] in table.header:
        problems += check_ids(table, expected[0], list(sample.iloc[:, 0]))
    return problems + check_values(table, sample, fmt, classes, task)


def validate_with_config(csv_path: str | Path, config: Config) -> Validation:
    """validate_submission with the config's sample submission, format, the run's classes.json (without it, the
    label vocabulary is not checked) and the task its cv.json records."""
    classes_path = classes_file(run_dir(config.name))
    try:
        classes = load_classes(classes_path) if classes_path.exists() else None
        readable = classes is None or isinstance(classes, list)
    except ValueError:
        readable = False
    if not readable:
        raise CompError(
            f"{classes_path} must hold a JSON list of class labels.",
            hint="Delete it and run `comp train` again.",
        )
    sample_path = Path(config.data.root) / config.data.sample_submission
    task = read_cv(run_dir(config.name)).get("task")  # as the run was predicted; None before comp predict
    problems = validate_submission(
        csv_path, sample_path, classes, config.submission.format, config.submission.positive_class, task
    )
    return Validation(Path(csv_path), problems, classes, classes_path)
