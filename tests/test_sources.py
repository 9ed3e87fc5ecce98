"""The unseen-source protocol: no source on both sides of a fold, on the real data."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ladnn.config import Config
from ladnn.data import load_table
from ladnn.sources import fold_splits, shared_sources, source_folds, source_group, source_groups, ungrouped


@pytest.fixture(scope="module")
def table(data_dir):
    return load_table("D0+D1")


def test_groups_from_names():
    assert source_group("2020.02.25.20021568-p4-37.png", "2020.02.25.20021568") == "D0:2020.02.25.20021568"
    assert source_group("12%0.jpg", "12") == source_group("12%3.jpg", "12") == "D0:12"
    assert source_group("66.jpg") == "D0:66"  # a numbered document with one image
    assert source_group("PIIS0140673620301549_1.png") == source_group("PIIS0140673620301549_2.png")
    assert source_group("487.png").startswith("image:") and source_group("487.png") != source_group("488.png")
    assert source_group("x.png", "RIDER", "D1") != source_group("x.png", "RIDER", "D0")


@pytest.mark.parametrize("fold", range(5))
def test_folds_never_share_a_source(table, fold):
    split = fold_splits(table, 5, fold)
    assert shared_sources(table, split) == {"val": set(), "test": set()}
    g = source_groups(table)
    assert not set(g[split == "test"]) & set(g[split == "val"])
    assert set(split) == {"train", "val", "test"}
    # both classes in every part, so every fold has an AUC
    for s in ("train", "val", "test"):
        assert table.loc[split == s, "covid"].nunique() == 2, s


def test_every_image_tested_once_and_groups_whole(table):
    f = source_folds(table, 5)
    assert sorted(np.unique(f)) == list(range(5))
    g = source_groups(table)
    assert (pd.Series(f).groupby(g.to_numpy()).nunique() == 1).all()  # a source lives in one fold
    sizes = np.bincount(f)
    assert sizes.min() > 0.6 * sizes.mean()  # roughly balanced
    # the one article of D1's positives stays together
    d1_pos = (table["dataset"] == "D1") & (table["covid"] == 1)
    assert len(set(f[d1_pos.to_numpy()])) == 1
    assert ungrouped(g) == 195  # negatives named only by a number: origin unrecorded, each its own group
    assert (source_folds(table, 5) == f).all()  # deterministic


def test_train_splits_follow_the_protocol(data_dir):
    from ladnn.data import splits

    for fold in (0, 3):
        d = splits(Config(protocol="source", dataset="D0+D1", fold=fold))
        train = set(source_groups(d["train"]))
        assert not train & set(source_groups(d["test"])) and not train & set(source_groups(d["val"]))
        assert sum(len(x) for x in d.values()) == 822
    off = splits(Config())
    assert [len(off[s]) for s in ("train", "val", "test")] == [425, 118, 203]


def test_bad_protocol_fields():
    with pytest.raises(ValueError, match="fold"):
        Config(protocol="source", folds=5, fold=5)
    with pytest.raises(ValueError, match="folds"):
        Config(folds=2)
    with pytest.raises(ValueError, match="preprocess"):
        Config(preprocess=["blur"])


def test_fold_runs_share_one_cache_and_hold_out_sources(tmp_path, data_dir, monkeypatch):
    from ladnn.train import train

    monkeypatch.setenv("LADNN_CACHE_DIR", str(tmp_path / "cache"))
    base = Config(backbone="efficientnet_lite0", pretrained=False, finetune="top", top_blocks=1, views=1, tta=2,
                  epochs=1, batch_size=8, limit=24, protocol="source", dataset="D0+D1", preprocess=["gray", "jpeg"])
    ms = [train(Config(**{**base.to_dict(), "fold": k}), tmp_path / f"f{k}") for k in (0, 1)]
    assert len(list((tmp_path / "cache" / "features").glob("*.pt"))) == 1
    for k, m in enumerate(ms):
        p = m.protocol
        assert (p.protocol, p.fold, p.folds, p.sources_shared_with_training) == ("source", k, 5, 0)
        assert m.unseen_source is None  # its test fold is the unseen-source evaluation
        assert "unseen_source" not in json.loads((tmp_path / f"f{k}" / "metrics.json").read_text())
    p0 = pd.read_csv(tmp_path / "f0" / "predictions.csv")
    assert set(p0["image"]).isdisjoint(pd.read_csv(tmp_path / "f1" / "predictions.csv")["image"])


def test_official_run_scored_on_unseen_sources(tiny_run):
    m = json.loads((Path(tiny_run) / "metrics.json").read_text())
    u = m["unseen_source"]
    pred = pd.read_csv(Path(tiny_run) / "unseen_source.csv")
    assert u["sources"] == pred["group"].nunique() >= 2 and u["sources_by_class"]["1"] == 1
    assert len(pred) == u["covid"]["n"] and set(pred["group"]) <= {
        "D1:10.1148.radiol.2020200642", "D1:Non-smallcelllungcancer_RIDER-Lung-CT",
        "D1:Lungsquamouscellcarcinoma_CPTAC-LSCC"}
    assert m["protocol"]["protocol"] == "official"


def test_committed_benchmark_matches_todays_folds(table):
    """The chapter's fold predictions were computed with the folds the code makes today, on the data here."""
    from ladnn.report.unseen import bench_predictions, bench_runs

    preds = bench_predictions()
    src = preds[preds["protocol"] == "source"]
    fold = dict(zip(table["name"], source_folds(table, 5)))
    assert (src["image"].map(fold) == src["fold"]).all()
    group = dict(zip(table["name"], source_groups(table)))
    assert (src["image"].map(group) == src["source_group"]).all()
    runs = bench_runs()
    full = runs[(runs["protocol"] == "source")].groupby(["candidate", "method"])["fold"].nunique()
    assert (full == 5).all(), full[full != 5]
    for (cand, method), p in src.groupby(["candidate", "method"]):  # every image tested exactly once
        assert p["image"].is_unique and len(p) == len(table), (cand, method)
