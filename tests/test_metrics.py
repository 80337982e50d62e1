"""The metrics against scikit-learn or by hand, and the decision thresholds fitted on OOF rows."""

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, fbeta_score, roc_auc_score

from comp.metrics import grades, map_at_k, score, tags_above
from comp.tasks import decision_record, fit_thresholds


def random_probs(rng, rows, classes):
    probs = rng.random((rows, classes))
    return probs / probs.sum(1, keepdims=True)


def test_quadratic_weighted_kappa_is_sklearns_on_the_expected_grade():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 5, 200)
    probs = random_probs(rng, 200, 5)
    predicted = np.clip(np.round(probs @ np.arange(5)), 0, 4).astype(int)  # expected grade, halfway cuts
    expected = cohen_kappa_score(targets, predicted, weights="quadratic")
    assert score("quadratic_weighted_kappa", targets, probs) == pytest.approx(expected)
    # confident one-hot rows: the expected grade is the argmax, and a perfect prediction scores 1
    assert score("quadratic_weighted_kappa", targets, np.eye(5)[targets]) == pytest.approx(1.0)
    # cut points move the decisions: everything above 0.1 is at least grade 1
    assert list(grades(np.array([[0.8, 0.2, 0, 0, 0]]), [0.1, 1.5, 2.5, 3.5])) == [1]


def test_f_beta_is_sklearns_mean_over_samples():
    rng = np.random.default_rng(1)
    targets = (rng.random((120, 6)) < 0.3).astype(int)
    targets[targets.sum(1) == 0, 0] = 1
    probs = rng.random((120, 6))
    thresholds = rng.uniform(0.2, 0.8, 6)
    predicted = tags_above(probs, thresholds).astype(int)
    for beta in (1.0, 2.0, 0.5):
        expected = fbeta_score(targets, predicted, beta=beta, average="samples", zero_division=0)
        assert score("f_beta", targets, probs, beta=beta, thresholds=thresholds) == pytest.approx(expected)
    # a row with no tag above its threshold is given its most probable tag
    assert tags_above(np.array([[0.1, 0.3, 0.2]])).tolist() == [[False, True, False]]


def test_map_at_5_by_hand():
    probs = np.array(
        [
            [0.5, 0.2, 0.1, 0.1, 0.05, 0.05],  # true 0 ranked 1st -> 1
            [0.5, 0.2, 0.1, 0.1, 0.06, 0.04],  # true 2 ranked 3rd -> 1/3
            [0.5, 0.2, 0.1, 0.1, 0.06, 0.04],  # true 5 ranked 6th -> 0
            [0.1, 0.5, 0.2, 0.1, 0.06, 0.04],  # true 0 ranked 3rd (tie with 3: lower index first) -> 1/3
        ]
    )
    targets = np.array([0, 2, 5, 0])
    assert map_at_k(targets, probs, k=5) == pytest.approx((1 + 1 / 3 + 0 + 1 / 3) / 4)
    assert score("map_at_k", targets, probs, k=1) == pytest.approx(0.25)


def test_mean_column_auc_for_one_hot_and_multi_label_targets():
    rng = np.random.default_rng(2)
    targets = (rng.random((80, 4)) < 0.4).astype(int)
    probs = rng.random((80, 4))
    expected = np.mean([roc_auc_score(targets[:, c], probs[:, c]) for c in range(4)])
    assert score("mean_column_auc", targets, probs) == pytest.approx(expected)
    single = rng.integers(0, 3, 60)
    single_probs = random_probs(rng, 60, 3)
    expected = roc_auc_score(single, single_probs, multi_class="ovr", average="macro")
    assert score("mean_column_auc", single, single_probs) == pytest.approx(expected)


def test_multi_label_log_loss_is_the_mean_binary_cross_entropy():
    targets = np.array([[1, 0], [0, 1]])
    probs = np.array([[0.8, 0.3], [0.4, 0.9]])
    expected = -np.mean(np.log([0.8, 0.7, 0.6, 0.9]))
    assert score("log_loss", targets, probs) == pytest.approx(expected)


def test_per_tag_thresholds_fitted_on_oof_rows_improve_f2_and_hold_on_held_out_rows():
    rng = np.random.default_rng(3)

    def rows(n):  # tag c is present with probability 0.3; the model's scores are calibrated but shifted low
        truth = (rng.random((n, 5)) < 0.3).astype(int)
        truth[truth.sum(1) == 0, rng.integers(0, 5)] = 1
        probs = np.clip(0.25 * truth + rng.normal(0.15, 0.08, (n, 5)), 0, 1)
        return truth, probs

    oof_truth, oof_probs = rows(400)
    test_truth, test_probs = rows(400)
    thresholds = fit_thresholds("multilabel", "f_beta", oof_truth, oof_probs, {"beta": 2})
    assert len(thresholds) == 5 and all(t < 0.5 for t in thresholds)  # F2 favours recall: low thresholds
    before = score("f_beta", oof_truth, oof_probs, beta=2)
    after = score("f_beta", oof_truth, oof_probs, beta=2, thresholds=thresholds)
    assert after > before + 0.1
    held = score("f_beta", test_truth, test_probs, beta=2, thresholds=thresholds)
    assert held > score("f_beta", test_truth, test_probs, beta=2) + 0.1
    fitted, record = decision_record("multilabel", "f_beta", {"beta": 2}, oof_truth, oof_probs)
    assert fitted == pytest.approx(after) and record["thresholds"] == thresholds
    assert record["oof_default_thresholds"] == pytest.approx(before) and record["task"] == "multilabel"


def test_ordinal_cut_points_fitted_on_oof_rows_improve_kappa():
    rng = np.random.default_rng(4)
    targets = rng.integers(0, 5, 500)
    # a model whose probabilities lean one grade low: its expected grade is biased down
    logits = -((np.arange(5)[None, :] - (targets[:, None] - 0.6)) ** 2) + rng.normal(0, 0.7, (500, 5))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    cuts = fit_thresholds("ordinal", "quadratic_weighted_kappa", targets, probs, {})
    assert len(cuts) == 4 and cuts == sorted(cuts)
    before = score("quadratic_weighted_kappa", targets, probs)
    assert score("quadratic_weighted_kappa", targets, probs, thresholds=cuts) > before
    # metrics that read probabilities, not decisions, get no thresholds
    assert fit_thresholds("ordinal", "log_loss", targets, probs, {}) is None
    assert fit_thresholds("multiclass", "quadratic_weighted_kappa", targets, probs, {}) is None
