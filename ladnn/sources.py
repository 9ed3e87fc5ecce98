"""The unseen-source protocol: cross-validation in which no source (the paper, figure or image collection an image was
cut from) ever has images on both sides of a fold.

What can be grouped (`source_group`):
- D0 positives: the preprint or article in the file name (`2020.02.25.20021568-p4-37.png`, `PIIS0140673620301549_1`).
- D0 negatives named `12%0.jpg`, `12%1.jpg`: panels of document 12; `66.jpg`: document 66 with one image (the JPEG
  numbers 0-91 and the `%` prefixes never coincide, so they are one numbering of 86 documents).
- D1: the collection or article in the file name (the new-data metadata lists the same sources).
What cannot: the 195 negatives named only by a number (`487.png`). Nothing records their origin, so each is a group
of its own; images of one unrecorded collection may then sit on both sides of a fold (`ungrouped` counts them).

`protocol_info` says, for a finished run, what its test set was. This module is the protocol alone: it imports
only `ladnn.summary`, so the data layer (`ladnn.data.splits`) can apply it.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ladnn.summary import Protocol

UNGROUPED = "image:"  # prefix of the group of an image whose source is not recorded


def source_group(name: str, source: str = "", dataset: str = "D0") -> str:
    """The group of one image for the unseen-source protocol (see the module docstring)."""
    stem = name.rsplit(".", 1)[0]
    if source:
        return f"{dataset}:{source}"
    if m := re.match(r"^(PII[A-Z0-9]+)_\d+$", stem):  # Lancet figures: one article, several panels
        return f"{dataset}:{m.group(1)}"
    if re.match(r"^\d+$", stem) and name.lower().endswith(".jpg"):  # a numbered document with a single image
        return f"{dataset}:{stem}"
    return f"{UNGROUPED}{dataset}:{name}"


def source_groups(df: pd.DataFrame) -> pd.Series:
    """`source_group` of every row of a sample table (`ladnn.data` columns)."""
    return pd.Series([source_group(n, s, d) for n, s, d in zip(df["name"], df["source"], df["dataset"])],
                     index=df.index, name="source_group")


def ungrouped(groups: pd.Series) -> int:
    """How many images have no recorded source (each is its own group)."""
    return int(groups.str.startswith(UNGROUPED).sum())


def source_folds(df: pd.DataFrame, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold number (0..folds-1) of every row: whole source groups, class-stratified as far as the groups allow
    (scikit-learn's StratifiedGroupKFold). A group holding both classes stays whole."""
    from sklearn.model_selection import StratifiedGroupKFold

    if folds < 3:
        raise ValueError(f"the source protocol needs at least 3 folds (test, validation, training); got {folds}")
    groups = source_groups(df)
    if groups.nunique() < folds:
        raise ValueError(f"{groups.nunique()} source groups cannot fill {folds} folds")
    out = np.empty(len(df), dtype=int)
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(cv.split(np.zeros(len(df)), df["covid"].to_numpy(), groups.to_numpy())):
        out[test] = k
    return out


def fold_splits(df: pd.DataFrame, folds: int = 5, fold: int = 0, seed: int = 0) -> pd.Series:
    """The split of every row for one fold of the protocol: fold `fold` is the test set, the next fold (cyclically)
    the validation set that chooses the epoch, and the remaining folds train."""
    if not 0 <= fold < folds:
        raise ValueError(f"fold {fold} is not in 0..{folds - 1}")
    f = source_folds(df, folds, seed)
    split = np.where(f == fold, "test", np.where(f == (fold + 1) % folds, "val", "train"))
    return pd.Series(split, index=df.index, name="split")


def shared_sources(df: pd.DataFrame, split: pd.Series) -> dict[str, set]:
    """Source groups found in the test or validation split and also in training (empty sets when the protocol
    holds)."""
    g = source_groups(df)
    train = set(g[split == "train"])
    return {s: set(g[split == s]) & train for s in ("val", "test")}


# ---------------------------------------------------------------- what a run's test set is
def protocol_info(cfg, data: dict) -> Protocol:
    """What the test split is (`ladnn.summary.Protocol`): the dataset's own, or a source fold (with the count of
    sources shared with training, which the protocol keeps at 0)."""
    if cfg.protocol == "official":
        return Protocol(protocol="official", test=f"{cfg.dataset} test split")
    g = {s: set(source_groups(d)) for s, d in data.items()}
    return Protocol(protocol="source", fold=cfg.fold, folds=cfg.folds, test_sources=len(g["test"]),
                    sources_shared_with_training=len(g["test"] & g["train"]),
                    test=f"source fold {cfg.fold} of {cfg.folds} ({cfg.dataset})")
