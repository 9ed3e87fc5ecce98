"""The chapter "New sources": every protocol of ladnn.sources side by side for both methods, before and after the
pipeline chosen on protocol (c)'s validation parts, the metadata classifier as the trivial predictor, and what the
grouping of the old protocol hid.

The runs come from benchmarks/source_protocol.py and their scores, plain and with AdaBN, from benchmarks/transfer.py
(ladnn/resources/). Every interval resamples the groups the protocol holds out: whole patients for the official
split and the external sets, linked patient-and-document groups for protocols (b) and (c). The AUCs and their
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
from ladnn.metrics import auc, paired_difference
from ladnn.report import METHOD_NAMES as REPORT_METHOD_NAMES
from ladnn.rundir import FinishedRun
from ladnn.scores import PRED, auc_interval, collection_table, external_slices, subset_aucs

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


def parts(t: pd.DataFrame, pipeline: str, method: str) -> dict[str, pd.DataFrame]:
    """The predictions each protocol scores for one pipeline and method (seed 0), keyed like PROTOCOL_NAMES."""
    t = t[(t["pipeline"] == pipeline) & (t["method"] == method) & (t["seed"] == 0)]
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


def protocol_table(t: pd.DataFrame, pipelines: list[str], methods=("baseline", "ladnn"), n_boot: int = 2000,
                   meta: pd.DataFrame | None = None) -> pd.DataFrame:
    """AUC with its interval (`ladnn.scores.auc_interval`, resampling each protocol's groups) for every protocol x
    method x pipeline, the worst held-out collection of (c) included; `meta` (metadata_predictions) adds the
    metadata classifier under (a), (b) and (c)."""
    rows = []

    def add(prot: str, method: str, pipe: str, p: pd.DataFrame, name: str | None = None) -> None:
        rows.append({"protocol": name or PROTOCOL_NAMES[prot], "method": METHOD_NAMES[method], "pipeline": pipe,
                     **auc_interval(p, n_boot=n_boot).row(), "resampled": LEVELS.get(prot, "groups")})

    for pipe in pipelines:
        for method in methods:
            for prot, p in parts(t, pipe, method).items():
                add(prot, method, pipe, p)
                if prot == "collection":
                    w = collection_table(p, n_boot).iloc[0]
                    add(prot, method, pipe, p[p[PRED.fold] == w[PRED.fold]], f"(c) worst: {w['held-out collection']}")
    if meta is not None:
        for prot, p in meta.groupby("protocol"):
            add(prot, "metadata", "file metadata", p)
    return pd.DataFrame(rows).set_index(["protocol", "method", "pipeline"])


def collection_tables(t: pd.DataFrame, n_boot: int = 2000, pipeline: str = "none") -> dict[str, pd.DataFrame]:
    """Protocol (c) per held-out collection, worst first (`ladnn.scores.collection_table`), for each method: method
    name -> table."""
    return {METHOD_NAMES[m]: collection_table(parts(t, pipeline, m)["collection"], n_boot)
            for m in ("baseline", "ladnn")}


def protocol_figure(tab: pd.DataFrame) -> Figure:
    """Every row of `protocol_table` as its AUC with the 95% interval, top to bottom in the table's order; chance
    (0.5) dashed."""
    fig = plt.figure(figsize=(8, 6))
    plt.close(fig)  # not an open pyplot figure: it shows once, where the notebook displays it
    ax = fig.subplots()
    r = tab.reset_index()
    labels = r["protocol"] + " | " + r["method"] + " | " + r["pipeline"]
    ax.errorbar(r["AUC"], range(len(r)), xerr=[r["AUC"] - r["lo"], r["hi"] - r["AUC"]], fmt="o", capsize=2)
    ax.set_yticks(range(len(r)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0.5, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("AUC (95% interval at each protocol's level)")
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


def after_pipeline(t: pd.DataFrame, method: str = "ladnn") -> str:
    """The chosen pipeline, or the runner-up when today's ('none') wins, so a change is measured either way."""
    sel = selection(t, method)
    return str(sel.index[0] if sel.index[0] != "none" else sel.index[min(1, len(sel) - 1)])


def candidates_sentence(sel: pd.DataFrame) -> str:
    """Which candidates `selection` measured on every fold, and which of PIPELINES it did not."""
    measured = {c.removesuffix("+AdaBN") for c in sel.index}
    missing = [c for c in PIPELINES if c not in measured]
    return (f"Candidates measured on every fold: {', '.join(sel.index)}. Not measured under the corrected protocols "
            f"in this benchmark: {', '.join(missing) or 'none'} (nor training on D0+D1, which would leave no D1 to "
            "test on).")


# ---------------------------------------------------------------- paired differences
def paired(t: pd.DataFrame, prot: str, a: tuple[str, str], b: tuple[str, str], n_boot: int = 2000) -> dict:
    """AUC(a) - AUC(b) on the same images of one protocol, a = (pipeline, method); paired bootstrap over its
    groups."""
    pa, pb = parts(t, *a).get(prot), parts(t, *b).get(prot)
    if pa is None or pb is None:
        raise ValueError(f"no runs of {a} and {b} under {prot}")
    key = PRED.patient if prot == "COVID-CT-MD patients" else PRED.image
    m = pa.merge(pb[[key, PRED.p_covid]], on=key, suffixes=("_a", "_b"))
    return paired_difference(m[PRED.y_true], m[PRED.p_covid + "_a"], m[PRED.p_covid + "_b"], m[PRED.group],
                             n_boot=n_boot)


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
def metadata_predictions(table: pd.DataFrame, meta: pd.DataFrame | None = None, folds: int = 5,
                         seed: int = 0) -> pd.DataFrame:
    """The shortcut baseline (file format, colour mode, size, file size, aspect ratio; ladnn.report.leakage) scored
    like the models under the official split and protocols (b) and (c). `meta`: the table's file metadata
    (`leakage.image_meta`), read from the files when not given."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from ladnn.report.leakage import image_meta, metadata_features
    from ladnn.sources import collection_folds, grouped_folds, linked_groups

    x = metadata_features(image_meta(table) if meta is None else meta)
    y, group = table["covid"].astype(int), linked_groups(table)
    patient = (table["dataset"] + ":" + table["patient"]).where(table["patient"] != "", table["name"])
    out = []

    def fit(tr, te, prot: str, fold: int, g: pd.Series) -> None:
        clf = HistGradientBoostingClassifier(max_iter=200, random_state=seed).fit(x[tr], y[tr])
        out.append(pd.DataFrame({"protocol": prot, PRED.fold: fold, PRED.image: table.loc[te, "name"],
                                 PRED.y_true: y[te], PRED.p_covid: clf.predict_proba(x[te])[:, 1], PRED.group: g[te],
                                 PRED.collection: table.loc[te, "collection"]}))

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


def grouping_sentences(table: pd.DataFrame) -> str:
    """What the old grouping hid (`old_grouping_facts`), as Markdown bullets."""
    from ladnn.sources import linked_groups

    f = old_grouping_facts(table)
    return (f"- MedPix gives {f['medpix_images']} of D0's negatives, from {f['medpix_patients']} patients; the old "
            f"grouping made {f['medpix_images']} sources of them.\n"
            f"- In the official split, {f['medpix_test_patient_in_training']} of the {f['medpix_test']} MedPix test "
            "images have a slice of the same patient in training.\n"
            f"- Linked by patient and document, D0 and the D1 images present form {linked_groups(table).nunique()} "
            "groups.\n"
            "- Under every fold of the old protocol and of (b), MedPix sat on both sides: a model could learn what "
            "MedPix looks like and be rewarded on MedPix test images.")


def grouped_subsets(t: pd.DataFrame, n_boot: int = 2000, pipeline: str = "none", method: str = "ladnn"
                    ) -> pd.DataFrame:
    """Protocol (b)'s pooled AUC against each negative collection alone and without each
    (`ladnn.scores.subset_aucs`)."""
    return subset_aucs(parts(t, pipeline, method)["grouped"], n_boot)


def subset_sentence(sub: pd.DataFrame, method: str = "LA-DNN") -> str:
    """How far the collection of the negatives moves protocol (b)'s AUC (`grouped_subsets`): the MedPix negatives
    alone against the crawled paper figures alone."""
    medpix, crawled = sub.loc["only MedPix", "AUC"], sub.loc["only crawled paper figures", "AUC"]
    return (f"Under (b), {method} scores {sub.loc['all', 'AUC']:.3f} pooled, {medpix:.3f} against the MedPix negatives "
            f"alone and {crawled:.3f} against the crawled figures alone: the collection a negative comes from moves "
            f"the figure by {medpix - crawled:+.3f}. Protocol (c) holds each collection out in turn:")


def fold_crossings(table: pd.DataFrame, folds: int = 5) -> pd.DataFrame:
    """Per fold of protocols (b) (`folds` folds) and (c) (one per negative collection): the patients, documents and
    linked groups found both in training and in validation or test (`ladnn.sources.crossing`); all zero when the
    folds hold them out."""
    from ladnn.sources import crossing, fold_splits, negative_collections

    checks = {}
    for prot, n in (("grouped", folds), ("collection", len(negative_collections(table)))):
        for k in range(n):
            s = fold_splits(table, prot, n, k)
            checks[(prot, k)] = {lvl: sum(len(v) for v in crossing(table, s, lvl).values())
                                 for lvl in ("patient", "document", "group")}
    return pd.DataFrame(checks).T


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
            f"with lung fraction >= {MIN_LUNG_FRACTION:g}; ladnn.dicom.lung_fraction). A patient's score is the mean "
            "over its slices that show lung.")


def series_figure(t: pd.DataFrame) -> Figure:
    """Each method's COVID probability along every COVID-CT-MD series (seed 0, no AdaBN), one line per patient:
    solid for COVID-19, dashed otherwise."""
    ct = covid_ct_md(t)
    fig = plt.figure(figsize=(10, 3.4))
    plt.close(fig)  # not an open pyplot figure: it shows once, where the notebook displays it
    ax = fig.subplots(1, 2, sharey=True)
    for a, m in zip(ax, ["baseline", "ladnn"]):
        d = ct[(ct["method"] == m) & ~ct["adabn"].astype(bool)].copy()
        d["slice"] = d.groupby(PRED.patient).cumcount()
        for pid, g in d.groupby(PRED.patient):
            covid = bool(g[PRED.y_true].iloc[0])
            a.plot(g["slice"], g[PRED.p_covid], lw=1, label=f"{pid} ({'COVID-19' if covid else 'not COVID'})",
                   ls="-" if covid else "--")
        a.set_title(f"{METHOD_NAMES[m]}: COVID probability along each series", fontsize=9)
        a.set_xlabel("slice (every second, by slice location)")
    ax[0].set_ylabel("COVID probability")
    ax[1].legend(fontsize=7, loc="upper right")
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
    recipe's benchmark figures and its external evaluations), or 'none'."""
    r = FinishedRun(run)
    gen = new_data_report(r.metrics, recipe_figures(r.config, n_boot), r.evaluations())
    return f"warning on the service page of {r.path.name} :\n {gen['warning'] or 'none'}"


# ---------------------------------------------------------------- generated sentences
def _auc_text(r) -> str:
    """'0.871 (95% interval 0.821 to 0.915)' of a table row with AUC, lo and hi."""
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
        lines.append(f"- **{method}**: {_auc_text(get['official'])} on the official split; on CT from elsewhere "
                     f"{_auc_text(get['D1'])} on D1 and {_auc_text(get['COVID-CT-MD'])} per slice on COVID-CT-MD "
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
            lines.append(f"- **{prot}, {after}.** LA-DNN {_auc_text(r)} against the goal of {goal:.2f}: "
                         + ("reached." if r["AUC"] >= goal else "not reached."))
    for prot in ("collection", "D1", "COVID-CT-MD"):
        k = (PROTOCOL_NAMES[prot], "LA-DNN - baseline, none")
        if k in cmp.index:
            d = cmp.loc[k]
            word = ("helps" if d["lo"] > 0 else "hurts" if d["hi"] < 0 else "neither helps nor hurts measurably")
            lines.append(f"- **Lesion attention, {PROTOCOL_NAMES[prot]}.** LA-DNN - baseline = "
                         f"{d['AUC difference']:+.3f} (95% interval {d['lo']:+.3f} to {d['hi']:+.3f}): it {word}.")
    return "\n".join(x for x in lines if x)
