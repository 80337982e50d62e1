"""Duplicates planted in a competition (a copy, a resized copy, re-encoded copies, a relabelled copy,
a test copy) are found, nothing else is; `folds.group_duplicates` keeps each group in one fold."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from comp.cli import app
from comp.config import load_config
from comp.data.competition import load_competition
from comp.data.duplicates import perceptual_hash
from comp.data.folds import write_folds
from comp.errors import CompError
from comp.leaks import find_duplicates

OPTIONS = ["--set", "data.root=data/dups", "--set", "data.competition=dups", "--set", "folds.k=4"]


def distinct_image(rng: np.random.Generator) -> np.ndarray:
    """A random colour image with detail at every low frequency: two of them differ in about half the hash bits."""
    coarse = rng.uniform(0, 255, (8, 8, 3)).astype(np.float32)
    return cv2.resize(coarse, (32, 32), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


def write_planted_competition(root: Path) -> set[tuple[str, str, str, str]]:
    """4 classes x 6 distinct images, plus planted copies; returns the pairs to find (kind, where, id_a, id_b)."""
    rng = np.random.default_rng(0)
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    rows = []
    for label in range(4):
        for i in range(6):
            cv2.imwrite(str(root / "train" / f"img_{label}_{i}.png"), distinct_image(rng))
            rows.append((f"img_{label}_{i}", label))
    train = root / "train"
    shutil.copy(train / "img_0_0.png", train / "copy.png")  # byte for byte
    cv2.imwrite(str(train / "small.png"), cv2.resize(cv2.imread(str(train / "img_1_0.png")), (24, 24)))
    cv2.imwrite(str(train / "jpeg.jpg"), cv2.imread(str(train / "img_2_0.png")), [cv2.IMWRITE_JPEG_QUALITY, 60])
    shutil.copy(train / "img_3_0.png", train / "relabelled.png")  # the same image under another label
    rows += [("copy", 0), ("small", 1), ("jpeg.jpg", 2), ("relabelled", 1)]
    pd.DataFrame(rows, columns=["id", "label"]).to_csv(root / "train.csv", index=False)
    for k in range(3):
        cv2.imwrite(str(root / "test" / f"x{k}.png"), distinct_image(rng))
    big = cv2.resize(cv2.imread(str(train / "img_0_1.png")), (48, 48))
    cv2.imwrite(str(root / "test" / "x3.jpg"), big, [cv2.IMWRITE_JPEG_QUALITY, 80])  # a test copy, bigger, JPEG
    pd.DataFrame({"id": ["x0", "x1", "x2", "x3.jpg"], "label": 0}).to_csv(root / "sample_submission.csv", index=False)
    return {
        ("exact", "train", "img_0_0", "copy"),
        ("near", "train", "img_1_0", "small"),
        ("near", "train", "img_2_0", "jpeg.jpg"),
        ("exact", "train", "img_3_0", "relabelled"),
        ("near", "train-test", "img_0_1", "x3.jpg"),
    }


@pytest.fixture
def planted(project):
    return write_planted_competition(project / "data/dups")


def test_resized_and_reencoded_copies_stay_close_and_distinct_images_do_not(project):
    rng = np.random.default_rng(1)
    image = distinct_image(rng)
    cv2.imwrite("a.png", image)
    cv2.imwrite("b.jpg", cv2.resize(image, (20, 20), interpolation=cv2.INTER_AREA), [cv2.IMWRITE_JPEG_QUALITY, 50])
    cv2.imwrite("c.png", distinct_image(rng))
    close = int(np.bitwise_count(perceptual_hash("a.png") ^ perceptual_hash("b.jpg")))
    far = int(np.bitwise_count(perceptual_hash("a.png") ^ perceptual_hash("c.png")))
    assert close <= 6 < 16 <= far


def test_planted_duplicates_are_found_and_nothing_else(planted):
    config = load_config(overrides=[o for o in OPTIONS if o != "--set"])
    report = find_duplicates(config, load_competition(config.data))

    found = {(r.kind, r.where, r.id_a, r.id_b) for r in report.pairs.itertuples()}
    assert found == planted
    assert report.images == 28 + 4
    conflicts = report.pairs[report.pairs["conflict"]]
    assert list(zip(conflicts["id_a"], conflicts["id_b"], strict=True)) == [("img_3_0", "relabelled")]
    assert report.fold_file is None  # no fold file yet: nothing to check across folds
    table = pd.read_csv("runs/default/duplicates.csv")
    assert len(table) == 5 and list(table["kind"][:2]) == ["exact", "exact"]  # exact copies first, then closest
    assert Path("runs/default/report/duplicates.png").stat().st_size > 1000


def test_a_fold_file_with_group_duplicates_keeps_each_group_in_one_fold(planted):
    plain = load_config(overrides=[o for o in OPTIONS if o != "--set"])
    grouped = load_config(overrides=[o for o in OPTIONS if o != "--set"] + ["folds.group_duplicates=true"])
    competition = load_competition(plain.data)
    assert grouped.fold_file == Path("folds/dups_k4_s42_dups.csv") != plain.fold_file

    write_folds(plain, competition)
    report = find_duplicates(plain, competition)
    fold = pd.read_csv(plain.fold_file, dtype=str).set_index("id")["fold"]
    split = {(a, b) for _, _, a, b in planted if b in fold.index and fold[a] != fold[b]}
    assert {(r.id_a, r.id_b) for r in report.split.itertuples()} == split

    folds = write_folds(grouped, competition).table.set_index("id")
    for _, where, a, b in planted:
        if where == "train":
            assert folds.loc[a, "fold"] == folds.loc[b, "fold"], (a, b)
            assert folds.loc[a, "duplicate_group"] == folds.loc[b, "duplicate_group"] == a
    assert folds["fold"].value_counts().min() >= 6  # still balanced folds
    assert len(find_duplicates(grouped, competition).split) == 0


def test_cli_duplicates_and_folds(planted):
    runner = CliRunner()
    result = runner.invoke(app, ["duplicates", *OPTIONS])
    assert result.exit_code == 0, result.output
    assert "within train: 2 exact, 2 near; train-test: 0 exact, 1 near" in result.output
    assert "conflicting labels: 1 pair(s)" in result.output and "img_3_0 (3) ~ relabelled (1)" in result.output
    folded = runner.invoke(app, ["folds", *OPTIONS, "--set", "folds.group_duplicates=true"])
    assert folded.exit_code == 0 and "folds/dups_k4_s42_dups.csv" in folded.output
    again = runner.invoke(app, ["duplicates", *OPTIONS, "--set", "folds.group_duplicates=true"])
    assert "split across folds of folds/dups_k4_s42_dups.csv: 0 pair(s)" in again.output


def test_a_competition_without_images_is_refused_by_name(project):
    root = project / "data/empty"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    (root / "train.csv").write_text("id,label\n")
    (root / "sample_submission.csv").write_text("id,label\n")
    config = load_config(overrides=["data.root=data/empty"])
    with pytest.raises(CompError, match="data/empty has no training or test images"):
        find_duplicates(config, load_competition(config.data))
    assert not Path("runs").exists()
