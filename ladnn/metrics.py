"""Metrics on predictions (pure functions over arrays). Point metrics come from scikit-learn. A bootstrap resample is
a row of image weights (how often each image was drawn, whole patients or source documents at a time), and all rows
are scored at once with numpy; the tests check them against scikit-learn's `sample_weight` and a hand-enumerated case."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from ladnn.config import LESIONS

BINARY = ("auc", "ap", "sensitivity", "specificity", "precision", "f1", "accuracy")


def auc(y, p) -> float | None:
    """ROC AUC of scores `p` for labels `y` (scikit-learn); None when `y` holds one class."""
    y = np.asarray(y).astype(int)
    return float(skm.roc_auc_score(y, np.asarray(p, dtype=float))) if len(np.unique(y)) == 2 else None


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict:
    """COVID = 1 is the positive class. AUC and average precision use probabilities; the rest use p >= threshold."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    yhat = (p >= threshold).astype(int)
    two = len(np.unique(y)) == 2
    return {
        "auc": auc(y, p),
        "ap": float(skm.average_precision_score(y, p)) if two else None,
        "sensitivity": float(skm.recall_score(y, yhat, zero_division=0)),
        "specificity": float(skm.recall_score(y, yhat, pos_label=0, zero_division=0)),
        "precision": float(skm.precision_score(y, yhat, zero_division=0)),
        "f1": float(skm.f1_score(y, yhat, zero_division=0)),
        "accuracy": float(skm.accuracy_score(y, yhat)),
        "n": len(y), "n_pos": int(y.sum()),
    }


def labelled(Y: np.ndarray) -> np.ndarray:
    """Images that carry lesion labels: at least one of the five is 1. The rest (negatives, and positives whose
    caption named no lesion) are not evidence of "no lesion"; the default loss leaves them out too (`any_lesion`)."""
    return np.asarray(Y).sum(axis=1) > 0


def lesion_metrics(Y: np.ndarray, P: np.ndarray, threshold: float = 0.5) -> dict:
    """Multi-label metrics on the five lesions for the images passed in (`evaluate_predictions` passes the labelled
    ones): per-lesion AUC and average precision first, then `label_accuracy` = 1 - Hamming loss (the relation the
    paper's Table 3 numbers satisfy) and `exact_match` (all five right). A lesion's AUC and AP are None, with a
    reason, when it has no positive (or no negative) among these images."""
    Y, P = np.asarray(Y).astype(int), np.asarray(P, dtype=float)
    if len(Y) == 0:
        return {"n": 0, "note": "no test image carries a lesion label"}
    Yhat = (P >= threshold).astype(int)
    per = {}
    for k, name in enumerate(LESIONS):
        npos = int(Y[:, k].sum())
        ok = 0 < npos < len(Y)
        per[name] = {"n_pos": npos, "auc": auc(Y[:, k], P[:, k]) if ok else None,
                     "ap": float(skm.average_precision_score(Y[:, k], P[:, k])) if ok else None,
                     "note": None if ok else f"AUC undefined: {npos} positives among {len(Y)} images"}
    aucs = [v["auc"] for v in per.values() if v["auc"] is not None]
    aps = [v["ap"] for v in per.values() if v["ap"] is not None]
    h = float(skm.hamming_loss(Y, Yhat))
    return {"n": len(Y), "mean_auc": float(np.mean(aucs)) if aucs else None,
            "mean_ap": float(np.mean(aps)) if aps else None, "hamming_loss": h, "label_accuracy": 1 - h,
            "exact_match": float(skm.accuracy_score(Y, Yhat)), "per_lesion": per}


def lesion_prevalence(Y: np.ndarray) -> list[float]:
    """Each lesion's share among the labelled images of `Y` (the constant predictor's scores)."""
    Y = np.asarray(Y)[labelled(Y)]
    return Y.mean(axis=0).tolist() if len(Y) else [0.0] * len(LESIONS)


def clusters(groups, y) -> tuple[np.ndarray, np.ndarray]:
    """Cluster index of each image and the stratum of each cluster (its class; 2 where a cluster holds both)."""
    codes, uniq = pd.factorize(pd.Series(np.asarray(groups, dtype=str)), sort=True)
    y = np.asarray(y).astype(int)
    lo, hi = np.full(len(uniq), 1), np.full(len(uniq), 0)
    np.minimum.at(lo, codes, y)
    np.maximum.at(hi, codes, y)
    return codes, np.where(lo == hi, lo, 2)


