"""Tables and figures for the book, computed from the data and from run directories (notebooks only call these)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats
from sklearn import metrics as skm

from ladnn.config import LESIONS, Config
from ladnn.metrics import paired_test

PAPER_DIR = Path(__file__).resolve().parents[1] / "book" / "paper"
METRICS = ("sensitivity", "auc", "f1", "accuracy")
NOTICE = "Research software, not a medical device: these numbers must not be used to diagnose anyone."


def paper_table(n: int) -> pd.DataFrame:
    """The paper's Table n as typed in from its text (book/paper/table{n}.csv; Table 2 in percent)."""
    return pd.read_csv(PAPER_DIR / f"table{n}.csv")


# ---------------------------------------------------------------- data chapter
def table1(df: pd.DataFrame) -> pd.DataFrame:
    """Images (and patients, where known) per dataset, class and split: the paper's Table 1 from our data."""
    rows = []
    for ds, d in (("D0", df[df["dataset"] == "D0"]), ("D1", df[df["dataset"] == "D1"]), ("D0+D1", df)):
        for cls, c in (("positive", d[d["covid"] == 1]), ("negative", d[d["covid"] == 0])):
            row = {"dataset": ds, "class": cls, "images": len(c), "patients": _patients(c)}
            for s in ("train", "val", "test"):
                cs = c[c["split"] == s]
                row[f"{s}_images"], row[f"{s}_patients"] = len(cs), _patients(cs)
            rows.append(row)
    out = pd.DataFrame(rows)
    cols = [c for c in out if c.endswith("patients")]
    out[cols] = out[cols].astype("Int64")  # "not known" shows as <NA>, counts as integers
    return out


def _patients(d: pd.DataFrame):
    known = d[d["patient"] != ""]
    return int(known["patient"].nunique()) if len(known) == len(d) and len(d) else None


def table1_comparison(df: pd.DataFrame) -> pd.DataFrame:
    ours = table1(df).set_index(["dataset", "class"])
    paper = paper_table(1).set_index(["dataset", "class"])
    out = []
    for key in paper.index:
        for col in ("images", "train_images", "val_images", "test_images", "patients"):
            p, o = paper.loc[key, col], ours.loc[key, col] if key in ours.index else None
            if pd.notna(p):
                out.append({"dataset": key[0], "class": key[1], "quantity": col, "paper": int(p),
                            "ours": None if o is None or pd.isna(o) else int(o)})
    t = pd.DataFrame(out)
    t["ours"] = t["ours"].astype("Int64")
    t["agrees"] = (t["paper"] == t["ours"]).fillna(False).astype(bool)
    return t


def lesion_figure(df: pd.DataFrame):
    """Figure 3 (a)-(d): lesion counts, lesion labels per positive image, co-occurrence, negatives by source."""
    import seaborn as sns

    pos = df[(df["covid"] == 1) & df["lesions_known"]]
    fig, ax = plt.subplots(1, 4, figsize=(18, 4.2))
    counts = pos[list(LESIONS)].sum()
    sns.barplot(x=list(LESIONS), y=counts.values, ax=ax[0], color="C0")
    ax[0].set(title="(a) images with each lesion", ylabel="images")
    per = pos[list(LESIONS)].sum(axis=1).value_counts().sort_index()
    sns.barplot(x=per.index.astype(str), y=per.values, ax=ax[1], color="C1")
    ax[1].set(title="(b) lesion labels per positive image", xlabel="number of lesion labels", ylabel="images")
    co = pos[list(LESIONS)].T.dot(pos[list(LESIONS)])
    sns.heatmap(co, annot=True, fmt="d", cmap="Blues", ax=ax[2], cbar=False)
    ax[2].set(title="(c) lesion co-occurrence (images)")
    comp = negative_composition(df)
    ax[3].barh(comp.index, comp.values, color="C2")
    ax[3].set(title="(d) negative images by origin", xlabel="images")
    ax[3].tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return fig


def negative_composition(df: pd.DataFrame) -> pd.Series:
    """Negatives by where they come from: D0 non-COVID by file format (its sources are not recorded per file),
    D1 by the collection named in the file name."""
    neg = df[df["covid"] == 0]
    lab = np.where(neg["dataset"] == "D0", "COVID-CT non-COVID (" + neg["name"].str.rsplit(".", n=1).str[-1] + ")",
                   "new: " + neg["source"].str.split("_").str[-1])
    return pd.Series(lab).value_counts().sort_values()


