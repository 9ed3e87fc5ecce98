"""Grad-CAM++ maps (paper Figure 5) and the auxiliary lesion outputs (paper Figure 6)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ladnn.config import LESIONS, TASKS
from ladnn.metrics import auc
from ladnn.report import FIG_WIDTH, short_name
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


TITLE_PT = 12  # panel titles: about 10 pt or more once a figure FIG_WIDTH wide is scaled to a ~750 px column
def cam_figure(baseline_run: str | Path, ladnn_run: str | Path, rows: pd.DataFrame) -> plt.Figure:
    """Figure 5: the COVID output's Grad-CAM++ map of the baseline and of LA-DNN over the same images (`rows`, a
    sample table: test images, or the slices of an external set), one row of three panels per image: the image
    (numbered), the baseline's overlay and LA-DNN's, each titled with that run's COVID probability (a pyplot figure)."""
    from ladnn.cam import overlay

    rgb, mb, pb = _maps_and_probs(baseline_run, rows, [0])
    _, ml, pl = _maps_and_probs(ladnn_run, rows, [0])
    fig, ax = plt.subplots(len(rows), 3, figsize=(FIG_WIDTH, 2.9 * len(rows)), squeeze=False)
    for i, name in enumerate(rows["name"]):
        panels = [(rgb[i], f"{i + 1}. {short_name(name, 22)}"), (overlay(rgb[i], mb[0][i]), f"baseline, p={pb[i, 0]:.2f}"),
                  (overlay(rgb[i], ml[0][i]), f"LA-DNN, p={pl[i, 0]:.2f}")]
        for a, (img, title) in zip(ax[i], panels):
            a.imshow(img)
            a.set_title(title, fontsize=TITLE_PT)
            a.axis("off")
    fig.tight_layout()
    return fig


def labelled_lesions(row: pd.Series) -> str:
    """The lesions that an image's caption names, e.g. 'GGO, Csld', or 'none'."""
    return ", ".join(k for k in LESIONS if row[k]) or "none"


def lesion_cam_figure(ladnn_run: str | Path, rows: pd.DataFrame) -> plt.Figure:
    """LA-DNN's Grad-CAM++ maps of the COVID output and of each lesion output, two rows of four panels per image of
    `rows`: the image, COVID, GGO, Csld / CrPa, AirBr, InSepThi and the lesions its caption names. A lesion title is
    starred when that lesion is labelled (a pyplot figure)."""
    from ladnn.cam import overlay

    rgb, maps, probs = _maps_and_probs(ladnn_run, rows, range(6))
    fig, ax = plt.subplots(2 * len(rows), 4, figsize=(FIG_WIDTH, 4.3 * len(rows)), squeeze=False)
    for i, (_, row) in enumerate(rows.iterrows()):
        cells = ax[2 * i:2 * i + 2].ravel()
        cells[0].imshow(rgb[i])
        cells[0].set_title(f"{i + 1}. {short_name(row['name'], 20)}", fontsize=TITLE_PT)
        for k, name in enumerate(TASKS):
            star = "*" if k and row[LESIONS[k - 1]] else ""
            cells[k + 1].imshow(overlay(rgb[i], maps[k][i]))
            cells[k + 1].set_title(f"{name}{star} p={probs[i, k]:.2f}", fontsize=TITLE_PT)
        cells[7].text(0.05, 0.5, "labelled:\n" + labelled_lesions(row).replace(", ", "\n"), fontsize=TITLE_PT,
                      va="center", transform=cells[7].transAxes)
        for a in cells:
            a.axis("off")
    fig.tight_layout()
    return fig


