"""`comp predict --test-only` (what a Kaggle kernel runs): only the sample submission's test set.

It predicts with the views and mean cv.json recorded, and writes the submission; a blend recomputes
its members' test predictions and blends them with the method and weights of its members.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import Progress
from rich.text import Text

from comp.blending import blend_table
from comp.config import Config
from comp.console import console
from comp.data.competition import (
    check_same_classes,
    load_classes,
    load_test_set,
)
from comp.errors import CompError
from comp.predict_run import fold_mean
from comp.runs import (
    RUNS,
    classes_file,
    cv_file,
    members_file,
    next_submission_path,
    probability_table,
    read_cv,
    run_dir,
)
from comp.streaming import Streamer, open_run
from comp.submission.formats import create_submission, write_submission


@dataclass
class TestSetPrediction:
    run: str
    out: Path
    n_images: int
    parts: list[str] = field(default_factory=list)  # per trained run: its folds and views

    def __rich__(self) -> Text:
        return Text(f"{self.n_images} test images, run {self.run} ({'; '.join(self.parts)}) -> {self.out}")


def _member_name(run: str, blend: Path) -> str:
    """A member's run name: members.json records runs/<name> (any other folder cannot be re-predicted)."""
    path = Path(run)
    if path.parent != RUNS:
        raise CompError(
            f"{members_file(blend)} lists the member {run}, which is not a run under {RUNS}/: its test "
            "predictions cannot be recomputed.",
            hint=f"Move the member run into {RUNS}/ and blend again (comp ensemble ... --force).",
        )
    return path.name


def _recorded(config: Config, name: str) -> tuple[list[str], str]:
    """The views and mean that `comp predict` chose for this run (cv.json)."""
    cv = read_cv(run_dir(name))
    if "views" not in cv:
        raise CompError(
            f"{cv_file(run_dir(name))} records no TTA views: the run was never predicted.",
            hint=f"Run `comp predict --set name={name}` (or with --tta) first.",
        )
    return cv["views"], cv.get("tta_mean", config.predict.tta_mean)


def run_test_probs(config: Config, name: str, paths: list[str], ids: list[str], parts: list[str]) -> np.ndarray:
    """Mean test probabilities of run `name` (rows in `ids` order, columns in its classes.json order)."""
    folder = run_dir(name)
    members_path = members_file(folder)
    if members_path.is_file():
        record = json.loads(members_path.read_text())
        classes = load_classes(classes_file(folder))
        stack = []
        for member in record["members"]:
            member_name = _member_name(member["run"], folder)
            check_same_classes(classes, load_classes(classes_file(run_dir(member_name))), f"Member {member_name}")
            stack.append(run_test_probs(config, member_name, paths, ids, parts))
        weights = np.array([m["weight"] for m in record["members"]], dtype=np.float64)
        method = "mean" if record["method"] == "weighted" else record["method"]
        return blend_table(method, np.stack(stack), weights)
    views, mean = _recorded(config, name)
    own = config.model_copy(update={"name": name, "predict": config.predict.model_copy(update={"tta_mean": mean})})
    run = open_run(own)
    with Progress(console=console, transient=True) as progress:
        probs = fold_mean(Streamer(run, own, progress), paths, ids, views, f"{name} test")
    parts.append(f"{name}: folds {','.join(map(str, run.folds))}, views {','.join(views)}")
    return probs


def predict_test_set(config: Config, out: Path) -> TestSetPrediction:
    """Predict the test set of config.data with run config.name and write the submission to `out`."""
    test, sample = load_test_set(config.data)
    name = config.name
    classes = load_classes(classes_file(run_dir(name)))
    ids, parts = list(test["id"]), []
    probs = run_test_probs(config, name, list(test["path"]), ids, parts)
    table = probability_table(ids, probs, classes).set_index("id")
    cv = read_cv(run_dir(name))  # the task and the decision thresholds fitted on the OOF rows
    frame = create_submission(
        sample,
        table,
        classes,
        config.submission.format,
        config.submission.positive_class,
        task=cv.get("task") or "multiclass",
        thresholds=cv.get("thresholds"),
    )
    out = Path(out)
    write_submission(frame, out)
    return TestSetPrediction(name, out, len(ids), parts)


def predict_test_only(
    config: Config,
    run: str | None = None,
    out: Path | None = None,
    *,
    test_only: bool = True,
    tta: bool = False,
    images: Path | None = None,
) -> TestSetPrediction:
    """`comp predict --test-only [RUN] [--out FILE]`: RUN (default: name) into FILE (default:
    submissions/<run>-test.csv, never overwriting)."""
    if not test_only:
        raise CompError(
            "A RUN argument and --out go with --test-only.", hint="comp predict --test-only RUN [--out FILE]"
        )
    if tta or images is not None:
        raise CompError(
            "--test-only predicts with the views the run's cv.json recorded, on the sample submission's test set.",
            hint="Leave out --tta and --images (choose the views with `comp predict --tta` first).",
        )
    name = run or config.name
    if Path(name).name != name or not run_dir(name).is_dir():
        raise CompError(f"No run '{name}' in {RUNS}/.", hint=f"Name a run folder under {RUNS}/ (ls {RUNS}/).")
    return predict_test_set(config.model_copy(update={"name": name}), out or next_submission_path(f"{name}-test"))