def sample_grid(df: pd.DataFrame, n: int = 6, seed: int = 0):
    from ladnn.images import decode, read_bytes

    fig, ax = plt.subplots(2, n, figsize=(2.3 * n, 5))
    for r, (cls, label) in enumerate(((1, "COVID"), (0, "non-COVID"))):
        pick = df[df["covid"] == cls].sample(n, random_state=seed)
        for c, (_, row) in enumerate(pick.iterrows()):
            ax[r, c].imshow(decode(read_bytes(row["image"]), row["image"]))
            ax[r, c].set_title(f"{label}\n{row['name'][:22]}", fontsize=7)
            ax[r, c].axis("off")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- runs
def load_runs(runs_dir: str | Path) -> pd.DataFrame:
    """One row per finished run: its config, test metrics and path."""
    rows = []
    for p in sorted(Path(runs_dir).glob("*/metrics.json")):
        m = json.loads(p.read_text())
        cfg = Config.load(p.parent / "config.json")
        row = {**cfg.to_dict(), "path": str(p.parent), **{k: m["covid"][k] for k in ("auc", "ap", *METRICS)},
               "seconds": m["run"]["seconds"], "best_epoch": m["run"]["best_epoch"],
               "weights_source": m["run"]["weights_source"]}
        if "lesions" in m and m["lesions"].get("n"):
            row["lesion_label_accuracy"] = m["lesions"]["label_accuracy"]
            row["hamming_loss"] = m["lesions"]["hamming_loss"]
            row["lesion_exact_match"] = m["lesions"]["exact_match"]
        rows.append(row)
    if not rows:
        raise FileNotFoundError(f"no finished runs in {runs_dir}")
    return pd.DataFrame(rows)


def mean_ci(x) -> tuple[float, float, float]:
    """Mean and 95% t-interval over seeds (the interval is nan for a single seed)."""
    x = np.asarray(x, dtype=float)
    m = float(x.mean())
    if len(x) < 2:
        return m, float("nan"), float("nan")
    h = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return m, m - h, m + h


def _fmt(m, lo, hi) -> str:
    return f"{100 * m:.1f}" if np.isnan(lo) else f"{100 * m:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def table2(runs: pd.DataFrame) -> pd.DataFrame:
    """Ours (mean [95% interval] over seeds, %) beside the paper's Table 2, per metric, backbone, dataset, method."""
    paper = paper_table(2)
    short = {"VGG-16": "vgg16", "ResNet-18": "resnet18", "ResNet-50": "resnet50", "DenseNet-121": "densenet121",
             "DenseNet-169": "densenet169", "EfficientNet-b0": "efficientnet_b0", "EfficientNet-b1": "efficientnet_b1"}
    paper["backbone"] = paper["backbone"].map(short)
    rows = []
    for (bb, ds, meth), g in runs.groupby(["backbone", "dataset", "method"]):
        for metric in METRICS:
            m, lo, hi = mean_ci(g[metric])
            p = paper.query("metric == @metric and backbone == @bb and dataset == @ds and method == @meth")["percent"]
            rows.append({"metric": metric, "backbone": bb, "dataset": ds, "method": meth, "seeds": len(g),
                         "ours": _fmt(m, lo, hi), "ours_mean": 100 * m,
                         "paper": float(p.iloc[0]) if len(p) else None})
    return pd.DataFrame(rows)


def table2_wide(runs: pd.DataFrame) -> pd.DataFrame:
    t = table2(runs)
    t["cell"] = t["ours"] + t["paper"].map(lambda p: "" if pd.isna(p) else f"  (paper {p:.1f})")
    return t.pivot_table(index=["metric", "backbone", "dataset"], columns="method", values="cell", aggfunc="first")


def paper_table2_wide() -> pd.DataFrame:
    """The paper's Table 2 (%) as printed: metric x backbone rows, dataset x method columns."""
    return paper_table(2).pivot_table(index=["metric", "backbone"], columns=["dataset", "method"], values="percent",
                                      sort=False)


