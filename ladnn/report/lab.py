"""The chapter "Multi-task lab": learning curves on nested subsets of the training patients, the tasks' gradients on
the shared layers, and other ways of combining the tasks than the paper's fixed weights.

Its runs are the lab profile's (profiles/lab.yaml; `ladnn.profiles.lab_runs`): the matrix's runs on the whole
training split and the runs under `lab/`. The quick book shows the committed copy of their results
(ladnn/resources/lab_quick_*.csv*, written by benchmarks/lab.py); the lab profile shows its own. Every interval
resamples whole test patients (and the seeds, for a mean over seeds)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ladnn.config import LESIONS, Config
from ladnn.files import resource
from ladnn.metrics import paired_difference
from ladnn.report import styled  # noqa: F401 - the lab notebook calls lab.styled
from ladnn.rundir import GRADIENTS, run_dirs, scan_runs
from ladnn.scores import PRED, lesion_aucs, runs_auc

RESOURCE = "lab_quick"  # the committed results: lab_quick_runs.csv, _predictions.csv.gz, _history.csv, _gradients.csv.gz
TABLES = ("runs", "predictions", "history", "gradients")
N_BOOT = 2000
WEIGHTING_NAMES = {"fixed": "fixed weights (paper)", "uncertainty": "uncertainty weighting", "upgrad": "UPGrad",
                   "mgda": "MGDA", "pcgrad": "PCGrad", "cagrad": "CAGrad", "nashmtl": "Nash-MTL"}


# ---------------------------------------------------------------- the results, from runs or the committed copy
def collect(runs_dir: str | Path) -> dict[str, pd.DataFrame]:
    """The lab's tables from a profile's runs: the matrix's runs (whole split, fixed weights) and those of `lab/`.
    `runs`: one row per run (its config as JSON, the training images, the validation COVID loss of the kept epoch);
    `predictions`, `history` and `gradients` (runs with `grad_diagnostics`): the run's files with its name."""
    runs_dir, lab_dir = Path(runs_dir), run_dirs(runs_dir)["lab"]
    own = scan_runs(lab_dir)[0]
    found = own + [r for r in scan_runs(runs_dir)[0] if not own or _recipe(r.config) == _recipe(own[0].config)]
    rows, pred, hist, grads = [], [], [], []
    for r in found:
        c, name = r.config, r.path.name
        rows.append({"run": name, "method": c.method, "train_fraction": c.train_fraction,
                     "task_weighting": c.task_weighting, "grad_diagnostics": c.grad_diagnostics, "seed": c.seed,
                     "train_images": r.metrics.run.images["train"],
                     "val_covid_loss": float(r.history["val_covid_loss"].min()),
                     "config": json.dumps(c.to_dict(), sort_keys=True)})
        pred.append(r.predictions.assign(run=name))
        hist.append(r.history.assign(run=name))
        if (r.path / GRADIENTS).is_file():
            grads.append(pd.read_csv(r.path / GRADIENTS).assign(run=name))
    if not rows:
        raise FileNotFoundError(f"no finished runs in {runs_dir} or {lab_dir}")
    cat = lambda parts: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"run": []})
    return {"runs": pd.DataFrame(rows), "predictions": cat(pred), "history": cat(hist), "gradients": cat(grads)}


def _recipe(c: Config) -> dict:
    """A config without what the lab varies: the matrix's runs of the lab's recipe have the lab runs' recipe."""
    return {k: v for k, v in c.to_dict().items()
            if k not in ("method", "seed", "train_fraction", "task_weighting", "grad_diagnostics")}


def _file(table: str) -> str:
    return f"{RESOURCE}_{table}.csv" + (".gz" if table in ("predictions", "gradients") else "")


def save(tables: dict[str, pd.DataFrame], folder: str | Path) -> list[Path]:
    """The tables as the committed files (benchmarks/lab.py)."""
    out = []
    for t in TABLES:
        f = Path(folder) / _file(t)
        tables[t].to_csv(f, index=False, float_format="%.6g")
        out.append(f)
    return out


def committed() -> dict[str, pd.DataFrame]:
    """The committed results of the lab profile (ladnn/resources/)."""
    return {t: pd.read_csv(resource(_file(t))) for t in TABLES}


