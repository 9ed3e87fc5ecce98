"""The protocols of ladnn.sources for the quick profile's recipe, with and without each candidate pipeline
(ladnn.report.unseen.PIPELINES: Config.preprocess, Config.augment, Config.finetune).

For every candidate, method and seed, the quick profile's config is trained once per fold of `--protocol grouped`
(b: D0, no patient or document on both sides) or `--protocol collection` (c: each of D0's two negative collections
held out whole), or, with `--protocol official`, on the official D0 split. D1 is in no fold: it stays external,
scored by the official runs (protocol d, benchmarks/transfer.py). Finished
runs are reused. Two CSVs go to ladnn/resources/ for the book's chapter "New sources":
- `source_protocol_quick_runs.csv`: one row per run, with the validation COVID loss and AUC of the kept epoch (the
  pipeline is chosen on protocol (c)'s validation parts only);
- `source_protocol_quick.csv.gz`: the test predictions of every run (image, label, probability, group, collection).

    python benchmarks/source_protocol.py --candidates none --methods ladnn baseline --protocol collection
    python benchmarks/source_protocol.py --candidates none --methods ladnn baseline --protocol grouped
    python benchmarks/source_protocol.py --candidates none crop --methods baseline ladnn --protocol official --seeds 0
    python benchmarks/source_protocol.py --candidates none --dataset D0+D1 --protocol official --seeds 0 1 2

The sweep of issue 43 (each candidate, LA-DNN, seed 0, on (c); then `unmark`, the causal test, and the runner-up
with both methods and three seeds on (c) and the official split; then D0+D1):

    python benchmarks/source_protocol.py --out runs/bench43 --candidates unmark window lungcrop strong crop gray \
        clahe jpeg all --protocol collection --seeds 0 --merge
    python benchmarks/source_protocol.py --out runs/bench43 --candidates unmark --methods ladnn baseline \
        --protocol official --seeds 0 1 2 --merge   # and --protocol collection
    python benchmarks/transfer.py --out runs/bench43 --merge

`--folds-only 3 4 --merge` retrains just those folds and replaces their rows in the committed CSVs.
"""
from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pandas as pd

from ladnn.config import Config
from ladnn.data import load_table
from ladnn.generalisation import recipe_key
from ladnn.images import step_version
from ladnn.profiles import load_profile
from ladnn.report.unseen import PIPELINES, pipeline_name
from ladnn.rundir import find_runs
from ladnn.scores import PRED
from ladnn.sources import linked_groups, negative_collections

ROOT = Path(__file__).resolve().parent.parent
RUNS_CSV = ROOT / "ladnn" / "resources" / "source_protocol_quick_runs.csv"
PRED_CSV = ROOT / "ladnn" / "resources" / "source_protocol_quick.csv.gz"


def quick_config() -> dict:
    """The quick profile's shared config and backbone, without its own pipeline choice."""
    cfg = load_profile("quick", ROOT)["runs"][0].to_dict()
    for k in ("preprocess", "augment", "finetune", "method", "seed"):
        cfg.pop(k)
    return cfg


def candidate_of(cfg: Config) -> str:
    return pipeline_name(cfg.preprocess, cfg.augment, cfg.finetune, cfg.dataset)


def _train(args) -> str:
    import torch

    from ladnn.train import train_or_load

    torch.set_num_threads(1)
    cfg, out = args
    t = time.time()
    m = train_or_load(cfg, out)
    return f"{out}: test AUC {m.covid.auc:.3f} ({time.time() - t:.0f} s)"


KEY = ["candidate", "method", "protocol", "fold", "seed"]


def merged(path: Path, new: pd.DataFrame) -> pd.DataFrame:
    """`new` in place of the rows of `path` that have the same runs (KEY); every other run's rows kept."""
    old = pd.read_csv(path)
    keep = ~old.set_index(KEY).index.isin(new.set_index(KEY).index.unique())
    return pd.concat([old[keep], new], ignore_index=True).sort_values(KEY, kind="stable")


