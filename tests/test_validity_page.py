"""The Validity chapter's generated words (ladnn.report.validity): every sentence that depends on a number follows
its sign and its count, both ways; the tables and figures are narrow and readable; the notebook's "Try it" command
names real parameters."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Text
from PIL import Image

from ladnn.report import validity

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- small helpers
def test_plural_and_verb_follow_the_count():
    assert validity.plural(1, "pair") == "1 pair"
    assert validity.plural(2, "pair") == "2 pairs"
    assert validity.plural(0, "pair") == "0 pairs"
    assert validity.plural(3, "patient id") == "3 patient ids"
    assert validity.verb(1, "is", "are") == "is" and validity.verb(4, "is", "are") == "are"


@pytest.mark.parametrize("before, after, words, span", [
    (0.870, 0.878, "rises from 0.870 to 0.878", "from 0.870 to 0.878"),
    (0.878, 0.870, "falls from 0.878 to 0.870", "from 0.878 to 0.870"),
    (0.8701, 0.8704, "stays at 0.870", "unchanged at 0.870")])
def test_moves_and_span_follow_the_sign(before, after, words, span):
    assert validity.moves(before, after) == words
    assert validity.span(before, after) == span


def test_points_and_signed():
    assert validity.points(0.005, "LA-DNN's mean") == "0.5 points above LA-DNN's mean"
    assert validity.points(-0.012, "LA-DNN's mean") == "1.2 points below LA-DNN's mean"
    assert validity.points(0.0001, "LA-DNN's mean") == "the same as LA-DNN's mean"
    assert validity.signed(2.5) == "+2.5" and validity.signed(-1.04) == "-1.0" and validity.signed(-0.01) == "0.0"


# ---------------------------------------------------------------- re-scored runs
def _runs(all_test, subset, name="clean subset", n=196, **extra) -> pd.DataFrame:
    """A `rescored`-like table: baseline and LA-DNN, as many seeds as values."""
    k = len(all_test) // 2
    return pd.DataFrame({"backbone": "bb", "dataset": "D0", "method": ["baseline"] * k + ["LA-DNN"] * k,
                         "seed": list(range(k)) * 2, "AUC (all test)": all_test, f"AUC ({name})": subset,
                         f"n ({name})": n, **extra})


def test_clean_sentence_follows_a_rise():
    s = validity.clean_sentence(_runs([0.87, 0.86, 0.87, 0.86], [0.88, 0.87, 0.88, 0.87]), 203)
    assert "the AUC rises for every run" in s and "baseline rises from 0.865 to 0.875" in s
    assert "does not lower the AUC" in s and "falls" not in s
    assert "With only 7 images removed" in s


def test_clean_sentence_follows_a_fall():
    s = validity.clean_sentence(_runs([0.88, 0.87, 0.88, 0.87], [0.86, 0.85, 0.86, 0.85], n=202), 203)
    assert "the AUC falls for every run" in s and "LA-DNN falls from 0.875 to 0.855" in s
    assert "lowers the AUC, so part of the full test split's AUC came from them" in s and "rises" not in s
    assert "With only 1 image removed" in s


def test_clean_sentence_with_mixed_directions_claims_nothing():
    s = validity.clean_sentence(_runs([0.87, 0.87, 0.87, 0.87], [0.88, 0.86, 0.87, 0.88], n=100), 203)
    assert "rises for 2, falls for 1 and stays for 1 of the 4 runs" in s
    assert "no consistent effect" in s and "removed" not in s  # half the test split gone: no "only"


def _short(all_test, png, stored, jpeg) -> pd.DataFrame:
    return _runs(all_test, png, name="PNG-only test", n=148,
                 **{"AUC (plain view, as stored)": stored, "AUC (all re-encoded as JPEG)": jpeg})


def test_shortcut_sentence_follows_both_signs():
    mc = {"test_auc": 0.863}
    up = validity.shortcut_sentence(mc, _short([0.87] * 4, [0.93] * 4, [0.84] * 4, [0.83] * 4))
    assert "the AUC rises for every run (mean from 0.870 to 0.930)" in up
    assert "does not rest on calling JPEG files negative" in up
    assert "the AUC falls for every run when every test image is re-encoded as JPEG (mean from 0.840 to 0.830)" in up
    assert "lowers the AUC" in up
    down = validity.shortcut_sentence(mc, _short([0.93] * 4, [0.87] * 4, [0.83] * 4, [0.84] * 4))
    assert "the AUC falls for every run (mean from 0.930 to 0.870)" in down and "harder for them" in down
    assert "rises for every run when every test image is re-encoded" in down
    assert "does not lower the AUC" in down
    for s in (up, down):
        assert not re.search(r"\b(lose|loss|gain)\b", s)


# ---------------------------------------------------------------- near-duplicates and the split
def _pairs_table(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["a", "split_a", "b", "split_b", "distance"])


def test_duplicates_text_counts_pairs_in_words():
    none = _pairs_table([])
    one = _pairs_table([("x", "train", "y", "test", 2)])
    two = _pairs_table([("x", "train", "y", "test", 2), ("u", "val", "v", "test", 4)])
    assert validity.duplicates_text(none, 1) == "No pair of images in different splits is at most 1 bit apart (the chosen threshold)."
    assert validity.duplicates_text(one, 2).startswith("1 pair of images in different splits is at most 2 bits apart")
    assert "it involves a training image" in validity.duplicates_text(one, 2)
    assert validity.duplicates_text(two, 4).endswith("2 pairs of images in different splits are at most 4 bits apart "
                                                     "(the chosen threshold); 1 of them involves a training image.")
    shown = validity.duplicates_table(two)
    assert list(shown.columns) == ["image", "split", "near-duplicate", "its split", "bits"]


def _table(sources, splits, patients=None) -> pd.DataFrame:
    n = len(sources)
    return pd.DataFrame({"name": [f"i{k}.png" for k in range(n)], "split": splits, "source": sources,
                         "patient": patients or [""] * n, "covid": [k % 2 for k in range(n)]})


def test_split_crossings_in_words():
    one = validity.split_crossings(_table(["A", "A", "B"], ["train", "test", "val"]))
    assert one.startswith("No patient id occurs in more than one split, but 1 source document")
    assert "has images in more than one split, 1 test image among them" in one
    two = validity.split_crossings(_table(["A", "A", "B", "B", "B"], ["train", "test", "val", "test", "test"],
                                          ["P", "P", "", "", ""]))
    assert two.startswith("1 patient id occurs in more than one split, but 2 source documents")
    assert "have images in more than one split, 3 test images among them" in two
    assert "no source document" in validity.split_crossings(_table(["A", "B"], ["train", "test"]))
    assert list(validity.crossing_table(_table(["A", "A", "A"], ["test", "train", "val"])).columns) == list(
        validity.SPLITS)


def test_hash_reading_counts_mixed_pairs():
    df = _table(["A", "A", "B", "C"], ["train", "test", "train", "test"], ["p1", "p2", "p3", "p4"])
    d = np.full((4, 4), 30)
    d[0, 1] = d[1, 0] = 1  # same document, across the split
    d[2, 3] = d[3, 2] = 3  # two documents, across the split
    assert "At or below the chosen threshold of 1 bit, no cross-split pair" in validity.hash_reading(df, d, 1)
    s = validity.hash_reading(df, d, 3)
    assert "threshold of 3 bits, 1 cross-split pair of known origin comes from two different documents" in s
    t = validity.hash_origins(df, d).set_index("distance (bits)")
    assert t.loc[1, "one document"] == 1 and t.loc[3, "two documents"] == 1 and t.loc[3, "pairs"] == 1


def test_threshold_and_nearest_tables_are_indexed_by_meaning(tmp_path):
    d = np.array([[0, 2, 9], [2, 0, 9], [9, 9, 0]])
    t = validity.nearest_table(d)
    assert list(t.index) == ["images"] and t.loc["images", 2] == 2 and t.loc["images", 9] == 1
    assert t.columns.name == "nearest other image (bits)"


# ---------------------------------------------------------------- per-run tables and seeds
def _seed_runs() -> pd.DataFrame:
    return pd.DataFrame({"backbone": "bb", "dataset": "D0", "method": ["baseline"] * 3 + ["ladnn"] * 3,
                         "seed": [0, 1, 2] * 2, "auc": [0.86, 0.87, 0.865, 0.87, 0.872, 0.868],
                         "finetune": "top"})


def test_per_run_drops_constant_columns_and_adds_means():
    t = validity.per_run(_runs([0.8, 0.9, 0.7, 0.9], [0.85, 0.95, 0.75, 0.95]).assign(method=lambda x: x["method"]),
                         {"AUC (all test)": "all test", "AUC (clean subset)": "clean"})
    assert t.index.names == ["method", "seed"] and list(t.columns) == ["all test", "clean"]
    assert t.loc[("baseline", "mean"), "all test"] == pytest.approx(0.85)
    assert t.loc[("LA-DNN", "mean"), "clean"] == pytest.approx(0.85)
    raw = _seed_runs().rename(columns={"auc": "AUC (all test)"})
    assert "LA-DNN" in validity.per_run(raw, {"AUC (all test)": "AUC"}).index.get_level_values("method")
    assert validity.run_caption(raw, "Test AUC") == "Test AUC: bb on D0"


def test_seed_view_uses_the_book_names():
    v = validity.seed_view(_seed_runs())
    assert list(v.index) == ["baseline", "LA-DNN"] and "ladnn" not in v.index
    assert v.loc["LA-DNN", "seeds"] == 3 and "mean AUC %" in v.columns


def test_seed_figure_gives_each_seed_its_own_colour():
    fig = validity.seed_figure(_seed_runs())
    assert fig.get_size_inches()[0] <= 8
    small = [t.get_text() for t in fig.findobj(Text) if t.get_text() and t.get_fontsize() < 10]
    assert not small, small
    ax = fig.axes[0]
    colours = {tuple(np.round(c.get_facecolor()[0], 3)) for c in ax.collections if len(c.get_offsets())}
    assert len(colours) == 3  # seeds 0, 1, 2
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[-3:] == ["seed 0", "seed 1", "seed 2"]


def test_seed_sentence_writes_signed_differences_without_gains():
    s = validity.seed_sentence(_seed_runs())
    assert "3 seeds" in s and "LA-DNN's AUC minus the baseline's" in s and "gains" not in s


def test_ablation_readings_list_each_variant():
    t = pd.DataFrame({"seeds": [3, 1], "auc": ["87.0 [86.5, 87.6]", "87.5"], "sensitivity": ["85", "86"],
                      "f1": ["81", "80"], "accuracy": ["81", "80"], "profile value": ["", "covid_weight=5.0"],
                      "reading": ["the reference", "one seed: AUC 87.5, 0.5 points above LA-DNN's mean"]},
                     index=pd.Index(["LA-DNN (profile)", "covid_weight=1.0"], name="variant"))
    r = validity.ablation_readings(t)
    assert r == ("- **covid_weight=1.0** (the profile has covid_weight=5.0): one seed: AUC 87.5, 0.5 points above "
                 "LA-DNN's mean.")
    assert list(validity.ablation_view(t).columns) == ["seeds", "AUC %", "sensitivity %", "F1 %", "accuracy %"]


# ---------------------------------------------------------------- new sources
def _d1(d0, d1, k=1, least=0.143, p=0.286) -> pd.DataFrame:
    return pd.DataFrame({"backbone": "bb", "method": ["baseline", "LA-DNN"], "seed": [0, 0], "AUC (D0 test)": d0,
                         "AUC (D1, new sources)": d1,
                         "95% interval (D1)": f"none: {validity.plural(k, 'COVID-19 cluster')}; exact p = {p:.3f}",
                         "accuracy (D1)": 0.4, "n": 76, "collections": 3, "patients": 7, "COVID-19 clusters": k,
                         "exact p": p, "least p": least})


def test_new_source_sentence_follows_the_sign_and_the_count():
    down = validity.new_source_sentence(_d1([0.87, 0.87], [0.47, 0.48]))
    assert down.startswith("76 images of D1 are present here, from 3 collections in 7 resampling clusters")
    assert "the mean AUC over all runs falls from 0.870 to 0.475" in down
    assert "come from 1 cluster," in down and "no AUC on D1 can be told from chance" in down
    up = validity.new_source_sentence(_d1([0.70, 0.70], [0.90, 0.92], k=4, least=0.01, p=0.02))
    assert "rises from 0.700 to 0.910" in up and "come from 4 clusters," in up and "below the 5% level" in up
    assert "changes by" not in up + down
    view = validity.new_source_view(_d1([0.87, 0.87], [0.47, 0.48]))
    assert "95% interval, D1" not in view.columns and len(view.columns) == 3  # constant columns left out


# ---------------------------------------------------------------- figures and metadata
def test_near_duplicate_figure_is_readable_at_the_column_width(tmp_path):
    rng = np.random.default_rng(0)
    a = (rng.random((64, 64)) * 255).astype(np.uint8)
    paths = []
    for k, arr in enumerate([a, a, a[::-1].copy()]):
        paths.append(str(tmp_path / f"{k}.png"))
        Image.fromarray(arr).save(paths[-1])
    df = pd.DataFrame({"image": paths, "split": ["train", "test", "val"], "covid": [1, 1, 0]})
    d = np.array([[0, 0, 40], [0, 0, 40], [40, 40, 0]])
    fig = validity.near_duplicate_figure(df, d, distances=[0, 1, 2])
    assert fig.get_size_inches()[0] <= 8
    small = [t.get_text() for t in fig.findobj(Text) if t.get_text() and t.get_fontsize() < 10]
    assert not small, small
    assert fig._suptitle.get_text() == "no cross-split pair at distances 1, 2 (bits)"


def test_metadata_summary_rounds_shares():
    df = pd.DataFrame({"covid": [1, 1, 1, 0]})
    meta = pd.DataFrame({"format": ["PNG", "PNG", "JPEG", "JPEG"], "mode": ["RGB"] * 4, "width": [10, 20, 30, 40],
                         "height": [5, 5, 5, 5], "file_kb": [1.04, 2.0, 3.0, 4.0]})
    t = validity.metadata_summary(df, meta)
    assert t.loc["format PNG", "COVID"] == "2 (67%)" and t.loc["format JPEG", "non-COVID"] == "1 (100%)"
    assert t.loc["median width", "COVID"] == "20 px"
    mc = {"features": ["format_JPEG", "format_PNG", "mode_RGB", "width", "file_kb"], "n_train": 5, "n_test": 4,
          "test_auc": 0.5}
    assert "(file format, colour mode, width, file size)" in validity.metadata_sentence(mc)


# ---------------------------------------------------------------- the notebook
def _notebook() -> dict:
    return json.loads((ROOT / "notebooks" / "validity.ipynb").read_text())


def test_try_it_command_names_real_parameters():
    nb = _notebook()
    params = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    names = {t.id for n in ast.parse("".join(params["source"])).body if isinstance(n, ast.Assign) for t in n.targets}
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    box = text[text.index("````{admonition} Try it"):]
    assert box.rstrip().endswith("````") and "```bash" in box
    used = set(re.findall(r"-p (\w+) ", box))
    assert used and used <= names, used - names
    assert "papermill -k python3 notebooks/validity.ipynb" in box and "minute" in box
    assert "TIME" not in box
    assert not re.search(r"quick profile[^.]*three seeds", text)  # quick ablations have one seed each


def test_notebook_cells_keep_their_tags():
    for c in _notebook()["cells"]:
        if c["cell_type"] != "code":
            continue
        tags = c["metadata"].get("tags", [])
        assert "remove-cell" in tags or "hide-input" in tags, c["id"]
