"""The chapter "New sources": the official split against the unseen-source protocol (ladnn.sources), for both methods,
before and after an input pipeline, with the metadata classifier under both protocols.

The fold runs come from `benchmarks/source_protocol.py` (its two CSVs in ladnn/resources/); the metadata classifier
is fitted here. Every interval resamples whole sources within each class (`ladnn.metrics`)."""
from __future__ import annotations

import pandas as pd

from ladnn.generalisation import auc_summary, bench_predictions, bench_runs, recipe_key  # noqa: F401 (re-exported)
from ladnn.metrics import paired_difference
from ladnn.report import METHOD_NAMES as REPORT_METHOD_NAMES

# The candidate input pipelines, name: (Config.preprocess, Config.augment).
PIPELINES = {
    "none": ([], "paper"),
    "crop": (["crop"], "paper"),
    "gray": (["gray"], "paper"),
    "clahe": (["clahe"], "paper"),
    "jpeg": (["jpeg"], "paper"),
    "strong": ([], "strong"),
    "gray+jpeg": (["gray", "jpeg"], "paper"),
    "all": (["crop", "gray", "clahe", "jpeg"], "strong"),
}
METHOD_NAMES = {**REPORT_METHOD_NAMES, "metadata": "metadata classifier"}
PROTOCOL_NAMES = {"official": "official split (D0 test)", "source": "unseen sources (5 folds, D0 + D1)"}


def pipeline_name(preprocess: list[str], augment: str) -> str:
    """The candidate name of a Config's pipeline (or its fields spelled out when it is no candidate)."""
    match = [n for n, (pre, aug) in PIPELINES.items() if list(preprocess) == pre and augment == aug]
    return match[0] if match else f"{'+'.join(preprocess) or 'none'} / {augment} augmentation"


def profile_pipeline(runs: pd.DataFrame) -> str:
    """The pipeline of a profile's runs (the runs table of `ladnn.rundir.runs_table`)."""
    r = runs.iloc[0]
    return pipeline_name(list(r.get("preprocess", []) or []), r.get("augment", "paper"))


# ---------------------------------------------------------------- choosing the pipeline on validation folds
def selection(runs: pd.DataFrame, method: str = "ladnn") -> pd.DataFrame:
    """Each candidate's validation AUC and COVID loss per source fold and their means (the validation fold of the
    run that tests fold k is fold k + 1: other sources than its test fold). Candidates are ranked by mean validation
    AUC; only candidates with every fold count."""
    r = runs[(runs["protocol"] == "source") & (runs["method"] == method) & (runs["seed"] == 0)]
    per = r.pivot_table(index="candidate", columns="fold", values="val_auc")
    per.columns = [f"val AUC, test fold {c}" for c in per.columns]
    out = pd.DataFrame({"preprocess": r.groupby("candidate")["preprocess"].first().fillna(""),
                        "augment": r.groupby("candidate")["augment"].first(),
                        "folds": r.groupby("candidate")["fold"].nunique(),
                        "mean val AUC": r.groupby("candidate")["val_auc"].mean(),
                        "mean val COVID loss": r.groupby("candidate")["val_covid_loss"].mean()}).join(per)
    return out.sort_values("mean val AUC", ascending=False)


def chosen(runs: pd.DataFrame, method: str = "ladnn") -> str:
    """The candidate with the highest mean validation AUC over complete folds (never the test folds)."""
    sel = selection(runs, method)
    full = sel[sel["folds"] == sel["folds"].max()]
    return str(full.index[0])


def best_alternative(runs: pd.DataFrame, method: str = "ladnn") -> str:
    """The candidate ranked first on the validation folds among those that change today's pipeline: the "after"
    the chapter compares when today's pipeline itself wins."""
    sel = selection(runs, method)
    full = sel[(sel["folds"] == sel["folds"].max()) & (sel.index != "none")]
    return str(full.index[0]) if len(full) else "none"


def per_fold_choice(runs: pd.DataFrame, method: str = "ladnn") -> pd.Series:
    """The candidate each outer fold would choose from its own validation fold alone (the nested choice): if they
    agree with `chosen`, choosing once for all folds told the test folds nothing that their own runs would not."""
    sel = selection(runs, method)
    cols = [c for c in sel.columns if c.startswith("val AUC, test fold")]
    return sel[cols].idxmax()