def export(root: Path, merge: bool = False) -> None:
    """Both CSVs from every finished run under `root`; with `merge`, the committed rows of other runs are kept."""
    table = load_table("D0")
    group = dict(zip(table["name"], linked_groups(table)))
    collection = dict(zip(table["name"], table["collection"]))
    runs, preds = [], []
    for run in [r for cand in sorted(root.iterdir()) if cand.is_dir() for r in find_runs(cand)]:
        c, m, h = run.config, run.metrics, run.history
        best = h.loc[h["val_covid_loss"].idxmin()]
        key = {"candidate": candidate_of(c), "method": c.method, "protocol": c.protocol,
               "fold": c.fold if c.protocol != "official" else -1, "seed": c.seed}
        runs.append({**key, "recipe": recipe_key(c), "preprocess": "+".join(c.preprocess),
                     "step_versions": "+".join(s + step_version(s) for s in c.preprocess), "augment": c.augment,
                     "kept_epoch": int(best["epoch"]), "val_covid_loss": round(float(best["val_covid_loss"]), 4),
                     "val_auc": round(float(best["val_auc"]), 4), "test_auc": round(m.covid.auc, 4),
                     "seconds": m.run.seconds})
        p = run.predictions
        preds.append(pd.DataFrame({**key, PRED.image: p[PRED.image], PRED.y_true: p[PRED.y_true],
                                   PRED.p_covid: p[PRED.p_covid].round(5), PRED.group: p[PRED.image].map(group),
                                   PRED.collection: p[PRED.image].map(collection)}))
    runs, preds = pd.DataFrame(runs), pd.concat(preds)
    if merge:
        runs, preds = merged(RUNS_CSV, runs), merged(PRED_CSV, preds)
    runs.to_csv(RUNS_CSV, index=False)
    preds.to_csv(PRED_CSV, index=False, compression={"method": "gzip", "mtime": 0})  # same bytes for the same rows
    print(f"wrote {RUNS_CSV} ({len(runs)} runs) and {PRED_CSV}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/source-bench")
    ap.add_argument("--candidates", nargs="+", default=list(PIPELINES), choices=list(PIPELINES))
    ap.add_argument("--methods", nargs="+", default=["ladnn"], choices=["ladnn", "baseline"])
    ap.add_argument("--protocol", default="collection", choices=["collection", "grouped", "official"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--dataset", default="D0", choices=["D0", "D0+D1"],
                    help="protocol official only: train on D0+D1 (candidate D0+D1, scored on COVID-CT-MD alone)")
    ap.add_argument("--folds", type=int, default=5, help="folds of protocol grouped (collection: one per collection)")
    ap.add_argument("--folds-only", type=int, nargs="+", help="train only these folds (with --merge: keep the rest)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--export-only", action="store_true")
    ap.add_argument("--merge", action="store_true",
                    help="replace only the runs under --out in the committed CSVs (retrain a few runs, keep the rest)")
    a = ap.parse_args()
    root = Path(a.out)
    if not a.export_only:
        from ladnn.train import prepare

        base = quick_config()
        n_col = len(negative_collections(load_table("D0")))  # D0's own: D1 stays external
        for name in a.candidates:
            pre, aug, ft = PIPELINES[name]
            jobs = []
            for method in a.methods:
                for seed in a.seeds:
                    common = {**base, "method": method, "seed": seed, "preprocess": pre, "augment": aug, "finetune": ft}
                    if a.protocol != "official":
                        folds = n_col if a.protocol == "collection" else a.folds
                        for k in a.folds_only if a.folds_only is not None else range(folds):
                            cfg = Config(**{**common, "protocol": a.protocol, "dataset": "D0", "folds": folds,
                                            "fold": k})
                            jobs.append((cfg, root / name / f"{a.protocol}-{method}-f{k}-s{seed}"))
                    else:
                        cfg = Config(**{**common, "dataset": a.dataset})
                        sub = name if a.dataset == "D0" else f"{name}-{a.dataset}"
                        jobs.append((cfg, root / sub / f"official-{method}-s{seed}"))
            t = time.time()
            prepare(jobs[0][0])  # the candidate's caches, with every core, before the runs share them
            print(f"[{name}] caches ready ({time.time() - t:.0f} s); {len(jobs)} runs", flush=True)
            os.environ["OMP_NUM_THREADS"] = "1"
            with ProcessPoolExecutor(a.jobs, mp_context=get_context("spawn")) as pool:
                for line in pool.map(_train, jobs):
                    print(f"[{name}] {line}", flush=True)
    export(root, merge=a.merge)
    df = pd.read_csv(RUNS_CSV)
    print(df.groupby(["protocol", "candidate", "method"])[["val_auc", "val_covid_loss", "test_auc", "seconds"]]
          .mean().round(4).to_string())


if __name__ == "__main__":
    main()
