"""The sample table: one row per image with its COVID label, five lesion labels, split, source and patient.

D0 is the paper's split of COVID-CT (`la-dnn/data_split/*_meta.csv`). D1 is whatever new-data zips are present
(`la-dnn/New_data/<date>/<date>_{covidct,nocovidct}.zip`), labelled by folder and by the new-data metadata CSVs.
"""
from __future__ import annotations

import csv
import glob
import hashlib
import math
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from ladnn.config import LESIONS, Config
from ladnn.sources import fold_splits

COVID_DIR = "covid-ct/Images-processed/CT_COVID"
NONCOVID_DIR = "covid-ct/Images-processed/CT_NonCOVID"
SPLIT_DIR = "la-dnn/data_split"
NEW_DIR = "la-dnn/New_data"
NEW_META = {1: "New_COVIDCT_meta(update to 5.18).csv", 0: "New_NonCOVIDCT_meta(update to 5.18).csv"}
D1_PAPER_TOTAL = 478  # Table 1: 219 positive + 259 negative new images
# Spellings that mean the same lesion. The new-data metadata writes `Aibr` and `InSep`; the paper's code used only
# those spellings, so the split files' `AirBr` and `InSepThi` were silently read as 0. Here both are accepted
# explicitly and anything else is an error.
ALIASES = {"CVD19": {"CVD19"}, "GGO": {"GGO"}, "Csld": {"Csld"}, "CrPa": {"CrPa"},
           "AirBr": {"AirBr", "Aibr"}, "InSepThi": {"InSepThi", "InSep"}}
COLUMNS = ["image", "name", "covid", *LESIONS, "lesions_known", "split", "dataset", "source", "patient", "collection"]
NONCOVID_META = "covid-ct/NonCOVID-CT-MetaInfo.csv"
# The collections of D0's negatives, by the prefix of their patient ids (the data folder's README).
D0_COLLECTIONS = {"medpix": "MedPix", "crawled": "crawled paper figures"}


class DataError(ValueError):
    """Bad or missing data; the message names the file (and line)."""


def data_dir(path: str | Path | None = None) -> Path:
    """The data copy: `path`, else $LADNN_DATA_DIR; it must hold `covid-ct/` and `la-dnn/`."""
    p = path or os.environ.get("LADNN_DATA_DIR")
    if not p:
        raise DataError("no data folder: set LADNN_DATA_DIR or pass --data-dir (a folder holding covid-ct/ and "
                        "la-dnn/; `ladnn data fetch` downloads one)")
    p = Path(p).expanduser().resolve()
    missing = [d for d in ("covid-ct", "la-dnn") if not (p / d).is_dir()]
    if missing:
        raise DataError(f"{p}: not a data folder, missing {missing} (see `ladnn data fetch`)")
    return p


def _lesion_of_header(cell: str) -> str | None:
    m = re.search(r"\((\w+)\)\s*$", cell)
    key = m.group(1) if m else cell.strip()
    return key if key in ALIASES else None


