"""Choose the quick profile's settings on the validation split only.

Trains candidate settings of `--finetune top` on EfficientNet-Lite0 / D0 and prints, per candidate and seed, the
validation COVID loss and validation AUC of the kept epoch and the run time. Test metrics are written into each run
directory by `ladnn.train` but are not read or printed here.

    python benchmarks/select_quick.py --out runs/select
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import pandas as pd

from ladnn.config import Config
from ladnn.train import train_or_load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/select")
    ap.add_argument("--top-blocks", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--lr", type=float, nargs="+", default=[1e-4, 5e-4])
    ap.add_argument("--views", type=int, nargs="+", default=[4])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--method", default="ladnn")
    a = ap.parse_args()
    rows = []
    for tb, lr, views, seed in itertools.product(a.top_blocks, a.lr, a.views, a.seeds):
        cfg = Config(method=a.method, finetune="top", top_blocks=tb, lr=lr, views=views, epochs=a.epochs, seed=seed)
        out = Path(a.out) / f"top{tb}-lr{lr:g}-v{views}-{a.method}-s{seed}"
        t = time.time()
        train_or_load(cfg, out)
        h = pd.read_csv(out / "history.csv")
        best = h.loc[h["val_covid_loss"].idxmin()]
        rows.append({"top_blocks": tb, "lr": lr, "views": views, "seed": seed, "kept_epoch": int(best["epoch"]),
                     "val_covid_loss": round(best["val_covid_loss"], 4), "val_auc": round(best["val_auc"], 4),
                     "max_val_auc": round(h["val_auc"].max(), 4), "seconds": round(time.time() - t, 1)})
        print(json.dumps(rows[-1]), flush=True)
    df = pd.DataFrame(rows)
    print(df.groupby(["top_blocks", "lr", "views"])[["val_covid_loss", "val_auc", "seconds"]].mean().round(4))


if __name__ == "__main__":
    main()