def resample_weights(y, groups=None, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """B x N bootstrap weights: how many times each image is drawn when whole clusters (`groups`: patient, source
    document or image) are drawn with replacement, as many as there are, separately within each class (a cluster
    holding both classes forms a stratum of its own). Without `groups` every image is its own cluster."""
    y = np.asarray(y).astype(int)
    groups = np.arange(len(y)) if groups is None else groups
    codes, stratum = clusters(groups, y)
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_boot, len(stratum)))
    for s in np.unique(stratum):
        members = np.flatnonzero(stratum == s)
        counts[:, members] = rng.multinomial(len(members), np.full(len(members), 1 / len(members)), size=n_boot)
    return counts[:, codes]


def _by_score(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted positives and negatives at each distinct score, ascending (B x U each)."""
    _, inv = np.unique(p, return_inverse=True)
    onehot = np.zeros((len(p), inv.max() + 1))
    onehot[np.arange(len(p)), inv] = 1
    return (w * y) @ onehot, (w * (1 - y)) @ onehot


def _auc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + neg / 2)).sum(1) / (pos.sum(1) * neg.sum(1))


def _ap(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    pos, neg = pos[:, ::-1], neg[:, ::-1]  # descending thresholds
    tp, cnt = np.cumsum(pos, 1), np.cumsum(pos + neg, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(cnt > 0, tp / np.where(cnt > 0, cnt, 1), 0)
        return (pos * prec).sum(1) / pos.sum(1)


def weighted_auc(y, p, w) -> np.ndarray:
    """ROC AUC under each row of image weights `w` (B x N): the Mann-Whitney statistic, ties counting one half, as
    `roc_auc_score(..., sample_weight=w)`. NaN where a row weighs one class only."""
    return _auc(*_by_score(np.asarray(y, float), np.asarray(p, float), np.atleast_2d(w)))


def weighted_binary(y, p, w, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Every metric of `binary_metrics` under each row of image weights (B x N), vectorised; the thresholded ones
    from weighted confusion counts with scikit-learn's zero_division=0. The tests compare them with scikit-learn."""
    y, p, w = np.asarray(y).astype(bool), np.asarray(p, float), np.atleast_2d(w)
    hat = p >= threshold
    tp, fp, fn, tn = (w @ (y & hat), w @ (~y & hat), w @ (y & ~hat), w @ (~y & ~hat))

    def ratio(a, b):
        return np.divide(a, b, out=np.zeros(len(a)), where=b > 0)

    by_score = _by_score(y.astype(float), p, w)  # shared by AUC and AP
    return {"auc": _auc(*by_score), "ap": _ap(*by_score), "sensitivity": ratio(tp, tp + fn),
            "specificity": ratio(tn, tn + fp), "precision": ratio(tp, tp + fp), "f1": ratio(2 * tp, 2 * tp + fp + fn),
            "accuracy": ratio(tp + tn, tp + fp + fn + tn)}


def bootstrap_ci(y, p, groups=None, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05,
                 threshold: float = 0.5) -> dict:
    """Percentile bootstrap intervals of each binary metric, resampling whole clusters (`groups`) within each class."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    draws = weighted_binary(y, p, resample_weights(y, groups, n_boot, seed), threshold)
    return {k: [float(np.nanquantile(draws[k], alpha / 2)), float(np.nanquantile(draws[k], 1 - alpha / 2))]
            for k in BINARY}


def auc_ci(y, p, groups=None, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """The percentile bootstrap interval of the AUC alone, resampling whole clusters within each class: the AUC
    interval of `bootstrap_ci`, the same draws, without the other metrics."""
    y = np.asarray(y).astype(int)
    draws = weighted_auc(y, p, resample_weights(y, groups, n_boot, seed))
    return float(np.nanquantile(draws, alpha / 2)), float(np.nanquantile(draws, 1 - alpha / 2))


def _mean_over_runs(draws: np.ndarray, seed: int) -> np.ndarray:
    """B x S bootstrap draws of a statistic of S runs (or pairs of runs) -> B draws of its mean over the runs, the
    runs drawn with replacement when there are several (the second level of a two-level bootstrap)."""
    if draws.shape[1] > 1:
        draws = np.take_along_axis(draws, np.random.default_rng(seed + 1).integers(0, draws.shape[1], draws.shape), 1)
    return draws.mean(1)


def runs_auc_interval(y, P, groups=None, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean AUC over the S runs of P (S x N, such as seeds on the same images) and its 95% two-level bootstrap
    interval: whole clusters drawn within each class, the same draw for every run, and the runs drawn with
    replacement."""
    y, P = np.asarray(y).astype(int), np.atleast_2d(np.asarray(P, float))
    w = resample_weights(y, groups, n_boot, seed)
    d = _mean_over_runs(np.stack([weighted_auc(y, p, w) for p in P], axis=1), seed)
    est = float(np.mean([auc(y, p) for p in P]))
    return est, float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975))


