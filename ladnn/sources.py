"""The evaluation protocols and the groups they hold out, from the data's own records.

Groups (`linked_groups`): images that share a source document or a patient are one group, linked transitively.
- D0 positives: the preprint or article in the file name (`2020.02.25.20021568-p4-37.png`) and the patient of the
  LA-DNN annotations (`COVID-CT-MetaInfo_new.csv`); every patient lies inside one paper, so the group is the paper.
- D0 negatives: the patient of `covid-ct/NonCOVID-CT-MetaInfo.csv` (`medpix_patient_N`, `crawled_patient_N`),
  linked with the document number of the JPEG names (`12%0.jpg`).
- D1: the collection or article and the patient in the file name.

Collections (`ladnn.data.collection_of`): MedPix (the 195 number-named PNG negatives), the crawled paper figures
(the 202 JPEG negatives), each D1 collection, and the COVID papers (positives).

Protocols (`Config.protocol`), each saying what it holds out and what it leaves in:
- `official`: the dataset's own split (by patient; a paper or collection may sit on both sides).
- `grouped` (b): `folds`-fold cross-validation by group: no patient or document on both sides; collections are on
  both sides.
- `collection` (c): one fold per negative collection present, held out whole, with the positives of a quarter (one
  fold's share) of the papers; the validation part holds out groups of the collections left in training, not a
  collection (so it chooses the epoch on new patients of known collections).
- leave-one-dataset-out (d) is no split: a run trained on D0 is scored on D1 (`ladnn.train.unseen_source_eval`)
  and on external CT (`ladnn evaluate --images`).

`protocol_info` says, for a finished run, what its test set was. This module imports only `ladnn.summary`, so the
data layer (`ladnn.data.splits`) can apply it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ladnn.summary import Protocol

PROTOCOL_LEVEL = {"official": "patient", "grouped": "group", "collection": "collection"}


def linked_groups(df: pd.DataFrame) -> pd.Series:
    """The group of every row: connected components of the rows' document (`source`) and `patient` keys, each key
    qualified by the dataset. Named by the component's first key in sorted order, e.g. `D0:doc:2020.02.25.20021568`
    or `D0:patient:medpix_patient_3`. A row with neither key is its own group (`D0:image:<name>`)."""
    parent: dict[str, str] = {}

    def find(k: str) -> str:
        while parent.setdefault(k, k) != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    keys = []
    for d, s, p, n in zip(df["dataset"], df["source"], df["patient"], df["name"]):
        row = [f"{d}:doc:{s}"] * bool(s) + [f"{d}:patient:{p}"] * bool(p) or [f"{d}:image:{n}"]
        for k in row[1:]:
            a, b = find(row[0]), find(k)
            if a != b:
                parent[max(a, b)] = min(a, b)
        keys.append(row[0])
    roots = [find(k) for k in keys]
    return pd.Series(roots, index=df.index, name="group")


def negative_collections(df: pd.DataFrame) -> list[str]:
    """The collections of the negatives present, in sorted order: fold k of protocol (c) holds out the k-th."""
    return sorted(df.loc[df["covid"] == 0, "collection"].unique())


def grouped_folds(df: pd.DataFrame, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Protocol (b): fold number (0..folds-1) of every row, whole groups, class-stratified as far as the groups
    allow (scikit-learn's StratifiedGroupKFold)."""
    from sklearn.model_selection import StratifiedGroupKFold

    if folds < 3:
        raise ValueError(f"grouped cross-validation needs at least 3 folds (test, validation, training); got {folds}")
    groups = linked_groups(df)
    if groups.nunique() < folds:
        raise ValueError(f"{groups.nunique()} groups cannot fill {folds} folds")
    out = np.empty(len(df), dtype=int)
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(cv.split(np.zeros(len(df)), df["covid"].to_numpy(), groups.to_numpy())):
        out[test] = k
    return out


