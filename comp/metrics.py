"""Classification metrics on probability tables: the score `predict.metric` names, and its direction.

Every metric takes `targets` (each row's true class as an index into the class list) and `probs`
(rows x classes) and returns a float. Rows are aligned by the caller (by id, never by row order).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as sk

EPS = 1e-15  # probabilities are clipped to [EPS, 1] before a log


@dataclass(frozen=True)
class Metric:
    fn: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool


def accuracy(targets: np.ndarray, probs: np.ndarray) -> float:
    return float((probs.argmax(1) == targets).mean())


def balanced_accuracy(targets: np.ndarray, probs: np.ndarray) -> float:
    """Mean recall over the classes present in `targets` (sklearn's, without its warning about the others)."""
    predicted = probs.argmax(1)
    return float(np.mean([np.mean(predicted[targets == c] == c) for c in np.unique(targets)]))


def log_loss(targets: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log probability of the true class, rows renormalised first."""
    rows = probs / probs.sum(1, keepdims=True)
    return float(-np.log(np.clip(rows[np.arange(len(targets)), targets], EPS, 1.0)).mean())


def macro_f1(targets: np.ndarray, probs: np.ndarray) -> float:
    """Unweighted mean F1 over the classes that are true or predicted somewhere."""
    return float(sk.f1_score(targets, probs.argmax(1), average="macro", zero_division=0))


def roc_auc(targets: np.ndarray, probs: np.ndarray) -> float:
    """One-vs-rest ROC AUC averaged over the classes (macro); classes without positives are left out."""
    aucs = [auc for auc in per_class_auc(targets, probs) if auc is not None]
    return float(np.mean(aucs)) if aucs else float("nan")


def per_class_auc(targets: np.ndarray, probs: np.ndarray) -> list[float | None]:
    """Each class's one-vs-rest ROC AUC; None where the class has no positives or no negatives."""
    aucs = []
    for c in range(probs.shape[1]):
        positive = targets == c
        aucs.append(float(sk.roc_auc_score(positive, probs[:, c])) if 0 < positive.sum() < len(targets) else None)
    return aucs


METRICS: dict[str, Metric] = {
    "accuracy": Metric(accuracy, True),
    "balanced_accuracy": Metric(balanced_accuracy, True),
    "log_loss": Metric(log_loss, False),
    "macro_f1": Metric(macro_f1, True),
    "roc_auc": Metric(roc_auc, True),
}


def score(name: str, targets: np.ndarray, probs: np.ndarray) -> float:
    return METRICS[name].fn(np.asarray(targets), np.asarray(probs, dtype=np.float64))


def is_better(name: str, new: float, old: float) -> bool:
    """Strictly better in the metric's own direction."""
    return new > old if METRICS[name].higher_is_better else new < old


def all_scores(targets: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    return {name: score(name, targets, probs) for name in METRICS}
