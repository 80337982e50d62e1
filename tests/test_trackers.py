"""train.loggers: W&B (offline run files) and MLflow (a local file store) hold what comp logged, and nothing secret."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY_RUN, on_competition, sets, write_csv_competition
from typer.testing import CliRunner

from comp.cli import app
from comp.config import load_config
from comp.data.competition import load_competition
from comp.data.folds import write_folds
from comp.errors import CompError
from comp.evaluate import evaluate_run
from comp.predict import predict
from comp.trackers import check_trackers
from comp.training.checkpoint import read_record
from comp.training.fold import train

wandb = pytest.importorskip("wandb")
mlflow = pytest.importorskip("mlflow")

SECRET = "kaggle-key-3f9a1c77e2"  # stands for the Kaggle key: it must reach no tracker's files
# Two epochs with the default (light) augmentation, and one view in predict.
TINY = [*TINY_RUN, *on_competition("tiny"), "train.epochs=2", "aug.phase1=light", "predict.tta=[identity]"]


def config_with(*overrides):
    return load_config("configs/default.yaml", [*TINY, *overrides])


@pytest.fixture
def tracked(project, monkeypatch):
    """A tiny competition, W&B offline and MLflow on a file store under the project, and a Kaggle key around."""
    write_csv_competition(project / "data/tiny", n_classes=3, per_class=8)
    write_folds(config_with(), load_competition(config_with().data))
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(project))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(project / "mlruns"))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    wandb.teardown()  # wandb reads its environment once per process: here, this test's
    yield project
    wandb.teardown()


def train_run(*overrides, fold="all", **kwargs):
    config = config_with(*overrides)
    return config, train(config, load_competition(config.data), fold, **kwargs)


def wandb_records(folder: Path) -> list[dict]:
    """The records of an offline run's .wandb log, read by wandb's own inspector."""
    out = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(folder)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


def wandb_run(records: list[dict]) -> dict:
    return next(r["run"] for r in records if r["type"] == "run")


def wandb_history(records: list[dict]) -> list[dict]:
    return [r["history"]["item"] for r in records if r["type"] == "history"]


def wandb_folders(project: Path, run_id: str) -> list[Path]:
    """A run's offline folders, oldest first; wandb adds '-1' when a resume starts in the same second."""
    name = re.compile(rf"offline-run-\d{{8}}_\d{{6}}-{run_id}(-\d+)?")
    return sorted(path for path in (project / "wandb").iterdir() if name.fullmatch(path.name))


