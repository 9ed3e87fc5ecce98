"""Choose the quick profile's settings on the validation split only.

Trains candidate settings of `--finetune top` on EfficientNet-Lite0 / D0 and prints, per candidate and seed, the
validation COVID loss and validation AUC of the kept epoch and which epoch that is, for epoch budgets of 5, 8, 10 and 15
(without a learning-rate schedule a run of E epochs is the 15-epoch run cut short, so it keeps the best epoch within
the first E), and the seconds per epoch. Finished runs are reused.
Rows are appended to a CSV that the book's Results chapter shows. Test metrics are written into each run directory by
`ladnn.train` but are not read or printed here.

    python benchmarks/select_quick.py --top-blocks 2 3 --lr 1e-4 2e-4 --seeds 0 1
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import pandas as pd

from ladnn.config import Config
from ladnn.rundir import Run
from ladnn.train import train_or_load

BUDGETS = (5, 8, 10, 15)  # epoch budgets read off each 15-epoch run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/select")
    ap.add_argument("--top-blocks", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--lr", type=float, nargs="+", default=[1e-4, 5e-4])
    ap.add_argument("--views", type=int, nargs="+", default=[4])
    ap.add_argument("--head", nargs="+", default=["linear"], choices=["linear", "fc3"])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--method", default="ladnn")
    ap.add_argument("--csv", default="ladnn/resources/select_quick_cpu.csv",
                    help="append the rows here (a row with the same candidate and seed is replaced)")
    a = ap.parse_args()
    rows = []
    for tb, lr, views, head, seed in itertools.product(a.top_blocks, a.lr, a.views, a.head, a.seeds):
        cfg = Config(method=a.method, finetune="top", top_blocks=tb, lr=lr, views=views, head=head, epochs=a.epochs,
                     seed=seed)
        out = Path(a.out) / f"top{tb}-lr{lr:g}-v{views}{'' if head == 'linear' else '-' + head}-{a.method}-s{seed}"
        t = time.time()
        train_or_load(cfg, out)
        h = Run(out).history
        spe = round(float(h["seconds"].diff().median()), 2)
        for budget in [b for b in BUDGETS if b <= a.epochs]:  # a run cut short keeps its best epoch within budget
            hb = h[h["epoch"] <= budget]
            best = hb.loc[hb["val_covid_loss"].idxmin()]
            rows.append({"top_blocks": tb, "lr": lr, "views": views, "head": head, "seed": seed, "budget": budget,
                         "kept_epoch": int(best["epoch"]), "val_covid_loss": round(best["val_covid_loss"], 4),
                         "val_auc": round(best["val_auc"], 4), "seconds_per_epoch": spe})
            if budget == a.epochs:
                print(json.dumps(rows[-1]), flush=True)
        print(f"{time.time() - t:.0f} s", flush=True)
    df = pd.DataFrame(rows)
    keys = ["top_blocks", "lr", "views", "head", "seed", "budget"]
    csv = Path(a.csv)
    if csv.is_file():
        old = pd.read_csv(csv)
        df = pd.concat([old[~old.set_index(keys).index.isin(df.set_index(keys).index)], df], ignore_index=True)
    csv.parent.mkdir(parents=True, exist_ok=True)
    df.sort_values(keys).to_csv(csv, index=False)
    print(df.groupby(["top_blocks", "lr", "views", "head", "budget"])[["val_covid_loss", "val_auc", "kept_epoch",
                                                                      "seconds_per_epoch"]].mean().round(4))


if __name__ == "__main__":
    main()
