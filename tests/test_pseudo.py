"""Pseudo-labels: `comp pseudo` keeps confident test rows, as hard labels or (--soft) class probabilities;
`data.pseudo_labels` adds them to every fold's training rows, never to validation; bad tables are refused by file,
id, label, line and column before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_RUN, competition_data, sets, write_csv_competition
from typer.testing import CliRunner

from comp.cli import app
from comp.config import load_config
from comp.data.competition import load_competition
from comp.data.folds import load_folds
from comp.data.pseudo import load_pseudo_labels
from comp.errors import CompError
from comp.pseudo import pseudo_label, select_rows
from comp.runs import probability_table, read_predictions, write_predictions
from comp.training.loaders import create_loaders
from comp.training.loop import create_mixup, training_loss
from comp.training.seeds import train_seeds

TINY = [*TINY_RUN, *competition_data("tiny"), "name=base", "predict.tta=[identity]"]


def comp(*args: str) -> str:
    result = CliRunner().invoke(app, [args[0], *sets(*TINY), *args[1:]])
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


def write_soft_table(rows: list[tuple], columns=("0", "1", "2", "3"), path: str = "soft.csv") -> str:
    pd.DataFrame([(i, *probs) for i, probs in rows], columns=["id", *columns]).to_csv(path, index=False)
    return path


def test_soft_table_holds_the_runs_probabilities_of_the_kept_rows(tiny):
    probs = np.array([[0.9, 0.05, 0.05, 0], [0.4, 0.3, 0.2, 0.1], [0, 0.02, 0.18, 0.8]] + [[0.25] * 4] * 3)
    ids = [f"x{i}" for i in range(6)]
    Path("runs/base").mkdir(parents=True)
    write_predictions(
        Path("runs/base/test.parquet"), probability_table(ids, probs, [0, 1, 2, 3]), [0, 1, 2, 3], [], "multiclass"
    )
    competition = load_competition(load_config(overrides=TINY).data)
    made = pseudo_label(competition, "base", threshold=0.8, soft=True)
    assert made.kept == 2 and made.soft
    table = pd.read_csv(made.path, dtype={"id": str})
    assert list(table.columns) == ["id", "0", "1", "2", "3"] and list(table["id"]) == ["x0", "x2"]
    np.testing.assert_allclose(table.iloc[:, 1:].to_numpy(), probs[[0, 2]])
    config = load_config(overrides=[*TINY, f"data.pseudo_labels={made.path}"])
    pseudo = load_pseudo_labels(config, load_competition(config.data))
    assert pseudo.soft and pseudo.targets.dtype == np.float32
    np.testing.assert_allclose(pseudo.targets, probs[[0, 2]], atol=1e-6)


def test_soft_pseudo_targets_reach_the_loss_and_validation_keeps_its_labels(tiny):
    table = write_soft_table([("x0", (0.7, 0.3, 0, 0)), ("x1", (0, 0, 0.5, 0.5))])
    config = load_config(overrides=[*TINY, f"data.pseudo_labels={table}", "train.label_smoothing=0.1"])
    competition = load_competition(config.data)
    folds = load_folds(config, competition)
    train_loader, val_loader = create_loaders(config, competition, folds, 0)
    _, plain_val = create_loaders(load_config(overrides=TINY), competition, folds, 0)
    real = torch.as_tensor(competition.targets(folds["id"][folds["fold"] != 0], competition.classes))
    targets = train_loader.dataset.images.targets
    assert train_loader.dataset.soft_targets and targets.shape == (len(real) + 2, 4)
    # Validation rows: the fold's own, with their class indices, exactly as without pseudo-labels.
    assert val_loader.dataset.targets.dtype == torch.long
    assert torch.equal(val_loader.dataset.targets, plain_val.dataset.targets)

    # Real rows lose what cross-entropy with label smoothing gives; pseudo rows what soft-target cross-entropy gives
    # for their probabilities, smoothed the same way.
    logits = torch.randn(len(targets), 4, generator=torch.Generator().manual_seed(0))
    real_losses = F.cross_entropy(logits[: len(real)], real, label_smoothing=0.1, reduction="none")
    smoothed = torch.tensor([[0.7, 0.3, 0, 0], [0, 0, 0.5, 0.5]]) * 0.9 + 0.1 / 4
    pseudo_losses = -(smoothed * logits[len(real) :].log_softmax(-1)).sum(1)
    expected = torch.cat([real_losses, pseudo_losses]).mean()
    torch.testing.assert_close(training_loss(logits, targets, 0.1, competition.task), expected)

    # Mixup mixes the probability rows as they are (no second smoothing): lam * row + (1 - lam) * flipped row.
    mixing = load_config(overrides=[*TINY, "train.mixup_alpha=0.4", "train.label_smoothing=0.1"])
    torch.manual_seed(0)
    np.random.seed(0)
    batch = targets[-4:]
    _, mixed = create_mixup(mixing, 4, competition.task, soft_targets=True)(torch.randn(4, 3, 16, 16), batch)
    flipped = batch.flip(0)
    lam = ((mixed - flipped) * (batch - flipped)).sum() / ((batch - flipped) ** 2).sum()  # least squares
    assert 0 < lam < 1
    torch.testing.assert_close(mixed, lam * batch + (1 - lam) * batch.flip(0))


@pytest.mark.parametrize(
    ("rows", "columns", "message"),
    [
        ([("x0", (0.7, 0.3, 0, 0)), ("x1", (0, 1.4, 0, 0))], None, r"line 3, column '1': '1.4' is not a probability"),
        ([("x0", ("abc", 0.3, 0, 0))], None, r"line 2, column '0': 'abc' is not a probability in \[0, 1\]"),
        ([("x0", (0.5, 0.3, 0, 0))], None, r"line 2: the probabilities in columns 0, 1, 2, 3 sum to 0.8, not 1"),
        ([("x0", (0.7, 0.3, 0))], ("0", "1", "2"), r"no 'label' column .* no column for class\(es\) '3'"),
        ([("x0", (0.7, 0.3, 0, 0, 0))], ("0", "1", "2", "3", "9"), r"column\(s\) '9' that are not classes"),
    ],
)
def test_bad_soft_tables_are_refused_by_line_and_column_before_training_writes_anything(tiny, rows, columns, message):
    table = write_soft_table(rows, columns or ("0", "1", "2", "3"))
    config = load_config(overrides=[*TINY, f"data.pseudo_labels={table}"])
    with pytest.raises(CompError, match=r"soft.csv \(data.pseudo_labels\).*" + message):
        train_seeds(config, load_competition(config.data), Path("configs/default.yaml"), [])
    assert not Path("runs").exists()


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
    assert record["pseudo_labels"]["soft"] is False

    # A soft round, with mixup and label smoothing: the same rows join training, the OOF rows stay the training images.
    made = comp("pseudo", "base", "--top", "0.5", "--soft")
    assert "soft labels: each class's probability" in made
    soft = ["--set", "name=spl", "--set", "data.pseudo_labels=runs/base/pseudo_labels.csv"]
    mixing = ["--set", "train.mixup_alpha=0.4", "--set", "train.label_smoothing=0.1"]
    comp("train", *soft, *mixing)
    comp("predict", *soft)
    spl, _ = read_predictions(Path("runs/spl/oof.parquet"))
    assert set(spl.index) == training_ids
    for k in (0, 1):
        record = json.loads(Path(f"runs/spl/fold{k}/run.json").read_text())
        assert record["pseudo_labels"]["soft"] is True and record["pseudo_labels"]["rows"] == len(table)
        assert (pd.read_csv(f"runs/spl/fold{k}/metrics.csv")["pseudo_rows"] == len(table)).all()
