"""The Results and Training-run chapters: the verdict, the paper's Table 2 and Figure 4 from the runs with the paper's
numbers beside ours, seed ensembles, and the paired comparison of LA-DNN with the baseline (per seed and pooled).
The lesion task's Table 3 is in `ladnn.report.lesions`."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn import metrics as skm

from ladnn.config import shown_value
from ladnn.metrics import auc, mean_ci, paired_difference, paired_test
from ladnn.report import METHOD_NAMES, METRICS, fmt_ci, paper_table, plural
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
    """Our Table 2 for people: a row per backbone, dataset and metric of ours, and for each method our mean [95%
    interval] over seeds beside the paper's single run, in percent. The paper's number is that of the same backbone
    where the paper trained it, else its EfficientNet-b0's (our EfficientNet-Lite0's closest relative); the index
    level "paper's backbone" says which. `paper_table2` has the paper's other backbones."""
    ours = table2(runs)
    paper = paper_table(2)
    named = set(paper["backbone"])
    ours["paper's backbone"] = ours["backbone"].map(lambda b: b if b in named else "efficientnet_b0")
    look = paper.set_index(["backbone", "dataset", "method", "metric"])["percent"]
    ours["paper"] = [look.get((pb, ds, m, k)) for pb, ds, m, k in
                     ours[["paper's backbone", "dataset", "method", "metric"]].itertuples(index=False)]
    ours["paper"] = ours["paper"].map(lambda p: "" if p is None or pd.isna(p) else f"{p:.1f}")
    t = ours.pivot_table(index=["backbone", "dataset", "paper's backbone", "metric"], columns="method",
                         values=["ours", "paper"], aggfunc="first", sort=False)
    t = t.swaplevel(axis=1)[[(m, s) for m in METHOD_NAMES if m in ours["method"].values for s in ("ours", "paper")]]
    t.columns = pd.MultiIndex.from_tuples([(METHOD_NAMES[m], s) for m, s in t.columns])
    order = {m: i for i, m in enumerate(METRICS)}
    return t.sort_index(key=lambda ix: ix.map(order) if ix.name == "metric" else ix).fillna("")


def paper_table2() -> pd.DataFrame:
    """The paper's Table 2 as it reports it (percent, one run each): a row per backbone and metric, a column per
    dataset and method."""
    t = paper_table(2).pivot_table(index=["backbone", "metric"], columns=["dataset", "method"], values="percent")
    t = t[[(d, m) for d in ("D0", "D0+D1") for m in METHOD_NAMES if (d, m) in t.columns]]
    t.columns = pd.MultiIndex.from_tuples([(d, METHOD_NAMES[m]) for d, m in t.columns])
    order = {m: i for i, m in enumerate(METRICS)}
    return t.sort_index(key=lambda ix: ix.map(order) if ix.name == "metric" else ix).round(1)


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


def paired_seeds(runs: pd.DataFrame, bb: str, ds: str) -> tuple[pd.DataFrame, list, list]:
    """One backbone and dataset's test predictions for a paired comparison: the first LA-DNN seed's table (labels,
    groups) and each method's seeds, which must be as many and scored on the same test images."""
    first, lad = seed_predictions(runs, bb, ds, "ladnn")
    _, base = seed_predictions(runs, bb, ds, "baseline")
    if len(lad) != len(base) or not first[PRED.image].equals(base[0][PRED.image]):
        raise ValueError(f"{bb}/{ds}: the methods have different seeds or test images")
    return first, lad, base


def pooled_difference(runs: pd.DataFrame, n_boot: int = 4000) -> pd.DataFrame:
    """LA-DNN minus baseline test AUC, averaged over seeds, per backbone and dataset: the two-level bootstrap of
    `ladnn.metrics.paired_difference` (whole patients or source documents within each class, and the seeds), with the
    smallest difference this test set detects with 80% power."""
    rows = []
    for (bb, ds), g in runs.groupby(["backbone", "dataset"]):
        if not {"baseline", "ladnn"} <= set(g["method"]):
            continue
        first, lad, base = paired_seeds(runs, bb, ds)
        d = paired_difference(first[PRED.y_true], [q[PRED.p_covid] for q in lad], [q[PRED.p_covid] for q in base],
                              first[PRED.group], n_boot=n_boot)
        rows.append({"backbone": bb, "dataset": ds, **d, "positives": int(first[PRED.y_true].sum())})
    return pd.DataFrame(rows)


