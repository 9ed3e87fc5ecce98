"""The Validity chapter: the leakage checks of `ladnn.report.leakage` in words, the near-duplicate figure, the file
metadata by class, runs re-scored on clean and format-balanced test sets and on the new sources (D1), the ablation
table and the variation from seeds alone."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ladnn.images import decode, read_bytes
from ladnn.metrics import mean_ci
from ladnn.report import METHOD_NAMES, fmt_ci, paper_table, recipe
from ladnn.report.leakage import (
    clean_test,
    cross_split,
    near_duplicates,
    reencode,
    reencoded_aucs,
    subset_auc,
)
from ladnn.rundir import FinishedRun


def split_crossings(df: pd.DataFrame) -> str:
    """How many patient ids and source documents occur in more than one split (`leakage.cross_split`), two lines."""
    return (f"patient ids found in more than one split: {len(cross_split(df, 'patient'))}\n"
            f"source documents (file-name prefixes) found in more than one split: {len(cross_split(df, 'source'))}")


def nearest_counts(dist: np.ndarray, head: int = 16) -> dict[int, int]:
    """Images by the distance (bits) to their nearest other image, for the `head` smallest distances."""
    d = dist.copy()
    np.fill_diagonal(d, 10 ** 6)
    return pd.Series(d.min(1)).value_counts().sort_index().head(head).to_dict()


def nearest_text(dist: np.ndarray) -> str:
    """`nearest_counts` under a line saying what they are."""
    return f"distance to the nearest other image (bits): count of images\n{nearest_counts(dist)}"


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
    fig = plt.figure(figsize=(9, 2.4 * rows))
    plt.close(fig)  # not an open pyplot figure: it shows once, where the notebook displays it
    ax = fig.subplots(rows, 4, squeeze=False)
    for a in ax.flat:
        a.axis("off")
    for p, (d, n, i, j) in enumerate(pairs):
        for q, k in enumerate((i, j)):
            a = ax.flat[2 * p + q]
            a.imshow(decode(read_bytes(df["image"].iloc[k])))
            cls = "COVID" if df["covid"].iloc[k] else "non-COVID"
            a.set_title(f"d={d} ({n} pair{'s' if n != 1 else ''}): {df['split'].iloc[k]}, {cls}" if q == 0 else
                        f"{df['split'].iloc[k]}, {cls}", fontsize=7, loc="left")
    if empty:
        fig.suptitle(f"no cross-split pair at distance(s) {', '.join(map(str, empty))}", fontsize=8)
    fig.tight_layout()
    return fig


def hash_reading(df: pd.DataFrame, dist: np.ndarray, threshold: int, distances=range(7)) -> str:
    """The hash figure read by code: per distance, the cross-split pairs that share a source document or patient,
    that come from different ones, and whose origin is not recorded; and what that says of `threshold`."""
    split, source = df["split"].to_numpy(), df["source"].to_numpy()
    known_origin = (df["patient"].to_numpy() != "") | (source != "")
    iu = np.triu_indices_from(dist, 1)
    cross = split[iu[0]] != split[iu[1]]
    parts, mixed_at_or_below = [], 0
    for d in distances:
        k = np.where((dist[iu] == d) & cross)[0]
        if not len(k):
            continue
        i, j = iu[0][k], iu[1][k]
        known = known_origin[i] & known_origin[j]
        same_src = (source[i] == source[j]) & (source[i] != "")
        other = int((known & ~same_src).sum())
        mixed_at_or_below += other if d <= threshold else 0
        parts.append(f"at {d} bit(s), {len(k)} pair(s): {int(same_src.sum())} from one source document, {other} "
                     f"from different documents, {int((~known).sum())} of unrecorded origin")
    if not parts:
        return "No pair of images in different splits lies within the distances shown."
    return ("Reading the figure by the file names and metadata: " + "; ".join(parts) + ". "
            + (f"At or below the chosen {threshold} bit(s), no pair of known origin comes from two documents."
               if not mixed_at_or_below else
               f"At or below the chosen {threshold} bit(s), {mixed_at_or_below} pair(s) of known origin come from "
               "two documents, so the threshold also catches look-alikes that are not duplicates.")
            + " Because no threshold separates every duplicate from every look-alike, the clean test subset also "
              "drops every test image whose source document has training images.")


def threshold_counts(df: pd.DataFrame, hashes: list, thresholds=(0, 1, 2, 3, 4, 6, 8, 10)) -> pd.DataFrame:
    """The number of cross-split near-duplicate pairs (`leakage.near_duplicates`) at each threshold."""
    return pd.DataFrame({"threshold (bits)": thresholds,
                         "cross-split pairs": [len(near_duplicates(df, hashes, t)) for t in thresholds]})


def duplicates_text(dups: pd.DataFrame, threshold: int) -> str:
    """How many near-duplicate pairs (`leakage.near_duplicates`) cross the split, and how many involve training."""
    train = int(((dups["split_a"] == "train") | (dups["split_b"] == "train")).sum())
    return (f"{len(dups)} near-duplicate pairs (distance <= {threshold}) cross the split; {train} of them involve a "
            "training image")


def clean_subset(df: pd.DataFrame, dups: pd.DataFrame) -> pd.Series:
    """The names of the test images that nothing leaks into (`leakage.clean_test`)."""
    test = df[df["split"] == "test"]
    return test.loc[clean_test(df, dups), "name"]


def clean_text(df: pd.DataFrame, dups: pd.DataFrame) -> str:
    """The size of the clean test subset (`clean_subset`) against the test split's."""
    return f"clean test subset: {len(clean_subset(df, dups))} of {int((df['split'] == 'test').sum())} test images"


