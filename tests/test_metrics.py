import numpy as np
import pandas as pd
import pytest

from ladnn.metrics import (
    binary_metrics,
    bootstrap_ci,
    evaluate_predictions,
    lesion_metrics,
    paired_test,
    resampled_binary,
)

Y = np.array([1, 1, 1, 0, 0, 0, 1, 0])
P = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.7, 0.4])


def test_binary_metrics_known_values():
    m = binary_metrics(Y, P)
    # positives 0.9, 0.8, 0.7, 0.3; negatives 0.6, 0.4, 0.2, 0.1: 4 + 4 + 4 + 2 = 14 of 16 pairs ordered
    assert m["auc"] == pytest.approx(14 / 16)
    # at 0.5: TP=3 (0.9,0.8,0.7), FN=1, FP=1 (0.6), TN=3
    assert m["sensitivity"] == pytest.approx(0.75) and m["precision"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx(0.75) and m["accuracy"] == pytest.approx(0.75)


def test_covid_is_the_positive_class():
    """UCSD's code scored non-COVID as positive; here flipping the labels must change precision and sensitivity."""
    a, b = binary_metrics(Y, np.where(P > 0.75, 1.0, 0.0)), binary_metrics(1 - Y, 1 - np.where(P > 0.75, 1.0, 0.0))
    assert a["sensitivity"] == pytest.approx(0.5) and b["sensitivity"] == pytest.approx(1.0)


def test_auc_from_probabilities_differs_from_auc_of_decisions():
    assert binary_metrics(Y, P)["auc"] != pytest.approx(binary_metrics(Y, (P >= 0.5).astype(float))["auc"])


def test_lesion_metrics_and_undefined_auc():
    Yl = np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [1, 1, 0, 0, 0]])
    Pl = np.array([[0.9, 0.1, 0.2, 0.1, 0.1], [0.6, 0.8, 0.1, 0.1, 0.1], [0.7, 0.3, 0.1, 0.1, 0.1]])
    m = lesion_metrics(Yl, Pl)
    # errors: row 1 GGO wrong (0.6 vs 0), row 2 Csld wrong (0.3 vs 1) -> 2 of 15
    assert m["hamming_loss"] == pytest.approx(2 / 15) and m["label_accuracy"] == pytest.approx(13 / 15)
    assert m["exact_match"] == pytest.approx(1 / 3)
    assert m["per_lesion"]["CrPa"]["auc"] is None and "0 positives" in m["per_lesion"]["CrPa"]["note"]
    assert m["per_lesion"]["GGO"]["auc"] == pytest.approx(1.0)
    assert lesion_metrics(np.zeros((0, 5)), np.zeros((0, 5)))["n"] == 0


def test_bootstrap_interval_contains_the_estimate():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    ci = bootstrap_ci(y, p, n_boot=300)
    auc = binary_metrics(y, p)["auc"]
    assert ci["auc"][0] < auc < ci["auc"][1] and ci["auc"][1] - ci["auc"][0] < 0.2


def test_paired_test_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    good = np.clip(y * 0.6 + rng.random(300) * 0.4, 0, 1)
    bad = rng.random(300)
    assert paired_test(y, good, bad, n_boot=500)["p_auc"] < 0.01
    same = paired_test(y, good, good, n_boot=200)
    assert same["auc_diff"] == 0 and same["p_mcnemar"] == 1.0


def test_evaluate_predictions_uses_known_lesions_only():
    pred = pd.DataFrame({"y_true": Y, "p_covid": P, "lesions_known": [1, 1, 1, 0, 0, 0, 0, 0]})
    for k in ("GGO", "Csld", "CrPa", "AirBr", "InSepThi"):
        pred[f"p_{k}"], pred[f"y_{k}"] = 0.1, 0
    m = evaluate_predictions(pred, n_boot=50)
    assert m["lesions"]["n"] == 3 and m["lesions"]["hamming_loss"] == 0


@pytest.mark.parametrize("ties", [False, True])
def test_resampled_metrics_equal_scikit_learn(ties):
    """The vectorised bootstrap scores every resample exactly as binary_metrics (scikit-learn) does."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    p = np.clip(y * 0.3 + rng.random(60) * 0.7, 0, 1)
    if ties:  # rounded scores and a block of one value, as a saturated model gives
        p = np.round(p, 1)
        p[:10] = 1.0
    idx = rng.integers(0, 60, (40, 60))
    idx = idx[(y[idx].min(1) == 0) & (y[idx].max(1) == 1)]
    fast = resampled_binary(y, p, idx)
    for b, i in enumerate(idx):
        ref = binary_metrics(y[i], p[i])
        for k in fast:
            assert fast[k][b] == pytest.approx(ref[k], abs=1e-12), (k, b)


def test_resampled_metrics_zero_division_like_scikit_learn():
    y = np.array([0, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4])  # nothing predicted positive: precision and F1 are 0, not NaN
    fast = resampled_binary(y, p, np.arange(4)[None])
    ref = binary_metrics(y, p)
    assert all(fast[k][0] == pytest.approx(ref[k]) for k in fast)
