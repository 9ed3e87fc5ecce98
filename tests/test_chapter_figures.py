"""The figures and generated sentences of the chapters "New sources" (ladnn.report.unseen, marks) and "Validity"
(ladnn.report.validity): each figure holds what its data says, readable on the page, and each sentence carries the
numbers computed here independently."""
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from ladnn.metrics import auc
from ladnn.report import marks, unseen, validity
from ladnn.scores import PRED, auc_interval, collection_table


def readable(fig: Figure, width: float = 10) -> None:
    """The figure fits the book's column and every piece of its text is at least 7 pt."""
    assert fig.get_size_inches()[0] <= width
    small = [t.get_text() for t in fig.findobj(Text) if t.get_text() and t.get_fontsize() < 7]
    assert not small, f"text under 7 pt: {small}"


# ---------------------------------------------------------------- New sources: the transfer table
def _external(rng, patients=(("P1", 1, 5), ("P2", 1, 4), ("P3", 0, 6))) -> pd.DataFrame:
    """COVID-CT-MD-like rows of the official seed-0 runs: (patient, label, slices), both methods, with and without
    AdaBN; the AdaBN rows score every slice 0.5."""
    rows = []
    for adabn in (False, True):
        for m in ("baseline", "ladnn"):
            for pid, y, n in patients:
                rows.append(pd.DataFrame({
                    "candidate": "none", "adabn": adabn, "method": m, "protocol": "official", "fold": -1, "seed": 0,
                    "part": "COVID-CT-MD", PRED.image: [f"{pid}/s{k}.dcm" for k in range(n)], PRED.y_true: y,
                    PRED.p_covid: 0.5 if adabn else rng.random(n), PRED.group: pid, PRED.collection: "COVID-CT-MD",
                    PRED.patient: pid, PRED.slice_scored: np.arange(n) % 2 == 0,
                    PRED.lung_fraction: 0.2}))
    return unseen.with_adabn(pd.concat(rows, ignore_index=True))


def test_series_figure_draws_every_patients_series():
    t = _external(np.random.default_rng(0))
    fig = unseen.series_figure(t)
    readable(fig)
    ax = fig.axes
    assert len(ax) == 2 and ax[0].get_ylabel() == "COVID probability"
    assert [a.get_title() for a in ax] == ["baseline: COVID probability along each series",
                                           "LA-DNN: COVID probability along each series"]
    for a, m in zip(ax, ("baseline", "ladnn")):
        assert len(a.lines) == 3  # one per patient
        for line, (pid, y) in zip(a.lines, (("P1", 1), ("P2", 1), ("P3", 0))):
            want = t[(t["method"] == m) & ~t["adabn"] & (t[PRED.patient] == pid)][PRED.p_covid].to_numpy()
            assert np.array_equal(line.get_ydata(), want)  # the plain scores, not AdaBN's 0.5
            assert np.array_equal(line.get_xdata(), np.arange(len(want)))
            assert line.get_linestyle() == ("-" if y else "--")
            assert line.get_label() == f"{pid} ({'COVID-19' if y else 'not COVID'})"
    assert [t.get_text() for t in ax[1].get_legend().get_texts()][2] == "P3 (not COVID)"


def test_series_figure_and_sentence_on_the_packaged_covid_ct_md():
    from ladnn.generalisation import transfer_predictions

    t = unseen.transfer_table()
    raw = transfer_predictions()
    ct = raw[(raw["part"] == "COVID-CT-MD") & (raw["candidate"] == "none") & ~raw["adabn"] & (raw["seed"] == 0)
             & (raw["method"] == "ladnn")]
    slices, patients, scored = ct[PRED.image].nunique(), ct[PRED.patient].nunique(), int(ct[PRED.slice_scored].sum())
    assert (slices, patients) == (452, 6)  # the sample the chapter describes
    text = unseen.slices_sentence(t)
    assert text.startswith(f"COVID-CT-MD: {slices} slices of {patients} patients; scored per slice: {scored} (")
    assert "lung fraction >= 0.05" in text
    fig = unseen.series_figure(t)
    assert [len(a.lines) for a in fig.axes] == [patients, patients]
    assert sum(len(line.get_ydata()) for line in fig.axes[1].lines) == slices


