"""Reports: the pictures a competitor studies between experiments, PNGs under runs/<name>/report/.

Each picture has a function that computes its numbers from the OOF table and one that draws them.
Figures are sized from what they show (classes, folds, images), so they stay legible at 100
classes: confusion-matrix cells of a fixed size with every class named, one small ROC panel per
class, shortened tick labels. Matplotlib's Figure is used directly (Agg), never pyplot's global state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import roc_auc_score, roc_curve

from comp.data.competition import read_image
from comp.io import atomic_path
from comp.runs import fold_dirs

DPI = 100
TOP_LOSSES = 16
PANEL = 2.6  # inches per ROC panel and per image of the top-loss grid


# ----------------------------------------------------------------------------- the numbers


def confusion_counts(targets: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[i, j]: rows of true class i predicted as class j."""
    return np.bincount(targets * n_classes + predicted, minlength=n_classes**2).reshape(n_classes, n_classes)


def row_fractions(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its total (the recall of each class on the diagonal); empty rows stay 0."""
    totals = counts.sum(1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)


@dataclass
class RocCurve:
    fpr: np.ndarray
    tpr: np.ndarray
    auc: float


def roc_curves(targets: np.ndarray, probs: np.ndarray) -> list[RocCurve | None]:
    """One-vs-rest ROC curve of each class (of each tag, for 0/1 multi-label targets); None for a class without
    positives or without negatives."""
    curves = []
    for c in range(probs.shape[1]):
        positive = targets[:, c].astype(bool) if targets.ndim == 2 else targets == c
        if not 0 < positive.sum() < len(targets):
            curves.append(None)
            continue
        fpr, tpr, _ = roc_curve(positive, probs[:, c])
        curves.append(RocCurve(fpr, tpr, float(roc_auc_score(positive, probs[:, c]))))
    return curves


def top_losses(ids, targets: np.ndarray, probs: np.ndarray, n: int = TOP_LOSSES) -> pd.DataFrame:
    """The `n` wrongly predicted rows with the largest loss (-log p(true class)), largest first, ties by id."""
    rows = np.arange(len(targets))
    predicted = probs.argmax(1)
    table = pd.DataFrame(
        {
            "id": np.asarray(ids, dtype=object),
            "target": targets,
            "predicted": predicted,
            "p_predicted": probs[rows, predicted],
            "loss": -np.log(np.clip(probs[rows, targets], 1e-15, 1.0)),
        }
    )
    wrong = table[table["target"] != table["predicted"]]
    return wrong.sort_values(["loss", "id"], ascending=[False, True], kind="stable").head(n).reset_index(drop=True)


# ----------------------------------------------------------------------------- figure sizes (inches)


def confusion_size(n_classes: int) -> tuple[float, float]:
    side = max(6.0, 2.5 + 0.25 * n_classes)  # a quarter inch per class: room for a 6-point label
    return side + 1.0, side  # + the colour bar


def grid_shape(n: int, max_cols: int | None = None) -> tuple[int, int]:
    cols = max(1, math.ceil(math.sqrt(n)) if max_cols is None else min(max_cols, n))
    return math.ceil(n / cols), cols


def roc_size(n_classes: int) -> tuple[float, float]:
    rows, cols = grid_shape(n_classes)
    return PANEL * cols + 0.6, PANEL * rows + 0.6


def top_losses_size(n_images: int) -> tuple[float, float]:
    rows, cols = grid_shape(max(n_images, 1), 4)
    return PANEL * cols, (PANEL + 0.6) * rows


def curves_size(n_folds: int) -> tuple[float, float]:
    return 13.0, 3.0 * n_folds + 0.5


# ----------------------------------------------------------------------------- drawing


def short(label, width: int = 24) -> str:
    """The label as text, its middle elided past `width` characters (ends usually tell classes apart)."""
    text = str(label)
    if len(text) <= width:
        return text
    tail = (width - 1) // 2
    return f"{text[: width - 1 - tail]}…{text[-tail:]}"


def save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def confusion_figure(counts: np.ndarray, classes: list) -> Figure:
    n = len(classes)
    fig = Figure(figsize=confusion_size(n), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    fractions = row_fractions(counts)
    image = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.6, label="share of the true class")
    font = 8 if n <= 30 else 6
    labels = [short(c) for c in classes]
    ax.set_xticks(range(n), labels, rotation=90 if max(map(len, labels)) > 3 else 0, fontsize=font)
    ax.set_yticks(range(n), labels, fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Normalised confusion matrix (OOF, {int(counts.sum())} rows; rows sum to 1)")
    if n <= 15:
        for (i, j), value in np.ndenumerate(fractions):
            if counts[i, j]:
                ax.text(
                    j,
                    i,
                    f"{value:.2f}\n({counts[i, j]})",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if value > 0.5 else "black",
                )
    return fig


def roc_figure(curves: list[RocCurve | None], classes: list) -> Figure:
    rows, cols = grid_shape(len(classes))
    fig = Figure(figsize=roc_size(len(classes)), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, label, curve in zip(axes, classes, curves, strict=False):
        ax.plot([0, 1], [0, 1], color="0.7", linewidth=0.8, linestyle="--")
        if curve is None:
            ax.set_title(f"{short(label)}: no positives", fontsize=8)
        else:
            ax.plot(curve.fpr, curve.tpr, linewidth=1.2)
            ax.set_title(f"{short(label)}  AUC {curve.auc:.3f}", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes[len(classes) :]:
        ax.set_axis_off()
    fig.supxlabel("false positive rate")
    fig.supylabel("true positive rate")
    fig.suptitle("ROC curves, one class against the rest (OOF)")
    return fig


def top_losses_figure(worst: pd.DataFrame, image_paths: pd.Series, classes: list) -> Figure:
    """A grid of the most confidently wrong OOF images with their true and predicted labels."""
    fig = Figure(figsize=top_losses_size(len(worst)), dpi=DPI, layout="constrained")
    if worst.empty:
        fig.text(0.5, 0.5, "No wrong OOF predictions", ha="center", va="center", fontsize=14)
        return fig
    rows, cols = grid_shape(len(worst), 4)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, row in zip(axes, worst.itertuples(), strict=False):
        ax.imshow(read_image(image_paths[row.id]), interpolation="nearest")
        ax.set_title(
            f"{short(row.id, 32)}\ntrue: {short(classes[row.target], 32)}\n"
            f"pred: {short(classes[row.predicted], 24)} ({row.p_predicted:.2f})",
            fontsize=8,
        )
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle("Most confidently wrong OOF images: true label, predicted label (its probability)")
    return fig


def curves_figure(metrics: dict[int, pd.DataFrame]) -> Figure:
    """Per fold: losses, validation accuracy and learning rate by epoch; the switch to augmentation phase 2 marked."""
    fig = Figure(figsize=curves_size(len(metrics)), dpi=DPI, layout="constrained")
    axes = fig.subplots(len(metrics), 3, squeeze=False)
    panels = [
        ("loss", ["train_loss", "val_loss"]),
        ("accuracy", ["val_accuracy"]),
        ("learning rate", ["lr"]),
    ]
    for (fold, table), row in zip(metrics.items(), axes, strict=True):
        switch = phase_switch(table)
        for ax, (title, columns) in zip(row, panels, strict=True):
            for column in (c for c in columns if c in table.columns):
                ax.plot(table["epoch"], table[column], marker="o", markersize=3, label=column)
            if switch is not None:
                ax.axvline(switch[0], color="tab:red", linestyle="--", linewidth=1, label=f"phase {switch[1]}")
            ax.set_title(f"fold {fold}: {title}", fontsize=10)
            ax.set_xlabel("epoch", fontsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=7)
    return fig


def phase_switch(table: pd.DataFrame) -> tuple[float, str] | None:
    """(epoch, new phase) where metrics.csv's `phase` column first changes; None without one."""
    if "phase" not in table.columns or table.empty:
        return None
    phases = table["phase"].astype(str).to_numpy()
    changed = np.flatnonzero(phases != phases[0])
    return (table["epoch"].iloc[changed[0]], phases[changed[0]]) if len(changed) else None


# ----------------------------------------------------------------------------- a run's reports


def write_reports(
    run_dir: Path, ids, targets: np.ndarray, probs: np.ndarray, classes: list, image_paths: pd.Series
) -> list[Path]:
    """Every report of a run's OOF table (and of its folds' metrics.csv, for a trained run)."""
    figures = {}
    metrics = {
        k: pd.read_csv(folder / "metrics.csv")
        for k, folder in fold_dirs(run_dir).items()
        if (folder / "metrics.csv").exists()
    }
    if metrics:
        figures["training_curves"] = curves_figure(dict(sorted(metrics.items())))
    single_label = targets.ndim == 1  # multi-label rows have no one true class to confuse or to lose
    if single_label:
        counts = confusion_counts(targets, probs.argmax(1), len(classes))
        figures["confusion_matrix"] = confusion_figure(counts, classes)
    figures["roc_curves"] = roc_figure(roc_curves(targets, probs), classes)
    if single_label:
        figures["top_losses"] = top_losses_figure(top_losses(ids, targets, probs), image_paths, classes)
    return [save(fig, run_dir / "report" / f"{name}.png") for name, fig in figures.items()]