def load(runs_dir: str | Path) -> tuple[dict[str, pd.DataFrame], str]:
    """The profile's own lab runs when they hold every run of the committed results (the lab profile's grid), else
    the committed results (the quick and class books: the class trains a few of the lab's runs for its exercises);
    and a sentence saying which."""
    ref = committed()
    want = set(ref["runs"]["run"])
    lab_runs = scan_runs(run_dirs(runs_dir)["lab"])[0]
    if lab_runs and want <= {r.path.name for r in lab_runs + scan_runs(runs_dir)[0]}:  # before reading their files
        own = collect(runs_dir)
        if want <= set(own["runs"]["run"]):
            return own, f"the lab runs of this build ({runs_dir})"
    return ref, ("the committed results of the lab profile (ladnn/resources/lab_quick_*; "
                         "`make book PROFILE=lab` trains them again)")


def seed_matrix(tables: dict, runs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, pd.Series, np.ndarray]:
    """Labels, groups and an S x N matrix of COVID probabilities for `runs` (same test images, sorted by seed)."""
    pred = tables["predictions"]
    runs = runs.sort_values("seed")
    first = pred[pred["run"] == runs["run"].iloc[0]].sort_values(PRED.image)
    P = np.stack([pred[pred["run"] == r].sort_values(PRED.image)[PRED.p_covid].to_numpy() for r in runs["run"]])
    return first[PRED.y_true].to_numpy(), P, first[PRED.group], runs["seed"].to_numpy()


