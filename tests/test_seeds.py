"""Seeds over fixed folds: folds.seed and train.seed apart, `comp train --seeds N` as one seed-averaged run,
its protection per fold and seed, and runs of different train.seed blended on the same folds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_RUN, on_competition, sets, write_csv_competition
from typer.testing import CliRunner

from comp.cli import app
from comp.config import load_config
from comp.data.competition import load_competition
from comp.data.folds import write_folds
from comp.errors import CompError
from comp.runs import read_predictions

TINY = [*TINY_RUN, *on_competition("tiny"), "predict.tta=[identity]"]
SETS = sets(*TINY)


def comp(*args: str, ok: bool = True):
    """`comp ARGS` on the tiny competition; its output with the console's line breaks undone."""
    result = CliRunner().invoke(app, [args[0], *SETS, *args[1:]])  # later --set overrides win
    if ok:
        assert result.exit_code == 0, result.output
    result.flat = " ".join(result.output.split())
    return result


@pytest.fixture
def tiny(project):
    write_csv_competition(project / "data/tiny", n_classes=4, per_class=8)
    comp("folds")
    return project


def test_fold_file_follows_folds_seed_and_not_train_seed(project):
    write_csv_competition(project / "data/tiny", n_classes=4, per_class=8)
    base = load_config(overrides=TINY)
    competition = load_competition(base.data)
    assert base.fold_file == Path("folds/tiny_k2_s42.csv")  # today's name, today's bytes
    plain = write_folds(base, competition)
    assert load_config(overrides=[*TINY, "train.seed=7"]).fold_file == base.fold_file
    own = load_config(overrides=[*TINY, "folds.seed=7"])
    top = load_config(overrides=[*TINY, "seed=7"])
    assert own.fold_file == top.fold_file == Path("folds/tiny_k2_s7.csv")
    assert own.train_seed == 42 and top.train_seed == 7
    seven = write_folds(own, competition)
    assert not seven.table["fold"].equals(plain.table["fold"])  # another seed, another assignment