def collection_folds(df: pd.DataFrame, seed: int = 0) -> np.ndarray:
    """Protocol (c): fold k holds the negatives of the k-th negative collection and one share of the positive groups
    (whole papers, about equal in images: scikit-learn's GroupKFold)."""
    from sklearn.model_selection import GroupKFold

    cols = negative_collections(df)
    if len(cols) < 2:
        raise ValueError(f"leave-one-collection-out needs at least 2 negative collections; found {cols}")
    out = np.full(len(df), -1, dtype=int)
    neg = (df["covid"] == 0).to_numpy()
    out[neg] = [cols.index(c) for c in df.loc[neg, "collection"]]
    pos = np.flatnonzero(~neg)
    groups = linked_groups(df).to_numpy()[pos]
    if len(set(groups)) < len(cols):
        raise ValueError(f"{len(set(groups))} positive groups cannot fill {len(cols)} folds")
    order = np.random.default_rng(seed).permutation(len(pos))  # GroupKFold ties broken by a seeded order
    for k, (_, test) in enumerate(GroupKFold(n_splits=len(cols)).split(pos[order], groups=groups[order])):
        out[pos[order][test]] = k
    return out


def fold_splits(df: pd.DataFrame, protocol: str, folds: int = 5, fold: int = 0, seed: int = 0) -> pd.Series:
    """The split of every row for one fold of protocol `grouped` or `collection`.
    grouped: fold `fold` tests, the next fold (cyclically) validates, the rest train.
    collection: fold `fold` tests; a fifth of the other folds' groups (StratifiedGroupKFold) validates."""
    if protocol == "grouped":
        f = grouped_folds(df, folds, seed)
        if not 0 <= fold < folds:
            raise ValueError(f"fold {fold} is not in 0..{folds - 1}")
        split = np.where(f == fold, "test", np.where(f == (fold + 1) % folds, "val", "train"))
        return pd.Series(split, index=df.index, name="split")
    if protocol != "collection":
        raise ValueError(f"unknown protocol {protocol!r}: use official, grouped or collection")
    from sklearn.model_selection import StratifiedGroupKFold

    f = collection_folds(df, seed)
    n = len(negative_collections(df))
    if folds != n or not 0 <= fold < n:
        raise ValueError(f"protocol 'collection' has one fold per negative collection ({n} here, "
                         f"{negative_collections(df)}): set folds={n} and fold 0..{n - 1} (got folds={folds}, "
                         f"fold={fold})")
    split = np.where(f == fold, "test", "train").astype(object)
    rest = np.flatnonzero(f != fold)
    cv = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    _, val = next(cv.split(rest, df["covid"].to_numpy()[rest], linked_groups(df).to_numpy()[rest]))
    split[rest[val]] = "val"
    return pd.Series(split, index=df.index, name="split")


def crossing(df: pd.DataFrame, split: pd.Series, level: str) -> dict[str, set]:
    """Keys of `level` (patient, document, group or collection) found in the validation or test split and also in
    training: empty where the protocol holds that level out. Collections are compared for negatives only."""
    key = {"patient": df["dataset"] + ":" + df["patient"], "document": df["dataset"] + ":" + df["source"],
           "group": linked_groups(df), "collection": df["collection"].where(df["covid"] == 0, "")}[level]
    key = key[key.str.rsplit(":", n=1).str[-1] != ""] if level != "group" else key
    train = set(key[split.loc[key.index] == "train"])
    return {s: set(key[split.loc[key.index] == s]) & train for s in ("val", "test")}


# ---------------------------------------------------------------- what a run's test set is
def protocol_info(cfg, data: dict) -> Protocol:
    """What the test split is (`ladnn.summary.Protocol`): the dataset's own, or a fold of protocol (b) or (c), with
    the count of groups (and for (c) the collection) held out, and the groups shared with training (kept at 0)."""
    if cfg.protocol == "official":
        return Protocol(protocol="official", test=f"{cfg.dataset} test split", level="patient")
    g = {s: set(linked_groups(d)) for s, d in data.items()}
    held = None
    test = f"grouped fold {cfg.fold} of {cfg.folds} ({cfg.dataset})"
    if cfg.protocol == "collection":
        held = ", ".join(sorted(data["test"].loc[data["test"]["covid"] == 0, "collection"].unique()))
        test = f"held-out collection {held} with held-out papers' positives ({cfg.dataset})"
    return Protocol(protocol=cfg.protocol, fold=cfg.fold, folds=cfg.folds, test_groups=len(g["test"]),
                    groups_shared_with_training=len(g["test"] & g["train"]), held_out=held, test=test,
                    level=PROTOCOL_LEVEL[cfg.protocol])
