"""The Results and Training-run chapters: the paper's Tables 2 and 3 and Figure 4 from the runs, one table with the
paper's numbers beside ours, and the paired comparison of LA-DNN with the baseline."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from sklearn import metrics as skm

from ladnn.metrics import mean_ci, paired_test
from ladnn.report import METHOD_NAMES, METRICS, fmt_ci, paper_table
from ladnn.rundir import IMAGE, P_COVID, Y_TRUE, Run


def table2(runs: pd.DataFrame) -> pd.DataFrame:
    """Ours (mean [95% interval] over seeds, %) beside the paper's Table 2, per metric, backbone, dataset, method."""
    paper = paper_table(2)
    rows = []
    for (bb, ds, meth), g in runs.groupby(["backbone", "dataset", "method"]):
        for metric in METRICS:
            m, lo, hi = mean_ci(g[metric])
            p = paper.query("metric == @metric and backbone == @bb and dataset == @ds and method == @meth")["percent"]
            rows.append({"metric": metric, "backbone": bb, "dataset": ds, "method": meth, "seeds": len(g),
                         "ours": fmt_ci(m, lo, hi), "ours_mean": 100 * m,
                         "paper": float(p.iloc[0]) if len(p) else None})
    return pd.DataFrame(rows)


def table2_with_paper(runs: pd.DataFrame) -> pd.DataFrame:
    """One table for people: a row per backbone, dataset and metric (ours first, then the paper's other backbones),
    and for each method our mean [95% interval] over seeds beside the paper's single run, in percent."""
    ours = table2(runs)
    paper = paper_table(2).rename(columns={"percent": "paper"})
    paper = paper[~paper.set_index(["backbone", "dataset"]).index.isin(ours.set_index(["backbone", "dataset"]).index)]
    both = pd.concat([ours[["metric", "backbone", "dataset", "method", "ours", "paper"]],
                      paper[["metric", "backbone", "dataset", "method", "paper"]].assign(ours="")])
    both["paper"] = both["paper"].map(lambda p: "" if pd.isna(p) else f"{p:.1f}")
    t = both.pivot_table(index=["backbone", "dataset", "metric"], columns="method", values=["ours", "paper"],
                         aggfunc="first", sort=False)
    t = t.swaplevel(axis=1)[[(m, s) for m in METHOD_NAMES if m in both["method"].values for s in ("ours", "paper")]]
    t.columns = pd.MultiIndex.from_tuples([(METHOD_NAMES[m], s) for m, s in t.columns])
    order = {m: i for i, m in enumerate(METRICS)}
    mine = ours["backbone"].unique().tolist()
    return t.sort_index(key=lambda ix: ix.map(order) if ix.name == "metric" else
                        ix.map(lambda b: (b not in mine, b)) if ix.name == "backbone" else ix).fillna("")


def mean_auc_sentence(runs: pd.DataFrame) -> str:
    """The mean test AUC of each method over seeds, per backbone and dataset, and their difference."""
    t = table2(runs)
    parts = []
    for (bb, ds), g in t[t["metric"] == "auc"].groupby(["backbone", "dataset"]):
        a = g.set_index("method")["ours_mean"]
        if {"baseline", "ladnn"} <= set(a.index):
            parts.append(f"{bb} on {ds}: baseline {a['baseline']:.1f}%, LA-DNN {a['ladnn']:.1f}% (a difference of "
                         f"{a['ladnn'] - a['baseline']:+.1f} points)")
    return ("Mean test AUC over seeds: " + "; ".join(parts) + ".") if parts else \
        "No backbone and dataset has runs of both methods."


def table3(runs: pd.DataFrame) -> pd.DataFrame:
    """LA-DNN's lesion metrics per backbone and dataset (mean [interval] over seeds); the paper's Table 3 in attrs."""
    lad = runs[runs["method"] == "ladnn"]
    if "hamming_loss" not in lad:
        return pd.DataFrame()
    rows = []
    for (bb, ds), g in lad.groupby(["backbone", "dataset"]):
        acc, h = mean_ci(g["lesion_label_accuracy"]), mean_ci(g["hamming_loss"])
        rows.append({"backbone": bb, "dataset": ds, "seeds": len(g), "label accuracy % (ours)": fmt_ci(*acc),
                     "Hamming loss (ours)": fmt_ci(*h, scale=1, digits=3),
                     "exact match % (ours)": f"{100 * g['lesion_exact_match'].mean():.1f}"})
    out = pd.DataFrame(rows)
    out.attrs["paper"] = paper_table(3)
    return out