def headline(runs: pd.DataFrame, n_boot: int = 4000) -> pd.DataFrame:
    """The book's headline, one small table: the paper's EfficientNet-b0 on D0 (one run per method) beside ours (the
    mean over seeds of the first backbone on D0), in AUC and in balanced accuracy, and LA-DNN minus baseline in
    each with its 95% interval (`paired_difference`; on 0/1 decisions it gives the balanced accuracy's, since the
    AUC of two-valued scores is the balanced accuracy). The paper's "AUC" is a balanced accuracy (Reproduction
    notes, section 1), so its AUC row is empty."""
    from sklearn.metrics import balanced_accuracy_score

    d0 = runs[runs["dataset"] == "D0"]
    bb = d0["backbone"].iloc[0]
    first, lad, base = paired_seeds(d0, bb, "D0")
    y, g = first[PRED.y_true], first[PRED.group]

    def mean_of(preds, score):
        return float(np.mean([score(q[PRED.p_covid]) for q in preds]))

    def bacc(p):
        return balanced_accuracy_score(y, p >= 0.5)

    def ours_diff(f):
        d = paired_difference(y, [f(q[PRED.p_covid]) for q in lad], [f(q[PRED.p_covid]) for q in base], g,
                              n_boot=n_boot)
        return f"{d['auc_diff']:+.3f} [{d['auc_diff_ci'][0]:+.3f}, {d['auc_diff_ci'][1]:+.3f}]"

    paper = paper_table(2).query("backbone == 'efficientnet_b0' and dataset == 'D0' and metric == 'auc'")
    pb, pl = (float(paper.query("method == @m")["percent"].iloc[0]) / 100 for m in ("baseline", "ladnn"))
    rows = {
        "baseline AUC": ("not reported", f"{mean_of(base, lambda p: auc(y, p)):.3f}"),
        "LA-DNN AUC": ("not reported", f"{mean_of(lad, lambda p: auc(y, p)):.3f}"),
        "LA-DNN - baseline, AUC [95%]": ("not reported", ours_diff(lambda p: p)),
        "baseline balanced accuracy": (f"{pb:.3f}", f"{mean_of(base, bacc):.3f}"),
        "LA-DNN balanced accuracy": (f"{pl:.3f}", f"{mean_of(lad, bacc):.3f}"),
        "LA-DNN - baseline, balanced accuracy [95%]": (f"{pl - pb:+.3f} (no interval)",
                                                        ours_diff(lambda p: (p >= 0.5).astype(float))),
    }
    cols = ["paper: EfficientNet-b0, one run each", f"ours: {bb}, mean of {len(lad)} seeds"]
    return pd.DataFrame.from_dict(rows, orient="index", columns=cols).rename_axis("D0 test split")


def recipe_sentence(runs: pd.DataFrame, d1_found: int, d1_of_paper: int) -> str:
    """How our recipe differs from the paper's, and what cannot be tested (Markdown; numbers from the runs' config
    and the data check)."""
    c = FinishedRun(runs[runs["dataset"] == "D0"]["path"].iloc[0]).config
    trained = {"full": "the whole network", "head": "the head only",
               "top": f"its top {c.top_blocks} blocks and the head, on cached activations"}[c.finetune]
    return (f"**How the recipes differ.** The paper fine-tuned the whole EfficientNet-b0 for 15 epochs (Adam, learning "
            f"rate 5e-5), one run per method. Ours trains {trained} of {c.backbone} (the EfficientNet whose ImageNet "
            f"weights install offline) for {c.epochs} epochs at {c.lr:g}, "
            + (f"averages {c.tta} test-time views, " if c.tta > 1 else "")
            + f"with {runs['seed'].nunique()} seeds per method. **What cannot be tested.** The paper's D0+D1 rows: "
            f"of the {d1_of_paper} images the paper added (D1), {d1_found} can be found, so D0+D1 is not the paper's "
            "dataset and its rows stand unreproduced.")


def write_headline(path: str | Path, table: pd.DataFrame, recipe: str) -> None:
    """The headline table (`headline`) and the recipe sentence (`recipe_sentence`) as a Markdown file, which the
    introduction includes, so that it shows the Results chapter's numbers from the same build."""
    md = table.to_markdown(colalign=("left", "right", "right"))
    Path(path).write_text(md + "\n\n" + recipe + " The {doc}`/book/_generated/results` chapter gives the details.\n")


def _difference_columns(t: pd.DataFrame) -> dict:
    """The AUC difference, its interval and bootstrap p-value, formatted for people."""
    return {"AUC difference": t["auc_diff"].map("{:+.3f}".format),
            "95% interval": t["auc_diff_ci"].map(lambda c: f"[{c[0]:+.3f}, {c[1]:+.3f}]"),
            "p (bootstrap)": t["p_auc"].round(3)}


def pooled_table(t: pd.DataFrame) -> pd.DataFrame:
    """The pooled estimate for people."""
    if t.empty:
        return t
    return pd.DataFrame({"backbone": t["backbone"], "dataset": t["dataset"], "seeds": t["pairs"],
                         **_difference_columns(t), "detectable (80% power)": t["detectable_80"].round(3)}
                        ).set_index(["backbone", "dataset"])


