"""The functions that turn runs into the book's numbers, on small hand-built runs whose answers are known."""
import re

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from ladnn.config import LESIONS, Config
from ladnn.metrics import bootstrap_ci, mean_ci
from ladnn.report import (
    fmt_ci,
    lesions,
    maps,
    paper_table,
    recipe,
    reproduction,
    results,
    runs_overview,
    selection,
    validity,
)
from ladnn.rundir import FinishedRun, RunWriter, runs_table
from ladnn.scores import PRED, evaluate_predictions, predictions_table, subset_aucs
from ladnn.summary import RunMetrics

N = 40  # test images of every hand-built run: 20 positive, 20 negative


def _samples() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    y = np.repeat([1, 0], N // 2)
    df = pd.DataFrame({"name": [f"img{i:02d}.png" for i in range(N)], "covid": y,
                       "lesions_known": y.astype(bool),
                       "patient": [f"P{i // 2}" if y[i] else "" for i in range(N)]})  # two images per patient
    for k in LESIONS:
        df[k] = (y & (rng.random(N) < 0.4)).astype(int)
    return df


def make_run(path, method="ladnn", seed=0, backbone="vgg16", dataset="D0", shift=0.0, **cfg):
    """A complete run whose COVID score is the label plus noise (plus `shift` for positives)."""
    rng = np.random.default_rng(100 + seed + (7 if method == "ladnn" else 0))
    df = _samples()
    p = np.clip(0.5 + (df["covid"] - 0.5) * (0.4 + shift) + rng.normal(0, 0.25, N), 0.001, 0.999)
    if backbone == "vgg16":  # a lesion head that learned something
        lesions = [np.clip(0.6 * df[k] + 0.5 * rng.random(N), 0, 1) for k in LESIONS]
    else:  # one that learned nothing
        lesions = [rng.random(N) for _ in LESIONS]
    probs = np.column_stack([p] + lesions)
    c = Config(backbone=backbone, method=method, seed=seed, dataset=dataset, **cfg)
    pred = predictions_table(df, probs, c.tasks)
    m = evaluate_predictions(pred, [0.6, 0.4, 0.4, 0.4, 0.4], n_boot=200, seed=seed)
    m = RunMetrics.from_dict({**m, "run": {"best_epoch": 2, "seconds": 10.0 + seed, "device": "cpu",
                                           "timm_name": backbone, "weights_source": "none (random init)",
                                           "pretrained": False, "torch": "test"}})
    h = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [3.0, 2.0, 1.5], "val_covid_loss": [0.7, 0.5, 0.6],
                      "val_auc": [0.6, 0.8, 0.7], "val_accuracy": [0.5, 0.7, 0.6], "val_f1": [0.5, 0.7, 0.6],
                      "seconds": [1, 2, 3]})
    r = RunWriter(path)
    r.start(c.to_dict())
    r.write_results(h, pred, {"config": c.to_dict()}, m)
    return path


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """Two backbones x two methods x three seeds on D0, and ablations of the first backbone."""
    root = tmp_path_factory.mktemp("grid")
    for bb in ("vgg16", "efficientnet_lite0"):
        for method in ("baseline", "ladnn"):
            for seed in range(3):
                make_run(root / f"{bb}-{method}-s{seed}", method, seed, bb, finetune="top")
    for seed in range(3):
        make_run(root / "ablations" / f"w1-s{seed}", "ladnn", seed, "vgg16", finetune="top", covid_weight=1.0)
    return root


