"""The chapter "New sources": every protocol of ladnn.sources side by side for both methods, before and after the
pipeline chosen on protocol (c)'s validation parts, the metadata classifier as the trivial predictor, and what the
grouping of the old protocol hid.

The runs come from benchmarks/source_protocol.py and their scores, plain and with AdaBN, from benchmarks/transfer.py
(ladnn/resources/). Protocols (b) and (c) draw on D0 alone, so D1 and COVID-CT-MD are external to every run. Every
figure is at the level its protocol holds out (`ladnn.scores.at_level`): whole patients for the official split and
the external sets, linked patient-and-document groups for protocols (b) and (c), one held-out collection at a time
for (c); a class with fewer than five clusters gets the exact permutation test instead of an interval. A difference
between methods is claimed only from three seeds or more, after Holm's adjustment (`comparisons`). The AUCs and their
intervals come from `ladnn.scores`; this module picks the parts each protocol scores and puts them into the chapter's
tables, figures and sentences."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ladnn.dicom import MIN_LUNG_FRACTION
from ladnn.generalisation import new_data_report, recipe_figures, transfer_predictions
from ladnn.metrics import auc, holm, paired_difference
from ladnn.report import METHOD_NAMES as REPORT_METHOD_NAMES
from ladnn.report import styled  # noqa: F401 - the chapter's notebook calls unseen.styled
from ladnn.rundir import FinishedRun
from ladnn.scores import (
    PRED,
    at_level,
    collection_table,
    exact_only,
    external_slices,
    held_out,
    subset_aucs,
)

# The candidate pipelines, name: (Config.preprocess, Config.augment, Config.finetune). "frozen" trains the head
# alone on a frozen ImageNet backbone. AdaBN (ladnn.infer.adapt_batchnorm) is applied at test time to any of them:
# the candidate "<name>+AdaBN".
PIPELINES = {
    "none": ([], "paper", "top"),
    "crop": (["crop"], "paper", "top"),
    "gray": (["gray"], "paper", "top"),
    "clahe": (["clahe"], "paper", "top"),
    "jpeg": (["jpeg"], "paper", "top"),
    "strong": ([], "strong", "top"),
    "all": (["crop", "gray", "clahe", "jpeg"], "strong", "top"),
    "frozen": ([], "paper", "head"),
    "window": (["window"], "paper", "top"),
    "lungcrop": (["lungcrop"], "paper", "top"),
    "unmark": (["unmark"], "paper", "top"),
}
METHOD_NAMES = {**REPORT_METHOD_NAMES, "metadata": "metadata classifier"}
PROTOCOL_NAMES = {"official": "(a) official split", "grouped": "(b) grouped by patient and document",
                  "collection": "(c) leave one collection out", "D1": "(d) D1, trained on D0",
                  "COVID-CT-MD": "(d) COVID-CT-MD per slice", "COVID-CT-MD patients": "(d) COVID-CT-MD per patient"}
LEVELS = {"official": "patients", "grouped": "groups", "collection": "groups", "D1": "patients or articles",
          "COVID-CT-MD": "patients", "COVID-CT-MD patients": "patients"}
CLAIM_SEEDS = 3  # a difference between methods is claimed only from at least this many seeds, paired
MOONSHOT = {"COVID-CT-MD": 0.80, "D1": 0.75}


def pipeline_name(preprocess: list[str], augment: str, finetune: str = "top", dataset: str = "D0") -> str:
    """The candidate name of a Config's pipeline (or its fields spelled out when it is no candidate); runs trained on
    D0+D1 are the candidate `D0+D1` (with the pipeline's name when it is not `none`)."""
    match = [n for n, (pre, aug, ft) in PIPELINES.items() if list(preprocess) == pre and augment == aug
             and finetune == ft]
    name = match[0] if match else f"{'+'.join(preprocess) or 'none'} / {augment} augmentation / {finetune}"
    return name if dataset == "D0" else (dataset if name == "none" else f"{name} on {dataset}")


def with_adabn(transfer: pd.DataFrame) -> pd.DataFrame:
    """The transfer table with one candidate name per (pipeline, AdaBN): `none`, `none+AdaBN`, ..."""
    t = transfer.copy()
    t["pipeline"] = t["candidate"] + np.where(t["adabn"].astype(bool), "+AdaBN", "")
    return t


def transfer_table() -> pd.DataFrame:
    """The packaged transfer table (`ladnn.generalisation.transfer_predictions`) with its candidate names
    (`with_adabn`): what every section of the chapter scores."""
    return with_adabn(transfer_predictions())


# ---------------------------------------------------------------- the parts each protocol scores
def _patient_cluster(p: pd.DataFrame, fallback: pd.Series) -> pd.Series:
    """The resampling cluster of an image: its patient, or `fallback` where the records name none."""
    known = p[PRED.patient].notna() & (p[PRED.patient].astype(str) != "")
    return p[PRED.patient].where(known, fallback)


def parts(t: pd.DataFrame, pipeline: str, method: str, seed: int = 0) -> dict[str, pd.DataFrame]:
    """The predictions each protocol scores for one pipeline, method and seed, keyed like PROTOCOL_NAMES."""
    t = t[(t["pipeline"] == pipeline) & (t["method"] == method) & (t["seed"] == seed)]
    out = {}
    for prot in ("official", "grouped", "collection"):
        q = t[(t["protocol"] == prot) & (t["part"] == "test")]
        if len(q):
            out[prot] = q if prot != "official" else q.assign(**{PRED.group: _patient_cluster(q, q[PRED.image])})
    off = t[t["protocol"] == "official"]
    if (off["part"] == "D1").any():
        d1 = off[off["part"] == "D1"]
        # an article without patient ids: one cluster
        out["D1"] = d1.assign(**{PRED.group: _patient_cluster(d1, d1[PRED.group])})
    if (off["part"] == "COVID-CT-MD").any():
        out["COVID-CT-MD"], out["COVID-CT-MD patients"] = external_slices(off[off["part"] == "COVID-CT-MD"])
    return out


def split_collections(prot: str, p: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """A protocol's parts as the chapter reports them: (key, row name, predictions). Protocol (c) is one part per
    held-out collection, each scored by its own fold's model (never pooled across folds: the models differ, and a
    pooled AUC mixes their calibrations); every other protocol is one part."""
    if prot != "collection":
        return [(prot, PROTOCOL_NAMES[prot], p)]
    return [(prot, f"(c) held out: {held_out(f)}", f) for _, f in p.groupby(PRED.fold)]


def protocol_table(t: pd.DataFrame, pipelines: list[str], methods=("baseline", "ladnn"), n_boot: int = 2000,
                   meta: pd.DataFrame | None = None, seed: int = 0) -> pd.DataFrame:
    """The AUC of every protocol part x method x pipeline (one seed) at its protocol's level
    (`ladnn.scores.at_level`): with a bootstrap interval where each class has at least MIN_CLUSTERS clusters, else
    the exact permutation p-value and the AUC such a set would need, and no interval. Protocol (c) is reported per
    held-out collection (`split_collections`). `meta` (metadata_predictions) adds the metadata classifier."""
    rows = []

    def add(prot: str, name: str, method: str, pipe: str, p: pd.DataFrame) -> None:
        rows.append({"protocol": name, "method": METHOD_NAMES[method], "pipeline": pipe,
                     **at_level(p, n_boot=n_boot).row(), "resampled": LEVELS.get(prot, "groups")})

    for pipe in pipelines:
        for method in methods:
            for prot, p in parts(t, pipe, method, seed).items():
                for key, name, q in split_collections(prot, p):
                    add(key, name, method, pipe, q)
    if meta is not None:
        for prot, p in meta.groupby("protocol"):
            for key, name, q in split_collections(prot, p):
                add(key, name, "metadata", "file metadata", q)
    return pd.DataFrame(rows).set_index(["protocol", "method", "pipeline"])


def for_page(tab: pd.DataFrame) -> pd.DataFrame:
    """A table of `protocol_table` or `comparisons` as the page shows it: three decimals, a blank where a value does
    not apply (no interval on too few clusters, no exact test where the bootstrap gives one), "none possible" where no
    AUC on a set could reach p < 0.05, and no column that is blank in every row. A `comparisons` table shows each
    difference with its interval in one column, signed, and keeps its detectable difference (`claims_note` says once
    what it means), the claim last."""
    out = tab.drop(columns=[c for c in ("resampled",) if c in tab]).astype(object)
    for c in out.columns:
        if pd.api.types.is_float_dtype(tab[c]):
            out[c] = [_three(v) for v in tab[c]]
    if "AUC needed" in out:
        few = tab["exact p"].notna()
        out.loc[few & tab["AUC needed"].isna(), "AUC needed"] = "none possible"
    if "AUC difference" in out:
        both = [_three(d, True) + ("" if np.isnan(lo) else f" [{_three(lo, True)}, {_three(hi, True)}]")
                for d, lo, hi in zip(tab["AUC difference"], tab["lo"], tab["hi"])]
        at = out.columns.get_loc("AUC difference")
        out = out.drop(columns=["AUC difference", "lo", "hi"])
        out.insert(at, "AUC difference [95% interval]", both)
    if "claim" in out:  # the claim last, where it reads as the row's conclusion
        out = out[[c for c in out.columns if c != "claim"] + ["claim"]]
    return out[[c for c in out.columns if not (out[c].astype(str) == "").all()]]


def _three(v: float, signed: bool = False) -> str:
    """A number with three decimals ('' for NaN), signed where asked; a value that rounds to zero shows as 0.000,
    never -0.000."""
    if pd.isna(v):
        return ""
    text = f"{v:+.3f}" if signed else f"{v:.3f}"
    return "0.000" if float(text) == 0 else text


def claims_note(cmp: pd.DataFrame, first: bool = True) -> str:
    """What a `comparisons` table's claims mean: in full for the page's first such table (`first`: the Holm-adjusted
    test, the seeds a claim needs, the detectable difference at 80% power, too few clusters), else a reference to it;
    either way with the range of the table's own detectable differences."""
    det = cmp["detectable"].dropna()
    size = ("" if not len(det) else f"{det.min():.3f}" if round(det.min(), 3) == round(det.max(), 3) else
            f"{det.min():.3f} to {det.max():.3f}")
    if not first:
        return ("Claims and the column \"detectable\" read as in section 4; detectable here: " + size + "." if size else
                "Claims read as in section 4.")
    out = [(f"A difference is claimed where its Holm-adjusted p is below 0.05 with at least {CLAIM_SEEDS} seeds; "
            "otherwise the row says \"no difference shown\".")]
    if size:
        out.append(f"The column \"detectable\" gives the smallest difference those runs would detect with 80% power "
                   f"({size} in this table): a smaller one may exist unseen.")
    if cmp["p"].isna().any():
        out.append("\"Too few clusters to test\": a class has too few patients or articles for a p-value; only the "
                   "mean of the seeds' differences is given.")
    return " ".join(out)


def collection_tables(t: pd.DataFrame, n_boot: int = 2000, pipeline: str = "none") -> dict[str, pd.DataFrame]:
    """Protocol (c) per held-out collection, worst first (`ladnn.scores.collection_table`), for each method: method
    name -> table."""
    return {METHOD_NAMES[m]: collection_table(parts(t, pipeline, m)["collection"], n_boot)
            for m in ("baseline", "ladnn")}


def protocol_figure(tab: pd.DataFrame) -> Figure:
    """Every row of `protocol_table` as its AUC with the 95% interval, top to bottom in the table's order; chance
    (0.5) dashed. The figure grows with the rows, so each label stays readable (10 pt at the column's width), and the
    legend sits above the axes, off the points."""
    r = tab.reset_index()
    fig = plt.figure(figsize=(8, max(4.0, 0.27 * len(r) + 1.6)), layout="constrained")
    plt.close(fig)  # not an open pyplot figure: it shows once, where the notebook displays it
    ax = fig.subplots()
    labels = r["protocol"] + " | " + r["method"] + " | " + r["pipeline"]
    ci = r["lo"].notna()
    y = np.arange(len(r))
    ax.errorbar(r.loc[ci, "AUC"], y[ci], xerr=[r.loc[ci, "AUC"] - r.loc[ci, "lo"], r.loc[ci, "hi"] - r.loc[ci, "AUC"]],
                fmt="o", capsize=2, label="95% interval at the protocol's level")
    ax.plot(r.loc[~ci, "AUC"], y[~ci], "x", color="C3", label="too few clusters for an interval")
    ax.set_yticks(y, labels, fontsize=10)
    ax.tick_params(axis="x", labelsize=10)
    ax.set_ylim(len(r) - 0.5, -0.5)  # the table's first row on top
    ax.axvline(0.5, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("AUC", fontsize=10)
    ax.legend(fontsize=10, loc="lower left", bbox_to_anchor=(0, 1.0), frameon=False)
    return fig


# ---------------------------------------------------------------- choosing on protocol (c)'s validation parts
def selection(t: pd.DataFrame, method: str = "ladnn") -> pd.DataFrame:
    """Each candidate's validation AUC per fold of protocol (c) and the mean, ranked by the mean; only candidates
    with every fold count. The validation parts are new patients of the collections left in training."""
    v = t[(t["protocol"] == "collection") & (t["part"] == "val") & (t["method"] == method) & (t["seed"] == 0)]
    aucs = v.groupby(["pipeline", PRED.fold]).apply(lambda g: auc(g[PRED.y_true], g[PRED.p_covid]),
                                                    include_groups=False).astype(float).unstack()
    aucs.columns = [f"val AUC, fold {c}" for c in aucs.columns]
    aucs = aucs.dropna()
    aucs.insert(0, "mean val AUC", aucs.mean(axis=1))
    return aucs.sort_values("mean val AUC", ascending=False)


def chosen(t: pd.DataFrame, method: str = "ladnn") -> str:
    """The candidate with the highest mean validation AUC (`selection`)."""
    return str(selection(t, method).index[0])


def second_of(sel: pd.DataFrame) -> str:
    """The runner-up of a `selection` table (its only candidate when it has one)."""
    return str(sel.index[min(1, len(sel) - 1)])


def runner_up(t: pd.DataFrame, method: str = "ladnn") -> str:
    """The candidate second by mean validation AUC (`selection`)."""
    return second_of(selection(t, method))


def shown_pipelines(t: pd.DataFrame, method: str = "ladnn") -> list[str]:
    """The pipelines the chapter scores everywhere: today's (`none`), the chosen one and the runner-up."""
    return list(dict.fromkeys(["none", chosen(t, method), runner_up(t, method)]))


def after_pipeline(t: pd.DataFrame, method: str = "ladnn") -> str:
    """The chosen pipeline, or the runner-up when today's ('none') wins, so a change is measured either way."""
    sel = selection(t, method)
    return str(sel.index[0]) if sel.index[0] != "none" else second_of(sel)


def candidates_sentence(sel: pd.DataFrame) -> str:
    """Which candidates `selection` measured on every fold, and which of PIPELINES it did not."""
    measured = {c.removesuffix("+AdaBN") for c in sel.index}
    missing = [c for c in PIPELINES if c not in measured]
    gap = (f"Not measured: {', '.join(missing)}." if missing else
           "Every candidate pipeline of the chapter was measured.")
    return (f"Candidates measured on every fold: {', '.join(sel.index)}. {gap} "
            "Training on D0+D1 cannot be measured on these folds (D1 is no part of them) and leaves no D1 to test "
            "on; it is scored on COVID-CT-MD alone below.")


def d0d1_table(t: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """COVID-CT-MD per slice and per patient for runs trained on D0 (`none`) and on D0+D1 (candidate `D0+D1`), both
    methods, seed 0 (`protocol_table`'s rows)."""
    tab = protocol_table(t, ["none", "D0+D1"], n_boot=n_boot)
    return tab[tab.index.get_level_values("protocol").str.contains("COVID-CT-MD")]


# ---------------------------------------------------------------- the causal test: retrained without marks
def against_today(cmp: pd.DataFrame, pipeline: str) -> pd.DataFrame:
    """The rows of `comparisons(t, pipeline)` that compare its runs with today's (`<pipeline> - none`), per method and
    protocol part."""
    d = cmp.index.get_level_values("difference")
    return cmp[d.str.startswith(f"{pipeline} - none")]


def unmark_sentence(rows: pd.DataFrame, recall: float) -> str:
    """What retraining with the marks painted out (training and test images) did, per protocol part and method, in
    generated words: where the AUC fell, where it rose, and where no difference was shown, with the smallest
    difference these runs could detect. `recall`: the detector's recall on the held-out hand labels
    (`ladnn.report.marks.detector_check`)."""
    fell, rose = [], []
    for (prot, diff), r in rows.iterrows():
        if r["claim"].endswith("scores higher"):
            item = f"{prot} ({diff.split(', ')[1]}, {r['AUC difference']:+.3f})"
            (rose if r["AUC difference"] > 0 else fell).append(item)
    lo, hi = int(rows["seeds"].min()), int(rows["seeds"].max())
    seeds = f"{lo} seeds" if lo == hi else f"{lo} to {hi} seeds"
    tested = rows[rows["p"].notna()]
    untested = rows[rows["p"].isna()]
    out = [(f"Retrained with every mark the detector finds painted out of training and test images ({seeds}, both "
            f"methods) and compared with today's runs on the same images ({len(tested)} of the {len(rows)} "
            "comparisons can be tested; Holm-adjusted with the LA-DNN - baseline comparisons of the same runs),")]
    out.append(f"the AUC fell on {'; '.join(fell)}" if fell else "the AUC fell on no tested part")
    out.append(f"and rose on {'; '.join(rose)}." if rose else "and rose on none.")
    if len(tested) and not fell and not rose:
        out.append(f"Where a test was possible, these runs would have detected a change of about "
                   f"{tested['detectable'].max():.3f} or more; the largest change there was "
                   f"{max(tested['AUC difference'], key=abs):+.3f}.")
    if len(untested):
        out.append(f"On the external sets ({'; '.join(dict.fromkeys(untested.index.get_level_values('protocol')))}), "
                   "too few patients or articles allow no test; the changes there run from "
                   f"{untested['AUC difference'].min():+.3f} to {untested['AUC difference'].max():+.3f}.")
    if not fell and not rose:
        out.append("So neither is shown: the official AUC did not fall by a detectable amount, and the external sets "
                   "cannot show whether transfer rose.")
    out.append(f"The detector finds {recall:.0%} of the hand-labelled marks; the marks it misses (grey, black or "
               "white) stay in the retrained runs' images.")
    return " ".join(out)


# ---------------------------------------------------------------- paired differences
def seeds_of(t: pd.DataFrame, pipeline: str, method: str) -> list[int]:
    """The seeds with runs of one pipeline and method."""
    return sorted(t.loc[(t["pipeline"] == pipeline) & (t["method"] == method), "seed"].unique())


def paired(t: pd.DataFrame, prot: str, a: tuple[str, str], b: tuple[str, str], n_boot: int = 2000,
           fold: int | None = None, parts_of=None) -> dict:
    """AUC(a) - AUC(b) on the same images of one protocol part, a = (pipeline, method), over every seed both have:
    the seeds paired (seed s of a with seed s of b) and the clustered two-level bootstrap of
    `ladnn.metrics.paired_difference`. `fold`: one held-out collection of (c). Adds `seeds`, and `too_few` when a
    class has fewer than `ladnn.scores.MIN_CLUSTERS` clusters (then no p-value: a bootstrap over so few clusters
    means nothing, and only the mean of the seeds' differences is given). `parts_of(pipeline, method, seed)`: `parts`
    of `t`, when the caller keeps them (`comparisons`)."""
    parts_of = parts_of or (lambda pipe, method, seed: parts(t, pipe, method, seed))
    seeds = sorted(set(seeds_of(t, *a)) & set(seeds_of(t, *b)))
    key = PRED.patient if prot == "COVID-CT-MD patients" else PRED.image
    first, pa, pb = None, [], []
    for s in seeds:
        qa, qb = parts_of(*a, s).get(prot), parts_of(*b, s).get(prot)
        if qa is None or qb is None:
            continue
        if fold is not None:
            qa, qb = qa[qa[PRED.fold] == fold], qb[qb[PRED.fold] == fold]
        m = qa.merge(qb[[key, PRED.p_covid]], on=key, suffixes=("_a", "_b")).sort_values(key)
        first = m if first is None else first
        if not m[key].equals(first[key]):
            raise ValueError(f"{prot}: seed {s} scored other images than seed {seeds[0]}")
        pa.append(m[PRED.p_covid + "_a"].to_numpy())
        pb.append(m[PRED.p_covid + "_b"].to_numpy())
    if first is None:
        raise ValueError(f"no runs of {a} and {b} under {prot}")
    y = first[PRED.y_true]
    if exact_only(first):
        return {"auc_diff": float(np.mean([auc(y, x) - auc(y, z) for x, z in zip(pa, pb)])), "seeds": len(pa),
                "too_few": True}
    d = paired_difference(y, np.stack(pa), np.stack(pb), first[PRED.group], n_boot=n_boot)
    return {**d, "seeds": len(pa), "too_few": False}


def comparisons(t: pd.DataFrame, after: str, before: str = "none", n_boot: int = 2000) -> pd.DataFrame:
    """LA-DNN - baseline (before and after), and after - before for each method, under every protocol part that has
    both (protocol (c) per held-out collection), over the seeds both have. Holm's adjustment runs over every
    comparison with a p-value (`p Holm`; their number is the table's `family` attribute). A difference is claimed
    only with at least CLAIM_SEEDS seeds, enough clusters and an adjusted p below 0.05; otherwise the table says
    "no difference shown" and gives the smallest difference these runs could detect (80% power, 5% level)."""
    pairs = [(f"LA-DNN - baseline, {before}", (before, "ladnn"), (before, "baseline")),
             (f"LA-DNN - baseline, {after}", (after, "ladnn"), (after, "baseline")),
             (f"{after} - {before}, LA-DNN", (after, "ladnn"), (before, "ladnn")),
             (f"{after} - {before}, baseline", (after, "baseline"), (before, "baseline"))]
    cols = ["protocol", "difference", "seeds", "AUC difference", "lo", "hi", "p", "p Holm", "detectable", "claim"]
    some = parts(t, before, "ladnn")
    kept: dict[tuple, dict] = {}

    def parts_of(pipe: str, method: str, seed: int) -> dict[str, pd.DataFrame]:
        if (pipe, method, seed) not in kept:  # each (pipeline, method, seed) picked from the table once
            kept[pipe, method, seed] = parts(t, pipe, method, seed)
        return kept[pipe, method, seed]

    rows = []
    for prot, name_of in PROTOCOL_NAMES.items():
        folds = [(None, name_of)] if prot != "collection" or prot not in some else [
            (k, f"(c) held out: {held_out(f)}") for k, f in some[prot].groupby(PRED.fold)]
        for fold, label in folds:
            for name, a, b in pairs:
                try:
                    d = paired(t, prot, a, b, n_boot, fold, parts_of)
                except ValueError:
                    continue
                rows.append({"protocol": label, "difference": name, "seeds": d["seeds"],
                             "AUC difference": d["auc_diff"], "lo": np.nan if d["too_few"] else d["auc_diff_ci"][0],
                             "hi": np.nan if d["too_few"] else d["auc_diff_ci"][1],
                             "p": np.nan if d["too_few"] else d["p_auc"],
                             "detectable": np.nan if d["too_few"] else d["detectable_80"]})
    out = pd.DataFrame(rows, columns=cols[:7] + ["detectable"])
    out["p Holm"] = holm(out["p"])
    out["claim"] = [claim(r, r["difference"]) for _, r in out.iterrows()]
    out = out[cols].set_index(["protocol", "difference"])
    out.attrs["family"] = int(out["p"].notna().sum())
    return out


def claim(r: pd.Series, difference: str) -> str:
    """What one row of `comparisons` supports, in a few words; `difference` is its name, "A - B, context". The
    detectable difference stays in its own column (`claims_note` says what it means once per table)."""
    if np.isnan(r["p"]):
        return "too few clusters to test"
    if r["seeds"] < CLAIM_SEEDS:
        return f"no difference shown ({int(r['seeds'])} seed{'s' if r['seeds'] != 1 else ''})"
    if r["p Holm"] < 0.05:
        first, second = difference.split(" - ", 1)
        return f"{first if r['AUC difference'] > 0 else second.split(', ')[0]} scores higher"
    return "no difference shown"


# ---------------------------------------------------------------- the metadata classifier under (a), (b), (c)
def metadata_predictions(table: pd.DataFrame, meta: pd.DataFrame | None = None, folds: int = 5,
                         seed: int = 0) -> pd.DataFrame:
    """The shortcut baseline (file format, colour mode, size, file size, aspect ratio; ladnn.report.leakage) scored
    like the models under the official split and protocols (b) and (c), all over D0's images. `meta`: the table's
    file metadata (`leakage.image_meta`, row for row), read from the files when not given."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from ladnn.report.leakage import image_meta, metadata_features
    from ladnn.sources import collection_folds, grouped_folds, linked_groups

    d0 = (table["dataset"] == "D0").to_numpy()  # the folds draw on D0 alone: D1 stays external
    table = table[d0].reset_index(drop=True)
    x = metadata_features(image_meta(table) if meta is None else meta[d0].reset_index(drop=True))
    y, group = table["covid"].astype(int), linked_groups(table)
    patient = (table["dataset"] + ":" + table["patient"]).where(table["patient"] != "", table["name"])
    out = []

    def fit(tr, te, prot: str, fold: int, g: pd.Series) -> None:
        clf = HistGradientBoostingClassifier(max_iter=200, random_state=seed).fit(x[tr], y[tr])
        out.append(pd.DataFrame({"protocol": prot, PRED.fold: fold, PRED.image: table.loc[te, "name"],
                                 PRED.y_true: y[te], PRED.p_covid: clf.predict_proba(x[te])[:, 1], PRED.group: g[te],
                                 PRED.collection: table.loc[te, "collection"]}))

    fit(table["split"] == "train", table["split"] == "test", "official", -1, patient)
    for prot, f in (("grouped", grouped_folds(table, folds, seed)), ("collection", collection_folds(table, seed))):
        for k in sorted(set(f)):
            fit(f != k, f == k, prot, k, group)
    return pd.concat(out, ignore_index=True)


# ---------------------------------------------------------------- what the old grouping hid
def old_grouping_facts(table: pd.DataFrame) -> dict:
    """Counts behind the old protocol's optimism: MedPix images that were each their own source, and MedPix test
    images of the official split whose patient also has a training image."""
    d0 = table[table["dataset"] == "D0"]
    med = d0[d0["collection"] == "MedPix"]
    train_patients = set(d0.loc[d0["split"] == "train", "patient"])
    test = med[med["split"] == "test"]
    return {"medpix_images": len(med), "medpix_patients": med["patient"].nunique(),
            "medpix_test": len(test), "medpix_test_patient_in_training": int(test["patient"].isin(train_patients).sum()),
            "official_test": int((d0["split"] == "test").sum())}


def grouping_sentences(table: pd.DataFrame) -> str:
    """What the old grouping hid (`old_grouping_facts`), as Markdown bullets."""
    from ladnn.sources import linked_groups

    f = old_grouping_facts(table)
    return (f"- MedPix gives {f['medpix_images']} of D0's negatives, from {f['medpix_patients']} patients; the old "
            f"grouping made {f['medpix_images']} sources of them.\n"
            f"- In the official split, {f['medpix_test_patient_in_training']} of the {f['medpix_test']} MedPix test "
            "images have a slice of the same patient in training.\n"
            f"- Linked by patient and document (one article is one document), D0's images form "
            f"{linked_groups(table[table['dataset'] == 'D0']).nunique()} groups, the units (b) and (c) hold out.\n"
            "- Under every fold of the old protocol and of (b), MedPix sat on both sides: a model could learn what "
            "MedPix looks like and be rewarded on MedPix test images.")


def grouped_subsets(t: pd.DataFrame, n_boot: int = 2000, pipeline: str = "none", method: str = "ladnn"
                    ) -> pd.DataFrame:
    """Protocol (b)'s pooled AUC against each negative collection alone and without each
    (`ladnn.scores.subset_aucs`)."""
    return subset_aucs(parts(t, pipeline, method)["grouped"], n_boot)


def subset_sentence(sub: pd.DataFrame, method: str = "LA-DNN") -> str:
    """How far the collection of the negatives moves protocol (b)'s AUC (`grouped_subsets`): the MedPix negatives
    alone against the crawled paper figures alone. Every number is rounded to three decimals before the difference
    is taken, so the sentence agrees with the table beside it (`subsets_for_page`)."""
    pooled, medpix, crawled = (round(float(sub.loc[k, "AUC"]), 3)
                               for k in ("all", "only MedPix", "only crawled paper figures"))
    return (f"Under (b), {method} scores {pooled:.3f} pooled, {medpix:.3f} against the MedPix negatives alone and "
            f"{crawled:.3f} against the crawled figures alone: the collection a negative comes from moves the figure "
            f"by {medpix - crawled:+.3f}. Protocol (c) holds each collection out in turn:")


def subsets_for_page(sub: pd.DataFrame) -> pd.DataFrame:
    """`grouped_subsets` as the page shows it: three decimals, the interval in one column, and a row that repeats an
    earlier one (with two collections, "all but MedPix" is "only crawled paper figures") merged into it by name."""
    out, seen = [], {}
    for name, r in sub.iterrows():
        key = tuple(r[["AUC", "lo", "hi", "n", "clusters"]])
        if key in seen:  # the same negatives under two names: "only X" first
            row = out[seen[key]]
            first, second = (str(name), row["negatives"]) if str(name).startswith("only") else (row["negatives"], name)
            row["negatives"] = f"{first} (= {second})"
            continue
        seen[key] = len(out)
        out.append({"negatives": str(name), "AUC": f"{r['AUC']:.3f}", "95% interval": f"{r['lo']:.3f} to {r['hi']:.3f}",
                    "images": int(r["n"]), "clusters": int(r["clusters"])})
    return pd.DataFrame(out)


def collection_for_page(ct: pd.DataFrame) -> pd.DataFrame:
    """A table of `collection_tables` as the page shows it: three decimals and the interval in one column."""
    out = ct.drop(columns=["lo", "hi", "n"]).copy()
    out["AUC"] = [f"{v:.3f}" for v in ct["AUC"]]
    out.insert(out.columns.get_loc("AUC") + 1, "95% interval", [f"{a:.3f} to {b:.3f}" for a, b in zip(ct["lo"], ct["hi"])])
    out.insert(out.columns.get_loc("95% interval") + 1, "images", ct["n"].astype(int))
    return out


def fold_crossings(table: pd.DataFrame, folds: int = 5) -> pd.DataFrame:
    """Per fold of protocols (b) (`folds` folds) and (c) (one per negative collection): the patients, documents and
    linked groups found both in training and in validation or test (`ladnn.sources.crossing`); all zero when the
    folds hold them out."""
    from ladnn.sources import crossing, fold_splits, negative_collections

    table = table[table["dataset"] == "D0"].reset_index(drop=True)  # the folds draw on D0 alone
    checks = {}
    for prot, n in (("grouped", folds), ("collection", len(negative_collections(table)))):
        for k in range(n):
            s = fold_splits(table, prot, n, k)
            checks[(prot, k)] = {lvl: sum(len(v) for v in crossing(table, s, lvl).values())
                                 for lvl in ("patient", "document", "group")}
    out = pd.DataFrame(checks).T
    out.index = out.index.set_names(["protocol", "fold"])
    return out


# ---------------------------------------------------------------- COVID-CT-MD, per slice and per patient
def covid_ct_md(t: pd.DataFrame, pipeline: str = "none") -> pd.DataFrame:
    """The COVID-CT-MD slices as the seed-0 official runs of one pipeline scored them, both methods."""
    return t[(t["part"] == "COVID-CT-MD") & (t["pipeline"] == pipeline) & (t["seed"] == 0)]


def slices_sentence(t: pd.DataFrame) -> str:
    """How COVID-CT-MD is scored: its slices and patients, the slices scored one by one, and the patient score."""
    s = covid_ct_md(t)
    s = s[s["method"] == "ladnn"]
    return (f"COVID-CT-MD: {s[PRED.image].nunique()} slices of {s[PRED.patient].nunique()} patients; scored per "
            f"slice: {int(s[PRED.slice_scored].sum())} (infected COVID-19 slices against CAP and normal slices, all "
            f"with lung fraction >= {MIN_LUNG_FRACTION:g}; `ladnn.dicom.lung_fraction`). A patient's score is the mean "
            "over its slices that show lung.")


def series_figure(t: pd.DataFrame) -> Figure:
    """Each method's COVID probability along every COVID-CT-MD series (seed 0, no AdaBN), one line per patient:
    solid for COVID-19, dashed otherwise. The panels are stacked, each the column's width, with the legend below
    them, and every text is 11 pt or more at the figure's size (8 inches: about the column's width at 100 dpi)."""
    ct = covid_ct_md(t)
    fig = plt.figure(figsize=(8, 6.4), layout="constrained")
    plt.close(fig)  # not an open pyplot figure: it shows once, where the notebook displays it
    ax = fig.subplots(2, 1, sharex=True, sharey=True)
    for a, m in zip(ax, ["baseline", "ladnn"]):
        d = ct[(ct["method"] == m) & ~ct["adabn"].astype(bool)].copy()
        d["slice"] = d.groupby(PRED.patient).cumcount()
        for pid, g in d.groupby(PRED.patient):
            covid = bool(g[PRED.y_true].iloc[0])
            a.plot(g["slice"], g[PRED.p_covid], lw=1.2, label=f"{pid} ({'COVID-19' if covid else 'not COVID'})",
                   ls="-" if covid else "--")
        a.set_title(f"{METHOD_NAMES[m]}: COVID probability along each series", fontsize=12)
        a.set_ylabel("COVID probability", fontsize=11)
        a.tick_params(labelsize=11)
    ax[1].set_xlabel("slice (every second, by slice location)", fontsize=11)
    ax[1].legend(fontsize=11, loc="upper center", bbox_to_anchor=(0.5, -0.24), ncol=3, frameon=False)
    return fig


def real_ct_maps(t: pd.DataFrame, first: pd.Series, external_dir: str = "", n: int = 6
                 ) -> tuple[str, Figure | None]:
    """Grad-CAM++ maps (`ladnn.report.maps.cam_figure`) of `first`'s baseline and LA-DNN runs (a row of
    `maps.first_runs`, named by backbone and dataset) on `n` COVID-CT-MD slices that are scored per slice, COVID-19
    first, spread evenly over each class; with a Markdown line naming the slices. `external_dir`: the COVID-CT-MD
    folder with labels.csv, else $LADNN_EXTERNAL_DIR. Without it: a sentence saying so, and no figure."""
    from ladnn.evaluate import labels_table
    from ladnn.report.maps import cam_figure

    ext = external_dir or os.environ.get("LADNN_EXTERNAL_DIR", "")
    labels = Path(ext) / "labels.csv"
    if not ext or not labels.is_file():
        return "COVID-CT-MD not found (set LADNN_EXTERNAL_DIR to its folder): no maps of real CT in this build", None
    s = covid_ct_md(t)
    s = s[s["method"] == "ladnn"]
    lab = labels_table(labels)
    lab = lab[lab["name"].isin(set(s.loc[s[PRED.slice_scored].astype(bool), PRED.image]))]
    k = max(1, n // 2)
    rows = pd.concat([c.iloc[::max(1, len(c) // k)].head(k) for c in (lab[lab["covid"] == 1], lab[lab["covid"] == 0])])
    fig = cam_figure(first["baseline"], first["ladnn"], rows)
    plt.close(fig)  # not an open pyplot figure: it shows once, where the notebook displays it
    backbone, dataset = first.name
    return f"**{backbone} on {dataset}**, slices: {', '.join(rows['name'])}", fig


def service_warning(run: str | Path, n_boot: int = 2000) -> str:
    """The warning the service shows for `run` (`ladnn.generalisation.new_data_report`: its own figures, its
    recipe's benchmark figures and its external evaluations) as a Markdown warning box: the warning's opening, then
    one bullet per figure behind it."""
    r = FinishedRun(run)
    gen = new_data_report(r.metrics, recipe_figures(r.config, n_boot), r.evaluations(), r.unseen_predictions)
    head = f"**The warning on the service page of `{r.path.name}`:**"
    return f"```{{warning}}\n{head}\n\n{_warning_body(gen['warning'])}\n```"


def _warning_body(warning: str | None) -> str:
    """A service warning in Markdown: its general sentences as a paragraph, the figures behind it (`; `-separated,
    each named "this run, ..." or "recipe, ...") as bullets; no warning: 'none'."""
    import re

    from ladnn.generalisation import NOT_SHOWN

    if not warning:
        return "none"
    if not warning.startswith(NOT_SHOWN):
        return warning
    rest = warning[len(NOT_SHOWN):].strip().rstrip(".")
    items = re.split(r";\s+(?=(?:this run|recipe),)", rest)
    return NOT_SHOWN + "\n\n" + "\n".join(f"- {x[0].upper() + x[1:]}." for x in items if x)


def own_runs_for_page(own: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """`ladnn.report.validity.new_source_table` as the page shows it, narrow enough for the column, and a sentence
    saying what was moved out of it: one backbone named once instead of in every row, and D1's interval given as its
    exact p-value where the positives form too few clusters for one. Columns the page does not know pass as they are."""
    import re

    out, notes = own.copy(), []
    if "backbone" in out and out["backbone"].nunique() == 1:
        notes.append(f"Backbone: {out['backbone'].iloc[0]}.")
        out = out.drop(columns="backbone")
    col = "95% interval (D1)"
    if col in out:
        few = [re.search(r"exact p = ([0-9.]+)", str(v)) if str(v).startswith("none") else None for v in out[col]]
        if any(few):
            out.insert(out.columns.get_loc(col) + 1, "exact p (D1)", [m.group(1) if m else "" for m in few])
            out[col] = ["" if m else v for m, v in zip(few, out[col])]
            clusters = {m2.group(1) for v in own[col] if (m2 := re.search(r"(\d+) COVID-19 cluster", str(v)))}
            k = " or ".join(sorted(clusters)) or "too few"
            notes.append(f"D1's COVID-19 images form {k} cluster{'' if k == '1' else 's'}, too few for an interval: the "
                         "exact permutation p-value stands in its place.")
            if (out[col] == "").all():
                out = out.drop(columns=col)
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = [f"{v:.3f}" if pd.notna(v) else "" for v in out[c]]
    out = out.rename(columns={"AUC (D0 test)": "AUC, D0 test", "AUC (D1, new sources)": "AUC, D1",
                              "accuracy (D1)": "accuracy, D1", "n": "D1 images"})
    return out, " ".join(notes)


# ---------------------------------------------------------------- generated sentences
def _auc_text(r, brief: bool = False) -> str:
    """A table row's AUC in words: with its 95% interval, or, where the set has too few clusters for one, with its
    exact permutation p-value and what such a set could show. `brief`: the p-value alone, where `few_note` says the
    rest once for several rows."""
    if not np.isnan(r["lo"]):
        return f"{r['AUC']:.3f} (95% interval {r['lo']:.3f} to {r['hi']:.3f})"
    if brief:
        return f"{r['AUC']:.3f} (exact p = {r['exact p']:.3f})"
    reach = ("no AUC could reach p < 0.05 with these clusters" if np.isnan(r["AUC needed"]) else
             f"an AUC of {r['AUC needed']:.3f} would be needed for p < 0.05")
    return f"{r['AUC']:.3f} (too few clusters for an interval: exact permutation p = {r['exact p']:.3f}; {reach})"


def few_note(rows: pd.DataFrame) -> str:
    """What the rows without an interval (too few clusters) have in common, said once: the exact permutation test
    stands in for the interval, and the AUC such a set would need for p < 0.05 (none, where no AUC could reach it)."""
    few = rows[rows["lo"].isna()]
    if not len(few):
        return ""
    need = few["AUC needed"].dropna()
    reach = ("no AUC, not even a perfect 1, could reach p < 0.05 on them" if not len(need) else
             f"an AUC of {need.min():.3f} or more would be needed for p < 0.05" if len(need) == len(few) else
             f"on some no AUC could reach p < 0.05, on others an AUC of {need.min():.3f} or more would be needed")
    return (f"Where a set has too few clusters for an interval, the exact permutation p-value stands in its place; "
            f"{reach}.")


def _collections(tab: pd.DataFrame, method: str, pipeline: str) -> pd.DataFrame:
    """The rows of protocol (c), one per held-out collection, of one method and pipeline."""
    rows = [k for k in tab.index if k[0].startswith("(c) held out") and k[1] == method and k[2] == pipeline]
    return tab.loc[rows]


def headline(tab: pd.DataFrame, pipeline: str = "none") -> str:
    """The chapter's opening in generated words: what each method's numbers support on data from elsewhere."""
    lines = []
    for method in ("LA-DNN", "baseline"):
        get = {p: tab.loc[(name, method, pipeline)] for p, name in PROTOCOL_NAMES.items()
               if p in ("official", "D1", "COVID-CT-MD", "COVID-CT-MD patients") and (name, method, pipeline) in tab.index}
        if len(get) < 4:
            continue
        c = _collections(tab, method, pipeline)
        held = (f" With each of D0's {len(c)} negative collections held out in turn (c): AUC "
                f"{c['AUC'].min():.3f} to {c['AUC'].max():.3f} (worst: {c['AUC'].idxmin()[0].split(': ', 1)[1]})."
                if len(c) else "")
        ct, per = get["COVID-CT-MD"], get["COVID-CT-MD patients"]
        lines.append(f"- **{method}**: {_auc_text(get['official'])} on the official split.{held} On CT from "
                     f"elsewhere: {_auc_text(get['D1'], True)} on D1; {_auc_text(ct, True)} per slice on COVID-CT-MD "
                     f"({ct['n']} slices of {ct['clusters']} patients), {per['AUC']:.3f} per patient.")
    if lines:
        lines.append("- Neither external set holds enough COVID-19 patients to show that a model works on it, or "
                     "that it fails: D1's positives are one article that names no patients (so D1 has no "
                     "per-patient score), COVID-CT-MD's are two patients. "
                     + few_note(tab[[k[2] == pipeline and k[0].startswith("(d)") for k in tab.index]])
                     + " What they show is that the models have **not been shown** to work on CT from another "
                     "hospital.")
    return "\n".join(lines)


def lesion_summary(rows: pd.DataFrame) -> str:
    """The claims of some `comparisons` rows said once: which differences are claimed, where none is shown (with the
    range of differences those runs could detect) and where too few clusters allow no test; and their seeds."""
    lo, hi = int(rows["seeds"].min()), int(rows["seeds"].max())
    out = [f"Each is paired over {lo} seeds." if lo == hi else f"Each is paired over {lo} to {hi} seeds."]
    shown = rows[rows["claim"].str.endswith("scores higher")]
    none = rows[rows["claim"].str.startswith("no difference shown")]
    few = rows[rows["claim"] == "too few clusters to test"]
    if len(shown):
        out.append(f"A difference is shown on {len(shown)} of them.")
    if len(none):
        det = none["detectable"].dropna()
        size = (f": these runs would detect a difference of {det.min():.3f} to {det.max():.3f} or more there (80% "
                "power), so a smaller one may exist unseen" if len(det) else "")
        out.append(f"No difference is shown on {len(none)}{size}.")
    if len(few):
        out.append(f"{len(few)} rest on too few clusters for a test.")
    return " ".join(out)


def verdict(tab: pd.DataFrame, cmp: pd.DataFrame, sel: pd.DataFrame, after: str) -> str:
    """Which pipeline validation chose, where each method stands against the moonshot's thresholds, and what the
    paired comparisons of lesion attention support (`comparisons`: seeds, Holm's adjustment), in generated words."""
    best = str(sel.index[0])
    lines = [f"- **Choice.** On protocol (c)'s validation parts, the candidate with the highest mean validation AUC "
             f"(LA-DNN) is **{best}** ({sel.iloc[0]['mean val AUC']:.3f}; today's pipeline "
             f"{sel.loc['none', 'mean val AUC']:.3f})." if "none" in sel.index else ""]
    if best == "none":
        lines.append(f"- No candidate beats today's pipeline there; the runner-up, **{after}**, is shown as the "
                     "\"after\" so that the change is measured anyway.")
    reached, shown = False, []
    for pipe in dict.fromkeys([best, second_of(sel), after]):
        for prot, goal in MOONSHOT.items():
            key = (PROTOCOL_NAMES[prot], "LA-DNN", pipe)
            if key in tab.index:
                r = tab.loc[key]
                if r["AUC"] < goal:
                    word = "not reached."
                elif np.isnan(r["lo"]):
                    word = "reached by the point estimate, which this set cannot tell from chance."
                else:
                    word = "reached." if r["lo"] >= goal else "reached by the point estimate, not by its interval."
                    reached |= r["lo"] >= goal
                shown.append(key)
                lines.append(f"- **{prot}, {pipe}.** LA-DNN {_auc_text(r, True)} against the goal of {goal:.2f}: "
                             f"{word}")
    if shown and tab.loc[shown, "lo"].isna().any():
        lines.append(f"- {few_note(tab.loc[shown])}")
    if not reached:
        lines.append("- **Nothing shown to transfer.** No candidate reaches the goals with an interval above them. "
                     "That matches the published record: CT classifiers trained on one collection scored close to "
                     "chance (AUC near 0.5) on collections outside their training data "
                     "{cite}`nguyen2021generalisation`.")
    lesion = cmp[cmp.index.get_level_values("difference") == "LA-DNN - baseline, none"]
    if len(lesion):
        lines.append(f"- **Lesion attention.** {len(lesion)} parts compare LA-DNN with the baseline (pipeline none), "
                     f"among {cmp.attrs.get('family', len(cmp))} paired comparisons with a p-value in section 4's table, "
                     "Holm-adjusted. " + lesion_summary(lesion))
        for (prot, _), d in lesion.iterrows():
            ci = "" if np.isnan(d["lo"]) else f" (95% interval {d['lo']:+.3f} to {d['hi']:+.3f})"
            said = "" if d["claim"].startswith(("no difference shown", "too few")) else f": {d['claim']}"
            lines.append(f"  - {prot}: {d['AUC difference']:+.3f}{ci}{said}.")
    return "\n".join(x for x in lines if x)
