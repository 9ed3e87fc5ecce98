"""Annotation marks on the figures, measured: which images carry drawn marks (`ladnn.marks`: colour patches and
grey strokes), how well that detector agrees with hand labels, how much of a Grad-CAM++ map falls on the marks, and
how the COVID score changes when they are painted out (OpenCV's `inpaint`) beside a control patch of the same area
painted out elsewhere in the lung field."""
from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ladnn import lung
from ladnn import marks as detector
from ladnn.images import decode, read_bytes
from ladnn.metrics import resample_weights
from ladnn.report import METHOD_NAMES, resource
from ladnn.scores import PRED

LABELS_CSV = "mark_labels.csv"  # package data: the hand-labelled sample (how it was made: `hand_labels`)
# The columns of `marks_effect` beside the image's COVID probability as is (PRED.p_covid)
PAINTED = PRED.p_covid + "_painted_out"  # with the marks painted out
CONTROL = PRED.p_covid + "_control"  # with a patch of the same area painted out elsewhere in the lung field
RULES = {"colour": "colour patches", "grey": "grey strokes", "marked": "either (the detector)",
         "old_rule": "the old colour rule (at commit 4d8f8d4)"}


def old_rule(rgb: np.ndarray) -> bool:
    """The colour rule of 4d8f8d4, kept to show what it missed: channels differing by more than 60, the brightest
    above 80, on at least 0.2% of the image."""
    a = rgb.astype(np.int16)
    return bool((((a.max(axis=2) - a.min(axis=2)) > 60) & (a.max(axis=2) > 80)).mean() >= 0.002)


def mark_mask(rgb: np.ndarray, dilate: int = detector.DILATE) -> np.ndarray:
    """Every drawn mark that `ladnn.marks` finds, grown by `dilate` pixels."""
    return detector.mark_mask(rgb, dilate)


def mark_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per image of a sample table: its colour-mark share of the image, whether the colour rule, the grey-stroke rule
    and either of them (`marked`) find a mark, and whether 4d8f8d4's rule did."""
    rows = []
    for p in table["image"]:
        rgb = np.asarray(decode(read_bytes(p)).convert("RGB"))
        c, g = detector.colour_mask(rgb), detector.grey_mask(rgb)
        rows.append({"mark_share": float(c.mean()), "colour": bool(c.any()), "grey": bool(g.any()),
                     "old_rule": old_rule(rgb)})
    out = pd.concat([table[["name", "image", "dataset", "covid", "collection"]].reset_index(drop=True),
                     pd.DataFrame(rows)], axis=1)
    out["marked"] = out["colour"] | out["grey"]
    return out


def mark_counts(marks: pd.DataFrame) -> pd.DataFrame:
    """Images the detector finds marks on, per dataset, collection and class, with the colour and grey rules apart."""
    short = marks["collection"].str.removeprefix("D1:").str.split("_").str[-1]  # "...cancer_RIDER-Lung-CT" -> RIDER
    k = marks.assign(cls=marks["covid"].map({1: "COVID", 0: "non-COVID"}), collection=short)
    g = k.groupby(["dataset", "collection", "cls"])
    out = pd.DataFrame({"images": g.size(), "colour marks": g["colour"].sum(), "grey strokes": g["grey"].sum(),
                        "any mark": g["marked"].sum()})
    out["share"] = out["any mark"] / out["images"]
    out.index = out.index.set_names(["dataset", "collection", "class"])
    return out


def hand_labels(table: pd.DataFrame, sample: str | None = "held-out") -> pd.DataFrame:
    """The hand-labelled images (ladnn/resources/mark_labels.csv) of one `sample` (None: both) with each image's path
    from `table` (D0+D1).

    How they were made. Two samples, each drawn at random (pandas `sample`) within strata of class and collection:
    - "development" (seed 43, 120 images): D0's COVID figures (30), MedPix (25) and crawled figures (25), D1's COVID
      article (16), RIDER (15) and CPTAC-LSCC (all 9). The grey-stroke rules were revised after its misses were seen,
      so its scores flatter the detector.
    - "held-out" (seed 44, 111 images, none of the first): the same strata without CPTAC-LSCC, whose 9 images the
      first sample took. Drawn after the detector's rules were frozen (ladnn.marks.VERSION 2) and scored once.
    Each image was copied under a neutral id, hiding its class and collection, and viewed one by one, enlarged, by AI
    assistants (about 30 images each) told what counts as a drawn mark (arrows, outlines, letters, dates, text, scale
    bars, of any colour; not anatomy, tubes, leads or padding) and not to run any image analysis; none saw the
    detector's output. They marked the calls they were unsure of (column `confidence`)."""
    lab = pd.read_csv(resource(LABELS_CSV), dtype={"colours": str, "kinds": str, "notes": str},
                      keep_default_na=False)
    if sample is not None:
        lab = lab[lab["sample"] == sample].reset_index(drop=True)
    missing = sorted(set(lab["name"]) - set(table["name"]))
    if missing:
        raise ValueError(f"{LABELS_CSV}: {len(missing)} labelled images are not in the table, e.g. {missing[:3]}")
    return lab.merge(table[["name", "image"]], on="name", how="left", validate="1:1")


