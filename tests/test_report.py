"""comp evaluate and its reports: the numbers behind each picture equal those computed from the OOF table."""

import json
import typing

import cv2
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from sklearn import metrics as sk
from test_predict import cli, make_run

from comp.config import PredictConfig
from comp.data.competition import load_competition
from comp.evaluate import evaluate_run
from comp.metrics import GENERAL, METRICS, score
from comp.predict import predict
from comp.report import confusion_counts, confusion_figure, phase_switch, roc_curves, top_losses
from comp.runs import run_dir


def random_oof(n: int = 200, n_classes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), targets] += 1.0
    logits[:, n_classes - 1] -= 5  # the last class is never predicted
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return np.array([f"id{i:03d}" for i in range(n)]), targets, np.round(probs, 2)  # rounding makes ties


def test_metrics_equal_sklearns_and_are_the_ones_predict_metric_accepts():
    _, targets, probs = random_oof(n_classes=5)
    probs = probs + 1e-3
    probs /= probs.sum(1, keepdims=True)
    predicted = probs.argmax(1)
    expected = {
        "accuracy": sk.accuracy_score(targets, predicted),
        "balanced_accuracy": sk.balanced_accuracy_score(targets, predicted),
        "log_loss": sk.log_loss(targets, probs, labels=range(5)),
        "macro_f1": sk.f1_score(targets, predicted, average="macro"),
        "roc_auc": sk.roc_auc_score(targets, probs, multi_class="ovr", average="macro"),
    }
    assert {name: score(name, targets, probs) for name in GENERAL} == pytest.approx(expected)
    assert set(METRICS) == set(typing.get_args(PredictConfig.model_fields["metric"].annotation))


def test_confusion_counts_equal_a_crosstab_of_the_oof_table():
    _, targets, probs = random_oof()
    direct = pd.crosstab(targets, probs.argmax(1)).reindex(index=range(4), columns=range(4), fill_value=0)
    np.testing.assert_array_equal(confusion_counts(targets, probs.argmax(1), 4), direct.to_numpy())


def test_roc_points_and_auc_equal_a_direct_threshold_sweep():
    _, targets, probs = random_oof()
    for c, curve in enumerate(roc_curves(targets, probs)):
        scores, positive = probs[:, c], targets == c
        sweep = {
            (float(np.mean(scores[~positive] >= t)), float(np.mean(scores[positive] >= t))) for t in np.unique(scores)
        }
        points = set(zip(curve.fpr.tolist(), curve.tpr.tolist(), strict=True))
        assert points <= sweep | {(0.0, 0.0)} and (1.0, 1.0) in points
        pairs = scores[positive][:, None] - scores[~positive][None, :]
        assert curve.auc == pytest.approx(np.mean((pairs > 0) + 0.5 * (pairs == 0)))


def test_a_class_without_positives_has_no_curve():
    targets, probs = np.array([0, 0, 1]), np.full((3, 3), 1 / 3)
    assert [c is None for c in roc_curves(targets, probs)] == [False, False, True]


def test_top_losses_are_the_wrong_rows_with_the_largest_loss():
    ids, targets, probs = random_oof()
    frame = pd.DataFrame(probs, index=ids)
    frame["target"], frame["predicted"] = targets, probs.argmax(1)
    frame["loss"] = [-np.log(max(frame.loc[i, t], 1e-15)) for i, t in zip(ids, targets, strict=True)]
    wrong = frame[frame["target"] != frame["predicted"]].reset_index(names="id")
    expected = wrong.sort_values(["loss", "id"], ascending=[False, True]).head(16)
    worst = top_losses(ids, targets, probs)
    assert list(worst["id"]) == list(expected["id"])
    assert (worst["target"] != worst["predicted"]).all() and worst["loss"].is_monotonic_decreasing


def test_the_phase_switch_is_where_the_phase_column_changes():
    assert phase_switch(pd.DataFrame({"epoch": [1, 2, 3, 4], "phase": [1, 1, 2, 2]})) == (3, "2")
    assert phase_switch(pd.DataFrame({"epoch": [1, 2], "phase": [1, 1]})) is None
    assert phase_switch(pd.DataFrame({"epoch": [1, 2]})) is None


