"""Ensembles and submissions: a blend of runs is itself a run; a run's test predictions become a CSV.

Every run folder, trained or blended, exposes oof.parquet, test.parquet and cv.json, so any runs,
ensembles included, can be blended again. Tables are aligned by id, never by row order. Runs are
blended only when they share the class list, the test ids, the OOF ids and the fold file (its
sha256, recorded in cv.json by `comp predict` and by every blend).

The blend rules and the weight fitting are comp.blending's. The OOF score (`predict.metric`) and log
loss of each member and of the blend are reported; the decision thresholds of a multi-label or
ordinal task are fitted again on the blend's OOF rows (cv.json) and applied to its test rows. A
hill-climbed blend chooses its weights on the OOF rows it is scored on, so its OOF score is
optimistic; `--holdout-folds` chooses on the other folds and scores on those alone.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Group
from rich.text import Text

from comp.blending import METHODS, Score, blend_table, fit_weights, metric_and_log_loss, parse_weights
from comp.config import Config
from comp.data.competition import Competition, check_same_classes, column_name, save_classes
from comp.errors import CompError
from comp.hill import HillOptions, HillReport, climb_blend, oof_folds
from comp.io import sha256_file, write_json
from comp.runs import (
    classes_file,
    config_file,
    cv_file,
    members_file,
    next_submission_path,
    probability_table,
    read_cv,
    read_predictions,
    read_table_task,
    resolve_run,
    run_dir,
    table_file,
    write_predictions,
)
from comp.submission.formats import create_submission, write_submission
from comp.tasks import decision_record, same_outputs


@dataclass
class Member:
    """A run being blended: its prediction tables (indexed by id) and its cv.json."""

    run_dir: Path
    oof: pd.DataFrame
    test: pd.DataFrame
    classes: list
    cv: dict
    task: str


@dataclass
class SubmissionResult:
    path: Path
    run_dir: Path
    oof_score: float | None
    member_scores: dict[str, Score]
    weights: dict[str, float]
    blend_score: Score | None = None
    climb: HillReport | None = None

    def __rich__(self) -> Group:
        lines = [
            Text(
                f"member {member}: weight {self.weights[member]:.3f}, OOF {score.metric} {score.value:.4f}, "
                f"log loss {score.log_loss:.4f}"
            )
            for member, score in self.member_scores.items()
        ]
        if self.blend_score:
            blend = self.blend_score
            lines.append(
                Text(f"blend -> {self.run_dir}: OOF {blend.metric} {blend.value:.4f}, log loss {blend.log_loss:.4f}")
            )
        if self.climb:
            lines.extend(self.climb.lines())
        oof = "n/a" if self.oof_score is None else f"{self.oof_score:.4f}"
        lines.append(Text(f"OOF score {oof}  submission -> {self.path}"))
        return Group(*lines)


# ----------------------------------------------------------------------------- members


def load_member(run_dir: Path) -> Member:
    oof, classes = read_predictions(table_file(run_dir, "oof"))
    test, test_classes = read_predictions(table_file(run_dir, "test"))
    check_same_classes(classes, test_classes, f"{table_file(run_dir, 'test')} (beside its oof.parquet)")
    cv = read_cv(run_dir)
    if not cv.get("fold_file_sha256"):
        raise CompError(
            f"{cv_file(run_dir)} does not record the fold file its OOF rows came from.",
            hint=f"Run `comp predict` for {run_dir.name} again: it records the fold file's sha256.",
        )
    return Member(run_dir, oof, test, classes, cv, read_table_task(table_file(run_dir, "oof")))


def check_compatible(members: list[Member], classes: list) -> None:
    """Refuse runs that disagree on classes, test ids, OOF ids or fold file: their blend would mean nothing."""
    first = members[0]
    for member in members:
        check_same_classes(classes, member.classes, f"Run {member.run_dir}")
    for member in members[1:]:
        where = f"Runs {first.run_dir} and {member.run_dir}"
        if not same_outputs(member.task, first.task):
            raise CompError(
                f"{where} were predicted for different tasks ({first.task}, {member.task}): their probabilities "
                "mean different things.",
                hint="Blend multi-label runs with multi-label runs only (data.task).",
            )
        if member.cv["fold_file_sha256"] != first.cv["fold_file_sha256"]:
            raise CompError(
                f"{where} were validated on different fold files ({first.cv.get('fold_file')} "
                f"sha256 {first.cv['fold_file_sha256'][:12]}, {member.cv.get('fold_file')} sha256 "
                f"{member.cv['fold_file_sha256'][:12]}): weights fitted on their OOF rows would leak.",
                hint="Blend runs trained on the same folds (same folds.k, seed and fold file).",
            )
        if set(member.test.index) != set(first.test.index):
            raise CompError(
                f"{where} predicted different test ids.",
                hint="Predict both on the same competition's test set (`comp predict`).",
            )
        if set(member.oof.index) != set(first.oof.index):
            raise CompError(
                f"{where} have OOF predictions for different training ids "
                f"({len(first.oof)} and {len(member.oof)} rows).",
                hint="Train and predict the same folds in both (comp train --fold all; comp predict).",
            )


# ----------------------------------------------------------------------------- the blended run


@dataclass
class Blend:
    """A blend computed in memory: probability tables indexed by id, weights in the members' order."""

    method: str
    weights: np.ndarray
    weights_mode: str  # auto (fitted), given (--weights w1,w2,...), equal or hill (climbed)
    oof: pd.DataFrame
    test: pd.DataFrame
    member_scores: dict[str, Score]
    score: Score
    decisions: dict  # comp.tasks.decision_record: task, metric parameters, thresholds fitted on the blend's OOF
    climb: HillReport | None = None


