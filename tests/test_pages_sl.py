"""The generated sentences and page tables of the chapters "New sources" (ladnn.report.unseen) and "Multi-task lab"
(ladnn.report.lab): each sentence carries the numbers its table shows, rounded the same way; each claim is said once;
the tables hide pandas' row numbers; and the notebooks' Try-it commands give the configs they describe."""
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from ladnn.report import lab, unseen
from ladnn.scores import PRED

ROOT = Path(__file__).resolve().parents[1]



# ---------------------------------------------------------------- New sources, section 2: sentence and table agree
def _subsets(medpix: float, crawled: float) -> pd.DataFrame:
    names = ["all", "only MedPix", "all but MedPix", "only crawled paper figures", "all but crawled paper figures"]
    auc = [0.86431, medpix, crawled, crawled, medpix]
    return pd.DataFrame({"AUC": auc, "lo": [a - 0.05 for a in auc], "hi": [a + 0.04 for a in auc],
                         "n": [746, 544, 551, 551, 544], "clusters": [229, 143, 144, 144, 143]}, index=names)


@pytest.mark.parametrize("medpix, crawled", [(0.90240, 0.82760), (0.90249, 0.82751), (0.7, 0.8)])
def test_subset_sentence_rounds_like_its_table(medpix, crawled):
    sub = _subsets(medpix, crawled)
    page = unseen.subsets_for_page(sub).set_index("negatives")
    shown = {k.split(" (=")[0]: float(v) for k, v in page["AUC"].items()}
    text = unseen.subset_sentence(sub)
    moved = float(re.search(r"moves the figure by ([+-][0-9]+\.[0-9]+)", text).group(1))
    assert moved == pytest.approx(shown["only MedPix"] - shown["only crawled paper figures"], abs=1e-9)
    for name, words in (("all", "pooled"), ("only MedPix", "against the MedPix"),
                        ("only crawled paper figures", "against the crawled")):
        assert f"{shown[name]:.3f} {words}" in text


def test_subsets_table_merges_the_rows_that_repeat_and_names_the_single_collection_first():
    page = unseen.subsets_for_page(_subsets(0.9, 0.8))
    assert list(page["negatives"]) == ["all", "only MedPix (= all but crawled paper figures)",
                                       "only crawled paper figures (= all but MedPix)"]
    assert list(page.columns) == ["negatives", "AUC", "95% interval", "images", "clusters"]
    assert page.loc[1, "95% interval"] == "0.850 to 0.940"


def test_page_tables_hide_the_row_numbers():
    html = unseen.styled(pd.DataFrame({"a": [1, 2, 3]})).to_html()
    assert 'class="dataframe"' in html and "row_heading" not in html
    assert "row_heading" not in lab.styled(pd.DataFrame({"a": [1.0]})).to_html()
    ct = pd.DataFrame({"held-out collection": ["A", "B"], "fold": [1, 0], "negatives": [5, 6], "positives": [7, 8],
                       "AUC": [0.61234, 0.7], "lo": [0.5, 0.6], "hi": [0.7, 0.8], "n": [12, 14], "clusters": [4, 5]})
    page = unseen.collection_for_page(ct)
    assert list(page.columns) == ["held-out collection", "fold", "negatives", "positives", "AUC", "95% interval",
                                  "images", "clusters"]
    assert page["AUC"].tolist() == ["0.612", "0.700"] and page["95% interval"].tolist()[0] == "0.500 to 0.700"


