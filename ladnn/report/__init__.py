"""Tables, figures and sentences of the book, one module per chapter: `dataset` (Data), `results` (Results,
Training runs), `lesions` (Table 3), `selection` (how the quick profile was chosen), `maps` (Grad-CAM++ and the
auxiliary outputs), `leakage` and `validity` (Validity), `unseen` and `marks` (New sources), `lab` (Multi-task lab),
`reproduction` (Reproduction notes). The notebooks call these and a few lower modules directly (`ladnn.data`,
`ladnn.rundir`, `ladnn.sources`, `ladnn.generalisation`); every number they show is scored through
`ladnn.scores`. This module holds what the chapters share: the paper's tables (package data) and number
formatting."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ladnn.config import METHOD_NAMES  # the chapters import it from here
from ladnn.files import resource

METRICS = ("sensitivity", "auc", "f1", "accuracy")  # the paper's Table 2, in its order
# The paper's backbone names (its Table 2) and our short names for them (ladnn.config.PAPER_SEVEN).
PAPER_NAMES = {"VGG-16": "vgg16", "ResNet-18": "resnet18", "ResNet-50": "resnet50",
                   "DenseNet-121": "densenet121", "DenseNet-169": "densenet169",
                   "EfficientNet-b0": "efficientnet_b0", "EfficientNet-b1": "efficientnet_b1"}


FIG_WIDTH = 8.0  # inches: a figure as wide as the column (800 px at the inline backend's 100 dpi)


def short_name(name: str, width: int = 24) -> str:
    """`name` cut to at most `width` characters around an ellipsis, keeping its start and its end (where the page
    and figure numbers of COVID-CT's file names are)."""
    if len(name) <= width:
        return name
    tail = width // 2
    return f"{name[:width - 1 - tail]}\u2026{name[-tail:]}"


def paper_table(n: int) -> pd.DataFrame:
    """The paper's Table n as typed in from its text (Table 2 in percent), with our short backbone names."""
    t = pd.read_csv(resource(f"paper_table{n}.csv"))
    if "backbone" in t:
        t["backbone"] = t["backbone"].map(PAPER_NAMES).fillna(t["backbone"])
    return t


def fmt_ci(m: float, lo: float, hi: float, scale: float = 100, digits: int = 1) -> str:
    """'m [lo, hi]' (the interval left out when it is nan), scaled (percent by default)."""
    f = f"{{:.{digits}f}}"
    return f.format(scale * m) if np.isnan(lo) else (f"{f} [{f}, {f}]").format(scale * m, scale * lo, scale * hi)


def recipe(runs: pd.DataFrame) -> str:
    """The runs' backbones and fine-tuning modes in words, e.g. 'efficientnet_lite0 with top fine-tuning'."""
    parts = [f"{bb} with {ft} fine-tuning" for (bb, ft), _ in runs.groupby(["backbone", "finetune"])]
    return ", ".join(parts)


def runs_overview(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs table for people, narrow enough for the page: indexed by backbone, dataset, method and seed, with
    the kept epoch, the training seconds and the test metrics in percent (one decimal)."""
    runs = runs.sort_values(["backbone", "dataset", "method", "seed"])
    out = pd.DataFrame({"kept epoch": runs["best_epoch"].to_numpy(),
                        "seconds": runs["seconds"].round(0).astype(int).to_numpy()})
    for k, name in (("auc", "AUC"), ("sensitivity", "sens."), ("f1", "F1"), ("accuracy", "acc.")):
        out[f"{name} %"] = (100 * runs[k]).round(1).to_numpy()
    out.index = pd.MultiIndex.from_arrays([runs["backbone"], runs["dataset"], runs["method"].map(METHOD_NAMES),
                                           runs["seed"]], names=["backbone", "dataset", "method", "seed"])
    return out


def drop_constant_levels(t: pd.DataFrame, levels: tuple[str, ...] = ("backbone", "dataset")) -> pd.DataFrame:
    """`t` without the index levels among `levels` that hold one value (one backbone on one dataset, as in the quick
    book): the page names them once above the table instead of on every row."""
    drop = [n for n in levels if n in (t.index.names or []) and t.index.get_level_values(n).nunique() == 1
            and t.index.nlevels > 1]
    return t.droplevel(drop[: t.index.nlevels - 1]) if drop else t


def styled(df: pd.DataFrame, index: bool = False):
    """A table for the page drawn like the book's other tables: without pandas' row numbers, or with `index` where
    the index names the rows."""
    style = df.style if index else df.style.hide(axis="index")
    return style.set_table_attributes('class="dataframe"')


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 pair', '2 pairs', '0 pairs' (`many` for a plural that is not word + 's')."""
    return f"{n} {word if n == 1 else (many or word + 's')}"
