"""Metrics on predictions (pure functions over arrays; scikit-learn does the arithmetic)."""
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


def bootstrap_ci(y, p, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05, threshold: float = 0.5) -> dict:
    """Percentile bootstrap intervals over test images for each binary metric."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    rng = np.random.default_rng(seed)
    draws = {k: [] for k in BINARY}
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if len(np.unique(y[i])) < 2:
            continue
        m = binary_metrics(y[i], p[i], threshold)
        for k in BINARY:
            draws[k].append(m[k])
    return {k: [float(np.quantile(v, alpha / 2)), float(np.quantile(v, 1 - alpha / 2))] for k, v in draws.items()}


def paired_test(y, p_a, p_b, n_boot: int = 2000, seed: int = 0, threshold: float = 0.5) -> dict:
    """Method A against method B on the same images: paired bootstrap of the AUC difference (two-sided p-value,
    95% interval) and McNemar's exact test on the 0/1 decisions."""
    y, p_a, p_b = (np.asarray(a, dtype=float) for a in (y, p_a, p_b))
    y = y.astype(int)
    d0 = skm.roc_auc_score(y, p_a) - skm.roc_auc_score(y, p_b)
    rng = np.random.default_rng(seed)
    ds = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if len(np.unique(y[i])) == 2:
            ds.append(skm.roc_auc_score(y[i], p_a[i]) - skm.roc_auc_score(y[i], p_b[i]))
    ds = np.asarray(ds)
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