def paired_difference(y, p_a, p_b, groups=None, n_boot: int = 2000, seed: int = 0) -> dict:
    """AUC(A) - AUC(B), averaged over paired runs: `p_a` and `p_b` are N (one pair) or S x N (S pairs, such as seeds,
    on the same images). The bootstrap draws whole clusters within each class and, with several pairs, the pairs
    too (a two-level bootstrap), and applies the same draw to both methods. Returns the estimate, its 95% percentile
    interval, the two-sided bootstrap p-value, the standard error and the smallest difference detectable with 80%
    power at the 5% level, (z_0.975 + z_0.8) x SE (the normal approximation)."""
    from scipy import stats  # imported here: 0.6 s that `ladnn evaluate` does not need
    y = np.asarray(y).astype(int)
    pa, pb = np.atleast_2d(np.asarray(p_a, float)), np.atleast_2d(np.asarray(p_b, float))
    if pa.shape != pb.shape or pa.shape[1] != len(y):
        raise ValueError(f"paired predictions must have the same shape (S x {len(y)}): {pa.shape} and {pb.shape}")
    d_runs = np.array([auc(y, a) - auc(y, b) for a, b in zip(pa, pb)])
    w = resample_weights(y, groups, n_boot, seed)
    ds = _mean_over_runs(np.stack([weighted_auc(y, a, w) - weighted_auc(y, b, w) for a, b in zip(pa, pb)], axis=1),
                         seed)
    se = float(np.std(ds, ddof=1))
    return {"auc_diff": float(d_runs.mean()), "auc_diff_ci": [float(np.quantile(ds, 0.025)),
                                                            float(np.quantile(ds, 0.975))],
            "p_auc": float(min(1.0, 2 * min((ds <= 0).mean(), (ds >= 0).mean()))), "se": se,
            "detectable_80": float((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * se),
            "pairs": len(pa), "per_pair": d_runs.tolist(), "n": len(y),
            "clusters": len(clusters(np.arange(len(y)) if groups is None else groups, y)[1])}


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of m p-values (Holm 1979): the k-th smallest is multiplied by m - k + 1, and the
    adjusted values are made non-decreasing in that order, at most 1. Rejecting where the adjusted p < alpha keeps
    the chance of any false claim among the m below alpha. NaN stays NaN and does not count in m."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    adj = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adj
    return out


def paired_test(y, p_a, p_b, groups=None, n_boot: int = 2000, seed: int = 0, threshold: float = 0.5) -> dict:
    """Method A against method B on the same images: the clustered paired bootstrap of the AUC difference
    (`paired_difference`) and McNemar's exact test on the 0/1 decisions."""
    from scipy import stats  # imported here: 0.6 s that `ladnn evaluate` does not need
    y, p_a, p_b = np.asarray(y).astype(int), np.asarray(p_a, float), np.asarray(p_b, float)
    out = paired_difference(y, p_a, p_b, groups, n_boot, seed)
    ra, rb = (p_a >= threshold) == y, (p_b >= threshold) == y
    b, c = int((ra & ~rb).sum()), int((~ra & rb).sum())
    p_mc = float(stats.binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    return {**out, "a_right_b_wrong": b, "a_wrong_b_right": c, "p_mcnemar": p_mc}


def mean_ci(x) -> tuple[float, float, float]:
    """Mean and 95% t-interval over seeds (the interval is nan for a single seed)."""
    from scipy import stats  # imported here: 0.6 s that `ladnn evaluate` does not need
    x = np.asarray(x, dtype=float)
    m = float(x.mean())
    if len(x) < 2:
        return m, float("nan"), float("nan")
    h = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return m, m - h, m + h
