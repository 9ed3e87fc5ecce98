"""Table 3, honestly: the lesion head on the test images that carry lesion labels, beside a constant predictor and
the COVID probability used as every lesion's score, and whether the head ranks lesions better than a constant."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ladnn.config import LESIONS
from ladnn.metrics import auc, labelled, resample_weights, weighted_auc
from ladnn.report import paper_table
from ladnn.report.results import seed_predictions
from ladnn.rundir import FinishedRun
from ladnn.scores import PRED


def _lesion_rows(runs: pd.DataFrame) -> list[dict]:
    """Per LA-DNN run: every lesion metric of the head and of the two reference predictors."""
    rows = []
    for _, r in runs[runs["method"] == "ladnn"].iterrows():
        les = FinishedRun(r["path"]).metrics.lesions or {}
        if not les.get("n"):
            continue
        for who, m in (("ours", les), *les.get("baselines", {}).items()):
            base = {"backbone": r["backbone"], "dataset": r["dataset"], "seed": r["seed"], "who": who, "n": m["n"]}
            for k in LESIONS:
                pl = m["per_lesion"][k]
                rows += [{**base, "lesion": k, "metric": "AUC", "value": pl["auc"]},
                         {**base, "lesion": k, "metric": "AP", "value": pl["ap"]}]
            rows += [{**base, "lesion": "all five", "metric": "label accuracy", "value": m["label_accuracy"]},
                     {**base, "lesion": "all five", "metric": "Hamming loss", "value": m["hamming_loss"]}]
    return rows


REFERENCES = {"ours": "LA-DNN's lesion head", "constant": "constant (training prevalence)",
              "covid_score": "COVID probability as every lesion's score"}


def table3(runs: pd.DataFrame) -> pd.DataFrame:
    """The lesion task, honestly: on the test images that carry lesion labels only, per-lesion AUC and average
    precision first, then label accuracy (1 - Hamming loss) and Hamming loss; LA-DNN's head (mean over seeds) beside
    the constant training-prevalence predictor, the COVID probability used as every lesion's score, and the paper's
    Table 3 (label accuracy and Hamming loss only, D0+D1; the range over its seven backbones where ours differs).
    AUC, AP and accuracy in %; the number of images is in `attrs['images']`."""
    rows = pd.DataFrame(_lesion_rows(runs))
    if rows.empty:
        return pd.DataFrame()
    t = rows.groupby(["backbone", "dataset", "lesion", "metric", "who"], sort=False)["value"].mean().unstack("who")
    t = t[[c for c in REFERENCES if c in t]]
    hamming = t.index.get_level_values("metric") == "Hamming loss"
    t = t.apply(lambda col: ["n/a" if pd.isna(v) else f"{v:.3f}" if h else f"{100 * v:.1f}" for v, h in zip(col, hamming)])
    paper = paper_table(3)
    col = []
    for bb, ds, _, metric in t.index:
        if metric not in ("label accuracy", "Hamming loss"):
            col.append("")
            continue
        key = "multilabel_accuracy_percent" if metric == "label accuracy" else "hamming_loss"
        same = paper[paper["backbone"] == bb]
        fmt = "{:.1f}" if metric == "label accuracy" else "{:.3f}"
        if len(same):  # the paper reports Table 3 on D0+D1 only
            v = fmt.format(same[key].iloc[0])
            col.append(v if same["dataset"].iloc[0] == ds else f"{v} ({same['dataset'].iloc[0]})")
        else:
            col.append(f"{fmt.format(paper[key].min())} to {fmt.format(paper[key].max())} ({len(paper)} other "
                       f"backbones, {'/'.join(paper['dataset'].unique())})")
    t["paper"] = col
    t.columns = [REFERENCES.get(c, c) for c in t.columns]
    t.attrs["images"] = rows.groupby(["backbone", "dataset"])["n"].first().to_dict()
    t.attrs["paper"] = paper
    return t


def lesion_verdict(runs: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """Per backbone and dataset: does the lesion head rank lesions better than the constant predictor (AUC 0.5)?
    The mean per-lesion AUC of the seed ensemble's lesion scores, over the lesions with both classes among the
    labelled test images, with a patient-clustered bootstrap interval; beside it the same for the COVID probability,
    and the Hamming loss of the head (mean over seeds) against the constant predictor's."""
    rows, hamming = [], pd.DataFrame(_lesion_rows(runs))
    if len(hamming):
        hamming = hamming[hamming["metric"] == "Hamming loss"].groupby(["backbone", "dataset", "who"])["value"].mean()
    for (bb, ds), _ in runs[runs["method"] == "ladnn"].groupby(["backbone", "dataset"]):
        first, preds = seed_predictions(runs, bb, ds, "ladnn")
        Y = first[list(PRED.y_lesions)].to_numpy()
        k = labelled(Y) & first[PRED.lesions_known].astype(bool).to_numpy()
        Y, groups = Y[k], first[PRED.group].to_numpy()[k]
        P = np.mean([q[list(PRED.p_lesions)].to_numpy()[k] for q in preds], axis=0)
        pc = np.mean([q[PRED.p_covid].to_numpy()[k] for q in preds], axis=0)
        ok = [j for j in range(len(LESIONS)) if 0 < Y[:, j].sum() < len(Y)]
        out = {"backbone": bb, "dataset": ds, "labelled images": int(k.sum()), "lesions scored": len(ok)}
        # one draw of whole patients for all lesions (the labelled images are all positives: one stratum)
        w = resample_weights(np.ones(len(Y)), groups, n_boot)
        for who, S in (("head", P), ("covid_score", np.repeat(pc[:, None], len(LESIONS), 1))):
            if not ok:
                out[f"{who}_auc"], out[f"{who}_ci"] = float("nan"), [float("nan")] * 2
                continue
            point = float(np.mean([auc(Y[:, j], S[:, j]) for j in ok]))
            draws = np.nanmean([weighted_auc(Y[:, j], S[:, j], w) for j in ok], axis=0)
            out[f"{who}_auc"], out[f"{who}_ci"] = point, [float(np.nanquantile(draws, q)) for q in (0.025, 0.975)]
        for key, who in (("head_hamming", "ours"), ("constant_hamming", "constant")):
            out[key] = float(hamming.get((bb, ds, who), float("nan"))) if len(hamming) else float("nan")
        rows.append(out)
    return pd.DataFrame(rows)