def _protocols() -> pd.DataFrame:
    """A protocol table of three rows with known AUCs and intervals."""
    rows = [("(a) official split", "LA-DNN", "none", 0.9, 0.85, 0.95),
            ("(b) grouped", "baseline", "none", 0.7, 0.6, 0.8),
            ("(d) D1, trained on D0", "LA-DNN", "frozen", 0.55, 0.4, 0.7)]
    return pd.DataFrame([{"protocol": p, "method": m, "pipeline": pipe, "AUC": a, "lo": lo, "hi": hi, "n": 10,
                          "clusters": 5, "resampled": "groups"} for p, m, pipe, a, lo, hi in rows]
                        ).set_index(["protocol", "method", "pipeline"])


def test_protocol_figure_one_errorbar_per_row_in_table_order():
    tab = _protocols()
    fig = unseen.protocol_figure(tab)
    readable(fig)
    (ax,) = fig.axes
    points = ax.lines[0]  # the markers of the error bars
    assert np.allclose(points.get_xdata(), tab["AUC"]) and list(points.get_ydata()) == [0, 1, 2]
    bars = ax.collections[0].get_segments()  # one horizontal segment per row: lo to hi
    assert [(s[0][0], s[1][0]) for s in bars] == pytest.approx(list(zip(tab["lo"], tab["hi"])))
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "(a) official split | LA-DNN | none", "(b) grouped | baseline | none", "(d) D1, trained on D0 | LA-DNN | frozen"]
    assert ax.yaxis_inverted()  # the first row on top
    assert list(ax.lines[-1].get_xdata()) == [0.5, 0.5]  # chance
    assert ax.get_xlabel() == "AUC"
    # a row on too few clusters has no interval: a cross of its own, no bar
    few = tab.copy()
    few.loc[few.index[2], ["lo", "hi"]] = np.nan
    (ax,) = unseen.protocol_figure(few).axes
    crosses = [ln for ln in ax.lines if ln.get_marker() == "x"]
    assert len(ax.collections[0].get_segments()) == 2 and [list(c.get_ydata()) for c in crosses] == [[2]]
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"too few clusters for an interval",
                                                                   "95% interval at the protocol's level"}


def test_rows_against_today_and_unmark_sentence():
    idx = pd.MultiIndex.from_tuples([("(a) official split", "unmark - none, LA-DNN"),
                                     ("(a) official split", "unmark - none, baseline"),
                                     ("(d) D1, trained on D0", "unmark - none, LA-DNN"),
                                     ("(a) official split", "LA-DNN - baseline, none")],
                                    names=["protocol", "difference"])
    cmp = pd.DataFrame({"seeds": [3, 3, 3, 3], "AUC difference": [-0.04, -0.001, 0.02, 0.0],
                        "p": [0.001, 0.8, np.nan, 0.9], "detectable": [0.01, 0.012, np.nan, 0.01],
                        "claim": ["none scores higher", "no difference shown (detectable: 0.012)",
                                  "too few clusters to test", "no difference shown"]}, index=idx)
    rows = unseen.against_today(cmp, "unmark")
    assert len(rows) == 3 and rows.index.get_level_values("difference").str.startswith("unmark - none").all()
    text = unseen.unmark_sentence(rows, recall=0.75)
    assert "(3 seeds, both methods)" in text and "2 of the 3 comparisons can be tested" in text
    assert "the AUC fell on (a) official split (LA-DNN, -0.040) and rose on none." in text
    assert "So neither is shown" not in text and "finds 75% of the hand-labelled marks" in text
    assert "On the external sets ((d) D1, trained on D0), too few" in text and "from +0.020 to +0.020" in text
    calm = rows.assign(claim="no difference shown")
    text = unseen.unmark_sentence(calm, 0.75)
    assert "would have detected a change of about 0.012 or more; the largest change there was -0.040" in text
    assert "So neither is shown" in text and "the AUC fell on no tested part and rose on none." in text


def test_candidates_and_subset_sentences():
    sel = pd.DataFrame({"mean val AUC": [0.8, 0.7, 0.6]}, index=["none+AdaBN", "none", "frozen"])
    text = unseen.candidates_sentence(sel)
    assert text.startswith("Candidates measured on every fold: none+AdaBN, none, frozen. ")
    assert "Not measured: crop, gray, clahe, jpeg, strong, all, window, lungcrop, unmark. Training on D0+D1" in text
    every = pd.DataFrame({"mean val AUC": 0.5}, index=list(unseen.PIPELINES))
    assert "Every candidate pipeline of the chapter was measured." in unseen.candidates_sentence(every)
    sub = pd.DataFrame({"AUC": [0.9, 0.95, 0.85, 0.8, 0.97]},
                       index=["all", "only MedPix", "all but MedPix", "only crawled paper figures",
                              "all but crawled paper figures"])
    text = unseen.subset_sentence(sub)
    assert text.startswith("Under (b), LA-DNN scores 0.900 pooled, 0.950 against the MedPix negatives alone and 0.800 "
                           "against the crawled figures alone")
    assert "moves the figure by +0.150." in text


