"""The scoring layer: the predictions table's schema, aggregation, and every AUC with its interval at a stated
level, checked against scikit-learn and against intervals computed here by hand from the bootstrap weights."""
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from ladnn import scores
from ladnn.config import LESIONS
from ladnn.dicom import MIN_LUNG_FRACTION, Series
from ladnn.metrics import resample_weights, weighted_auc
from ladnn.scores import PRED


def _table(n: int = 60, seed: int = 0, groups: int = 15) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n // 2), np.zeros(n - n // 2)].astype(int)
    p = np.clip(0.5 * y + rng.normal(0.25, 0.25, n), 0, 1)
    return pd.DataFrame({PRED.image: [f"{i}.png" for i in range(n)], PRED.y_true: y, PRED.p_covid: p,
                         PRED.group: [f"g{i % groups}-{y[i]}" for i in range(n)]})


def _by_hand(y, p, groups, n_boot=500, seed=0):
    draws = weighted_auc(y, p, resample_weights(y, groups, n_boot, seed))
    return np.nanquantile(draws, 0.025), np.nanquantile(draws, 0.975)


def test_auc_interval_is_scikit_learns_auc_with_the_clustered_bootstrap():
    t = _table()
    a = scores.auc_interval(t, n_boot=500)
    assert a.auc == pytest.approx(roc_auc_score(t[PRED.y_true], t[PRED.p_covid]))
    assert (a.lo, a.hi) == pytest.approx(_by_hand(t[PRED.y_true], t[PRED.p_covid], t[PRED.group]))
    assert a.lo < a.auc < a.hi and a.n == 60 and a.clusters == 30 and a.level == PRED.group
    assert a.row() == {"AUC": a.auc, "lo": a.lo, "hi": a.hi, "n": 60, "clusters": 30}
    assert a.text() == f"{a.auc:.3f} (95% interval {a.lo:.3f} to {a.hi:.3f})"
    # another level: images one by one, as resampling without groups draws them
    single = scores.auc_interval(t.assign(one=t[PRED.image]), level="one", n_boot=500)
    assert single.auc == a.auc and single.clusters == 60 and single.level == "one"
    assert (single.lo, single.hi) == pytest.approx(_by_hand(t[PRED.y_true], t[PRED.p_covid], None))
    assert (single.lo, single.hi) != pytest.approx((a.lo, a.hi))


def test_covid_scores_resample_the_level_asked_for():
    t = _table()
    s = scores.covid_scores(t, PRED.group, n_boot=300, seed=3)
    assert s["covid"]["auc"] == pytest.approx(roc_auc_score(t[PRED.y_true], t[PRED.p_covid]))
    assert s["clusters"] == 30
    assert s["covid_ci95"]["auc"] == pytest.approx(list(_by_hand(t[PRED.y_true], t[PRED.p_covid], t[PRED.group],
                                                                 300, 3)))
    assert scores.covid_scores(t, None, n_boot=50)["clusters"] == 60  # no level: every image its own cluster


def test_runs_auc_averages_runs_and_draws_them_too():
    t = _table()
    y, g = t[PRED.y_true].to_numpy(), t[PRED.group]
    rng = np.random.default_rng(1)
    P = np.stack([np.clip(t[PRED.p_covid] + rng.normal(0, 0.1, len(t)), 0, 1) for _ in range(3)])
    est, lo, hi = scores.runs_auc(y, P, g, n_boot=400, seed=0)
    assert est == pytest.approx(np.mean([roc_auc_score(y, p) for p in P]))
    w = resample_weights(y, g, 400, 0)
    draws = np.stack([weighted_auc(y, p, w) for p in P], axis=1)
    pick = np.random.default_rng(1).integers(0, 3, draws.shape)  # the runs drawn with replacement (seed + 1)
    d = np.take_along_axis(draws, pick, 1).mean(1)
    assert (lo, hi) == pytest.approx((np.quantile(d, 0.025), np.quantile(d, 0.975)))
    one = scores.runs_auc(y, P[:1], g, n_boot=400)  # one run: the runs are not drawn
    assert one[0] == pytest.approx(roc_auc_score(y, P[0]))
    assert one[1:] == pytest.approx(tuple(np.quantile(weighted_auc(y, P[0], w), [0.025, 0.975])))


