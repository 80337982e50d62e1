"""Blend rules over members x rows x classes probability stacks, and blend weights fitted on the OOF rows.

Methods: `mean` (weighted arithmetic mean of the probabilities), `weighted` (the same, with
`--weights auto` by default), `geometric` (weighted mean of the log probabilities, rows renormalised)
and `rank` (each class column replaced by its rank among the table's rows, scaled to (0, 1],
averaged, rows renormalised: for rank metrics such as AUC). `--weights auto` fits non-negative
weights that sum to one by minimising the blend's OOF log loss, whatever `predict.metric` is: log
loss is smooth and rewards good probabilities, where accuracy-like metrics are step functions an
optimiser cannot follow. `hill` is Kaggle's hill-climbing blend: start from the best member on
the OOF metric itself (any metric comp has, in its own direction), then repeatedly mix in, with
replacement, the member (and share) that most improves that score, until nothing improves.
The test set is never looked at.

Multi-label tables hold independent per-tag probabilities: they are blended per tag and never
renormalised across the tags (geometric: the sigmoid of the weighted mean logit; the weights fitted
on the mean binary log loss). Decision thresholds are fitted afterwards, on the blend's OOF rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.stats import rankdata

from comp.errors import CompError
from comp.metrics import EPS, is_better, log_loss, score

METHODS = ("mean", "weighted", "geometric", "rank", "hill")
MAX_HILL_STEPS = 100  # each step scores every member at every share: the climb stays cheap
MIN_GAIN = 1e-9
HILL_SHARES = np.linspace(0.02, 0.5, 25)  # a step's weight for the member it mixes in


@dataclass
class Score:
    """An OOF table's score in `metric` (predict.metric) and its log loss."""

    metric: str
    value: float
    log_loss: float


def metric_and_log_loss(
    metric: str, targets: np.ndarray, probs: np.ndarray, params: dict | None = None, thresholds=None
) -> Score:
    return Score(
        metric, score(metric, targets, probs, **(params or {}), thresholds=thresholds), log_loss(targets, probs)
    )


def prepare(method: str, stack: np.ndarray, task: str = "multiclass") -> np.ndarray:
    """The per-member transform that does not depend on the weights (stack: members x rows x classes)."""
    if method == "geometric" and task == "multilabel":
        clipped = np.clip(stack, EPS, 1.0 - EPS)
        return np.log(clipped) - np.log1p(-clipped)  # per-tag logits
    if method == "geometric":
        return np.log(np.clip(stack, EPS, 1.0))
    if method == "rank":
        return rankdata(stack, axis=1) / stack.shape[1]
    return stack


def mix(method: str, prepared: np.ndarray, weights: np.ndarray, task: str = "multiclass") -> np.ndarray:
    """The weighted blend of prepared members, each row normalised to sum to one (multilabel: each tag on its own,
    no renormalisation)."""
    mixed = np.tensordot(weights, prepared, axes=1)
    if task == "multilabel":
        return 1.0 / (1.0 + np.exp(-mixed)) if method == "geometric" else mixed
    if method == "geometric":
        mixed = np.exp(mixed - mixed.max(axis=1, keepdims=True))
    return mixed / mixed.sum(axis=1, keepdims=True)


def blend_table(method: str, stack: np.ndarray, weights: np.ndarray, task: str = "multiclass") -> np.ndarray:
    return mix(method, prepare(method, stack, task), weights, task)


def fit_weights(method: str, oof_stack: np.ndarray, y: np.ndarray, task: str = "multiclass") -> np.ndarray:
    """Non-negative weights summing to one that minimise the blend's OOF log loss (SLSQP).

    Equal weights and each member alone are candidates too, whatever the optimiser does: with
    `mean` and `geometric` the blend's OOF log loss is never worse than the best member's.
    """
    prepared = prepare(method, oof_stack, task)
    n = len(oof_stack)

    def objective(w: np.ndarray) -> float:
        return log_loss(y, mix(method, prepared, w, task))

    equal = np.full(n, 1.0 / n)
    fitted = minimize(
        objective,
        equal,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * n,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}],
    ).x
    fitted = np.where(fitted < 1e-6, 0.0, fitted)  # no 1e-17 weights from round-off
    fitted = fitted / fitted.sum() if fitted.sum() > 0 else equal
    return min([fitted, equal, *np.eye(n)], key=objective)