# ---------------------------------------------------------------- claims: said once, with the detectable size
def _comparisons() -> pd.DataFrame:
    idx = pd.MultiIndex.from_tuples([("(a) official split", "LA-DNN - baseline, none"),
                                     ("(b) grouped", "LA-DNN - baseline, none"),
                                     ("(c) held out: A", "LA-DNN - baseline, none"),
                                     ("(d) D1, trained on D0", "LA-DNN - baseline, none")],
                                    names=["protocol", "difference"])
    cmp = pd.DataFrame({"seeds": [3, 3, 1, 3], "AUC difference": [0.0012, -0.0004, 0.03, 0.011],
                        "lo": [-0.004, -0.006, 0.01, np.nan], "hi": [0.008, 0.005, 0.05, np.nan],
                        "p": [0.8, 0.9, 0.01, np.nan], "p Holm": [1.0, 1.0, 0.03, np.nan],
                        "detectable": [0.0091, 0.0074, 0.02, np.nan]}, index=idx)
    cmp["claim"] = [unseen.claim(r, d) for (_, d), r in cmp.iterrows()]
    cmp.attrs["family"] = 3
    return cmp


def test_claims_leave_the_detectable_size_to_its_column_and_the_note():
    cmp = _comparisons()
    assert cmp["claim"].tolist() == ["no difference shown", "no difference shown", "no difference shown (1 seed)",
                                     "too few clusters to test"]
    note = unseen.claims_note(cmp)
    assert "(0.007 to 0.020 in this table)" in note and "80% power" in note and note.count("no difference shown") == 1
    assert unseen.claims_note(cmp, first=False).endswith("detectable here: 0.007 to 0.020.")
    page = unseen.for_page(cmp)
    assert list(page.columns) == ["seeds", "AUC difference [95% interval]", "p", "p Holm", "detectable", "claim"]
    assert page["AUC difference [95% interval]"].tolist() == ["+0.001 [-0.004, +0.008]", "0.000 [-0.006, +0.005]",
                                                              "+0.030 [+0.010, +0.050]", "+0.011"]
    assert page["detectable"].tolist() == ["0.009", "0.007", "0.020", ""]
    blank = unseen.for_page(cmp.iloc[[3]])  # no interval, p or detectable size: those columns go
    assert list(blank.columns) == ["seeds", "AUC difference [95% interval]", "claim"]
    assert unseen.claims_note(cmp.iloc[[3]], first=False) == "Claims read as in section 4."


def test_lesion_summary_says_no_difference_once_with_the_detectable_range():
    cmp = _comparisons()
    text = unseen.lesion_summary(cmp)
    assert text.count("No difference is shown") == 1 and "detect" in text
    assert "on 3: these runs would detect a difference of 0.007 to 0.020 or more" in text
    assert "1 rest on too few clusters" in text and "Each is paired over 1 to 3 seeds." in text


def _protocol_rows(pipeline: str = "none") -> pd.DataFrame:
    rows = []
    for method in ("LA-DNN", "baseline"):
        for prot, auc, lo, hi, p, need in (("(a) official split", 0.87, 0.77, 0.95, np.nan, np.nan),
                                           ("(c) held out: MedPix", 0.73, 0.64, 0.81, np.nan, np.nan),
                                           ("(c) held out: crawled paper figures", 0.61, 0.50, 0.71, np.nan, np.nan),
                                           ("(d) D1, trained on D0", 0.533, np.nan, np.nan, 0.286, np.nan),
                                           ("(d) COVID-CT-MD per slice", 0.426, np.nan, np.nan, 0.667, np.nan),
                                           ("(d) COVID-CT-MD per patient", 0.5, np.nan, np.nan, 0.6, np.nan)):
            rows.append({"protocol": prot, "method": method, "pipeline": pipeline, "AUC": auc, "lo": lo, "hi": hi,
                         "n": 300, "clusters": 6, "exact p": p, "AUC needed": need})
    return pd.DataFrame(rows).set_index(["protocol", "method", "pipeline"])


def test_headline_says_what_too_few_clusters_mean_once():
    text = unseen.headline(_protocol_rows())
    assert text.count("stands in its place") == 1 and text.count("could reach p < 0.05") == 1
    assert "0.533 (exact p = 0.286) on D1" in text and "0.426 (exact p = 0.667) per slice" in text
    need = _protocol_rows()
    need["AUC needed"] = np.where(need["exact p"].notna(), 0.95, np.nan)
    assert "an AUC of 0.950 or more would be needed for p < 0.05" in unseen.headline(need)


