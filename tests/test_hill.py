"""Hill-climbing blends: against the plain mean on constructed OOF tables, the metric's direction,
negative shares, held-out folds scored honestly, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax
from test_ensemble import toy_competition, write_run
from typer.testing import CliRunner

from comp.blending import hill_climb
from comp.cli import app
from comp.config import load_config
from comp.ensemble import ensemble
from comp.errors import CompError
from comp.hill import HillOptions
from comp.io import sha256_file, write_csv
from comp.metrics import score

CLASSES = [0, 1, 2]


@pytest.fixture
def config(project):
    return load_config()


def members(n: int = 400, seed: int = 0):
    """y and three members on 3 classes: a strong one, a weaker independent one, and pure noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)

    def member(signal: float) -> np.ndarray:
        return softmax(signal * np.eye(3)[y] + rng.normal(0, 1, (n, 3)), axis=1)

    return y, member(2.0), member(1.2), softmax(rng.normal(0, 1, (n, 3)), axis=1)


def competition_for(y: np.ndarray):
    competition = toy_competition(len(y), CLASSES)
    competition.train["label"] = pd.Series(y.tolist(), dtype=object)
    return competition, list(competition.train["id"])


def write_members(ids, tables: dict[str, np.ndarray], fold_sha: str | None = None) -> None:
    for name, oof in tables.items():
        test = np.full((2, 3), 1 / 3)
        write_run(name, oof, test, oof_ids=ids, classes=CLASSES, **({"fold_sha": fold_sha} if fold_sha else {}))


def test_hill_beats_the_plain_mean_when_one_run_is_noise_and_starts_from_the_best_run(config):
    y, strong, weak, noise = members()
    competition, ids = competition_for(y)
    write_members(ids, {"noise": noise, "weak": weak, "strong": strong})
    result = ensemble(config, competition, ["noise", "weak", "strong"], method="hill", name="hill")

    record = json.loads(Path("runs/hill/members.json").read_text())
    assert record["method"] == "hill" and record["weights"] == "hill" and record["objective"] == "OOF accuracy"
    assert record["path"][0]["run"] == "runs/strong" and record["path"][0]["share"] == 1.0
    assert len(record["path"]) >= 2  # the weak run's independent errors help: it is mixed in
    weights = result.weights
    assert weights["runs/strong"] > weights["runs/weak"] > weights["runs/noise"] >= 0
    assert sum(weights.values()) == pytest.approx(1.0)
    scores = [step["oof"] for step in record["path"]]
    assert all(b > a for a, b in zip(scores, scores[1:], strict=False))  # each step improves on the last
    assert result.blend_score.value == pytest.approx(scores[-1])
    assert result.blend_score.value > result.member_scores["runs/strong"].value
    assert result.blend_score.value > result.climb.mean.value + 0.05  # the noise run drags the plain mean down
    cv = json.loads(Path("runs/hill/cv.json").read_text())
    assert cv["hill"]["optimistic"] is True and cv["hill"]["mean"] == pytest.approx(result.climb.mean.value)