def table3(runs: pd.DataFrame) -> pd.DataFrame:
    lad = runs[runs["method"] == "ladnn"]
    if "hamming_loss" not in lad:
        return pd.DataFrame()
    paper = paper_table(3)
    rows = []
    for (bb, ds), g in lad.groupby(["backbone", "dataset"]):
        acc, h = mean_ci(g["lesion_label_accuracy"]), mean_ci(g["hamming_loss"])
        rows.append({"backbone": bb, "dataset": ds, "seeds": len(g), "label accuracy % (ours)": _fmt(*acc),
                     "Hamming loss (ours)": f"{h[0]:.3f}" + ("" if np.isnan(h[1]) else f" [{h[1]:.3f}, {h[2]:.3f}]"),
                     "exact match % (ours)": f"{100 * g['lesion_exact_match'].mean():.1f}"})
    out = pd.DataFrame(rows)
    out.attrs["paper"] = paper
    return out


def predictions(run_path: str | Path) -> pd.DataFrame:
    return pd.read_csv(Path(run_path) / "predictions.csv")


def plot_curves(runs: pd.DataFrame, backbone: str | None = None, dataset: str | None = None):
    """Figure 4: ROC and precision-recall curves, baseline vs LA-DNN, one thin line per seed."""
    runs = runs[(runs["backbone"] == (backbone or runs["backbone"].iloc[0]))
                & (runs["dataset"] == (dataset or runs["dataset"].iloc[0]))]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.6))
    for color, meth in (("C0", "baseline"), ("C3", "ladnn")):
        for i, (_, r) in enumerate(runs[runs["method"] == meth].iterrows()):
            p = predictions(r["path"])
            fpr, tpr, _ = skm.roc_curve(p["y_true"], p["p_covid"])
            prec, rec, _ = skm.precision_recall_curve(p["y_true"], p["p_covid"])
            lab = f"{'LA-DNN' if meth == 'ladnn' else 'baseline'} (seed {r['seed']}, AUC {r['auc']:.3f})"
            ax[0].plot(fpr, tpr, color=color, alpha=0.8, lw=1.2, label=lab)
            ax[1].plot(rec, prec, color=color, alpha=0.8, lw=1.2, label=f"{lab[:-1]}, AP {r['ap']:.3f})")
    ax[0].plot([0, 1], [0, 1], "k:", lw=0.8)
    ax[0].set(xlabel="false positive rate", ylabel="sensitivity (true positive rate)", title="(a) ROC")
    ax[1].set(xlabel="recall (sensitivity)", ylabel="precision", title="(b) precision-recall")
    for a in ax:
        a.legend(fontsize=7, loc="lower right" if a is ax[0] else "lower left")
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
        pa, pb = predictions(a["path"].iloc[0]), predictions(b["path"].iloc[0])
        if not (pa["image"] == pb["image"]).all():
            raise ValueError(f"runs {k} were tested on different images")
        t = paired_test(pa["y_true"], pa["p_covid"], pb["p_covid"], n_boot=n_boot, seed=int(k[2]))
        rows.append({**dict(zip(key, k)), **t})
    return pd.DataFrame(rows)


def paired_sentence(t: pd.DataFrame) -> str:
    """The paired tests in plain words."""
    if t.empty:
        return "No pair of baseline and LA-DNN runs on the same test images was found."
    parts = []
    for _, r in t.iterrows():
        lo, hi = r["auc_diff_ci"]
        verdict = ("a difference that the bootstrap does not explain away" if r["p_auc"] < 0.05 else
                   "no evidence of a difference")
        parts.append(f"seed {r['seed']}: LA-DNN minus baseline AUC = {r['auc_diff']:+.3f} (95% interval {lo:+.3f} to "
                     f"{hi:+.3f}, p = {r['p_auc']:.2f}; McNemar p = {r['p_mcnemar']:.2f}), {verdict}")
    mean = t["auc_diff"].mean()
    n_sig = int((t["p_auc"] < 0.05).sum())
    return (f"Over {len(t)} paired comparison(s) on {t['n'].iloc[0]} test images the mean AUC difference is "
            f"{mean:+.3f}; {n_sig} of {len(t)} reach p < 0.05. " + "; ".join(parts) + ".")


