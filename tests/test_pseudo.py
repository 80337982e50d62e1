"""Pseudo-labels: `comp pseudo` keeps confident test rows; `data.pseudo_labels` adds them to every fold's
training rows, never to validation; bad tables are refused by file, id and label before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_csv_competition
from typer.testing import CliRunner

from comp.cli import app
from comp.config import load_config
from comp.data.competition import load_competition
from comp.data.folds import load_folds
from comp.errors import CompError
from comp.pseudo import pseudo_label, select_rows
from comp.runs import read_predictions
from comp.training.loaders import create_loaders
from comp.training.seeds import train_seeds

TINY = [
    "model.name=resnet18_cifar",
    "model.kwargs={widths: [8, 16, 32, 64]}",
    "data.image_size=16",
    "train.batch_size=8",
    "train.epochs=1",
    "folds.k=2",
    "aug.phase1=none",
    "name=base",
    "data.root=data/tiny",
    "data.competition=tiny",
    "predict.tta=[identity]",
    "train.num_workers=0",
]


def comp(*args: str) -> str:
    sets = [arg for override in TINY for arg in ("--set", override)]
    result = CliRunner().invoke(app, [args[0], *sets, *args[1:]])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


@pytest.fixture
def tiny(project):
    write_csv_competition(project / "data/tiny", n_classes=4, per_class=8)
    comp("folds")
    return project


def test_rows_are_kept_by_threshold_or_by_each_classes_top_share():
    probs = np.array([[0.96, 0.04], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9], [0.45, 0.55], [0.99, 0.01]])
    assert select_rows(probs, 0.95, None).tolist() == [0, 5]
    # Class 0 rows 0, 1, 5 (top half: 2 of 3 -> 5, 0); class 1 rows 2, 3, 4 (-> 3, 2).
    assert select_rows(probs, None, 0.5).tolist() == [0, 2, 3, 5]


def write_table(rows: list[tuple], path: str = "pseudo.csv") -> str:
    pd.DataFrame(rows, columns=["id", "label"]).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("x0", 1), ("img_0_0", 0)], r"pseudo.csv \(data.pseudo_labels\) pseudo-labels training id\(s\) img_0_0"),
        ([("x0", 1), ("nope", 0)], r"not test ids of data/tiny: nope \(line 3\)"),
        ([("x0", 1), ("x1", 9)], r"line 3: label 9 is not one of the competition's classes \(0, 1, 2, 3\)"),
        ([("x0", 1), ("x0", 2)], "lists test id 'x0' more than once"),
    ],
)
def test_bad_pseudo_tables_are_refused_before_training_writes_anything(tiny, rows, message):
    config = load_config(overrides=[*TINY, f"data.pseudo_labels={write_table(rows)}"])
    with pytest.raises(CompError, match=message):
        train_seeds(config, load_competition(config.data), Path("configs/default.yaml"), [])
    assert not Path("runs").exists()


def test_missing_table_and_column_and_rules_are_refused(tiny):
    config = load_config(overrides=[*TINY, "data.pseudo_labels=none.csv"])
    with pytest.raises(CompError, match="data.pseudo_labels none.csv not found"):
        train_seeds(config, load_competition(config.data), Path("configs/default.yaml"), [])
    pd.DataFrame({"id": ["x0"], "class": [1]}).to_csv("nolabel.csv", index=False)
    config = load_config(overrides=[*TINY, "data.pseudo_labels=nolabel.csv"])
    with pytest.raises(CompError, match="nolabel.csv \\(data.pseudo_labels\\) has no 'label' column"):
        train_seeds(config, load_competition(config.data), Path("configs/default.yaml"), [])
    competition = load_competition(config.data)
    with pytest.raises(CompError, match="needs one rule"):
        pseudo_label(competition, "base", threshold=0.9, top=0.5)
    with pytest.raises(CompError, match=r"--threshold 1.5 must be in \(0, 1\]"):
        pseudo_label(competition, "base", threshold=1.5)


@pytest.mark.slow
def test_a_pseudo_label_round_trains_on_test_rows_and_keeps_the_oof_rows(tiny):
    comp("train")
    comp("predict")
    made = comp("pseudo", "base", "--top", "0.5")
    assert "of 6 test images kept (top 50% of each predicted class) -> runs/base/pseudo_labels.csv" in made
    table = pd.read_csv("runs/base/pseudo_labels.csv", dtype={"id": str})
    assert set(table["id"]) <= {f"x{i}" for i in range(6)} and len(table) >= 3
    assert list(table.columns) == ["id", "label", "confidence"]

    second = ["--set", "name=pl", "--set", "data.pseudo_labels=runs/base/pseudo_labels.csv"]
    comp("train", *second)
    comp("predict", *second)
    base, _ = read_predictions(Path("runs/base/oof.parquet"))
    pl, _ = read_predictions(Path("runs/pl/oof.parquet"))
    training_ids = set(pd.read_csv("data/tiny/train.csv", dtype=str)["id"])
    assert set(pl.index) == set(base.index) == training_ids  # the OOF rows: the training images, nothing else
    assert not set(pl.index) & set(table["id"])
    for k in (0, 1):
        metrics = pd.read_csv(f"runs/pl/fold{k}/metrics.csv")
        assert (metrics["pseudo_rows"] == len(table)).all()
        record = json.loads(Path(f"runs/pl/fold{k}/run.json").read_text())
        assert record["pseudo_labels"]["path"] == "runs/base/pseudo_labels.csv"
        assert record["pseudo_labels"]["rows"] == len(table)
        assert "pseudo_rows" not in pd.read_csv(f"runs/base/fold{k}/metrics.csv").columns

    # Each fold: its training rows plus every pseudo row; its validation rows exactly the fold's own.
    config = load_config(overrides=[*TINY, *second[1::2]])
    competition = load_competition(config.data)
    folds = load_folds(config, competition)
    test_paths = set(competition.test["path"])
    for k in (0, 1):
        train_loader, val_loader = create_loaders(config, competition, folds, k)
        train_paths = list(train_loader.dataset.images.paths)
        val_paths = set(val_loader.dataset.paths)
        assert len(train_paths) == int((folds["fold"] != k).sum()) + len(table)
        assert sum(p in test_paths for p in train_paths) == len(table)
        assert not val_paths & test_paths and len(val_paths) == int((folds["fold"] == k).sum())
    cv = {n: json.loads(Path(f"runs/{n}/cv.json").read_text()) for n in ("base", "pl")}
    assert cv["base"]["fold_file_sha256"] == cv["pl"]["fold_file_sha256"]
