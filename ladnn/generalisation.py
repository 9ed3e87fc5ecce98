"""How a run does on data it never saw, as the service and the chapter "New sources" show it.

The figures, each an AUC at the level its protocol holds out: with its 95% interval, or, on a set with fewer than
`ladnn.scores.MIN_CLUSTERS` clusters in a class, with none (and the exact permutation p-value where the
predictions are at hand):
- the run's own: its official test split, the D1 images present (written when it was trained) and every external
  set it was evaluated on (`ladnn evaluate --images`, the `eval-*` folders of the run), per slice and per patient;
- its recipe's, when the packaged benchmark runs cover it (ladnn/resources/, benchmarks/source_protocol.py and
  benchmarks/transfer.py): grouped cross-validation (b), each of D0's held-out collections (c: never pooled over
  the folds' models) and, for the recipe's seed-0 official run, COVID-CT-MD per slice and per patient.
"New data" are D1, external sets and held-out collections: sources that gave no image to training, validation or
any choice. Protocol (b) holds out patients and documents but not collections, so it is shown and never reassures.

The warning (`new_data_report`) fires when any new-data figure lies below the official figure's interval, its own
interval includes 0.5, or it rests on too few clusters to show anything, and then says in plain words that the
model has not been shown to work on CT from another hospital."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ladnn.config import NOTICE
from ladnn.files import resource
from ladnn.scores import (
    MIN_CLUSTERS,
    PRED,
    AucInterval,
    ClusterTest,
    at_level,
    auc_interval,
    external_slices,
    held_out,
)
from ladnn.summary import Evaluation, RunMetrics

RUNS_CSV = "source_protocol_quick_runs.csv"
PRED_CSV = "source_protocol_quick.csv.gz"
TRANSFER_CSV = "transfer_quick.csv.gz"  # gzip: 2.3 MB as plain text
# Config fields that do not change the recipe: where it is evaluated, and the seed.
NOT_RECIPE = ("seed", "protocol", "dataset", "folds", "fold", "device")
NOT_SHOWN = ("The model has not been shown to work on CT from another hospital: on data from sources it never saw, "
             "its scores are below its official test score, cannot be told from chance, or rest on too few patients "
             f"to show anything. {NOTICE}")


def recipe_key(cfg) -> str:
    """The recipe of a run (its Config without seed, split and device), as one JSON string to match runs by."""
    return json.dumps({k: v for k, v in sorted(cfg.to_dict().items()) if k not in NOT_RECIPE})


def _resource(name: str, path: str | Path | None) -> pd.DataFrame:
    return pd.read_csv(path or resource(name))


def bench_runs(path: str | Path | None = None) -> pd.DataFrame:
    """One row per benchmark run: candidate, method, protocol, fold, seed, validation loss and AUC of the kept epoch."""
    return _resource(RUNS_CSV, path)


def bench_predictions(path: str | Path | None = None) -> pd.DataFrame:
    """Test predictions of every benchmark run (a fold's test images, or the official test split)."""
    return _resource(PRED_CSV, path)


def transfer_predictions(path: str | Path | None = None) -> pd.DataFrame:
    """benchmarks/transfer.py: the benchmark runs rescored plain and with AdaBN, and on the external sets."""
    return _resource(TRANSFER_CSV, path)


def figure_row(name: str, auc, ci, n: int, level: str, new_data: bool, on: str, few: dict | None = None) -> dict:
    """One figure of the service and the chapter: an AUC with its 95% interval (`ci`), or, on a set with too few
    clusters for one (`few`: the COVID-19 and other clusters, and the exact permutation p-value where known),
    with none."""
    return {"name": name, "auc": None if auc is None else float(auc),
            "ci95": [float(c) for c in ci] if ci and not few else None, "n": int(n), "level": level,
            "new_data": new_data, "on": on, "few": few}


def figure_of(name: str, r: AucInterval | ClusterTest, level: str, new_data: bool, on: str) -> dict:
    """`figure_row` of a result of `ladnn.scores.at_level`."""
    if isinstance(r, ClusterTest):
        return figure_row(name, r.auc, None, r.n, level, new_data, on,
                          {"positive": r.positive_clusters, "negative": r.negative_clusters, "p": r.p})
    return figure_row(name, r.auc, (r.lo, r.hi), r.n, level, new_data, on)


def _few(n_pos: int, n: int) -> dict | None:
    """The `few` of a figure on `n` patients of which `n_pos` COVID-19 (no exact p-value: only counts are known)."""
    return {"positive": n_pos, "negative": n - n_pos, "p": None} if min(n_pos, n - n_pos) < MIN_CLUSTERS else None


def recipe_figures(cfg, n_boot: int = 2000) -> list[dict]:
    """The recipe's figures from the packaged benchmark runs (seed 0, no AdaBN); empty for any other recipe."""
    try:
        runs, preds, trans = bench_runs(), bench_predictions(), transfer_predictions()
    except FileNotFoundError:
        return []
    # fold runs only: they train on D0 alone, as the recipe's figures need (a run on D0+D1 has the same recipe key)
    r = runs[(runs["recipe"] == recipe_key(cfg)) & (runs["seed"] == 0) & (runs["protocol"] != "official")]
    if r.empty:
        return []
    cand = r["candidate"].iloc[0]
    p = preds[(preds["candidate"] == cand) & (preds["method"] == cfg.method) & (preds["seed"] == 0)]
    out = []
    for prot in ("grouped", "collection"):
        q = p[p["protocol"] == prot]
        if q.empty or q[PRED.fold].nunique() < r.loc[r["protocol"] == prot, "fold"].nunique():
            continue
        if prot == "grouped":  # patients and documents held out, collections not: shown, never reassuring
            a = auc_interval(q, n_boot=n_boot)
            out.append(figure_row("recipe, grouped cross-validation (b)", a.auc, (a.lo, a.hi), a.n, a.level, False,
                                  f"{q[PRED.fold].nunique()} folds of D0, pooled, seed 0 "
                                  "(benchmarks/source_protocol.py)"))
            continue
        for _, f in q.groupby(PRED.fold):  # (c): each held-out collection by its own fold's model, never pooled
            out.append(figure_of(f"recipe, held-out collection {held_out(f)} (c)", at_level(f, n_boot=n_boot),
                                 PRED.group, True, "protocol (c), seed 0: one of D0's negative collections held "
                                 "out whole, with the positives of the papers held out beside it"))
    t = trans[(trans["candidate"] == cand) & (trans["method"] == cfg.method) & (trans["seed"] == 0)
              & (trans["protocol"] == "official") & (trans["part"] == "COVID-CT-MD") & ~trans["adabn"]]
    if len(t):
        slices, per = external_slices(t)
        for what, d in (("per slice", slices), ("per patient", per)):  # the group of either is the patient
            out.append(figure_of(f"recipe, COVID-CT-MD {what}", at_level(d, n_boot=n_boot), PRED.patient, True,
                                 "the recipe's seed-0 official run (benchmarks/transfer.py)"))
    return out


def run_figures(metrics: RunMetrics, evaluations: dict[str, Evaluation] | None = None,
                unseen: pd.DataFrame | None = None) -> list[dict]:
    """The run's own figures: its test split, D1 (at its level from `unseen`, the run's D1 predictions, when given)
    and every external evaluation (name -> Evaluation; too few patients of a class: no interval)."""
    prot = metrics.protocol
    official = prot is None or prot.protocol == "official"
    out = [figure_row("this run, its test split" if official else f"this run, {prot.test}", metrics.covid.auc,
                   metrics.covid_ci95.auc, metrics.covid.n, prot.level if prot else "patient", not official,
                   prot.test if prot else "its test split")]
    u = metrics.unseen_source
    if u is not None and unseen is not None:
        out.append(figure_of("this run, D1 (new sources)", at_level(unseen), "patient or article", True,
                             u.evaluated_on))
    elif u is not None:
        out.append(figure_row("this run, D1 (new sources)", u.covid.auc, u.covid_ci95.auc, u.covid.n, "patient", True,
                              u.evaluated_on))
    for name, e in (evaluations or {}).items():
        if name == "eval":  # its own test split again
            continue
        pp = e.per_patient
        few = _few(pp.covid.n_pos, pp.covid.n) if pp is not None else None  # the slices' clusters are the patients
        out.append(figure_row(f"this run, {name} per slice", e.covid.auc, e.covid_ci95.auc, e.covid.n, "patient", True,
                              f"{e.evaluated_on}: {e.slices}", few))
        if pp is not None:
            out.append(figure_row(f"this run, {name} per patient", pp.covid.auc, pp.covid_ci95.auc, pp.covid.n,
                                  "patient", True, f"{e.evaluated_on}: {e.aggregation}", few))
    return out


def new_data_report(metrics: RunMetrics, recipe: list[dict] | None = None,
                    evaluations: dict[str, Evaluation] | None = None, unseen: pd.DataFrame | None = None) -> dict:
    """Every figure beside the official one, and the warning (module docstring). A figure whose AUC is undefined
    (one class) does not count; one on too few clusters for an interval counts as not showing anything."""
    figs = run_figures(metrics, evaluations, unseen) + list(recipe or [])
    official = figs[0] if not figs[0]["new_data"] else None
    new = [f for f in figs if f["new_data"] and f["auc"] is not None and (f["ci95"] or f.get("few"))]
    reasons = []
    for f in new:
        if f.get("few"):
            few = f["few"]
            exact = f"; exact permutation p = {few['p']:.3f}" if few.get("p") is not None else ""
            reasons.append(f"{f['name']}: AUC {f['auc']:.3f} on {few['positive']} COVID-19 and {few['negative']} "
                           f"other {f['level']} clusters, too few to tell any AUC from chance or to give an "
                           f"interval{exact}")
        elif official and official["ci95"] and f["ci95"][1] < official["ci95"][0]:
            reasons.append(f"{f['name']}: AUC {f['auc']:.3f} (95% interval {f['ci95'][0]:.3f} to {f['ci95'][1]:.3f})"
                           f", below the official figure's interval ({official['ci95'][0]:.3f} to "
                           f"{official['ci95'][1]:.3f})")
        elif f["ci95"][0] <= 0.5 <= f["ci95"][1]:
            reasons.append(f"{f['name']}: AUC {f['auc']:.3f}, whose 95% interval ({f['ci95'][0]:.3f} to "
                           f"{f['ci95'][1]:.3f}) includes 0.5, chance")
        elif f["ci95"][1] < 0.5:
            reasons.append(f"{f['name']}: AUC {f['auc']:.3f}, worse than chance (95% interval {f['ci95'][0]:.3f} "
                           f"to {f['ci95'][1]:.3f})")
    if reasons:
        warning = NOT_SHOWN + " " + "; ".join(reasons) + "."
    elif not new:
        warning = ("This run has not been scored on data from sources it never saw. Its test images come from the "
                   "same papers and collections as its training images, so its test AUC may overstate how it does "
                   "on CT from elsewhere.")
    else:
        warning = None
    return {"official_test": official, "figures": figs, "warning": warning}
