"""Classification metrics on probability tables: the score `predict.metric` names, and its direction.

Every metric takes `targets` and `probs` (rows x classes) and returns a float. `targets` holds each
row's true class as an index into the class list (multiclass, binary, ordinal), or one 0/1 column
per class (multilabel). Rows are aligned by the caller (by id, never by row order).

Metrics that turn probabilities into decisions take the decision rule's `thresholds`: per-class
probability thresholds for multi-label decisions (default 0.5; a row with none above its threshold
gets its most probable class), or the cut points on the expected grade for quadratic weighted kappa
(default halfway between grades). comp.tasks fits them on the OOF rows. Parameters such as `beta`
(f_beta) and `k` (map_at_k) come from `predict.metric_params`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as sk

EPS = 1e-15  # probabilities are clipped to [EPS, 1] before a log


@dataclass(frozen=True)
class Metric:
    fn: Callable[..., float]
    higher_is_better: bool
    params: tuple[str, ...] = ()  # keyword arguments it takes: from predict.metric_params, or thresholds
    single_label_only: bool = False


def is_multilabel(targets: np.ndarray) -> bool:
    return np.asarray(targets).ndim == 2


def one_hot(targets: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=np.int64)[np.asarray(targets, dtype=np.int64)]


def tags_above(probs: np.ndarray, thresholds=None) -> np.ndarray:
    """Multi-label decisions: each class at or above its threshold (default 0.5); a row with none gets its most
    probable class, since an empty prediction can only score zero."""
    cut = np.full(probs.shape[1], 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    chosen = probs >= cut
    empty = ~chosen.any(axis=1)
    chosen[empty, probs[empty].argmax(axis=1)] = True
    return chosen


def decisions(targets: np.ndarray, probs: np.ndarray, thresholds=None) -> np.ndarray:
    """Predicted classes in the targets' form: indices (argmax) or a 0/1 matrix (tags_above)."""
    return tags_above(probs, thresholds).astype(np.int64) if is_multilabel(targets) else probs.argmax(1)


def expected_grade(probs: np.ndarray) -> np.ndarray:
    """The probability-weighted mean of the grade indices 0..C-1."""
    rows = probs / probs.sum(1, keepdims=True)
    return rows @ np.arange(probs.shape[1])


def grades(probs: np.ndarray, thresholds=None) -> np.ndarray:
    """Ordinal decisions: the expected grade cut at `thresholds` (C-1 ascending cut points; default halfway)."""
    cuts = np.arange(probs.shape[1] - 1) + 0.5 if thresholds is None else np.sort(np.asarray(thresholds, float))
    return np.searchsorted(cuts, expected_grade(probs), side="right")


def accuracy(targets: np.ndarray, probs: np.ndarray, thresholds=None) -> float:
    """Share of rows predicted exactly (for multi-label rows: every tag right, as sklearn's subset accuracy)."""
    predicted = decisions(targets, probs, thresholds)
    if is_multilabel(targets):
        return float((predicted == targets).all(axis=1).mean())
    return float((predicted == targets).mean())


def balanced_accuracy(targets: np.ndarray, probs: np.ndarray) -> float:
    """Mean recall over the classes present in `targets` (sklearn's, without its warning about the others)."""
    predicted = probs.argmax(1)
    return float(np.mean([np.mean(predicted[targets == c] == c) for c in np.unique(targets)]))