def test_grouping_sentences_and_fold_crossings_on_the_data(data_dir):
    from ladnn.data import load_table
    from ladnn.sources import linked_groups, negative_collections

    table = load_table("D0+D1")
    med = table[(table["dataset"] == "D0") & (table["collection"] == "MedPix")]
    text = unseen.grouping_sentences(table)
    assert f"- MedPix gives {len(med)} of D0's negatives, from {med['patient'].nunique()} patients" in text
    d0 = table[table["dataset"] == "D0"]
    assert f"D0's images form {linked_groups(d0).nunique()} groups" in text
    assert f"of the {int((med['split'] == 'test').sum())} MedPix test images" in text
    c = unseen.fold_crossings(table)
    assert list(c.columns) == ["patient", "document", "group"]
    assert list(c.index) == [("grouped", k) for k in range(5)] + [
        ("collection", k) for k in range(len(negative_collections(d0)))]  # D0's two: D1 stays external
    assert len(negative_collections(d0)) == 2
    assert (c == 0).all().all()  # both protocols hold patients, documents and their groups out


def _collections(rng, n=120) -> pd.DataFrame:
    """Protocol (c) test parts of both methods: three folds, each holding out one negative collection."""
    y = np.tile([0, 1], n // 2)
    group = np.array([f"g{k // 4}" for k in range(n)])
    fold = np.array([int(g[1:]) % 3 for g in group])
    rows = [pd.DataFrame({"candidate": "none", "adabn": False, "method": m, "protocol": "collection", "seed": 0,
                          "part": "test", PRED.fold: fold, PRED.image: [f"i{k}" for k in range(n)], PRED.y_true: y,
                          PRED.p_covid: rng.random(n) + 0.3 * y * (fold + 1), PRED.group: group,
                          PRED.collection: np.where(y == 0, np.array(["A", "B", "C"])[fold], "papers"),
                          PRED.patient: group}) for m in ("baseline", "ladnn")]
    return unseen.with_adabn(pd.concat(rows, ignore_index=True))


def test_collection_tables_per_method():
    t = _collections(np.random.default_rng(1))
    tabs = unseen.collection_tables(t, n_boot=100)
    assert list(tabs) == ["baseline", "LA-DNN"]
    want = collection_table(unseen.parts(t, "none", "ladnn")["collection"], 100)
    pd.testing.assert_frame_equal(tabs["LA-DNN"], want)
    assert list(want.columns) == ["held-out collection", "fold", "negatives", "positives", "AUC", "lo", "hi", "n",
                                  "clusters"]
    assert list(want["held-out collection"]) == ["A", "B", "C"]  # worst first: fold 0 separates least
    assert len(tabs["baseline"]) == 3 and not tabs["baseline"].equals(want)


def test_real_ct_maps_without_the_set(monkeypatch):
    monkeypatch.delenv("LADNN_EXTERNAL_DIR", raising=False)
    text, fig = unseen.real_ct_maps(pd.DataFrame(), pd.Series(dtype=object), "")
    assert fig is None and text.startswith("COVID-CT-MD not found")


def test_real_ct_maps_and_service_warning(tiny_run, external_dir):
    from ladnn.evaluate import labels_table
    from ladnn.generalisation import new_data_report, recipe_figures
    from ladnn.rundir import FinishedRun

    t = unseen.transfer_table()
    first = pd.Series({"baseline": str(tiny_run), "ladnn": str(tiny_run)}, name=("efficientnet_lite0", "D0"))
    text, fig = unseen.real_ct_maps(t, first, str(external_dir), 4)
    readable(fig)
    assert text.startswith("**efficientnet_lite0 on D0**, slices: ")
    names = text.split("slices: ")[1].split(", ")
    lab = labels_table(external_dir / "labels.csv").set_index("name")
    assert len(names) == 4 and list(lab.loc[names, "covid"]) == [1, 1, 0, 0]  # COVID-19 first
    ct = unseen.covid_ct_md(t)
    scored = set(ct.loc[ct[PRED.slice_scored].astype(bool), PRED.image])
    assert set(names) <= scored
    assert len(fig.axes) == 4 * 3 and fig.axes[0].get_title().startswith("1. ")  # image, baseline, LA-DNN
    r = FinishedRun(tiny_run)
    warning = new_data_report(r.metrics, recipe_figures(r.config, 200), r.evaluations(),
                              r.unseen_predictions)["warning"]
    assert "too few to tell any AUC from chance" in warning  # D1's positives: one article
    box = unseen.service_warning(tiny_run, 200)  # a Markdown warning box: the warning's opening, then its figures
    assert box.startswith("```{warning}\n") and box.endswith("\n```") and f"`{tiny_run.name}`" in box
    words = lambda s: re.sub(r"[;.,:*`-]", " ", s.lower()).split()
    assert set(words(warning)) <= set(words(box))


# ---------------------------------------------------------------- New sources: annotation marks
def _effect(rng, n=6) -> pd.DataFrame:
    p = rng.random(n)
    e = pd.DataFrame({PRED.image: [f"img{k}.png" for k in range(n)], PRED.p_covid: p,
                      marks.PAINTED: p - 0.2 * rng.random(n), marks.CONTROL: p + 0.01,
                      "cam_share_on_marks": rng.random(n) * 0.3, "mark_area": rng.random(n) * 0.05})
    e["change"] = e[marks.PAINTED] - e[PRED.p_covid]
    e["control change"] = e[marks.CONTROL] - e[PRED.p_covid]
    return e.assign(split=["train", "test", "train", "val", "test", "train"][:n])


def test_effect_figure_plots_each_image_twice():
    e = _effect(np.random.default_rng(0))
    fig = marks.effect_figure(e)
    readable(fig)
    (ax,) = fig.axes
    painted, control = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert np.allclose(painted.get_offsets(), e[[PRED.p_covid, marks.PAINTED]].to_numpy())
    assert np.allclose(control.get_offsets(), e[[PRED.p_covid, marks.CONTROL]].to_numpy())
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["marks painted out", "control patch painted out"]
    assert ax.get_xlabel() == "COVID probability, as published" and ax.get_ylabel() == "after painting out"
    assert list(ax.lines[0].get_xdata()) == [0, 1] == list(ax.lines[0].get_ydata())  # no change


def test_effect_and_label_sentences():
    rng = np.random.default_rng(1)
    effects = {"baseline": _effect(rng), "ladnn": _effect(rng)}
    names = effects["ladnn"][PRED.image]
    table = pd.DataFrame({"name": names, "dataset": "D0", "patient": "",
                          "source": ["docA", "docA", "docB", "docB", "docC", "docD"]})  # four papers
    texts = marks.effect_sentences(effects, table, n_boot=200)
    assert len(texts) == 2 and texts[0].startswith("**baseline** (6 marked images of 4 papers)")
    papers = pd.Series(["docA", "docA", "docB", "docB", "docC", "docD"])
    s = marks.effect_summary(effects["ladnn"], papers, n_boot=200)
    assert texts[1].startswith("**LA-DNN** (6 marked images of 4 papers)")
    assert (f"changes the COVID probability by {s['change'][0]:+.3f} (95% interval {s['change'][1]:+.3f} to "
            f"{s['change'][2]:+.3f})") in texts[1]
    assert f"puts {effects['ladnn']['cam_share_on_marks'].mean():.1%} of its mass" in texts[1]
    mk = pd.DataFrame({"dataset": ["D0"] * 5 + ["D1"], "covid": [1, 1, 1, 0, 0, 0],
                       "colour": [True, False, False, False, False, True], "grey": [False, True, False, True, False,
                                                                                     False],
                       "collection": ["p", "p", "p", "MedPix", "MedPix", "D1:Non-smallcelllungcancer_RIDER-Lung-CT"]})
    mk["marked"] = mk["colour"] | mk["grey"]
    text = marks.label_sentence(mk, effects["ladnn"])
    assert text.startswith("Images the detector finds marks on: D0 COVID: 2 of 3 (1 with colour); D0 non-COVID: 1 of 2 "
                           "(0 with colour); D1 non-COVID: 1 of 1 (1 with colour).")
    assert "A mark is not a label here" in text and "3 of the 6 D0 images painted out above" in text


# ---------------------------------------------------------------- Validity
def _write(path, arr) -> str:
    Image.fromarray(arr).save(path, "PNG")
    return str(path)


@pytest.fixture
def images(tmp_path):
    """Four images: a training image and its near copy in test, another test image of the same document, and an
    unrelated validation image."""
    rng = np.random.default_rng(0)
    base, other = ((rng.random((64, 64)) * 255).astype(np.uint8) for _ in range(2))
    near = np.clip(base.astype(int) + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
    rows = [("a.png", base, "train", "docA", "P1", 1), ("a_copy.png", near, "test", "docB", "", 1),
            ("b.png", other, "test", "docA", "P1", 0), ("c.png", other[::-1].copy(), "val", "docC", "", 0)]
    return pd.DataFrame([{"name": n, "image": _write(tmp_path / n, a), "split": s, "source": src, "patient": pat,
                          "covid": y} for n, a, s, src, pat, y in rows])


def test_near_duplicate_figure_shows_the_cross_split_pairs(images):
    from ladnn.report import leakage

    d = leakage.hash_distances(leakage.phashes(images))
    k = int(d[0, 1])  # the copy's distance: the only cross-split pair at or below it
    assert k < d[0, 2]
    fig = validity.near_duplicate_figure(images, d, distances=[k])
    readable(fig)
    shown = [a for a in fig.axes if a.images]
    assert len(shown) == 2 and len(fig.axes) == 4  # one pair: two panels of a row of four
    assert shown[0].get_title(loc="left") == f"d = {k} bits, 1 pair\ntrain, COVID"
    assert shown[1].get_title(loc="left") == "test, COVID"
    assert np.array_equal(shown[0].images[0].get_array(), np.asarray(Image.open(images["image"][0]).convert("RGB")))
    none = validity.near_duplicate_figure(images, d, distances=[k, 63])
    assert none._suptitle.get_text() == "no cross-split pair at distance 63 (bits)"


def test_validity_sentences(images):
    from ladnn.report import leakage

    hashes = leakage.phashes(images)
    crossings = validity.split_crossings(images)
    assert crossings.startswith("1 patient id occurs in more than one split, but 1 source document")
    assert "1 test image among them" in crossings
    d = leakage.hash_distances(hashes)
    counts = validity.nearest_counts(d)
    assert validity.nearest_table(d).loc["images"].to_dict() == counts
    assert sum(counts.values()) == 4 and min(counts) == d[0, 1]
    dups = leakage.near_duplicates(images, hashes, int(d[0, 1]))
    assert validity.duplicates_text(dups, 6) == ("1 pair of images in different splits is at most 6 bits apart (the "
                                                 "chosen threshold); it involves a training image.")
    assert list(validity.clean_subset(images, dups)) == []  # a copy, and a test image of a training document
    assert validity.clean_text(images, dups) == "The clean test subset keeps 0 of the 2 test images (2 images removed)."
    mc = {"features": ["width", "height"], "n_train": 60, "n_test": 40, "test_auc": 0.98765}
    assert validity.metadata_sentence(mc) == ("A classifier that sees only file metadata (width, height), trained on "
                                              "the 60 training images, reaches a test AUC of 0.988 on 40 test images.")


def test_metadata_tables_and_png_subset(images):
    meta = pd.DataFrame({"format": ["PNG", "JPEG", "PNG", "JPEG"], "mode": ["RGB", "L", "RGB", "RGB"],
                         "width": [100, 200, 300, 400], "height": [50, 60, 70, 80], "file_kb": [1.0, 2.0, 3.0, 4.0]})
    fmt, mode, size = validity.metadata_tables(images, meta)
    assert fmt.loc["PNG", "COVID"] == 1 and fmt.loc["PNG", "non-COVID"] == 1 and fmt.loc["JPEG", "COVID"] == 1
    assert mode.loc["L", "COVID"] == 1 and mode.loc["RGB", "non-COVID"] == 2
    assert size.loc["COVID", "width"] == 150 and size.loc["non-COVID", "file_kb"] == 3.5
    assert list(validity.png_test(images, meta)) == ["b.png"]  # the test images stored as PNG


def test_subset_auc_is_the_auc_of_the_named_images():
    from ladnn.report import leakage

    pred = pd.DataFrame({PRED.image: list("abcdef"), PRED.y_true: [1, 1, 0, 0, 1, 0],
                         PRED.p_covid: [0.9, 0.2, 0.3, 0.1, 0.8, 0.7], PRED.group: list("abcdef")})
    s = leakage.subset_auc(pred, ["a", "b", "c", "d"])
    assert s == {"n": 4, "n_pos": 2, "auc": 0.75}
    assert leakage.subset_auc(pred, ["a", "b"])["auc"] is None  # one class
    assert auc_interval(pred.head(4), n_boot=50).auc == auc([1, 1, 0, 0], [0.9, 0.2, 0.3, 0.1]) == 0.75
