"""The chapter "New sources": every protocol of ladnn.sources side by side for both methods, before and after the
pipeline chosen on protocol (c)'s validation parts, the metadata classifier as the trivial predictor, and what the
grouping of the old protocol hid.

The runs come from benchmarks/source_protocol.py and their scores, plain and with AdaBN, from benchmarks/transfer.py
(ladnn/resources/). Every interval resamples the groups the protocol holds out: whole patients for the official
split and the external sets, linked patient-and-document groups for protocols (b) and (c)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from ladnn.generalisation import auc_summary, external_slices  # noqa: F401 (re-exported for the chapter)
from ladnn.metrics import bootstrap_ci, paired_difference
from ladnn.report import METHOD_NAMES as REPORT_METHOD_NAMES

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
}
METHOD_NAMES = {**REPORT_METHOD_NAMES, "metadata": "metadata classifier"}
PROTOCOL_NAMES = {"official": "(a) official split", "grouped": "(b) grouped by patient and document",
                  "collection": "(c) leave one collection out", "D1": "(d) D1, trained on D0",
                  "COVID-CT-MD": "(d) COVID-CT-MD per slice", "COVID-CT-MD patients": "(d) COVID-CT-MD per patient"}
LEVELS = {"official": "patients", "grouped": "groups", "collection": "groups", "D1": "patients",
          "COVID-CT-MD": "patients", "COVID-CT-MD patients": "patients"}
MOONSHOT = {"COVID-CT-MD": 0.80, "D1": 0.75}


def pipeline_name(preprocess: list[str], augment: str, finetune: str = "top") -> str:
    """The candidate name of a Config's pipeline (or its fields spelled out when it is no candidate)."""
    match = [n for n, (pre, aug, ft) in PIPELINES.items() if list(preprocess) == pre and augment == aug
             and finetune == ft]
    return match[0] if match else f"{'+'.join(preprocess) or 'none'} / {augment} augmentation / {finetune}"


def profile_pipeline(runs: pd.DataFrame) -> str:
    """The pipeline of a profile's runs (the runs table of `ladnn.rundir.runs_table`)."""
    r = runs.iloc[0]
    return pipeline_name(list(r.get("preprocess", []) or []), r.get("augment", "paper"), r.get("finetune", "top"))


def with_adabn(transfer: pd.DataFrame) -> pd.DataFrame:
    """The transfer table with one candidate name per (pipeline, AdaBN): `none`, `none+AdaBN`, ..."""
    t = transfer.copy()
    t["pipeline"] = t["candidate"] + np.where(t["adabn"].astype(bool), "+AdaBN", "")
    return t


# ---------------------------------------------------------------- the parts each protocol scores
def _patient_or(p: pd.DataFrame, fallback: pd.Series) -> pd.Series:
    """The resampling cluster of an image: its patient, or `fallback` where the records name none."""
    known = p["patient"].notna() & (p["patient"].astype(str) != "")
    return p["patient"].where(known, fallback)


def parts(t: pd.DataFrame, pipeline: str, method: str) -> dict[str, pd.DataFrame]:
    """The predictions each protocol scores for one pipeline and method (seed 0), keyed like PROTOCOL_NAMES."""
    t = t[(t["pipeline"] == pipeline) & (t["method"] == method) & (t["seed"] == 0)]
    out = {}
    for prot in ("official", "grouped", "collection"):
        q = t[(t["protocol"] == prot) & (t["part"] == "test")]
        if len(q):
            out[prot] = q if prot != "official" else q.assign(group=_patient_or(q, q["image"]))
    off = t[t["protocol"] == "official"]
    if (off["part"] == "D1").any():
        d1 = off[off["part"] == "D1"]
        out["D1"] = d1.assign(group=_patient_or(d1, d1["group"]))  # an article without patient ids: one cluster
    if (off["part"] == "COVID-CT-MD").any():
        out["COVID-CT-MD"], out["COVID-CT-MD patients"] = external_slices(off[off["part"] == "COVID-CT-MD"])
    return out


def _auc(p: pd.DataFrame, n_boot: int) -> dict:
    ci = bootstrap_ci(p["y_true"], p["p_covid"], p["group"], n_boot=n_boot)["auc"]
    return {"AUC": skm.roc_auc_score(p["y_true"], p["p_covid"]), "lo": ci[0], "hi": ci[1], "n": len(p),
            "clusters": p["group"].nunique()}


