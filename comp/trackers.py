"""The experiment trackers comp logs to (train.loggers): Weights & Biases and MLflow, behind one small interface.

Each fold trains in a tracker run of its own (named <experiment>-fold<k>, tagged fold:<k>, grouped by
the experiment: W&B's group, MLflow's experiment), whose id the fold's run.json keeps so that a
resumed fold continues it. `comp predict` and `comp evaluate` end by logging the CV score, cv.json
and the report PNGs to a run <experiment>-cv in the same group (its ids in runs/<name>/trackers.json).

A tracker gets the resolved config, metrics and files comp names: never the environment (no Kaggle
key, no variable), and W&B's console capture and code saving are off. Where runs go is each
tracker's own setting: WANDB_MODE, WANDB_PROJECT (default: the competition's slug), WANDB_DIR;
MLFLOW_TRACKING_URI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from comp.config import LOGGER_EXTRAS, Config, flatten
from comp.errors import CompError
from comp.io import write_json
from comp.runs import cv_file, read_cv

TRACKERS = ("wandb", "mlflow")  # the loggers that keep runs of their own
RUN_IDS = "trackers.json"  # in the run folder: the id of its -cv run in each tracker


def configured_trackers(config: Config) -> list[str]:
    return [name for name in config.train.loggers if name in TRACKERS]


# ----------------------------------------------------------------------------- checks, before any work


def check_installed(logger: str, module: str) -> None:
    """A clear error naming the extra when the package of a configured logger is missing."""
    if importlib.util.find_spec(module) is None:
        raise CompError(
            f"train.loggers names {logger}, but the {module} package is not installed.",
            hint=f"pip install 'comp[{LOGGER_EXTRAS[logger]}]', or take {logger} out of train.loggers.",
        )


def check_trackers(config: Config) -> None:
    """Every configured tracker installed and, for MLflow, its store usable."""
    for name in configured_trackers(config):
        check_installed(name, name)
    if "mlflow" in config.train.loggers:
        check_mlflow_store()


def check_mlflow_store() -> None:
    """comp[mlflow] is mlflow-skinny: a tracking server or a file store, not a database (MLflow's own default)."""
    import mlflow
    import mlflow.environment_variables

    # MLflow 3.x's later releases refuse a file store unless allowed; earlier ones have no such switch
    allow_file_store = getattr(mlflow.environment_variables, "MLFLOW_ALLOW_FILE_STORE", None)

    uri = mlflow.get_tracking_uri()
    scheme = uri.partition(":")[0] if "://" in uri or uri.startswith("file:") else "file"
    where = "set MLFLOW_TRACKING_URI to your tracking server (http://host:5000)"
    if scheme in ("sqlite", "postgresql", "mysql", "mssql") and importlib.util.find_spec("sqlalchemy") is None:
        raise CompError(
            f"MLflow's tracking store is {uri}, a database, which needs the full mlflow package; "
            "comp[mlflow] installs mlflow-skinny, the tracking client.",
            hint=f"pip install mlflow, or {where}, or log to a local file store: "
            "MLFLOW_TRACKING_URI=./mlruns MLFLOW_ALLOW_FILE_STORE=true.",
        )
    if scheme == "file" and allow_file_store is not None and not allow_file_store.get():
        raise CompError(
            f"MLflow's tracking store is the folder {uri}, which MLflow refuses unless MLFLOW_ALLOW_FILE_STORE=true.",
            hint=f"Set MLFLOW_ALLOW_FILE_STORE=true, or {where}.",
        )


# ----------------------------------------------------------------------------- a run in a tracker


class TrackerRun(ABC):
    """One run in a tracker: metrics by step, summary values, files. WandbRun and MlflowRun implement it."""

    id: str

    @abstractmethod
    def log_metrics(self, values: dict[str, float], step: int | None = None) -> None: ...

    @abstractmethod
    def log_summary(self, values: dict[str, float]) -> None: ...

    @abstractmethod
    def log_files(self, paths: list[Path], base: Path) -> None:
        """`paths` under the names they have relative to `base`."""

    @abstractmethod
    def finish(self, ok: bool = True) -> None: ...


def open_tracker_run(
    tracker: str, config: Config, group: str, name: str, tags: dict[str, str], run_id: str | None = None
) -> TrackerRun:
    """A new run (run_id None) or the run `run_id` continued, holding the resolved config."""
    if tracker == "wandb":
        return WandbRun(config, group, name, tags, run_id)
    return MlflowRun(config, group, name, tags, run_id)


class WandbRun(TrackerRun):
    def __init__(self, config: Config, group: str, name: str, tags: dict[str, str], run_id: str | None):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project=None if "WANDB_PROJECT" in os.environ else config.data.competition,
            group=group,
            name=name,
            job_type=tags.get("job"),
            tags=[f"{key}:{value}" for key, value in tags.items()],
            config=config.to_dict() if run_id is None else None,
            id=run_id,
            resume="allow" if run_id else None,
            # comp's progress bars redraw in place, the metrics are logged as metrics; saved files are
            # copies (no symlinks), as they were when logged
            settings=wandb.Settings(save_code=False, console="off", symlink=False),
        )
        if run_id is not None:  # a resume with changed values (--force) logs them
            self.run.config.update(config.to_dict(), allow_val_change=True)
        self.id = self.run.id

    def log_metrics(self, values: dict[str, float], step: int | None = None) -> None:
        self.run.log(values, step=step)

    def log_summary(self, values: dict[str, float]) -> None:
        self.run.summary.update(values)

    def log_files(self, paths: list[Path], base: Path) -> None:
        images = {
            f"{path.relative_to(base).with_suffix('')}": self.wandb.Image(str(path))
            for path in paths
            if path.suffix == ".png"
        }
        if images:
            self.run.log(images)  # a copy of each under media/images: the run's report pictures
        for path in paths:
            if path.suffix != ".png":
                self.run.save(str(path), base_path=str(base), policy="now")

    def finish(self, ok: bool = True) -> None:
        self.run.finish(exit_code=0 if ok else 1)


