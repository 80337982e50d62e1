"""`comp demo`: the whole pipeline on the offline demo competition, scored on its held-back labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Group
from rich.text import Text

from comp.config import load_config
from comp.console import console
from comp.data.competition import load_competition
from comp.data.demo import SOLUTION_FILE, score_submission, write_demo
from comp.data.folds import write_folds
from comp.ensemble import ensemble
from comp.predict import predict
from comp.training.fold import train


@dataclass
class DemoResult:
    submission: Path
    metric: str  # predict.metric, the CV score's
    cv_score: float | None
    test_accuracy: float

    def __rich__(self) -> Group:
        cv = "n/a" if self.cv_score is None else f"{self.cv_score:.4f}"
        return Group(
            Text(f"Submission: {self.submission}"),
            Text.assemble(
                f"CV {self.metric} (OOF): {cv}   test accuracy (held-back labels): ",
                (f"{self.test_accuracy:.4f}", "bold"),
            ),
        )


def run_demo(config_path: Path, overrides: list[str] | None = None) -> DemoResult:
    """download demo -> folds -> train --fold all -> predict --tta -> ensemble -> score."""
    config = load_config(config_path, overrides)
    if config.data.competition != "demo":
        config = load_config(config_path, [*(overrides or []), "data.competition=demo", "data.root=data/demo"])
    console.rule("[bold]comp download demo")
    console.print(write_demo(Path(config.data.root)))
    competition = load_competition(config.data)
    console.rule("[bold]comp folds")
    console.print(write_folds(config, competition))
    console.rule("[bold]comp train --fold all")
    train(config, competition, "all", resume=True)
    console.rule("[bold]comp predict --tta")
    console.print(predict(config, competition, tta=True))
    console.rule("[bold]comp ensemble")
    result = ensemble(config, competition)
    return DemoResult(
        result.path,
        config.predict.metric,
        result.oof_score,
        score_submission(result.path, Path(config.data.root) / SOLUTION_FILE),
    )