def _paired(tables, a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """LA-DNN-style run set `a` against `b` on the same seeds (paired by seed)."""
    common = sorted(set(a["seed"]) & set(b["seed"]))
    a, b = a[a["seed"].isin(common)], b[b["seed"].isin(common)]
    y, Pa, g, _ = seed_matrix(tables, a)
    _, Pb, _, _ = seed_matrix(tables, b)
    return paired_difference(y, Pa, Pb, g, N_BOOT, seed=0)


# ---------------------------------------------------------------- learning curves
def whole_split(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs on the whole training split with the paper's weighting and no diagnostics: the matrix's."""
    return runs[(runs["train_fraction"] == 1) & (runs["task_weighting"] == "fixed") & ~runs["grad_diagnostics"]]


def learning_curve(tables: dict) -> pd.DataFrame:
    """Per training share: the training images (mean over seeds), each method's mean test AUC with its interval,
    and the pooled paired difference LA-DNN - baseline with its interval, p-value and detectable difference."""
    runs = tables["runs"]
    curve = runs[(runs["task_weighting"] == "fixed") & ~runs["grad_diagnostics"]]
    rows = []
    for frac, at in curve.groupby("train_fraction"):
        row = {"share of training patients": frac, "training images": float(at["train_images"].mean()),
               "seeds": int(at["seed"].nunique())}
        for method in ("baseline", "ladnn"):
            y, P, g, _ = seed_matrix(tables, at[at["method"] == method])
            row[method] = runs_auc(y, P, g, N_BOOT)
        d = _paired(tables, at[at["method"] == "ladnn"], at[at["method"] == "baseline"])
        row.update({"diff": d["auc_diff"], "diff_lo": d["auc_diff_ci"][0], "diff_hi": d["auc_diff_ci"][1],
                    "p": d["p_auc"], "detectable": d["detectable_80"]})
        rows.append(row)
    return pd.DataFrame(rows)


def curve_table(curve: pd.DataFrame) -> pd.DataFrame:
    """`learning_curve` for the page: AUCs and differences in points of AUC (x 100), intervals in brackets."""
    f = lambda m, lo, hi: f"{100 * m:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
    return pd.DataFrame({
        "share of patients": [f"{x:.0%}" for x in curve["share of training patients"]],
        "images": curve["training images"].round().astype(int),
        "baseline AUC": [f(*v) for v in curve["baseline"]],
        "LA-DNN AUC": [f(*v) for v in curve["ladnn"]],
        "LA-DNN - baseline": [f(m, lo, hi) for m, lo, hi in zip(curve["diff"], curve["diff_lo"], curve["diff_hi"])],
        "detectable": [f"{100 * x:.1f}" for x in curve["detectable"]],
    })


def curve_sentence(curve: pd.DataFrame) -> str:
    """Where the lesion task helps, hurts or makes no detectable difference, from the paired intervals."""
    helps = [f"{x:.0%}" for x, lo in zip(curve["share of training patients"], curve["diff_lo"]) if lo > 0]
    hurts = [f"{x:.0%}" for x, hi in zip(curve["share of training patients"], curve["diff_hi"]) if hi < 0]
    sizes = ", ".join(f"{x:.0%}" for x in curve["share of training patients"])
    if not helps and not hurts:
        return (f"At no training size ({sizes} of the patients) does the lesion task change the test AUC by more "
                f"than its interval allows: every paired interval contains 0. The smallest differences these runs "
                f"could detect (80% power) range from {100 * curve['detectable'].min():.1f} to "
                f"{100 * curve['detectable'].max():.1f} points of AUC, so a gain smaller than that cannot be ruled "
                "out. These runs do not support the paper's claim that the lesion task makes the model "
                "sample-efficient.")
    parts = []
    if helps:
        parts.append(f"the lesion task raises the test AUC at {', '.join(helps)} of the training patients "
                     "(the paired interval lies above 0)")
    if hurts:
        parts.append(f"it lowers it at {', '.join(hurts)} (the interval lies below 0)")
    rest = [f"{x:.0%}" for x, lo, hi in zip(curve["share of training patients"], curve["diff_lo"], curve["diff_hi"])
            if lo <= 0 <= hi]
    if rest:
        parts.append(f"at {', '.join(rest)} the interval contains 0")
    return "; ".join(parts).capitalize() + "."


def _readable(fig) -> None:
    """Titles and axis labels at 11 pt, tick labels and legends at 10 pt: at 8 inches (the column's width at 100 dpi),
    no text on the page under 10 pt."""
    for ax in fig.axes:
        ax.tick_params(labelsize=10)
        for t in (ax.title, ax.xaxis.label, ax.yaxis.label):
            t.set_fontsize(11)
    for legend in [*fig.legends, *(a.get_legend() for a in fig.axes if a.get_legend())]:
        for t in legend.get_texts():
            t.set_fontsize(10)


def plot_curve(curve: pd.DataFrame):
    """Left: each method's mean test AUC against the share of training patients; right: the paired difference; both
    in points of AUC (x 100), as the table beside them."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 4.2), layout="constrained")
    x = curve["share of training patients"].to_numpy()
    for method, label, dx in (("baseline", "baseline", 0.97), ("ladnn", "LA-DNN", 1.03)):
        m = 100 * np.array([v[0] for v in curve[method]])
        lo, hi = 100 * np.array([v[1] for v in curve[method]]), 100 * np.array([v[2] for v in curve[method]])
        a.errorbar(x * dx, m, yerr=[m - lo, hi - m], marker="o", capsize=3, label=label)
    a.axhline(50, color="grey", lw=0.8, ls=":", label="chance (a constant score)")
    a.set(xscale="log", xlabel="share of training patients", ylabel="test AUC (x 100, mean over seeds)",
          title="Learning curves")
    a.set_xticks(x, [f"{v:.0%}" for v in x])
    a.minorticks_off()
    fig.legend(*a.get_legend_handles_labels(), loc="outside lower center", ncol=3, frameon=False)
    d = 100 * curve["diff"].to_numpy()
    b.errorbar(x, d, yerr=[d - 100 * curve["diff_lo"], 100 * curve["diff_hi"] - d], marker="o", capsize=3,
               color="C2")
    b.axhline(0, color="grey", lw=0.8)
    b.set(xscale="log", xlabel="share of training patients", ylabel="AUC difference (x 100)",
          title="LA-DNN - baseline (paired, 95%)")
    b.set_xticks(x, [f"{v:.0%}" for v in x])
    b.minorticks_off()
    _readable(fig)
    return fig


# ---------------------------------------------------------------- gradients
def gradient_summary(tables: dict) -> pd.DataFrame:
    """Per lesion and for their sum: the steps where the term had images, the median cosine with the COVID term's
    gradient, the share of those steps where they conflict (cosine < 0) and the median ratio of their norms."""
    g = tables["gradients"]
    if g.empty:
        return pd.DataFrame()
    rows = []
    for task in (*LESIONS, "lesions"):
        t = g[g["task"] == task]
        ok = t.dropna(subset=["cosine"])
        rows.append({"term": "all five lesions" if task == "lesions" else task, "steps": len(ok),
                     "steps without images": len(t) - len(ok),
                     "median cosine": ok["cosine"].median(), "conflicting steps": (ok["cosine"] < 0).mean(),
                     "median norm ratio": ok["norm_ratio"].median()})
    return pd.DataFrame(rows)


def gradient_sentence(summary: pd.DataFrame) -> str:
    s = summary.set_index("term").loc["all five lesions"]
    per = summary[summary["term"] != "all five lesions"]
    most = per.loc[per["conflicting steps"].idxmax()]
    out = (f"On the shared layers the summed lesion gradient has a median cosine of {s['median cosine']:.3f} with "
           f"the COVID term's gradient, conflicts with it (cosine < 0) in {s['conflicting steps']:.0%} of the "
           f"{int(s['steps'])} steps, and is {s['median norm ratio']:.2f} times its norm (median). The lesion "
           f"that conflicts most often is {most['term']} ({most['conflicting steps']:.0%} of its steps).")
    if abs(s["median cosine"]) < 0.2:
        lean = ("against it more often than with it" if s["conflicting steps"] > 0.5 else
                "with it more often than against it")
        out += (f" A cosine this close to 0 means nearly orthogonal directions: the lesion task moves the shared "
                f"layers mostly where the COVID task does not look, slightly {lean}")
        out += "."
    return out


def plot_gradients(tables: dict):
    """Left: the cosine of the summed lesion gradient with the COVID gradient at every step, with a running median;
    right: each lesion's cosines over all steps."""
    g = tables["gradients"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 4.2), gridspec_kw={"width_ratios": [1.4, 1]},
                               layout="constrained")
    for run, t in g[g["task"] == "lesions"].groupby("run"):
        t = t.sort_values("step")
        a.plot(t["step"], t["cosine"], ".", ms=3, alpha=0.5, label="every step")
        a.plot(t["step"], t["cosine"].rolling(7, center=True, min_periods=1).median(), lw=2,
               label="running median (7 steps)")
        for e in t.groupby("epoch")["step"].min().iloc[1:]:
            a.axvline(e - 0.5, color="grey", lw=0.5, ls=":")
    a.axhline(0, color="k", lw=0.8)
    a.set(xlabel="training step (dotted lines: epochs)", ylabel="cosine", title="All five lesions vs COVID")
    fig.legend(*a.get_legend_handles_labels(), loc="outside lower center", ncol=2, frameon=False)
    data = [g[(g["task"] == k)]["cosine"].dropna() for k in LESIONS]
    b.boxplot(data, tick_labels=list(LESIONS), showfliers=False)
    b.tick_params(axis="x", labelrotation=30)
    b.axhline(0, color="k", lw=0.8)
    b.set(ylabel="cosine with the COVID gradient", title="Per lesion, every step")
    _readable(fig)
    return fig


# ---------------------------------------------------------------- ways of combining the tasks
def mean_lesion_aucs(tables: dict, runs: pd.DataFrame) -> dict[str, float]:
    """Each lesion's test AUC, averaged over `runs`, on the test images that carry a lesion label (a constant
    score, such as the training prevalence, has AUC 0.5)."""
    pred = tables["predictions"]
    out = {k: [] for k in LESIONS}
    for r in runs["run"]:
        for k, a in lesion_aucs(pred[pred["run"] == r]).items():
            if a is not None:
                out[k].append(a)
    return {k: float(np.mean(v)) if v else float("nan") for k, v in out.items()}


def combination_table(tables: dict) -> pd.DataFrame:
    """Per way of combining the tasks (the paper's fixed weights first): the mean validation COVID loss of the kept
    epoch (what a choice may look at), the mean test COVID AUC with its interval, the paired difference from the
    fixed weights on the same seeds and test images, and the mean AUC of each lesion (0.5: a constant score)."""
    runs = tables["runs"]
    ref = whole_split(runs)
    ref = ref[ref["method"] == "ladnn"]
    kinds = ["fixed"] + [k for k in WEIGHTING_NAMES if k != "fixed" and (runs["task_weighting"] == k).any()]
    rows = []
    for k in kinds:
        at = ref if k == "fixed" else runs[(runs["task_weighting"] == k) & (runs["method"] == "ladnn")]
        y, P, g, _ = seed_matrix(tables, at)
        auc = runs_auc(y, P, g, N_BOOT)
        row = {"weighting": WEIGHTING_NAMES[k], "key": k, "seeds": len(at),
               "val COVID loss": float(at["val_covid_loss"].mean()), "auc": auc}
        if k == "fixed":
            row.update({"diff": 0.0, "diff_lo": float("nan"), "diff_hi": float("nan")})
        else:
            d = _paired(tables, at, ref)
            row.update({"diff": d["auc_diff"], "diff_lo": d["auc_diff_ci"][0], "diff_hi": d["auc_diff_ci"][1]})
        row.update(mean_lesion_aucs(tables, at))
        rows.append(row)
    return pd.DataFrame(rows)


def combination_view(comb: pd.DataFrame) -> pd.DataFrame:
    """`combination_table` for the page (points of AUC)."""
    f = lambda m, lo, hi: f"{100 * m:.1f}" if np.isnan(lo) else f"{100 * m:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
    out = pd.DataFrame({
        "weighting": comb["weighting"],
        "val COVID loss": [f"{x:.4f}" for x in comb["val COVID loss"]],
        "COVID AUC": [f(*v) for v in comb["auc"]],
        "vs fixed": ["reference" if k == "fixed" else f(m, lo, hi)
                     for k, m, lo, hi in zip(comb["key"], comb["diff"], comb["diff_lo"], comb["diff_hi"])],
    })
    for k in LESIONS:
        out[f"{k} AUC"] = [f"{100 * v:.0f}" if not np.isnan(v) else "n/a" for v in comb[k]]
    return out


def combination_sentence(comb: pd.DataFrame) -> str:
    """The choice on validation (lowest mean validation COVID loss), then what the test says of each method."""
    best = comb.loc[comb["val COVID loss"].idxmin()]
    other = comb[comb["key"] != "fixed"]
    better = other[other["diff_lo"] > 0]["weighting"].tolist()
    worse = other[other["diff_hi"] < 0]["weighting"].tolist()
    s = (f"Chosen on validation alone (the lowest mean validation COVID loss of the kept epoch), the setting would be "
         f"{best['weighting']}" + (" — the paper's own." if best["key"] == "fixed" else
                                  f", whose test AUC differs from the fixed weights' by {100 * best['diff']:+.1f} "
                                  f"points [{100 * best['diff_lo']:.1f}, {100 * best['diff_hi']:.1f}]."))
    s += (f" On the test split, {', '.join(better)} beat{'s' if len(better) == 1 else ''} the fixed weights"
          if better else " On the test split no method beats the fixed weights by more than its interval allows")
    s += (f"; {', '.join(worse)} fall{'s' if len(worse) == 1 else ''} below them." if worse else ".")
    return s


def plot_combination(comb: pd.DataFrame):
    """Each method's paired difference in test AUC from the paper's fixed weights, with its interval, in points of AUC
    (x 100) as the table above it."""
    other = comb[comb["key"] != "fixed"].iloc[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(other) + 1.3), layout="constrained")
    d = 100 * other["diff"].to_numpy()
    ax.errorbar(d, range(len(other)), xerr=[d - 100 * other["diff_lo"], 100 * other["diff_hi"] - d], fmt="o",
                capsize=3)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(other)), other["weighting"])
    ax.set(xlabel="test AUC difference from the fixed weights (x 100; paired by seed, 95%)")
    _readable(fig)
    return fig