class MlflowRun(TrackerRun):
    """Through MlflowClient, which names its run on every call: no global active run to leave behind."""

    def __init__(self, config: Config, group: str, name: str, tags: dict[str, str], run_id: str | None):
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = client = MlflowClient()
        if run_id is None:
            experiment = client.get_experiment_by_name(group)
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(group)
            run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
            params = [Param(key, str(value)[:6000]) for key, value in flatten(config.to_dict()).items()]
            for start in range(0, len(params), 100):  # MLflow takes at most 100 params a call
                client.log_batch(run_id, params=params[start : start + 100])
        else:
            client.update_run(run_id, status="RUNNING")
        client.log_dict(run_id, config.to_dict(), "config.yaml")  # the config as now resolved
        self.id = run_id

    def log_metrics(self, values: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(key, float(value), stamp, step or 0) for key, value in values.items()]
        self.client.log_batch(self.id, metrics=metrics)

    def log_summary(self, values: dict[str, float]) -> None:
        self.log_metrics(values)

    def log_files(self, paths: list[Path], base: Path) -> None:
        for path in paths:
            folder = path.parent.relative_to(base).as_posix()
            self.client.log_artifact(self.id, str(path), None if folder == "." else folder)

    def finish(self, ok: bool = True) -> None:
        self.client.set_terminated(self.id, "FINISHED" if ok else "FAILED")


# ----------------------------------------------------------------------------- the end of predict and evaluate


def cv_metrics(cv: dict[str, Any]) -> dict[str, float]:
    """cv.json's scores: cv_<metric>, cv_log_loss, fold<k>_<metric>, and every cv_<name> comp evaluate adds."""
    metric = cv["metric"]
    values = {f"cv_{metric}": cv["oof"], "cv_log_loss": cv["log_loss"]}
    values |= {f"fold{k}_{metric}": score for k, score in cv.get("folds", {}).items()}
    values |= {f"cv_{name}": score for name, score in cv.get("metrics", {}).items()}
    return values


def log_results(config: Config, folder: Path) -> None:
    """Hand a run's CV score, cv.json and report PNGs to each configured tracker (its <run>-cv run)."""
    trackers = configured_trackers(config)
    if not trackers:
        return
    files = [cv_file(folder), *sorted((folder / "report").glob("*.png"))]
    metrics = cv_metrics(read_cv(folder))
    ids_path = folder / RUN_IDS
    ids = json.loads(ids_path.read_text()) if ids_path.exists() else {}
    for tracker in trackers:
        run = open_tracker_run(tracker, config, folder.name, f"{folder.name}-cv", {"job": "cv"}, ids.get(tracker))
        ids[tracker] = run.id
        write_json(ids_path, ids)
        try:
            run.log_metrics(metrics)
            run.log_files(files, folder)
        except BaseException:
            run.finish(ok=False)
            raise
        run.finish()
