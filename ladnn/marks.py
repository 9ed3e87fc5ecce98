"""Marks drawn on a CT figure, found and painted out: the input step `unmark` (Config.preprocess) and the detector
that the chapter "New sources" checks against hand labels (ladnn/resources/mark_labels.csv).

A drawn mark is what a figure's author or the viewer software put on the picture: ellipses, arrows, letters, dates,
scale bars. Two rules find it:
- colour: a CT slice is grey, so a connected patch of clearly coloured pixels is drawn (any size from `MIN_COLOUR`
  pixels: the small yellow arrows of D1's RIDER slices count);
- grey strokes: white or black lines a few pixels wide that stand out from their surroundings far more than CT
  texture does (a pixel near the ends of the grey range, differing from the median of its neighbourhood by more
  than `STROKE_CONTRAST`), kept when their connected patch is thin (`MAX_HALF_WIDTH`) and long enough to be a
  stroke or a glyph, and where CT puts no such strokes: on the figure's background, in a corner (panel letters) or
  in a row of glyphs of one height (dates, words). Strokes inside the lungs (most black or white arrows) are missed:
  a rule for them flagged vessels and fissures as often.
The chapter reports the rules' precision and recall against the hand labels."""
from __future__ import annotations

import itertools

import numpy as np

VERSION = 2  # bumped whenever a rule changes: cached images painted out by an older rule are not reused
COLOUR_DIFF = 40  # a pixel is drawn colour when its channels differ by more than this (0..255) ...
MIN_VALUE = 60  # ... and its brightest channel exceeds this
MIN_COLOUR = 12  # a coloured patch of at least this many pixels is a mark (JPEG colour noise makes smaller ones)
STROKE_CONTRAST = 100  # a grey stroke pixel differs from its neighbourhood's median by more than this ...
WHITE, BLACK = 215, 40  # ... and is at least this bright (white strokes) or at most this dark (black strokes)
MAX_HALF_WIDTH = 0.012  # a stroke's patch is at most this thick, as a fraction of the image's shorter side (+1 px)
MIN_EXTENT = 0.03  # and at least this long (its bounding box's longer side), as a fraction of the shorter side
MAX_GLYPH = 0.15  # a glyph of a row of text is at most this tall (fraction of the shorter side) ...
TEXT_GLYPHS = 3  # ... and a row has at least this many
MAX_MARK = 0.3  # a mark on the background is at most this long (fraction of the shorter side)
CORNER = 0.15  # the corners where panel letters sit: this fraction of the width and of the height
DILATE = 2  # pixels added around every mark before painting out (anti-aliased edges)


def colour_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels of clearly coloured patches (at least MIN_COLOUR pixels each), as an H x W bool array."""
    import cv2

    a = rgb.astype(np.int16)
    hi = np.maximum(np.maximum(a[..., 0], a[..., 1]), a[..., 2])
    lo = np.minimum(np.minimum(a[..., 0], a[..., 1]), a[..., 2])
    m = ((hi - lo) > COLOUR_DIFF) & (hi > MIN_VALUE)
    if not m.any():
        return m
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= MIN_COLOUR
    return keep[lab]


def _background(g: np.ndarray, tol: int = 12) -> np.ndarray:
    """The figure's background: the flat fields joined to the image's border (padding, the air around the body, a
    label's box), found by flood-filling from the border pixels within `tol` grey levels of their neighbours."""
    import cv2

    h, w = g.shape
    filled = np.zeros((h + 2, w + 2), np.uint8)
    img = np.ascontiguousarray(g)
    flags = 4 | cv2.FLOODFILL_MASK_ONLY | (1 << 8)
    border = [(x, 0) for x in range(0, w, 4)] + [(x, h - 1) for x in range(0, w, 4)] + \
        [(0, y) for y in range(0, h, 4)] + [(w - 1, y) for y in range(0, h, 4)]
    for x, y in border:
        if not filled[y + 1, x + 1]:
            cv2.floodFill(img, filled, (x, y), 0, tol, tol, flags)
    return filled[1:-1, 1:-1].astype(bool)


def _thin_patches(m: np.ndarray, short: int) -> list[tuple[int, int, int, int, np.ndarray]]:
    """The connected patches of `m` thin enough to be strokes and long enough to be a glyph: (x, y, width, height,
    the patch's mask within its box)."""
    import cv2

    m8 = m.astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m8, connectivity=8)
    dist = cv2.distanceTransform(m8, cv2.DIST_L2, 3)
    out = []
    for i in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[i])
        if max(bw, bh) < MIN_EXTENT * short or area < 6:
            continue
        sl = lab[y:y + bh, x:x + bw] == i
        if dist[y:y + bh, x:x + bw][sl].max() <= MAX_HALF_WIDTH * short + 1:
            out.append((x, y, bw, bh, sl))
    return out


