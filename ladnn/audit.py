"""Checks of the paper's code and numbers, run on our own data and predictions (book: Reproduction notes)."""
from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
from sklearn import metrics as skm
from sklearn.preprocessing import MultiLabelBinarizer

from ladnn.config import LESIONS
from ladnn.data import SPLIT_DIR, data_dir

# Code/train.py's label classes, as described in shared/paper/README.md (its binarizer spells two lesions otherwise)
PAPER_CODE_CLASSES = ["CVD19", "GGO", "Csld", "CrPa", "Aibr", "InSep"]


def paper_binarizer_counts(root=None) -> pd.DataFrame:
    """Positive labels per lesion in the training split: read by our parser vs by a MultiLabelBinarizer with the
    paper code's class names (unknown tokens are silently ignored there, which is what dropped two lesions)."""
    import warnings

    path = Path(data_dir(root)) / SPLIT_DIR / "train_meta.csv"
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    tokens = [[t for t in r[1:] if t] for r in rows]
    mlb = MultiLabelBinarizer(classes=PAPER_CODE_CLASSES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the paper's code hid this same warning ("unknown class(es) ... ignored")
        paper = pd.DataFrame(mlb.fit_transform(tokens), columns=["COVID", *LESIONS]).sum()
    from ladnn.data import parse_label_csv

    ours = parse_label_csv(path)[["covid", *LESIONS]].sum()
    ours.index = ["COVID", *LESIONS]
    return pd.DataFrame({"ours (strict parser)": ours, "paper code's binarizer": paper})


def thresholded_auc(pred: pd.DataFrame) -> dict:
    """AUC from probabilities, the paper code's AUC of 0/1 decisions, and balanced accuracy (which the latter equals)."""
    y, p = pred["y_true"], pred["p_covid"]
    return {"AUC (probabilities)": skm.roc_auc_score(y, p),
            "AUC of 0/1 decisions (paper code)": skm.roc_auc_score(y, (p >= 0.5).astype(int)),
            "balanced accuracy": skm.balanced_accuracy_score(y, (p >= 0.5).astype(int))}


# ---------------------------------------------------------------- validity: leakage and shortcuts
def image_meta(df: pd.DataFrame) -> pd.DataFrame:
    """File metadata a shortcut could use: format, colour mode, width, height, file size (read from the files)."""
    import io

    from PIL import Image

    from ladnn.images import read_bytes

    rows = []
    for p in df["image"]:
        data = read_bytes(p)
        with Image.open(io.BytesIO(data)) as im:
            rows.append({"format": im.format, "mode": im.mode, "width": im.size[0], "height": im.size[1],
                         "file_kb": len(data) / 1024})
    return pd.DataFrame(rows, index=df.index)


def metadata_classifier(df: pd.DataFrame, meta: pd.DataFrame, seed: int = 0) -> dict:
    """How well file metadata alone separates the classes: a gradient-boosted classifier trained on the training
    split's metadata (format, mode, width, height, file size), scored by test AUC."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    x = pd.get_dummies(meta[["format", "mode"]]).astype(float)
    x[["width", "height", "file_kb"]] = meta[["width", "height", "file_kb"]]
    x["aspect"] = meta["width"] / meta["height"]
    tr, te = df["split"] == "train", df["split"] == "test"
    clf = HistGradientBoostingClassifier(max_iter=200, random_state=seed).fit(x[tr], df.loc[tr, "covid"])
    p = clf.predict_proba(x[te])[:, 1]
    return {"test_auc": float(skm.roc_auc_score(df.loc[te, "covid"], p)), "features": list(x.columns),
            "n_train": int(tr.sum()), "n_test": int(te.sum())}


def phashes(df: pd.DataFrame, size: int = 8) -> list:
    """Perceptual hashes (imagehash.phash, 64 bits) of the decoded images, in table order."""
    import imagehash

    from ladnn.images import decode, read_bytes

    return [imagehash.phash(decode(read_bytes(p), p).convert("L"), hash_size=size) for p in df["image"]]


def near_duplicates(df: pd.DataFrame, hashes: list, threshold: int) -> pd.DataFrame:
    """Pairs of images in different splits whose perceptual hashes differ in at most `threshold` of 64 bits."""
    import numpy as np

    d = hash_distances(hashes)
    split = df["split"].to_numpy()
    i, j = np.where((d <= threshold) & np.triu(np.ones_like(d, dtype=bool), 1) & (split[:, None] != split[None, :]))
    names = df["name"].to_numpy()
    return pd.DataFrame({"a": names[i], "split_a": split[i], "b": names[j], "split_b": split[j],
                         "distance": d[i, j]}).sort_values("distance").reset_index(drop=True)


def hash_distances(hashes: list):
    import numpy as np

    bits = np.array([h.hash.flatten() for h in hashes], dtype=bool)
    return (bits[:, None, :] != bits[None, :, :]).sum(-1)


def cross_split(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Values of `column` (source or patient) that occur in more than one split, with image counts per split."""
    d = df[df[column] != ""]
    multi = d.groupby(column)["split"].nunique()
    keep = d[d[column].isin(multi[multi > 1].index)]
    return keep.pivot_table(index=column, columns="split", values="name", aggfunc="count", fill_value=0)


def clean_test(df: pd.DataFrame, dups: pd.DataFrame) -> pd.Series:
    """Test images with no near-duplicate in training and no training image from the same source."""
    train_sources = set(df.loc[(df["split"] == "train") & (df["source"] != ""), "source"])
    dup_names = set(dups.loc[dups["split_a"] == "train", "b"]) | set(dups.loc[dups["split_b"] == "train", "a"])
    test = df[df["split"] == "test"]
    return ~test["source"].isin(train_sources) & ~test["name"].isin(dup_names)


def reencode(data: bytes, fmt: str = "JPEG", quality: int = 90) -> bytes:
    """The same pixels written in one format (RGB), so the file format no longer tells the classes apart."""
    import io

    from ladnn.images import decode

    buf = io.BytesIO()
    decode(data).save(buf, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def subset_auc(pred: pd.DataFrame, names) -> dict:
    p = pred[pred["image"].isin(set(names))]
    ok = p["y_true"].nunique() == 2
    return {"n": len(p), "n_pos": int(p["y_true"].sum()),
            "auc": float(skm.roc_auc_score(p["y_true"], p["p_covid"])) if ok else None}


def reencoded_auc(run, test: pd.DataFrame, fmt: str = "JPEG") -> dict:
    """Test AUC of a run when every test image is re-encoded to one format before scoring."""
    from ladnn.images import read_bytes
    from ladnn.predict import Predictor

    pr = Predictor(run)
    xs = [pr.preprocess(reencode(read_bytes(f), fmt), f)[1] for f in test["image"]]
    p = pr.probs_batched(xs)[:, 0]
    return {"n": len(p), "auc": float(skm.roc_auc_score(test["covid"], p))}