def detector_check(labels: pd.DataFrame, found: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Precision and recall of each rule of `mark_table` (`found`) against the hand labels, image by image, each
    with a 95% interval that resamples whole papers or patients (the linked groups of `ladnn.sources`, drawn within
    each labelled class)."""
    from ladnn.data import load_table
    from ladnn.sources import linked_groups

    k = labels.rename(columns={"marked": "hand"}).merge(
        found.drop(columns=["image", "dataset", "covid", "collection"]), on="name", validate="1:1")
    full = load_table("D0+D1")
    groups = linked_groups(full).set_axis(full["name"]).loc[k["name"]].to_numpy()
    y = k["hand"].astype(bool).to_numpy()
    w = resample_weights(y, groups, n_boot, seed)
    rows = []
    for rule, name in RULES.items():
        f = k[rule].to_numpy(bool)
        tp, fp, fn = (f & y), (f & ~y), (~f & y)
        prec = (w @ tp) / np.maximum(w @ (tp | fp), 1e-12)
        rec = (w @ tp) / np.maximum(w @ (tp | fn), 1e-12)
        rows.append({"rule": name, "found": int(f.sum()), "true marks found": int(tp.sum()),
                     "false alarms": int(fp.sum()), "marks missed": int(fn.sum()),
                     "precision": tp.sum() / max(f.sum(), 1), "precision lo": np.percentile(prec, 2.5),
                     "precision hi": np.percentile(prec, 97.5), "recall": tp.sum() / max(y.sum(), 1),
                     "recall lo": np.percentile(rec, 2.5), "recall hi": np.percentile(rec, 97.5)})
    out = pd.DataFrame(rows).set_index("rule")
    out.attrs.update(images=len(k), marked=int(y.sum()), groups=len(np.unique(groups)))
    return out


def check_for_page(check: pd.DataFrame) -> pd.DataFrame:
    """`detector_check` as the page shows it: counts, and precision and recall each with its interval in one cell."""
    out = check[["found", "true marks found", "false alarms", "marks missed"]].copy()
    for m in ("precision", "recall"):
        out[f"{m} [95%]"] = [f"{r[m]:.2f} [{r[m + ' lo']:.2f}, {r[m + ' hi']:.2f}]" for _, r in check.iterrows()]
    return out


def missed_kinds(labels: pd.DataFrame, found: pd.DataFrame) -> pd.DataFrame:
    """Hand-labelled marked images by the colour of their marks (coloured, or grey only) and whether the detector
    found them."""
    k = labels[labels["marked"] == 1].merge(found[["name", "marked"]], on="name", suffixes=("", "_found"))
    grey_only = k["colours"].str.split(";").map(lambda c: set(c) <= {"white", "black", "grey"})
    kind = np.where(grey_only, "grey marks only", "coloured marks")
    found_by = k["marked_found"].map({True: "found", False: "missed"}).rename("detector")
    return pd.crosstab(pd.Series(kind, name="hand label"), found_by).reindex(columns=["found", "missed"], fill_value=0)


def detector_sentence(check: pd.DataFrame, kinds: pd.DataFrame) -> str:
    """`detector_check` and `missed_kinds` in words."""
    d, o = check.loc[RULES["marked"]], check.loc[RULES["old_rule"]]
    a = check.attrs
    out = (f"Against the {a['images']} hand-labelled images of the held-out sample ({a['marked']} with a drawn mark; "
           f"{a['groups']} clusters: papers, or patients where the records name them), the detector finds marks on {int(d['found'])}: precision "
           f"{d['precision']:.2f} (95% interval {d['precision lo']:.2f} to {d['precision hi']:.2f}), recall "
           f"{d['recall']:.2f} ({d['recall lo']:.2f} to {d['recall hi']:.2f}); the intervals are wide because whole "
           f"papers and collections are drawn, and D1's are a few large ones. The old colour rule (the chapter's until "
           f"commit 4d8f8d4) had recall {o['recall']:.2f}.")
    for kind in kinds.index:
        f, m = int(kinds.loc[kind, "found"]), int(kinds.loc[kind, "missed"])
        out += f" Images with {kind}: {f} of {f + m} found."
    return out + " An image the detector calls clean may still carry a grey mark."


def painted_out(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with `mask` filled in from its surroundings (`ladnn.marks.paint_out`)."""
    return detector.paint_out(rgb, mask)


def control_mask(rgb: np.ndarray, mask: np.ndarray, lungs: np.ndarray | None = None) -> np.ndarray:
    """The marks' shape moved, unwrapped, to where as much of it as possible lies in the lung field
    (`ladnn.lung.body_and_lungs`) without touching the marks: the same area painted out over lung instead of over the
    marks, a control matched for content. Ties go to the smallest move. `lungs`: the lung mask when the caller has it."""
    import cv2

    if lungs is None:
        _, lungs = lung.body_and_lungs(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY))
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return mask
    h, w = mask.shape
    keep_off = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    step = max(2, min(h, w) // 40)
    best, best_key = None, None
    for dy in range(-int(ys.min()), h - int(ys.max()), step):
        for dx in range(-int(xs.min()), w - int(xs.max()), step):
            yy, xx = ys + dy, xs + dx
            if keep_off[yy, xx].any():
                continue
            key = (float(lungs[yy, xx].mean()), -(dy * dy + dx * dx))
            if best_key is None or key > best_key:
                best, best_key = (yy, xx), key
    out = np.zeros_like(mask, bool)
    if best is not None:
        out[best] = True
    return out


def marks_effect(run: str, rows: pd.DataFrame) -> pd.DataFrame:
    """For each image of `rows` (marked images of a sample table): the COVID probability as is (PRED.p_covid), with
    the marks painted out (PAINTED) and with the control painted out (CONTROL: the same area moved into the lung field,
    `control_mask`), the share of the COVID Grad-CAM++ map's mass on the marks, the marks' share of the image (the
    mass a map spread evenly would put there) and the share of the control in the lung field. Scored through the
    run's own path (`Predictor`)."""
    import cv2
    import torch
    from PIL import Image

    from ladnn.predict import Predictor

    pr = Predictor(run, onnx=False)  # a few images: no ONNX export
    if {"crop", "lungcrop"} & set(pr.config.preprocess):
        raise ValueError(f"{run}: marks are located on the uncropped image; a run with a crop step is not supported")
    out = []
    for name, path in zip(rows["name"], rows["image"]):
        rgb = np.asarray(decode(read_bytes(path)).convert("RGB"))
        mask = mark_mask(rgb)
        _, lungs = lung.body_and_lungs(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        control = control_mask(rgb, mask, lungs)
        xs = []
        for img in (rgb, painted_out(rgb, mask), painted_out(rgb, control)):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, "PNG", compress_level=1)  # lossless: the same pixels, fastest level
            xs.append(pr.preprocess(buf.getvalue(), name)[1])
        p = pr.probs(torch.cat(xs))[:, 0]
        cam = pr.cam_maps(xs[0], [0])[0, 0]
        m = cv2.resize(mask.astype(np.uint8), cam.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
        out.append({PRED.image: name, PRED.p_covid: float(p[0]), PAINTED: float(p[1]), CONTROL: float(p[2]),
                    "cam_share_on_marks": float(cam[m].sum() / max(cam.sum(), 1e-12)), "mark_area": float(m.mean()),
                    "control_in_lung": float(lungs[control].mean()) if control.any() else np.nan})
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


def run_effects(runs: pd.Series, marks: pd.DataFrame, table: pd.DataFrame, rule: str = "marked"
                ) -> dict[str, pd.DataFrame]:
    """`marks_effect` of each method's run in `runs` (a row of `ladnn.report.maps.first_runs`: method -> run path,
    baseline then LA-DNN) on the D0 images of `marks` (`mark_table`) on which `rule` (a column: `marked`, `colour`
    or `grey`) finds marks, each image with its split in `table` (column `split`)."""
    marked = marks[marks[rule] & (marks["dataset"] == "D0")]
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


def effect_figure(effect: pd.DataFrame, title: str = "LA-DNN, D0 images with drawn marks") -> Figure:
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
    """What the detector found per class (`mark_counts` of `marks`) and how many of the images of `effect`
    (`run_effects`, column `split`) the runs trained on. It claims no link between marks and labels beyond the
    counts: the detector misses most grey marks (`detector_check`)."""
    cnt = mark_counts(marks).groupby(["dataset", "class"])[["images", "colour marks", "any mark"]].sum()
    parts = [f"{d} {c}: {int(r['any mark'])} of {int(r['images'])} ({int(r['colour marks'])} with colour)"
             for (d, c), r in cnt.iterrows()]
    split = effect["split"].to_numpy()
    return (f"Images the detector finds marks on: {'; '.join(parts)}. A mark is not a label here: D1's RIDER "
            "negatives carry yellow arrows too, and MedPix and the crawled negatives carry grey arrows and letters, "
            "which the detector finds only in part. "
            f"{int((split == 'train').sum())} of the {len(split)} D0 images painted out above are training images of the runs, "
            "and painting marks out of a model trained with them cannot show what the marks did during training: "
            "the retrained runs (`unmark`) answer that.")
