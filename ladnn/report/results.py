"""The Results and Training-run chapters: the verdict, the paper's Table 2 and Figure 4 from the runs with the paper's
numbers beside ours, seed ensembles, and the paired comparison of LA-DNN with the baseline (per seed and pooled).
The lesion task's Table 3 is in `ladnn.report.lesions`."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn import metrics as skm

from ladnn.metrics import mean_ci, paired_difference, paired_test
from ladnn.report import METHOD_NAMES, METRICS, fmt_ci, paper_table
from ladnn.rundir import FinishedRun
from ladnn.scores import PRED, covid_scores


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


def seed_predictions(runs: pd.DataFrame, backbone: str, dataset: str, method: str) -> tuple[pd.DataFrame, list]:
    """The test predictions of one backbone, dataset and method, a table per seed (sorted by seed), checked to hold
    the same images in the same order with their resampling clusters."""
    g = runs[(runs["backbone"] == backbone) & (runs["dataset"] == dataset) & (runs["method"] == method)]
    preds = [FinishedRun(p).predictions for p in g.sort_values("seed")["path"]]
    for p in preds[1:]:
        if not p[PRED.image].equals(preds[0][PRED.image]):
            raise ValueError(f"{backbone}/{dataset}/{method}: seeds were tested on different images")
    if preds and PRED.group not in preds[0]:
        raise ValueError(f"{g['path'].iloc[0]}: predictions.csv has no '{PRED.group}' column (a run written before "
                         "clustered intervals existed): train it again")
    return preds[0] if preds else pd.DataFrame(), preds


def ensemble_table(runs: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """Per backbone, dataset and method: each metric as the mean over seeds and as the seed ensemble (the mean of
    the seeds' COVID probabilities) with its 95% interval from the patient-clustered bootstrap
    (`ladnn.scores.covid_scores`), in percent."""
    rows = []
    for (bb, ds, meth), g in runs.groupby(["backbone", "dataset", "method"]):
        first, preds = seed_predictions(runs, bb, ds, meth)
        ensemble = first.assign(**{PRED.p_covid: np.mean([q[PRED.p_covid].to_numpy() for q in preds], axis=0)})
        s = covid_scores(ensemble, PRED.group, n_boot)
        m, ci = s["covid"], s["covid_ci95"]
        for metric in ("auc", "sensitivity", "f1", "accuracy"):
            rows.append({"backbone": bb, "dataset": ds, "method": METHOD_NAMES[meth], "metric": metric,
                         "seeds": len(g), "mean over seeds": fmt_ci(*mean_ci(g[metric])),
                         "ensemble of the seeds": fmt_ci(m[metric], *ci[metric]), "ensemble": m[metric]})
    return pd.DataFrame(rows)


def pooled_difference(runs: pd.DataFrame, n_boot: int = 4000) -> pd.DataFrame:
    """LA-DNN minus baseline test AUC, averaged over seeds, per backbone and dataset: the two-level bootstrap of
    `ladnn.metrics.paired_difference` (whole patients or source documents within each class, and the seeds), with the
    smallest difference this test set detects with 80% power."""
    rows = []
    for (bb, ds), g in runs.groupby(["backbone", "dataset"]):
        if not {"baseline", "ladnn"} <= set(g["method"]):
            continue
        first, lad = seed_predictions(runs, bb, ds, "ladnn")
        _, base = seed_predictions(runs, bb, ds, "baseline")
        if len(lad) != len(base) or not first[PRED.image].equals(base[0][PRED.image]):
            raise ValueError(f"{bb}/{ds}: the methods have different seeds or test images")
        d = paired_difference(first[PRED.y_true], [q[PRED.p_covid] for q in lad], [q[PRED.p_covid] for q in base],
                              first[PRED.group], n_boot=n_boot)
        rows.append({"backbone": bb, "dataset": ds, **d, "positives": int(first[PRED.y_true].sum())})
    return pd.DataFrame(rows)


def _difference_columns(t: pd.DataFrame) -> dict:
    """The AUC difference, its interval and bootstrap p-value, formatted for people."""
    return {"AUC difference (LA-DNN - baseline)": t["auc_diff"].map("{:+.3f}".format),
            "95% interval": t["auc_diff_ci"].map(lambda c: f"[{c[0]:+.3f}, {c[1]:+.3f}]"),
            "p (bootstrap)": t["p_auc"].round(3)}


def pooled_table(t: pd.DataFrame) -> pd.DataFrame:
    """The pooled estimate for people."""
    if t.empty:
        return t
    return pd.DataFrame({"backbone": t["backbone"], "dataset": t["dataset"], "seed pairs": t["pairs"],
                         **_difference_columns(t), "detectable with 80% power": t["detectable_80"].round(3),
                         "test images": t["n"], "clusters": t["clusters"]}).set_index(["backbone", "dataset"])


def plot_curves(runs: pd.DataFrame, backbone: str | None = None, dataset: str | None = None):
    """Figure 4: ROC and precision-recall curves, baseline vs LA-DNN, one thin line per seed, for one backbone and
    dataset (the first in the table unless named); the title says which."""
    backbone = backbone or runs["backbone"].iloc[0]
    dataset = dataset or runs["dataset"].iloc[0]
    runs = runs[(runs["backbone"] == backbone) & (runs["dataset"] == dataset)]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4.6))
    for color, meth in (("C0", "baseline"), ("C3", "ladnn")):
        for _, r in runs[runs["method"] == meth].iterrows():
            p = FinishedRun(r["path"]).predictions
            fpr, tpr, _ = skm.roc_curve(p[PRED.y_true], p[PRED.p_covid])
            prec, rec, _ = skm.precision_recall_curve(p[PRED.y_true], p[PRED.p_covid])
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
        pa, pb = FinishedRun(a["path"].iloc[0]).predictions, FinishedRun(b["path"].iloc[0]).predictions
        if not (pa[PRED.image] == pb[PRED.image]).all():
            raise ValueError(f"runs {k} were tested on different images")
        if PRED.group not in pa:
            raise ValueError(f"{a['path'].iloc[0]}: predictions.csv has no '{PRED.group}' column: train it again")
        t = paired_test(pa[PRED.y_true], pa[PRED.p_covid], pb[PRED.p_covid], pa[PRED.group], n_boot=n_boot,
                        seed=int(k[2]))
        rows.append({**dict(zip(key, k)), **t})
    return pd.DataFrame(rows)


def paired_table(t: pd.DataFrame) -> pd.DataFrame:
    """The paired tests for people: the AUC difference with its interval, both p-values, rounded."""
    if t.empty:
        return t
    return pd.DataFrame({"backbone": t["backbone"], "dataset": t["dataset"], "seed": t["seed"],
                         **_difference_columns(t), "p (McNemar)": t["p_mcnemar"].round(3), "test images": t["n"]})


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
    r = FinishedRun(run)
    h, best = r.history, r.metrics.run.best_epoch
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
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
    """One run's test metrics with their 95% intervals (bootstrap over whole patients or source documents), rounded."""
    m = FinishedRun(run).metrics
    rows = [{"metric": k, "value": round(getattr(m.covid, k), 3),
             "95% interval (patient-clustered bootstrap)": "[{:.3f}, {:.3f}]".format(*getattr(m.covid_ci95, k))}
            for k in ("auc", "ap", "sensitivity", "precision", "f1", "accuracy")]
    return pd.DataFrame(rows).set_index("metric")


def how_computed(run: str | Path) -> str:
    """One line: where and in what precision the run computed (metrics.json's `run.precision`)."""
    info = FinishedRun(run).metrics.run
    p = info.precision
    if not p:
        return f"{info.seconds} s on {info.device} (precision not recorded: a run written before it was)"
    gpu = p["device"].startswith("cuda")
    det = (f"deterministic algorithms {'on' if p.get('deterministic_algorithms') else 'off'}, cuDNN autotuner "
           f"{'on' if p.get('cudnn_benchmark') else 'off'}") if gpu else \
        f"{p.get('threads')} CPU thread{'' if p.get('threads') == 1 else 's'}"
    return (f"{info.seconds} s on {p['device']} ({p['name']}{', CUDA ' + str(p['cuda']) if gpu else ''}): "
            f"{p['dtype']}, TF32 {'on' if p['tf32'] else 'off'}, {det}")


def config_table(run: str | Path) -> pd.DataFrame:
    """The run's Config, one row per field (values as text)."""
    return pd.Series(FinishedRun(run).config.to_dict(), name="value").astype(str).to_frame()


def paper_claim() -> dict:
    """The paper's Table 2 AUC gains of LA-DNN over the baseline, per backbone and dataset (fractions, not %)."""
    t = paper_table(2).query("metric == 'auc'").pivot_table(index=["backbone", "dataset"], columns="method",
                                                             values="percent")
    gain = (t["ladnn"] - t["baseline"]) / 100
    d0 = t.xs("D0", level="dataset")
    return {"b0": (d0.loc["efficientnet_b0", "baseline"] / 100, d0.loc["efficientnet_b0", "ladnn"] / 100),
            "best_d0": (d0["ladnn"].idxmax(), d0["ladnn"].max() / 100), "gain": gain,
            "d0d1_not_up": [b for (b, ds), g in gain.items() if ds == "D0+D1" and g <= 0]}


def verdict(pooled: pd.DataFrame, ensembles: pd.DataFrame, lesion_text: str) -> str:
    """The Results chapter's opening: the paper's claim, our pooled estimate (`pooled_difference`) with its interval
    and the test set's power, the seed ensembles (`ensemble_table`), whether the lesion head learned more than a
    constant (`lesions.lesion_sentence`), and what the paper's numbers would need. Markdown; every number computed."""
    c = paper_claim()
    b0, b1 = c["b0"]
    g = c["gain"]
    out = [f"**The paper's claim.** The lesion task raises the D0 test AUC of EfficientNet-b0 from {b0:.3f} to "
           f"{b1:.3f} ({b1 - b0:+.3f}); its best D0 result is {c['best_d0'][1]:.3f} ({c['best_d0'][0]}). Over its "
           f"seven backbones the gain is {g.xs('D0', level='dataset').min():+.3f} to "
           f"{g.xs('D0', level='dataset').max():+.3f} on D0 and {g.xs('D0+D1', level='dataset').min():+.3f} to "
           f"{g.xs('D0+D1', level='dataset').max():+.3f} on D0+D1"
           + (f" ({', '.join(c['d0d1_not_up'])} not up)" if c["d0d1_not_up"] else "")
           + ". Each number is one training run, reported without an interval."]
    for _, r in pooled.iterrows():
        lo, hi = r["auc_diff_ci"]
        e = ensembles[(ensembles["backbone"] == r["backbone"]) & (ensembles["dataset"] == r["dataset"])
                      & (ensembles["metric"] == "auc")].set_index("method")["ensemble"]
        seeds = ", ".join(f"{d:+.3f}" for d in r["per_pair"])
        detect = r["detectable_80"]
        out.append(
            f"**Ours ({r['backbone']} on {r['dataset']}).** LA-DNN minus baseline test AUC, averaged over "
            f"{r['pairs']} seed{'s' if r['pairs'] != 1 else ''}: {r['auc_diff']:+.3f} (95% interval {lo:+.3f} to {hi:+.3f}, p = {r['p_auc']:.2f}), "
            f"from a bootstrap that draws whole patients or source documents ({r['clusters']} clusters among "
            f"{r['n']} test images) within each class, and the seeds. Per seed: {seeds}. The seed ensembles score "
            f"AUC {e.get('baseline', float('nan')):.3f} (baseline) and {e.get('LA-DNN', float('nan')):.3f} "
            f"(LA-DNN). This test set detects a difference of {detect:.3f} with 80% power; the paper's "
            f"EfficientNet-b0 gain of {b1 - b0:+.3f} is "
            + ("smaller than that: one run on these 203 images could not have shown it reliably."
               if b1 - b0 < detect else "larger than that, so a gain of its size would likely have been seen here.")
            + (" Our interval excludes zero." if lo > 0 or hi < 0 else
               " Our interval includes zero: we find no evidence that lesion attention changes the AUC here"
               + ("; it also excludes the paper's gain." if hi < b1 - b0 else ", and it cannot rule out a gain the "
                  "size of the paper's.")))
    out.append("**The lesion head.** " + lesion_text)
    d0_b0 = b1 - b0
    spread = max((abs(d) for r in pooled["per_pair"] for d in r), default=float("nan"))
    out.append(
        "**What would have to be true for the paper's numbers.** A gain of "
        f"{d0_b0:+.3f} from one run per method is believable if the effect is real and larger than the seed-to-seed "
        f"spread of a single run's difference (ours reach at most {spread:.3f} in size), or if the paper's runs were "
        "luckier than average. "
        "The paper's code also differs from its text in ways that move both methods (see the Reproduction notes): "
        "its AUC was computed from 0/1 decisions, and two lesion labels were read as 0. For the gain to come from "
        "the lesion task, the lesion head must learn the lesions; the paragraph above says whether ours did.")
    return "\n\n".join(out)
