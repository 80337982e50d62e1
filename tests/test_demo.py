"""The offline demo competition and `comp demo`, the first thing a new user runs."""

import re

import numpy as np
import pandas as pd
import pytest
from conftest import sets
from sklearn.datasets import load_digits
from typer.testing import CliRunner

import comp.kaggle.download
from comp.cli import app
from comp.config import load_config
from comp.data.competition import load_competition, read_image
from comp.data.demo import SOLUTION_FILE, score_submission, write_demo


@pytest.mark.slow
def test_demo_is_a_csv_competition_of_the_real_digits_with_their_true_labels(project):
    built = write_demo(project / "data/demo")
    assert (built.n_train, built.n_test, built.n_classes, built.created) == (1437, 360, 10, True)

    competition = load_competition(load_config("configs/default.yaml").data)  # the default config finds it
    assert competition.layout == "csv" and competition.classes == list(range(10))
    solution = pd.read_csv(project / "data/demo" / SOLUTION_FILE)
    assert list(competition.test["id"]) == list(solution["id"])
    assert not set(competition.train["id"]) & set(solution["id"])

    digits = load_digits()
    label_of_pixels = {
        np.round(image * (255 / 16)).astype(np.uint8).tobytes(): int(label)
        for image, label in zip(digits.images, digits.target, strict=True)
    }
    labelled = [
        (project / "data/demo/train" / f"{i}.png", label)
        for i, label in zip(competition.train["id"], competition.train["label"], strict=True)
    ]
    labelled += [
        (project / "data/demo/test" / f"{i}.png", label)
        for i, label in zip(solution["id"], solution["label"], strict=True)
    ]
    for path, label in labelled:
        assert label_of_pixels[read_image(path)[..., 0].tobytes()] == label, path


@pytest.mark.slow
def test_demo_is_rebuilt_only_with_force(project):
    write_demo(project / "data/demo")
    (project / "data/demo/marker").touch()
    assert not write_demo(project / "data/demo").created
    assert (project / "data/demo/marker").exists()
    assert write_demo(project / "data/demo", force=True).created
    assert not (project / "data/demo/marker").exists()


def test_download_demo_builds_data_demo_and_never_asks_kaggle(project, monkeypatch):
    def no_kaggle(*args, **kwargs):
        raise AssertionError("`comp download demo` asked Kaggle")

    monkeypatch.setattr(comp.kaggle.download, "download_competition", no_kaggle)
    built = comp.kaggle.download.download("demo")
    assert built.created and (project / "data/demo" / SOLUTION_FILE).is_file()
    assert not comp.kaggle.download.download("demo").created  # already there: kept


def test_score_submission_aligns_by_id_and_counts_missing_ids_wrong(tmp_path):
    solution = pd.DataFrame({"id": [f"d{i}" for i in range(10)], "label": [i % 3 for i in range(10)]})
    solution.to_csv(tmp_path / "solution.csv", index=False)
    submission = solution.sample(frac=1.0, random_state=0)
    submission.to_csv(tmp_path / "shuffled.csv", index=False)
    assert score_submission(tmp_path / "shuffled.csv", tmp_path / "solution.csv") == 1.0
    one_wrong_one_missing = submission[submission["id"] != "d7"].assign(
        label=lambda t: t["label"].where(t["id"] != "d4", 9)
    )
    one_wrong_one_missing.to_csv(tmp_path / "wrong.csv", index=False)
    assert score_submission(tmp_path / "wrong.csv", tmp_path / "solution.csv") == 0.8


@pytest.mark.slow
def test_comp_demo_runs_the_pipeline_scores_the_submission_and_keeps_it_on_a_second_run(project):
    fast = sets("train.epochs=4", "folds.k=2")
    result = CliRunner().invoke(app, ["demo", *fast])
    assert result.exit_code == 0, result.output
    accuracy = float(re.search(r"test accuracy \(held-back labels\): ([\d.]+)", result.output).group(1))
    first = project / "submissions/default.csv"
    assert accuracy == round(score_submission(first, project / "data/demo" / SOLUTION_FILE), 4)
    assert accuracy >= 0.9
    before = first.read_bytes()

    again = CliRunner().invoke(app, ["demo", *fast])
    assert again.exit_code == 0, again.output
    assert "submissions/default-2.csv" in again.output and "fold 0 done" not in again.output  # folds kept
    assert first.read_bytes() == before