def plot_curves(runs: pd.DataFrame, backbone: str | None = None, dataset: str | None = None):
    """Figure 4: ROC and precision-recall curves, baseline (blues) against LA-DNN (reds), one line per seed in its
    own shade and dash, for one backbone and dataset (the first in the table unless named); the title says which.
    The legend sits below the panels, off the curves."""
    backbone = backbone or runs["backbone"].iloc[0]
    dataset = dataset or runs["dataset"].iloc[0]
    runs = runs[(runs["backbone"] == backbone) & (runs["dataset"] == dataset)]
    fig, ax = plt.subplots(1, 2, figsize=(9, 5.2))
    dashes = ["-", "--", ":", "-."]
    for cmap, meth in (("Blues", "baseline"), ("Reds", "ladnn")):
        mine = runs[runs["method"] == meth].sort_values("seed")
        shades = plt.get_cmap(cmap)(np.linspace(0.55, 0.95, max(len(mine), 1)))
        for k, (_, r) in enumerate(mine.iterrows()):
            p = FinishedRun(r["path"]).predictions
            fpr, tpr, _ = skm.roc_curve(p[PRED.y_true], p[PRED.p_covid])
            prec, rec, _ = skm.precision_recall_curve(p[PRED.y_true], p[PRED.p_covid])
            style = {"color": shades[k], "ls": dashes[k % len(dashes)], "lw": 1.4}
            ax[0].plot(fpr, tpr, **style, label=f"{METHOD_NAMES[meth]}, seed {r['seed']}: AUC {r['auc']:.3f}, "
                                                  f"AP {r['ap']:.3f}")
            ax[1].plot(rec, prec, **style)
    ax[0].plot([0, 1], [0, 1], "k:", lw=0.8)
    ax[0].set(xlabel="false positive rate", ylabel="sensitivity", title="(a) ROC")
    ax[1].set(xlabel="recall (sensitivity)", ylabel="precision", title="(b) precision-recall")
    for a in ax:
        a.title.set_fontsize(13)
        a.xaxis.label.set_fontsize(12)
        a.yaxis.label.set_fontsize(12)
        a.tick_params(labelsize=11)
    fig.legend(*ax[0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=11, frameon=False)
    fig.suptitle(f"{backbone} on {dataset}", fontsize=13)
    fig.tight_layout(rect=(0, 0.05 + 0.045 * ((len(runs) + 1) // 2), 1, 1))
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
                         **_difference_columns(t), "p (McNemar)": t["p_mcnemar"].round(3)}
                        ).set_index(["backbone", "dataset", "seed"])


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
    return (f"Over {plural(len(t), 'paired comparison')} the mean AUC difference is "
            f"{t['auc_diff'].mean():+.3f}; {n_sig} of "
            f"{len(t)} reach p < 0.05. " + "; ".join(parts) + ".")


def plot_history(run: str | Path):
    """Training loss and validation metrics per epoch; the kept epoch dotted. Legends sit below the panels."""
    r = FinishedRun(run)
    h, best = r.history, r.metrics.run.best_epoch
    fig, ax = plt.subplots(1, 2, figsize=(9, 4.6))
    loss = "LA-DNN loss" if r.config.method == "ladnn" else "COVID loss"
    ax[0].plot(h["epoch"], h["train_loss"], "o-", label=f"training loss ({loss})")
    ax[0].plot(h["epoch"], h["val_covid_loss"], "s-", label="validation COVID loss")
    ax[1].plot(h["epoch"], h["val_auc"], "o-", label="validation AUC")
    ax[1].plot(h["epoch"], h["val_accuracy"], "s-", label="validation accuracy")
    ax[0].set_ylabel("loss", fontsize=12)
    ax[1].set_ylabel("validation metric", fontsize=12)
    for a in ax:
        a.axvline(best, color="grey", ls=":", label=f"kept epoch ({best})")
        a.set_xlabel("epoch", fontsize=12)
        a.set_xticks(h["epoch"].to_numpy())
        a.tick_params(labelsize=11)
        a.legend(fontsize=11, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
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


def config_table(run: str | Path):
    """The run's Config as its config.json holds it, one row per field (`shown_value`), captioned with the file."""
    cfg = FinishedRun(run).config.to_dict()
    t = pd.DataFrame({"field": list(cfg), "value": [shown_value(v) for v in cfg.values()]})
    return t.style.hide(axis="index").set_caption(f"{Path(run).name}/config.json")


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
    out = [f"**The paper's claim.** The lesion task raises the D0 test \"AUC\" of EfficientNet-b0 (a balanced "
           f"accuracy: see the headline) from {b0:.3f} to "
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
            f"{plural(r['pairs'], 'seed')}: {r['auc_diff']:+.3f} (95% interval {lo:+.3f} to {hi:+.3f}, p = {r['p_auc']:.2f}), "
            f"from a bootstrap that draws whole patients or source documents ({r['clusters']} clusters among "
            f"{r['n']} test images) within each class, and the seeds. Per seed: {seeds}. The seed ensembles score "
            f"AUC {e.get('baseline', float('nan')):.3f} (baseline) and {e.get('LA-DNN', float('nan')):.3f} "
            f"(LA-DNN). This test set detects an AUC difference of {detect:.3f} with 80% power. The paper's gain "
            f"({b1 - b0:+.3f}) is in balanced accuracy, not AUC, so it does not compare with this interval; the "
            "headline sets our balanced-accuracy difference beside it."
            + (" Our interval excludes zero." if lo > 0 or hi < 0 else
               " Our interval includes zero: we find no evidence that lesion attention changes the AUC here."))
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
