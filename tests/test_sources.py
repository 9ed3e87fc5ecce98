"""The protocols of ladnn.sources on the real data: groups from the data's own records, and nothing held out that
crosses into training."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ladnn.config import Config
from ladnn.data import DataError, load_table
from ladnn.sources import (
    collection_folds,
    crossing,
    fold_splits,
    grouped_folds,
    linked_groups,
    negative_collections,
)


@pytest.fixture(scope="module")
def table(data_dir):
    return load_table("D0+D1")


def test_groups_and_collections_from_the_metadata(table):
    d0 = table[table["dataset"] == "D0"]
    neg = d0[d0["covid"] == 0]
    assert (neg["patient"] != "").all()  # every negative has its patient now
    assert neg.loc[neg["name"].str.endswith(".png"), "collection"].eq("MedPix").all()
    assert neg.loc[neg["name"].str.endswith(".jpg"), "collection"].eq("crawled paper figures").all()
    med = neg[neg["collection"] == "MedPix"]
    assert len(med) == 195 and med["patient"].nunique() == 85
    g = linked_groups(table)
    assert g[med.index].nunique() == 85  # one group per MedPix patient, not one per image
    # document and patient link: the panels of document 1 are one group, and a paper's patients are its group
    assert g[d0.index[d0["name"].str.match(r"^1%\d\.jpg$")]].nunique() == 1
    pos = d0[d0["covid"] == 1]
    assert (pos.groupby("source").apply(lambda x: g[x.index].nunique(), include_groups=False) == 1).all()
    assert set(negative_collections(table)) == {"MedPix", "crawled paper figures",
                                                "D1:Non-smallcelllungcancer_RIDER-Lung-CT",
                                                "D1:Lungsquamouscellcarcinoma_CPTAC-LSCC"}


def test_linked_groups_join_through_shared_keys():
    df = pd.DataFrame({"dataset": ["D0"] * 4, "name": ["a", "b", "c", "d"], "source": ["s1", "s2", "", ""],
                       "patient": ["p1", "p1", "p2", ""]})
    g = linked_groups(df)
    assert g[0] == g[1] != g[2] != g[3]  # a and b share patient p1 across two documents
    assert g[3] == "D0:image:d"


@pytest.mark.parametrize("protocol,folds", [("grouped", 5), ("collection", 4)])
def test_no_patient_document_or_group_crosses(table, protocol, folds):
    for k in range(folds):
        split = fold_splits(table, protocol, folds, k)
        for level in ("patient", "document", "group"):
            assert crossing(table, split, level) == {"val": set(), "test": set()}, (protocol, k, level)
        if protocol == "collection":  # the held-out collection is in neither training nor validation
            assert crossing(table, split, "collection")["test"] == set()
            held = table.loc[(split == "test") & (table["covid"] == 0), "collection"].unique()
            assert len(held) == 1 and held[0] == negative_collections(table)[k]
        for s in ("train", "val", "test"):
            assert table.loc[split == s, "covid"].nunique() == 2, (protocol, k, s)


def test_every_image_tested_once(table):
    for f in (grouped_folds(table, 5), collection_folds(table)):
        assert (f >= 0).all()
        g = linked_groups(table)
        assert (pd.Series(f).groupby(g.to_numpy()).nunique() == 1).all()  # a group lives in one fold
    assert (collection_folds(table) == collection_folds(table)).all()  # deterministic


def test_protocol_config_and_splits(data_dir):
    from ladnn.data import splits

    d = splits(Config(protocol="collection", dataset="D0+D1", folds=4, fold=2))
    assert sum(len(x) for x in d.values()) == 822
    train = set(linked_groups(d["train"]))
    assert not train & set(linked_groups(d["test"])) and not train & set(linked_groups(d["val"]))
    with pytest.raises(ValueError, match="one fold per negative collection"):
        splits(Config(protocol="collection", dataset="D0+D1", folds=5, fold=0))
    with pytest.raises(ValueError, match="protocol"):
        Config(protocol="source")
    off = splits(Config())
    assert [len(off[s]) for s in ("train", "val", "test")] == [425, 118, 203]


def test_bad_noncovid_metadata_is_named(tmp_path, data_dir):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data_dir / "la-dnn" / "data_split", root / "la-dnn" / "data_split")
    (root / "covid-ct").mkdir(parents=True)
    (root / "covid-ct" / "Images-processed").symlink_to(data_dir / "covid-ct" / "Images-processed")
    meta = (data_dir / "covid-ct" / "NonCOVID-CT-MetaInfo.csv").read_text().splitlines()
    f = root / "covid-ct" / "NonCOVID-CT-MetaInfo.csv"
    f.write_text("\n".join(meta[:5] + ["6.jpg,"] + meta[6:]) + "\n")
    with pytest.raises(DataError, match=r"NonCOVID-CT-MetaInfo.csv:6: expected an image name and a patient id"):
        load_table("D0", root)
    f.write_text("\n".join(meta[:3]) + "\n")
    with pytest.raises(DataError, match="have no patient there"):
        load_table("D0", root)


def test_fold_runs_share_one_cache_and_hold_out_groups(tmp_path, data_dir, monkeypatch):
    from ladnn.train import train

    monkeypatch.setenv("LADNN_CACHE_DIR", str(tmp_path / "cache"))
    base = Config(backbone="efficientnet_lite0", pretrained=False, finetune="top", top_blocks=1, views=1, tta=2,
                  epochs=1, batch_size=8, limit=24, protocol="grouped", dataset="D0+D1", preprocess=["gray", "jpeg"])
    ms = [train(Config(**{**base.to_dict(), "fold": k}), tmp_path / f"f{k}") for k in (0, 1)]
    assert len(list((tmp_path / "cache" / "features").glob("*.pt"))) == 1
    for k, m in enumerate(ms):
        p = m.protocol
        assert (p.protocol, p.fold, p.folds, p.groups_shared_with_training, p.level) == ("grouped", k, 5, 0, "group")
        assert m.unseen_source is None  # its test fold is the held-out evaluation
        assert "unseen_source" not in json.loads((tmp_path / f"f{k}" / "metrics.json").read_text())
    p0 = pd.read_csv(tmp_path / "f0" / "predictions.csv")
    assert set(p0["image"]).isdisjoint(pd.read_csv(tmp_path / "f1" / "predictions.csv")["image"])
    assert p0["group"].str.startswith("D").all()  # intervals resample linked groups


def test_official_run_scored_on_d1(tiny_run):
    m = json.loads((Path(tiny_run) / "metrics.json").read_text())
    u = m["unseen_source"]
    pred = pd.read_csv(Path(tiny_run) / "unseen_source.csv")
    assert u["clusters"] == pred["group"].nunique() >= 2 and u["sources_by_class"]["1"] == 1
    assert len(pred) == u["covid"]["n"] and m["protocol"]["protocol"] == "official"


def test_committed_benchmark_matches_todays_folds(table):
    """The chapter's fold predictions were computed with the folds and groups the code makes today."""
    from ladnn.generalisation import bench_predictions, bench_runs, transfer_predictions

    preds, runs = bench_predictions(), bench_runs()
    group = dict(zip(table["name"], linked_groups(table)))
    folds = {"grouped": dict(zip(table["name"], grouped_folds(table, 5))),
             "collection": dict(zip(table["name"], collection_folds(table)))}
    for prot, fold in folds.items():
        p = preds[preds["protocol"] == prot]
        assert len(p), prot
        assert (p["image"].map(fold) == p["fold"]).all(), prot
        assert (p["image"].map(group) == p["group"]).all(), prot
        for key, q in p.groupby(["candidate", "method"]):  # every image tested exactly once
            assert q["image"].is_unique and len(q) == len(table), key
        full = runs[runs["protocol"] == prot].groupby(["candidate", "method"])["fold"].nunique()
        assert (full == len(set(fold.values()))).all(), full
    t = transfer_predictions()
    plain = t[~t["adabn"] & (t["part"] == "test") & (t["protocol"] != "official")]
    m = plain.merge(preds, on=["candidate", "method", "protocol", "fold", "seed", "image"])
    assert len(m) == len(plain) and np.allclose(m["p_covid_x"], m["p_covid_y"], atol=2e-3)


def test_every_scored_image_has_a_resampling_cluster():
    """D1's COVID article names no patients: its images form one cluster, none is left without one."""
    from ladnn.generalisation import transfer_predictions
    from ladnn.report.unseen import parts, with_adabn

    t = with_adabn(transfer_predictions())
    for name, p in parts(t, "none", "ladnn").items():
        assert p["group"].notna().all() and (p["group"].astype(str) != "").all(), name
    d1 = parts(t, "none", "ladnn")["D1"]
    article = d1[d1["patient"].isna()]
    assert len(article) and article["group"].nunique() == 1
