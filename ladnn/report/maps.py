"""Grad-CAM++ maps (paper Figure 5) and the auxiliary lesion outputs (paper Figure 6)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ladnn.config import LESIONS, TASKS
from ladnn.metrics import auc
from ladnn.rundir import FinishedRun
from ladnn.scores import PRED


def cam_images(run: str | Path, n: int, data_dir=None) -> pd.DataFrame:
    """The first `n` COVID-positive test images (by name) that carry at least one lesion label."""
    from ladnn.data import splits

    test = splits(FinishedRun(run).config, data_dir)["test"]
    pick = test[(test["covid"] == 1) & (test[list(LESIONS)].sum(axis=1) > 0)].sort_values("name")
    return pick.head(n)


def _maps_and_probs(run, rows: pd.DataFrame, task_indices):
    """The preprocessed images of `rows` (N x H x W x 3), the run's Grad-CAM++ maps of each task index (index ->
    N x h x w) and its probabilities (N x tasks), all of the plain image."""
    import torch

    from ladnn.images import read_bytes
    from ladnn.predict import Predictor

    pr = Predictor(run, tta=1, onnx=False)  # maps and the probabilities in their titles are of the plain image
    rgbs, xs = zip(*(pr.preprocess(read_bytes(p), p) for p in rows["image"]))
    x = torch.cat(xs)
    probs = pr.probs(x)
    return np.stack(rgbs), dict(zip(task_indices, pr.cam_maps(x, list(task_indices)))), probs


def cam_figure(baseline_run, ladnn_run, rows: pd.DataFrame):
    """Figure 5: the COVID output's Grad-CAM++ map of the baseline and of LA-DNN on the same images (`rows`, a
    sample table: test images, or the slices of an external set), one row of panels per image (a pyplot figure)."""
    from ladnn.cam import overlay

    rgb, mb, pb = _maps_and_probs(baseline_run, rows, [0])
    _, ml, pl = _maps_and_probs(ladnn_run, rows, [0])
    fig, ax = plt.subplots(len(rows), 5, figsize=(10, 2.1 * len(rows)), squeeze=False)
    for i in range(len(rows)):
        panels = [(rgb[i], "CT image"), (mb[0][i], f"baseline map (p={pb[i, 0]:.2f})"),
                  (overlay(rgb[i], mb[0][i]), "baseline overlay"), (ml[0][i], f"LA-DNN map (p={pl[i, 0]:.2f})"),
                  (overlay(rgb[i], ml[0][i]), "LA-DNN overlay")]
        for j, (img, title) in enumerate(panels):
            ax[i, j].imshow(img, cmap="jet" if img.ndim == 2 else None, vmin=0, vmax=1 if img.ndim == 2 else None)
            ax[i, j].set_title(title, fontsize=8)
            ax[i, j].axis("off")
    fig.tight_layout()
    return fig


def lesion_cam_figure(ladnn_run, rows: pd.DataFrame):
    """Maps of LA-DNN's COVID output and of each lesion output, one row per image of `rows` (a pyplot figure); a
    lesion title is starred when labelled."""
    from ladnn.cam import overlay

    rgb, maps, probs = _maps_and_probs(ladnn_run, rows, range(6))
    names = TASKS
    fig, ax = plt.subplots(len(rows), 7, figsize=(10, 1.6 * len(rows)), squeeze=False)
    for i, (_, row) in enumerate(rows.iterrows()):
        ax[i, 0].imshow(rgb[i])
        ax[i, 0].set_title(row["name"][:24], fontsize=7)
        for k in range(6):
            star = "*" if k and row[LESIONS[k - 1]] else ""
            ax[i, k + 1].imshow(overlay(rgb[i], maps[k][i]))
            ax[i, k + 1].set_title(f"{names[k]}{star} p={probs[i, k]:.2f}", fontsize=8)
        for a in ax[i]:
            a.axis("off")
    fig.tight_layout()
    return fig


def lesion_logits(run: str | Path) -> pd.DataFrame:
    """The five lesion outputs (logits, the last layer's values as in the paper's Figure 6) per test image."""
    p = FinishedRun(run).predictions
    eps = 1e-7
    out = pd.DataFrame({k: np.log((p[c] + eps) / (1 - p[c] + eps)) for k, c in zip(LESIONS, PRED.p_lesions)})
    out["COVID label"] = p[PRED.y_true].map({1: "COVID", 0: "non-COVID"})
    return out


def lesion_separation(run: str | Path) -> pd.DataFrame:
    """How well each lesion output alone separates COVID from non-COVID test images (AUC)."""
    p = FinishedRun(run).predictions
    y = p[PRED.y_true]
    return pd.DataFrame([{"lesion": k, "AUC for COVID vs non-COVID": auc(y, p[c]),
                          "mean p (COVID)": p.loc[y == 1, c].mean(), "mean p (non-COVID)": p.loc[y == 0, c].mean()}
                         for k, c in zip(LESIONS, PRED.p_lesions)]
                        ).set_index("lesion")


def separation_sentence(sep: pd.DataFrame) -> str:
    """Which lesion output alone separates the classes best and least, and why that is no proof of lesions seen."""
    aucs = sep["AUC for COVID vs non-COVID"]
    return (f"Alone, the {aucs.idxmax()} output separates COVID from non-COVID test images best (AUC "
            f"{aucs.max():.3f}) and the {aucs.idxmin()} output least (AUC {aucs.min():.3f}). Every lesion output is trained only on "
            "positive images, so each one partly learns the COVID label itself; a high AUC here is expected and is "
            "not evidence that the lesion was seen.")


def first_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Per backbone and dataset, the lowest seed's baseline and LA-DNN run paths (columns `baseline`, `ladnn`): the
    runs whose maps and outputs the Grad-CAM++ and pairplot chapters show."""
    first = runs.sort_values("seed").groupby(["backbone", "dataset", "method"])["path"].first().unstack("method")
    return first.dropna()