def test_the_climb_follows_the_metrics_direction():
    """A confident run that is often right but badly wrong elsewhere: best on accuracy, worst on log loss."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    right = rng.random(300) < 0.8
    bold = np.where(right[:, None], np.eye(3)[y], np.eye(3)[(y + 1) % 3]) * 0.999 + 0.001 / 3
    timid = softmax(1.0 * np.eye(3)[y] + rng.normal(0, 0.8, (300, 3)), axis=1)
    stack = np.stack([timid, bold])
    assert score("accuracy", y, bold) > score("accuracy", y, timid)
    assert score("log_loss", y, bold) > score("log_loss", y, timid)

    assert hill_climb(stack, y, "accuracy").path[0][0] == 1
    by_log_loss = hill_climb(stack, y, "log_loss")
    assert by_log_loss.path[0][0] == 0
    assert [s for _, _, s in by_log_loss.path] == sorted((s for _, _, s in by_log_loss.path), reverse=True)


def test_negative_shares_subtract_a_shared_error_only_when_allowed():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 300)
    noise = softmax(rng.normal(0, 1.5, (300, 3)), axis=1)
    stack = np.stack([0.5 * np.eye(3)[y] + 0.5 * noise, noise])  # run 0 = half truth, half run 1's noise

    plain = hill_climb(stack, y, "log_loss")
    signed = hill_climb(stack, y, "log_loss", negative=True)
    assert (plain.weights >= 0).all()
    assert signed.weights[1] < 0 and signed.weights.sum() == pytest.approx(1.0)
    assert signed.path[-1][2] < plain.path[-1][2]


def test_held_out_folds_choose_on_the_others_and_score_on_themselves(config):
    y, strong, weak, noise = members()
    competition, ids = competition_for(y)
    folds = np.arange(len(y)) % 4
    write_csv(Path("folds/toy.csv"), pd.DataFrame({"id": ids, "label": y, "fold": folds}))
    write_members(ids, {"noise": noise, "weak": weak, "strong": strong}, fold_sha=sha256_file(Path("folds/toy.csv")))
    for name in ("noise", "weak", "strong"):  # the runs name the fold file they were validated on
        cv = json.loads(Path(f"runs/{name}/cv.json").read_text())
        Path(f"runs/{name}/cv.json").write_text(json.dumps({**cv, "fold_file": "folds/toy.csv"}))
    options = HillOptions(holdout_folds=[3, 1])
    result = ensemble(config, competition, ["noise", "weak", "strong"], method="hill", hill=options)

    chosen = ~np.isin(folds, [1, 3])
    expected = hill_climb(np.stack([noise, weak, strong])[:, chosen], y[chosen], "accuracy")
    np.testing.assert_allclose(list(result.weights.values()), expected.weights)
    oof = pd.read_parquet("runs/noise+weak+strong/oof.parquet").set_index("id").loc[ids].to_numpy()
    held = result.climb.holdout
    assert held.value == pytest.approx(score("accuracy", y[~chosen], oof[~chosen]))
    assert result.climb.holdout_folds == [1, 3]
    cv = json.loads(Path("runs/noise+weak+strong/cv.json").read_text())["hill"]
    assert cv["optimistic"] is False and cv["holdout"] == pytest.approx(held.value) and cv["holdout_folds"] == [1, 3]

    with pytest.raises(CompError, match=r"fold\(s\) \[7\] are not in folds/toy.csv"):
        ensemble(config, competition, ["noise", "weak"], method="hill", hill=HillOptions(holdout_folds=[7]))
    with pytest.raises(CompError, match="no fold is left to choose on"):
        ensemble(config, competition, ["noise", "weak"], method="hill", hill=HillOptions(holdout_folds=[0, 1, 2, 3]))
    Path("folds/toy.csv").write_text("id,label,fold\n")  # changed since the runs were validated on it
    with pytest.raises(CompError, match="needs the fold file folds/toy.csv"):
        ensemble(config, competition, ["noise", "weak"], method="hill", hill=HillOptions(holdout_folds=[0]))
    assert not Path("runs/noise+weak").exists()


@pytest.mark.parametrize(
    ("runs", "kwargs", "message"),
    [
        (["a"], {"method": "hill"}, r"--method hill, --weights.*one run \(runs/a\)"),
        (["a", "b"], {"method": "hill", "weights": "1,1"}, "chooses the weights itself"),
        (["a", "b"], {"method": "mean", "hill": HillOptions(negative=True)}, "belong to --method hill"),
    ],
)
def test_hill_refusals(config, runs, kwargs, message):
    y, strong, weak, _ = members(40)
    competition, ids = competition_for(y)
    write_members(ids, {"a": strong, "b": weak})
    with pytest.raises(CompError, match=message):
        ensemble(config, competition, runs, **kwargs)
    assert sorted(p.name for p in Path("runs").iterdir()) == ["a", "b"]


def test_hill_refuses_runs_on_different_folds(config):
    y, strong, weak, _ = members(40)
    competition, ids = competition_for(y)
    write_members(ids, {"a": strong})
    write_members(ids, {"b": weak}, fold_sha="0" * 64)
    with pytest.raises(CompError, match="different fold files"):
        ensemble(config, competition, ["a", "b"], method="hill")


def test_cli_hill_says_the_score_is_optimistic_and_parses_holdout_folds(project):
    from conftest import write_csv_competition

    write_csv_competition(project / "data/shapes")
    options = ["--set", "data.root=data/shapes", "--set", "data.competition=shapes"]
    train = pd.read_csv("data/shapes/train.csv")
    onehot = np.eye(4)[train["label"].to_numpy()]
    test_ids = [f"x{i}" for i in range(6)]
    for name, probs in (("good", onehot * 0.6 + 0.1), ("flat", np.full_like(onehot, 0.25))):
        write_run(name, probs, np.full((6, 4), 0.25), oof_ids=train["id"], test_ids=test_ids, classes=[0, 1, 2, 3])
    runner = CliRunner()
    result = runner.invoke(app, ["ensemble", "good", "flat", "--method", "hill", *options])
    assert result.exit_code == 0, result.output
    assert "hill climb (accuracy): good (w +1.00) 1.0000" in result.output
    assert "optimistic" in result.output and "--holdout-folds" in result.output
    bad = runner.invoke(app, ["ensemble", "good", "flat", "--method", "hill", "--holdout-folds", "a", *options])
    assert bad.exit_code == 1 and "--holdout-folds 'a' is not a comma-separated list" in bad.output
