"""Submissions in the competition's own format, written from a run's class probabilities.

The sample submission is the template: its first column holds the ids, and the other columns say
the format. One column holding labels is the label format; one column per class, named after the
class, is the probabilities format; one column holding fractions when there are two classes is the
binary format (the probability of one class). One column whose cells hold several space-separated
labels is the tags format for a multi-label task (the tags at or above their thresholds, in class
order) and the top_k format otherwise (the k most probable labels, best first, k as in the sample).
Rows are aligned by id, never by row order.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from comp.data.competition import column_name, read_csv_text
from comp.errors import CompError
from comp.io import write_csv
from comp.metrics import top_k
from comp.tasks import decision_labels

FORMATS = ("label", "probabilities", "binary", "tags", "top_k")
_INTEGER = re.compile(r"[+-]?\d+")


def value_columns(sample: pd.DataFrame) -> list[str]:
    """The sample's prediction columns: all but the first (the ids)."""
    return [str(c) for c in sample.columns[1:]]


def is_integer_text(text: str) -> bool:
    return bool(_INTEGER.fullmatch(text.strip()))


def as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def preview(items, n: int = 5) -> str:
    """The first n items quoted, then how many more: for messages about long lists."""
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


def sample_k(sample: pd.DataFrame) -> int:
    """How many space-separated labels the sample's cells hold (the most in any row)."""
    return max((len(str(v).split()) for v in sample.iloc[:, 1]), default=1)


def _holds_label_lists(sample: pd.DataFrame, classes: list | None) -> bool:
    """Cells of several space-separated words that are not each one class name ('Sugar beet' is a label)."""
    names = None if classes is None else {column_name(c) for c in classes}
    cells = [str(v) for v in sample.iloc[:, 1]]
    return any(len(c.split()) > 1 and (names is None or c not in names) for c in cells)


def _label_list_format(sample: pd.DataFrame, task: str | None) -> str:
    """tags (multilabel) or top_k; with the task unknown, top_k when every cell holds the same number of labels."""
    if task is not None:
        return "tags" if task == "multilabel" else "top_k"
    counts = {len(str(v).split()) for v in sample.iloc[:, 1]}
    return "top_k" if len(counts) == 1 else "tags"


def detect_format(sample: pd.DataFrame, classes: list | None, fmt: str = "auto", task: str | None = None) -> str:
    """'label', 'probabilities', 'binary', 'tags' or 'top_k', from the sample's columns and the task; `fmt` settles
    what auto cannot.

    `classes=None` means the classes are unknown (the validator without a run): the checks that
    need them are skipped; `task=None`: the task is unknown too.
    """
    if fmt not in ("auto", *FORMATS):
        raise CompError(f"submission.format is {fmt!r}; it must be one of auto, {', '.join(FORMATS)}.")
    columns = value_columns(sample)
    if len(columns) > 1:
        if fmt != "auto" and fmt != "probabilities":
            raise CompError(
                f"submission.format is {fmt}, but the sample submission has {len(columns)} columns after "
                f"the id ({preview(columns)}); the {fmt} format has exactly one.",
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
    _check_task_format(fmt, task)
    if fmt == "binary" and classes is not None and len(classes) != 2:
        raise CompError(
            f"submission.format is binary, but there are {len(classes)} classes, not two.",
            hint="Set submission.format to label or auto.",
        )
    if fmt != "auto":
        return fmt
    if task == "multilabel" or _holds_label_lists(sample, classes):
        return _label_list_format(sample, task)
    return _single_column_format(sample, classes)


def _check_task_format(fmt: str, task: str | None) -> None:
    """Tags are a multi-label task's decisions; a multi-label task has no single label to write."""
    if task is None or fmt == "auto":
        return
    if fmt == "tags" and task != "multilabel":
        raise CompError(
            f"submission.format is tags, but data.task is {task}: tags are the decisions of a multilabel task.",
            hint="Set data.task: multilabel if a row can hold several labels, or submission.format: top_k or auto.",
        )
    if fmt in ("label", "binary") and task == "multilabel":
        raise CompError(
            f"submission.format is {fmt}, but data.task is multilabel: a row's decision is a set of tags.",
            hint="Set submission.format: tags (or auto), or data.task to a single-label task.",
        )


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
    numbers = [as_number(v) for v in values]
    if all(n is not None for n in numbers) and not all(is_integer_text(v) for v in values):
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
            f"no column for the classes {preview(missing)}" if missing else "",
            f"columns that are not classes {preview(extra)}" if extra else "",
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
                f"submission.positive_class is {positive_class!r}, which is not one of the classes {preview(names)}.",
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
            f"The predictions' columns don't match the classes (missing {preview(missing)}, "
            f"unexpected {preview(extra)}).",
            hint="Predict again with the run's classes.json, or blend runs with the same classes.",
        )
    values = probs[names].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        raise CompError(
            f"{bad.sum()} prediction row(s) hold NaN or inf (ids {preview(probs.index[bad])}).",
            hint="Predict again; if it repeats, the model diverged (lower train.lr, or train.amp=false).",
        )
    return values