def test_verdict_cites_and_states_the_claims_once():
    tab = _protocol_rows("crop")
    sel = pd.DataFrame({"mean val AUC": [0.95, 0.93]}, index=["crop", "none"])
    text = unseen.verdict(tab, _comparisons(), sel, "crop")
    assert "{cite}`nguyen2021generalisation`" in text and "Nguyen et al." not in text
    assert text.count("no difference shown") == 0 and text.count("No difference is shown") == 1
    assert text.count("stands in its place") == 1  # the goals' rows without an interval, explained once
    assert "- **D1, crop.** LA-DNN 0.533 (exact p = 0.286) against the goal of 0.75: not reached." in text


# ---------------------------------------------------------------- section 8: the warning and the runs table
def test_service_warning_body_is_a_paragraph_and_one_bullet_per_figure():
    from ladnn.generalisation import NOT_SHOWN

    parts = ["this run, D1 (new sources): AUC 0.533 on 1 COVID-19 and 6 other clusters; exact permutation p = 0.286",
             "recipe, COVID-CT-MD per slice: AUC 0.426 (95% interval 0.1 to 0.7)"]
    body = unseen._warning_body(NOT_SHOWN + " " + "; ".join(parts) + ".")
    head, bullets = body.split("\n\n")
    assert head == NOT_SHOWN
    assert bullets.split("\n") == [("- This run, D1 (new sources): AUC 0.533 on 1 COVID-19 and 6 other clusters; "
                                    "exact permutation p = 0.286."),
                                   "- Recipe, COVID-CT-MD per slice: AUC 0.426 (95% interval 0.1 to 0.7)."]
    assert unseen._warning_body(None) == "none" and unseen._warning_body("Other words.") == "Other words."


def test_own_runs_table_fits_the_column():
    own = pd.DataFrame({"backbone": ["b0", "b0"], "method": ["baseline", "LA-DNN"], "seed": [0, 0],
                        "AUC (D0 test)": [0.87123, 0.872], "AUC (D1, new sources)": [0.498, 0.5334],
                        "95% interval (D1)": ["none: 1 COVID-19 cluster(s); exact p = 0.286",
                                              "none: 1 COVID-19 cluster(s); exact p = 0.143"],
                        "accuracy (D1)": [0.421, 0.4], "n": [76, 76], "collections": [3, 3], "patients": [7, 7],
                        "extra": ["x", "y"]})
    page, note = unseen.own_runs_for_page(own)
    assert "backbone" not in page and "95% interval (D1)" not in page and "extra" in page
    assert page["exact p (D1)"].tolist() == ["0.286", "0.143"] and page["AUC, D0 test"].tolist() == ["0.871", "0.872"]
    assert note.startswith("Backbone: b0.") and "form 1 cluster, too few" in note
    few = "none: 2 COVID-19 cluster(s); exact p = 0.100"
    mixed = own.assign(backbone=["b0", "b1"], **{"95% interval (D1)": ["0.400 to 0.600", few]})
    page, note = unseen.own_runs_for_page(mixed)
    assert "backbone" in page and page["95% interval (D1)"].tolist() == ["0.400 to 0.600", ""]
    assert "form 2 clusters" in note


# ---------------------------------------------------------------- section 1 and 3: figures readable in the column
def _series() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [pd.DataFrame({"candidate": "none", "adabn": False, "method": m, "protocol": "official", "fold": -1,
                          "seed": 0, "part": "COVID-CT-MD", PRED.image: [f"{pid}/s{k}" for k in range(8)],
                          PRED.y_true: y, PRED.p_covid: rng.random(8), PRED.group: pid, PRED.collection: "x",
                          PRED.patient: pid, PRED.slice_scored: True, PRED.lung_fraction: 0.2})
            for m in ("baseline", "ladnn") for pid, y in (("P1", 1), ("P2", 0), ("P3", 0))]
    return unseen.with_adabn(pd.concat(rows, ignore_index=True))