def no_secret_in(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert SECRET.encode() not in path.read_bytes(), f"the Kaggle key was logged to {path}"


# ----------------------------------------------------------------------------- configuration


def test_an_unknown_logger_is_refused_with_the_closest_name(project):
    with pytest.raises(CompError, match=r"Unknown logger 'wandbb' in train.loggers. Did you mean wandb\?"):
        config_with("train.loggers=[csv,wandbb]")
    with pytest.raises(CompError, match="Did you mean mlflow"):
        config_with("train.loggers=mlfow")


def test_train_tensorboard_still_reads_as_a_logger(project):
    assert config_with("train.tensorboard=true").train.loggers == ["csv", "tensorboard"]
    assert config_with("train.tensorboard=false").train.loggers == ["csv"]
    assert config_with("train.loggers=wandb").train.loggers == ["wandb"]  # a bare name is a list of one
    # an older run's config.yaml, written before train.loggers, still loads
    Path("old.yaml").write_text("train:\n  tensorboard: true\n  epochs: 2\n")
    assert load_config("old.yaml").train.loggers == ["csv", "tensorboard"]


def test_wandb_configured_without_its_extra_is_refused_before_training(tracked, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # what an absent package looks like
    with pytest.raises(CompError, match=r"train.loggers names wandb.*\n.*pip install 'comp\[wandb\]'"):
        train_run("train.loggers=[csv,wandb]")
    assert not (tracked / "runs").exists()


def test_the_command_line_prints_the_extra_and_the_example_with_their_brackets(tracked, monkeypatch):
    """What `comp train` prints for both mistakes: `comp[wandb]` and `[csv,wandb]` as written, not taken for markup."""
    runner = CliRunner()
    result = runner.invoke(app, ["train", *sets(*TINY, "train.loggers=[csv,wandbb]")], env={"COLUMNS": "200"})
    assert result.exit_code == 1 and "Did you mean wandb?" in result.output, result.output
    assert "(e.g. --set train.loggers=[csv,wandb])" in result.output
    monkeypatch.setitem(sys.modules, "wandb", None)
    result = runner.invoke(app, ["train", *sets(*TINY, "train.loggers=[csv,wandb]")], env={"COLUMNS": "200"})
    assert result.exit_code == 1 and "pip install 'comp[wandb]', or take wandb out" in result.output, result.output
    assert not (tracked / "runs").exists()


def test_mlflow_configured_without_its_extra_is_refused(tracked, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(CompError, match=r"pip install 'comp\[mlflow\]'"):
        check_trackers(config_with("train.loggers=[mlflow]"))


def test_an_mlflow_store_the_skinny_client_cannot_open_is_refused(tracked, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    with pytest.raises(CompError, match="MLFLOW_ALLOW_FILE_STORE=true"):
        check_trackers(config_with("train.loggers=[mlflow]"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    with pytest.raises(CompError, match="needs the full mlflow package"):
        check_trackers(config_with("train.loggers=[mlflow]"))


# ----------------------------------------------------------------------------- what the trackers hold


@pytest.mark.slow
def test_each_fold_and_the_cv_are_tracker_runs_holding_config_metrics_and_reports(tracked):
    config, results = train_run("train.loggers=[csv,wandb,mlflow]")
    competition = load_competition(config.data)
    predict(config, competition)
    evaluate_run(config, competition)
    cv = json.loads((tracked / "runs/tiny/cv.json").read_text())
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("tiny")
    ids = json.loads((tracked / "runs/tiny/trackers.json").read_text())

    for result in results:
        k = result.fold
        record = read_record(tracked / f"runs/tiny/fold{k}")
        metrics = pd.read_csv(tracked / f"runs/tiny/fold{k}/metrics.csv")
        # W&B: one offline run per fold, grouped by the experiment, with the config and each epoch's metrics
        (folder,) = wandb_folders(tracked, record["trackers"]["wandb"])
        records = wandb_records(folder)
        run = wandb_run(records)
        assert (run["display_name"], run["run_group"], run["tags"]) == (
            f"tiny-fold{k}",
            "tiny",
            ["job:train", f"fold:{k}"],
        )
        assert run["config"]["update"]["train"]["loggers"] == ["csv", "wandb", "mlflow"]
        assert run["config"]["update"]["model"]["name"] == "resnet18_cifar"
        history = wandb_history(records)
        assert [h["_step"] for h in history] == metrics["epoch"].tolist()
        assert [h["val_loss"] for h in history] == pytest.approx(metrics["val_loss"].tolist())
        assert [h["val_accuracy"] for h in history] == pytest.approx(metrics["val_accuracy"].tolist())
        summary = {}
        for r in records:
            if r["type"] == "summary":
                summary |= r["summary"].get("update", {})
        assert summary["best_val_loss"] == pytest.approx(metrics["val_loss"].min())
        assert summary["best_epoch"] == result.best_epoch
        # MLflow: a run per fold in the experiment's MLflow experiment, metrics read back through MLflow
        mlflow_run = client.get_run(record["trackers"]["mlflow"])
        assert mlflow_run.info.experiment_id == experiment.experiment_id
        assert mlflow_run.info.run_name == f"tiny-fold{k}" and mlflow_run.data.tags["fold"] == str(k)
        assert mlflow_run.data.params["train.epochs"] == "2" and mlflow_run.info.status == "FINISHED"
        history = client.get_metric_history(mlflow_run.info.run_id, "val_loss")
        assert [m.step for m in history] == metrics["epoch"].tolist()
        assert [m.value for m in history] == pytest.approx(metrics["val_loss"].tolist())
        assert client.get_metric_history(mlflow_run.info.run_id, "best_val_loss")[-1].value == pytest.approx(
            metrics["val_loss"].min()
        )
        assert {a.path for a in client.list_artifacts(mlflow_run.info.run_id)} == {"config.yaml"}

    # the CV: predict's and evaluate's scores, cv.json and the report PNGs, in one <run>-cv run per tracker
    reports = sorted(p.name for p in (tracked / "runs/tiny/report").glob("*.png"))
    assert len(reports) == 4
    folders = wandb_folders(tracked, ids["wandb"])
    assert len(folders) == 2  # predict, then evaluate continuing the same run
    records = wandb_records(folders[-1])
    assert wandb_run(records)["display_name"] == "tiny-cv" and wandb_run(records)["run_group"] == "tiny"
    logged = {k: v for item in wandb_history(records) for k, v in item.items()}
    assert logged["cv_accuracy"] == pytest.approx(cv["oof"]) and logged["cv_roc_auc"] == pytest.approx(
        cv["metrics"]["roc_auc"]
    )
    assert logged["fold1_accuracy"] == pytest.approx(cv["folds"]["1"])
    assert json.loads((folders[-1] / "files/cv.json").read_text()) == cv
    images = sorted(p.name.rsplit("_", 2)[0] + ".png" for p in (folders[-1] / "files/media/images/report").iterdir())
    assert images == reports
    cv_run = client.get_run(ids["mlflow"])
    assert cv_run.info.run_name == "tiny-cv" and cv_run.info.experiment_id == experiment.experiment_id
    scores = client.get_metric_history(ids["mlflow"], "cv_accuracy")
    assert len(scores) == 2 and scores[-1].value == pytest.approx(cv["oof"])  # predict, then evaluate
    artifacts = {a.path for a in client.list_artifacts(ids["mlflow"])} | {
        a.path for a in client.list_artifacts(ids["mlflow"], "report")
    }
    assert {"cv.json", "config.yaml", *(f"report/{name}" for name in reports)} <= artifacts

    # never the Kaggle key, nor the environment
    no_secret_in(tracked / "wandb")
    no_secret_in(tracked / "mlruns")


@pytest.mark.slow
def test_a_resumed_fold_continues_its_tracker_runs(tracked):
    train_run("train.loggers=[wandb,mlflow]", "train.epochs=1", fold=0)
    first = read_record(tracked / "runs/tiny/fold0")["trackers"]
    train_run("train.loggers=[wandb,mlflow]", "train.epochs=2", fold=0, resume=True, force=True)
    assert read_record(tracked / "runs/tiny/fold0")["trackers"] == first
    metrics = pd.read_csv(tracked / "runs/tiny/fold0/metrics.csv")

    history = mlflow.MlflowClient().get_metric_history(first["mlflow"], "val_loss")
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx(metrics["val_loss"].tolist())
    before, after = wandb_folders(tracked, first["wandb"])  # the same run id, before and after the resume
    assert [h["_step"] for h in wandb_history(wandb_records(before))] == [1]
    resumed = wandb_records(after)
    assert [h["_step"] for h in wandb_history(resumed)] == [2]
    config_updates = [r["config"]["update"] for r in resumed if r["type"] == "config"]
    assert config_updates and config_updates[-1]["train"]["epochs"] == 2  # the changed value logged