def plot_history(run: str | Path):
    h = pd.read_csv(Path(run) / "history.csv")
    best = json.loads((Path(run) / "metrics.json").read_text())["run"]["best_epoch"]
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
    m = json.loads((Path(run) / "metrics.json").read_text())
    rows = [{"metric": k, "value": m["covid"][k], "95% bootstrap interval": m["covid_ci95"].get(k)}
            for k in ("auc", "ap", "sensitivity", "precision", "f1", "accuracy")]
    return pd.DataFrame(rows).set_index("metric")


# ---------------------------------------------------------------- Grad-CAM++ and auxiliary outputs
def cam_images(run: str | Path, n: int, data_dir=None) -> pd.DataFrame:
    """The first `n` COVID-positive test images (by name) that carry at least one lesion label."""
    from ladnn.train import splits

    test = splits(Config.load(Path(run) / "config.json"), data_dir)["test"]
    pick = test[(test["covid"] == 1) & (test[list(LESIONS)].sum(axis=1) > 0)].sort_values("name")
    return pick.head(n)


def _maps(run, rows: pd.DataFrame, outputs):
    import torch

    from ladnn.cam import cam_maps
    from ladnn.images import read_bytes
    from ladnn.predict import Predictor

    pr = Predictor(run)
    rgbs, xs = zip(*(pr.preprocess(read_bytes(p), p) for p in rows["image"]))
    x = torch.cat(xs)
    probs = pr.probs(x)
    return np.stack(rgbs), {k: cam_maps(pr.model, x, [k] * len(x)) for k in outputs}, probs


def cam_figure(baseline_run, ladnn_run, rows: pd.DataFrame):
    """Figure 5: the COVID output's Grad-CAM++ map of the baseline and of LA-DNN on the same test images."""
    from ladnn.cam import overlay

    rgb, mb, pb = _maps(baseline_run, rows, [0])
    _, ml, pl = _maps(ladnn_run, rows, [0])
    fig, ax = plt.subplots(len(rows), 5, figsize=(13, 2.7 * len(rows)), squeeze=False)
    for i in range(len(rows)):
        panels = [(rgb[i], "CT image"), (mb[0][i], f"baseline map (p={pb[i, 0]:.2f})"),
                  (overlay(rgb[i], mb[0][i]), "baseline overlay"), (ml[0][i], f"LA-DNN map (p={pl[i, 0]:.2f})"),
                  (overlay(rgb[i], ml[0][i]), "LA-DNN overlay")]
        for j, (img, title) in enumerate(panels):
            ax[i, j].imshow(img, cmap="jet" if img.ndim == 2 else None, vmin=0, vmax=1 if img.ndim == 2 else None)
            ax[i, j].set_title(title, fontsize=8)
            ax[i, j].axis("off")
    fig.tight_layout()
    return fig


def lesion_cam_figure(ladnn_run, rows: pd.DataFrame):
    """Maps of LA-DNN's COVID output and of each lesion output; a lesion title is starred when labelled."""
    from ladnn.cam import overlay

    rgb, maps, probs = _maps(ladnn_run, rows, range(6))
    names = ["COVID", *LESIONS]
    fig, ax = plt.subplots(len(rows), 7, figsize=(16, 2.5 * len(rows)), squeeze=False)
    for i, (_, row) in enumerate(rows.iterrows()):
        ax[i, 0].imshow(rgb[i])
        ax[i, 0].set_title(row["name"][:24], fontsize=7)
        for k in range(6):
            star = "*" if k and row[LESIONS[k - 1]] else ""
            ax[i, k + 1].imshow(overlay(rgb[i], maps[k][i]))
            ax[i, k + 1].set_title(f"{names[k]}{star} p={probs[i, k]:.2f}", fontsize=8)
        for a in ax[i]:
            a.axis("off")
    fig.tight_layout()
    return fig


def lesion_logits(run: str | Path) -> pd.DataFrame:
    """The five lesion outputs (logits, the last layer's values as in the paper's Figure 6) per test image."""
    p = predictions(run)
    eps = 1e-7
    out = pd.DataFrame({k: np.log((p[f"p_{k}"] + eps) / (1 - p[f"p_{k}"] + eps)) for k in LESIONS})
    out["COVID label"] = p["y_true"].map({1: "COVID", 0: "non-COVID"})
    return out


