"""How a run does on images from sources it never saw, as the service shows it: the run's own unseen-source score
(written when it was trained), the unseen-source cross-validation of its recipe when the packaged benchmark runs
cover it (ladnn/resources/, from benchmarks/source_protocol.py), and the warning built from them. The chapter
"New sources" (ladnn.report.unseen) reads the same benchmark files through this module."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from sklearn import metrics as skm

from ladnn.files import resource
from ladnn.metrics import bootstrap_ci
from ladnn.summary import Protocol, RunMetrics

RUNS_CSV = "source_protocol_quick_runs.csv"
PRED_CSV = "source_protocol_quick.csv"
# Config fields that do not change the recipe: where it is evaluated, and the seed.
NOT_RECIPE = ("seed", "protocol", "dataset", "folds", "fold", "device")


def recipe_key(cfg) -> str:
    """The recipe of a run (its Config without seed, split and device), as one JSON string to match runs by."""
    return json.dumps({k: v for k, v in sorted(cfg.to_dict().items()) if k not in NOT_RECIPE})


def recipe_unseen_source(cfg, n_boot: int = 2000) -> dict | None:
    """The unseen-source AUC of a run's recipe (its method and every training setting but the seed), when the
    packaged fold runs hold all folds of it: pooled over the folds' test images, the interval resampling whole
    sources. None for any other recipe."""
    try:
        runs, preds = bench_runs(), bench_predictions()
    except FileNotFoundError:
        return None
    if "recipe" not in runs:
        return None
    r = runs[(runs["protocol"] == "source") & (runs["recipe"] == recipe_key(cfg)) & (runs["seed"] == 0)]
    if r.empty or r["fold"].nunique() < r["fold"].max() + 1:
        return None
    cand = r["candidate"].iloc[0]
    p = preds[(preds["protocol"] == "source") & (preds["candidate"] == cand) & (preds["method"] == cfg.method)
              & (preds["seed"] == 0)]
    a = auc_summary(p, n_boot)
    return {"auc": a["AUC"], "ci95": [a["lo"], a["hi"]], "n": a["images"], "sources": a["sources"],
            "on": f"cross-validation by source over D0 and the D1 images present ({r['fold'].nunique()} folds, this "
                  "recipe with seed 0; benchmarks/source_protocol.py)"}


def _resource(name: str, path: str | Path | None) -> pd.DataFrame:
    return pd.read_csv(path or resource(name))


def bench_runs(path: str | Path | None = None) -> pd.DataFrame:
    """One row per benchmark run: candidate, method, protocol, fold, seed, validation loss and AUC of the kept epoch."""
    return _resource(RUNS_CSV, path)


def bench_predictions(path: str | Path | None = None) -> pd.DataFrame:
    """Test predictions of every benchmark run (a source fold's test images, or the official test split)."""
    return _resource(PRED_CSV, path)


def auc_summary(p: pd.DataFrame, n_boot: int = 2000) -> dict:
    """AUC of pooled test predictions with a 95% interval resampling whole sources within each class, the number
    of images and sources, and the range of the per-fold AUCs."""
    ci = bootstrap_ci(p["y_true"], p["p_covid"], p["source_group"], n_boot=n_boot)["auc"]
    folds = [skm.roc_auc_score(g["y_true"], g["p_covid"]) for _, g in p.groupby("fold") if g["y_true"].nunique() == 2]
    return {"AUC": skm.roc_auc_score(p["y_true"], p["p_covid"]), "95% interval": f"{ci[0]:.3f} to {ci[1]:.3f}",
            "lo": ci[0], "hi": ci[1], "images": len(p), "sources": p["source_group"].nunique(),
            "fold AUC range": (f"{min(folds):.3f} to {max(folds):.3f}" if len(folds) > 1 else "")}


def generalisation(metrics: RunMetrics, recipe: dict | None = None) -> dict:
    """The run's AUC on its own test split beside its AUC on images from sources it never saw in training: its own
    score on the D1 images present (`unseen_source`) and, when the packaged fold runs cover its recipe, the recipe's
    AUC under cross-validation by source (`recipe`, `recipe_unseen_source` above). A plain warning when
    the official AUC lies outside the interval of the unseen-source figure with the most sources, when that figure
    rests on few sources, or when there is none. A run of the source protocol is tested on unseen sources by
    construction."""
    def auc(s, on: str, sources: int | None = None) -> dict:
        return {"auc": s.covid.auc, "ci95": list(s.covid_ci95.auc), "n": s.covid.n, "sources": sources, "on": on}

    prot = metrics.protocol or Protocol(protocol="official", test="its test split")
    test = auc(metrics, prot.test)
    if prot.protocol == "source":
        official, unseen = None, {**test, "sources": prot.test_sources}
    else:
        official, u = test, metrics.unseen_source
        unseen = u and auc(u, u.evaluated_on, u.sources)
    best = max([g for g in (unseen, recipe) if g and g.get("auc") is not None],
               key=lambda g: g.get("sources") or 0, default=None)
    warning = None
    if best is None:
        warning = ("This run has not been scored on images from sources it never saw. Its test images come from the "
                   "same papers and collections as its training images, so its test AUC may overstate how it does "
                   "on CT from elsewhere.")
    elif official and official["auc"] is not None and best["ci95"] and not (
            best["ci95"][0] <= official["auc"] <= best["ci95"][1]):
        warning = (f"On images from sources it never saw, the AUC is {best['auc']:.3f}, against "
                   f"{official['auc']:.3f} on the official test split. Expect the lower figure, or worse, on CT "
                   "from another hospital.")
    if best is not None and best.get("sources") is not None and best["sources"] < 10:
        note = f"The unseen-source figure rests on {best['sources']} sources only: it is a rough estimate."
        warning = f"{warning} {note}" if warning else note
    return {"official_test": official, "unseen_source": unseen, "recipe_unseen_source": recipe, "warning": warning}
