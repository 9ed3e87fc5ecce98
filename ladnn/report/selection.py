"""How the quick profile's settings were chosen: the validation-only search of benchmarks/select_quick.py, run for
the baseline and LA-DNN alike; the chosen setting has the lowest validation COVID loss averaged over both methods."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ladnn.report import METHOD_NAMES, plural, resource

SELECTION_CSV = "select_quick_cpu.csv"  # package data, written by benchmarks/select_quick.py
SETTING = ["backbone", "top_blocks", "lr", "views", "tta", "head"]  # one candidate setting


def selection_table(path=None) -> pd.DataFrame:
    """The candidate settings as `benchmarks/select_quick.py` measured them on the validation split only: per setting
    and epoch budget, the validation COVID loss and AUC of the kept epoch for each method (mean over seeds) and both
    together (the criterion), the kept epochs, the fastest run's seconds per epoch and the training seconds of the
    budget. Sorted by the criterion; a setting is compared only when both methods have the same seeds."""
    df = pd.read_csv(path or resource(SELECTION_CSV))
    keys = SETTING + ["budget"]
    per = df.groupby(keys + ["method"]).agg(loss=("val_covid_loss", "mean"), auc=("val_auc", "mean"),
                                            seeds=("seed", "size")).unstack("method")
    g = df.groupby(keys)
    out = g.agg(seeds=("seed", "nunique"), val_covid_loss=("val_covid_loss", "mean"), val_auc=("val_auc", "mean"),
                seconds_per_epoch=("seconds_per_epoch", "min"))
    for m in ("baseline", "ladnn"):
        out[f"loss {METHOD_NAMES[m]}"] = per.get(("loss", m), np.nan)
        out[f"AUC {METHOD_NAMES[m]}"] = per.get(("auc", m), np.nan)
    seeds = per["seeds"].reindex(columns=["baseline", "ladnn"])  # a method never trained is a column of NaN
    out["both methods"] = seeds.notna().all(axis=1) & (seeds.nunique(axis=1) == 1)
    out["kept_epochs"] = g["kept_epoch"].apply(lambda s: ", ".join(str(int(x)) for x in s))
    out = out.reset_index()
    out["train_seconds"] = out["budget"] * out["seconds_per_epoch"]
    return out.sort_values(["both methods", "val_covid_loss"], ascending=[False, True]).round(
        {"val_covid_loss": 3, "val_auc": 3, "loss baseline": 3, "loss LA-DNN": 3, "AUC baseline": 3,
         "AUC LA-DNN": 3, "seconds_per_epoch": 1, "train_seconds": 0}).reset_index(drop=True)


def _profile_rows(sel: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The rows of the selection table with this profile's own setting and epoch budget (none unless it uses `top`)."""
    c = runs.iloc[0]
    if c["finetune"] != "top":
        return sel.iloc[:0]
    mask = np.isclose(sel["lr"], c["lr"]) & (sel["budget"] == c["epochs"])
    for k in ("backbone", "top_blocks", "views", "tta", "head"):
        mask &= sel[k] == c[k]
    return sel[mask]


def describe(r) -> str:
    """One row of `selection_table` in words: the setting, its epoch budget and what it measured."""
    return (f"{r['backbone']}, the top {plural(int(r['top_blocks']), 'block')} at learning rate {r['lr']:g}, "
            f"{int(r['views'])} cached views, {plural(int(r['tta']), 'test-time view')}, {r['head']} head, "
            f"{int(r['budget'])} epochs (validation COVID loss {r['val_covid_loss']:.3f} averaged over both methods: "
            f"baseline {r['loss baseline']:.3f}, LA-DNN {r['loss LA-DNN']:.3f}; {int(r['seeds'])} seeds; about "
            f"{r['train_seconds']:.0f} s of training per run)")


def selection_sentence(sel: pd.DataFrame, runs: pd.DataFrame) -> str:
    """Name the best setting on validation, the best within this profile's epoch budget, and this profile's own."""
    sel = sel[sel["both methods"]]
    if sel.empty:
        return "No candidate setting was trained for both methods."
    text = f"Lowest validation loss of all: {describe(sel.iloc[0])}."
    c = runs.iloc[0]
    if c["finetune"] != "top":
        return text + f" This profile fine-tunes with `{c['finetune']}`, which the table does not cover."
    same = sel[sel["budget"] == c["epochs"]]
    if not same.empty:
        text += f" Lowest with {int(c['epochs'])} epochs: {describe(same.iloc[0])}."
    mine = _profile_rows(sel, runs)
    if mine.empty:
        return text + (f" This profile trains {c['backbone']}'s top {int(c['top_blocks'])} block(s) at learning "
                       f"rate {c['lr']:g} for {int(c['epochs'])} epochs, a setting the table does not hold.")
    return text + f" This profile uses {describe(mine.iloc[0])}."


def for_page(sel: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """`selection_table` for people: one short column naming each setting, its epoch budget, the criterion (validation
    COVID loss averaged over both methods), the validation AUC and the training time per run, rounded; the profile's
    own setting marked."""
    mine = set(_profile_rows(sel, runs).index)
    setting = sel.apply(lambda r: f"{r['backbone']}, top {int(r['top_blocks'])}, lr {r['lr']:g}, "
                                  f"{int(r['views'])} views, TTA {int(r['tta'])}, {r['head']}", axis=1)
    return pd.DataFrame({"setting": setting, "epochs": sel["budget"].astype(int),
                         "val COVID loss": sel["val_covid_loss"].round(3), "val AUC": sel["val_auc"].round(3),
                         "training s/run": sel["train_seconds"].round(0).astype("Int64"),
                         "this profile": ["yes" if i in mine else "" for i in sel.index]}).set_index("setting")


def selection_figure(sel: pd.DataFrame, runs: pd.DataFrame):
    """Validation COVID loss (both methods averaged) against training seconds per run, one line per setting through
    its epoch budgets; the profile's own setting is starred."""
    fig, ax = plt.subplots(figsize=(8, 6))
    for k, g in sel.groupby(SETTING):
        g = g.sort_values("budget")
        line, = ax.plot(g["train_seconds"], g["val_covid_loss"], marker="o", ms=5,
                        label=f"{k[0].replace('efficientnet_', '')}, top {k[1]}, lr {k[2]:g}, {k[3]} views, TTA {k[4]}, "
                              f"{k[5]}")
        for _, r in g.iterrows():
            ax.annotate(f"{int(r['budget'])}", (r["train_seconds"], r["val_covid_loss"]), fontsize=10,
                        xytext=(3, 3), textcoords="offset points", color=line.get_color())
    mine = _profile_rows(sel, runs)
    if not mine.empty:
        ax.plot(mine["train_seconds"], mine["val_covid_loss"], "k*", ms=14, label="this profile")
    ax.set_xlabel("training seconds per run (numbers: epochs)", fontsize=12)
    ax.set_ylabel("validation COVID loss\n(mean of both methods)", fontsize=12)
    ax.tick_params(labelsize=11)
    ax.set_title("candidate settings (backbone, trained blocks, learning rate, views, TTA, head)", fontsize=11)
    ax.legend(fontsize=10, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