def _min_font(fig) -> float:
    return min(t.get_fontsize() for t in fig.findobj(Text) if t.get_text())


def test_series_figure_legend_sits_below_the_curves_and_text_is_large():
    fig = unseen.series_figure(_series())
    assert fig.get_size_inches()[0] <= 8 and _min_font(fig) >= 11
    r = FigureCanvasAgg(fig).get_renderer()
    fig.draw(r)
    legend, bottom = fig.axes[1].get_legend(), fig.axes[1]
    assert legend.get_window_extent(r).y1 <= bottom.get_window_extent(r).y0  # below the lower panel, off the lines
    assert legend.get_window_extent(r).x0 >= 0 and legend.get_window_extent(r).x1 <= fig.bbox.width


def test_protocol_figure_text_is_large_and_the_legend_off_the_points():
    tab = _protocol_rows()
    fig = unseen.protocol_figure(tab)
    assert fig.get_size_inches()[0] <= 8 and _min_font(fig) >= 10
    r = FigureCanvasAgg(fig).get_renderer()
    fig.draw(r)
    (ax,) = fig.axes
    box = ax.get_legend().get_window_extent(r)
    assert box.y0 >= ax.get_window_extent(r).y1 - 1 and box.x1 <= fig.bbox.width


# ---------------------------------------------------------------- the lab's limit of resolution, from its tables
def _tables() -> dict:
    pred = pd.DataFrame({"run": "r0", PRED.image: [f"i{k}" for k in range(7)], PRED.y_true: [1, 1, 1, 0, 0, 0, 0],
                         PRED.group: ["a", "a", "b", "c", "d", "d", "e"]})
    return {"predictions": pd.concat([pred, pred.assign(run="r1")])}


def test_detectable_bullet_follows_the_tables_it_summarises():
    curve = pd.DataFrame({"share of training patients": [0.1, 1.0], "training images": [40.0, 400.0],
                          "baseline": [(0.8, 0.7, 0.9)] * 2, "ladnn": [(0.8, 0.7, 0.9)] * 2, "diff": [0.0, 0.001],
                          "diff_lo": [-0.01, -0.01], "diff_hi": [0.01, 0.012], "detectable": [0.0123, 0.0456]})
    comb = pd.DataFrame({"key": ["fixed", "mgda", "pcgrad"], "diff_lo": [np.nan, -0.013, -0.02],
                         "diff_hi": [np.nan, 0.017, 0.015]})
    text = lab.detectable_bullet(_tables(), curve, comb)
    shown = lab.curve_table(curve)["detectable"].tolist()
    assert shown == ["1.2", "4.6"] and f"a paired difference of {shown[0]} to {shown[-1]} points of AUC" in text
    assert "7 images of 5 patients (2 with COVID-19)" in text and "3.0 to 3.5 points wide" in text
    same = curve.assign(detectable=[0.02, 0.02])
    assert "a paired difference of 2.0 points of AUC" in lab.detectable_bullet(_tables(), same, comb.iloc[:1])
    bullets = lab.limits(_tables(), curve, comb).split("\n")
    assert len(bullets) == 4 and bullets[1] == f"- {text}" and "one or two points" not in "\n".join(bullets)


def test_detectable_bullet_on_the_committed_lab_results():
    tables = lab.committed()
    curve, comb = lab.learning_curve(tables), lab.combination_table(tables)
    shown = [float(x) for x in lab.curve_table(curve)["detectable"]]
    text = lab.detectable_bullet(tables, curve, comb)
    lo, hi = re.search(r"a paired difference of ([0-9.]+) to ([0-9.]+) points", text).groups()
    assert (float(lo), float(hi)) == (min(shown), max(shown))


