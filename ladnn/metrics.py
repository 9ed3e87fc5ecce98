"""Metrics on predictions (pure functions over arrays). Point metrics come from scikit-learn; the bootstrap
resamples are scored all at once with numpy, checked against scikit-learn in the tests."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from sklearn import metrics as skm

from ladnn.config import LESIONS

BINARY = ("auc", "ap", "sensitivity", "precision", "f1", "accuracy")


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict:
    """COVID = 1 is the positive class. AUC and average precision use probabilities; the rest use p >= threshold."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    yhat = (p >= threshold).astype(int)
    two = len(np.unique(y)) == 2
    return {
        "auc": float(skm.roc_auc_score(y, p)) if two else None,
        "ap": float(skm.average_precision_score(y, p)) if two else None,
        "sensitivity": float(skm.recall_score(y, yhat, zero_division=0)),
        "precision": float(skm.precision_score(y, yhat, zero_division=0)),
        "f1": float(skm.f1_score(y, yhat, zero_division=0)),
        "accuracy": float(skm.accuracy_score(y, yhat)),
        "n": len(y), "n_pos": int(y.sum()),
    }


def lesion_metrics(Y: np.ndarray, P: np.ndarray, threshold: float = 0.5) -> dict:
    """Multi-label metrics on the five lesions, for the images passed in (we pass test images whose lesion labels
    are known). `label_accuracy` = 1 - Hamming loss (the relation the paper's Table 3 numbers satisfy); `exact_match`
    = all five right. Per-lesion AUC is None, with a reason, when that lesion has no positive (or no negative)."""
    Y, P = np.asarray(Y).astype(int), np.asarray(P, dtype=float)
    if len(Y) == 0:
        return {"n": 0, "note": "no test image with known lesion labels"}
    Yhat = (P >= threshold).astype(int)
    per = {}
    for k, name in enumerate(LESIONS):
        npos = int(Y[:, k].sum())
        ok = 0 < npos < len(Y)
        per[name] = {"n_pos": npos, "auc": float(skm.roc_auc_score(Y[:, k], P[:, k])) if ok else None,
                     "note": None if ok else f"AUC undefined: {npos} positives among {len(Y)} images"}
    h = float(skm.hamming_loss(Y, Yhat))
    return {"n": len(Y), "hamming_loss": h, "label_accuracy": 1 - h,
            "exact_match": float(skm.accuracy_score(Y, Yhat)), "per_lesion": per}