def test_collection_and_subset_tables():
    t = _table(80)
    t[PRED.fold] = np.arange(80) % 2
    t[PRED.collection] = np.where(t[PRED.y_true] == 1, "papers", np.where(t[PRED.fold] == 0, "MedPix", "crawled"))
    tab = scores.collection_table(t, n_boot=200)
    assert list(tab.columns) == ["held-out collection", PRED.fold, "negatives", "positives", "AUC", "lo", "hi", "n",
                                 "clusters"]
    assert set(tab["held-out collection"]) == {"MedPix", "crawled"} and tab["AUC"].is_monotonic_increasing
    for _, r in tab.iterrows():
        f = t[t[PRED.fold] == r[PRED.fold]]
        assert r["AUC"] == pytest.approx(roc_auc_score(f[PRED.y_true], f[PRED.p_covid]))
        assert r["negatives"] + r["positives"] == r["n"] == len(f)
    assert scores.fold_aucs(t) == pytest.approx([roc_auc_score(f[PRED.y_true], f[PRED.p_covid])
                                                 for _, f in t.groupby(PRED.fold)])
    sub = scores.subset_aucs(t, n_boot=100)
    assert list(sub.index) == ["all", "only MedPix", "all but MedPix", "only crawled", "all but crawled"]
    only = t[(t[PRED.y_true] == 1) | (t[PRED.collection] == "MedPix")]
    assert sub.loc["only MedPix", "AUC"] == pytest.approx(roc_auc_score(only[PRED.y_true], only[PRED.p_covid]))
    assert sub.loc["only MedPix", "n"] == len(only)


def test_predictions_table_follows_the_schema_and_check_names_what_is_missing():
    df = pd.DataFrame({"name": ["a.png", "b.png"], "covid": [1, 0], "lesions_known": [True, False],
                       **{k: [1, 0] for k in LESIONS}})
    pred = scores.predictions_table(df, np.array([[0.9, *[0.8] * 5], [0.2, *[0.1] * 5]]), ("COVID", *LESIONS))
    assert list(pred.columns) == [PRED.image, PRED.y_true, PRED.p_covid, PRED.group, *PRED.p_lesions,
                                  *PRED.y_lesions, PRED.lesions_known]
    assert PRED.probabilities(("COVID",)) == (PRED.p_covid,)
    assert PRED.check(pred, "x.csv") is pred
    with pytest.raises(ValueError, match=r"run/predictions.csv: .*needs the column\(s\) p_covid"):
        PRED.check(pred.drop(columns=PRED.p_covid), "run/predictions.csv")


def test_lesion_aucs_use_only_labelled_images():
    df = pd.DataFrame({"name": [f"{i}" for i in range(6)], "covid": [1, 1, 1, 1, 0, 0],
                       "lesions_known": [True, True, True, True, False, False],
                       "GGO": [1, 1, 0, 0, 0, 0], "Csld": [1, 0, 1, 0, 0, 0], "CrPa": [1, 1, 1, 0, 0, 0],
                       "AirBr": [0, 0, 0, 1, 0, 0], "InSepThi": [1, 1, 1, 1, 0, 0]})
    probs = np.random.default_rng(0).random((6, 6))
    pred = scores.predictions_table(df, probs, ("COVID", *LESIONS))
    got = scores.lesion_aucs(pred)
    keep = df[list(LESIONS)].sum(axis=1) > 0  # the 4 positives with a lesion label; negatives left out
    assert got["GGO"] == pytest.approx(roc_auc_score(df.loc[keep, "GGO"], probs[keep.to_numpy(), 1]))
    assert got["InSepThi"] is None  # every labelled image has it: one class, no AUC


def test_patient_aggregation_leaves_out_slices_without_lung():
    t = pd.DataFrame({PRED.patient: ["a", "a", "a", "b", "b"], PRED.y_true: [1, 1, 1, 0, 0],
                      PRED.p_covid: [0.9, 0.7, 0.1, 0.2, 0.4],
                      PRED.lung_fraction: [0.5, 0.3, MIN_LUNG_FRACTION / 2, 0.4, np.nan]})
    per = scores.patient_means(t)
    assert per.set_index(PRED.patient)[PRED.p_covid].to_dict() == pytest.approx({"a": 0.8, "b": 0.3})
    assert list(per["slices"]) == [2, 2]  # the slice without lung is left out; NaN (not DICOM) is kept
    per_patient, s = scores.patient_scores(t)
    assert len(per_patient) == 2 and s.clusters == 2 and s.covid.auc == 1.0
    assert scores.patient_scores(t.assign(**{PRED.patient: list("abcde")})) == (None, None)