def _align(probs: pd.DataFrame, values: np.ndarray, ids: pd.Series) -> np.ndarray:
    """Rows of `values` for the sample's ids, in the sample's order."""
    index = pd.Index(probs.index.astype(str))
    if index.has_duplicates:
        raise CompError(
            f"The predictions hold duplicate ids ({preview(index[index.duplicated()].unique())}).",
            hint="Each test id must be predicted once; predict again.",
        )
    positions = index.get_indexer(ids)
    missing = ids[positions < 0]
    if len(missing):
        raise CompError(
            f"{len(missing)} of the sample submission's {len(ids)} ids have no prediction (first: {preview(missing)}).",
            hint="Predictions are matched to the sample by id: predict the test set of this competition "
            "(data.root, data.sample_submission) again.",
        )
    return values[positions]


def _normalise(values: np.ndarray, ids: pd.Series, task: str) -> np.ndarray:
    """Probabilities clipped to [0, 1], each row summing to one (multilabel: each tag's own, not renormalised)."""
    clipped = np.clip(values, 0.0, 1.0)
    if task == "multilabel":
        return clipped
    sums = clipped.sum(axis=1, keepdims=True)
    empty = sums[:, 0] <= 0
    if empty.any():
        raise CompError(
            f"{empty.sum()} prediction row(s) have no positive probability (ids {preview(ids[empty])}).",
            hint="Predict again; these rows cannot be renormalised.",
        )
    return clipped / sums


def create_submission(
    sample: pd.DataFrame,
    probs: pd.DataFrame,
    classes: list,
    fmt: str = "auto",
    positive_class=None,
    task: str = "multiclass",
    thresholds=None,
) -> pd.DataFrame:
    """The sample's columns and ids, in its order, filled from `probs` (indexed by id, a column per class) with the
    task's decisions (`thresholds`: fitted on the OOF rows, comp.tasks)."""
    fmt = detect_format(sample, classes, fmt, task)
    ids = sample.iloc[:, 0].astype(str)
    values = _align(probs, _class_probabilities(probs, classes), ids)
    id_column, columns = sample.columns[0], value_columns(sample)
    out = pd.DataFrame({id_column: ids.to_numpy(dtype=object)})
    if fmt in ("label", "tags"):  # a label keeps its own type: 10 stays the int 10
        out[columns[0]] = pd.Series(decision_labels(task, values, classes, thresholds), dtype=object)
    elif fmt == "top_k":
        best = top_k(values, sample_k(sample))
        out[columns[0]] = [" ".join(column_name(classes[i]) for i in row) for row in best]
    elif fmt == "binary":
        out[columns[0]] = _normalise(values, ids, task)[:, positive_index(classes, columns[0], positive_class)]
    else:
        normalised = _normalise(values, ids, task)
        names = [column_name(c) for c in classes]
        for column in columns:
            out[column] = normalised[:, names.index(column)]
    return out


def write_submission(frame: pd.DataFrame, path: str | Path) -> None:
    """Write the CSV atomically: no index, ids as text, labels as written by create_submission."""
    if frame.isna().any().any():
        raise CompError(
            f"Refusing to write {path}: the submission holds missing values.",
            hint="Build it with create_submission, which fills every row of the sample.",
        )
    write_csv(path, frame, lineterminator="\n")