def test_runs_table_reads_only_complete_runs(grid, tmp_path, capsys):
    make_run(tmp_path / "done")
    failed = RunWriter(tmp_path / "failed")
    failed.start(Config().to_dict())
    failed.fail(RuntimeError("out of memory"))
    assert list(runs_table(tmp_path)["path"]) == [str(tmp_path / "done")]
    assert "skipping" in capsys.readouterr().out
    runs = runs_table(grid)
    assert len(runs) == 12 and set(runs["backbone"]) == {"vgg16", "efficientnet_lite0"}
    over = runs_overview(runs)
    assert list(over.columns) == ["kept epoch", "seconds", "AUC %", "sens. %", "F1 %", "acc. %"]
    want = runs.set_index(["backbone", "method", "seed"]).loc[("vgg16", "ladnn", 2), "auc"]
    assert over.loc[("vgg16", "D0", "LA-DNN", 2), "AUC %"] == round(100 * want, 1)


def test_table2_puts_the_papers_number_beside_ours(grid):
    runs = runs_table(grid)
    t = results.table2(runs).set_index(["backbone", "method", "metric"])
    vgg = runs[(runs["backbone"] == "vgg16") & (runs["method"] == "ladnn")]["auc"]
    assert t.loc[("vgg16", "ladnn", "auc"), "ours_mean"] == pytest.approx(100 * vgg.mean())
    assert t.loc[("vgg16", "ladnn", "auc"), "paper"] == 89.8
    assert t.loc[("vgg16", "ladnn", "auc"), "ours"] == fmt_ci(*mean_ci(vgg))
    assert pd.isna(t.loc[("efficientnet_lite0", "ladnn", "auc"), "paper"])  # not in the paper: nothing invented


def test_one_table_holds_ours_and_the_papers(grid):
    wide = results.table2_with_paper(runs_table(grid))
    assert list(wide.columns) == [("baseline", "ours"), ("baseline", "paper"), ("LA-DNN", "ours"), ("LA-DNN", "paper")]
    assert set(wide.index.get_level_values("backbone")) == {"vgg16", "efficientnet_lite0"}  # ours only
    assert wide.loc[("vgg16", "D0", "vgg16", "auc"), ("LA-DNN", "paper")] == "89.8"  # the same backbone's
    b0 = paper_table(2).query("backbone == 'efficientnet_b0' and dataset == 'D0' and metric == 'auc'")
    want = f"{b0[b0['method'] == 'ladnn']['percent'].iloc[0]:.1f}"
    assert wide.loc[("efficientnet_lite0", "D0", "efficientnet_b0", "auc"), ("LA-DNN", "paper")] == want
    assert len(wide) == 2 * 4
    full = results.paper_table2()
    assert full.loc[("resnet18", "auc"), ("D0", "LA-DNN")] == paper_table(2).query(
        "backbone == 'resnet18' and dataset == 'D0' and metric == 'auc' and method == 'ladnn'")["percent"].iloc[0]
    assert len(full) == 7 * 4


def test_the_headline_puts_the_papers_balanced_accuracy_beside_ours(grid, tmp_path):
    from sklearn.metrics import balanced_accuracy_score

    runs = runs_table(grid)
    h = results.headline(runs, n_boot=200)
    ours = h.iloc[:, 1]
    bb = runs["backbone"].iloc[0]
    lad = runs[(runs["backbone"] == bb) & (runs["method"] == "ladnn")]
    bacc = np.mean([balanced_accuracy_score(p[PRED.y_true], p[PRED.p_covid] >= 0.5)
                    for p in (FinishedRun(x).predictions for x in lad["path"])])
    assert ours["LA-DNN balanced accuracy"] == f"{bacc:.3f}"
    assert ours["LA-DNN AUC"] == f"{lad['auc'].mean():.3f}"
    assert h.iloc[:, 0]["LA-DNN AUC"] == "not reported" and h.iloc[:, 0]["LA-DNN balanced accuracy"] == "0.900"
    assert re.fullmatch(r"[+-]\d\.\d{3} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]", ours["LA-DNN - baseline, AUC [95%]"])
    text = results.recipe_sentence(runs, 76, 478)
    assert "of the 478 images the paper added (D1), 76 can be found" in text and f"of {bb}" in text
    results.write_headline(tmp_path / "h.md", h, text)
    md = (tmp_path / "h.md").read_text()
    assert md.count("|") > 20 and "0.900" in md and text in md