def plot_curves(runs: pd.DataFrame, backbone: str | None = None, dataset: str | None = None):
    """Figure 4: ROC and precision-recall curves, baseline vs LA-DNN, one thin line per seed, for one backbone and
    dataset (the first in the table unless named); the title says which."""
    backbone = backbone or runs["backbone"].iloc[0]
    dataset = dataset or runs["dataset"].iloc[0]
    runs = runs[(runs["backbone"] == backbone) & (runs["dataset"] == dataset)]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.6))
    for color, meth in (("C0", "baseline"), ("C3", "ladnn")):
        for _, r in runs[runs["method"] == meth].iterrows():
            p = Run(r["path"]).predictions
            fpr, tpr, _ = skm.roc_curve(p[Y_TRUE], p[P_COVID])
            prec, rec, _ = skm.precision_recall_curve(p[Y_TRUE], p[P_COVID])
            lab = f"{METHOD_NAMES[meth]} (seed {r['seed']}, AUC {r['auc']:.3f})"
            ax[0].plot(fpr, tpr, color=color, alpha=0.8, lw=1.2, label=lab)
            ax[1].plot(rec, prec, color=color, alpha=0.8, lw=1.2, label=f"{lab[:-1]}, AP {r['ap']:.3f})")
    ax[0].plot([0, 1], [0, 1], "k:", lw=0.8)
    ax[0].set(xlabel="false positive rate", ylabel="sensitivity (true positive rate)", title="(a) ROC")
    ax[1].set(xlabel="recall (sensitivity)", ylabel="precision", title="(b) precision-recall")
    for a in ax:
        a.legend(fontsize=7, loc="lower right" if a is ax[0] else "lower left")
    fig.suptitle(f"{backbone} on {dataset}", fontsize=10)
    fig.tight_layout()
    return fig


def paired_tests(runs: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """LA-DNN against the baseline on the same test images, for each backbone, dataset and seed."""
    rows = []
    key = ["backbone", "dataset", "seed"]
    for k, g in runs.groupby(key):
        a, b = g[g["method"] == "ladnn"], g[g["method"] == "baseline"]
        if len(a) != 1 or len(b) != 1:
            continue
        pa, pb = Run(a["path"].iloc[0]).predictions, Run(b["path"].iloc[0]).predictions
        if not (pa[IMAGE] == pb[IMAGE]).all():
            raise ValueError(f"runs {k} were tested on different images")
        t = paired_test(pa[Y_TRUE], pa[P_COVID], pb[P_COVID], n_boot=n_boot, seed=int(k[2]))
        rows.append({**dict(zip(key, k)), **t})
    return pd.DataFrame(rows)


def paired_table(t: pd.DataFrame) -> pd.DataFrame:
    """The paired tests for people: the AUC difference with its interval, both p-values, rounded."""
    if t.empty:
        return t
    return pd.DataFrame({"backbone": t["backbone"], "dataset": t["dataset"], "seed": t["seed"],
                         "AUC difference (LA-DNN - baseline)": t["auc_diff"].map("{:+.3f}".format),
                         "95% interval": t["auc_diff_ci"].map(lambda c: f"[{c[0]:+.3f}, {c[1]:+.3f}]"),
                         "p (bootstrap)": t["p_auc"].round(2), "p (McNemar)": t["p_mcnemar"].round(2),
                         "test images": t["n"]})


def paired_sentence(t: pd.DataFrame) -> str:
    """The paired tests in plain words."""
    if t.empty:
        return "No pair of baseline and LA-DNN runs on the same test images was found."
    parts = []
    for _, r in t.iterrows():
        lo, hi = r["auc_diff_ci"]
        verdict = ("a difference that the bootstrap does not explain away" if r["p_auc"] < 0.05 else
                   "no evidence of a difference")
        parts.append(f"{r['backbone']} on {r['dataset']}, seed {r['seed']}: LA-DNN minus baseline AUC = "
                     f"{r['auc_diff']:+.3f} (95% interval {lo:+.3f} to {hi:+.3f}, p = {r['p_auc']:.2f}; McNemar "
                     f"p = {r['p_mcnemar']:.2f}), {verdict}")
    n_sig = int((t["p_auc"] < 0.05).sum())
    return (f"Over {len(t)} paired comparison(s) the mean AUC difference is {t['auc_diff'].mean():+.3f}; {n_sig} of "
            f"{len(t)} reach p < 0.05. " + "; ".join(parts) + ".")


def plot_history(run: str | Path):
    """Training loss and validation metrics per epoch; the kept epoch dotted."""
    r = Run(run)
    h, best = r.history, r.metrics["run"]["best_epoch"]
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    ax[0].plot(h["epoch"], h["train_loss"], "o-", label="training loss (LA-DNN loss)")
    ax[0].plot(h["epoch"], h["val_covid_loss"], "s-", label="validation COVID loss")
    ax[1].plot(h["epoch"], h["val_auc"], "o-", label="validation AUC")
    ax[1].plot(h["epoch"], h["val_accuracy"], "s-", label="validation accuracy")
    for a in ax:
        a.axvline(best, color="grey", ls=":", label=f"kept epoch ({best})")
        a.set_xlabel("epoch")
        a.legend(fontsize=8)
    fig.tight_layout()
    return fig


def run_summary(run: str | Path) -> pd.DataFrame:
    """One run's test metrics with their 95% bootstrap intervals, rounded."""
    m = Run(run).metrics
    rows = [{"metric": k, "value": round(m["covid"][k], 3),
             "95% bootstrap interval": "" if m["covid_ci95"].get(k) is None else
             "[{:.3f}, {:.3f}]".format(*m["covid_ci95"][k])} for k in ("auc", "ap", "sensitivity", "precision", "f1",
                                                                         "accuracy")]
    return pd.DataFrame(rows).set_index("metric")


def config_table(run: str | Path) -> pd.DataFrame:
    return pd.Series(Run(run).config.to_dict(), name="value").astype(str).to_frame()