def parse_label_csv(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """Parse a label CSV strictly: columns imgname, CVD19 (or C0VID19) and the five lesions, each cell empty or the
    column's own name (or a listed alias). Returns name, covid and the lesion columns as 0/1."""
    with open(path, newline="", encoding=encoding) as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise DataError(f"{path}: empty file")
    header = rows[0]
    cols: dict[str, int] = {}
    for i, cell in enumerate(header):
        key = "CVD19" if cell.strip() in ("CVD19", "C0VID19") else _lesion_of_header(cell)
        if key and key not in cols:
            cols[key] = i
    missing = [k for k in ALIASES if k not in cols]
    if missing:
        raise DataError(f"{path}:1: header lacks column(s) {missing}: {header}")
    out = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        name = row[0].strip()
        if not name:
            raise DataError(f"{path}:{lineno}: empty image name")
        rec = {"name": name}
        for key, i in cols.items():
            tok = row[i].strip() if i < len(row) else ""
            if tok and tok not in ALIASES[key]:
                raise DataError(f"{path}:{lineno}: column {header[i]!r}: unknown label {tok!r} "
                                f"(expected empty or one of {sorted(ALIASES[key])})")
            rec["covid" if key == "CVD19" else key] = int(bool(tok))
        out.append(rec)
    return pd.DataFrame(out, columns=["name", "covid", *LESIONS])


def source_of(name: str) -> str:
    """The document or collection an image came from, read from its file name ('' when the name says nothing).
    COVID-CT figures are named `<preprint>-p<page>-<n>` or `<Lancet PII>_<n>`; new-data files
    `<collection>_<patient>_<slice>`."""
    stem = name.rsplit(".", 1)[0]
    if m := re.match(r"^(.*?)-p\d+", stem):
        return m.group(1)
    if m := re.match(r"^(PII[A-Z0-9]+)", stem):  # Lancet figures: one article (its PII), whatever the panel suffix
        return m.group(1)
    if stem.count("_") >= 2:
        return "_".join(stem.split("_")[:2])
    if "%" in stem:
        return stem.split("%")[0]
    if m := re.match(r"^(.+)-\d+$", stem):
        return m.group(1)
    return ""


def _patient_of_name(name: str) -> str:
    stem = name.rsplit(".", 1)[0]
    return stem.rsplit("_", 1)[0] if stem.count("_") >= 2 else ""


def _metainfo_patients(root: Path) -> dict[str, str]:
    path = root / SPLIT_DIR / "COVID-CT-MetaInfo_new.csv"
    with open(path, newline="", encoding="latin-1") as fh:
        rows = list(csv.reader(fh))[1:]
    out = {}
    for r in rows:
        if r and r[0].strip():
            name = r[0].strip()
            name = name if name.lower().endswith(".png") else name + ".png"  # 83 names lack the extension
            out[name] = r[1].strip()
    return out


def _noncovid_patients(root: Path) -> dict[str, str]:
    """The patient of every D0 negative (`NonCOVID-CT-MetaInfo.csv`: `image name,patient id`), read strictly."""
    path = root / NONCOVID_META
    if not path.is_file():
        raise DataError(f"{path}: missing: the patient of every non-COVID image, which the protocols group by. "
                        "`ladnn data fetch` downloads it (images/NonCOVID-CT-MetaInfo.csv of the GitHub repository "
                        "boyercb/bst263-final-project, commit 714a3163; its first two columns, `image name,patient "
                        "id`, are the ones kept)")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or [c.strip() for c in rows[0][:2]] != ["image name", "patient id"]:
        raise DataError(f"{path}:1: expected the header 'image name,patient id', got {rows[:1]}")
    out: dict[str, str] = {}
    for lineno, r in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in r):
            continue
        if len(r) < 2 or not r[0].strip() or not r[1].strip():
            raise DataError(f"{path}:{lineno}: expected an image name and a patient id, got {r}")
        name, patient = r[0].strip(), r[1].strip()
        if patient.split("_", 1)[0] not in D0_COLLECTIONS:
            raise DataError(f"{path}:{lineno}: patient id {patient!r} names no known collection "
                            f"(expected a prefix in {sorted(D0_COLLECTIONS)})")
        if name in out:
            raise DataError(f"{path}:{lineno}: image {name!r} is listed twice")
        out[name] = patient
    return out


def collection_of(name: str, covid: int, dataset: str, source: str, patient: str) -> str:
    """The collection an image belongs to: for D0 negatives MedPix or the crawled paper figures (their patient id's
    prefix), for D0 positives the COVID paper figures, for D1 `D1:<collection or article>`."""
    if dataset == "D1":
        return f"D1:{source}"
    if covid:
        return "COVID paper figures"
    return D0_COLLECTIONS[patient.split("_", 1)[0]]


