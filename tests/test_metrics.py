import numpy as np
import pandas as pd
import pytest

from ladnn.metrics import (
    binary_metrics,
    bootstrap_ci,
    lesion_metrics,
    paired_difference,
    paired_test,
    resample_weights,
    weighted_auc,
    weighted_binary,
)
from ladnn.scores import evaluate_predictions

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


def test_lesion_metrics_ignore_unlabelled_images():
    """Positives 0-2 carry lesion labels, positive 6 has none (its caption named no lesion), the rest are negatives.
    The head's confident "GGO" on the unlabelled positive and on the negatives must not count as errors."""
    pred = pd.DataFrame({"y_true": Y, "p_covid": P, "lesions_known": [1, 1, 1, 0, 0, 0, 1, 0]})
    for k in ("GGO", "Csld", "CrPa", "AirBr", "InSepThi"):
        pred[f"p_{k}"], pred[f"y_{k}"] = 0.1, 0
    pred["p_GGO"], pred.loc[[0, 1, 2], "y_GGO"] = 0.9, 1
    pred.loc[1, "y_Csld"], pred.loc[1, "p_Csld"] = 1, 0.8
    m = evaluate_predictions(pred, train_prevalence=[0.7, 0.4, 0.1, 0.1, 0.1], n_boot=50)
    assert m["lesions"]["n"] == 3 and m["lesions"]["hamming_loss"] == 0
    assert "3 test images" in m["lesions"]["images"] and "1 positives without one" in m["lesions"]["images"]
    const = m["lesions"]["baselines"]["constant"]
    assert const["n"] == 3 and const["hamming_loss"] == pytest.approx(1 / 15)  # GGO predicted yes (0.7): Csld missed
    assert const["per_lesion"]["Csld"]["auc"] == 0.5
    cov = m["lesions"]["baselines"]["covid_score"]  # p_covid 0.9, 0.8, 0.3 as every lesion's score
    assert cov["per_lesion"]["Csld"]["auc"] == pytest.approx(0.5)  # its 0.8 lies between the others' 0.9 and 0.3
    # rows 0 and 1 say "all five" (p >= 0.5): 4 + 3 errors; row 2 says "none": GGO missed -> 8 of 15
    assert cov["hamming_loss"] == pytest.approx(8 / 15)


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_metrics_equal_scikit_learn(ties):
    """A bootstrap resample is a row of image weights; each is scored exactly as binary_metrics (scikit-learn) scores
    the images repeated that many times."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    p = np.clip(y * 0.3 + rng.random(60) * 0.7, 0, 1)
    if ties:  # rounded scores and a block of one value, as a saturated model gives
        p = np.round(p, 1)
        p[:10] = 1.0
    w = resample_weights(y, n_boot=30, seed=1)
    fast = weighted_binary(y, p, w)
    for b, row in enumerate(w):
        i = np.repeat(np.arange(60), row.astype(int))
        ref = binary_metrics(y[i], p[i])
        for k in fast:
            assert fast[k][b] == pytest.approx(ref[k], abs=1e-12), (k, b)


def test_weighted_metrics_zero_division_like_scikit_learn():
    y = np.array([0, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4])  # nothing predicted positive: precision and F1 are 0, not NaN
    fast = weighted_binary(y, p, np.ones((1, 4)))
    ref = binary_metrics(y, p)
    assert all(fast[k][0] == pytest.approx(ref[k]) for k in fast)


def test_clustered_resamples_keep_clusters_whole_and_classes_apart():
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    groups = ["a", "a", "b", "c", "c", "d", "e"]
    w = resample_weights(y, groups, n_boot=500, seed=0)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 3] == w[:, 4]).all()  # a patient is drawn whole
    # two positive clusters drawn twice, three negative clusters drawn three times, in every resample
    assert ((w[:, [0, 2]] > 0) * [[0.5, 1]]).sum(1).max() <= 2
    counts_pos = w[:, 0] + w[:, 2]  # draws of a plus draws of b
    assert (counts_pos == 2).all()
    assert (w[:, 3] + w[:, 5] + w[:, 6] == 3).all()


def test_clustered_bootstrap_matches_the_hand_enumerated_distribution():
    """Positives: patient A (scores 0.9, 0.8) and patient B (0.3). Negatives: images 0.6 and 0.2. Drawing two
    positive and two negative clusters with replacement gives 3 x 3 outcomes; by hand:
      positives AA (p 1/4): AUC 1;            AB (1/2): pairs 0.9, 0.8 > both, 0.3 > 0.2 only -> 5/6;
      BB (1/4): 0.3 > 0.2 only -> 1/2 with both negatives, 0 with 0.6 twice, 1 with 0.2 twice.
      negatives: {0.6, 0.2} (1/2), {0.6, 0.6} (1/4), {0.2, 0.2} (1/4).
    With AB and {0.6, 0.6}: 0.9, 0.8 beat 0.6, 0.3 does not -> 2/3; AB and {0.2, 0.2}: 1.
    So the mean AUC is 1/4 (1) + 1/2 (1/2 * 5/6 + 1/4 * 2/3 + 1/4 * 1) + 1/4 (1/2 * 1/2 + 1/4 * 0 + 1/4 * 1)."""
    y = np.array([1, 1, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.3, 0.6, 0.2])
    groups = ["A", "A", "B", "n1", "n2"]
    exact_mean = 1 / 4 + 1 / 2 * (5 / 12 + 1 / 6 + 1 / 4) + 1 / 4 * (1 / 4 + 1 / 4)
    exact_values = {1.0, 5 / 6, 2 / 3, 0.5, 0.0}
    w = resample_weights(y, groups, n_boot=20000, seed=0)
    aucs = weighted_auc(y, p, w)
    assert set(np.round(np.unique(aucs), 9)) == {round(v, 9) for v in exact_values}
    assert aucs.mean() == pytest.approx(exact_mean, abs=0.01)
    assert (aucs == 0).mean() == pytest.approx(1 / 16, abs=0.01)  # BB with 0.6 drawn twice
    # an image-level bootstrap of the same data gives other outcomes (B alone is one of three positive draws)
    assert not np.allclose(weighted_auc(y, p, resample_weights(y, None, 20000, 0)).mean(), exact_mean, atol=0.01)


def test_clustering_widens_the_interval_when_clusters_are_alike():
    """Ten images per patient with near-identical scores: an image bootstrap pretends there are 200 observations,
    the clustered one knows there are 20."""
    rng = np.random.default_rng(0)
    y = np.repeat(rng.integers(0, 2, 20), 10)
    p = np.repeat(np.clip(rng.normal(0.5, 0.2, 20), 0, 1), 10) + rng.normal(0, 1e-3, 200) + 0.15 * y
    groups = np.repeat(np.arange(20), 10)
    wide, narrow = bootstrap_ci(y, p, groups, n_boot=1000)["auc"], bootstrap_ci(y, p, None, n_boot=1000)["auc"]
    assert wide[1] - wide[0] > 2 * (narrow[1] - narrow[0])


def test_pooled_paired_difference_over_seeds():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 150)
    groups = np.arange(150) // 3
    better = [np.clip(y * 0.5 + rng.random(150) * 0.6, 0, 1) for _ in range(3)]
    worse = [np.clip(y * 0.2 + rng.random(150) * 0.6, 0, 1) for _ in range(3)]
    d = paired_difference(y, better, worse, groups, n_boot=1000)
    per_seed = [binary_metrics(y, a)["auc"] - binary_metrics(y, b)["auc"] for a, b in zip(better, worse)]
    assert d["auc_diff"] == pytest.approx(np.mean(per_seed)) and d["pairs"] == 3 and d["clusters"] == 50
    assert d["auc_diff_ci"][0] > 0 and d["p_auc"] < 0.01
    assert d["detectable_80"] == pytest.approx(2.8016 * d["se"], rel=1e-3)
    null = paired_difference(y, better, better, groups, n_boot=300)
    assert null["auc_diff"] == 0 and null["p_auc"] == 1.0
    with pytest.raises(ValueError, match="same shape"):
        paired_difference(y, better, worse[:2], groups)


def test_resampling_agrees_with_scipy_bootstrap():
    """Within one class and with every image its own cluster, our resample weights are the ordinary bootstrap:
    the spread of a weighted mean matches scipy.stats.bootstrap's standard error for the mean. With clusters of
    four alike images it matches scipy's bootstrap of the cluster means (equal cluster sizes)."""
    from scipy import stats as sst

    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, 120)
    y = np.ones(120, dtype=int)
    w = resample_weights(y, None, n_boot=20000, seed=2)
    ours = ((w @ x) / w.sum(1)).std(ddof=1)
    ref = sst.bootstrap((x,), np.mean, n_resamples=20000, random_state=1).standard_error
    assert ours == pytest.approx(ref, rel=0.05)
    groups = np.arange(120) // 4
    xc = np.repeat(rng.normal(0, 1, 30), 4) + rng.normal(0, 0.1, 120)
    w = resample_weights(y, groups, n_boot=20000, seed=3)
    ours = ((w @ xc) / w.sum(1)).std(ddof=1)
    ref = sst.bootstrap((xc.reshape(30, 4).mean(1),), np.mean, n_resamples=20000, random_state=1).standard_error
    assert ours == pytest.approx(ref, rel=0.05)