def uncertainty_sentence(weights: pd.DataFrame) -> str:
    """How far uncertainty weighting's learned weights moved from 1, against the paper's ratio of 5 to 1."""
    moved = float((weights - 1).abs().to_numpy().max())
    last = weights.iloc[-1]
    return (f"The learned weights moved at most {moved:.3f} from their start at 1, ending at "
            f"{last['weight_COVID']:.3f} (COVID) and {last['weight_lesions']:.3f} (lesions): with this recipe's "
            "learning rate and few steps, uncertainty weighting trained with nearly equal weights, a ratio of about "
            f"{last['weight_COVID'] / last['weight_lesions']:.2f} to 1 where the paper fixes 5 to 1.")


def uncertainty_weights(tables: dict) -> pd.DataFrame:
    """Uncertainty weighting's learned weights exp(-s_t) at the end of each epoch, mean over seeds."""
    h, runs = tables["history"], tables["runs"]
    names = runs.loc[runs["task_weighting"] == "uncertainty", "run"]
    h = h[h["run"].isin(names)]
    if h.empty:
        return pd.DataFrame()
    return h.groupby("epoch")[["weight_COVID", "weight_lesions"]].mean().round(3)


def test_split_size(tables: dict) -> dict[str, int]:
    """The test split every run is scored on: its images, patients (resampling clusters) and COVID-19 patients."""
    pred = tables["predictions"]
    one = pred[pred["run"] == pred["run"].iloc[0]]
    return {"images": len(one), "patients": int(one[PRED.group].nunique()),
            "covid_patients": int(one.loc[one[PRED.y_true] == 1, PRED.group].nunique())}


