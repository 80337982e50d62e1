"""The whole pipeline through the CLI on tiny real data: the labels in the submission are the right ones."""

import json

import pandas as pd
import pytest
from conftest import TINY_RUN, on_competition, sets, write_folders_competition
from typer.testing import CliRunner

from comp.cli import app

runner = CliRunner()
# The pipeline is the same for any timm model: the tiny run, at twice its widths and for six epochs so that
# the 12 classes are learnt; loader workers as a real run has them (auto).
FAST = sets(
    *TINY_RUN,
    *on_competition("numbers"),
    "model.kwargs={widths: [16, 32, 64, 128]}",
    "train.epochs=6",
    "train.lr=0.003",
    "train.num_workers=auto",
)


def comp(*args):
    result = runner.invoke(app, [*args, *FAST])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture
def numbers(project):
    """12 classes in folders named 0..11: torchvision's ImageFolder would number '10' as class 2."""
    return write_folders_competition(project / "data/numbers", n_classes=12, per_class=16, n_test=36)


@pytest.mark.slow
def test_pipeline_writes_the_true_labels_for_numeric_class_folders(project, numbers):
    comp("folds")
    comp("train", "--fold", "all")
    comp("predict", "--tta")
    result = comp("ensemble")
    submission_path = project / "submissions/numbers.csv"
    assert str(submission_path.relative_to(project)) in result.output.replace("\n", "")

    assert json.loads((project / "runs/numbers/classes.json").read_text()) == list(range(12))
    submission = pd.read_csv(submission_path)
    assert list(submission.columns) == ["id", "label"]
    assert list(submission["id"]) == list(numbers["id"])
    assert submission["label"].dtype.kind == "i"  # integers stay integers
    merged = submission.merge(numbers, on="id", suffixes=("_pred", "_true"))
    assert (merged["label_pred"] == merged["label_true"]).mean() >= 0.9
    tens = merged[merged["label_true"].isin([10, 11])]
    assert (tens["label_pred"] == tens["label_true"]).mean() >= 0.8  # not remapped to 2 and 3

    cv = json.loads((project / "runs/numbers/cv.json").read_text())
    assert cv["metric"] == "accuracy" and set(cv["folds"]) == {"0", "1"} and cv["oof"] >= 0.8
    oof = pd.read_parquet(project / "runs/numbers/oof.parquet")
    assert sorted(oof["id"]) == sorted(pd.read_csv(project / "folds/numbers_k2_s42.csv")["id"])
    assert list(oof.columns) == ["id", *[str(i) for i in range(12)]]
    metrics = pd.read_csv(project / "runs/numbers/fold0/metrics.csv")
    assert list(metrics["epoch"]) == list(range(1, 7))
    assert {"train_loss", "val_loss", "val_accuracy", "lr"} <= set(metrics.columns)

    # A second ensemble never overwrites the first submission.
    first = submission_path.read_bytes()
    comp("ensemble")
    assert submission_path.read_bytes() == first
    assert (project / "submissions/numbers-2.csv").exists() and (project / "submissions/numbers-2.json").exists()


@pytest.mark.slow
def test_finished_and_interrupted_folds_are_protected(project, numbers):
    comp("folds")
    comp("train", "--fold", "0", "--set", "train.epochs=1")
    refused = runner.invoke(app, ["train", "--fold", "0", *FAST, "--set", "train.epochs=1"])
    assert refused.exit_code == 1 and "--force" in refused.output and "Traceback" not in refused.output
    (project / "runs/numbers/fold1").mkdir()
    (project / "runs/numbers/fold1/metrics.csv").write_text("epoch\n")
    interrupted = runner.invoke(app, ["train", "--fold", "all", *FAST, "--set", "train.epochs=1"])
    assert interrupted.exit_code == 1 and "--resume" in interrupted.output
    assert "fold 0: finished already, skipped" in interrupted.output


def test_errors_are_one_paragraph_without_traceback(project):
    result = runner.invoke(app, ["folds", "--set", "train.epoch=3"])
    assert result.exit_code == 1
    assert "Did you mean train.epochs?" in " ".join(result.output.split()) and "Traceback" not in result.output
    result = runner.invoke(app, ["train", "--fold", "0"])
    assert result.exit_code == 1 and "comp download demo" in result.output