def parse_weights(text: str | None, method: str, n: int) -> str | np.ndarray:
    """'auto', or explicit weights normalised to sum to one; None: equal, or auto for `weighted`."""
    if text is None:
        return "auto" if method == "weighted" else np.full(n, 1.0 / n)
    if text.strip() == "auto":
        return "auto"
    try:
        weights = np.array([float(w) for w in text.split(",")])
    except ValueError:
        raise CompError(
            f"--weights {text!r} is not 'auto' or a comma-separated list of numbers.",
            hint="E.g. --weights auto, or --weights 0.7,0.3 (one per run).",
        ) from None
    if len(weights) != n or not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise CompError(
            f"--weights {text!r} must be {n} non-negative numbers (one per run, in the same order) "
            "with a positive sum.",
            hint="E.g. --weights " + ",".join(["1"] * n) + ", or --weights auto.",
        )
    return weights / weights.sum()


@dataclass
class Climb:
    """A hill climb's final weights (members' order, summing to one) and its path, first step first."""

    weights: np.ndarray
    path: list[tuple[int, float, float]]  # (member, its share w in that step, OOF score after the step)


def _clipped(mixed: np.ndarray, task: str = "multiclass") -> np.ndarray:
    """Rows renormalised (multilabel: each tag kept in (0, 1) on its own); a negative weight may push a
    probability out of range, so it is clipped first."""
    if task == "multilabel":
        return np.clip(mixed, EPS, 1.0 - EPS)
    mixed = np.clip(mixed, EPS, None)
    return mixed / mixed.sum(axis=1, keepdims=True)


def _improves(metric: str, new: float, old: float) -> bool:
    """Better by more than round-off: mixing the blend with itself must not count as a step."""
    return is_better(metric, new, old) and abs(new - old) > MIN_GAIN


def hill_climb(
    stack: np.ndarray,
    y: np.ndarray,
    metric: str,
    negative: bool = False,
    task: str = "multiclass",
    params: dict | None = None,
) -> Climb:
    """Greedy forward selection with replacement on the OOF `metric` (stack: members x rows x classes).

    Each step mixes one member into the blend, blend <- (1 - w) blend + w member, with the member and
    the share w in HILL_SHARES that improve the score most (ties: the earlier member, the smaller
    share). A member added again gains weight. With `negative`, w may also be negative, which
    subtracts a member's errors that the blend shares. `params`: the metric's (predict.metric_params).
    """
    params = params or {}
    n = len(stack)
    singles = [score(metric, y, member, **params) for member in stack]
    best = 0
    for m in range(1, n):
        if is_better(metric, singles[m], singles[best]):
            best = m
    weights, blend = np.eye(n)[best], stack[best]
    path, current = [(best, 1.0, singles[best])], singles[best]
    shares = np.concatenate([HILL_SHARES, -HILL_SHARES]) if negative else HILL_SHARES
    for _ in range(MAX_HILL_STEPS):
        winner = None
        for m in range(n):
            for w in shares:
                value = score(metric, y, _clipped((1 - w) * blend + w * stack[m], task), **params)
                if _improves(metric, value, current if winner is None else winner[0]):
                    winner = (value, m, float(w))
        if winner is None:
            break
        current, m, w = winner
        weights = (1 - w) * weights + w * np.eye(n)[m]
        blend = (1 - w) * blend + w * stack[m]
        path.append((m, w, current))
    return Climb(weights, path)


def hill_blend(stack: np.ndarray, weights: np.ndarray, task: str = "multiclass") -> np.ndarray:
    """The blend a climb's weights give (probabilities clipped and renormalised as during the climb)."""
    return _clipped(np.tensordot(weights, stack, axes=1), task)
