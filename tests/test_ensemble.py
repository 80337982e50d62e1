"""Blends of runs: hand-computed mean/geometric/rank, fitted weights, ensembles of ensembles, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import competition_data, sets, write_csv_competition
from scipy.special import softmax
from typer.testing import CliRunner

from comp.cli import app
from comp.config import load_config
from comp.data.competition import Competition
from comp.ensemble import ensemble
from comp.errors import CompError
from comp.io import sha256_file, write_json
from comp.runs import probability_table, read_predictions, write_predictions

CLASSES = ["cat", "dog"]
TRAIN_IDS = ["a", "b", "c", "d"]
TRAIN_LABELS = ["cat", "cat", "dog", "dog"]
TEST_IDS = ["t1", "t2"]
FOLD_SHA = "f" * 64


def toy_competition(n_train: int = 4, classes: list = CLASSES) -> Competition:
    """A two-class competition in memory: the blend needs only its labels, classes and sample."""
    ids = TRAIN_IDS if n_train == 4 else [f"r{i}" for i in range(n_train)]
    labels = TRAIN_LABELS if n_train == 4 else [classes[i % len(classes)] for i in range(n_train)]
    train = pd.DataFrame({"id": ids, "label": pd.Series(labels, dtype=object), "path": ""})
    test = pd.DataFrame({"id": TEST_IDS, "path": ""})
    sample = pd.DataFrame({"id": TEST_IDS, "label": str(classes[0])})
    return Competition(Path("data/toy"), "csv", train, test, sample, classes)


def write_run(
    name: str,
    oof: np.ndarray,
    test: np.ndarray,
    oof_ids=TRAIN_IDS,
    test_ids=TEST_IDS,
    classes=CLASSES,
    fold_sha: str | None = FOLD_SHA,
    shuffle: bool = False,
) -> Path:
    """runs/<name>/ as `comp predict` leaves it (rows optionally shuffled: blends align by id)."""
    run_dir = Path("runs") / name
    for file, ids, probs in (("oof.parquet", oof_ids, oof), ("test.parquet", test_ids, test)):
        table = probability_table(ids, np.asarray(probs, dtype=float), classes)
        if shuffle:
            table = table.iloc[::-1].reset_index(drop=True)
        write_predictions(run_dir / file, table, classes, ["identity"], "multiclass")
    cv = {"metric": "accuracy", "oof": 0.0, "folds": {}, "fold_file": "folds/toy_k2_s42.csv"}
    write_json(run_dir / "cv.json", {**cv, "fold_file_sha256": fold_sha} if fold_sha else cv)
    return run_dir


def binary(p_cat) -> np.ndarray:
    """Rows [p, 1 - p] for the classes cat, dog."""
    p = np.asarray(p_cat, dtype=float)
    return np.column_stack([p, 1 - p])


def table_of(run: str, file: str = "oof.parquet") -> pd.DataFrame:
    return read_predictions(Path("runs") / run / file)[0]


@pytest.fixture
def config(project):
    return load_config()


# ----------------------------------------------------------------------------- hand-computed blends

A_OOF, B_OOF = [0.1, 0.4, 0.3, 0.9], [0.2, 0.1, 0.6, 0.5]  # P(cat) for a, b, c, d
A_TEST, B_TEST = [0.9, 0.2], [0.4, 0.6]


def geometric(p: float, q: float, w: float = 0.5) -> float:
    """P(cat) of the weighted geometric mean of [p, 1-p] and [q, 1-q], renormalised."""
    cat, dog = p**w * q ** (1 - w), (1 - p) ** w * (1 - q) ** (1 - w)
    return cat / (cat + dog)


@pytest.mark.parametrize(
    ("method", "weights", "oof_cat", "test_cat"),
    [
        ("mean", None, [0.15, 0.25, 0.45, 0.7], [0.65, 0.4]),
        ("weighted", "3,1", [0.125, 0.325, 0.375, 0.8], [0.775, 0.3]),
        (
            "geometric",
            None,
            [geometric(p, q) for p, q in zip(A_OOF, B_OOF, strict=True)],
            [geometric(0.9, 0.4), geometric(0.2, 0.6)],
        ),
        (
            "geometric",
            "3,1",
            [geometric(p, q, 0.75) for p, q in zip(A_OOF, B_OOF, strict=True)],
            [geometric(0.9, 0.4, 0.75), geometric(0.2, 0.6, 0.75)],
        ),
        # Ranks of P(cat) among the rows: a 1,3,2,4 and b 2,1,4,3 (over 4), mean 1.5,2,3,3.5; P(dog)'s
        # ranks are the reverse, so each row's ranks sum to 5/4 and P(cat) = mean rank / 5.
        ("rank", None, [0.3, 0.4, 0.6, 0.7], [0.5, 0.5]),
    ],
)
def test_blends_equal_the_hand_computed_tables(config, method, weights, oof_cat, test_cat):
    write_run("a", binary(A_OOF), binary(A_TEST))
    write_run("b", binary(B_OOF), binary(B_TEST), shuffle=True)  # other row order: aligned by id
    result = ensemble(config, toy_competition(), ["a", "b"], method=method, weights=weights)

    assert result.run_dir == Path("runs/a+b")
    oof, test = table_of("a+b"), table_of("a+b", "test.parquet")
    np.testing.assert_allclose(oof.loc[TRAIN_IDS].to_numpy(), binary(oof_cat), atol=1e-12)
    np.testing.assert_allclose(test.loc[TEST_IDS].to_numpy(), binary(test_cat), atol=1e-12)
    expected_accuracy = np.mean((np.array(oof_cat) > 0.5) == (np.array(TRAIN_LABELS) == "cat"))
    assert json.loads(Path("runs/a+b/cv.json").read_text())["oof"] == pytest.approx(expected_accuracy)


# ----------------------------------------------------------------------------- fitted weights


def constructed_members(n: int = 300, seed: int = 0):
    """Two members with independent noise on 3 classes: a strong one and a weaker one (less signal)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)

    def member(signal: float) -> np.ndarray:
        return softmax(signal * np.eye(3)[y] + rng.normal(0, 1, (n, 3)), axis=1)

    return y, member(2.0), member(1.5)


