"""Choose the quick profile's settings on the validation split only, for both methods alike.

Every candidate (backbone, fine-tuned blocks, learning rate, cached views, test-time views) is trained with
`--finetune top` on D0 for the baseline and for LA-DNN, with the same seeds and the same epoch budget, and the
validation COVID loss and AUC of the kept epoch are recorded for budgets of 5, 8, 10 and 15 epochs (without a
learning-rate schedule a run of E epochs is the longer run cut short, so it keeps the best epoch within the first E),
with the seconds per epoch. The profile then uses the one setting with the lowest validation COVID loss averaged over
both methods (`ladnn.report.selection`), so neither method is tuned for and the other made to follow.
Finished runs are reused. Rows go to a CSV that the book's Results chapter shows. Test metrics are written into each
run directory by `ladnn.train` but are not read or printed here.

    python benchmarks/select_quick.py --backbone efficientnet_lite0 tf_efficientnet_lite2 --tta 1 4 --seeds 0 1
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import pandas as pd

from ladnn.config import METHODS, Config
from ladnn.rundir import FinishedRun
from ladnn.train import train_or_load

BUDGETS = (5, 8, 10, 15)  # epoch budgets read off each run
KEYS = ["backbone", "top_blocks", "lr", "views", "tta", "head", "method", "seed", "budget"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/select")
    ap.add_argument("--backbone", nargs="+", default=["efficientnet_lite0"])
    ap.add_argument("--top-blocks", type=int, nargs="+", default=[3])
    ap.add_argument("--lr", type=float, nargs="+", default=[2e-4])
    ap.add_argument("--views", type=int, nargs="+", default=[4])
    ap.add_argument("--tta", type=int, nargs="+", default=[1])
    ap.add_argument("--head", nargs="+", default=["linear"], choices=["linear", "fc3"])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--method", nargs="+", default=list(METHODS), choices=METHODS,
                    help="methods to train for every candidate (default: both, with the same budget)")
    ap.add_argument("--csv", default="ladnn/resources/select_quick_cpu.csv",
                    help="append the rows here (a row with the same candidate, method and seed is replaced)")
    a = ap.parse_args()
    rows = []
    grid = itertools.product(a.backbone, a.top_blocks, a.lr, a.views, a.tta, a.head, a.seeds, a.method)
    for bb, tb, lr, views, tta, head, seed, method in grid:
        cfg = Config(backbone=bb, method=method, finetune="top", top_blocks=tb, lr=lr, views=views, tta=tta,
                     head=head, epochs=a.epochs, seed=seed)
        out = Path(a.out) / (f"{bb}-top{tb}-lr{lr:g}-v{views}-tta{tta}{'' if head == 'linear' else '-' + head}"
                             f"-{method}-s{seed}")
        t = time.time()
        train_or_load(cfg, out)
        h = FinishedRun(out).history
        spe = round(float(h["seconds"].diff().median()), 2)
        for budget in [b for b in BUDGETS if b <= a.epochs]:  # a run cut short keeps its best epoch within budget
            hb = h[h["epoch"] <= budget]
            best = hb.loc[hb["val_covid_loss"].idxmin()]
            rows.append({"backbone": bb, "top_blocks": tb, "lr": lr, "views": views, "tta": tta, "head": head,
                         "method": method, "seed": seed, "budget": budget, "kept_epoch": int(best["epoch"]),
                         "val_covid_loss": round(best["val_covid_loss"], 4), "val_auc": round(best["val_auc"], 4),
                         "seconds_per_epoch": spe})
        print(json.dumps(rows[-1]), f"({time.time() - t:.0f} s)", flush=True)
    df = pd.DataFrame(rows)
    csv = Path(a.csv)
    if csv.is_file():
        old = pd.read_csv(csv)
        if list(old.columns) == list(df.columns):
            df = pd.concat([old[~old.set_index(KEYS).index.isin(df.set_index(KEYS).index)], df], ignore_index=True)
    csv.parent.mkdir(parents=True, exist_ok=True)
    df.sort_values(KEYS).to_csv(csv, index=False)
    print(df.groupby(KEYS[:6] + ["budget", "method"])[["val_covid_loss", "val_auc", "kept_epoch"]].mean()
          .unstack("method").round(4).to_string())


if __name__ == "__main__":
    main()
