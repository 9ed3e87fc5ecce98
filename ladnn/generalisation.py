"""How a run does on data it never saw, as the service and the chapter "New sources" show it.

The figures (`figures`), each an AUC with its interval at the level its protocol holds out:
- the run's own: its official test split, the D1 images present (written when it was trained) and every external
  set it was evaluated on (`ladnn evaluate --images`, the `eval-*` folders of the run), per slice and per patient;
- its recipe's, when the packaged benchmark runs cover it (ladnn/resources/, benchmarks/source_protocol.py and
  benchmarks/transfer.py): grouped cross-validation (b), leave-one-collection-out (c: pooled and the worst
  held-out collection) and, for the recipe's seed-0 official run, COVID-CT-MD per slice and per patient.
"New data" are D1, external sets and held-out collections: sources that gave no image to training. Protocol (b)
holds out patients and documents but not collections, so it is shown and never reassures.

The warning (`new_data_report`) fires when any new-data figure lies below the official figure's interval or its own
interval includes 0.5, and then says in plain words that the model has not been shown to work on CT from another
hospital."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ladnn.config import NOTICE
from ladnn.files import resource
from ladnn.scores import PRED, auc_interval, collection_table, external_slices
from ladnn.summary import Evaluation, RunMetrics

RUNS_CSV = "source_protocol_quick_runs.csv"
PRED_CSV = "source_protocol_quick.csv"
TRANSFER_CSV = "transfer_quick.csv.gz"  # gzip: 2.3 MB as plain text
# Config fields that do not change the recipe: where it is evaluated, and the seed.
NOT_RECIPE = ("seed", "protocol", "dataset", "folds", "fold", "device")
NOT_SHOWN = ("The model has not been shown to work on CT from another hospital: on data from sources it never saw, "
             f"its scores are far below its official test score or no better than chance. {NOTICE}")


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


def figure_row(name: str, auc, ci, n: int, level: str, new_data: bool, on: str) -> dict:
    return {"name": name, "auc": None if auc is None else float(auc), "ci95": [float(c) for c in ci] if ci else None,
            "n": int(n), "level": level, "new_data": new_data, "on": on}


def recipe_figures(cfg, n_boot: int = 2000) -> list[dict]:
    """The recipe's figures from the packaged benchmark runs (seed 0, no AdaBN); empty for any other recipe."""
    try:
        runs, preds, trans = bench_runs(), bench_predictions(), transfer_predictions()
    except FileNotFoundError:
        return []
    r = runs[(runs["recipe"] == recipe_key(cfg)) & (runs["seed"] == 0)]
    if r.empty:
        return []
    cand = r["candidate"].iloc[0]
    p = preds[(preds["candidate"] == cand) & (preds["method"] == cfg.method) & (preds["seed"] == 0)]
    out = []
    for prot, new, name in (("grouped", False, "grouped cross-validation (b)"),
                            ("collection", True, "leave-one-collection-out (c)")):
        q = p[p["protocol"] == prot]
        if q.empty or q[PRED.fold].nunique() < r.loc[r["protocol"] == prot, "fold"].nunique():
            continue
        a = auc_interval(q, n_boot=n_boot)
        out.append(figure_row(f"recipe, {name}", a.auc, (a.lo, a.hi), a.n, a.level, new,
                              f"{q[PRED.fold].nunique()} folds of D0 and the D1 images present, seed 0 "
                              "(benchmarks/source_protocol.py)"))
        if prot == "collection":
            w = collection_table(q, n_boot).iloc[0]
            out.append(figure_row(f"recipe, worst held-out collection ({w['held-out collection']})", w["AUC"],
                                  (w["lo"], w["hi"]), w["n"], a.level, True,
                                  "protocol (c), the held-out collection scored lowest"))
    t = trans[(trans["candidate"] == cand) & (trans["method"] == cfg.method) & (trans["seed"] == 0)
              & (trans["protocol"] == "official") & (trans["part"] == "COVID-CT-MD") & ~trans["adabn"]]
    if len(t):
        slices, per = external_slices(t)
        for what, d in (("per slice", slices), ("per patient", per)):
            a = auc_interval(d, n_boot=n_boot)  # the group of either is the patient
            out.append(figure_row(f"recipe, COVID-CT-MD {what}", a.auc, (a.lo, a.hi), a.n, PRED.patient, True,
                                  "the recipe's seed-0 official run (benchmarks/transfer.py)"))
    return out


def run_figures(metrics: RunMetrics, evaluations: dict[str, Evaluation] | None = None) -> list[dict]:
    """The run's own figures: its test split, D1 and every external evaluation (name -> Evaluation)."""
    prot = metrics.protocol
    official = prot is None or prot.protocol == "official"
    out = [figure_row("this run, its test split" if official else f"this run, {prot.test}", metrics.covid.auc,
                   metrics.covid_ci95.auc, metrics.covid.n, prot.level if prot else "patient", not official,
                   prot.test if prot else "its test split")]
    u = metrics.unseen_source
    if u is not None:
        out.append(figure_row("this run, D1 (new sources)", u.covid.auc, u.covid_ci95.auc, u.covid.n, "patient", True,
                           u.evaluated_on))
    for name, e in (evaluations or {}).items():
        if name == "eval":  # its own test split again
            continue
        out.append(figure_row(f"this run, {name} per slice", e.covid.auc, e.covid_ci95.auc, e.covid.n, "patient", True,
                           f"{e.evaluated_on}: {e.slices}"))
        if e.per_patient is not None:
            pp = e.per_patient
            out.append(figure_row(f"this run, {name} per patient", pp.covid.auc, pp.covid_ci95.auc, pp.covid.n,
                               "patient", True, f"{e.evaluated_on}: {e.aggregation}"))
    return out


def new_data_report(metrics: RunMetrics, recipe: list[dict] | None = None,
                   evaluations: dict[str, Evaluation] | None = None) -> dict:
    """Every figure beside the official one, and the warning (module docstring). A figure whose AUC is undefined
    (one class) does not count."""
    figs = run_figures(metrics, evaluations) + list(recipe or [])
    official = figs[0] if not figs[0]["new_data"] else None
    new = [f for f in figs if f["new_data"] and f["auc"] is not None and f["ci95"]]
    reasons = []
    for f in new:
        if official and official["ci95"] and f["ci95"][1] < official["ci95"][0]:
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