# ---------------------------------------------------------------- the notebooks: notice once, commands that run
def _notebook(name: str) -> dict:
    return json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())


def _text(nb: dict, kind: str | None = None) -> str:
    return "\n".join("".join(c["source"]) for c in nb["cells"] if kind is None or c["cell_type"] == kind)


@pytest.mark.parametrize("name", ["sources", "lab"])
def test_notebooks_keep_their_format_and_tags(name):
    path = ROOT / "notebooks" / f"{name}.ipynb"
    nb = json.loads(path.read_text())
    assert path.read_text() == json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    for c in nb["cells"]:
        tags = c.get("metadata", {}).get("tags", [])
        if c["cell_type"] == "code":
            assert "remove-cell" in tags or "hide-input" in tags, "".join(c["source"])[:60]
    assert nb["metadata"]["mystnb"]["render_markdown_format"] == "myst"  # {cite} and {term} in generated Markdown


def test_lab_has_one_research_notice_and_an_opening_of_its_own():
    nb = _notebook("lab")
    text = _text(nb)
    assert text.count("not a medical device") == 1 and "NOTICE" not in text
    opening = "".join(nb["cells"][0]["source"])
    assert "not a medical device" in opening and "{doc}`results`" in opening
    assert "the Results chapter found" not in opening


def _train_commands(text: str) -> list[list[str]]:
    lines = re.findall(r"ladnn train [^\n`]*(?:\\\n[^\n`]*)*", text)
    return [shlex.split(x.replace("\\\n", " "))[2:] for x in lines]


@pytest.mark.parametrize("name", ["lab", "sources"])
def test_try_it_train_commands_start_from_the_quick_recipe(name, monkeypatch, capsys):
    from ladnn.cli import main
    from ladnn.profiles import load_profile

    monkeypatch.chdir(ROOT)
    quick = next(c for c in load_profile("quick", ROOT)["runs"] if c.method == "ladnn").to_dict()
    commands = _train_commands(_text(_notebook(name), "markdown"))
    assert commands, f"{name}: no `ladnn train` command"
    for argv in commands:
        assert argv[:2] == ["--profile", "quick"], argv
        assert main(["train", *argv, "--dry-run"]) == 0
        cfg = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        changed = {k for k in quick if cfg[k] != quick[k]}
        named = {a[2:].replace("-", "_") for a in argv if a.startswith("--")} - {"profile", "out"}
        assert changed <= named and changed, (argv, changed)  # only what the command names differs


def test_sources_page_cites_with_keys_and_links_its_chapters():
    text = _text(_notebook("sources"), "markdown")
    assert "Li et al." not in text and "Nguyen et al." not in text
    for key in ("li2018adabn", "afshar2021covidctmd", "telea2004inpainting", "zuiderveld1994clahe"):
        assert f"`{key}`" in text or f",{key}`" in text or f"`{key}," in text
        assert key in (ROOT / "references.bib").read_text()
    for doc in ("validity", "results", "data", "gradcam"):
        assert "{doc}`" + doc + "`" in text
    box = text[text.index("````{admonition} Try it"):]
    assert box.count("````") == 2 and "ladnn evaluate runs/quick/tf_efficientnet_lite0-D0-ladnn-s0" in box


def test_lab_figures_are_readable_in_the_column_and_in_points():
    tables = lab.committed()
    curve, comb = lab.learning_curve(tables), lab.combination_table(tables)
    for fig in (lab.plot_curve(curve), lab.plot_gradients(tables), lab.plot_combination(comb)):
        assert fig.get_size_inches()[0] <= 8 and _min_font(fig) >= 10
    (a, b) = lab.plot_curve(curve).axes
    assert np.allclose(b.lines[0].get_ydata(), 100 * curve["diff"])  # points of AUC, as the table
    assert a.get_legend() is None  # the legend sits below the panels, off the error bars
