"""Annotation marks on the paper figures, measured: which images carry drawn colour (ellipses, arrows, letters
drawn in colour on a CT figure that should be grey), how much of a Grad-CAM++ map falls on them, and how the COVID
score changes when they are painted out (OpenCV's `inpaint`): the causal test of the shortcut that the maps show.

Only coloured marks are found: white or black arrows and letters look like CT and are not counted here."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd

from ladnn.images import decode, read_bytes

COLOUR_DIFF = 60  # a pixel is drawn colour when its channels differ by more than this (0..255) ...
MIN_VALUE = 80  # ... and its brightest channel exceeds this
MIN_SHARE = 0.002  # an image carries marks when at least this share of its pixels is drawn colour


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
    """For each image of `rows` (marked images): the COVID probability as is and with the marks painted out, the
    share of the COVID Grad-CAM++ map's mass on the marks, and the marks' share of the image (the mass a map spread
    evenly would put there). The control paints out a patch of the same shape moved by half the image (`np.roll`),
    away from the marks: a change that painting anything out would cause shows there too. Scored through the run's
    own path (`Predictor`)."""
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
            Image.fromarray(img).save(buf, "PNG", compress_level=1)  # lossless: the same pixels, 3x faster
            xs.append(pr.preprocess(buf.getvalue(), name)[1])
        p = pr.probs(torch.cat(xs))[:, 0]
        cam = pr.cam_maps(xs[0], [0])[0, 0]
        m = cv2.resize(mask.astype(np.uint8), cam.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
        out.append({"image": name, "p_covid": float(p[0]), "p_covid_painted_out": float(p[1]),
                    "p_covid_control": float(p[2]),
                    "cam_share_on_marks": float(cam[m].sum() / max(cam.sum(), 1e-12)), "mark_area": float(m.mean())})
    df = pd.DataFrame(out)
    df["change"] = df["p_covid_painted_out"] - df["p_covid"]
    df["control change"] = df["p_covid_control"] - df["p_covid"]
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
