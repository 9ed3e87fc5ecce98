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


@pytest.fixture(scope="module")
def d0(data_dir):
    return load_table("D0")


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


@pytest.mark.parametrize("protocol,folds", [("grouped", 5), ("collection", 2)])
def test_no_patient_document_or_group_crosses(d0, protocol, folds):
    table = d0
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


def test_every_image_tested_once(d0):
    for f in (grouped_folds(d0, 5), collection_folds(d0)):
        assert (f >= 0).all()
        g = linked_groups(d0)
        assert (pd.Series(f).groupby(g.to_numpy()).nunique() == 1).all()  # a group lives in one fold
    assert (collection_folds(d0) == collection_folds(d0)).all()  # deterministic


def test_protocol_config_and_splits(data_dir):
    from ladnn.data import splits

    d = splits(Config(protocol="collection", folds=2, fold=1))
    assert sum(len(x) for x in d.values()) == 746
    train = set(linked_groups(d["train"]))
    assert not train & set(linked_groups(d["test"])) and not train & set(linked_groups(d["val"]))
    with pytest.raises(ValueError, match="one fold per negative collection"):
        splits(Config(protocol="collection", folds=4, fold=0))
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
                  epochs=1, batch_size=8, limit=24, protocol="grouped", preprocess=["gray", "jpeg"])
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


def test_committed_benchmark_matches_todays_folds(table, d0):
    """The chapter's fold predictions were computed with the folds and groups the code makes today, over D0 alone:
    no D1 image in any fold's test part (nor, by the folds, in its training or validation)."""
    from ladnn.generalisation import bench_predictions, bench_runs, transfer_predictions

    preds, runs = bench_predictions(), bench_runs()
    d0d1 = preds["candidate"].str.contains("D0+D1", regex=False)
    assert (preds.loc[d0d1, "protocol"] == "official").all()  # trained on D1: official split only, never a fold
    assert not preds.loc[~d0d1, "image"].isin(table.loc[table["dataset"] == "D1", "name"]).any()
    group = dict(zip(d0["name"], linked_groups(d0)))
    folds = {"grouped": dict(zip(d0["name"], grouped_folds(d0, 5))),
             "collection": dict(zip(d0["name"], collection_folds(d0)))}
    for prot, fold in folds.items():
        p = preds[preds["protocol"] == prot]
        assert len(p), prot
        assert (p["image"].map(fold) == p["fold"]).all(), prot
        assert (p["image"].map(group) == p["group"]).all(), prot
        for key, q in p.groupby(["candidate", "method", "seed"]):  # every image tested exactly once
            assert q["image"].is_unique and len(q) == len(d0), key
        full = runs[runs["protocol"] == prot].groupby(["candidate", "method"])["fold"].nunique()
        assert (full == len(set(fold.values()))).all(), full
    from ladnn.images import step_version

    stepped = runs[runs["preprocess"].fillna("") != ""]  # runs of a step with rules of its own: today's version
    for pre, versions in zip(stepped["preprocess"], stepped["step_versions"]):
        assert versions == "+".join(s + step_version(s) for s in pre.split("+")), (pre, versions)
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


# ---------------------------------------------------------------- D1 and COVID-CT-MD stay external
@pytest.mark.parametrize("dataset", ["D0+D1"])
@pytest.mark.parametrize("protocol", ["grouped", "collection"])
def test_a_protocol_over_d1_is_refused(protocol, dataset):
    """Protocols (b) and (c) draw on D0 only: D1 is new data (protocol d), so no fold may train, validate or choose
    on it."""
    from ladnn.config import ConfigError

    with pytest.raises(ConfigError, match="D1 stays external"):
        Config(protocol=protocol, dataset=dataset, folds=5 if protocol == "grouped" else 2)


def test_no_protocol_trains_validates_or_tests_on_d1_or_covid_ct_md(data_dir, external_dir):
    """On the real data: every part of the official split and of every fold of (b) and (c) holds D0 images only,
    none of D1 and none of COVID-CT-MD's files."""
    from ladnn.data import splits

    ct_md = set(pd.read_csv(Path(external_dir) / "labels.csv")["file"].map(lambda f: Path(f).name))
    d1 = set(load_table("D0+D1").query("dataset == 'D1'")["name"])
    cfgs = [Config()] + [Config(protocol="grouped", folds=5, fold=k) for k in range(5)]
    cfgs += [Config(protocol="collection", folds=2, fold=k) for k in range(2)]
    for c in cfgs:
        for part, d in splits(c).items():
            assert (d["dataset"] == "D0").all(), (c.protocol, c.fold, part)
            assert not set(d["name"]) & d1 and not set(d["name"]) & ct_md, (c.protocol, c.fold, part)


# ---------------------------------------------------------------- documents by article identity
def test_one_article_is_one_document_whatever_its_panel_suffix(table):
    """A DOI, PII or preprint id is one document: the Lancet article PIIS0140673620301549 has panels named `_1`,
    `_2` and `_0%0`, `_0%1`, all one document and one group."""
    from ladnn.data import source_of

    lancet = table[table["name"].str.startswith("PIIS0140673620301549")]
    assert len(lancet) == 4 and set(lancet["source"]) == {"PIIS0140673620301549"}
    assert linked_groups(table)[lancet.index].nunique() == 1
    assert source_of("PIIS0140673620301549_0%1.png") == source_of("PIIS0140673620301549_2.png")
    # no document key is another's with a panel suffix: every key of D0's positives is an article's own
    keys = set(table.loc[(table["dataset"] == "D0") & (table["covid"] == 1), "source"])
    assert not [k for k in keys for j in keys if k != j and k.startswith(j + "_")]
