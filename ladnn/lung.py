"""The lungs of a CT figure, found with a classical threshold-and-morphology mask, for two input steps against the
sources' differences (Config.preprocess):
- `lungcrop`: crop to the lungs' bounding box, leaving out the body wall, the table, labels and padding;
- `window`: map the figure's grey levels to a lung window (width 1500 HU, level -600 HU), the window that
  `ladnn.dicom` renders scanner slices with: the median grey of the lungs goes to the window's grey for aerated lung
  (-850 HU) and the median of the rest of the body to its grey for soft tissue (+40 HU), linearly, clipped.
The HU values are textbook figures, not fitted to any dataset."""
from __future__ import annotations

import numpy as np

VERSION = 1  # bumped whenever the mask or a step changes (the image cache's key)
WINDOW_WIDTH, WINDOW_LEVEL = 1500.0, -600.0  # the lung window of ladnn.dicom
LUNG_HU, TISSUE_HU = -850.0, 40.0  # aerated lung and soft tissue
MIN_LUNG = 0.03  # a lung mask under this share of the image is not trusted: the step leaves the image as it is
MARGIN = 0.04  # the lung crop's margin, as a fraction of the image's side


def window_grey(hu: float) -> float:
    """The grey level (0..255) of `hu` in the lung window."""
    lo = WINDOW_LEVEL - WINDOW_WIDTH / 2
    return float(np.clip((hu - lo) / WINDOW_WIDTH, 0, 1) * 255)


def body_and_lungs(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the body and of the lungs on a grey CT figure (H x W uint8). Otsu's threshold splits dark (air,
    lung) from bright (tissue). Dark regions that reach a corner of the image are the air around the body (a figure
    cropped tight to the chest has its lungs on the edges, so only the corners tell); the lungs are the (at most) two
    largest of the other dark regions after a morphological opening, the second kept when it is at least a fifth of
    the first. The body is everything that is not that outer air."""
    import cv2

    blur = cv2.GaussianBlur(g, (5, 5), 0)
    _, bright = cv2.threshold(blur, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    k = max(3, int(0.01 * min(g.shape)) | 1)
    dark = cv2.morphologyEx((bright == 0).astype(np.uint8), cv2.MORPH_OPEN, np.ones((k, k), np.uint8))
    _, lab, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    h, w = g.shape
    outer = {int(lab[y, x]) for y, x in ((0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1))} - {0}
    inner = [i for i in np.argsort(stats[:, cv2.CC_STAT_AREA])[::-1] if i != 0 and i not in outer][:2]
    if len(inner) == 2 and stats[inner[1], cv2.CC_STAT_AREA] < 0.2 * stats[inner[0], cv2.CC_STAT_AREA]:
        inner = inner[:1]
    return ~np.isin(lab, list(outer)), np.isin(lab, inner)


def lung_crop(rgb: np.ndarray) -> np.ndarray:
    """The input step `lungcrop`: the image cropped to the lungs' bounding box plus MARGIN; unchanged when the lung
    mask covers less than MIN_LUNG of the image."""
    import cv2

    _, lungs = body_and_lungs(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY))
    if lungs.mean() < MIN_LUNG:
        return rgb
    ys, xs = np.nonzero(lungs)
    h, w = lungs.shape
    my, mx = int(MARGIN * h), int(MARGIN * w)
    return rgb[max(0, ys.min() - my):min(h, ys.max() + 1 + my), max(0, xs.min() - mx):min(w, xs.max() + 1 + mx)]


def lung_window(rgb: np.ndarray) -> np.ndarray:
    """The input step `window`: the grey image mapped linearly so that the lungs' median grey becomes the lung
    window's grey for aerated lung and the rest of the body's becomes its grey for soft tissue; unchanged (grey) when
    the lung mask covers less than MIN_LUNG of the image or the two medians are within 10 grey levels."""
    import cv2

    g = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    body, lungs = body_and_lungs(g)
    tissue = body & ~lungs
    if lungs.mean() < MIN_LUNG or not tissue.any():
        return np.repeat(g[..., None], 3, axis=2)
    a, b = float(np.median(g[lungs])), float(np.median(g[tissue]))
    if b - a < 10:
        return np.repeat(g[..., None], 3, axis=2)
    ta, tb = window_grey(LUNG_HU), window_grey(TISSUE_HU)
    out = np.clip(ta + (g.astype(np.float32) - a) * (tb - ta) / (b - a), 0, 255).round().astype(np.uint8)
    return np.repeat(out[..., None], 3, axis=2)
