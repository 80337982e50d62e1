"""The task, in one place: what `data.task` means from the labels to the submission.

    task        labels                     target            head / loss              decision
    multiclass  one class a row            class index       softmax, cross-entropy   argmax
    binary      one of two classes         class index       softmax, cross-entropy   argmax (or the probability)
    ordinal     integer grades 0..G-1      grade index       softmax, cross-entropy   expected grade, cut at
                (no gaps)                                                             thresholds fitted on OOF
    multilabel  space-separated tags       0/1 per tag       sigmoid per tag, binary  tags at or above per-tag
                                                             cross-entropy            thresholds fitted on OOF

`data.task: auto` reads the labels: multilabel when label cells hold several space-separated tags
that recombine (fewer distinct tags than distinct cells, so 'Common Chickweed' stays one class),
binary with two classes, multiclass otherwise; quadratic weighted kappa as `predict.metric` makes
auto mean ordinal (comp.config). Prediction tables always hold one probability column per class:
for multilabel, independent per-tag probabilities that are averaged per tag (never renormalised).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from comp.errors import CompError
from comp.metrics import METRICS, grades, score, tags_above

Task = Literal["multiclass", "binary", "multilabel", "ordinal"]
THRESHOLD_GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)  # per-tag probability thresholds tried
FIT_PASSES = 2  # coordinate-ascent passes over the thresholds


# ----------------------------------------------------------------------------- labels -> task and classes


def split_tags(cell) -> list[str]:
    return str(cell).split()


def looks_multilabel(labels: Sequence) -> bool:
    """Several space-separated tags in some cells, and the tags recombine (fewer tags than distinct cells)."""
    cells = {str(v) for v in labels}
    if not any(len(split_tags(c)) > 1 for c in cells):
        return False
    return len({t for c in cells for t in split_tags(c)}) < len(cells)


def resolve_task(setting: str, labels: Sequence) -> Task:
    """`data.task` as set, or what auto reads from the training labels."""
    if setting != "auto":
        return setting  # type: ignore[return-value]
    if looks_multilabel(labels):
        return "multilabel"
    return "binary" if len({str(v) for v in labels}) == 2 else "multiclass"


def tag_matrix(labels: Sequence, classes: list) -> np.ndarray:
    """Rows x classes 0/1: which tags each label cell holds."""
    column = {str(c): i for i, c in enumerate(classes)}
    out = np.zeros((len(labels), len(classes)), dtype=np.float32)
    for row, cell in enumerate(labels):
        for tag in split_tags(cell):
            out[row, column[tag]] = 1.0
    return out


def check_task_classes(task: str, classes: list, source: str) -> None:
    """Refuse a task the classes cannot be: binary needs two classes; ordinal needs integer grades without gaps."""
    if task == "binary" and len(classes) != 2:
        raise CompError(
            f"data.task is binary, but {source} has {len(classes)} classes ({', '.join(map(str, classes[:10]))}).",
            hint="Set data.task to multiclass or auto.",
        )
    if task != "ordinal":
        return
    if not all(isinstance(c, int) for c in classes):
        raise CompError(
            f"data.task is ordinal, but the labels of {source} are not integer grades "
            f"(e.g. {', '.join(repr(c) for c in classes if not isinstance(c, int))[:80]}).",
            hint="Set data.task: multiclass (and a predict.metric other than quadratic_weighted_kappa) for named "
            "classes.",
        )
    missing = sorted(set(range(classes[0], classes[-1] + 1)) - set(classes))
    if missing:
        raise CompError(
            f"The grades of {source} have gaps: grade(s) {', '.join(map(str, missing))} between {classes[0]} and "
            f"{classes[-1]} never occur, so the expected grade would skip them.",
            hint="Set data.task: multiclass to treat the grades present as unordered classes "
            "(and a predict.metric other than quadratic_weighted_kappa, which implies ordinal).",
        )


def same_outputs(a: str, b: str) -> bool:
    """Whether models and tables of tasks a and b read alike: the single-label tasks share a softmax over the
    classes (they differ only in decisions); multilabel's columns are independent per-tag sigmoids."""
    return (a == "multilabel") == (b == "multilabel")


def check_metric(task: str, metric: str) -> None:
    if task == "multilabel" and METRICS[metric].single_label_only:
        raise CompError(
            f"predict.metric {metric} needs one label a row, but data.task is multilabel.",
            hint="Use f_beta (mean F-beta over the rows), mean_column_auc, log_loss, accuracy or macro_f1.",
        )


