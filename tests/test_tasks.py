"""Tasks end to end on small competitions built from scikit-learn's digits: a multi-label one (planet's
layout and mean F2), an ordinal one (aptos's layout and quadratic weighted kappa) and a top-5 one
(humpback's layout and MAP@5), each through folds -> a tiny training -> predict -> ensemble -> validate,
the submission checked cell by cell against the held-back truth. Also the task rules and their errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_RUN, on_competition
from shapes import TAGS, write_aptos, write_humpback, write_images, write_planet
from typer.testing import CliRunner

from comp.cli import app
from comp.config import load_config
from comp.data.competition import load_competition
from comp.data.folds import assign_folds
from comp.ensemble import check_task
from comp.errors import CompError
from comp.metrics import score
from comp.submission.formats import create_submission, detect_format
from comp.submission.validate import validate_submission
from comp.tasks import check_metric, check_task_classes, resolve_task
from comp.training.loop import create_mixup

runner = CliRunner()
# The tiny run at twice its widths, for eight epochs of batches of 16: enough to learn the digits' tasks.
TRAIN = [
    *TINY_RUN,
    "model.kwargs={widths: [16, 32, 64, 128]}",
    "train.epochs=8",
    "train.batch_size=16",
    "train.lr=0.003",
]


def comp(*args: str, overrides: list[str]):
    sets = [part for o in overrides for part in ("--set", o)]
    result = runner.invoke(app, [*args, *sets])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def run_pipeline(overrides: list[str]) -> tuple[dict, pd.DataFrame, Path]:
    for command in (["folds"], ["train", "--fold", "all"], ["predict"]):
        comp(*command, overrides=overrides)
    result = comp("ensemble", overrides=overrides)
    name = next(o.split("=", 1)[1] for o in overrides if o.startswith("name="))
    submission = Path("submissions") / f"{name}.csv"
    assert str(submission) in result.output.replace("\n", "")
    validated = comp("validate", str(submission), overrides=overrides)
    assert "is a valid submission" in validated.output
    cv = json.loads((Path("runs") / name / "cv.json").read_text())
    evaluated = comp("evaluate", overrides=overrides)  # scores the OOF table the task's way, as predict did
    assert json.loads((Path("runs") / name / "cv.json").read_text())["oof"] == pytest.approx(cv["oof"])
    assert "per class" in evaluated.output
    return cv, pd.read_csv(submission, dtype=str, keep_default_na=False), submission


PLANET = [
    *on_competition("planet"),
    "data.train_csv=train_v2.csv",
    "data.id_column=image_name",
    "data.label_column=tags",
    "data.train_dir=train-jpg",
    "data.test_dir=test-jpg",
    "data.sample_submission=sample_submission_v2.csv",
    "predict.metric=f_beta",
    "predict.metric_params={beta: 2}",
]


@pytest.mark.slow
def test_multi_label_competition_from_folds_to_sorted_tags(project):
    truth = write_planet(project / "data/planet")
    cv, submission, _ = run_pipeline([*TRAIN, *PLANET])
    assert (
        "multilabel decisions: thresholds fitted on the OOF rows" in comp("predict", overrides=[*TRAIN, *PLANET]).output
    )

    assert cv["task"] == "multilabel" and cv["metric"] == "f_beta" and cv["metric_params"] == {"beta": 2}
    assert len(cv["thresholds"]) == 6 and cv["oof"] >= cv["oof_default_thresholds"]
    oof = pd.read_parquet("runs/planet/oof.parquet")
    assert list(oof.columns) == ["id", "even", "large", "odd", "prime", "round", "small"]
    assert not np.allclose(oof.iloc[:, 1:].sum(axis=1), 1.0)  # independent per-tag probabilities, not a softmax

    assert list(submission.columns) == ["image_name", "tags"]
    assert list(submission["image_name"]) == list(truth["image_name"])
    for cell in submission["tags"]:  # sorted, known, each once
        tags = cell.split()
        assert tags == sorted(set(tags)) and set(tags) <= set(oof.columns[1:])
    classes = list(oof.columns[1:])
    matrix = lambda cells: np.array([[t in c.split() for t in classes] for c in cells], dtype=int)  # noqa: E731
    held_back = score("f_beta", matrix(truth["tags"]), matrix(submission["tags"]).astype(float), beta=2)
    assert cv["oof"] > 0.8 and held_back > 0.8
    assert (submission["tags"] == truth["tags"]).mean() > 0.5  # whole rows right, cell by cell


APTOS = [
    *on_competition("aptos"),
    "data.id_column=id_code",
    "data.label_column=diagnosis",
    "data.train_dir=train_images",
    "data.test_dir=test_images",
    "predict.metric=quadratic_weighted_kappa",
]


@pytest.mark.slow
def test_ordinal_competition_grades_from_the_expected_value_with_fitted_cut_points(project):
    truth = write_aptos(project / "data/aptos")
    cv, submission, _ = run_pipeline([*TRAIN, *APTOS])

    assert cv["task"] == "ordinal" and len(cv["thresholds"]) == 4 and cv["thresholds"] == sorted(cv["thresholds"])
    assert cv["oof"] >= cv["oof_default_thresholds"]
    assert list(submission.columns) == ["id_code", "diagnosis"]
    assert list(submission["id_code"]) == list(truth["id_code"])
    assert set(submission["diagnosis"]) <= {"0", "1", "2", "3", "4"}  # integer grades, as the sample writes them

    # the submission is the test table's expected grade cut at the recorded thresholds
    test = pd.read_parquet("runs/aptos/test.parquet").set_index("id").loc[truth["id_code"]]
    expected = np.searchsorted(cv["thresholds"], test.to_numpy() @ np.arange(5), side="right")
    assert list(submission["diagnosis"].astype(int)) == list(expected)
    held_back = score("quadratic_weighted_kappa", truth["diagnosis"].to_numpy(), np.eye(5)[expected])
    assert cv["oof"] > 0.8 and held_back > 0.8


HUMPBACK = [
    *on_competition("humpback"),
    "data.id_column=Image",
    "data.label_column=Id",
    "predict.metric=map_at_k",
    "predict.metric_params={k: 5}",
]


@pytest.mark.slow
def test_top_k_competition_writes_five_labels_best_first(project):
    truth = write_humpback(project / "data/humpback")
    cv, submission, _ = run_pipeline([*TRAIN, *HUMPBACK])

    assert cv["task"] == "multiclass" and cv["metric"] == "map_at_k" and cv.get("thresholds") is None
    assert list(submission.columns) == ["Image", "Id"] and list(submission["Image"]) == list(truth["Image"])
    test = pd.read_parquet("runs/humpback/test.parquet").set_index("id").loc[truth["Image"]]
    for cell, (_, row) in zip(submission["Id"], test.iterrows(), strict=True):
        labels = cell.split()
        assert len(labels) == len(set(labels)) == 5
        assert labels == list(row.sort_values(ascending=False, kind="stable").index[:5])  # best first
    guesses = [cell.split() for cell in submission["Id"]]
    held_back = np.mean([1 / (g.index(t) + 1) if t in g else 0.0 for g, t in zip(guesses, truth["Id"], strict=True)])
    assert cv["oof"] > 0.8 and held_back > 0.8


# ----------------------------------------------------------------------------- rules and errors


def test_auto_reads_multi_label_only_from_tags_that_recombine():
    assert resolve_task("auto", ["a b", "b", "a c", "c"]) == "multilabel"
    assert resolve_task("auto", ["Common Chickweed", "Sugar beet", "Maize"]) == "multiclass"  # names with spaces
    assert resolve_task("auto", ["cat", "dog", "cat"]) == "binary"
    assert resolve_task("ordinal", [0, 1, 2]) == "ordinal"
    assert load_config(overrides=["predict.metric=quadratic_weighted_kappa"]).data.task == "ordinal"
    assert load_config(overrides=["predict.metric=f_beta"]).data.task == "auto"


def test_a_grade_column_with_gaps_names_the_missing_grade(project):
    root = project / "data/gaps"
    write_images(root / "train", [f"i{i}" for i in range(6)], np.zeros((6, 8, 8), np.uint8))
    write_images(root / "test", ["t0"], np.zeros((1, 8, 8), np.uint8))
    pd.DataFrame({"id": [f"i{i}" for i in range(6)], "label": [0, 1, 3, 0, 1, 3]}).to_csv(
        root / "train.csv", index=False
    )
    pd.DataFrame({"id": ["t0"], "label": [0]}).to_csv(root / "sample_submission.csv", index=False)
    config = load_config(overrides=["data.root=data/gaps", "data.task=ordinal"])
    with pytest.raises(CompError, match=r"grade\(s\) 2 between 0 and 3") as err:
        load_competition(config.data)
    assert "data.task: multiclass" in err.value.hint
    assert load_competition(config.data.model_copy(update={"task": "multiclass"})).classes == [0, 1, 3]


def test_wrong_task_settings_say_which_key_to_change():
    with pytest.raises(CompError, match="data.task is binary"):
        check_task_classes("binary", [0, 1, 2], "train.csv")
    with pytest.raises(CompError, match="data.task is multilabel") as err:
        check_metric("multilabel", "quadratic_weighted_kappa")
    assert "f_beta" in err.value.hint
    with pytest.raises(CompError, match="mixup"):
        create_mixup(load_config(overrides=["train.mixup_alpha=0.2"]), 3, "multilabel")
    with pytest.raises(CompError, match="predict.metric_params"):
        load_config(overrides=["predict.metric=accuracy", "predict.metric_params={beta: 2}"])


def test_multi_label_folds_keep_every_tag_in_every_fold():
    rng = np.random.default_rng(0)
    digits = rng.integers(0, 10, 200)
    train = pd.DataFrame({"id": [f"i{i}" for i in range(200)], "label": [" ".join(TAGS[d]) for d in digits]})
    folds = assign_folds(train, 4, 42, task="multilabel")
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3]
    for tag in ("even", "odd", "small", "large", "round", "prime"):
        counts = folds.assign(has=folds["label"].str.split().map(lambda t, tag=tag: tag in t)).groupby("fold")["has"]
        assert counts.sum().max() - counts.sum().min() <= 3  # stratified: 50 rows a fold, each holding the tag alike
    assert folds.equals(assign_folds(train, 4, 42, task="multilabel"))  # seeded


def test_tags_and_top_k_submissions_and_their_validation(tmp_path):
    classes = ["a", "b", "c", "d", "e", "f"]
    probs = pd.DataFrame(
        [[0.9, 0.1, 0.6, 0.2, 0.0, 0.3], [0.1, 0.2, 0.3, 0.25, 0.15, 0.05]], index=["x", "y"], columns=classes
    )
    sample = pd.DataFrame({"id": ["y", "x"], "tags": ["a b", "a b"]})
    assert detect_format(sample, classes, task="multilabel") == "tags"
    assert detect_format(sample, classes, task="multiclass") == "top_k"
    tags = create_submission(sample, probs, classes, task="multilabel", thresholds=[0.5, 0.5, 0.28, 0.5, 0.5, 0.5])
    assert tags.values.tolist() == [["y", "c"], ["x", "a c"]]  # sorted tags, thresholds per tag
    top = create_submission(sample, probs, classes, task="multiclass")
    assert top["tags"].tolist() == ["c d", "a c"]  # k = the sample's 2 labels a row, best first

    (tmp_path / "sample.csv").write_text("id,Id\nx,new_whale w_1 w_2\ny,new_whale w_1 w_2\n")
    (tmp_path / "sub.csv").write_text("id,Id\nx,a b b c\ny,zz\n")
    problems = validate_submission(tmp_path / "sub.csv", tmp_path / "sample.csv", classes, task="multiclass")
    messages = " | ".join(p.describe() for p in problems)
    assert "'b' written twice" in messages and "4 labels; the sample's rows hold 3" in messages
    assert "'zz' not among the class labels" in messages and "1 label(s)" in messages
    (tmp_path / "ok.csv").write_text("id,Id\nx,a b c\ny,f e d\n")
    assert not [p for p in validate_submission(tmp_path / "ok.csv", tmp_path / "sample.csv", classes) if p.is_error]
    with pytest.raises(CompError, match="tags are the decisions of a multilabel task"):
        detect_format(sample, classes, "tags", task="multiclass")


def test_an_empty_label_names_its_file_line_and_id(project):
    root = project / "data/empty"
    write_images(root / "train", [f"i{i}" for i in range(6)], np.zeros((6, 8, 8), np.uint8))
    write_images(root / "test", ["t0"], np.zeros((1, 8, 8), np.uint8))
    (root / "train.csv").write_text("id,label\ni0,cat\ni1,dog\ni2,cat\ni3,\ni4,dog\ni5,cat\n")
    pd.DataFrame({"id": ["t0"], "label": ["cat"]}).to_csv(root / "sample_submission.csv", index=False)
    result = runner.invoke(app, ["folds", "--set", "data.root=data/empty", "--set", "folds.k=2"])
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert "train.csv, line 5 (id 'i3'): the label is empty" in message and "column 'label'" in message
    assert not Path("folds").exists()  # nothing half-written


def test_softmax_and_per_tag_tables_are_never_read_for_each_other():
    check_task(SimpleNamespace(task="ordinal"), Path("runs/r"), "multiclass")  # same softmax tables: decisions differ
    with pytest.raises(CompError, match="predicted for data.task multiclass, but the data is read as multilabel"):
        check_task(SimpleNamespace(task="multilabel"), Path("runs/r"), "multiclass")


def test_multi_label_tta_views_and_blends_average_each_tag_on_its_own():
    import torch

    from comp.blending import blend_table, hill_blend
    from comp.tta import combine

    views = np.array([[[0.9, 0.8, 0.1]], [[0.7, 0.4, 0.3]]])  # 2 views (or members) x 1 row x 3 tags
    logit = np.log(views / (1 - views))
    mean, geometric = views.mean(0), 1 / (1 + np.exp(-logit.mean(0)))
    log_probs = torch.log(torch.tensor(views))
    for how, expected in (("arithmetic", mean), ("geometric", geometric)):
        np.testing.assert_allclose(combine(log_probs, how, task="multilabel").exp().numpy(), expected, rtol=1e-6)
    weights = np.array([0.5, 0.5])
    np.testing.assert_allclose(blend_table("mean", views, weights, "multilabel"), mean)
    np.testing.assert_allclose(blend_table("geometric", views, weights, "multilabel"), geometric)
    np.testing.assert_allclose(hill_blend(views, weights, "multilabel"), mean)
    # the same tables read as one label a row are renormalised: the tags' own probabilities are not
    assert blend_table("mean", views, weights)[0].sum() == pytest.approx(1.0) and mean.sum() == pytest.approx(1.6)
