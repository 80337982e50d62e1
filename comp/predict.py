"""`comp predict`: a run's OOF and test predictions (predict_run; predict_seeds for a run of several
seeds), a folder of images (`--images`), or the test set alone (`--test-only`, predict_test).
"""

from __future__ import annotations

from pathlib import Path

from comp.config import Config
from comp.data.competition import (
    Competition,
    load_competition,
)
from comp.predict_run import FolderPrediction, PredictResult, predict_folder, predict_run
from comp.predict_seeds import SeedsPrediction, predict_seeds
from comp.predict_test import TestSetPrediction, predict_test_only
from comp.runs import (
    read_seeds,
    run_dir,
)


def run_predict(
    config: Config,
    tta: bool = False,
    images: str | Path | None = None,
    *,
    test_only: bool = False,
    run: str | None = None,
    out: Path | None = None,
) -> PredictResult | FolderPrediction | TestSetPrediction:
    """`comp predict`: the run's OOF and test predictions; with `images`, that folder's; with
    `test_only`, the test set alone, for run `run` into the submission `out`."""
    if test_only or run is not None or out is not None:
        return predict_test_only(config, run, out, test_only=test_only, tta=tta, images=images)
    if images is not None:
        return predict_folder(config, images, tta=tta)
    return predict(config, load_competition(config.data), tta=tta)


def predict(config: Config, competition: Competition, tta: bool = False) -> PredictResult | SeedsPrediction:
    """Write every trained fold's oof/test tables, then the run's oof.parquet, test.parquet and cv.json."""
    if read_seeds(run_dir(config.name)):
        return predict_seeds(config, competition, tta)
    return predict_run(config, competition, tta)
