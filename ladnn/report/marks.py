"""Annotation marks on the paper figures, measured: which images carry drawn colour (ellipses, arrows, letters
drawn in colour on a CT figure that should be grey), how much of a Grad-CAM++ map falls on them, and how the COVID
score changes when they are painted out (OpenCV's `inpaint`): the causal test of the shortcut that the maps show.

Only coloured marks are found: white or black arrows and letters look like CT and are not counted here."""
from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ladnn.images import decode, read_bytes
from ladnn.report import METHOD_NAMES
from ladnn.scores import PRED

COLOUR_DIFF = 60  # a pixel is drawn colour when its channels differ by more than this (0..255) ...
MIN_VALUE = 80  # ... and its brightest channel exceeds this
MIN_SHARE = 0.002  # an image carries marks when at least this share of its pixels is drawn colour
# The columns of `marks_effect` beside the image's COVID probability as is (PRED.p_covid)
PAINTED = PRED.p_covid + "_painted_out"  # with the marks painted out
CONTROL = PRED.p_covid + "_control"  # with a patch of the marks' shape painted out elsewhere


def mark_mask(rgb: np.ndarray, dilate: int = 2) -> np.ndarray:
    """Boolean H x W mask of drawn colour, grown by `dilate` pixels (the marks' anti-aliased edges)."""
    import cv2

    a = rgb.astype(np.int16)
    m = ((a.max(axis=2) - a.min(axis=2)) > COLOUR_DIFF) & (a.max(axis=2) > MIN_VALUE)
    if dilate and m.any():
        m = cv2.dilate(m.astype(np.uint8), np.ones((2 * dilate + 1,) * 2, np.uint8)) > 0
    return m


def mark_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per image of a sample table: the share of drawn-colour pixels and whether it carries marks."""
    share = [float(mark_mask(np.asarray(decode(read_bytes(p))), dilate=0).mean()) for p in table["image"]]
    out = table[["name", "image", "dataset", "covid", "collection"]].copy()
    out["mark_share"] = share
    out["marked"] = out["mark_share"] >= MIN_SHARE
    return out


def mark_counts(marks: pd.DataFrame) -> pd.DataFrame:
    """Images with marks per dataset and class."""
    kind = marks["dataset"] + " " + marks["covid"].map({1: "COVID", 0: "non-COVID"})
    return pd.DataFrame({"images": kind.value_counts(), "with colour marks": marks.groupby(kind)["marked"].sum()}
                        ).assign(share=lambda d: d["with colour marks"] / d["images"]).sort_index()


def painted_out(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with its marks filled in from their surroundings (Telea's method, OpenCV)."""
    import cv2

    return cv2.inpaint(np.ascontiguousarray(rgb), mask.astype(np.uint8), 5, cv2.INPAINT_TELEA)


