"""Ensembles and submissions: a blend of runs is itself a run; a run's test predictions become a CSV.

Every run folder, trained or blended, exposes oof.parquet, test.parquet and cv.json, so any runs,
ensembles included, can be blended again. Tables are aligned by id, never by row order.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from comp.config import Config
from comp.data import Competition, check_same_classes, column_name, save_classes
from comp.errors import CompError
from comp.io import sha256_file, write_json
from comp.predict import accuracy, probability_table, read_predictions, write_predictions
from comp.submission import make_submission, write_submission


@dataclass
class SubmissionResult:
    path: Path
    run_dir: Path
    oof_score: float | None
    member_scores: dict[str, float]


def resolve_run(run: str) -> Path:
    """A run name (a folder under runs/) or a path to a run folder."""
    for candidate in (Path("runs") / run, Path(run)):
        if (candidate / "test.parquet").exists():
            return candidate
    raise CompError(f"Run '{run}' has no test predictions (looked in runs/{run}/ and {run}/).",
                    hint="Run `comp predict` for it first, or check the name with `ls runs/`.")


def read_cv(run_dir: Path) -> float | None:
    path = run_dir / "cv.json"
    return json.loads(path.read_text()).get("oof") if path.exists() else None


def blend(config: Config, competition: Competition, run_dirs: list[Path], out_dir: Path) -> dict[str, float]:
    """Mean of the members' OOF and test probabilities, written as the run folder `out_dir`."""
    members = [(run_dir, *read_predictions(run_dir / "oof.parquet"), read_predictions(run_dir / "test.parquet")[0])
               for run_dir in run_dirs]
    classes = members[0][2]
    for run_dir, oof, member_classes, test in members[1:]:
        check_same_classes(classes, member_classes, f"Run {run_dir}")
        if set(oof.index) != set(members[0][1].index) or set(test.index) != set(members[0][3].index):
            raise CompError(f"Run {run_dir} predicts other ids than {members[0][0]}.",
                            hint="Blend runs trained on the same fold file and predicted on the same test set.")
    columns = [column_name(c) for c in classes]
    oof_ids, test_ids = members[0][1].index, members[0][3].index
    oof = np.mean([m[1].loc[oof_ids, columns].to_numpy() for m in members], axis=0)
    test = np.mean([m[3].loc[test_ids, columns].to_numpy() for m in members], axis=0)
    labels = competition.train.set_index("id")["label"]
    oof_table = probability_table(oof_ids, oof, classes)
    score = accuracy(oof_table.set_index("id"), labels, classes)
    views = ["blend"]
    write_predictions(out_dir / "oof.parquet", oof_table, classes, views)
    write_predictions(out_dir / "test.parquet", probability_table(test_ids, test, classes), classes, views)
    save_classes(classes, out_dir / "classes.json")
    write_json(out_dir / "cv.json", {"metric": "accuracy", "oof": score, "folds": {}})
    scores = {str(m[0]): accuracy(m[1], labels, classes) for m in members}
    write_json(out_dir / "members.json", {"method": "mean", "members": list(scores), "oof_scores": scores,
                                          "weights": [1 / len(members)] * len(members)})
    return scores


def write_run_submission(config: Config, competition: Competition, run_dir: Path,
                         sources: dict | None = None) -> Path:
    """submissions/<run name>.csv from a run's test predictions (never overwriting), plus its sidecar JSON."""
    test, classes = read_predictions(run_dir / "test.parquet")
    check_same_classes(classes, competition.classes, f"Run {run_dir}")
    frame = make_submission(competition.sample, test, classes, config.submission.format,
                            config.submission.positive_class)
    path = next_submission_path(run_dir.name)
    write_submission(frame, path)
    write_json(path.with_suffix(".json"), {
        "file": path.name, "run": str(run_dir), "sources": sources or {"runs": [str(run_dir)]},
        "oof_score": read_cv(run_dir), "sha256": sha256_file(path), "config": config.to_dict(),
    })
    return path


def next_submission_path(name: str) -> Path:
    """submissions/<name>.csv, or the next free <name>-2.csv, ... (both the CSV and its JSON must be free)."""
    if name == "ledger":
        name = "ledger-run"
    folder = Path("submissions")
    path, n = folder / f"{name}.csv", 2
    while path.exists() or path.with_suffix(".json").exists():
        path, n = folder / f"{name}-{n}.csv", n + 1
    return path


def ensemble(config: Config, competition: Competition, runs: list[str] | None = None,
             name: str | None = None, force: bool = False) -> SubmissionResult:
    """One run: its submission. Several: blend them into runs/<name>/ first, then its submission."""
    runs = runs or [config.name]
    run_dirs = [resolve_run(r) for r in runs]
    if len(run_dirs) == 1:
        run_dir = run_dirs[0]
        return SubmissionResult(write_run_submission(config, competition, run_dir), run_dir, read_cv(run_dir), {})
    out_dir = Path("runs") / (name or "+".join(d.name for d in run_dirs))
    if out_dir.exists():
        if not force:
            raise CompError(f"{out_dir} already exists.", hint="Pick another --name, or pass --force to replace it.")
        shutil.rmtree(out_dir)
    scores = blend(config, competition, run_dirs, out_dir)
    path = write_run_submission(config, competition, out_dir, {"runs": [str(d) for d in run_dirs]})
    return SubmissionResult(path, out_dir, read_cv(out_dir), scores)