def _d0(root: Path) -> pd.DataFrame:
    parts = []
    for split in ("train", "val", "test"):
        df = parse_label_csv(root / SPLIT_DIR / f"{split}_meta.csv")
        df["split"] = split
        parts.append(df)
    df = pd.concat(parts, ignore_index=True)
    dup = df["name"][df["name"].duplicated()]
    if len(dup):
        raise DataError(f"{root / SPLIT_DIR}: image(s) listed in more than one split: {list(dup)[:5]}")
    folder = df["covid"].map({1: COVID_DIR, 0: NONCOVID_DIR})
    df["image"] = [str(root / f / n) for f, n in zip(folder, df["name"])]
    absent = [p for p in df["image"] if not Path(p).is_file()]
    if absent:
        raise DataError(f"{len(absent)} image(s) named in {root / SPLIT_DIR} are missing, e.g. {absent[0]}")
    patients = _metainfo_patients(root)
    negatives = _noncovid_patients(root)
    neg = df["covid"] == 0
    unlisted = sorted(set(df.loc[neg, "name"]) - set(negatives))
    if unlisted:
        raise DataError(f"{root / NONCOVID_META}: {len(unlisted)} non-COVID image(s) of the split files have no "
                        f"patient there, e.g. {unlisted[:3]}")
    df["source"] = df["name"].map(source_of)
    df["patient"] = [negatives[n] if not c else patients.get(n, "") for n, c in zip(df["name"], df["covid"])]
    df["lesions_known"] = df["covid"].astype(bool) & df["name"].isin(set(patients))
    df["dataset"] = "D0"
    df["collection"] = _collections(df)
    return df


def _collections(df: pd.DataFrame) -> list[str]:
    return [collection_of(*r) for r in zip(df["name"], df["covid"], df["dataset"], df["source"], df["patient"])]


def groups_of(df: pd.DataFrame) -> list[str]:
    """The cluster of each image, for resampling the official split and for D1's split: its patient, else its
    source document, else the image itself (every D0 and D1 image present has a patient)."""
    cols = [df[c] if c in df else pd.Series([""] * len(df), index=df.index) for c in ("patient", "source")]
    return [str(p or s or n) for p, s, n in zip(*cols, df["name"])]


# D1's split by patient (or source) group: the ratios of the paper's Section 3.2 and Table 1 caption
D1_SPLIT_RATIOS = {"train": 0.60, "val": 0.15, "test": 0.25}