def lesion_pairplot(logits: pd.DataFrame):
    """Figure 6: seaborn's pairplot of the five lesion logits (`lesion_logits`), coloured by the COVID label, about
    FIG_WIDTH wide with its legend above the grid (a seaborn PairGrid)."""
    import seaborn as sns

    with sns.plotting_context("notebook", font_scale=1.1):
        g = sns.pairplot(logits, hue="COVID label", hue_order=["non-COVID", "COVID"], height=FIG_WIDTH / len(LESIONS),
                         plot_kws={"s": 10, "alpha": 0.6})
        sns.move_legend(g, "lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, title=None, frameon=False)
        g.figure.set_size_inches(FIG_WIDTH, FIG_WIDTH)  # pairplot widened the figure for a legend at its side
        g.figure.tight_layout()
    return g


def lesion_logits(run: str | Path | pd.DataFrame) -> pd.DataFrame:
    """The five lesion outputs (logits, the last layer's values as in the paper's Figure 6) per test image, from a
    run folder or its predictions table."""
    p = run if isinstance(run, pd.DataFrame) else FinishedRun(run).predictions
    eps = 1e-7
    out = pd.DataFrame({k: np.log((p[c] + eps) / (1 - p[c] + eps)) for k, c in zip(LESIONS, PRED.p_lesions)})
    out["COVID label"] = p[PRED.y_true].map({1: "COVID", 0: "non-COVID"})
    return out


SD_RATIO = "logit sd ratio (COVID / non-COVID)"


def lesion_separation(run: str | Path) -> pd.DataFrame:
    """How well each lesion output alone separates COVID from non-COVID test images (AUC), its mean probability in
    each class, and how much more widely its logits spread on COVID images (ratio of standard deviations)."""
    p = FinishedRun(run).predictions
    y = p[PRED.y_true]
    logits = lesion_logits(p)
    return pd.DataFrame([{"lesion": k, "AUC for COVID vs non-COVID": auc(y, p[c]),
                          "mean p (COVID)": p.loc[y == 1, c].mean(), "mean p (non-COVID)": p.loc[y == 0, c].mean(),
                          SD_RATIO: logits.loc[(y == 1).to_numpy(), k].std() / logits.loc[(y == 0).to_numpy(), k].std()}
                         for k, c in zip(LESIONS, PRED.p_lesions)]
                        ).set_index("lesion")


CHANCE_BAND = 0.1  # an AUC within this distance of 0.5 is called close to chance
WIDER = 1.5  # a standard deviation ratio this far from 1 (either way) is called a different spread

_TRAINED_ON = {"any_lesion": "only on images with at least one lesion label, all of them COVID-positive",
               "positives": "only on COVID-positive images whose lesion labels are known"}


def separation_sentence(sep: pd.DataFrame, lesion_mask: str = "any_lesion", zero_lesions: Sequence[str] = ()
                        ) -> str:
    """Markdown: which lesion output alone separates the classes best and least (`lesion_separation`), how the
    outputs were trained (the run's `lesion_mask` and `zero_lesions`), and what the AUCs do and do not show."""
    aucs = sep["AUC for COVID vs non-COVID"]
    far = (aucs - 0.5).abs()  # an AUC below 0.5 separates too, in reverse: distance from chance ranks them
    best, least = far.idxmax(), far.idxmin()
    out = [(f"Alone, the {best} output separates COVID from non-COVID test images best (AUC {aucs[best]:.3f}"
            + (", in reverse: its output is lower on COVID images" if aucs[best] < 0.5 else "")
            + f") and the {least} output least (AUC {aucs[least]:.3f}, the closest to 0.5).")]
    if lesion_mask == "none":
        out.append("This run has no lesion loss term (`lesion_mask: none`): only the optimiser's weight decay moves the "
                   "lesion outputs' rows of the head (shrinking them), and they read the same features as the COVID "
                   "output.")
    else:
        out.append(f"The lesion terms are trained {_TRAINED_ON.get(lesion_mask, f'under the rule {lesion_mask!r}')}, "
                   "so no lesion output is ever shown a non-COVID image as a counter-example.")
    if len(zero_lesions):
        out.append(f"The labels of {' and '.join(zero_lesions)} were all set to 0 in training.")
    far = aucs[(aucs - 0.5).abs() >= CHANCE_BAND]
    if far.empty:
        out.append(f"All five AUCs lie within {CHANCE_BAND} of 0.5, the AUC of guessing: no lesion output alone ranks "
                   "COVID images above non-COVID ones much better than chance.")
    else:
        listed = ", ".join(f"{k} ({v:.3f})" for k, v in far.items())
        count = ["", "One", "Two", "Three", "Four", "All five"][len(far)]
        verb = "lies" if len(far) == 1 else "lie"
        out.append(f"{count}{'' if len(far) == 5 else ' of the five'} {verb} {CHANCE_BAND} or more from 0.5: {listed}.")
        if (far < 0.5).any():
            out.append("An AUC below 0.5 means that the output is lower on COVID images.")
        out.append(f"Such a separation shows that the COVID signal of the shared features reaches "
                   f"{'this output' if len(far) == 1 else 'these outputs'}; it is no evidence that a lesion was seen.")
    if SD_RATIO in sep:
        out.append(spread_sentence(sep[SD_RATIO]))
    return " ".join(out)


def _and(names: Iterable) -> str:
    """'a', 'a and b', 'a, b and c'."""
    names = [str(n) for n in names]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def spread_sentence(ratio: pd.Series) -> str:
    """Whether the lesion logits of COVID images spread more or less widely than those of non-COVID images
    (`ratio`: standard deviation ratio per lesion), a difference that the AUC, a measure of ranking, misses."""
    odd = ratio[(ratio >= WIDER) | (ratio <= 1 / WIDER)]
    if odd.empty:
        return (f"The logits of the two classes spread about equally widely on every output (standard deviation "
                f"ratios {ratio.min():.2f} to {ratio.max():.2f}).")
    wide, narrow = odd[odd > 1], odd[odd < 1]
    parts = []
    if len(wide):
        parts.append(f"{_and(wide.index)} ({wide.min():.1f} to {wide.max():.1f} times as wide for COVID images)"
                     if len(wide) > 1 else f"{wide.index[0]} ({wide.iloc[0]:.1f} times as wide for COVID images)")
    if len(narrow):
        parts.append(f"{_and(narrow.index)} (narrower for COVID images, ratio {narrow.min():.2f} to "
                     f"{narrow.max():.2f})")
    return (f"The spread of the logits differs between the classes on {'; '.join(parts)}: a difference that the "
            "pairplot's diagonal shows and that the AUC, which measures only how the classes rank, does not.")


def first_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Per backbone and dataset, the lowest seed's baseline and LA-DNN run paths (columns `baseline`, `ladnn`): the
    runs whose maps and outputs the Grad-CAM++ and pairplot chapters show."""
    first = runs.sort_values("seed").groupby(["backbone", "dataset", "method"])["path"].first().unstack("method")
    return first.dropna()


def first_ladnn_runs(runs: pd.DataFrame) -> pd.Series:
    """Per backbone and dataset, the lowest seed's LA-DNN run path: the runs whose lesion outputs the pairplot
    chapter shows (no baseline needed)."""
    lad = runs[runs["method"] == "ladnn"].sort_values("seed")
    return lad.groupby(["backbone", "dataset"])["path"].first()


def shown_runs(runs: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """The runs of `pairs` (`first_runs`) for the page: backbone, dataset and the seed of the baseline and LA-DNN run
    shown, without the long paths (no row numbers; show with `.style.hide(axis="index")`)."""
    seed = runs.set_index("path")["seed"]
    return pd.DataFrame([{"backbone": bb, "dataset": ds, "baseline seed": int(seed[r["baseline"]]),
                          "LA-DNN seed": int(seed[r["ladnn"]])} for (bb, ds), r in pairs.iterrows()])


def marks_sentence(shown: pd.DataFrame) -> str:
    """Markdown: how many of the images shown (`ladnn.report.marks.mark_table` of them, in figure order) carry a
    drawn mark, by their number in the figures."""
    n = len(shown)
    hits = [str(i + 1) for i, m in enumerate(shown["marked"]) if m]
    if not hits:
        return f"The detector of drawn marks (colour patches, grey arrows and letters) finds none on the {n} images above."
    nums = _and(hits)
    return (f"The detector of drawn marks (colour patches, grey arrows and letters) finds marks on {len(hits)} of the "
            f"{n} images above: number{'s' if len(hits) > 1 else ''} {nums}.")


def pairplot_runs(runs_dir: str | Path, ladnn_run: str | Path = "") -> pd.Series:
    """The LA-DNN run paths whose lesion outputs the pairplot chapter draws, indexed by backbone and dataset:
    `ladnn_run` alone when given (any finished LA-DNN run folder), else `first_ladnn_runs` of `runs_dir`."""
    if ladnn_run:
        c = FinishedRun(ladnn_run).config
        if c.method != "ladnn":
            raise ValueError(f"{ladnn_run}: a {c.method} run has no lesion outputs to draw")
        index = pd.MultiIndex.from_tuples([(c.backbone, c.dataset)], names=["backbone", "dataset"])
        return pd.Series([str(ladnn_run)], index=index, name="path")
    from ladnn.rundir import runs_table

    return first_ladnn_runs(runs_table(runs_dir))


def runs_sentence(shown: pd.Series) -> str:
    """Markdown naming the run folders drawn (`pairplot_runs`), with their backbone and dataset."""
    names = [f"`{Path(p).name}` ({bb} on {ds})" for (bb, ds), p in shown.items()]
    return f"The figures below draw {'this run' if len(names) == 1 else f'these {len(names)} runs'}: {'; '.join(names)}."