def lesion_separation(run: str | Path) -> pd.DataFrame:
    """How well each lesion output alone separates COVID from non-COVID test images (AUC)."""
    p = predictions(run)
    return pd.DataFrame([{"lesion": k, "AUC for COVID vs non-COVID": skm.roc_auc_score(p["y_true"], p[f"p_{k}"]),
                          "mean p (COVID)": p.loc[p["y_true"] == 1, f"p_{k}"].mean(),
                          "mean p (non-COVID)": p.loc[p["y_true"] == 0, f"p_{k}"].mean()} for k in LESIONS]
                        ).set_index("lesion")


# ---------------------------------------------------------------- validity: ablations and seeds
def _changes(cfg: dict, ref: dict) -> str:
    keys = [k for k in cfg if k not in ("seed", "method") and cfg[k] != ref.get(k)]
    return ", ".join(f"{k}={cfg[k]}" for k in keys) or "(no change)"


def ablation_table(runs: pd.DataFrame, abl: pd.DataFrame) -> pd.DataFrame:
    """Mean [95% interval] over seeds of each ablation next to the profile's LA-DNN and baseline, with one sentence
    per row saying how it compares with the profile's LA-DNN."""
    ref = runs[runs["method"] == "ladnn"]
    ref_cfg = Config.load(Path(ref["path"].iloc[0]) / "config.json").to_dict()
    groups = [("LA-DNN (profile)", ref), ("baseline (profile)", runs[runs["method"] == "baseline"])]
    abl = abl.assign(change=[_changes(Config.load(Path(p) / "config.json").to_dict(), ref_cfg) for p in abl["path"]])
    groups += [(c, g) for c, g in abl.groupby("change", sort=False)]
    r_mean, r_lo, r_hi = mean_ci(ref["auc"])
    rows = []
    for name, g in groups:
        row = {"variant": name, "seeds": len(g)}
        for k in ("auc", "sensitivity", "f1", "accuracy"):
            row[k] = _fmt(*mean_ci(g[k]))
        m, lo, hi = mean_ci(g["auc"])
        if name == "LA-DNN (profile)":
            row["reading"] = "the reference"
        else:
            overlap = not (hi < r_lo or lo > r_hi) if not np.isnan(lo) else True
            row["reading"] = (f"mean AUC {100 * (m - r_mean):+.1f} points against LA-DNN; the intervals "
                              + ("overlap, so these seeds cannot tell the two apart" if overlap else "do not overlap"))
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")


def seed_variation(runs: pd.DataFrame) -> pd.DataFrame:
    """Per recipe: AUC over seeds (points): mean, SD, min, max, range."""
    g = runs.groupby(["backbone", "dataset", "method"])["auc"]
    out = pd.DataFrame({"seeds": g.size(), "mean": 100 * g.mean(), "sd": 100 * g.std(ddof=1), "min": 100 * g.min(),
                        "max": 100 * g.max()})
    out["range"] = out["max"] - out["min"]
    return out.round(2)


def seed_sentence(runs: pd.DataFrame) -> str:
    sv = seed_variation(runs)
    p = paper_table(2).query("metric == 'auc'").pivot_table(index=["backbone", "dataset"], columns="method",
                                                             values="percent")
    diff = (p["ladnn"] - p["baseline"]).round(1)
    sd = float(sv["sd"].mean())
    if np.isnan(sd):
        return "Only one seed per recipe: the seed variation cannot be measured in this profile."
    small = int((diff.abs() <= 2 * sd).sum())
    return (f"Changing only the seed moves one recipe's test AUC by up to {sv['range'].max():.1f} points here (mean SD "
            f"{sd:.1f} points over {int(sv['seeds'].max())} seeds). The paper's single-run AUC gains of LA-DNN over the "
            f"baseline range from {diff.min():.1f} to {diff.max():.1f} points (median {diff.median():.1f}); {small} of "
            f"its {len(diff)} backbone and dataset pairs differ by no more than twice our seed SD, so a single run "
            "cannot establish them. (Our SD is for EfficientNet-Lite0 with top fine-tuning, whose frozen lower part and "
            "cached augmented views are shared by all seeds, so only the head's initialisation and the batch order "
            "change with the seed: it understates the variation of full fine-tuning, where every seed also draws "
            "its own augmentations.)")