def protocol_table(t: pd.DataFrame, pipelines: list[str], methods=("baseline", "ladnn"), n_boot: int = 2000,
                   meta: pd.DataFrame | None = None) -> pd.DataFrame:
    """AUC with its interval for every protocol x method x pipeline, the worst held-out collection of (c)
    included; `meta` (metadata_predictions) adds the metadata classifier under (a), (b) and (c)."""
    rows = []

    def add(prot: str, method: str, pipe: str, p: pd.DataFrame, name: str | None = None) -> None:
        rows.append({"protocol": name or PROTOCOL_NAMES[prot], "method": METHOD_NAMES[method], "pipeline": pipe,
                     **_auc(p, n_boot), "resampled": LEVELS.get(prot, "groups")})

    for pipe in pipelines:
        for method in methods:
            for prot, p in parts(t, pipe, method).items():
                add(prot, method, pipe, p)
                if prot == "collection":
                    w = worst_collection(p, n_boot)
                    add(prot, method, pipe, p[p["fold"] == w["fold"]], f"(c) worst: {w['held-out collection']}")
    if meta is not None:
        for prot, p in meta.groupby("protocol"):
            add(prot, "metadata", "file metadata", p)
    return pd.DataFrame(rows).set_index(["protocol", "method", "pipeline"])