def test_auto_weights_favour_the_better_member_and_score_at_least_as_well(config):
    y, strong, weak = constructed_members()
    classes = [0, 1, 2]
    competition = toy_competition(len(y), classes)
    ids = list(competition.train["id"])
    competition.train["label"] = pd.Series(y.tolist(), dtype=object)
    write_run("weak", weak, np.full((2, 3), 1 / 3), oof_ids=ids, classes=classes)
    write_run("strong", strong, np.full((2, 3), 1 / 3), oof_ids=ids, classes=classes)
    result = ensemble(config, competition, ["weak", "strong"], weights="auto")

    weights = result.weights
    assert 0.7 < weights["runs/strong"] < 1 and 0 < weights["runs/weak"] < 0.3  # a real blend, strong first
    assert sum(weights.values()) == pytest.approx(1.0)
    members = result.member_scores.values()
    assert result.blend_score.log_loss < min(s.log_loss for s in members)
    assert result.oof_score >= max(s.value for s in members)
    record = json.loads(Path("runs/weak+strong/members.json").read_text())
    assert record["weights"] == "auto" and record["objective"] == "OOF log loss"
    assert [m["weight"] for m in record["members"]] == [weights["runs/weak"], weights["runs/strong"]]

    # The test tables play no part in the fit: wildly different test predictions, the same weights.
    write_run("strong", strong, np.array([[1.0, 0, 0], [0, 0, 1.0]]), oof_ids=ids, classes=classes)
    again = ensemble(config, competition, ["weak", "strong"], weights="auto", name="again")
    assert again.weights == weights


# ----------------------------------------------------------------------------- runs of runs


def test_an_ensemble_of_ensembles_is_a_run_with_its_submission(config):
    write_run("a", binary(A_OOF), binary(A_TEST))
    write_run("b", binary(B_OOF), binary(B_TEST))
    write_run("c", binary([0.9, 0.9, 0.1, 0.1]), binary([1.0, 0.0]))
    competition = toy_competition()
    ensemble(config, competition, ["a", "b"], name="ab")
    result = ensemble(config, competition, ["ab", "c"], name="abc", weights="1,3")

    expected = 0.25 * np.array([0.15, 0.25, 0.45, 0.7]) + 0.75 * np.array([0.9, 0.9, 0.1, 0.1])
    np.testing.assert_allclose(table_of("abc").loc[TRAIN_IDS, "cat"], expected, atol=1e-12)
    assert result.oof_score == 1.0
    for name in ("ab", "abc"):
        assert {p.name for p in Path("runs", name).iterdir()} == {
            "oof.parquet",
            "test.parquet",
            "cv.json",
            "classes.json",
            "members.json",
        }
    members = json.loads(Path("runs/abc/members.json").read_text())
    assert members["method"] == "mean" and members["weights"] == "given"
    assert [(m["run"], m["weight"]) for m in members["members"]] == [("runs/ab", 0.25), ("runs/c", 0.75)]

    csv = Path("submissions/abc.csv")
    assert csv.read_text().splitlines() == ["id,label", "t1,cat", "t2,dog"]
    sidecar = json.loads(csv.with_suffix(".json").read_text())
    assert sidecar["sha256"] == sha256_file(csv)
    assert sidecar["oof_score"] == 1.0 and sidecar["weights"] == [0.25, 0.75]
    assert [s["run"] for s in sidecar["sources"]] == ["runs/ab", "runs/c"]
    assert sidecar["fold_file_sha256"] == FOLD_SHA and sidecar["config"]["name"] == config.name
    assert [p.name for p in Path("runs").iterdir() if p.name.startswith(".")] == []  # no temporary folder left
    assert Path("runs/abc").stat().st_mode == Path("runs/c").stat().st_mode  # the usual folder mode