# ---------------------------------------------------------------- the metadata classifier under both protocols
def metadata_predictions(table: pd.DataFrame, meta: pd.DataFrame, folds: int = 5, seed: int = 0) -> pd.DataFrame:
    """The shortcut baseline (file format, colour mode, size, file size, aspect ratio; ladnn.report.leakage) scored
    like the models: trained on the official D0 training split and tested on D0's test split, and trained on the
    other source folds (training and validation) and tested on each source fold in turn."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from ladnn.report.leakage import metadata_features
    from ladnn.sources import source_folds, source_groups

    x = metadata_features(meta)
    y, group = table["covid"].astype(int), source_groups(table)
    out = []
    d0 = table["dataset"] == "D0"
    tr, te = d0 & (table["split"] == "train"), d0 & (table["split"] == "test")
    clf = HistGradientBoostingClassifier(max_iter=200, random_state=seed).fit(x[tr], y[tr])
    out.append(pd.DataFrame({"protocol": "official", "fold": -1, "image": table.loc[te, "name"], "y_true": y[te],
                             "p_covid": clf.predict_proba(x[te])[:, 1], "source_group": group[te]}))
    f = source_folds(table, folds, seed)
    for k in range(folds):
        tr, te = f != k, f == k
        clf = HistGradientBoostingClassifier(max_iter=200, random_state=seed).fit(x[tr], y[tr])
        out.append(pd.DataFrame({"protocol": "source", "fold": k, "image": table.loc[te, "name"], "y_true": y[te],
                                 "p_covid": clf.predict_proba(x[te])[:, 1], "source_group": group[te]}))
    df = pd.concat(out, ignore_index=True)
    df["candidate"], df["method"], df["seed"] = "none", "metadata", seed
    return df


# ---------------------------------------------------------------- tables
def protocol_table(preds: pd.DataFrame, candidates: list[str], seed: int = 0) -> pd.DataFrame:
    """AUC under each protocol for each method and candidate pipeline (seed `seed`), metadata classifier included."""
    rows = []
    for (prot, cand, method), p in preds[preds["seed"] == seed].groupby(["protocol", "candidate", "method"]):
        if cand not in candidates:
            continue
        rows.append({"protocol": PROTOCOL_NAMES[prot], "method": METHOD_NAMES[method],
                     "pipeline": "file metadata" if method == "metadata" else cand, **auc_summary(p)})
    return pd.DataFrame(rows).set_index(["protocol", "method", "pipeline"]).sort_index()


def _aligned(preds: pd.DataFrame, protocol: str, cand: str, method: str) -> pd.DataFrame:
    p = preds[(preds["protocol"] == protocol) & (preds["candidate"] == cand) & (preds["method"] == method)]
    return p.pivot_table(index="image", columns="seed", values="p_covid")


def paired(preds: pd.DataFrame, protocol: str, a: tuple[str, str], b: tuple[str, str], n_boot: int = 2000) -> dict:
    """AUC(a) - AUC(b) on the same images under one protocol, a = (candidate, method): the paired bootstrap over
    whole sources (and over seeds when both have several), `ladnn.metrics.paired_difference`."""
    pa, pb = _aligned(preds, protocol, *a), _aligned(preds, protocol, *b)
    seeds = sorted(set(pa.columns) & set(pb.columns))
    images = pa.index.intersection(pb.index)
    if not seeds or not len(images):
        raise ValueError(f"no common runs for {a} and {b} under protocol {protocol!r}")
    ref = preds[preds["protocol"] == protocol].drop_duplicates("image").set_index("image").loc[images]
    return paired_difference(ref["y_true"].to_numpy(), pa.loc[images, seeds].to_numpy().T,
                             pb.loc[images, seeds].to_numpy().T, ref["source_group"].to_numpy(), n_boot=n_boot)


def comparisons(preds: pd.DataFrame, after: str, before: str = "none") -> pd.DataFrame:
    """The paired differences the chapter reads: the pipeline's effect for each method, and LA-DNN against the
    baseline before and after it, under each protocol where both runs exist."""
    pairs = [(f"LA-DNN - baseline, {before}", (before, "ladnn"), (before, "baseline"))]
    if after != before:
        pairs += [(f"{after} - {before}, LA-DNN", (after, "ladnn"), (before, "ladnn")),
                  (f"{after} - {before}, baseline", (after, "baseline"), (before, "baseline")),
                  (f"LA-DNN - baseline, {after}", (after, "ladnn"), (after, "baseline"))]
    rows = []
    for prot in ("official", "source"):
        for name, a, b in pairs:
            try:
                d = paired(preds, prot, a, b)
            except ValueError:
                continue
            rows.append({"protocol": PROTOCOL_NAMES[prot], "difference": name, "AUC difference": d["auc_diff"],
                         "95% interval": f"{d['auc_diff_ci'][0]:+.3f} to {d['auc_diff_ci'][1]:+.3f}",
                         "lo": d["auc_diff_ci"][0], "hi": d["auc_diff_ci"][1], "p": d["p_auc"],
                         "seeds": d["pairs"], "sources": d["clusters"]})
    cols = ["protocol", "difference", "AUC difference", "95% interval", "lo", "hi", "p", "seeds", "sources"]
    return pd.DataFrame(rows, columns=cols).set_index(["protocol", "difference"])


def candidates_table(runs: pd.DataFrame, preds: pd.DataFrame, meta_auc: float, method: str = "ladnn") -> pd.DataFrame:
    """Per candidate: the validation AUC it was chosen by, then (reported only, never used to choose) its AUC on
    the unseen-source test folds with its interval, its paired difference from today's pipeline, and the metadata
    classifier's advantage over it (metadata AUC - model AUC; positive: the file alone still does better)."""
    sel = selection(runs, method)
    src = preds[(preds["protocol"] == "source") & (preds["method"] == method) & (preds["seed"] == 0)]
    rows = []
    for cand, s in sel.iterrows():
        p = src[src["candidate"] == cand]
        a = auc_summary(p)
        row = {"pipeline": cand, "mean val AUC": s["mean val AUC"], "unseen-source AUC": a["AUC"],
               "95% interval": a["95% interval"], "metadata advantage": meta_auc - a["AUC"]}
        if cand != "none" and "none" in sel.index:
            d = paired(preds, "source", (cand, method), ("none", method))
            row.update({"difference from none": d["auc_diff"],
                        "difference interval": f"{d['auc_diff_ci'][0]:+.3f} to {d['auc_diff_ci'][1]:+.3f}",
                        "lo": d["auc_diff_ci"][0]})
        rows.append(row)
    return pd.DataFrame(rows).set_index("pipeline")