def test_series_summary_scores_each_series_over_its_slices_with_lung(tmp_path):
    files = [tmp_path / f"{i}.dcm" for i in range(3)]
    results = [{"image": str(f), PRED.p_covid: p, PRED.lung_fraction: lf}
               for f, p, lf in zip(files, (0.8, 0.4, 0.99), (0.3, 0.2, 0.01))]
    s = Series(str(tmp_path), "P1", "1.2", "1.2.3", files, "by slice location")
    (row,) = scores.series_summary(results, [s])
    assert row[PRED.p_covid + "_patient"] == pytest.approx(0.6) and row["slices_with_lung"] == 2
    assert row["slices"] == 3 and row["patient_id"] == "P1"


def test_few_clusters_get_the_exact_permutation_test_and_no_interval():
    """Six patients, two of them COVID-19 (COVID-CT-MD's shape): even a perfect ranking has p = 1/15 > 0.05, so no
    AUC on such a set can differ from chance; at_level gives no interval there."""
    t = pd.DataFrame({PRED.y_true: [1] * 4 + [0] * 8, PRED.p_covid: np.r_[np.linspace(0.9, 0.8, 4),
                                                                          np.linspace(0.7, 0.1, 8)],
                      PRED.group: ["a", "a", "b", "b", "c", "c", "d", "d", "e", "e", "f", "f"]})
    r = scores.at_level(t)
    assert isinstance(r, scores.ClusterTest) and r.auc == 1.0
    assert r.p == pytest.approx(1 / 15) and r.least_p == pytest.approx(1 / 15) and r.auc_needed is None
    assert (r.positive_clusters, r.negative_clusters, r.n) == (2, 4, 12)
    assert np.isnan(r.row()["lo"]) and r.row()["exact p"] == r.p and "too few" in r.text()
    # by hand: the 15 ways to choose 2 of the 6 patients as COVID-19, each image labelled by its patient
    from itertools import combinations

    codes = pd.factorize(t[PRED.group], sort=True)[0]
    draws = [roc_auc_score(np.isin(codes, c).astype(int), t[PRED.p_covid]) for c in combinations(range(6), 2)]
    assert r.p == pytest.approx(np.mean(np.array(draws) >= 1.0))
    # ten patients a class: the bootstrap interval again
    many = pd.concat([t.assign(**{PRED.group: t[PRED.group] + str(k)}) for k in range(5)], ignore_index=True)
    assert isinstance(scores.at_level(many, n_boot=100), scores.AucInterval)
    # a set whose clusters hold both classes cannot be permuted whole: the bootstrap, which draws them as a stratum
    mixed = t.assign(**{PRED.group: ["a", "b"] * 6})
    assert isinstance(scores.at_level(mixed, n_boot=100), scores.AucInterval)
    with pytest.raises(ValueError, match="holds both classes"):
        scores.cluster_test(mixed)


def test_the_auc_a_larger_few_cluster_set_would_need():
    """Three COVID-19 and five other clusters (56 ways to choose): p < 0.05 is reachable, from a stated AUC on."""
    rng = np.random.default_rng(0)
    groups = [f"g{i}" for i in range(8)]
    t = pd.DataFrame({PRED.group: np.repeat(groups, 3), PRED.y_true: np.repeat([1, 1, 1, 0, 0, 0, 0, 0], 3),
                      PRED.p_covid: rng.random(24)})
    r = scores.cluster_test(t)
    assert r.least_p == pytest.approx(1 / 56) and r.auc_needed is not None
    from itertools import combinations

    codes = pd.factorize(t[PRED.group], sort=True)[0]
    draws = np.array([roc_auc_score(np.isin(codes, c).astype(int), t[PRED.p_covid]) for c in combinations(range(8), 3)])
    assert np.mean(draws >= r.auc_needed - 1e-12) <= 0.05 < np.mean(draws >= np.max(draws[draws < r.auc_needed]) - 1e-12)
