"""How the quick profile's settings were chosen: the validation-only search of benchmarks/select_quick.py."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ladnn.report import resource

SELECTION_CSV = "select_quick_cpu.csv"  # package data, written by benchmarks/select_quick.py


def selection_table(path=None) -> pd.DataFrame:
    """The quick profile's candidate settings as `benchmarks/select_quick.py` measured them, on the validation split
    only: per candidate and epoch budget, the mean over seeds of the kept epoch's validation COVID loss and AUC, the
    kept epochs, the fastest seed's seconds per epoch and the training time of the budget (epochs x seconds per epoch)."""
    df = pd.read_csv(path or resource(SELECTION_CSV))
    keys = ["top_blocks", "lr", "views", "head", "budget"]
    g = df.groupby(keys)
    out = g.agg(seeds=("seed", "size"), val_covid_loss=("val_covid_loss", "mean"), val_auc=("val_auc", "mean"),
                seconds_per_epoch=("seconds_per_epoch", "min"))
    out["kept_epochs"] = g["kept_epoch"].apply(lambda s: ", ".join(str(int(x)) for x in s))
    out = out.reset_index()
    out["train_seconds"] = out["budget"] * out["seconds_per_epoch"]
    return out.sort_values("val_covid_loss").round({"val_covid_loss": 3, "val_auc": 3, "seconds_per_epoch": 1,
                                                     "train_seconds": 0}).reset_index(drop=True)


def _profile_rows(sel: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The rows of the selection table with this profile's own settings and epoch budget (none unless it uses `top`)."""
    c = runs.iloc[0]
    if c["finetune"] != "top":
        return sel.iloc[:0]
    return sel[(sel["top_blocks"] == c["top_blocks"]) & np.isclose(sel["lr"], c["lr"]) & (sel["views"] == c["views"])
               & (sel["head"] == c["head"]) & (sel["budget"] == c["epochs"])]


def selection_sentence(sel: pd.DataFrame, runs: pd.DataFrame) -> str:
    """Name the best candidate on validation, the best within this profile's epoch budget, and this profile's own."""
    def describe(r) -> str:
        return (f"the top {int(r['top_blocks'])} block(s) at learning rate {r['lr']:g}, {int(r['views'])} views, "
                f"{r['head']} head, {int(r['budget'])} epochs (validation COVID loss {r['val_covid_loss']:.3f}, AUC "
                f"{r['val_auc']:.3f}, mean of {int(r['seeds'])} seeds; about {r['train_seconds']:.0f} s of training "
                f"per run)")

    text = f"Lowest validation loss of all: {describe(sel.iloc[0])}."
    c = runs.iloc[0]
    if c["finetune"] != "top":
        return text + f" This profile fine-tunes with `{c['finetune']}`, which the table does not cover."
    same = sel[sel["budget"] == c["epochs"]]
    if not same.empty:
        text += f" Lowest with {int(c['epochs'])} epochs: {describe(same.iloc[0])}."
    mine = _profile_rows(sel, runs)
    if mine.empty:
        return text + (f" This profile trains the top {int(c['top_blocks'])} block(s) at learning rate {c['lr']:g} "
                       f"for {int(c['epochs'])} epochs, a setting the table does not hold.")
    return text + f" This profile uses {describe(mine.iloc[0])}."


def selection_figure(sel: pd.DataFrame, runs: pd.DataFrame):
    """Validation COVID loss against training seconds per run, one line per candidate through its epoch budgets; the
    profile's own setting is starred."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    keys = ["top_blocks", "lr", "views", "head"]
    for k, g in sel.groupby(keys):
        g = g.sort_values("budget")
        line, = ax.plot(g["train_seconds"], g["val_covid_loss"], marker="o", ms=4,
                        label=f"top {k[0]}, lr {k[1]:g}, {k[2]} views, {k[3]}")
        for _, r in g.iterrows():
            ax.annotate(f"{int(r['budget'])}", (r["train_seconds"], r["val_covid_loss"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points", color=line.get_color())
    mine = _profile_rows(sel, runs)
    if not mine.empty:
        ax.plot(mine["train_seconds"], mine["val_covid_loss"], "k*", ms=14, label="this profile")
    ax.set_xlabel("training seconds per run on this CPU (epochs x seconds per epoch; numbers: epochs)")
    ax.set_ylabel("validation COVID loss (mean over seeds)")
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
