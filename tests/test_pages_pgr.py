"""The generated sentences and reshaped tables of the Grad-CAM++, pairplot and Reproduction pages, on hand-made
inputs whose answers are known (each sentence in its outcomes)."""
import numpy as np
import pandas as pd
import pytest

from ladnn.config import LESIONS, Config
from ladnn.report import maps, reproduction
from ladnn.rundir import RunWriter, runs_table
from ladnn.scores import evaluate_predictions, predictions_table
from ladnn.summary import RunMetrics

AUC_COL = "AUC for COVID vs non-COVID"


def _sep(aucs: list[float]) -> pd.DataFrame:
    return pd.DataFrame({AUC_COL: aucs}, index=pd.Index(LESIONS, name="lesion"))


def _run(path, method="ladnn", seed=0, backbone="efficientnet_lite0", n=20, **cfg) -> str:
    """A finished run of `n` test images whose COVID score follows the label, written with RunWriter."""
    rng = np.random.default_rng(seed)
    y = np.repeat([1, 0], n // 2)
    df = pd.DataFrame({"name": [f"im{i}.png" for i in range(n)], "covid": y, "lesions_known": y.astype(bool),
                       "patient": [f"P{i}" for i in range(n)]})
    for k in LESIONS:
        df[k] = (y & (rng.random(n) < 0.5)).astype(int)
    c = Config(backbone=backbone, method=method, seed=seed, **cfg)
    probs = np.column_stack([np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, n), 0.01, 0.99)]
                            + [rng.random(n) for _ in range(len(c.tasks) - 1)])
    pred = predictions_table(df, probs, c.tasks)
    m = evaluate_predictions(pred, [0.5] * len(LESIONS), n_boot=20, seed=0)
    m = RunMetrics.from_dict({**m, "run": {"best_epoch": 1, "seconds": 1.0, "device": "cpu", "timm_name": backbone,
                                           "weights_source": "none (random init)", "pretrained": False,
                                           "torch": "test"}})
    hist = pd.DataFrame({"epoch": [1], "train_loss": [1.0], "val_covid_loss": [0.7], "val_auc": [0.6],
                         "val_accuracy": [0.6], "val_f1": [0.6], "seconds": [1]})
    w = RunWriter(path)
    w.start(c.to_dict())
    w.write_results(hist, pred, {"config": c.to_dict()}, m)
    return str(path)


# -- pairplot page ---------------------------------------------------------------------------------------------------

def test_separation_sentence_near_chance_claims_no_separation():
    s = maps.separation_sentence(_sep([0.55, 0.47, 0.52, 0.48, 0.45]))
    assert "GGO output separates" in s and "CrPa output least (AUC 0.520, the closest to 0.5)" in s
    r = maps.separation_sentence(_sep([0.55, 0.47, 0.52, 0.48, 0.30]))  # below chance, far from it: best, reversed
    assert "InSepThi output separates" in r and "in reverse" in r
    assert "All five AUCs lie within 0.1 of 0.5" in s
    assert "expected" not in s and "reaches" not in s


def test_separation_sentence_names_the_outputs_that_separate():
    s = maps.separation_sentence(_sep([0.75, 0.52, 0.35, 0.5, 0.5]))
    assert "Two of the five lie 0.1 or more from 0.5: GGO (0.750), CrPa (0.350)." in s
    assert "below 0.5" in s and "these outputs" in s and "no evidence that a lesion was seen" in s
    one = maps.separation_sentence(_sep([0.8, 0.5, 0.5, 0.5, 0.5]))
    assert "One of the five lies" in one and "below 0.5" not in one and "this output" in one
    every = maps.separation_sentence(_sep([0.8, 0.8, 0.8, 0.8, 0.3]))
    assert "All five lie" in every


def test_separation_sentence_follows_the_runs_lesion_rule():
    assert "all of them COVID-positive" in maps.separation_sentence(_sep([0.5] * 5), "any_lesion")
    none = maps.separation_sentence(_sep([0.5] * 5), "none")
    assert "no lesion loss term" in none and "COVID-positive" not in none
    zeroed = maps.separation_sentence(_sep([0.5] * 5), "any_lesion", ["AirBr", "InSepThi"])
    assert "AirBr and InSepThi were all set to 0" in zeroed


def test_pairplot_runs_takes_one_run_or_a_folder(tmp_path):
    a = _run(tmp_path / "runs" / "a-ladnn-s1", seed=1)
    _run(tmp_path / "runs" / "a-ladnn-s0", seed=0)
    _run(tmp_path / "runs" / "a-baseline-s0", method="baseline")
    shown = maps.pairplot_runs(tmp_path / "runs")
    assert list(shown) == [str(tmp_path / "runs" / "a-ladnn-s0")]  # the lowest seed, LA-DNN only
    one = maps.pairplot_runs("ignored", a)
    assert one.index.tolist() == [("efficientnet_lite0", "D0")] and one.iloc[0] == a
    assert maps.runs_sentence(one) == "The figures below draw this run: `a-ladnn-s1` (efficientnet_lite0 on D0)."
    with pytest.raises(ValueError, match="no lesion outputs"):
        maps.pairplot_runs("ignored", tmp_path / "runs" / "a-baseline-s0")