def _check_method(method: str, weights: str | None, hill: HillOptions) -> None:
    if method not in METHODS:
        raise CompError(f"--method {method!r} is not one of {', '.join(METHODS)}.")
    if method == "hill" and weights is not None:
        raise CompError("--method hill chooses the weights itself: drop --weights.")
    if method != "hill" and (hill.negative or hill.holdout_folds):
        raise CompError("--negative-weights and --holdout-folds belong to --method hill.", hint="Add --method hill.")


def blend_members(
    competition: Competition,
    members: list[Member],
    classes: list,
    metric: str,
    method: str = "mean",
    weights: str | None = None,
    params: dict | None = None,
    hill: HillOptions | None = None,
) -> Blend:
    """Align the members by id, fit, climb or take the weights, and blend their OOF and test tables alike."""
    hill = hill or HillOptions()
    _check_method(method, weights, hill)
    oof_ids, test_ids = members[0].oof.index, members[0].test.index
    columns = [column_name(c) for c in classes]
    oof_stack = np.stack([m.oof.loc[oof_ids, columns].to_numpy(np.float64) for m in members])
    test_stack = np.stack([m.test.loc[test_ids, columns].to_numpy(np.float64) for m in members])
    y, task, params = competition.targets(oof_ids, classes), competition.task, params or {}
    report = None
    if method == "hill":
        folds = oof_folds(members[0].cv, cv_file(members[0].run_dir), oof_ids) if hill.holdout_folds else None
        runs, fold_file = [str(m.run_dir) for m in members], members[0].cv.get("fold_file")
        fitted, oof, test, report = climb_blend(
            oof_stack, test_stack, y, metric, runs, hill, folds, fold_file, task, params
        )
        mode = "hill"
    else:
        rule = "mean" if method == "weighted" else method
        parsed = parse_weights(weights, method, len(members))
        fitted = fit_weights(rule, oof_stack, y, task) if isinstance(parsed, str) else parsed
        oof, test = blend_table(rule, oof_stack, fitted, task), blend_table(rule, test_stack, fitted, task)
        mode = "auto" if isinstance(parsed, str) else ("given" if weights else "equal")
    _, decisions = decision_record(task, metric, params, y, oof)
    member_scores = {
        str(m.run_dir): metric_and_log_loss(metric, y, s, params, m.cv.get("thresholds"))
        for m, s in zip(members, oof_stack, strict=True)
    }
    return Blend(
        method,
        fitted,
        mode,
        probability_table(oof_ids, oof, classes).set_index("id"),
        probability_table(test_ids, test, classes).set_index("id"),
        member_scores,
        metric_and_log_loss(metric, y, oof, params, decisions["thresholds"]),
        decisions,
        report,
    )


