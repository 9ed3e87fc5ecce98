"""The unseen-source protocol for the quick profile's recipe, with and without each input pipeline (Config.preprocess,
Config.augment).

For every candidate pipeline and method, the quick profile's config is trained once per source fold
(`--protocol source`: D0 plus the D1 images present, no source on both sides, ladnn.sources) and, with
`--protocol official`, on the official D0 split for the seeds given. Finished runs are reused. Two CSVs go to
ladnn/resources/ for the book's chapter "New sources":
- `source_protocol_quick_runs.csv`: one row per run, with the validation COVID loss and AUC of the kept epoch (the
  validation fold is a different set of sources than the test fold: the pipeline is chosen on these);
- `source_protocol_quick.csv`: the test predictions of every run (image, label, probability, source group).

    python benchmarks/source_protocol.py --candidates none all jpeg --methods ladnn
    python benchmarks/source_protocol.py --candidates none all --methods baseline ladnn --protocol official --seeds 0 1 2
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
from ladnn.profiles import load_profile
from ladnn.report.unseen import PIPELINES, pipeline_name
from ladnn.rundir import find_runs
from ladnn.sources import source_groups

ROOT = Path(__file__).resolve().parent.parent
RUNS_CSV = ROOT / "ladnn" / "resources" / "source_protocol_quick_runs.csv"
PRED_CSV = ROOT / "ladnn" / "resources" / "source_protocol_quick.csv"


def quick_config() -> dict:
    """The quick profile's shared config and backbone, without its own pipeline choice."""
    cfg = load_profile("quick", ROOT)["runs"][0].to_dict()
    for k in ("preprocess", "augment", "method", "seed"):
        cfg.pop(k)
    return cfg


def candidate_of(cfg: Config) -> str:
    return pipeline_name(cfg.preprocess, cfg.augment)


def _train(args) -> str:
    import torch

    from ladnn.train import train_or_load

    torch.set_num_threads(1)
    cfg, out = args
    t = time.time()
    m = train_or_load(cfg, out)
    return f"{out}: test AUC {m.covid.auc:.3f} ({time.time() - t:.0f} s)"


def export(root: Path) -> None:
    """Both CSVs from every finished run under `root`."""
    table = load_table("D0+D1")
    group = dict(zip(table["name"], source_groups(table)))
    runs, preds = [], []
    for run in [r for cand in sorted(root.iterdir()) if cand.is_dir() for r in find_runs(cand)]:
        c, m, h = run.config, run.metrics, run.history
        best = h.loc[h["val_covid_loss"].idxmin()]
        key = {"candidate": candidate_of(c), "method": c.method, "protocol": c.protocol,
               "fold": c.fold if c.protocol == "source" else -1, "seed": c.seed}
        runs.append({**key, "recipe": recipe_key(c), "preprocess": "+".join(c.preprocess), "augment": c.augment,
                     "kept_epoch": int(best["epoch"]), "val_covid_loss": round(float(best["val_covid_loss"]), 4),
                     "val_auc": round(float(best["val_auc"]), 4), "test_auc": round(m.covid.auc, 4),
                     "seconds": m.run.seconds})
        p = run.predictions
        preds.append(pd.DataFrame({**key, "image": p["image"], "y_true": p["y_true"],
                                   "p_covid": p["p_covid"].round(5), "source_group": p["image"].map(group)}))
    pd.DataFrame(runs).to_csv(RUNS_CSV, index=False)
    pd.concat(preds).to_csv(PRED_CSV, index=False)
    print(f"wrote {RUNS_CSV} ({len(runs)} runs) and {PRED_CSV}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/source-bench")
    ap.add_argument("--candidates", nargs="+", default=list(PIPELINES), choices=list(PIPELINES))
    ap.add_argument("--methods", nargs="+", default=["ladnn"], choices=["ladnn", "baseline"])
    ap.add_argument("--protocol", default="source", choices=["source", "official"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--export-only", action="store_true")
    a = ap.parse_args()
    root = Path(a.out)
    if not a.export_only:
        from ladnn.train import prepare

        base = quick_config()
        for name in a.candidates:
            pre, aug = PIPELINES[name]
            jobs = []
            for method in a.methods:
                for seed in a.seeds:
                    if a.protocol == "source":
                        for k in range(a.folds):
                            cfg = Config(**{**base, "method": method, "seed": seed, "preprocess": pre, "augment": aug,
                                            "protocol": "source", "dataset": "D0+D1", "folds": a.folds, "fold": k})
                            jobs.append((cfg, root / name / f"source-{method}-f{k}-s{seed}"))
                    else:
                        cfg = Config(**{**base, "method": method, "seed": seed, "preprocess": pre, "augment": aug})
                        jobs.append((cfg, root / name / f"official-{method}-s{seed}"))
            t = time.time()
            prepare(jobs[0][0])  # the candidate's caches, with every core, before the runs share them
            print(f"[{name}] caches ready ({time.time() - t:.0f} s); {len(jobs)} runs", flush=True)
            os.environ["OMP_NUM_THREADS"] = "1"
            with ProcessPoolExecutor(a.jobs, mp_context=get_context("spawn")) as pool:
                for line in pool.map(_train, jobs):
                    print(f"[{name}] {line}", flush=True)
    export(root)
    df = pd.read_csv(RUNS_CSV)
    print(df.groupby(["protocol", "candidate", "method"])[["val_auc", "val_covid_loss", "test_auc", "seconds"]]
          .mean().round(4).to_string())


if __name__ == "__main__":
    main()