def test_paired_tests(grid):
    runs = runs_table(grid)
    t = results.paired_tests(runs, n_boot=200)
    assert len(t) == 6 and set(t["seed"]) == {0, 1, 2}
    r = runs.set_index(["backbone", "method", "seed"])
    want = r.loc[("vgg16", "ladnn", 0), "auc"] - r.loc[("vgg16", "baseline", 0), "auc"]
    assert t.query("backbone == 'vgg16' and seed == 0")["auc_diff"].iloc[0] == pytest.approx(want)
    assert "Over 6 paired comparisons" in results.paired_sentence(t)
    assert results.paired_table(t)["95% interval"].str.match(r"\[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]").all()


def test_table3_is_honest_about_the_lesion_head(grid):
    runs = runs_table(grid)
    t3 = lesions.table3(runs)
    assert list(t3.columns) == ["LA-DNN's lesion head", "constant (training prevalence)",
                                "COVID probability as every lesion's score", "paper"]
    # per backbone: 5 lesions x (AUC, AP) first, then label accuracy and Hamming loss
    assert len(t3) == 2 * 12 and list(t3.loc[("vgg16", "D0")].index.get_level_values("metric")[:2]) == ["AUC", "AP"]
    assert t3.loc[("vgg16", "D0", "GGO", "AUC"), "constant (training prevalence)"] == "50.0"
    assert t3.loc[("vgg16", "D0", "all five", "label accuracy"), "paper"] == "87.3 (D0+D1)"  # VGG-16, paper
    assert "to" in t3.loc[("efficientnet_lite0", "D0", "all five", "Hamming loss"), "paper"]
    # only the positives with a lesion label are scored
    lab = int((_samples()[list(LESIONS)].sum(axis=1) > 0).sum())
    assert t3.attrs["images"][("vgg16", "D0")] == lab < N // 2
    v = lesions.lesion_verdict(runs, n_boot=300).set_index("backbone")
    assert v.loc["vgg16", "head_ci"][0] > 0.5  # the head that learned the lesions beats a constant
    assert v.loc["efficientnet_lite0", "head_ci"][0] < 0.5 < v.loc["efficientnet_lite0", "head_ci"][1]
    text = lesions.lesion_sentence(v.reset_index())
    assert "ranks lesions better than a constant." in text and "has not shown" in text