def collection_table(p: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """Protocol (c) per held-out collection (one fold each), worst first."""
    rows = []
    for fold, f in p.groupby("fold"):
        held = ", ".join(sorted(f.loc[f["y_true"] == 0, "collection"].unique()))
        rows.append({"held-out collection": held, "fold": fold, "negatives": int((f["y_true"] == 0).sum()),
                     "positives": int(f["y_true"].sum()), **_auc(f, n_boot)})
    return pd.DataFrame(rows).sort_values("AUC").reset_index(drop=True)


def worst_collection(p: pd.DataFrame, n_boot: int = 2000) -> pd.Series:
    return collection_table(p, n_boot).iloc[0]


# ---------------------------------------------------------------- choosing on protocol (c)'s validation parts
def selection(t: pd.DataFrame, method: str = "ladnn") -> pd.DataFrame:
    """Each candidate's validation AUC per fold of protocol (c) and the mean, ranked by the mean; only candidates
    with every fold count. The validation parts are new patients of the collections left in training."""
    v = t[(t["protocol"] == "collection") & (t["part"] == "val") & (t["method"] == method) & (t["seed"] == 0)]
    aucs = v.groupby(["pipeline", "fold"]).apply(lambda g: skm.roc_auc_score(g["y_true"], g["p_covid"]),
                                                 include_groups=False).unstack()
    aucs.columns = [f"val AUC, fold {c}" for c in aucs.columns]
    aucs = aucs.dropna()
    aucs.insert(0, "mean val AUC", aucs.mean(axis=1))
    return aucs.sort_values("mean val AUC", ascending=False)


def chosen(t: pd.DataFrame, method: str = "ladnn") -> str:
    return str(selection(t, method).index[0])


def after_pipeline(t: pd.DataFrame, method: str = "ladnn") -> str:
    """The chosen pipeline, or the runner-up when today's ('none') wins, so a change is measured either way."""
    sel = selection(t, method)
    return str(sel.index[0] if sel.index[0] != "none" else sel.index[min(1, len(sel) - 1)])


# ---------------------------------------------------------------- paired differences
def paired(t: pd.DataFrame, prot: str, a: tuple[str, str], b: tuple[str, str], n_boot: int = 2000) -> dict:
    """AUC(a) - AUC(b) on the same images of one protocol, a = (pipeline, method); paired bootstrap over its
    groups."""
    pa, pb = parts(t, *a).get(prot), parts(t, *b).get(prot)
    if pa is None or pb is None:
        raise ValueError(f"no runs of {a} and {b} under {prot}")
    key = "patient" if prot == "COVID-CT-MD patients" else "image"
    m = pa.merge(pb[[key, "p_covid"]], on=key, suffixes=("_a", "_b"))
    return paired_difference(m["y_true"], m["p_covid_a"], m["p_covid_b"], m["group"], n_boot=n_boot)


def comparisons(t: pd.DataFrame, after: str, before: str = "none", n_boot: int = 2000) -> pd.DataFrame:
    """LA-DNN - baseline (before and after), and after - before for each method, under every protocol that has
    both."""
    pairs = [(f"LA-DNN - baseline, {before}", (before, "ladnn"), (before, "baseline")),
             (f"LA-DNN - baseline, {after}", (after, "ladnn"), (after, "baseline")),
             (f"{after} - {before}, LA-DNN", (after, "ladnn"), (before, "ladnn")),
             (f"{after} - {before}, baseline", (after, "baseline"), (before, "baseline"))]
    rows = []
    for prot, label in PROTOCOL_NAMES.items():
        for name, a, b in pairs:
            try:
                d = paired(t, prot, a, b, n_boot)
            except ValueError:
                continue
            rows.append({"protocol": label, "difference": name, "AUC difference": d["auc_diff"],
                         "lo": d["auc_diff_ci"][0], "hi": d["auc_diff_ci"][1], "p": d["p_auc"]})
    return pd.DataFrame(rows, columns=["protocol", "difference", "AUC difference", "lo", "hi", "p"]).set_index(
        ["protocol", "difference"])


# ---------------------------------------------------------------- the metadata classifier under (a), (b), (c)
def metadata_predictions(table: pd.DataFrame, meta: pd.DataFrame, folds: int = 5, seed: int = 0) -> pd.DataFrame:
    """The shortcut baseline (file format, colour mode, size, file size, aspect ratio; ladnn.report.leakage) scored
    like the models under the official split and protocols (b) and (c)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from ladnn.report.leakage import metadata_features
    from ladnn.sources import collection_folds, grouped_folds, linked_groups

    x = metadata_features(meta)
    y, group = table["covid"].astype(int), linked_groups(table)
    patient = (table["dataset"] + ":" + table["patient"]).where(table["patient"] != "", table["name"])
    out = []

    def fit(tr, te, prot: str, fold: int, g: pd.Series) -> None:
        clf = HistGradientBoostingClassifier(max_iter=200, random_state=seed).fit(x[tr], y[tr])
        out.append(pd.DataFrame({"protocol": prot, "fold": fold, "image": table.loc[te, "name"], "y_true": y[te],
                                 "p_covid": clf.predict_proba(x[te])[:, 1], "group": g[te],
                                 "collection": table.loc[te, "collection"]}))

    d0 = table["dataset"] == "D0"
    fit(d0 & (table["split"] == "train"), d0 & (table["split"] == "test"), "official", -1, patient)
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


def subset_aucs(p: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """AUC of a protocol's pooled predictions against each negative collection alone and without each: how much of
    the pooled figure one collection carries."""
    rows = [{"negatives": "all", **_auc(p, n_boot)}]
    for c in sorted(p.loc[p["y_true"] == 0, "collection"].unique()):
        keep = (p["y_true"] == 1) | (p["collection"] == c)
        rows.append({"negatives": f"only {c}", **_auc(p[keep], n_boot)})
        drop = (p["y_true"] == 1) | (p["collection"] != c)
        rows.append({"negatives": f"all but {c}", **_auc(p[drop], n_boot)})
    return pd.DataFrame(rows).set_index("negatives")


# ---------------------------------------------------------------- generated sentences
def _ci(r) -> str:
    return f"{r['AUC']:.3f} (95% interval {r['lo']:.3f} to {r['hi']:.3f})"


def headline(tab: pd.DataFrame, pipeline: str = "none") -> str:
    """The chapter's opening in generated words: what each method does on CT from elsewhere."""
    lines = []
    for method in ("LA-DNN", "baseline"):
        get = {p: tab.loc[(PROTOCOL_NAMES[p], method, pipeline)] for p in ("official", "D1", "COVID-CT-MD",
                                                                             "COVID-CT-MD patients")
               if (PROTOCOL_NAMES[p], method, pipeline) in tab.index}
        if len(get) < 4:
            continue
        lines.append(f"- **{method}**: {_ci(get['official'])} on the official split; on CT from elsewhere "
                     f"{_ci(get['D1'])} on D1 and {_ci(get['COVID-CT-MD'])} per slice on COVID-CT-MD "
                     f"({get['COVID-CT-MD']['n']} slices of {get['COVID-CT-MD']['clusters']} patients), "
                     f"{get['COVID-CT-MD patients']['AUC']:.3f} per patient ({get['COVID-CT-MD patients']['n']} "
                     "patients: an interval this wide says almost nothing).")
    return "\n".join(lines)


def verdict(tab: pd.DataFrame, cmp: pd.DataFrame, sel: pd.DataFrame, after: str) -> str:
    """Which pipeline validation chose, whether it transfers (the moonshot's thresholds), and whether lesion
    attention helps transfer, in generated words."""
    best = str(sel.index[0])
    lines = [f"- **Choice.** On protocol (c)'s validation parts, the candidate with the highest mean validation AUC "
             f"(LA-DNN) is **{best}** ({sel.iloc[0]['mean val AUC']:.3f}; today's pipeline "
             f"{sel.loc['none', 'mean val AUC']:.3f})." if "none" in sel.index else ""]
    if best == "none":
        lines.append(f"- No candidate beats today's pipeline there; the runner-up, **{after}**, is shown as the "
                     "\"after\" so that the change is measured anyway.")
    for prot, goal in MOONSHOT.items():
        key = (PROTOCOL_NAMES[prot], "LA-DNN", after)
        if key in tab.index:
            r = tab.loc[key]
            lines.append(f"- **{prot}, {after}.** LA-DNN {_ci(r)} against the goal of {goal:.2f}: "
                         + ("reached." if r["AUC"] >= goal else "not reached."))
    for prot in ("collection", "D1", "COVID-CT-MD"):
        k = (PROTOCOL_NAMES[prot], "LA-DNN - baseline, none")
        if k in cmp.index:
            d = cmp.loc[k]
            word = ("helps" if d["lo"] > 0 else "hurts" if d["hi"] < 0 else "neither helps nor hurts measurably")
            lines.append(f"- **Lesion attention, {PROTOCOL_NAMES[prot]}.** LA-DNN - baseline = "
                         f"{d['AUC difference']:+.3f} (95% interval {d['lo']:+.3f} to {d['hi']:+.3f}): it {word}.")
    return "\n".join(x for x in lines if x)