def log_loss(targets: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log probability of the true class, rows renormalised first; for multi-label targets the mean
    binary cross-entropy over every row and class."""
    if is_multilabel(targets):
        p = np.clip(probs, EPS, 1.0 - EPS)
        return float(-(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean())
    rows = probs / probs.sum(1, keepdims=True)
    return float(-np.log(np.clip(rows[np.arange(len(targets)), targets], EPS, 1.0)).mean())


def macro_f1(targets: np.ndarray, probs: np.ndarray, thresholds=None) -> float:
    """Unweighted mean F1 over the classes that are true or predicted somewhere."""
    return float(sk.f1_score(targets, decisions(targets, probs, thresholds), average="macro", zero_division=0))


def roc_auc(targets: np.ndarray, probs: np.ndarray) -> float:
    """Mean column-wise ROC AUC (one-vs-rest for single-label targets); columns without positives are left out."""
    aucs = [auc for auc in per_class_auc(targets, probs) if auc is not None]
    return float(np.mean(aucs)) if aucs else float("nan")


def per_class_auc(targets: np.ndarray, probs: np.ndarray) -> list[float | None]:
    """Each class's (column's) ROC AUC; None where the class has no positives or no negatives."""
    positives = targets.astype(bool) if is_multilabel(targets) else one_hot(targets, probs.shape[1]).astype(bool)
    aucs = []
    for c in range(probs.shape[1]):
        positive = positives[:, c]
        aucs.append(float(sk.roc_auc_score(positive, probs[:, c])) if 0 < positive.sum() < len(targets) else None)
    return aucs


def quadratic_weighted_kappa(targets: np.ndarray, probs: np.ndarray, thresholds=None) -> float:
    """Cohen's kappa with quadratic weights between the true grades and `grades(probs, thresholds)`."""
    labels = np.arange(probs.shape[1])
    return float(sk.cohen_kappa_score(targets, grades(probs, thresholds), labels=labels, weights="quadratic"))


def f_beta(targets: np.ndarray, probs: np.ndarray, beta: float = 2.0, thresholds=None) -> float:
    """F-beta of each row's predicted tags against its true tags, averaged over the rows (Kaggle's mean F2 when
    beta=2); single-label rows are one tag each."""
    truth = targets.astype(bool) if is_multilabel(targets) else one_hot(targets, probs.shape[1]).astype(bool)
    predicted = tags_above(probs, thresholds) if is_multilabel(targets) else one_hot(probs.argmax(1), probs.shape[1])
    true_positives = (truth & predicted.astype(bool)).sum(axis=1)
    b2 = beta * beta
    denominator = b2 * truth.sum(axis=1) + predicted.sum(axis=1)  # (1+b2)tp + b2 fn + fp
    # sklearn's fbeta_score(average="samples", zero_division=0), without its cost in the threshold search
    return float(np.mean(np.where(denominator > 0, (1 + b2) * true_positives / np.maximum(denominator, 1), 0.0)))


def top_k(probs: np.ndarray, k: int) -> np.ndarray:
    """The k most probable class indices of each row, best first (ties: the lower index first)."""
    return np.argsort(-probs, axis=1, kind="stable")[:, :k]


def map_at_k(targets: np.ndarray, probs: np.ndarray, k: int = 5) -> float:
    """Mean average precision of each row's k best classes, best first: with one true class, 1/rank when it is among
    them, else 0."""
    k = int(k)
    truth = targets.astype(bool) if is_multilabel(targets) else one_hot(targets, probs.shape[1]).astype(bool)
    hits = np.take_along_axis(truth, top_k(probs, k), axis=1)
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
    relevant = np.minimum(truth.sum(axis=1), k)
    return float(np.mean(np.where(relevant > 0, (precision_at * hits).sum(axis=1) / np.maximum(relevant, 1), 0.0)))


METRICS: dict[str, Metric] = {
    "accuracy": Metric(accuracy, True, ("thresholds",)),
    "balanced_accuracy": Metric(balanced_accuracy, True, single_label_only=True),
    "log_loss": Metric(log_loss, False),
    "macro_f1": Metric(macro_f1, True, ("thresholds",)),
    "roc_auc": Metric(roc_auc, True),
    "mean_column_auc": Metric(roc_auc, True),
    "quadratic_weighted_kappa": Metric(quadratic_weighted_kappa, True, ("thresholds",), single_label_only=True),
    "f_beta": Metric(f_beta, True, ("beta", "thresholds")),
    "map_at_k": Metric(map_at_k, True, ("k",)),
}
# What `comp evaluate` reports for every single-label table, whatever predict.metric is.
GENERAL = ("accuracy", "balanced_accuracy", "log_loss", "macro_f1", "roc_auc")


def score(name: str, targets: np.ndarray, probs: np.ndarray, **params) -> float:
    """The metric `name`; `params` it does not take (a threshold for a metric without decisions) are ignored."""
    metric = METRICS[name]
    taken = {key: value for key, value in params.items() if key in metric.params and value is not None}
    return metric.fn(np.asarray(targets), np.asarray(probs, dtype=np.float64), **taken)


def is_better(name: str, new: float, old: float) -> bool:
    """Strictly better in the metric's own direction."""
    return new > old if METRICS[name].higher_is_better else new < old
