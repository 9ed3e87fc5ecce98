import numpy as np
import pandas as pd
import pytest

from ladnn import report


def test_mean_ci_is_a_t_interval():
    m, lo, hi = report.mean_ci([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / np.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert m == 2 and lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    assert np.isnan(report.mean_ci([0.5])[1])


def test_table2_puts_the_papers_number_beside_ours():
    runs = pd.DataFrame({"backbone": "vgg16", "dataset": "D0", "method": "ladnn", "seed": [0, 1, 2],
                         "auc": [0.88, 0.90, 0.92], "sensitivity": 0.8, "f1": 0.8, "accuracy": 0.8})
    t = report.table2(runs).set_index("metric")
    assert t.loc["auc", "paper"] == 89.8 and t.loc["auc", "ours_mean"] == pytest.approx(90.0)
    assert t.loc["auc", "ours"].startswith("90.0 [")
    other = runs.assign(backbone="efficientnet_lite0")
    assert report.table2(other)["paper"].isna().all()  # not in the paper: no number is invented


def test_seed_sentence_compares_with_the_papers_gains():
    runs = pd.DataFrame({"backbone": "x", "dataset": "D0", "method": "ladnn", "seed": [0, 1, 2],
                         "auc": [0.80, 0.81, 0.82]})
    s = report.seed_sentence(runs)
    assert "up to 2.0 points" in s and "from 0.0 to 8.5 points" in s


def test_selection_table_and_sentence(tmp_path):
    rows = []
    for tb, spe, losses in [(2, 3.0, {5: 0.50, 15: 0.48}), (3, 6.0, {5: 0.47, 15: 0.45})]:
        for seed in (0, 1):
            for budget, loss in losses.items():
                rows.append({"top_blocks": tb, "lr": 2e-4, "views": 4, "head": "linear", "seed": seed,
                             "budget": budget, "kept_epoch": min(budget, 4 + seed), "val_covid_loss": loss + seed / 100,
                             "val_auc": 0.8, "seconds_per_epoch": spe + seed})
    csv = tmp_path / "sel.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    sel = report.selection_table(csv)
    best = sel.iloc[0]
    assert (best["top_blocks"], best["budget"], best["seeds"]) == (3, 15, 2)
    assert best["val_covid_loss"] == pytest.approx(0.455) and best["train_seconds"] == 90  # fastest seed: 6 s
    assert best["kept_epochs"] == "4, 5"
    runs = pd.DataFrame({"finetune": ["top"], "top_blocks": [2], "lr": [2e-4], "views": [4], "head": ["linear"],
                         "epochs": [5]})
    text = report.selection_sentence(sel, runs)
    assert "Lowest with 5 epochs: the top 3 block(s)" in text and "This profile uses the top 2 block(s)" in text
    assert "validation COVID loss 0.505" in text
    assert report.selection_figure(sel, runs).axes[0].lines[-1].get_label() == "this profile"
