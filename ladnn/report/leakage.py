"""The Validity chapter's data checks: leakage across the official split (patients, sources, near-duplicate images)
and shortcuts (what file metadata alone can tell)."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
from PIL import Image

from ladnn.images import decode, read_bytes
from ladnn.metrics import auc
from ladnn.scores import PRED


def image_meta(df: pd.DataFrame) -> pd.DataFrame:
    """File metadata a shortcut could use: format, colour mode, width, height, file size (read from the files)."""
    rows = []
    for p in df["image"]:
        data = read_bytes(p)
        with Image.open(io.BytesIO(data)) as im:
            rows.append({"format": im.format, "mode": im.mode, "width": im.size[0], "height": im.size[1],
                         "file_kb": len(data) / 1024})
    return pd.DataFrame(rows, index=df.index)


def metadata_features(meta: pd.DataFrame) -> pd.DataFrame:
    """The metadata classifier's inputs: format and colour mode one-hot, width, height, file size, aspect ratio."""
    x = pd.get_dummies(meta[["format", "mode"]]).astype(float)
    x[["width", "height", "file_kb"]] = meta[["width", "height", "file_kb"]]
    x["aspect"] = meta["width"] / meta["height"]
    return x


def metadata_classifier(df: pd.DataFrame, meta: pd.DataFrame, seed: int = 0) -> dict:
    """How well file metadata alone separates the classes: a gradient-boosted classifier trained on the training
    split's metadata (format, mode, width, height, file size), scored by test AUC."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    x = metadata_features(meta)
    tr, te = df["split"] == "train", df["split"] == "test"
    clf = HistGradientBoostingClassifier(max_iter=200, random_state=seed).fit(x[tr], df.loc[tr, "covid"])
    p = clf.predict_proba(x[te])[:, 1]
    return {"test_auc": auc(df.loc[te, "covid"], p), "features": list(x.columns),
            "n_train": int(tr.sum()), "n_test": int(te.sum())}


def phashes(df: pd.DataFrame, size: int = 8) -> list:
    """Perceptual hashes (imagehash.phash, 64 bits) of the decoded images, in table order."""
    import imagehash

    return [imagehash.phash(decode(read_bytes(p), p).convert("L"), hash_size=size) for p in df["image"]]


def near_duplicates(df: pd.DataFrame, hashes: list, threshold: int) -> pd.DataFrame:
    """Pairs of images in different splits whose perceptual hashes differ in at most `threshold` of 64 bits."""
    d = hash_distances(hashes)
    split = df["split"].to_numpy()
    i, j = np.where((d <= threshold) & np.triu(np.ones_like(d, dtype=bool), 1) & (split[:, None] != split[None, :]))
    names = df["name"].to_numpy()
    return pd.DataFrame({"a": names[i], "split_a": split[i], "b": names[j], "split_b": split[j],
                         "distance": d[i, j]}).sort_values("distance").reset_index(drop=True)


def hash_distances(hashes: list) -> np.ndarray:
    """N x N Hamming distances (bits) between the perceptual hashes of `phashes`."""
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
    buf = io.BytesIO()
    decode(data).save(buf, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def subset_auc(pred: pd.DataFrame, names) -> dict:
    """The COVID AUC of a predictions table on the images named in `names` (None where they hold one class), with
    their number and positives."""
    p = pred[pred[PRED.image].isin(set(names))]
    return {"n": len(p), "n_pos": int(p[PRED.y_true].sum()), "auc": auc(p[PRED.y_true], p[PRED.p_covid])}


def plain_aucs(runs, image_sets: list[list[tuple[bytes, str]]], y) -> list[list[dict]]:
    """Per run, the plain view's AUC on each of several versions of the same images (say, as stored and
    re-encoded), scored in one call of `ladnn.evaluate.plain_probs` so that each run's model is prepared once."""
    from ladnn.evaluate import plain_probs

    y = np.asarray(y)
    n = [len(s) for s in image_sets]
    cuts = np.cumsum([0, *n])
    probs = plain_probs(runs, [im for s in image_sets for im in s])
    return [[{"n": k, "auc": auc(y, p[a:b, 0])} for k, a, b in zip(n, cuts[:-1], cuts[1:])] for p in probs]