def lesion_sentence(v: pd.DataFrame) -> str:
    """Whether the lesion head learned more than a constant, in words."""
    if v.empty:
        return "No LA-DNN run has test images with lesion labels."
    parts = []
    for _, r in v.iterrows():
        lo, hi = r["head_ci"]
        if not r["lesions scored"]:
            parts.append(f"{r['backbone']} on {r['dataset']}: no lesion has both classes among the "
                         f"{r['labelled images']} labelled test images, so the head cannot be scored.")
            continue
        beats = lo > 0.5
        parts.append(
            f"{r['backbone']} on {r['dataset']} ({r['labelled images']} labelled test images, {r['lesions scored']} "
            f"of the five lesions with both classes among them): the seed ensemble's mean per-lesion AUC (the seeds' lesion "
            f"probabilities averaged before scoring, so it differs from Table 3's mean over seeds) is {r['head_auc']:.3f} (95% "
            f"interval {lo:.3f} to {hi:.3f}; a constant scores 0.500, the COVID probability "
            f"{r['covid_score_auc']:.3f}), and the head's Hamming loss (mean over seeds, as in Table 3) "
            f"{r['head_hamming']:.3f} against the constant "
            f"predictor's {r['constant_hamming']:.3f}. "
            + ("The head ranks lesions better than a constant." if beats else
               "The head has not shown that it ranks lesions better than a constant: its interval includes 0.5.")
            + ("" if r["head_hamming"] < r["constant_hamming"] else
               " At the 0.5 threshold it makes no fewer errors than the constant answer."))
    return " ".join(parts)