def resampled_auc(y: np.ndarray, p: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """ROC AUC of each resample `idx` (B x N indices), all at once: the Mann-Whitney statistic on average ranks, which
    is what `roc_auc_score` computes (ties count one half). NaN where a resample holds one class only."""
    yy, ranks = y[idx], stats.rankdata(p[idx], axis=1)
    n1 = yy.sum(axis=1)
    n0 = yy.shape[1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * yy).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def resampled_ap(y: np.ndarray, p: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Average precision of each resample, as `average_precision_score` defines it: the sum over distinct thresholds
    of (recall step) x precision, tied scores forming one threshold. NaN where a resample has no positive."""
    order = np.argsort(-p[idx], axis=1, kind="stable")
    ps, ys = np.take_along_axis(p[idx], order, 1), np.take_along_axis(y[idx], order, 1)
    tp = np.cumsum(ys, axis=1)
    precision = tp / np.arange(1, ys.shape[1] + 1)
    end = np.ones_like(ys, dtype=bool)
    end[:, :-1] = ps[:, :-1] != ps[:, 1:]  # the last position of each run of tied scores
    tp_end = np.where(end, tp, 0)
    before = np.zeros_like(tp)
    before[:, 1:] = np.maximum.accumulate(tp_end, axis=1)[:, :-1]  # true positives at the previous threshold
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(end, (tp - before) * precision, 0)).sum(axis=1) / ys.sum(axis=1)


def resampled_binary(y: np.ndarray, p: np.ndarray, idx: np.ndarray, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Every metric of `binary_metrics` for each resample `idx` (B x N), vectorised; the thresholded ones from the
    confusion counts with scikit-learn's zero_division=0. tests/test_metrics.py checks them against scikit-learn."""
    yy, hat = y[idx].astype(bool), p[idx] >= threshold
    tp, fp, fn = (yy & hat).sum(1), (~yy & hat).sum(1), (yy & ~hat).sum(1)

    def ratio(a, b):
        return np.divide(a, b, out=np.zeros(len(a)), where=b > 0)

    return {"auc": resampled_auc(y, p, idx), "ap": resampled_ap(y, p, idx), "sensitivity": ratio(tp, tp + fn),
            "precision": ratio(tp, tp + fp), "f1": ratio(2 * tp, 2 * tp + fp + fn),
            "accuracy": (yy == hat).mean(1)}


def two_class_resamples(y: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """`n_boot` bootstrap resamples of the indices (B x N), keeping those that hold both classes."""
    idx = np.random.default_rng(seed).integers(0, len(y), (n_boot, len(y)))
    return idx[(y[idx].min(1) == 0) & (y[idx].max(1) == 1)]


def bootstrap_ci(y, p, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05, threshold: float = 0.5) -> dict:
    """Percentile bootstrap intervals over test images for each binary metric (resamples holding one class only are
    dropped)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    draws = resampled_binary(y, p, two_class_resamples(y, n_boot, seed), threshold)
    return {k: [float(np.quantile(draws[k], alpha / 2)), float(np.quantile(draws[k], 1 - alpha / 2))] for k in BINARY}


def paired_test(y, p_a, p_b, n_boot: int = 2000, seed: int = 0, threshold: float = 0.5) -> dict:
    """Method A against method B on the same images: paired bootstrap of the AUC difference (two-sided p-value,
    95% interval) and McNemar's exact test on the 0/1 decisions."""
    y, p_a, p_b = (np.asarray(a, dtype=float) for a in (y, p_a, p_b))
    y = y.astype(int)
    d0 = skm.roc_auc_score(y, p_a) - skm.roc_auc_score(y, p_b)
    idx = two_class_resamples(y, n_boot, seed)
    ds = resampled_auc(y, p_a, idx) - resampled_auc(y, p_b, idx)
    p_boot = float(min(1.0, 2 * min((ds <= 0).mean(), (ds >= 0).mean())))
    ra, rb = (p_a >= threshold) == y, (p_b >= threshold) == y
    b, c = int((ra & ~rb).sum()), int((~ra & rb).sum())
    p_mc = float(stats.binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    return {"auc_diff": float(d0), "auc_diff_ci": [float(np.quantile(ds, 0.025)), float(np.quantile(ds, 0.975))],
            "p_auc": p_boot, "a_right_b_wrong": b, "a_wrong_b_right": c, "p_mcnemar": p_mc, "n": len(y)}


def evaluate_predictions(pred: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """All test metrics from a predictions table (columns y_true, p_covid, and for LA-DNN p_<lesion>, y_<lesion>,
    lesions_known)."""
    out = {"covid": binary_metrics(pred["y_true"], pred["p_covid"]),
           "covid_ci95": bootstrap_ci(pred["y_true"], pred["p_covid"], n_boot=n_boot, seed=seed)}
    if f"p_{LESIONS[0]}" in pred:
        k = pred[pred["lesions_known"].astype(bool)]
        out["lesions"] = lesion_metrics(k[[f"y_{x}" for x in LESIONS]].to_numpy(),
                                        k[[f"p_{x}" for x in LESIONS]].to_numpy())
        out["lesions"]["images"] = "test images with known lesion labels (the COVID-positive, annotated ones)"
    return out


def mean_ci(x) -> tuple[float, float, float]:
    """Mean and 95% t-interval over seeds (the interval is nan for a single seed)."""
    x = np.asarray(x, dtype=float)
    m = float(x.mean())
    if len(x) < 2:
        return m, float("nan"), float("nan")
    h = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return m, m - h, m + h