def detectable_bullet(tables: dict, curve: pd.DataFrame, comb: pd.DataFrame) -> str:
    """The lab's limit of resolution in words, from the tables the page shows: the learning curve's detectable
    differences (80% power, points of AUC rounded as `curve_table` rounds them) and the width of the other
    combinations' paired intervals against the fixed weights (`combination_view`)."""
    n = test_split_size(tables)
    det = [round(100 * x, 1) for x in curve["detectable"]]
    other = comb[comb["key"] != "fixed"]
    widths = [round(100 * (hi - lo), 1) for lo, hi in zip(other["diff_lo"], other["diff_hi"])]
    span = lambda v: f"{min(v):.1f}" if min(v) == max(v) else f"{min(v):.1f} to {max(v):.1f}"
    out = (f"The official test split holds {n['images']} images of {n['patients']} patients ({n['covid_patients']} with "
           f"COVID-19). On the learning curve these runs would detect, with 80% power, a paired difference of "
           f"{span(det)} points of AUC (the \"detectable\" column)")
    if widths:
        out += f"; the other combinations' paired intervals against the fixed weights are {span(widths)} points wide"
    return out + ". A difference below these sizes may exist and go unseen."


def limits(tables: dict, curve: pd.DataFrame, comb: pd.DataFrame) -> str:
    """The bullets of "What this lab cannot tell", the second generated from the tables (`detectable_bullet`)."""
    fixed = [("- One backbone and one recipe: the top three blocks of EfficientNet-Lite0 fine-tuned for five epochs "
              "on cached activations. A full fine-tune, other backbones or more epochs may behave otherwise."),
             ("- The subsets are drawn per seed, so the curve's intervals include the luck of which patients were "
              "drawn as well as the training seed."),
             ("- The combination methods see two tasks, not the six terms of the loss; weighing the five lesions one "
              "by one would cost three times as many backward passes per step (six tasks instead of two).")]
    return "\n".join([fixed[0], f"- {detectable_bullet(tables, curve, comb)}", *fixed[1:]])