def marks_effect(run: str, rows: pd.DataFrame) -> pd.DataFrame:
    """For each image of `rows` (marked images of a sample table): the COVID probability as is (PRED.p_covid) and
    with the marks painted out (PAINTED), the
    share of the COVID Grad-CAM++ map's mass on the marks, and the marks' share of the image (the mass a map spread
    evenly would put there). The control paints out a patch of the same shape moved by half the image (`np.roll`),
    away from the marks (CONTROL): a change that painting anything out would cause shows there too. Scored through
    the run's own path (`Predictor`)."""
    import cv2
    import torch
    from PIL import Image

    from ladnn.predict import Predictor

    pr = Predictor(run, onnx=False)  # a few images: no ONNX export
    if "crop" in pr.config.preprocess:
        raise ValueError(f"{run}: marks are located on the uncropped image; a run with the crop step is not supported")
    out = []
    for name, path in zip(rows["name"], rows["image"]):
        rgb = np.asarray(decode(read_bytes(path)))
        mask = mark_mask(rgb)
        control = np.roll(mask, (mask.shape[0] // 2, mask.shape[1] // 2), axis=(0, 1)) & ~mask
        xs = []
        for img in (rgb, painted_out(rgb, mask), painted_out(rgb, control)):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, "PNG", compress_level=1)  # lossless: the same pixels, fastest level
            xs.append(pr.preprocess(buf.getvalue(), name)[1])
        p = pr.probs(torch.cat(xs))[:, 0]
        cam = pr.cam_maps(xs[0], [0])[0, 0]
        m = cv2.resize(mask.astype(np.uint8), cam.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
        out.append({PRED.image: name, PRED.p_covid: float(p[0]), PAINTED: float(p[1]), CONTROL: float(p[2]),
                    "cam_share_on_marks": float(cam[m].sum() / max(cam.sum(), 1e-12)), "mark_area": float(m.mean())})
    df = pd.DataFrame(out)
    df["change"] = df[PAINTED] - df[PRED.p_covid]
    df["control change"] = df[CONTROL] - df[PRED.p_covid]
    return df


def effect_summary(effect: pd.DataFrame, groups: pd.Series, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean change in the COVID probability when the marks are painted out, and in the control, each with a 95%
    interval resampling whole papers (`groups`, aligned with `effect`), and the mean map mass on the marks against
    their mean area."""
    rng = np.random.default_rng(seed)
    g = groups.to_numpy()
    keys = np.unique(g)
    idx = [np.flatnonzero(g == k) for k in keys]
    out = {"images": len(effect), "papers": len(keys)}
    for col in ("change", "control change", "cam_share_on_marks", "mark_area"):
        v = effect[col].to_numpy()
        boots = [v[np.concatenate([idx[i] for i in rng.integers(0, len(keys), len(keys))])].mean()
                 for _ in range(n_boot)]
        out[col] = (float(v.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)))
    return out


def run_effects(runs: pd.Series, marks: pd.DataFrame, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """`marks_effect` of each method's run in `runs` (a row of `ladnn.report.maps.first_runs`: method -> run path,
    baseline then LA-DNN) on the D0 images of `marks` (`mark_table`) that carry marks, each image with its split in
    `table` (column `split`)."""
    marked = marks[marks["marked"] & (marks["dataset"] == "D0")]
    split = table.set_index("name").loc[marked["name"], "split"].to_numpy()
    return {m: marks_effect(runs[m], marked).assign(split=split) for m in ("baseline", "ladnn")}


def effect_sentences(effects: dict[str, pd.DataFrame], table: pd.DataFrame, n_boot: int = 2000) -> list[str]:
    """Per method of `run_effects`, its `effect_summary` in words (Markdown), the intervals resampling whole papers
    (the linked groups of `ladnn.sources`)."""
    from ladnn.sources import linked_groups

    papers = linked_groups(table).set_axis(table["name"])
    out = []
    for m, e in effects.items():
        s = effect_summary(e, papers.loc[e[PRED.image]], n_boot)
        out.append(f"**{METHOD_NAMES[m]}** ({s['images']} marked images of {s['papers']} papers): painting the marks "
                   f"out changes the COVID probability by {s['change'][0]:+.3f} (95% interval {s['change'][1]:+.3f} "
                   f"to {s['change'][2]:+.3f}); the control patch by {s['control change'][0]:+.3f} "
                   f"({s['control change'][1]:+.3f} to {s['control change'][2]:+.3f}). The map puts "
                   f"{s['cam_share_on_marks'][0]:.1%} of its mass on marks that cover {s['mark_area'][0]:.1%} of the "
                   "image.")
    return out


def effect_figure(effect: pd.DataFrame, title: str = "LA-DNN, D0 images with colour marks") -> Figure:
    """The COVID probability of each marked image as published (x) against the same with the marks painted out
    (dots) and with the control patch painted out (crosses), one point per image of `effect` (`marks_effect`); the
    diagonal is no change."""
    fig = plt.figure(figsize=(5, 4))
    plt.close(fig)  # not an open pyplot figure: it shows once, where the notebook displays it
    ax = fig.subplots()
    ax.scatter(effect[PRED.p_covid], effect[PAINTED], label="marks painted out")
    ax.scatter(effect[PRED.p_covid], effect[CONTROL], marker="x", label="control patch painted out")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    ax.set_xlabel("COVID probability, as published")
    ax.set_ylabel("after painting out")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return fig


def label_sentence(marks: pd.DataFrame, effect: pd.DataFrame) -> str:
    """What the colour detector found (`mark_counts` of `marks`: marked COVID and non-COVID images) and what it cannot
    see, and how many of the images of `effect` (`run_effects`, column `split`) the runs trained on. It claims no
    link between marks and labels: the detector misses small and uncoloured marks (its rule: at least MIN_SHARE of
    the pixels in drawn colour)."""
    cnt = mark_counts(marks)
    non_covid = cnt.index.str.contains("non-COVID")
    neg = int(cnt.loc[non_covid, "with colour marks"].sum())
    pos = int(cnt.loc[~non_covid, "with colour marks"].sum())
    split = effect["split"].to_numpy()
    faint = marks[(marks["covid"] == 0) & (marks["mark_share"] > 0) & ~marks["marked"]]
    below = (f"{len(faint)} non-COVID images carry some drawn colour below that share ({faint['mark_share'].min():.2%} "
             f"to {faint['mark_share'].max():.2%} of the image; among them "
             f"{int(faint['collection'].str.contains('RIDER').sum())} of D1's RIDER negatives, each with a small "
             "yellow arrow)" if len(faint) else "no non-COVID image carries drawn colour below that share")
    return (f"The colour rule (at least {MIN_SHARE:.1%} of the pixels in drawn colour) finds marks on {pos} "
            f"COVID-positive and {neg} non-COVID images; {below}. White or black arrows and letters are invisible "
            "to a colour rule. So these counts do not show that a drawn mark is itself a label. "
            f"{int((split == 'train').sum())} of the {len(split)} marked D0 images are training images of the runs, "
            "and painting marks out of a model trained with them cannot show what the marks did during training.")