def test_an_existing_blend_is_replaced_only_with_force(config):
    write_run("a", binary(A_OOF), binary(A_TEST))
    write_run("b", binary(B_OOF), binary(B_TEST))
    competition = toy_competition()
    ensemble(config, competition, ["a", "b"])
    first = Path("runs/a+b/oof.parquet").read_bytes()
    with pytest.raises(CompError, match="already exists"):
        ensemble(config, competition, ["a", "b"], method="geometric")
    assert Path("runs/a+b/oof.parquet").read_bytes() == first

    ensemble(config, competition, ["a", "b"], method="geometric", force=True)
    assert json.loads(Path("runs/a+b/members.json").read_text())["method"] == "geometric"
    assert sorted(p.name for p in Path("submissions").glob("*.csv")) == ["a+b-2.csv", "a+b.csv"]
    with pytest.raises(CompError, match="one of the runs being blended"):
        ensemble(config, competition, ["a", "b"], name="a", force=True)


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("other", "message"),
    [
        ({"classes": ["dog", "cat"]}, "classes that disagree"),
        ({"test_ids": ["t1", "t3"]}, "different test ids"),
        ({"fold_sha": "0" * 64}, "different fold files"),
        ({"oof_ids": TRAIN_IDS[:3], "oof": binary(B_OOF[:3])}, "different training ids"),
        ({"fold_sha": None}, "does not record the fold file"),
    ],
)
def test_mismatched_runs_are_refused_and_nothing_is_written(config, other, message):
    write_run("a", binary(A_OOF), binary(A_TEST))
    write_run("b", **{"oof": binary(B_OOF), "test": binary(B_TEST), **other})
    with pytest.raises(CompError, match=message):
        ensemble(config, toy_competition(), ["a", "b"], weights="auto")
    assert sorted(p.name for p in Path("runs").iterdir()) == ["a", "b"]
    assert not Path("submissions").exists()


@pytest.mark.parametrize(
    ("weights", "method", "message"),
    [
        ("0.5", "mean", "2 non-negative numbers"),
        ("1,-1", "mean", "2 non-negative numbers"),
        ("x,y", "mean", "comma-separated list"),
        (None, "median", "is not one of"),
    ],
)
def test_bad_weights_and_methods_are_refused(config, weights, method, message):
    write_run("a", binary(A_OOF), binary(A_TEST))
    write_run("b", binary(B_OOF), binary(B_TEST))
    with pytest.raises(CompError, match=message):
        ensemble(config, toy_competition(), ["a", "b"], method=method, weights=weights)
    assert not Path("runs/a+b").exists()


# ----------------------------------------------------------------------------- the command line


def test_cli_blends_two_runs_with_fitted_weights_into_a_valid_submission(project):
    write_csv_competition(project / "data/shapes")
    options = sets(*competition_data("shapes"))
    train = pd.read_csv("data/shapes/train.csv")
    y = train["label"].to_numpy()
    test_ids = [f"x{i}" for i in range(6)]
    right = np.eye(4)[y] * 0.6 + 0.1
    wrong = np.eye(4)[(y + 1) % 4] * 0.6 + 0.1
    write_run("good", right, np.full((6, 4), 0.25), oof_ids=train["id"], test_ids=test_ids, classes=[0, 1, 2, 3])
    write_run("bad", wrong, np.full((6, 4), 0.25), oof_ids=train["id"], test_ids=test_ids, classes=[0, 1, 2, 3])

    runner = CliRunner()
    result = runner.invoke(app, ["ensemble", "good", "bad", "--weights", "auto", "--name", "blend", *options])
    assert result.exit_code == 0, result.output
    assert "member runs/good: weight 1.000, OOF accuracy 1.0000" in result.output
    assert "member runs/bad: weight 0.000, OOF accuracy 0.0000" in result.output
    assert "blend -> runs/blend: OOF accuracy 1.0000" in result.output
    checked = runner.invoke(app, ["validate", "submissions/blend.csv", "--set", "name=blend", *options])
    assert checked.exit_code == 0, checked.output

    refused = runner.invoke(app, ["ensemble", "good", "bad", "--name", "blend", *options])
    assert refused.exit_code == 1 and "--force" in refused.output and "Traceback" not in refused.output