# ---------------------------------------------------------------- generated sentences
def verdict(runs: pd.DataFrame, cmp: pd.DataFrame, meta: pd.DataFrame, profile_pipeline: str) -> str:
    """The chapter's answer in generated words: which pipeline validation chose, what the chosen pipeline (or, when
    today's wins, the runner-up) does on unseen sources and on the official split, whether lesion attention helps
    more or less on new sources, the shortcut baseline, and what the quick profile uses."""
    best = chosen(runs)
    after = best if best != "none" else best_alternative(runs)
    nested = per_fold_choice(runs)
    src, off = PROTOCOL_NAMES["source"], PROTOCOL_NAMES["official"]

    def diff(prot: str, name: str) -> pd.Series | None:
        return cmp.loc[(prot, name)] if (prot, name) in cmp.index else None

    lines = [(f"- **Choice.** On the validation folds, the pipeline with the highest mean AUC is **{best}**; "
              f"{int((nested == best).sum())} of {len(nested)} outer folds would choose it from their own "
              "validation fold alone.")]
    if best == "none":
        lines.append(f"- **Effect.** No candidate beats today's pipeline on the validation folds. The runner-up, "
                     f"**{after}**, is compared below so that the effect of changing the input is measured anyway.")
    d, o = diff(src, f"{after} - none, LA-DNN"), diff(off, f"{after} - none, LA-DNN")
    if d is not None:
        verdict_text = ("an improvement larger than its interval." if d["lo"] > 0 else
                        "a loss larger than its interval." if d["hi"] < 0 else
                        "the interval includes zero: no change is shown.")
        lines.append(f"- **Unseen sources.** LA-DNN with {after} against today's pipeline: AUC difference "
                     f"{d['AUC difference']:+.3f} (95% interval {d['95% interval']}), {verdict_text}")
    if o is not None:
        lines.append(f"- **Official split.** The same change moves LA-DNN's official test AUC by "
                     f"{o['AUC difference']:+.3f} (95% interval {o['95% interval']}).")
    for cand in dict.fromkeys(("none", after)):
        d_src, d_off = diff(src, f"LA-DNN - baseline, {cand}"), diff(off, f"LA-DNN - baseline, {cand}")
        if d_src is not None and d_off is not None:
            more = ("more" if d_src["AUC difference"] > d_off["AUC difference"] else "less")
            lines.append(f"- **Lesion attention ({cand}).** LA-DNN - baseline is {d_off['AUC difference']:+.3f} "
                         f"({d_off['95% interval']}) on the official split and {d_src['AUC difference']:+.3f} "
                         f"({d_src['95% interval']}) on unseen sources: the point estimate is {more} favourable on "
                         "new sources, and both intervals say how little that means.")
    m = meta.set_index("protocol")
    lines.append(f"- **Shortcut baseline.** File metadata alone reaches AUC {m.loc['official', 'AUC']:.3f} on the "
                 f"official split and {m.loc['source', 'AUC']:.3f} on unseen sources.")
    rule = adopt(cmp, best)
    lines.append(f"- **Default.** The rule (adopt the chosen pipeline when it raises LA-DNN's unseen-source AUC and "
                 f"its official-split difference is not entirely below zero) gives **{rule}**; the quick profile uses "
                 f"**{profile_pipeline or 'none'}**" + ("." if rule == profile_pipeline else
                                                        ", which does not follow the rule: see the README."))
    return "\n".join(lines)


def adopt(cmp: pd.DataFrame, best: str) -> str:
    """The pipeline the quick profile should use: `best` when LA-DNN's paired unseen-source difference from today's
    pipeline is positive and its official-split difference is not entirely below zero (it costs no more than its
    interval there), else "none"."""
    if best == "none":
        return "none"
    src, off = (PROTOCOL_NAMES[p] for p in ("source", "official"))
    name = f"{best} - none, LA-DNN"
    if (src, name) not in cmp.index or (off, name) not in cmp.index:
        return "none"
    return best if cmp.loc[(src, name), "AUC difference"] > 0 and cmp.loc[(off, name), "hi"] >= 0 else "none"


def metadata_summary(mp: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([{"protocol": prot, **auc_summary(p)} for prot, p in mp.groupby("protocol")])