def _check_name(name: str, run_dirs: list[Path]) -> Path:
    if not name or name.startswith(".") or Path(name).name != name:
        raise CompError(f"--name {name!r} must be a plain folder name (no '/', not starting with '.').")
    out_dir = run_dir(name)
    if any(out_dir.resolve() == d.resolve() for d in run_dirs):
        raise CompError(f"--name {name!r} is one of the runs being blended.", hint="Pick another --name.")
    return out_dir


def _member_record(run_dir: Path, weight: float, member_score: Score | None) -> dict:
    cv, config_path = read_cv(run_dir), config_file(run_dir)
    return {
        "run": str(run_dir),
        "weight": weight,
        "oof": None if member_score is None else member_score.value,
        "log_loss": None if member_score is None else member_score.log_loss,
        "fold_file_sha256": cv.get("fold_file_sha256"),
        "config_sha256": sha256_file(config_path) if config_path.exists() else None,
    }


def write_blend_run(folder: Path, members: list[Member], classes: list, result: Blend) -> None:
    """The blend as a run folder: oof/test tables, classes.json, cv.json and members.json."""
    views, task = [f"blend:{result.method}"], result.decisions["task"]
    write_predictions(table_file(folder, "oof"), result.oof.reset_index(), classes, views, task)
    write_predictions(table_file(folder, "test"), result.test.reset_index(), classes, views, task)
    save_classes(classes, classes_file(folder))
    shared = members[0].cv  # check_compatible made every member's fold file the same
    write_json(
        cv_file(folder),
        {
            "metric": result.score.metric,
            "oof": result.score.value,
            "log_loss": result.score.log_loss,
            **result.decisions,
            "folds": {},
            "fold_file": shared.get("fold_file"),
            "fold_file_sha256": shared["fold_file_sha256"],
            **({"hill": result.climb.record()} if result.climb else {}),
        },
    )
    objective = {"auto": "OOF log loss", "hill": f"OOF {result.score.metric}"}.get(result.weights_mode)
    write_json(
        members_file(folder),
        {
            "method": result.method,
            "weights": result.weights_mode,
            "objective": objective,
            "members": [
                _member_record(m.run_dir, float(w), result.member_scores[str(m.run_dir)])
                for m, w in zip(members, result.weights, strict=True)
            ],
            **({"path": result.climb.path, "hill": result.climb.record()} if result.climb else {}),
        },
    )


def _move_into_place(folder: Path, out_dir: Path) -> None:
    """Replace `out_dir` by the finished `folder`: the old run is removed only once the new one is whole."""
    if out_dir.exists():
        old = folder.with_name(folder.name + ".old")
        out_dir.rename(old)
        folder.rename(out_dir)
        shutil.rmtree(old)
    else:
        folder.rename(out_dir)


def blend(
    config: Config,
    competition: Competition,
    run_dirs: list[Path],
    out_dir: Path,
    method: str = "mean",
    weights: str | None = None,
    hill: HillOptions | None = None,
) -> SubmissionResult:
    """Blend the runs into the run folder `out_dir` (built aside, then renamed), then write its submission."""
    if len({d.resolve() for d in run_dirs}) < len(run_dirs):
        raise CompError("A run is listed twice.", hint="List each run once; use --weights to favour one.")
    members = [load_member(d) for d in run_dirs]
    classes = members[0].classes
    check_same_classes(competition.classes, classes, f"Run {members[0].run_dir}")
    check_compatible(members, classes)
    check_task(competition, members[0].run_dir, members[0].task)
    metric, params = config.predict.metric, config.predict.metric_params
    result = blend_members(competition, members, classes, metric, method, weights, params, hill)
    # The submission is built before anything is written: a format problem leaves nothing behind.
    frame = submission_frame(config, competition, result.test, classes, result.decisions["thresholds"])
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    folder = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:8]}.tmp")  # hidden, beside its final place
    folder.mkdir()
    try:
        write_blend_run(folder, members, classes, result)
        _move_into_place(folder, out_dir)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    path = write_run_submission(config, competition, out_dir, frame)
    weights_by_run = {str(m.run_dir): float(w) for m, w in zip(members, result.weights, strict=True)}
    return SubmissionResult(
        path, out_dir, result.score.value, result.member_scores, weights_by_run, result.score, result.climb
    )