def test_pooled_difference_ensembles_and_verdict(grid):
    runs = runs_table(grid)
    pooled = results.pooled_difference(runs, n_boot=500)
    assert len(pooled) == 2 and (pooled["pairs"] == 3).all()
    assert (pooled["clusters"] == N // 4 + N // 2).all()  # 10 patients of two positives, 20 single negatives
    r = runs.set_index(["backbone", "method", "seed"])
    per_seed = [r.loc[("vgg16", "ladnn", s), "auc"] - r.loc[("vgg16", "baseline", s), "auc"] for s in range(3)]
    row = pooled.set_index("backbone").loc["vgg16"]
    assert row["auc_diff"] == pytest.approx(np.mean(per_seed))
    assert row["auc_diff_ci"][0] < row["auc_diff"] < row["auc_diff_ci"][1] and row["detectable_80"] > 0
    ens = results.ensemble_table(runs, n_boot=200)
    assert len(ens) == 2 * 2 * 4
    e = ens.query("backbone == 'vgg16' and method == 'LA-DNN' and metric == 'auc'").iloc[0]
    preds = [pd.read_csv(grid / f"vgg16-ladnn-s{s}" / "predictions.csv") for s in range(3)]
    assert e["ensemble"] == pytest.approx(skm.roc_auc_score(preds[0][PRED.y_true],
                                                            np.mean([p[PRED.p_covid] for p in preds], axis=0)))
    text = results.verdict(pooled, ens, lesions.lesion_sentence(lesions.lesion_verdict(runs, n_boot=200)))
    assert "from 0.877 to 0.900 (+0.023)" in text  # the paper's EfficientNet-b0 numbers, read from its table
    assert f"{row['auc_diff']:+.3f}" in text and "80% power" in text and "resnet18 not up" in text


def test_curves_per_backbone(grid):
    runs = runs_table(grid)
    fig = results.plot_curves(runs, "efficientnet_lite0", "D0")
    assert fig._suptitle.get_text() == "efficientnet_lite0 on D0"
    assert len(fig.axes[0].lines) == 7  # 3 seeds x 2 methods + the chance line


def test_history_and_summary_of_one_run(grid):
    run = grid / "vgg16-ladnn-s0"
    fig = results.plot_history(run)
    assert any("kept epoch (2)" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    s = results.run_summary(run)
    assert s.loc["auc", "95% interval (patient-clustered bootstrap)"].startswith("[") and 0 <= s.loc["auc", "value"] <= 1


def test_ablations_and_seeds(grid):
    runs = runs_table(grid)
    vgg = runs[runs["backbone"] == "vgg16"]
    t = validity.ablation_table(vgg, validity.ablation_runs(grid))
    assert list(t.index) == ["LA-DNN (profile)", "baseline (profile)", "covid_weight=1.0"]
    assert t.loc["LA-DNN (profile)", "auc"] == fmt_ci(*mean_ci(vgg[vgg["method"] == "ladnn"]["auc"]))
    sv = validity.seed_variation(runs)
    assert sv.loc[("vgg16", "D0", "ladnn"), "seeds"] == 3
    s = validity.seed_sentence(vgg)
    assert "vgg16 with top fine-tuning" in s and "EfficientNet-Lite0" not in s


def test_a_one_seed_ablation_is_read_against_the_seed_range(grid, tmp_path):
    runs = runs_table(grid)
    vgg = runs[runs["backbone"] == "vgg16"]
    make_run(tmp_path / "ablations" / "mean-s0", "ladnn", 0, "vgg16", finetune="top", loss_reduction="per_image")
    t = validity.ablation_table(vgg, validity.ablation_runs(tmp_path))
    row = t.loc["loss_reduction=per_image"]
    lad = vgg[vgg["method"] == "ladnn"]["auc"]
    assert row["seeds"] == 1 and row["reading"].startswith("one seed") and "overlap" not in row["reading"]
    assert f"({100 * lad.min():.1f} to {100 * lad.max():.1f})" in row["reading"]


def test_the_seed_figure_reads_ablations_against_their_own_backbone(grid, tmp_path):
    """The figure's reference runs are those of the ablations' backbone and dataset, as in the ablation table, even
    when the runs table starts with another backbone."""
    runs = runs_table(grid)
    make_run(tmp_path / "ablations" / "mean-s0", "ladnn", 0, "vgg16", finetune="top", loss_reduction="per_image")
    abl = validity.ablation_runs(tmp_path)
    first_other = pd.concat([runs[runs["backbone"] != "vgg16"], runs[runs["backbone"] == "vgg16"]])
    assert first_other["backbone"].iloc[0] != "vgg16"
    ax = validity.seed_figure(first_other, abl).axes[0]
    assert "vgg16 on D0" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["baseline", "LA-DNN", "loss_reduction=per_image"]


def test_recipe_names_what_the_profile_ran(grid):
    runs = runs_table(grid)
    assert recipe(runs) == "efficientnet_lite0 with top fine-tuning, vgg16 with top fine-tuning"
    assert "whole network" not in validity.seed_sentence(runs.assign(finetune="full"))
    assert "every seed draws its own" in validity.seed_sentence(runs.assign(finetune="full"))


def test_lesion_outputs_and_first_runs(grid):
    runs = runs_table(grid)
    first = maps.first_runs(runs)
    assert first.loc[("vgg16", "D0"), "ladnn"].endswith("vgg16-ladnn-s0")
    lg = maps.lesion_logits(first.loc[("vgg16", "D0"), "ladnn"])
    assert list(lg.columns) == [*LESIONS, "COVID label"] and len(lg) == N
    sep = maps.lesion_separation(first.loc[("vgg16", "D0"), "ladnn"])
    best = sep["AUC for COVID vs non-COVID"].idxmax()
    assert f"the {best} output separates" in maps.separation_sentence(sep)


def test_thresholded_auc_is_balanced_accuracy(grid):
    t = reproduction.thresholded_auc_table(runs_table(grid))
    assert np.allclose(t["AUC of 0/1 decisions (paper code)"], t["balanced accuracy"])


def test_rescored_subsets_match_scikit_learn(grid):
    runs = runs_table(grid).head(2)
    names = pd.Series([f"img{i:02d}.png" for i in range(0, N, 2)])
    t = validity.rescored(runs, {"even": names})
    pred = pd.read_csv(grid / runs["path"].iloc[0] / "predictions.csv")
    even = pred[pred[PRED.image].isin(names)]
    assert t["AUC (even)"].iloc[0] == pytest.approx(skm.roc_auc_score(even[PRED.y_true], even[PRED.p_covid]))
    assert t["n (even)"].iloc[0] == N // 2


def test_paper_tables_ship_with_the_package():
    t2 = paper_table(2)
    assert set(t2["backbone"]) == {"vgg16", "resnet18", "resnet50", "densenet121", "densenet169", "efficientnet_b0",
                                   "efficientnet_b1"}
    assert len(paper_table(1)) and len(paper_table(3))


def test_selection_table_and_sentence(tmp_path):
    rows = []
    # top 3 is best for LA-DNN alone, but top 2 is best over both methods: the shared criterion must pick top 2
    losses = {(2, "ladnn"): 0.50, (2, "baseline"): 0.40, (3, "ladnn"): 0.45, (3, "baseline"): 0.50}
    for (tb, method), loss in losses.items():
        for seed in (0, 1):
            for budget in (5, 10):
                rows.append({"backbone": "efficientnet_lite0", "top_blocks": tb, "lr": 2e-4, "views": 4, "tta": 1,
                             "head": "linear", "method": method, "seed": seed, "budget": budget,
                             "kept_epoch": min(budget, 4 + seed), "val_covid_loss": loss + seed / 100 - budget / 1000,
                             "val_auc": 0.8, "seconds_per_epoch": 3.0 * tb + seed})
    csv = tmp_path / "sel.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    sel = selection.selection_table(csv)
    best = sel.iloc[0]
    assert (best["top_blocks"], best["budget"], best["seeds"]) == (2, 10, 2)
    assert best["val_covid_loss"] == pytest.approx(0.445) and best["train_seconds"] == 60  # fastest run: 6 s/epoch
    assert best["loss LA-DNN"] == pytest.approx(0.495) and best["loss baseline"] == pytest.approx(0.395)
    assert best["kept_epochs"] == "4, 5, 4, 5" and best["both methods"]
    runs = pd.DataFrame({"backbone": ["efficientnet_lite0"], "finetune": ["top"], "top_blocks": [3], "lr": [2e-4],
                         "views": [4], "tta": [1], "head": ["linear"], "epochs": [5]})
    text = selection.selection_sentence(sel, runs)
    assert "Lowest with 5 epochs: efficientnet_lite0, the top 2 blocks" in text
    assert "This profile uses efficientnet_lite0, the top 3 blocks" in text and "LA-DNN 0.450" in text
    assert selection.selection_figure(sel, runs).axes[0].lines[-1].get_label() == "this profile"
    lonely = pd.DataFrame(rows[:4]).assign(method="ladnn")  # one method only: not a fair comparison
    lonely.to_csv(csv, index=False)
    assert not selection.selection_table(csv)["both methods"].any()
    shipped = selection.selection_table()  # the CSV in the installed package: every candidate trained for both methods
    assert len(shipped) > 0 and shipped["both methods"].all()


def test_mean_ci_is_a_t_interval():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / np.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert m == 2 and lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    assert np.isnan(mean_ci([0.5])[1])
    assert fmt_ci(0.5, float("nan"), float("nan")) == "50.0" and fmt_ci(0.5, 0.4, 0.6) == "50.0 [40.0, 60.0]"


def _transfer(rng, n=160, seeds=(0,)):
    """A synthetic transfer table: protocol (c) with 4 folds of 40 images in 40 groups (validation and test parts)
    and the official run's parts; 'none+AdaBN' ranks images better than 'none' everywhere, and LA-DNN better than
    the baseline."""
    rows = []
    y = np.tile([0, 1], n // 2)
    group = np.array([f"g{k // 4}" for k in range(n)])  # 40 groups of 4 images, both classes in each
    fold = np.array([int(g[1:]) % 4 for g in group])
    coll = np.where(y == 0, np.array(["A", "B", "C", "D"])[fold], "papers")
    for seed in seeds:
        for adabn, sep in ((False, 0.3), (True, 2.5)):
            for m, gain in (("ladnn", 1.0), ("baseline", 0.0)):
                for prot, part in (("collection", "val"), ("collection", "test"), ("official", "test"),
                                   ("official", "D1")):
                    p = 1 / (1 + np.exp(-((sep + gain) * (y - 0.5) + rng.normal(0, 1, n))))
                    rows.append(pd.DataFrame({"candidate": "none", "adabn": adabn, "method": m, "protocol": prot,
                                              "fold": fold if prot == "collection" else -1, "seed": seed,
                                              "part": part, PRED.image: [f"i{k}" for k in range(n)],
                                              PRED.y_true: y, PRED.p_covid: p, PRED.group: group,
                                              PRED.collection: coll, PRED.patient: group}))
    return pd.concat(rows, ignore_index=True)


def test_transfer_choice_tables_and_paired_differences():
    from ladnn.report import unseen

    t = unseen.with_adabn(_transfer(np.random.default_rng(0)))
    sel = unseen.selection(t)
    assert list(sel.index) == ["none+AdaBN", "none"] and sel.shape[1] == 5  # mean + 4 folds
    assert unseen.chosen(t) == "none+AdaBN" == unseen.after_pipeline(t)
    tab = unseen.protocol_table(t, ["none", "none+AdaBN"], n_boot=200)
    assert unseen.PROTOCOL_NAMES["collection"] not in tab.index.get_level_values(0)  # (c) is never pooled
    held = [i for i in tab.index if i[0].startswith("(c) held out: ")]
    assert len(held) == 4 * 2 * 2  # per held-out collection, method and pipeline
    c = tab.loc[("(c) held out: A", "LA-DNN", "none+AdaBN")]
    fold = unseen.parts(t, "none+AdaBN", "ladnn")["collection"]
    fold = fold[fold[PRED.collection].isin(["A", "papers"]) & (fold[PRED.fold] == 0)]
    assert c["n"] == 40 and c["clusters"] == 10 and c["lo"] <= c["AUC"] <= c["hi"]
    assert c["AUC"] == skm.roc_auc_score(fold[PRED.y_true], fold[PRED.p_covid])
    ci = bootstrap_ci(fold[PRED.y_true], fold[PRED.p_covid], fold[PRED.group], n_boot=200)["auc"]
    assert [c["lo"], c["hi"]] == ci  # the interval of the clustered bootstrap, seed 0, exactly
    ct = unseen.collection_tables(t, n_boot=200)["LA-DNN"]
    assert list(ct["AUC"]) == sorted(ct["AUC"]) and set(ct["held-out collection"]) == {"A", "B", "C", "D"}
    cmp = unseen.comparisons(t, "none+AdaBN", n_boot=200)
    d = cmp.loc[("(c) held out: A", "none+AdaBN - none, baseline")]
    assert d["AUC difference"] > 0.2 and d["lo"] > 0 and d["seeds"] == 1
    assert d["claim"].startswith("no difference shown (1 seed")  # one seed never makes a claim
    assert cmp.attrs["family"] == cmp["p"].notna().sum() and (cmp["p Holm"] >= cmp["p"]).all()
    same = unseen.paired(t, "D1", ("none", "ladnn"), ("none", "ladnn"), n_boot=100)
    assert same["auc_diff"] == 0
    text = unseen.verdict(tab, cmp, sel, "none+AdaBN")
    assert "is **none+AdaBN**" in text and "D1, none+AdaBN" in text and "Holm-adjusted" in text
    keys = {r: (unseen.PROTOCOL_NAMES[r], "LA-DNN", "none+AdaBN") for r in unseen.MOONSHOT}
    reached = [r for r, k in keys.items() if k in tab.index and tab.loc[k, "lo"] >= unseen.MOONSHOT[r]]
    assert ("{cite}`nguyen2021generalisation`" in text) == (not reached)
    sub = subset_aucs(unseen.parts(t, "none", "ladnn")["collection"], 100)
    assert sub.shape[0] == 9  # all, 4 x 2
    p = unseen.parts(t, "none", "ladnn")["collection"]
    only_a = p[(p[PRED.y_true] == 1) | (p[PRED.collection] == "A")]
    assert sub.loc["only A", "AUC"] == skm.roc_auc_score(only_a[PRED.y_true], only_a[PRED.p_covid])


def test_a_difference_is_claimed_from_three_seeds_after_holm():
    from ladnn.metrics import holm
    from ladnn.report import unseen

    t = unseen.with_adabn(_transfer(np.random.default_rng(1), seeds=(0, 1, 2)))
    cmp = unseen.comparisons(t, "none+AdaBN", n_boot=300)
    d = cmp.loc[("(a) official split", "none+AdaBN - none, LA-DNN")]
    assert d["seeds"] == 3 and d["p Holm"] < 0.05 and d["claim"] == "none+AdaBN scores higher"
    shown = unseen.for_page(cmp)
    assert "lo" not in shown and "AUC difference [95% interval]" in shown and (shown.loc[cmp["p"].isna(), "p"] == "").all()
    assert shown.loc[cmp["detectable"].notna(), "detectable"].tolist() == [
        f"{v:.3f}" for v in cmp.loc[cmp["detectable"].notna(), "detectable"]]
    assert shown.loc[cmp["p"].notna(), "p"].tolist() == [f"{v:.3f}" for v in cmp.loc[cmp["p"].notna(), "p"]]
    tab = pd.DataFrame({"AUC": [0.5, 0.8], "lo": [np.nan, 0.7], "hi": [np.nan, 0.9], "n": [6, 100], "clusters": [6, 50],
                        "exact p": [0.6, np.nan], "AUC needed": [np.nan, np.nan], "resampled": ["patients"] * 2})
    shown = unseen.for_page(tab)  # a set of 6 patients: no interval, and no AUC it could tell from chance
    assert shown["AUC needed"].tolist() == ["none possible", ""] and shown["lo"].tolist() == ["", "0.700"]
    assert shown["n"].tolist() == [6, 100] and "resampled" not in shown
    assert np.allclose(cmp["p Holm"], holm(cmp["p"]), equal_nan=True)
    assert holm([0.01, 0.04, 0.03, np.nan]).tolist()[:3] == pytest.approx([0.03, 0.06, 0.06])


def test_pipeline_names_round_trip():
    from ladnn.report.unseen import PIPELINES, pipeline_name

    for name, (pre, aug, ft) in PIPELINES.items():
        assert pipeline_name(pre, aug, ft) == name
        Config(preprocess=pre, augment=aug, finetune=ft)  # every candidate is a valid config
    assert pipeline_name(["clahe", "jpeg"], "strong") == "clahe+jpeg / strong augmentation / top"