def test_pairplot_is_column_sized():
    rng = np.random.default_rng(0)
    logits = pd.DataFrame(rng.normal(size=(30, 5)), columns=list(LESIONS))
    logits["COVID label"] = ["COVID", "non-COVID"] * 15
    g = maps.lesion_pairplot(logits)
    w = g.figure.get_size_inches()[0]
    assert w == pytest.approx(maps.FIG_WIDTH)
    label = g.axes[-1, 0].xaxis.label.get_fontsize()
    assert label * 750 / (72 * w) >= 13  # px on a 750 px column


# -- Grad-CAM++ page -------------------------------------------------------------------------------------------------

def test_short_name_keeps_both_ends():
    name = "2019-novel-Coronavirus-severe-adult-respiratory-dist_2020_International-Jour-p3-89%0.png"
    s = maps.short_name(name, 22)
    assert len(s) == 22 and s.startswith("2019-novel") and s.endswith("p3-89%0.png") and "\u2026" in s
    assert maps.short_name("a.png") == "a.png"


def test_cam_figure_has_three_readable_panels_per_image(monkeypatch):
    rows = pd.DataFrame({"name": ["x" * 60, "b.png"], "image": ["", ""]})
    rng = np.random.default_rng(0)

    def fake(run, rows, tasks):
        tasks = list(tasks)
        return (rng.integers(0, 255, (len(rows), 16, 16, 3), dtype=np.uint8),
                {k: rng.random((len(rows), 16, 16)).astype(np.float32) for k in tasks}, rng.random((len(rows), 6)))

    monkeypatch.setattr(maps, "_maps_and_probs", fake)
    fig = maps.cam_figure("b", "l", rows)
    assert fig.axes[0].get_gridspec().ncols == 3 and len(fig.axes) == 6
    titles = [a.title for a in fig.axes]
    assert titles[0].get_text().startswith("1. ") and len(titles[0].get_text()) <= 25
    px = min(t.get_fontsize() for t in titles) * 750 / (72 * fig.get_size_inches()[0])
    assert px >= 13  # about 10 pt on a 750 px column
    rows = rows.assign(**{k: [1, 0] for k in LESIONS})
    fig = maps.lesion_cam_figure("l", rows)
    assert fig.axes[0].get_gridspec().ncols == 4 and len(fig.axes) == 16
    assert "GGO, Csld, CrPa, AirBr, InSepThi" not in fig.axes[7].texts[0].get_text()  # one lesion a line
    assert fig.axes[7].texts[0].get_text().startswith("labelled:\nGGO\nCsld")
    assert fig.axes[15].texts[0].get_text() == "labelled:\nnone"
    assert fig.axes[2].title.get_text().startswith("GGO*") and fig.axes[10].title.get_text().startswith("GGO p=")


def test_marks_sentence_counts_by_figure_number():
    assert "finds none on the 3 images" in maps.marks_sentence(pd.DataFrame({"marked": [False] * 3}))
    assert maps.marks_sentence(pd.DataFrame({"marked": [False, True, False]})).endswith("3 images above: number 2.")
    assert maps.marks_sentence(pd.DataFrame({"marked": [True, False, True, True]})).endswith(
        "3 of the 4 images above: numbers 1, 3 and 4.")


def test_shown_runs_gives_seeds_not_paths():
    runs = pd.DataFrame({"backbone": ["b"] * 4, "dataset": ["D0"] * 4, "method": ["baseline", "baseline", "ladnn", "ladnn"],
                         "seed": [2, 1, 1, 3], "path": ["p/b2", "p/b1", "p/l1", "p/l3"]})
    t = maps.shown_runs(runs, maps.first_runs(runs))
    assert t.to_dict("records") == [{"backbone": "b", "dataset": "D0", "baseline seed": 1, "LA-DNN seed": 1}]


# -- Reproduction page -----------------------------------------------------------------------------------------------

def _auc_table(paper, bacc, probs) -> pd.DataFrame:
    return pd.DataFrame({"AUC (probabilities)": probs, "AUC of 0/1 decisions (paper code)": paper,
                         "balanced accuracy": bacc}, index=[f"r{i}" for i in range(len(paper))])


def test_paper_auc_sentence_checks_every_run():
    same = reproduction.paper_auc_sentence(_auc_table([0.8, 0.7], [0.8, 0.7], [0.85, 0.76]))
    assert same.startswith('On all 2 runs the paper code\'s "AUC" equals the balanced accuracy, exactly.')
    assert "0.050 to 0.060 lower" in same
    off = reproduction.paper_auc_sentence(_auc_table([0.8, 0.7], [0.8, 0.65], [0.85, 0.76]))
    assert off.startswith("On 1 of the 2 runs") and "differs" in off and "equals" not in off
    higher = reproduction.paper_auc_sentence(_auc_table([0.8], [0.8], [0.7]))
    assert "higher than the AUC of the probabilities" in higher
    mixed = reproduction.paper_auc_sentence(_auc_table([0.8, 0.7], [0.8, 0.7], [0.7, 0.8]))
    assert "ranges from -0.100 to 0.100" in mixed