# ----------------------------------------------------------------------------- head, loss


def log_probabilities(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Per-class log-probabilities: log-softmax over the classes, or log-sigmoid per tag (multilabel)."""
    return F.logsigmoid(logits) if task == "multilabel" else logits.log_softmax(dim=-1)


def probabilities(logits: torch.Tensor, task: str) -> torch.Tensor:
    return torch.sigmoid(logits) if task == "multilabel" else logits.softmax(dim=-1)


def loss(logits: torch.Tensor, targets: torch.Tensor, task: str, label_smoothing: float = 0.0) -> torch.Tensor:
    """Binary cross-entropy per tag (targets smoothed towards 1/2) or cross-entropy over the classes."""
    if task == "multilabel":
        smoothed = targets.float() * (1 - label_smoothing) + label_smoothing / 2
        return F.binary_cross_entropy_with_logits(logits.float(), smoothed)
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)


# ----------------------------------------------------------------------------- decisions fitted on OOF rows


def fit_thresholds(task: str, metric: str, targets: np.ndarray, probs: np.ndarray, params: dict) -> list | None:
    """The decision thresholds that maximise `metric` on these (OOF) rows: per-tag probability thresholds
    (multilabel), or the cut points on the expected grade (ordinal, quadratic weighted kappa); None where the
    metric reads probabilities, not decisions."""
    if "thresholds" not in METRICS[metric].params or not METRICS[metric].higher_is_better:
        return None
    if task == "multilabel":
        start = np.full(probs.shape[1], 0.5)
        return _coordinate_ascent(metric, targets, probs, params, start, lambda _, __: THRESHOLD_GRID)
    if task == "ordinal" and metric == "quadratic_weighted_kappa":
        start = np.arange(probs.shape[1] - 1) + 0.5
        return _coordinate_ascent(metric, targets, probs, params, start, _cut_candidates)
    return None


def _cut_candidates(cuts: np.ndarray, i: int) -> np.ndarray:
    """Values for cut point i between its neighbours (the grades' range at the ends), so the cuts stay ordered."""
    low = cuts[i - 1] if i > 0 else 0.0
    high = cuts[i + 1] if i + 1 < len(cuts) else float(len(cuts))
    return np.linspace(low, high, 22)[1:-1]


def _coordinate_ascent(metric, targets, probs, params, start: np.ndarray, candidates) -> list[float]:
    """Each threshold in turn set to its best candidate, the others held; a change is kept only if it is strictly
    better, so the result never scores below `start`."""
    best_cut = start.astype(np.float64)
    best = score(metric, targets, probs, **params, thresholds=best_cut)
    for _ in range(FIT_PASSES):
        for i in range(len(best_cut)):
            for value in candidates(best_cut, i):
                trial = best_cut.copy()
                trial[i] = value
                result = score(metric, targets, probs, **params, thresholds=trial)
                if result > best:
                    best, best_cut = result, trial
    return [float(t) for t in best_cut]


def decision_record(task: str, metric: str, params: dict, targets: np.ndarray, probs: np.ndarray) -> tuple[float, dict]:
    """The OOF score with the decision thresholds fitted on these rows, and cv.json's record of both: the task,
    the metric's parameters, the thresholds (applied to test by the submission) and the score before them."""
    thresholds = fit_thresholds(task, metric, targets, probs, params)
    fitted = score(metric, targets, probs, **params, thresholds=thresholds)
    record = {"task": task, "metric_params": params, "thresholds": thresholds}
    if thresholds is not None:
        record["oof_default_thresholds"] = score(metric, targets, probs, **params)
    return fitted, record


def decide(task: str, probs: np.ndarray, thresholds=None) -> np.ndarray:
    """Class indices (argmax; the cut expected grade for ordinal), or a 0/1 tag matrix (multilabel)."""
    if task == "multilabel":
        return tags_above(probs, thresholds)
    if task == "ordinal":
        return grades(probs, thresholds)
    return probs.argmax(1)


def decision_labels(task: str, probs: np.ndarray, classes: list, thresholds=None) -> list:
    """Each row's decision as written in a submission: its class label (the label's own type), or its tags
    space-separated in class order (multilabel)."""
    chosen = decide(task, probs, thresholds)
    if task == "multilabel":
        return [" ".join(str(c) for c, on in zip(classes, row, strict=True) if on) for row in chosen]
    return [classes[i] for i in chosen]