def test_hundred_class_confusion_matrix_names_every_class_without_overlap():
    classes = [f"species with a long name {i:03d}" for i in range(100)]
    fig = confusion_figure(np.eye(100, dtype=int), classes)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    ax = fig.axes[0]
    for labels, side in ((ax.get_yticklabels(), "y"), (ax.get_xticklabels(), "x")):
        assert len([t for t in labels if t.get_text()]) == 100
        boxes = sorted(
            (b.y0, b.y1) if side == "y" else (b.x0, b.x1) for b in (t.get_window_extent(renderer) for t in labels)
        )
        assert all(prev[1] <= nxt[0] + 0.5 for prev, nxt in zip(boxes, boxes[1:], strict=False))
    assert fig.get_size_inches().tolist() == [28.5, 27.5]  # a quarter inch per class


def read_png(path):
    image = cv2.imread(str(path))
    return image.shape[:2], float((image < 250).any(axis=2).mean())


def test_evaluate_scores_the_oof_table_updates_cv_json_and_draws_every_report(project):
    config = make_run(project, ["predict.metric=macro_f1"], n_classes=3)
    (run_dir(config.name) / "fold0/metrics.csv").write_text(
        "epoch,train_loss,val_loss,val_accuracy,lr,phase\n1,1.0,1.1,0.4,0.001,1\n2,0.8,1.0,0.5,0.001,2\n"
    )
    (run_dir(config.name) / "fold1/metrics.csv").write_text(  # before metrics.csv had a phase column
        "epoch,train_loss,val_loss,val_accuracy,lr\n1,1.0,1.2,0.3,0.001\n"
    )
    competition = load_competition(config.data)
    predict(config, competition)
    before = json.loads((run_dir(config.name) / "cv.json").read_text())

    result = evaluate_run(config, competition)
    oof = pd.read_parquet(run_dir(config.name) / "oof.parquet").set_index("id")
    labels = pd.read_csv(project / "data/shapes/train.csv").set_index("id")["label"].loc[oof.index].to_numpy()
    predicted = oof.to_numpy().argmax(1)
    cv = json.loads((run_dir(config.name) / "cv.json").read_text())
    assert cv["metric"] == "macro_f1" and cv["oof"] == result.scores["macro_f1"]
    assert cv["metrics"]["accuracy"] == pytest.approx(np.mean(predicted == labels))
    p_true = oof.to_numpy()[np.arange(len(oof)), labels]
    assert cv["metrics"]["log_loss"] == pytest.approx(-np.mean(np.log(p_true)))
    assert cv["views"] == before["views"] and cv["fold_file_sha256"] == before["fold_file_sha256"]
    assert set(cv["folds"]) == {"0", "1"}
    per_class = result.per_class.set_index("class")
    for c in range(3):
        assert per_class.loc[c, "support"] == np.sum(labels == c)
        hits = np.sum((predicted == c) & (labels == c))
        assert per_class.loc[c, "recall"] == pytest.approx(hits / np.sum(labels == c))
        assert per_class.loc[c, "precision"] == pytest.approx(hits / max(np.sum(predicted == c), 1))

    n_wrong = min(16, int(np.sum(predicted != labels)))
    rows = -(-n_wrong // 4)
    expected = {
        "training_curves": (650, 1300),
        "confusion_matrix": (600, 700),
        "roc_curves": (580, 580),
        "top_losses": (rows * 320, min(n_wrong, 4) * 260),
    }
    assert [p.name for p in result.reports] == [f"{name}.png" for name in expected]
    for path in result.reports:
        size, inked = read_png(path)
        assert size == expected[path.stem], path.name
        assert inked > 0.02, f"{path.name} is blank"


def test_evaluate_from_the_cli_prints_tables_and_report_paths(project):
    config = make_run(project)
    predict(config, load_competition(config.data))
    result = cli("evaluate")
    assert result.exit_code == 0, result.output
    assert "balanced_accuracy" in result.output and "precision" in result.output
    assert "runs/shapes/report/confusion_matrix.png" in result.output.replace("\n", "")


def test_evaluate_without_predictions_is_a_clear_error(project):
    make_run(project)
    result = cli("evaluate")
    assert result.exit_code == 1 and "comp predict" in result.output and "Traceback" not in result.output