def metadata_tables(df: pd.DataFrame, meta: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """File metadata (`leakage.image_meta`) by class: images per file format, per colour mode, and the median
    width, height and file size."""
    cls = df["covid"].map({1: "COVID", 0: "non-COVID"})
    return (pd.crosstab(meta["format"], cls), pd.crosstab(meta["mode"], cls),
            meta.groupby(cls)[["width", "height", "file_kb"]].median().round(1))


def metadata_sentence(mc: dict) -> str:
    """What the metadata classifier (`leakage.metadata_classifier`) reaches, in words."""
    return (f"A classifier that sees only file metadata ({', '.join(mc['features'])}), trained on the "
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
    test table), also with every test image re-encoded as JPEG before scoring."""
    if reencoded is not None:  # the same bytes for every run: decode and write each JPEG once
        jpegs = [(reencode(read_bytes(f)), f) for f in reencoded["image"]]
        aucs = reencoded_aucs(list(runs["path"]), jpegs, reencoded["covid"])
    rows = []
    for k, (_, r) in enumerate(runs.iterrows()):
        row = {"backbone": r["backbone"], "dataset": r["dataset"], "method": METHOD_NAMES[r["method"]],
               "seed": r["seed"], "AUC (all test)": r["auc"]}
        pred = FinishedRun(r["path"]).predictions
        for name, names in subsets.items():
            s = subset_auc(pred, names)
            row[f"AUC ({name})"], row[f"n ({name})"] = s["auc"], s["n"]
        if reencoded is not None:
            row["AUC (all re-encoded as JPEG)"] = aucs[k]["auc"]
        rows.append(row)
    return pd.DataFrame(rows)


def shortcut_sentence(mc: dict, short: pd.DataFrame) -> str:
    """The metadata classifier's test AUC and what the PNG-only subset and re-encoding cost our models on average
    (`rescored` with both)."""
    m = by_recipe(short, ["AUC (all test)", "AUC (PNG-only test)", "AUC (all re-encoded as JPEG)"])
    return (f"Metadata alone: test AUC {mc['test_auc']:.3f}. On average our models lose "
            f"{(m['AUC (all test)'] - m['AUC (PNG-only test)']).mean():+.3f} AUC on the PNG-only subset and "
            f"{(m['AUC (all test)'] - m['AUC (all re-encoded as JPEG)']).mean():+.3f} when every test image is "
            "re-encoded (a negative loss is a gain).")


def new_source_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Each run trained on D0 alone, scored on the new images (D1) when it was trained (`metrics.json`,
    `unseen_source`: the whole model with the run's test-time views). Runs trained on D0+D1 are left out: D1's
    training images were part of their training."""
    from ladnn.scores import ClusterTest, at_level

    rows = []
    for _, r in runs[runs["dataset"] == "D0"].iterrows():
        run = FinishedRun(r["path"])
        m = run.metrics.unseen_source
        if not m:
            continue
        ci = m.covid_ci95.auc
        level = at_level(run.unseen_predictions) if run.unseen_predictions is not None else None
        if isinstance(level, ClusterTest):  # too few clusters in a class for a bootstrap interval
            interval = (f"none: {level.positive_clusters} COVID-19 cluster(s); exact p = {level.p:.3f}")
        else:
            interval = f"{ci[0]:.3f} to {ci[1]:.3f}"
        rows.append({"backbone": r["backbone"], "method": METHOD_NAMES[r["method"]], "seed": r["seed"],
                     "AUC (D0 test)": r["auc"], "AUC (D1, new sources)": m.covid.auc, "95% interval (D1)": interval,
                     "accuracy (D1)": m.covid.accuracy, "n": m.covid.n, "collections": m.sources,
                     "patients": m.clusters})
    return pd.DataFrame(rows)


def new_source_sentence(e: pd.DataFrame) -> str:
    """The mean change in AUC from the D0 test split to D1 (`new_source_table`), in words."""
    if e.empty:
        return "No run of this profile was trained on D0 alone, so none can be scored on D1 as unseen data."
    m = by_recipe(e, ["AUC (D0 test)", "AUC (D1, new sources)"])
    few = e["95% interval (D1)"].astype(str).str.startswith("none").any()
    return (f"On images from new sources the mean AUC changes by {(m.iloc[:, 1] - m.iloc[:, 0]).mean():+.3f}. "
            + ("D1's COVID-19 images come from too few clusters (one article) for an interval, so its AUCs cannot "
               "be told from chance. " if few else "")
            + "Expect a change whenever the scanner, the hospital or the way images were exported changes.")


# ---------------------------------------------------------------- ablations and seeds
def _config_changes(cfg: dict, ref: dict) -> str:
    """The Config fields (seed and method aside) in which `cfg` differs from `ref`, as 'field=value, ...'."""
    keys = [k for k in cfg if k not in ("seed", "method") and cfg[k] != ref.get(k)]
    return ", ".join(f"{k}={cfg[k]}" for k in keys) or "(no change)"


def ablation_table(runs: pd.DataFrame, abl: pd.DataFrame) -> pd.DataFrame:
    """Mean [95% interval] over seeds of each ablation next to the profile's LA-DNN and baseline of the same backbone
    and dataset, with one sentence per row saying how it compares with that LA-DNN."""
    first = FinishedRun(abl["path"].iloc[0]).config  # ablations change the profile's first recipe: compare like with like
    runs = runs[(runs["backbone"] == first.backbone) & (runs["dataset"] == first.dataset)]
    ref = runs[runs["method"] == "ladnn"]
    ref_cfg = FinishedRun(ref["path"].iloc[0]).config.to_dict()
    groups = [("LA-DNN (profile)", ref), ("baseline (profile)", runs[runs["method"] == "baseline"])]
    abl = abl.assign(change=[_config_changes(FinishedRun(p).config.to_dict(), ref_cfg) for p in abl["path"]])
    groups += [(c, g) for c, g in abl.groupby("change", sort=False)]
    r_mean, r_lo, r_hi = mean_ci(ref["auc"])
    rows = []
    for name, g in groups:
        row = {"variant": name, "seeds": len(g)}
        for k in ("auc", "sensitivity", "f1", "accuracy"):
            row[k] = fmt_ci(*mean_ci(g[k]))
        m, lo, hi = mean_ci(g["auc"])
        if name == "LA-DNN (profile)":
            row["reading"] = "the reference"
        else:
            if np.isnan(lo):  # one seed: no interval, so compare with the spread of LA-DNN's own seeds
                a, b = ref["auc"].min(), ref["auc"].max()
                row["reading"] = (f"one seed, AUC {100 * (m - r_mean):+.1f} points against LA-DNN's mean; "
                                  + ("inside" if a <= m <= b else "outside") + f" the range of LA-DNN's "
                                  f"{len(ref)} seeds ({100 * a:.1f} to {100 * b:.1f})")
            else:
                overlap = not (hi < r_lo or lo > r_hi)
                row["reading"] = (f"mean AUC {100 * (m - r_mean):+.1f} points against LA-DNN; the intervals "
                                  + ("overlap, so these seeds cannot tell the two apart" if overlap else
                                     "do not overlap"))
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")


def seed_variation(runs: pd.DataFrame) -> pd.DataFrame:
    """Per recipe: AUC over seeds (points): mean, SD, min, max, range."""
    g = runs.groupby(["backbone", "dataset", "method"])["auc"]
    out = pd.DataFrame({"seeds": g.size(), "mean": 100 * g.mean(), "sd": 100 * g.std(ddof=1), "min": 100 * g.min(),
                        "max": 100 * g.max()})
    out["range"] = out["max"] - out["min"]
    return out.round(2)


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
            f"{sd:.1f} points over {int(sv['seeds'].max())} seeds). The paper's single-run AUC gains of LA-DNN over the "
            f"baseline range from {diff.min():.1f} to {diff.max():.1f} points (median {diff.median():.1f}); {small} of "
            f"its {len(diff)} backbone and dataset pairs differ by no more than twice our seed SD, so a single run "
            f"cannot establish them. ({caveat})")


def ablation_runs(runs_dir: str | Path) -> pd.DataFrame:
    """The profile's ablation runs (runs_dir/ablations), or an empty table when it defines none."""
    from ladnn.rundir import find_runs, run_dirs

    found = find_runs(run_dirs(runs_dir)["ablations"])
    return pd.DataFrame([r.summary() for r in found])