# ----------------------------------------------------------------------------- submissions


def check_task(competition: Competition, run_dir: Path, task: str) -> None:
    """Per-tag probabilities cannot make a single-label submission, nor a softmax table a multi-label one."""
    if not same_outputs(task, competition.task):
        raise CompError(
            f"Run {run_dir} was predicted for data.task {task}, but the data is read as {competition.task}.",
            hint=f"Set data.task: {task} as when the run was trained, or predict it again.",
        )


def submission_frame(
    config: Config, competition: Competition, test: pd.DataFrame, classes: list, thresholds=None
) -> pd.DataFrame:
    """The submission of test probabilities: the task's decisions (with the thresholds fitted on the OOF rows)
    in the sample's format."""
    check_same_classes(competition.classes, classes, "The test predictions")
    return create_submission(
        competition.sample,
        test,
        classes,
        config.submission.format,
        config.submission.positive_class,
        task=competition.task,
        thresholds=thresholds,
    )


def _sources(run_dir: Path) -> tuple[str | None, list[dict]]:
    """The blend method and members of a blended run; a trained run is its own single source."""
    record_path = members_file(run_dir)
    if record_path.exists():
        record = json.loads(record_path.read_text())
        return record["method"], record["members"]
    return None, [_member_record(run_dir, 1.0, None)]


def write_run_submission(
    config: Config, competition: Competition, run_dir: Path, frame: pd.DataFrame | None = None
) -> Path:
    """submissions/<run name>.csv from a run's test predictions (never overwriting), plus its sidecar JSON."""
    cv = read_cv(run_dir)
    if frame is None:
        test, classes = read_predictions(table_file(run_dir, "test"))
        check_task(competition, run_dir, read_table_task(table_file(run_dir, "test")))
        frame = submission_frame(config, competition, test, classes, cv.get("thresholds"))
    path = next_submission_path(run_dir.name)
    write_submission(frame, path)
    method, sources = _sources(run_dir)
    write_json(
        path.with_suffix(".json"),
        {
            "file": path.name,
            "sha256": sha256_file(path),
            "run": str(run_dir),
            "metric": cv.get("metric"),
            "oof_score": cv.get("oof"),
            "log_loss": cv.get("log_loss"),
            "task": cv.get("task"),
            "thresholds": cv.get("thresholds"),
            "fold_file": cv.get("fold_file"),
            "fold_file_sha256": cv.get("fold_file_sha256"),
            "method": method,
            "weights": [s["weight"] for s in sources],
            "sources": sources,
            "config": config.to_dict(),
        },
    )
    return path


def ensemble(
    config: Config,
    competition: Competition,
    runs: list[str] | None = None,
    name: str | None = None,
    force: bool = False,
    method: str = "mean",
    weights: str | None = None,
    hill: HillOptions | None = None,
) -> SubmissionResult:
    """One run: its submission. Several: blend them into runs/<name>/ first, then its submission."""
    run_dirs = [resolve_run(r) for r in runs or [config.name]]
    if len(run_dirs) == 1:
        if method != "mean" or weights is not None or hill is not None:
            raise CompError(
                f"--method {method}, --weights, --negative-weights and --holdout-folds blend several runs; "
                f"one run ({run_dirs[0]}) is submitted as it is.",
                hint="List two or more runs to blend them.",
            )
        run_dir = run_dirs[0]
        return SubmissionResult(
            write_run_submission(config, competition, run_dir), run_dir, read_cv(run_dir).get("oof"), {}, {}
        )
    out_dir = _check_name(name or "+".join(d.name for d in run_dirs), run_dirs)
    if out_dir.exists() and not force:
        raise CompError(f"{out_dir} already exists.", hint="Pick another --name, or pass --force to replace it.")
    return blend(config, competition, run_dirs, out_dir, method, weights, hill)