def test_paper_auc_equals_balanced_accuracy_on_real_runs(tmp_path):
    for s in (0, 1):
        _run(tmp_path / f"m-ladnn-s{s}", seed=s)
    t = reproduction.thresholded_auc_table(runs_table(tmp_path))
    assert reproduction.paper_auc_sentence(t).startswith("On all 2 runs")


def test_thresholded_auc_view_rounds_and_drops_constant_levels():
    runs = pd.DataFrame({"path": ["x/a", "x/b", "x/c"], "backbone": ["bb"] * 3, "dataset": ["D0"] * 3,
                         "method": ["ladnn", "baseline", "baseline"], "seed": [0, 1, 0]})
    t = _auc_table([0.81234, 0.7, 0.6], [0.81234, 0.7, 0.6], [0.91266, 0.8, 0.7])
    t.index = ["a", "b", "c"]
    v = reproduction.thresholded_auc_view(runs, t)
    assert v.index.names == ["method", "seed"]
    assert v.index.tolist() == [("baseline", 0), ("baseline", 1), ("LA-DNN", 0)]
    assert v.loc[("LA-DNN", 0), "AUC of the probabilities"] == 0.913
    assert list(v.columns) == list(reproduction.AUC_HEADERS.values())
    two = reproduction.thresholded_auc_view(runs.assign(backbone=["bb", "cc", "bb"]), t)
    assert two.index.names == ["backbone", "method", "seed"]


def test_recipe_view_is_one_row_per_option():
    base = {"backbone": "bb", "finetune": "top", "top_blocks": 3, "head": "linear", "lr": 2e-4, "epochs": 5,
            "views": 4, "tta": 4, "covid_weight": 5.0, "lesion_mask": "any_lesion", "loss_reduction": "mean"}
    runs = pd.DataFrame([{**base, "method": "baseline", "seed": s} for s in (0, 1)]
                        + [{**base, "method": "ladnn", "epochs": 7, "seed": 0}])
    v = reproduction.recipe_view(runs)
    assert v.index.name == "option" and list(v.columns) == ["sets", "value"]
    assert v.loc["--lr", "value"] == "0.0002" and v.loc["--method", "value"] == "baseline, LA-DNN"
    assert v.loc["--epochs", "value"] == "baseline: 5; LA-DNN: 7"
    many = pd.concat([runs, runs.assign(backbone="cc", lr=1e-3)])
    v = reproduction.recipe_view(many)
    assert v.loc["--backbone", "value"] == "bb, cc" and v.loc["--lr", "value"] == "0.0002, 0.001"


def test_d1_sentence_and_archives():
    info = {"found": 5, "of_paper": 478, "covid": 2, "noncovid": 3,
            "zips": ["la-dnn/New_data/6.10/6.10_nocovidct.zip"],
            "archives": {"pinned": 3, "present": ["la-dnn/New_data/6.10/6.10_nocovidct.zip"],
                         "absent": ["la-dnn/New_data/6.2/6.2_covidct.zip", "la-dnn/New_data/4.28/4.28_covidct.zip"]}}
    s = reproduction.d1_sentence(info)
    assert s == ("The data folder holds 5 of the paper's 478 new images (D1): 2 COVID and 3 non-COVID, from 1 archive "
                 "of the 3 that the authors published.")
    t = reproduction.d1_archives(info)
    assert t["archive"].tolist() == ["4.28_covidct.zip", "6.2_covidct.zip", "6.10_nocovidct.zip"]  # by date
    assert t["here"].tolist() == ["no", "no", "yes"] and t["class"].tolist() == ["COVID", "COVID", "non-COVID"]
    assert "archives" in reproduction.d1_sentence({**info, "zips": ["a", "b"]})


def test_spread_sentence_in_both_outcomes():
    ratio = pd.Series([1.0, 1.2, 0.9, 1.1, 1.0], index=list(LESIONS))
    assert maps.spread_sentence(ratio).startswith("The logits of the two classes spread about equally widely")
    s = maps.spread_sentence(pd.Series([1.6, 1.0, 2.0, 0.5, 1.0], index=list(LESIONS)))
    assert "GGO and CrPa (1.6 to 2.0 times as wide for COVID images)" in s
    assert "AirBr (narrower for COVID images, ratio 0.50 to 0.50)" in s and "equally" not in s
    sep = _sep([0.5] * 5).assign(**{maps.SD_RATIO: [3.0, 1, 1, 1, 1]})
    assert "GGO (3.0 times as wide" in maps.separation_sentence(sep)