def _text_lines(patches: list, short: int) -> set[int]:
    """Indices of patches that stand in a row of at least TEXT_GLYPHS glyphs of one height (a date, a word, an
    overlay's text): tops and heights within a fifth of the height (2 px at least), gaps under 1.5 heights."""
    glyphs = [(i, x, y, bw, bh) for i, (x, y, bw, bh, _) in enumerate(patches) if bh <= MAX_GLYPH * short]
    out: set[int] = set()
    for i, x, y, bw, bh in glyphs:
        tol = max(2, 0.2 * bh)
        row = sorted((x2, x2 + w2, j) for j, x2, y2, w2, h2 in glyphs if abs(y2 - y) <= tol and abs(h2 - bh) <= tol)
        run = [row[0]]
        for prev, cur in itertools.pairwise(row):
            run = run + [cur] if cur[0] - prev[1] <= 1.5 * bh else [cur]
            if len(run) >= TEXT_GLYPHS and any(j == i for *_, j in run):
                out.update(j for *_, j in run)
    return out


def grey_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels of thin white or black strokes that stand out from their neighbourhood (see the module's docstring):
    glyphs on the figure's background (a flat field joined to the border; half of its surround is enough in a
    corner, where panel letters sit in their boxes) and rows of glyphs of one height (dates, words), as an H x W bool
    array."""
    import cv2

    g = np.asarray(rgb, np.uint8)
    g = cv2.cvtColor(g, cv2.COLOR_RGB2GRAY) if g.ndim == 3 else g
    h, w = g.shape
    short = min(h, w)
    k = max(9, int(0.08 * short) | 1)
    diff = g.astype(np.int16) - cv2.medianBlur(g, min(k, 255)).astype(np.int16)
    field = np.pad(_background(g), 3)
    out = np.zeros_like(g, bool)
    for m in (((diff > STROKE_CONTRAST) & (g >= WHITE)), ((diff < -STROKE_CONTRAST) & (g <= BLACK))):
        if not m.any():
            continue
        patches = _thin_patches(m, short)
        text = _text_lines(patches, short)
        for i, (x, y, bw, bh, sl) in enumerate(patches):
            box = np.pad(sl, 3)
            ring = cv2.dilate(box.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~box
            share = float(field[y:y + bh + 6, x:x + bw + 6][ring].mean())
            corner = (x < CORNER * w or x + bw > (1 - CORNER) * w) and (y < CORNER * h or y + bh > (1 - CORNER) * h)
            size = max(bw, bh) / short  # the body's outline is long; letters and arrows are short
            if i in text or (share >= 0.8 and size <= MAX_MARK) or (corner and share >= 0.5 and size <= MAX_GLYPH):
                out[y:y + bh, x:x + bw] |= sl
    return out


def mark_mask(rgb: np.ndarray, dilate: int = DILATE, grey: bool = True) -> np.ndarray:
    """Every drawn mark of an RGB image (colour patches and, with `grey`, grey strokes), grown by `dilate` pixels,
    as an H x W bool array."""
    import cv2

    m = colour_mask(rgb)
    if grey:
        m |= grey_mask(rgb)
    if dilate and m.any():
        m = cv2.dilate(m.astype(np.uint8), np.ones((2 * dilate + 1,) * 2, np.uint8)) > 0
    return m


def paint_out(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with the pixels of `mask` filled in from their surroundings (Telea's method, OpenCV)."""
    import cv2

    if not mask.any():
        return rgb
    return cv2.inpaint(np.ascontiguousarray(rgb, dtype=np.uint8), mask.astype(np.uint8), 5, cv2.INPAINT_TELEA)


def unmark(rgb: np.ndarray) -> np.ndarray:
    """The input step `unmark`: every mark that `mark_mask` finds painted out."""
    return paint_out(rgb, mark_mask(rgb))
