"""The Validity chapter's data checks on small constructed cases, and the Reproduction notes' paper-code checks."""
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ladnn.report import leakage, reproduction
from ladnn.scores import PRED


def _write(path, arr, fmt="PNG"):
    Image.fromarray(arr).save(path, fmt)
    return str(path)


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    base = (rng.random((64, 64)) * 255).astype(np.uint8)
    other = (rng.random((64, 64)) * 255).astype(np.uint8)
    near = np.clip(base.astype(int) + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
    rows = [("a.png", base, "train", "docA"), ("a_copy.png", near, "test", "docB"),
            ("b.png", other, "test", "docA"), ("c.png", other[::-1].copy(), "val", "docC")]
    return pd.DataFrame([{"name": n, "image": _write(tmp_path / n, a), "split": s, "source": src, "covid": 1}
                         for n, a, s, src in rows])


def test_near_duplicates_finds_the_copy_only(images):
    h = leakage.phashes(images)
    dups = leakage.near_duplicates(images, h, threshold=6)
    assert list(zip(dups["a"], dups["b"])) == [("a.png", "a_copy.png")]
    assert leakage.hash_distances(h)[0, 2] > 20


def test_cross_split_sources_and_clean_test(images):
    src = leakage.cross_split(images, "source")
    assert list(src.index) == ["docA"] and src.loc["docA", "train"] == 1 and src.loc["docA", "test"] == 1
    dups = leakage.near_duplicates(images, leakage.phashes(images), 6)
    clean = leakage.clean_test(images, dups)
    # a_copy: near-duplicate of a training image; b: same source as a training image -> nothing clean
    assert clean.sum() == 0 and len(clean) == 2


def _meta_df(shortcut: bool, n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    fmt = np.where(y == 1, "PNG", "JPEG") if shortcut else rng.choice(["PNG", "JPEG"], n)
    df = pd.DataFrame({"covid": y, "split": np.where(np.arange(n) < n * 0.6, "train", "test")})
    meta = pd.DataFrame({"format": fmt, "mode": "RGB", "width": rng.integers(100, 400, n),
                         "height": rng.integers(100, 400, n), "file_kb": rng.random(n) * 100})
    return df, meta


def test_metadata_classifier_sees_a_shortcut_only_when_there_is_one():
    assert leakage.metadata_classifier(*_meta_df(True))["test_auc"] > 0.99
    assert leakage.metadata_classifier(*_meta_df(False))["test_auc"] < 0.7


def test_reencode_changes_format_not_content():
    buf = io.BytesIO()
    arr = np.full((32, 32, 3), 120, np.uint8)
    Image.fromarray(arr).save(buf, "PNG")
    out = leakage.reencode(buf.getvalue(), "JPEG")
    img = Image.open(io.BytesIO(out))
    assert img.format == "JPEG" and abs(np.asarray(img).astype(int) - 120).max() <= 2


def test_paper_code_auc_equals_balanced_accuracy():
    pred = pd.DataFrame({PRED.y_true: [1, 1, 1, 0, 0, 0, 1, 0], PRED.p_covid: [0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.7, 0.4]})
    r = reproduction.thresholded_auc(pred)
    assert r["AUC of 0/1 decisions (paper code)"] == pytest.approx(r["balanced accuracy"])
    assert r["AUC (probabilities)"] == pytest.approx(14 / 16)


def test_paper_binarizer_drops_two_lesions(data_dir):
    c = reproduction.paper_binarizer_counts()
    assert c.loc["AirBr", "paper code's binarizer"] == 0 and c.loc["AirBr", "ours (strict parser)"] == 8
    assert c.loc["InSepThi", "paper code's binarizer"] == 0 and c.loc["InSepThi", "ours (strict parser)"] == 12
    assert (c.loc[["COVID", "GGO", "Csld", "CrPa"]].diff(axis=1).iloc[:, 1] == 0).all()