@pytest.mark.slow
def test_two_seeds_are_one_run_whose_oof_is_the_mean_of_the_seeds(tiny):
    trained = comp("train", "--seeds", "2")
    assert "seed 42" in trained.output and "seed 43" in trained.output
    run = Path("runs/tiny")
    assert sorted(p.name for p in run.iterdir()) == ["seed42", "seed43", "seeds.json"]
    assert json.loads((run / "seeds.json").read_text()) == {"seeds": [42, 43]}
    assert sorted(p.name for p in (run / "seed43").glob("fold*")) == ["fold0", "fold1"]
    for seed in (42, 43):
        record = json.loads((run / f"seed{seed}/fold0/run.json").read_text())
        assert record["config"]["train"]["seed"] == seed and record["config"]["name"] == f"tiny/seed{seed}"

    predicted = comp("predict")
    assert "mean of seeds 42, 43" in predicted.output
    oof, _ = read_predictions(run / "oof.parquet")
    a, _ = read_predictions(run / "seed42/oof.parquet")
    b, _ = read_predictions(run / "seed43/oof.parquet")
    assert not np.allclose(a.loc[oof.index], b.loc[oof.index])  # the seeds really trained differently
    np.testing.assert_allclose(oof.to_numpy(), (a.loc[oof.index].to_numpy() + b.loc[oof.index].to_numpy()) / 2)
    test, _ = read_predictions(run / "test.parquet")
    ta, _ = read_predictions(run / "seed42/test.parquet")
    tb, _ = read_predictions(run / "seed43/test.parquet")
    np.testing.assert_allclose(test.to_numpy(), (ta.loc[test.index].to_numpy() + tb.loc[test.index].to_numpy()) / 2)
    cv = json.loads((run / "cv.json").read_text())
    assert set(cv["seeds"]) == {"42", "43"}
    assert cv["seeds"]["43"]["oof"] == json.loads((run / "seed43/cv.json").read_text())["oof"]
    assert cv["fold_file"] == "folds/tiny_k2_s42.csv" and set(cv["folds"]) == {"0", "1"}

    # Protection per fold and seed: finished work is skipped, another seed count is refused.
    again = comp("train", "--seeds", "2")
    assert again.output.count("finished already, skipped") == 4
    refused = comp("train", "--seeds", "3", ok=False)
    assert refused.exit_code == 1 and "trained with 2 seed(s) (42, 43): seed42: finished folds [0, 1]" in refused.flat
    assert "--seeds 3 asks for 42, 43, 44" in refused.flat
    single = comp("train", ok=False)
    assert single.exit_code == 1 and "--seeds 2 as before" in single.flat
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["seed42", "seed43"]  # nothing touched

    # comp evaluate keeps the per-fold and per-seed scores (the folds live in the seed sub-runs) ...
    evaluated = comp("evaluate")
    after = json.loads((run / "cv.json").read_text())
    assert after["folds"] == pytest.approx(cv["folds"]) and after["oof"] == pytest.approx(cv["oof"])
    assert {s: after["seeds"][s]["oof"] for s in ("42", "43")} == pytest.approx(
        {s: cv["seeds"][s]["oof"] for s in ("42", "43")}
    )
    assert after["seeds"]["43"]["folds"] == pytest.approx(cv["seeds"]["43"]["folds"])
    assert f"seed 43: CV accuracy {cv['seeds']['43']['oof']:.4f}" in evaluated.flat
    # ... and rescores them in another metric, each seed on its own OOF rows.
    comp("evaluate", "--set", "predict.metric=log_loss")
    relogged = json.loads((run / "cv.json").read_text())
    assert relogged["metric"] == "log_loss" and set(relogged["folds"]) == {"0", "1"}
    for seed in ("42", "43"):
        seed_log_loss = json.loads((run / f"seed{seed}/cv.json").read_text())["log_loss"]
        assert relogged["seeds"][seed]["oof"] == pytest.approx(seed_log_loss)
    assert relogged["seeds"]["42"]["views"] == cv["seeds"]["42"]["views"]
    # comp info shows each seed's folds and CV, then the seed-averaged CV.
    info = comp("info")
    for seed in ("42", "43"):
        seed_cv = f"CV log_loss (OOF) {relogged['seeds'][seed]['oof']:.4f}"
        assert f"seed {seed}: fold 0 finished, fold 1 finished; {seed_cv}" in info.flat
    assert f"CV log_loss (OOF, mean of seeds 42, 43) {relogged['oof']:.4f}" in info.flat


@pytest.mark.slow
def test_a_single_seed_run_is_not_mixed_with_seeds_and_force_replaces_it(tiny):
    comp("train", "--fold", "0")
    refused = comp("train", "--seeds", "2", ok=False)
    assert refused.exit_code == 1 and "trained with one seed: runs/tiny/fold0" in refused.flat
    assert not any(Path("runs/tiny").glob("seed*"))
    comp("train", "--seeds", "2", "--fold", "0", "--force")
    assert sorted(p.name for p in Path("runs/tiny").iterdir() if p.is_dir()) == ["seed42", "seed43"]


def test_seed_count_is_checked_before_anything_is_written(tiny):
    from comp.training.seeds import train_seeds

    config = load_config(overrides=[*TINY, "train.batch_size=64"])  # larger than a fold's 16 training rows
    with pytest.raises(CompError, match="train.batch_size=64 is larger than fold 0"):
        train_seeds(config, load_competition(config.data), Path("configs/default.yaml"), [], n_seeds=2)
    assert not Path("runs").exists()


@pytest.mark.slow
def test_runs_of_different_train_seed_on_the_same_folds_blend(tiny):
    comp("train", "--set", "name=a")
    comp("train", "--set", "name=b", "--set", "train.seed=7")
    comp("predict", "--set", "name=a")
    comp("predict", "--set", "name=b", "--set", "train.seed=7")
    cv_a, cv_b = (json.loads(Path(f"runs/{n}/cv.json").read_text()) for n in "ab")
    assert cv_a["fold_file_sha256"] == cv_b["fold_file_sha256"]
    blended = CliRunner().invoke(app, ["ensemble", "a", "b", "--method", "hill", *SETS])
    assert blended.exit_code == 0, blended.output
    assert Path("runs/a+b/members.json").exists()