SELECTION_CSV = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "select_quick_cpu.csv"


def selection_table(path: str | Path = SELECTION_CSV) -> pd.DataFrame:
    """The quick profile's candidate settings as `benchmarks/select_quick.py` measured them, on the validation split
    only: per candidate and epoch budget, the mean over seeds of the kept epoch's validation COVID loss and AUC, the
    kept epochs, the fastest seed's seconds per epoch and the training time of the budget (epochs x seconds per epoch)."""
    df = pd.read_csv(path)
    keys = ["top_blocks", "lr", "views", "head", "budget"]
    g = df.groupby(keys)
    out = g.agg(seeds=("seed", "size"), val_covid_loss=("val_covid_loss", "mean"), val_auc=("val_auc", "mean"),
                seconds_per_epoch=("seconds_per_epoch", "min"))
    out["kept_epochs"] = g["kept_epoch"].apply(lambda s: ", ".join(str(int(x)) for x in s))
    out = out.reset_index()
    out["train_seconds"] = out["budget"] * out["seconds_per_epoch"]
    return out.sort_values("val_covid_loss").round({"val_covid_loss": 3, "val_auc": 3, "seconds_per_epoch": 1,
                                                     "train_seconds": 0}).reset_index(drop=True)


def _profile_rows(sel: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The rows of the selection table with this profile's own settings and epoch budget (none unless it uses `top`)."""
    c = runs.iloc[0]
    if c["finetune"] != "top":
        return sel.iloc[:0]
    return sel[(sel["top_blocks"] == c["top_blocks"]) & np.isclose(sel["lr"], c["lr"]) & (sel["views"] == c["views"])
               & (sel["head"] == c["head"]) & (sel["budget"] == c["epochs"])]


def selection_sentence(sel: pd.DataFrame, runs: pd.DataFrame) -> str:
    """Name the best candidate on validation, the best within this profile's epoch budget, and this profile's own."""
    def describe(r) -> str:
        return (f"the top {int(r['top_blocks'])} block(s) at learning rate {r['lr']:g}, {int(r['views'])} views, "
                f"{r['head']} head, {int(r['budget'])} epochs (validation COVID loss {r['val_covid_loss']:.3f}, AUC "
                f"{r['val_auc']:.3f}, mean of {int(r['seeds'])} seeds; about {r['train_seconds']:.0f} s of training "
                f"per run)")

    text = f"Lowest validation loss of all: {describe(sel.iloc[0])}."
    c = runs.iloc[0]
    if c["finetune"] != "top":
        return text + f" This profile fine-tunes with `{c['finetune']}`, which the table does not cover."
    same = sel[sel["budget"] == c["epochs"]]
    if not same.empty:
        text += f" Lowest with {int(c['epochs'])} epochs: {describe(same.iloc[0])}."
    mine = _profile_rows(sel, runs)
    if mine.empty:
        return text + (f" This profile trains the top {int(c['top_blocks'])} block(s) at learning rate {c['lr']:g} "
                       f"for {int(c['epochs'])} epochs, a setting the table does not hold.")
    return text + f" This profile uses {describe(mine.iloc[0])}."


def selection_figure(sel: pd.DataFrame, runs: pd.DataFrame):
    """Validation COVID loss against training seconds per run, one line per candidate through its epoch budgets; the
    profile's own setting is starred."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    keys = ["top_blocks", "lr", "views", "head"]
    for k, g in sel.groupby(keys):
        g = g.sort_values("budget")
        line, = ax.plot(g["train_seconds"], g["val_covid_loss"], marker="o", ms=4,
                        label=f"top {k[0]}, lr {k[1]:g}, {k[2]} views, {k[3]}")
        for _, r in g.iterrows():
            ax.annotate(f"{int(r['budget'])}", (r["train_seconds"], r["val_covid_loss"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points", color=line.get_color())
    mine = _profile_rows(sel, runs)
    if not mine.empty:
        ax.plot(mine["train_seconds"], mine["val_covid_loss"], "k*", ms=14, label="this profile")
    ax.set_xlabel("training seconds per run on this CPU (epochs x seconds per epoch; numbers: epochs)")
    ax.set_ylabel("validation COVID loss (mean over seeds)")
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
