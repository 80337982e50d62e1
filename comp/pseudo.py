"""`comp pseudo RUN`: a pseudo-label table from a run's test predictions, for a second training round.

Rows are kept by confidence (the top class probability): those at or above `--threshold`, or the
most confident `--top` share of the rows predicted as each class (so rare classes keep some rows).
The table (id, label, confidence; with --soft, id and the run's probability for each class instead)
goes to runs/<run>/pseudo_labels.csv; `data.pseudo_labels: PATH` adds its rows to every fold's
training rows, never to a validation fold, so the CV stays honest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Group
from rich.text import Text

from comp.data.competition import Competition, check_same_classes
from comp.errors import CompError
from comp.io import write_csv
from comp.runs import probability_table, pseudo_labels_path, read_predictions, resolve_run, table_file


@dataclass
class PseudoResult:
    path: Path
    kept: int
    test_rows: int
    rule: str
    per_class: dict[str, int]  # kept rows by predicted class
    soft: bool = False

    def __rich__(self) -> Group:
        counts = ", ".join(f"{label}: {n}" for label, n in self.per_class.items())
        soft = "; soft labels: each class's probability" if self.soft else ""
        kept = Text(f"{self.kept} of {self.test_rows} test images kept ({self.rule}{soft}) -> {self.path}")
        if not self.kept:
            return Group(kept, Text("No row is that confident: lower --threshold, or use --top.", style="yellow"))
        return Group(
            kept,
            Text(f"per class: {counts}"),
            Text(f"Train on them with --set data.pseudo_labels={self.path} (training rows only, never validation)."),
        )


def check_rule(threshold: float | None, top: float | None) -> None:
    if (threshold is None) == (top is None):
        raise CompError(
            "comp pseudo needs one rule: --threshold P (keep rows whose top probability is at least P) "
            "or --top F (keep the most confident share F of each predicted class).",
            hint="E.g. comp pseudo RUN --threshold 0.95, or comp pseudo RUN --top 0.2.",
        )
    for name, value in (("--threshold", threshold), ("--top", top)):
        if value is not None and not 0 < value <= 1:
            raise CompError(f"{name} {value} must be in (0, 1].", hint=f"E.g. {name} 0.9.")


def select_rows(probs: np.ndarray, threshold: float | None, top: float | None) -> np.ndarray:
    """The kept rows' indices, in table order."""
    confidence, predicted = probs.max(1), probs.argmax(1)
    if threshold is not None:
        return np.flatnonzero(confidence >= threshold)
    kept = []
    for c in np.unique(predicted):
        rows = np.flatnonzero(predicted == c)
        n = math.ceil(top * len(rows))
        kept.extend(rows[np.argsort(-confidence[rows], kind="stable")[:n]])
    return np.sort(np.array(kept, dtype=int))


def pseudo_label(
    competition: Competition, run: str, threshold: float | None = None, top: float | None = None, soft: bool = False
) -> PseudoResult:
    """Write runs/<run>/pseudo_labels.csv from the run's test predictions (rows kept by one rule): each kept row's
    predicted class, or with `soft` its probabilities, one column per class."""
    check_rule(threshold, top)
    folder = resolve_run(run)
    table, classes = read_predictions(table_file(folder, "test"))
    check_same_classes(competition.classes, classes, f"Run {folder}")
    probs = table.loc[competition.test["id"]].to_numpy(np.float64)
    kept = select_rows(probs, threshold, top)
    labels = np.asarray(classes, dtype=object)[probs[kept].argmax(1)]
    ids = competition.test["id"].to_numpy()[kept]
    if soft:
        out = probability_table(ids, probs[kept], classes)
    else:
        out = pd.DataFrame({"id": ids, "label": labels, "confidence": probs[kept].max(1)})
    path = pseudo_labels_path(folder)
    write_csv(path, out)
    rule = f"top probability >= {threshold}" if threshold is not None else f"top {top:.0%} of each predicted class"
    per_class = {str(c): int((labels == c).sum()) for c in classes}
    return PseudoResult(path, len(out), len(probs), rule, per_class, soft)