def _split_of_group(group: str) -> str:
    """Deterministic split of D1 by patient (or source) group, in the ratios D1_SPLIT_RATIOS."""
    u = int(hashlib.sha256(group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    train, val = D1_SPLIT_RATIOS["train"], D1_SPLIT_RATIOS["train"] + D1_SPLIT_RATIOS["val"]
    return "train" if u < train else "val" if u < val else "test"


def _d1(root: Path) -> pd.DataFrame:
    meta = {}
    for covid, fname in NEW_META.items():
        m = parse_label_csv(root / NEW_DIR / fname, encoding="latin-1")
        bad = m[m["covid"] != covid]
        if len(bad):
            raise DataError(f"{root / NEW_DIR / fname}: image {bad['name'].iloc[0]!r} has COVID label "
                            f"{bad['covid'].iloc[0]} in a file of label {covid}")
        m["lesions_known"] = bool(covid)
        meta.update({r["name"]: r for r in m.to_dict("records")})
    rows = []
    for z in sorted(glob.glob(str(root / NEW_DIR / "*" / "*.zip"))):
        m = re.search(r"_(covidct|nocovidct)\.zip$", z)
        if not m:
            raise DataError(f"{z}: cannot tell the class from the file name (expected *_covidct.zip or *_nocovidct.zip)")
        covid = int(m.group(1) == "covidct")
        with zipfile.ZipFile(z) as zf:
            members = [n for n in zf.namelist() if not n.endswith("/") and not os.path.basename(n).startswith(".")]
        for member in members:
            name = os.path.basename(member)
            rec = dict(meta.get(name, {"name": name, "covid": covid, **{k: 0 for k in LESIONS},
                                       "lesions_known": False}))
            if rec["covid"] != covid:
                raise DataError(f"{z}: {name} is in a {m.group(1)} archive but its metadata says covid={rec['covid']}")
            rec["image"] = f"{z}::{member}"
            rows.append(rec)
    df = pd.DataFrame(rows, columns=["name", "covid", *LESIONS, "lesions_known", "image"])
    if df.empty:
        return pd.DataFrame(columns=[c for c in COLUMNS])
    df["source"] = df["name"].map(source_of)
    df["patient"] = df["name"].map(_patient_of_name)
    df["split"] = [_split_of_group(g) for g in groups_of(df)]
    df["dataset"] = "D1"
    df["collection"] = _collections(df)
    return df


def load_table(dataset: str = "D0", root: str | Path | None = None) -> pd.DataFrame:
    """The sample table for `D0` or `D0+D1` (D1 = the new-data zips present; see `d1_found`)."""
    root = data_dir(root)
    df = _d0(root)
    if dataset == "D0+D1":
        df = pd.concat([df, _d1(root)], ignore_index=True)
    elif dataset != "D0":
        raise DataError(f"unknown dataset {dataset!r}: use D0 or D0+D1")
    df["lesions_known"] = df["lesions_known"].astype(bool)
    return df[COLUMNS]


def subset(df: pd.DataFrame, limit: int | None, seed: int = 0) -> pd.DataFrame:
    """At most `limit` images per split, stratified by class (for tests and smoke runs)."""
    if not limit:
        return df
    parts = []
    for (_, _), g in df.groupby(["split", "covid"], sort=True):
        parts.append(g.sample(n=min(len(g), max(1, limit // 2)), random_state=seed))
    return pd.concat(parts).sort_index()


def train_subset(df: pd.DataFrame, fraction: float, seed: int = 0) -> pd.DataFrame:
    """The rows of the training patients kept at `fraction` (the learning curves of the multi-task lab): within each
    class, the patients (`groups_of`) in an order drawn with `seed`, and the first ceil(fraction x count) of them.
    For one seed the subsets are nested (every patient of a smaller fraction is in a larger one) and hold both
    classes; the order of the rows is kept."""
    if not 0 < fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return df
    groups = pd.Series(groups_of(df), index=df.index)
    rng = np.random.default_rng(seed)
    keep: set[str] = set()
    for c in sorted(df["covid"].unique()):
        pool = sorted(set(groups[df["covid"] == c]))
        order = [pool[i] for i in rng.permutation(len(pool))]
        keep.update(order[:math.ceil(fraction * len(pool))])
    return df[groups.isin(keep)]


def splits(cfg: Config, root=None) -> dict[str, pd.DataFrame]:
    """Training, validation and test tables: the dataset's own split (`protocol=official`), or fold `cfg.fold` of
    protocol `grouped` or `collection` (ladnn.sources). `row` is the image's place in the whole table."""
    df = load_table(cfg.dataset, root)
    df["row"] = np.arange(len(df))
    df = subset(df, cfg.limit, seed=0)  # with a fold protocol: the same images for every fold
    if cfg.protocol != "official":
        df["split"] = fold_splits(df, cfg.protocol, cfg.folds, cfg.fold)
    out = {s: df[df["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    for s, d in out.items():
        if d["covid"].nunique() < 2:
            why = f"config field 'limit'={cfg.limit} leaves" if cfg.limit else "the data leave"
            raise DataError(f"{why} {len(d)} image(s) of one class only in the {s} split: a run needs both "
                            "classes in every split")
    return out


def check(root: str | Path | None = None, verify: bool = True) -> dict:
    """What a data copy holds, and (with `verify`) whether every file matches the pinned SHA-256 manifest."""
    root = data_dir(root)
    d0 = _d0(root)
    d1 = _d1(root)
    report = {
        "data_dir": str(root),
        "D0": {"covid": int(d0["covid"].sum()), "noncovid": int((d0["covid"] == 0).sum()),
               "split": {s: int((d0["split"] == s).sum()) for s in ("train", "val", "test")}},
        "D1": {"found": len(d1), "of_paper": D1_PAPER_TOTAL, "covid": int(d1["covid"].sum()),
               "noncovid": int((d1["covid"] == 0).sum()),
               "zips": sorted(os.path.relpath(p, root) for p in glob.glob(str(root / NEW_DIR / "*" / "*.zip")))},
    }
    from ladnn.fetch import is_d1_zip, manifest, verify_tree

    pinned = [rel for rel in manifest() if is_d1_zip(rel)]
    present = [rel for rel in pinned if (root / rel).is_file()]
    report["D1"]["archives"] = {"pinned": len(pinned), "present": present,
                                "absent": [rel for rel in pinned if rel not in present]}
    if verify:  # every file hashed once; a present archive is verified unless it mismatched
        report["verify"] = verify_tree(root)
        report["D1"]["archives"]["verified"] = [rel for rel in present if rel not in report["verify"]["mismatched"]]
    return report