def committed_must_match(root: str | Path) -> tuple[list[tuple[str, Config]], pd.DataFrame, dict[str, int]]:
    """What the committed results must match today: the lab profile's runs that the chapter reads (the matrix's and
    the lab's; not the ablations), the official test split (image, y_true) and each run's training images."""
    from ladnn.data import splits, train_subset
    from ladnn.profiles import load_profile, run_name

    prof = load_profile("lab", Path(root))
    runs = [(run_name(c), c) for c in prof["runs"]] + prof["lab_runs"]
    data = splits(runs[0][1])
    test = pd.DataFrame({PRED.image: data["test"]["name"], PRED.y_true: data["test"]["covid"].astype(int)})
    sizes = {name: len(train_subset(data["train"], c.train_fraction, c.seed)) for name, c in runs}
    return runs, test, sizes


def check_committed(tables: dict, profile_runs: list[tuple[str, Config]], test_images: pd.DataFrame,
                    train_sizes: dict[str, int]) -> list[str]:
    """Differences between the committed results and today's lab profile and data: the runs and their configs,
    the test images and labels, the training images of every run. Empty when they match."""
    problems = []
    runs = tables["runs"].set_index("run")
    want = {name: json.dumps(c.to_dict(), sort_keys=True) for name, c in profile_runs}
    if set(want) != set(runs.index):
        problems.append(f"runs differ: missing {sorted(set(want) - set(runs.index))}, "
                        f"extra {sorted(set(runs.index) - set(want))}")
    for name in sorted(set(want) & set(runs.index)):
        if runs.loc[name, "config"] != want[name]:
            problems.append(f"{name}: its config differs from the lab profile's today")
        if int(runs.loc[name, "train_images"]) != train_sizes[name]:
            problems.append(f"{name}: {runs.loc[name, 'train_images']} training images, today "
                            f"{train_sizes[name]}")
    pred = tables["predictions"]
    for name, p in pred.groupby("run"):
        cols = [PRED.image, PRED.y_true]
        got = p.sort_values(PRED.image)[cols].reset_index(drop=True)
        if not got.equals(test_images.sort_values(PRED.image)[cols].reset_index(drop=True)):
            problems.append(f"{name}: its test images or labels differ from today's test split")
    return problems
