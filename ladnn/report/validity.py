"""The Validity chapter: the leakage checks of `ladnn.report.leakage` in words, the near-duplicate figure, the file
metadata by class, runs re-scored on clean and format-balanced test sets and on the new sources (D1), the ablation
table and the variation from seeds alone. Every sentence whose words depend on a number (rises or falls, one or
several) is written here from that number."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pandas.io.formats.style import Styler

from ladnn.images import decode, read_bytes
from ladnn.metrics import mean_ci
from ladnn.report import METHOD_NAMES, fmt_ci, paper_table, plural, recipe
from ladnn.report.leakage import (
    clean_test,
    cross_split,
    near_duplicates,
    plain_aucs,
    reencode,
    subset_auc,
)
from ladnn.rundir import FinishedRun

SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------- words that follow the numbers
def verb(n: int, one: str, many: str) -> str:
    """The verb form for a count: `one` for 1, else `many` ('is'/'are', 'involves'/'involve')."""
    return one if n == 1 else many


def moves(before: float, after: float, digits: int = 3) -> str:
    """'rises from 0.870 to 0.876', 'falls from 0.870 to 0.835' or 'stays at 0.870', at the rounding shown."""
    a, b = round(before, digits), round(after, digits)
    if a == b:
        return f"stays at {a:.{digits}f}"
    return f"{'rises' if b > a else 'falls'} from {a:.{digits}f} to {b:.{digits}f}"


def span(before: float, after: float, digits: int = 3) -> str:
    """'from 0.870 to 0.876', or 'unchanged at 0.870' when the two agree at the rounding shown."""
    a, b = round(before, digits), round(after, digits)
    return f"unchanged at {a:.{digits}f}" if a == b else f"from {a:.{digits}f} to {b:.{digits}f}"


def points(delta: float, against: str) -> str:
    """A difference in AUC points in words: '0.5 points above LA-DNN's mean', '0.1 points below ...', or 'the same
    as ...' when it rounds to 0.0."""
    d = round(100 * delta, 1)
    if d == 0:
        return f"the same as {against}"
    return f"{abs(d):.1f} points {'above' if d > 0 else 'below'} {against}"


def signed(x: float, digits: int = 1) -> str:
    """'+2.5', '-1.0', or '0.0' when it rounds to zero (no sign on a zero)."""
    r = round(x, digits)
    return f"{0.0:.{digits}f}" if r == 0 else f"{r:+.{digits}f}"


def _directions(change: pd.Series, digits: int = 3) -> tuple[int, int, int]:
    """How many of the changes are rises, falls and none, at the rounding shown."""
    c = change.round(digits)
    return int((c > 0).sum()), int((c < 0).sum()), int((c == 0).sum())


def _direction_clause(change: pd.Series, what: str = "run") -> str:
    """'rises for every run', 'falls for every run', or 'rises for 2, falls for 3 and stays for 1 of the 6 runs'."""
    up, down, same = _directions(change)
    n = len(change)
    if up == n:
        return f"rises for every {what}" if n > 1 else f"rises for the one {what}"
    if down == n:
        return f"falls for every {what}" if n > 1 else f"falls for the one {what}"
    if same == n:
        return f"does not change for any {what}"
    parts = [f"{w} for {k}" for w, k in (("rises", up), ("falls", down), ("stays", same)) if k]
    return f"{', '.join(parts[:-1])} and {parts[-1]} of the {plural(n, what)}"


# ---------------------------------------------------------------- tables for the page
def show(t: pd.DataFrame, digits: int = 3, caption: str | None = None, index: bool = True) -> Styler:
    """A table for the page: floats to `digits` decimals, no row numbers unless the index means something."""
    s = t.style.format(precision=digits, na_rep="")
    if not index:
        s = s.hide(axis="index")
    return s.set_caption(caption) if caption else s


def _run_index(t: pd.DataFrame) -> list[str]:
    """The columns that tell runs apart: backbone and dataset where there are several, then method and seed."""
    return [c for c in ("backbone", "dataset") if c in t and t[c].nunique() > 1] + ["method", "seed"]


def run_caption(t: pd.DataFrame, what: str) -> str:
    """A caption for `per_run`: `what`, then the backbone and dataset when every run shares them."""
    fixed = [str(t[c].iloc[0]) for c in ("backbone", "dataset") if c in t and t[c].nunique() == 1]
    return f"{what}: {' on '.join(fixed)}" if fixed else what


