"""`comp ensemble --method hill`: the climb over aligned OOF stacks, its held-out folds and its report.

The climb itself is comp.blending.hill_climb. Because it chooses the weights on the OOF rows it is
then scored on, that score is optimistic; with `--holdout-folds` the weights are chosen on the other
folds' rows and the blend is scored on the held-out folds' rows alone, which is honest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rich.text import Text

from comp.blending import Score, blend_table, hill_blend, hill_climb, metric_and_log_loss
from comp.data.competition import read_csv_text
from comp.errors import CompError
from comp.io import sha256_file


@dataclass
class HillOptions:
    """--method hill's choices: runs may get negative weights; folds held out of the choice and scored alone."""

    negative: bool = False  # a step's share may be negative too
    holdout_folds: list[int] | None = None


def parse_hill_options(negative: bool, holdout_folds: str | None) -> HillOptions | None:
    """--negative-weights and --holdout-folds 0,2 as HillOptions; None when neither is given."""
    if not negative and holdout_folds is None:
        return None
    try:
        folds = [int(k) for k in holdout_folds.split(",")] if holdout_folds is not None else None
    except ValueError:
        raise CompError(
            f"--holdout-folds {holdout_folds!r} is not a comma-separated list of fold numbers.",
            hint="E.g. --holdout-folds 0 or --holdout-folds 0,1.",
        ) from None
    return HillOptions(negative, folds)


@dataclass
class HillReport:
    """How a hill-climbed blend got its weights, and what its score is worth."""

    metric: str
    path: list[dict]  # each step: the run mixed in, its share w, the selection rows' score after it
    mean: Score  # the plain equal-weight mean on all OOF rows, for comparison
    holdout_folds: list[int]  # empty: the weights were chosen on every OOF row
    holdout: Score | None  # the blend on the held-out folds only

    def lines(self) -> list[Text]:
        steps = ", ".join(f"{Path(s['run']).name} (w {s['share']:+.2f}) {s['oof']:.4f}" for s in self.path)
        lines = [
            Text(f"hill climb ({self.metric}): {steps}"),
            Text(f"plain mean of the runs: OOF {self.metric} {self.mean.value:.4f}, log loss {self.mean.log_loss:.4f}"),
        ]
        if self.holdout is None:
            lines.append(
                Text(
                    "The blend's OOF score is optimistic: the climb chose the weights on these same rows. "
                    "--holdout-folds K,... chooses on the other folds and scores on those."
                )
            )
        else:
            folds = ",".join(map(str, self.holdout_folds))
            lines.append(
                Text(
                    f"held-out folds {folds} (weights chosen on the others): {self.metric} "
                    f"{self.holdout.value:.4f}, log loss {self.holdout.log_loss:.4f}"
                )
            )
        return lines

    def record(self) -> dict:
        return {
            "metric": self.metric,
            "optimistic": self.holdout is None,
            "mean": self.mean.value,
            "holdout_folds": self.holdout_folds,
            "holdout": None if self.holdout is None else self.holdout.value,
            "holdout_log_loss": None if self.holdout is None else self.holdout.log_loss,
        }


def oof_folds(cv: dict, cv_path: Path, ids: pd.Index) -> np.ndarray:
    """Each OOF id's fold, read from the fold file a run's cv.json names (checked against its sha256)."""
    path = Path(cv.get("fold_file") or "")
    if not path.is_file() or sha256_file(path) != cv.get("fold_file_sha256"):
        raise CompError(
            f"--holdout-folds needs the fold file {path} that {cv_path} names, unchanged (same sha256).",
            hint="Run the ensemble from the project folder that holds folds/, or drop --holdout-folds.",
        )
    folds = read_csv_text(path).set_index("id")["fold"].astype(int)
    return folds.reindex([str(i) for i in ids]).to_numpy()


def selection_rows(folds: np.ndarray, holdout: list[int], fold_file: str) -> np.ndarray:
    """Which OOF rows the climb may look at: those outside the held-out folds."""
    present = sorted(set(folds.tolist()))
    unknown = [k for k in holdout if k not in present]
    if unknown or set(holdout) >= set(present):
        problem = f"fold(s) {unknown} are not in {fold_file}" if unknown else "no fold is left to choose on"
        raise CompError(
            f"--holdout-folds {','.join(map(str, holdout))}: {problem} (its folds: {present}).",
            hint="Hold out some of the folds, not all, e.g. --holdout-folds 0.",
        )
    return ~np.isin(folds, holdout)


def climb_blend(
    oof_stack: np.ndarray,
    test_stack: np.ndarray,
    y: np.ndarray,
    metric: str,
    runs: list[str],
    options: HillOptions,
    folds: np.ndarray | None = None,
    fold_file: str = "the fold file",
    task: str = "multiclass",
    params: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, HillReport]:
    """Weights climbed on the OOF rows outside the held-out folds, both blended tables, and the report.

    `folds`: each OOF row's fold (from `fold_file`), needed only when `options.holdout_folds` holds some out.
    `task` and `params` (predict.metric_params): the competition's, as the metric needs them.
    """
    holdout = sorted(set(options.holdout_folds or []))
    chosen = selection_rows(folds, holdout, fold_file) if holdout else np.ones(len(y), dtype=bool)
    result = hill_climb(oof_stack[:, chosen], y[chosen], metric, options.negative, task, params)
    oof = hill_blend(oof_stack, result.weights, task)
    path = [{"run": runs[m], "share": share, "oof": value} for m, share, value in result.path]
    equal = np.full(len(runs), 1.0 / len(runs))
    mean = metric_and_log_loss(metric, y, blend_table("mean", oof_stack, equal, task), params)
    held = metric_and_log_loss(metric, y[~chosen], oof[~chosen], params) if holdout else None
    test = hill_blend(test_stack, result.weights, task)
    return result.weights, oof, test, HillReport(metric, path, mean, holdout, held)