def per_run(t: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Runs (of `rescored` or `new_source_table`) for the page: the chosen columns renamed, one row per run, then
    a 'mean' row per method over its seeds; constant backbone and dataset columns are left out (`run_caption`
    names them)."""
    t = t.assign(method=t["method"].map(lambda m: METHOD_NAMES.get(m, m)))
    keys = _run_index(t)
    num = [c for c in columns if pd.api.types.is_numeric_dtype(t[c])]
    rows = []
    for k, g in t.groupby(keys[:-1], sort=False):
        rows.append(g[keys + list(columns)])
        mean = g[num].mean().to_dict()
        mean.update(dict(zip(keys[:-1], k if isinstance(k, tuple) else (k,))), seed="mean")
        rows.append(pd.DataFrame([mean]))
    out = pd.concat(rows, ignore_index=True).astype({"seed": str})
    return out.set_index(keys)[list(columns)].rename(columns=columns)


# ---------------------------------------------------------------- 1. leakage: patients and sources
def split_crossings(df: pd.DataFrame) -> str:
    """How many patient ids and source documents occur in more than one split (`leakage.cross_split`), in words."""
    patients, sources = cross_split(df, "patient"), cross_split(df, "source")
    p = (f"{plural(len(patients), 'patient id')} {verb(len(patients), 'occurs', 'occur')} in more than one split"
         if len(patients) else "No patient id occurs in more than one split")
    if not len(sources):
        return p + ", and no source document (the paper whose figures an image was cut from) has images in more than one."
    n_test = int(sources["test"].sum()) if "test" in sources else 0
    return (f"{p}, but {plural(len(sources), 'source document')} (the paper whose figures an image was cut from, "
            f"read from the file-name prefix) {verb(len(sources), 'has', 'have')} images in more than one split, "
            f"{plural(n_test, 'test image')} among them. The table counts their images per split.")


def crossing_table(df: pd.DataFrame) -> pd.DataFrame:
    """The source documents found in more than one split, with their images per split (train, val, test)."""
    t = cross_split(df, "source")
    t = t[[s for s in SPLITS if s in t]]
    t.index.name, t.columns.name = "source document", "images in"
    return t


# ---------------------------------------------------------------- 1. leakage: near-duplicates
def nearest_counts(dist: np.ndarray, head: int = 16) -> dict[int, int]:
    """Images by the distance (bits) to their nearest other image, for the `head` smallest distances."""
    d = dist.copy()
    np.fill_diagonal(d, 10 ** 6)
    return pd.Series(d.min(1)).value_counts().sort_index().head(head).to_dict()


def nearest_table(dist: np.ndarray) -> pd.DataFrame:
    """`nearest_counts` as a one-row table: a column per distance (bits) to an image's nearest other image."""
    counts = nearest_counts(dist)
    t = pd.DataFrame([list(counts.values())], columns=pd.Index(list(counts), name="nearest other image (bits)"),
                     index=["images"])
    return t


def near_duplicate_figure(df: pd.DataFrame, dist: np.ndarray, distances=range(7), per_distance: int = 2) -> Figure:
    """For each distance, the first `per_distance` pairs (in table order) of images in different splits, two pairs
    to a row; distances without such a pair are named in the title instead of leaving an empty row."""
    split = df["split"].to_numpy()
    iu = np.triu_indices_from(dist, 1)
    cross = split[iu[0]] != split[iu[1]]
    pairs, empty = [], []
    for d in distances:
        hit = np.where((dist[iu] == d) & cross)[0]
        (pairs.extend((d, len(hit), iu[0][k], iu[1][k]) for k in hit[:per_distance]) if len(hit) else empty.append(d))
    rows = max(1, -(-len(pairs) // 2))
    fig = plt.figure(figsize=(8, 2.1 * rows + (0.4 if empty else 0)))
    plt.close(fig)  # not an open pyplot figure: it shows once, where the notebook displays it
    # two pairs to a row, with a gap between the pairs: columns 0-1 and 3-4, column 2 left empty
    ax = fig.subplots(rows, 5, squeeze=False, gridspec_kw={"width_ratios": [1, 1, 0.12, 1, 1]})
    for a in ax.flat:
        a.axis("off")
    for a in ax[:, 2]:
        fig.delaxes(a)
    for p, (d, n, i, j) in enumerate(pairs):
        for q, k in enumerate((i, j)):
            a = ax[p // 2, 3 * (p % 2) + q]
            a.imshow(decode(read_bytes(df["image"].iloc[k])))
            cls = "COVID" if df["covid"].iloc[k] else "non-COVID"
            a.set_title(f"d = {d} bits, {plural(n, 'pair')}\n{df['split'].iloc[k]}, {cls}" if q == 0 else
                        f"{df['split'].iloc[k]}, {cls}", fontsize=11, loc="left")
    if empty:
        fig.suptitle(f"no cross-split pair at {'distance' if len(empty) == 1 else 'distances'} "
                     f"{', '.join(map(str, empty))} (bits)", fontsize=11)
    fig.tight_layout()
    return fig


def _origins(df: pd.DataFrame, dist: np.ndarray, distances) -> list[dict]:
    """Per distance with cross-split pairs: how many pairs, how many share a source document, how many come from
    two documents (both of known origin), how many have an image of unrecorded origin."""
    split, source = df["split"].to_numpy(), df["source"].to_numpy()
    known_origin = (df["patient"].to_numpy() != "") | (source != "")
    iu = np.triu_indices_from(dist, 1)
    cross = split[iu[0]] != split[iu[1]]
    out = []
    for d in distances:
        k = np.where((dist[iu] == d) & cross)[0]
        if not len(k):
            continue
        i, j = iu[0][k], iu[1][k]
        known = known_origin[i] & known_origin[j]
        same_src = (source[i] == source[j]) & (source[i] != "")
        out.append({"distance (bits)": d, "pairs": len(k), "one document": int(same_src.sum()),
                    "two documents": int((known & ~same_src).sum()), "origin unknown": int((~known).sum())})
    return out


def hash_origins(df: pd.DataFrame, dist: np.ndarray, distances=range(7)) -> pd.DataFrame:
    """The figure's pairs read by file names and metadata: a row per distance with its cross-split pairs, how many
    come from one source document, from two, and with an image of unrecorded origin."""
    return pd.DataFrame(_origins(df, dist, distances))


def hash_reading(df: pd.DataFrame, dist: np.ndarray, threshold: int, distances=range(7)) -> str:
    """What `hash_origins` says of the chosen `threshold`, in words."""
    rows = _origins(df, dist, distances)
    if not rows:
        return "No pair of images in different splits lies within the distances shown."
    mixed = sum(r["two documents"] for r in rows if r["distance (bits)"] <= threshold)
    at = f"At or below the chosen threshold of {plural(threshold, 'bit')}"
    return ((f"{at}, no cross-split pair of known origin comes from two different documents."
             if not mixed else
             f"{at}, {plural(mixed, 'cross-split pair')} of known origin {verb(mixed, 'comes', 'come')} from two "
             "different documents: look-alikes, or a figure that two papers share.")
            + " A hash distance alone cannot tell a copy from two similar slices, so the clean test subset below "
              "also drops every test image whose source document has training images.")


def threshold_counts(df: pd.DataFrame, hashes: list, thresholds=(0, 1, 2, 3, 4, 6, 8, 10)) -> pd.DataFrame:
    """Per threshold (a column each): the cross-split near-duplicate pairs (`leakage.near_duplicates`) and the test
    images that the clean subset (`clean_subset`) would keep."""
    pairs = near_duplicates(df, hashes, max(thresholds))  # the distances once; each threshold keeps the nearer
    dups = [pairs[pairs["distance"] <= t] for t in thresholds]
    return pd.DataFrame([[len(d) for d in dups], [len(clean_subset(df, d)) for d in dups]],
                        index=["cross-split pairs", "clean test images"],
                        columns=pd.Index(list(thresholds), name="threshold (bits)"))


def duplicates_text(dups: pd.DataFrame, threshold: int) -> str:
    """How many near-duplicate pairs (`leakage.near_duplicates`) cross the split, and how many involve training."""
    n = len(dups)
    train = int(((dups["split_a"] == "train") | (dups["split_b"] == "train")).sum())
    within = f"at most {plural(threshold, 'bit')} apart (the chosen threshold)"
    if not n:
        return f"No pair of images in different splits is {within}."
    if n == 1:
        return (f"1 pair of images in different splits is {within}; it "
                + ("involves a training image." if train else "involves no training image."))
    return (f"{n} pairs of images in different splits are {within}; {train} of them "
            f"{verb(train, 'involves', 'involve')} a training image.")


def duplicates_table(dups: pd.DataFrame, head: int = 20) -> pd.DataFrame:
    """The first `head` near-duplicate pairs for the page: both file names with their splits and the distance."""
    return dups.head(head).rename(columns={"a": "image", "split_a": "split", "b": "near-duplicate",
                                           "split_b": "its split", "distance": "bits"})


def clean_subset(df: pd.DataFrame, dups: pd.DataFrame) -> pd.Series:
    """The names of the test images that nothing leaks into (`leakage.clean_test`)."""
    test = df[df["split"] == "test"]
    return test.loc[clean_test(df, dups), "name"]


def clean_text(df: pd.DataFrame, dups: pd.DataFrame) -> str:
    """The size of the clean test subset (`clean_subset`) against the test split's, in words."""
    n, total = len(clean_subset(df, dups)), int((df["split"] == "test").sum())
    return (f"The clean test subset keeps {n} of the {plural(total, 'test image')} "
            f"({plural(total - n, 'image')} removed).")


def clean_sentence(leak: pd.DataFrame, n_test: int, name: str = "clean subset") -> str:
    """What the re-scoring on the clean subset (`rescored`) shows: the direction of the AUC change per run and per
    method (mean over seeds), and what that direction means."""
    before, after = leak["AUC (all test)"], leak[f"AUC ({name})"]
    n = int(leak[f"n ({name})"].iloc[0])
    if after.isna().all():
        return f"The {name} holds one class only, so it has no AUC."
    change = after - before
    _, down, _ = _directions(change)
    means = by_recipe(leak, ["AUC (all test)", f"AUC ({name})"])
    per_method = "; ".join(f"{m} {moves(r.iloc[0], r.iloc[1])}" for (_, m), r in means.iterrows())
    lead = f"Scored on the {name}, the AUC {_direction_clause(change)} (mean over seeds: {per_method}). "
    if down == len(change):
        meaning = ("Leaving out the test images that training may have seen (near copies, or figures from the same "
                   "paper) lowers the AUC, so part of the full test split's AUC came from them.")
    elif not down:
        meaning = ("Leaving out the test images that training may have seen (near copies, or figures from the same "
                   "paper) does not lower the AUC, so they did not inflate the full test split's AUC here.")
    else:
        meaning = "The runs move in different directions, so this check shows no consistent effect of leakage."
    small = (f" With only {plural(n_test - n, 'image')} removed, the subset can move the AUC only a little either "
             "way." if n_test - n < 0.1 * n_test else "")
    return lead + meaning + small


# ---------------------------------------------------------------- 2. shortcuts: file metadata
def metadata_tables(df: pd.DataFrame, meta: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """File metadata (`leakage.image_meta`) by class: images per file format, per colour mode, and the median
    width, height and file size."""
    cls = df["covid"].map({1: "COVID", 0: "non-COVID"})
    return (pd.crosstab(meta["format"], cls), pd.crosstab(meta["mode"], cls),
            meta.groupby(cls)[["width", "height", "file_kb"]].median().round(1))


def metadata_summary(df: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """`metadata_tables` as one table for the page: a row per file format and colour mode (images and share of the
    class) and per median size, a column per class."""
    fmt, mode, size = metadata_tables(df, meta)
    rows = {}
    for label, t in (("format", fmt), ("colour mode", mode)):
        share = t / t.sum()
        for v in t.index:
            rows[f"{label} {v}"] = {c: f"{t.loc[v, c]} ({100 * share.loc[v, c]:.0f}%)" for c in t.columns}
    for k, unit in (("width", "px"), ("height", "px"), ("file_kb", "kB")):
        name = "file size" if k == "file_kb" else k
        rows[f"median {name}"] = {c: f"{size.loc[c, k]:g} {unit}" for c in size.index}
    out = pd.DataFrame(rows).T
    out.columns.name = None
    return out


_FEATURE_NAMES = {"format": "file format", "mode": "colour mode", "file_kb": "file size", "aspect": "aspect ratio"}


def metadata_sentence(mc: dict) -> str:
    """What the metadata classifier (`leakage.metadata_classifier`) reaches, in words."""
    names = []
    for f in mc["features"]:
        name = _FEATURE_NAMES.get(f.split("_")[0] if f.startswith(("format_", "mode_")) else f, f)
        if name not in names:
            names.append(name)
    return (f"A classifier that sees only file metadata ({', '.join(names)}), trained on the "
            f"{mc['n_train']} training images, reaches a test AUC of {mc['test_auc']:.3f} on {mc['n_test']} test "
            "images.")


def png_test(df: pd.DataFrame, meta: pd.DataFrame) -> pd.Series:
    """The names of the test images stored as PNG: the format-balanced test subset."""
    test = df[df["split"] == "test"]
    return test.loc[meta.loc[test.index, "format"] == "PNG", "name"]


def by_recipe(t: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Means over seeds per backbone and method."""
    return t.groupby(["backbone", "method"])[cols].mean().round(3)


def rescored(runs: pd.DataFrame, subsets: dict[str, pd.Series], reencoded: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each run's test AUC on the whole test split and on named subsets of it (image names); with `reencoded` (the
    test table), also the plain view's AUC (no test-time views) on the images as stored and with every image
    re-encoded as JPEG, so that the two differ only in the encoding."""
    if reencoded is not None:  # the same bytes for every run: read and re-encode each image once
        stored = [(read_bytes(f), f) for f in reencoded["image"]]
        aucs = plain_aucs(list(runs["path"]), [stored, [(reencode(b), f) for b, f in stored]], reencoded["covid"])
    rows = []
    for k, (_, r) in enumerate(runs.iterrows()):
        row = {"backbone": r["backbone"], "dataset": r["dataset"], "method": METHOD_NAMES[r["method"]],
               "seed": r["seed"], "AUC (all test)": r["auc"]}
        pred = FinishedRun(r["path"]).predictions
        for name, names in subsets.items():
            s = subset_auc(pred, names)
            row[f"AUC ({name})"], row[f"n ({name})"] = s["auc"], s["n"]
        if reencoded is not None:
            row["AUC (plain view, as stored)"], row["AUC (all re-encoded as JPEG)"] = (a["auc"] for a in aucs[k])
        rows.append(row)
    return pd.DataFrame(rows)


def shortcut_sentence(mc: dict, short: pd.DataFrame, name: str = "PNG-only test") -> str:
    """What the PNG-only subset and re-encoding (`rescored` with both) do to our models' AUC, per run and on
    average, next to what metadata alone reach, with the direction of each change in words."""
    all_test, sub = short["AUC (all test)"], short[f"AUC ({name})"]
    stored, jpeg = short["AUC (plain view, as stored)"], short["AUC (all re-encoded as JPEG)"]
    n = int(short[f"n ({name})"].iloc[0])
    ours = (f"Metadata alone reach a test AUC of {mc['test_auc']:.3f}; our models, averaged over all runs, reach "
            f"{all_test.mean():.3f}. ")
    png = (f"On the {plural(n, 'PNG test image')} the AUC {_direction_clause(sub - all_test)} (mean "
           f"{span(all_test.mean(), sub.mean())}): "
           + ("the models separate PNG images of the two classes at least as well as the whole test split, so their "
              "AUC does not rest on calling JPEG files negative. " if not _directions(sub - all_test)[1] else
              "without the JPEG files the task is harder for them, as it would be if they leaned on the format or "
              "on what comes with it. " if not _directions(sub - all_test)[0] else
              "the runs move in different directions, so the format shows no consistent effect here. "))
    up, down, _ = _directions(jpeg - stored)
    enc = (f"Scored on the plain view, the AUC {_direction_clause(jpeg - stored)} when every test image is re-encoded "
           f"as JPEG (mean {span(stored.mean(), jpeg.mean())}): "
           + ("how an image was stored (its format, or detail that JPEG compression removes) changes the scores, "
              "and storing every image alike lowers the AUC." if not up and down else
              "storing every image alike does not lower the AUC." if not down else
              "the runs move in different directions, so the encoding shows no consistent effect here."))
    return ours + png + enc


# ---------------------------------------------------------------- 5. new sources (D1)
def new_source_table(runs: pd.DataFrame, detail: bool = False) -> pd.DataFrame:
    """Each run trained on D0 alone, scored on the new images (D1) when it was trained (`metrics.json`,
    `unseen_source`: the whole model with the run's test-time views). Runs trained on D0+D1 are left out: D1's
    training images were part of their training. With `detail`, also the COVID-19 clusters and the exact
    permutation p-value where there are too few clusters for an interval."""
    from ladnn.scores import ClusterTest, at_level

    rows = []
    for _, r in runs[runs["dataset"] == "D0"].iterrows():
        run = FinishedRun(r["path"])
        m = run.metrics.unseen_source
        if not m:
            continue
        ci = m.covid_ci95.auc
        level = at_level(run.unseen_predictions) if run.unseen_predictions is not None else None
        exact = isinstance(level, ClusterTest)  # too few clusters in a class for a bootstrap interval
        if exact:
            interval = (f"none: {plural(level.positive_clusters, 'COVID-19 cluster')}; exact p = {level.p:.3f}")
        else:
            interval = f"{ci[0]:.3f} to {ci[1]:.3f}"
        row = {"backbone": r["backbone"], "method": METHOD_NAMES[r["method"]], "seed": r["seed"],
               "AUC (D0 test)": r["auc"], "AUC (D1, new sources)": m.covid.auc, "95% interval (D1)": interval,
               "accuracy (D1)": m.covid.accuracy, "n": m.covid.n, "collections": m.sources, "patients": m.clusters}
        if detail:
            row.update({"COVID-19 clusters": level.positive_clusters if exact else None,
                        "exact p": level.p if exact else None, "least p": level.least_p if exact else None})
        rows.append(row)
    return pd.DataFrame(rows)


def new_source_view(e: pd.DataFrame) -> pd.DataFrame:
    """`new_source_table` for the page: a row per run and each method's mean, the AUCs and D1's accuracy; the
    interval only where one exists (`new_source_sentence` says why there is none, and gives the set's size)."""
    cols = {"AUC (D0 test)": "AUC, D0 test", "AUC (D1, new sources)": "AUC, D1", "accuracy (D1)": "accuracy, D1"}
    if not e["95% interval (D1)"].astype(str).str.startswith("none").all():
        cols["95% interval (D1)"] = "95% interval, D1"
    return per_run(e.assign(dataset="D0"), cols)


def new_source_sentence(e: pd.DataFrame) -> str:
    """The size of D1 and the mean change in AUC from the D0 test split to D1 (`new_source_table`), in words."""
    if e.empty:
        return "No run of this profile was trained on D0 alone, so none can be scored on D1 as unseen data."
    n, coll, pat = (int(e[c].iloc[0]) for c in ("n", "collections", "patients"))
    d0, d1 = e["AUC (D0 test)"].mean(), e["AUC (D1, new sources)"].mean()
    text = (f"{plural(n, 'image')} of D1 {verb(n, 'is', 'are')} present here, from {plural(coll, 'collection')} "
            f"in {plural(pat, 'resampling cluster')} (patients or source documents). From the D0 test split to D1, the mean AUC over all runs {moves(d0, d1)}. ")
    none = e["95% interval (D1)"].astype(str).str.startswith("none")
    if none.any():
        k = (int(e.loc[none, "COVID-19 clusters"].max()) if "COVID-19 clusters" in e else
             int(re.search(r"(\d+) COVID-19 cluster", e.loc[none, "95% interval (D1)"].iloc[0]).group(1)))
        text += f"D1's COVID-19 images come from {plural(k, 'cluster')}, too few for a bootstrap interval. "
        if "least p" in e:
            least, p = float(e.loc[none, "least p"].min()), float(e.loc[none, "exact p"].min())
            text += (f"The exact permutation test is left: the smallest p-value any ranking of these images could "
                     f"reach is {least:.3f}, and the smallest over these runs is {p:.3f}, "
                     + ("so no AUC on D1 can be told from chance at the 5% level. " if least > 0.05 else
                        "so these AUCs cannot be told from chance at the 5% level. " if p > 0.05 else
                        "below the 5% level. "))
    return text + "Expect a change whenever the scanner, the hospital or the way images were exported changes."


# ---------------------------------------------------------------- 3. ablations and 4. seeds
def _changed(cfg: dict, ref: dict) -> list[str]:
    """The Config fields (seed and method aside) in which `cfg` differs from `ref`."""
    return [k for k in cfg if k not in ("seed", "method") and cfg[k] != ref.get(k)]


def _config_changes(cfg: dict, ref: dict) -> str:
    """The Config fields (seed and method aside) in which `cfg` differs from `ref`, as 'field=value, ...'."""
    return ", ".join(f"{k}={cfg[k]}" for k in _changed(cfg, ref)) or "(no change)"


def ablation_reference(runs: pd.DataFrame, abl: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The profile's runs of the ablations' backbone and dataset (ablations change the profile's first recipe:
    compare like with like), and `abl` with each ablation's change from that LA-DNN's config (`change`) and the
    profile's values of the changed fields (`was`)."""
    first = FinishedRun(abl["path"].iloc[0]).config
    runs = runs[(runs["backbone"] == first.backbone) & (runs["dataset"] == first.dataset)]
    ref_cfg = FinishedRun(runs[runs["method"] == "ladnn"]["path"].iloc[0]).config.to_dict()
    cfgs = [FinishedRun(p).config.to_dict() for p in abl["path"]]
    return runs, abl.assign(change=[_config_changes(c, ref_cfg) for c in cfgs],
                            was=[", ".join(f"{k}={ref_cfg.get(k)}" for k in _changed(c, ref_cfg)) for c in cfgs])


def ablation_table(runs: pd.DataFrame, abl: pd.DataFrame) -> pd.DataFrame:
    """Mean [95% interval] over seeds of each ablation next to the profile's LA-DNN and baseline of the same backbone
    and dataset, with one sentence per row saying how it compares with that LA-DNN and, for an ablation, the
    profile's value of each changed field."""
    runs, abl = ablation_reference(runs, abl)
    ref = runs[runs["method"] == "ladnn"]
    groups = [("LA-DNN (profile)", ref), ("baseline (profile)", runs[runs["method"] == "baseline"])]
    groups += [(c, g) for c, g in abl.groupby("change", sort=False)]
    r_mean, r_lo, r_hi = mean_ci(ref["auc"])
    rows = []
    for name, g in groups:
        row = {"variant": name, "seeds": len(g)}
        for k in ("auc", "sensitivity", "f1", "accuracy"):
            row[k] = fmt_ci(*mean_ci(g[k]))
        m, lo, hi = mean_ci(g["auc"])
        row["profile value"] = g["was"].iloc[0] if "was" in g else ""
        if name == "LA-DNN (profile)":
            row["reading"] = "the reference"
        elif np.isnan(lo):  # one seed: no interval, so compare with the spread of LA-DNN's own seeds
            a, b = ref["auc"].min(), ref["auc"].max()
            row["reading"] = (f"one seed: AUC {100 * m:.1f}, " + points(m - r_mean, "LA-DNN's mean") + "; "
                              + ("inside" if a <= m <= b else "outside") + " the range of LA-DNN's "
                              f"{plural(len(ref), 'seed')} ({100 * a:.1f} to {100 * b:.1f})")
        else:
            overlap = not (hi < r_lo or lo > r_hi)
            row["reading"] = (f"mean AUC {100 * m:.1f}, " + points(m - r_mean, "LA-DNN's") + "; the intervals "
                              + ("overlap, so these seeds cannot tell the two apart" if overlap else
                                 "do not overlap"))
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")


def ablation_view(t: pd.DataFrame) -> pd.DataFrame:
    """`ablation_table` for the page: seeds and the four metrics (mean [95% interval], %), without the readings
    (`ablation_readings` gives them as a list)."""
    out = t[["seeds", "auc", "sensitivity", "f1", "accuracy"]].rename(
        columns={"auc": "AUC %", "sensitivity": "sensitivity %", "f1": "F1 %", "accuracy": "accuracy %"})
    out.index.name = None
    return out


def ablation_readings(t: pd.DataFrame) -> str:
    """The readings of `ablation_table` as a Markdown list, one item per variant other than the reference."""
    items = []
    for name, r in t.drop(index="LA-DNN (profile)", errors="ignore").iterrows():
        was = f" (the profile has {r['profile value']})" if r.get("profile value") else ""
        items.append(f"- **{name}**{was}: {r['reading']}.")
    return "\n".join(items)


def seed_variation(runs: pd.DataFrame) -> pd.DataFrame:
    """Per recipe: AUC over seeds (points): mean, SD, min, max, range."""
    g = runs.groupby(["backbone", "dataset", "method"])["auc"]
    out = pd.DataFrame({"seeds": g.size(), "mean": 100 * g.mean(), "sd": 100 * g.std(ddof=1), "min": 100 * g.min(),
                        "max": 100 * g.max()})
    out["range"] = out["max"] - out["min"]
    return out.round(2)


def seed_view(runs: pd.DataFrame) -> pd.DataFrame:
    """`seed_variation` for the page: method names as the book writes them, constant backbone and dataset levels
    left out, and the columns named with their unit."""
    sv = seed_variation(runs).reset_index()
    sv["method"] = sv["method"].map(lambda m: METHOD_NAMES.get(m, m))
    keys = _run_index(sv)[:-1]
    out = sv.set_index(keys).drop(columns=[c for c in ("backbone", "dataset") if c not in keys])
    return out.rename(columns={"mean": "mean AUC %", "sd": "SD (points)", "min": "min %", "max": "max %",
                               "range": "range (points)"})


def seed_figure(runs: pd.DataFrame, abl: pd.DataFrame | None = None) -> Figure:
    """Each run's test AUC (%) on one line per recipe, coloured and shaped by seed: the profile's baseline and
    LA-DNN of its first backbone and dataset (the ablations' where there are any) and the ablations; a band marks the range of
    LA-DNN's seeds, against which a one-seed ablation is read."""
    with_abl = abl is not None and len(abl)
    if with_abl:  # the ablations' backbone and dataset, as the ablation table reads them
        runs, abl = ablation_reference(runs, abl)
    first = runs.iloc[0]
    runs = runs[(runs["backbone"] == first["backbone"]) & (runs["dataset"] == first["dataset"])]
    lines = [(METHOD_NAMES[m], runs[runs["method"] == m]) for m in METHOD_NAMES if (runs["method"] == m).any()]
    if with_abl:
        lines += [(c, g) for c, g in abl.groupby("change", sort=False)]
    seeds = sorted(set().union(*(set(g["seed"]) for _, g in lines)))
    colours, markers = plt.get_cmap("tab10").colors, "osD^vP*X"
    fig = plt.figure(figsize=(7, 1.6 + 0.5 * len(lines)))
    plt.close(fig)
    ax = fig.subplots()
    lad = runs[runs["method"] == "ladnn"]["auc"]
    if len(lad) > 1:
        ax.axvspan(100 * lad.min(), 100 * lad.max(), color="0.9", zorder=0, label="range of LA-DNN's seeds")
    for y, (_, g) in enumerate(lines):
        for _, r in g.iterrows():
            k = seeds.index(r["seed"])
            ax.scatter(100 * r["auc"], y, s=70, color=colours[k % 10], marker=markers[k % len(markers)],
                       edgecolor="black", linewidth=0.5, zorder=3)
    for k, s in enumerate(seeds):
        ax.scatter([], [], s=70, color=colours[k % 10], marker=markers[k % len(markers)], edgecolor="black",
                   linewidth=0.5, label=f"seed {s}")
    ax.set_yticks(range(len(lines)), [n for n, _ in lines], fontsize=11)
    ax.set_ylim(len(lines) - 0.5, -0.5)
    ax.set_xlabel(f"test AUC (%), {first['backbone']} on {first['dataset']}", fontsize=11)
    ax.tick_params(axis="x", labelsize=10)
    ax.grid(axis="x", color="0.85", linewidth=0.6)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=10, loc="lower center", ncol=len(seeds) + 1, frameon=False,
               columnspacing=1.2, handletextpad=0.3)
    fig.tight_layout(rect=(0, 0.6 / fig.get_size_inches()[1], 1, 1))
    return fig


def seed_sentence(runs: pd.DataFrame) -> str:
    """How far seeds alone move the AUC here, against the paper's single-run gains of LA-DNN."""
    sv = seed_variation(runs)
    p = paper_table(2).query("metric == 'auc'").pivot_table(index=["backbone", "dataset"], columns="method",
                                                             values="percent")
    diff = (p["ladnn"] - p["baseline"]).round(1)
    sd = float(sv["sd"].mean())
    if np.isnan(sd):
        return "Only one seed per recipe: the seed variation cannot be measured in this profile."
    small = int((diff.abs() <= 2 * sd).sum())
    cached = set(runs["finetune"]) <= {"head", "top"}
    caveat = (f"Our SD is for {recipe(runs)}, whose frozen lower part and cached augmented views are shared by all "
              "seeds, so only the head's initialisation and the batch order change with the seed: it understates the "
              "variation of full fine-tuning, where every seed also draws its own augmentations." if cached else
              f"Our SD is for {recipe(runs)}, where every seed draws its own initialisation of the head, batch "
              "order and augmentations.")
    return (f"Changing only the seed moves one recipe's test AUC by up to {sv['range'].max():.1f} points here (mean SD "
            f"{sd:.1f} points over {plural(int(sv['seeds'].max()), 'seed')}). In the paper, LA-DNN's AUC minus the "
            f"baseline's (one run each) ranges from {signed(diff.min())} to {signed(diff.max())} points (median "
            f"{signed(diff.median())}); {small} of its {plural(len(diff), 'backbone and dataset pair')} "
            f"{verb(small, 'differs', 'differ')} by no more than twice our seed SD, so a single run cannot establish "
            f"{verb(small, 'it', 'them')}. ({caveat})")


def ablation_runs(runs_dir: str | Path) -> pd.DataFrame:
    """The profile's ablation runs (runs_dir/ablations), or an empty table when it defines none."""
    from ladnn.rundir import find_runs, run_dirs

    found = find_runs(run_dirs(runs_dir)["ablations"])
    return pd.DataFrame([r.summary() for r in found])
