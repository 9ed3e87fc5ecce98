"""The Reproduction notes: checks of the paper's code and numbers, run on our own data and predictions. The paper's
code is `Code/train.py` of GitHub xiaoxuegao499/LA-DNN-for-COVID-19-diagnosis, commit 39a5fca."""
from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
from sklearn import metrics as skm
from sklearn.preprocessing import MultiLabelBinarizer

from ladnn.config import LESIONS, TASKS
from ladnn.data import SPLIT_DIR, data_dir, parse_label_csv
from ladnn.metrics import auc
from ladnn.rundir import FinishedRun
from ladnn.scores import PRED

# Code/train.py's label classes (its binarizer spells two lesions otherwise than the split files do)
PAPER_CODE_CLASSES = ["CVD19", "GGO", "Csld", "CrPa", "Aibr", "InSep"]


def paper_binarizer_counts(root=None) -> pd.DataFrame:
    """Positive labels per lesion in the training split: read by our parser vs by a MultiLabelBinarizer with the
    paper code's class names (unknown tokens are silently ignored there, which is what dropped two lesions)."""
    import warnings

    path = Path(data_dir(root)) / SPLIT_DIR / "train_meta.csv"
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    tokens = [[t for t in r[1:] if t] for r in rows]
    mlb = MultiLabelBinarizer(classes=PAPER_CODE_CLASSES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the paper's code hid this same warning ("unknown class(es) ... ignored")
        paper = pd.DataFrame(mlb.fit_transform(tokens), columns=list(TASKS)).sum()
    ours = parse_label_csv(path)[["covid", *LESIONS]].sum()
    ours.index = list(TASKS)
    return pd.DataFrame({"ours (strict parser)": ours, "paper code's binarizer": paper})


def thresholded_auc(pred: pd.DataFrame) -> dict:
    """AUC from probabilities, the paper code's AUC of 0/1 decisions, and balanced accuracy (which the latter equals)."""
    y, p = pred[PRED.y_true], pred[PRED.p_covid]
    return {"AUC (probabilities)": auc(y, p),
            "AUC of 0/1 decisions (paper code)": auc(y, (p >= 0.5).astype(int)),
            "balanced accuracy": skm.balanced_accuracy_score(y, (p >= 0.5).astype(int))}


def thresholded_auc_table(runs: pd.DataFrame) -> pd.DataFrame:
    """`thresholded_auc` of every run, one row per run (indexed by the run folder's name, unrounded)."""
    rows = {Path(p).name: thresholded_auc(FinishedRun(p).predictions) for p in runs["path"]}
    return pd.DataFrame(rows).T


# thresholded_auc's columns as the page heads them
AUC_HEADERS = {"AUC (probabilities)": "AUC of the probabilities",
               "AUC of 0/1 decisions (paper code)": "paper code\u2019s \u201cAUC\u201d (of 0/1 decisions)",
               "balanced accuracy": "balanced accuracy (threshold 0.5)"}
RUN_KEYS = ["backbone", "dataset", "method", "seed"]


def run_index(runs: pd.DataFrame) -> pd.MultiIndex:
    """An index of `runs` by backbone, dataset, method (as the book names it) and seed, without the levels that hold
    one value for every run (a single backbone or dataset)."""
    from ladnn.report import METHOD_NAMES

    keys = [k for k in RUN_KEYS if k in ("method", "seed") or runs[k].nunique() > 1]
    cols = [runs[k].map(METHOD_NAMES).fillna(runs[k]) if k == "method" else runs[k] for k in keys]
    return pd.MultiIndex.from_arrays(cols, names=keys)


def thresholded_auc_view(runs: pd.DataFrame, table: pd.DataFrame | None = None, digits: int = 3) -> pd.DataFrame:
    """`thresholded_auc_table` for the page: one row per run indexed by `run_index`, sorted, readable headers,
    rounded to `digits` decimals."""
    t = thresholded_auc_table(runs) if table is None else table
    runs = runs.sort_values(RUN_KEYS)
    t = t.loc[[Path(p).name for p in runs["path"]]].rename(columns=AUC_HEADERS)
    t.index = run_index(runs)
    return t.round(digits)


def paper_auc_sentence(table: pd.DataFrame, tol: float = 1e-9) -> str:
    """Markdown: whether the paper code's AUC equals the balanced accuracy on every run of `table`
    (`thresholded_auc_table`, unrounded), checked run by run, and how far both lie below the AUC of the
    probabilities."""
    paper, bacc = table["AUC of 0/1 decisions (paper code)"], table["balanced accuracy"]
    diff = (paper - bacc).abs()
    n, same = len(table), int((diff <= tol).sum())
    if same == n:
        how = "exactly" if diff.max() == 0 else f"to within {diff.max():.0e}"
        first = f"On all {n} runs the paper code's \"AUC\" equals the balanced accuracy, {how}."
    else:
        first = (f"On {n - same} of the {n} runs the paper code's \"AUC\" differs from the balanced accuracy (largest "
                 f"difference {diff.max():.3g}), which the argument above does not allow: check those runs' "
                 "predictions.")
    gap = table["AUC (probabilities)"] - paper
    if gap.min() > 0:
        second = (f"It is {gap.min():.3f} to {gap.max():.3f} lower than the AUC of the probabilities, so a table of "
                  "it is not comparable with AUCs computed from scores.")
    elif gap.max() < 0:
        second = f"Here it is {-gap.max():.3f} to {-gap.min():.3f} higher than the AUC of the probabilities."
    else:
        second = (f"The AUC of the probabilities minus it ranges from {gap.min():.3f} to {gap.max():.3f} over the "
                  "runs.")
    return f"{first} {second}"


# recipe_table's columns (the `ladnn train` options) and what each sets, in the page's words
RECIPE_SETTINGS = {"backbone": "the network (timm name)", "method": "COVID only, or COVID and 5 lesions",
                   "finetune": "what trains: full, head or top", "top_blocks": "blocks trained (with top)",
                   "head": "output head: linear or fc3", "lr": "Adam learning rate", "epochs": "epochs",
                   "views": "cached augmented views per image", "tta": "test-time views averaged",
                   "covid_weight": "weight of the COVID loss term", "lesion_mask": "images given lesion terms",
                   "loss_reduction": "how the loss is averaged"}


def recipe_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The fine-tuning settings of a profile's runs, one row per distinct recipe."""
    cols = list(RECIPE_SETTINGS)
    return runs[cols].drop_duplicates(subset=["backbone", "method", "finetune", "head", "lr"]).reset_index(drop=True)


def _values(values: pd.Series) -> str:
    """The distinct values of one setting, in order of first appearance, as text."""
    return ", ".join(str(v) for v in dict.fromkeys(values))


def recipe_view(runs: pd.DataFrame) -> pd.DataFrame:
    """`recipe_table` turned on its side for the page: one row per `ladnn train` option (`--lr`, ...), with what it
    sets and its `value`: the value when every recipe shares it, else each method's value when the method decides it
    ('baseline: x; LA-DNN: y'), else the distinct values. Methods are given the book's names."""
    from ladnn.report import METHOD_NAMES

    rec = recipe_table(runs)
    rows = []
    for col, meaning in RECIPE_SETTINGS.items():
        v = rec[col]
        if col == "method":
            value = _values(v.map(METHOD_NAMES).fillna(v))
        elif v.nunique() == 1:
            value = str(v.iloc[0])
        elif col != "backbone" and rec.groupby("method")[col].nunique().max() == 1:
            per = rec.groupby("method", sort=False)[col].first()
            value = "; ".join(f"{METHOD_NAMES.get(m, m)}: {x}" for m, x in per.items())
        else:
            value = _values(v)
        rows.append({"option": f"--{col.replace('_', '-')}", "sets": meaning, "value": value})
    return pd.DataFrame(rows).set_index("option")


def d1_sentence(info: dict) -> str:
    """Markdown: how many of the paper's D1 images the data folder holds, by class, and from how many of the
    pinned archives (`ladnn.data.check(...)["D1"]`)."""
    z = info.get("archives", {})
    pinned = z.get("pinned")
    of = f" of the {pinned} that the authors published" if pinned else ""
    return (f"The data folder holds {info['found']} of the paper's {info['of_paper']} new images (D1): "
            f"{info['covid']} COVID and {info['noncovid']} non-COVID, from {len(info['zips'])} archive"
            f"{'s' if len(info['zips']) != 1 else ''}{of}.")


def d1_archives(info: dict) -> pd.DataFrame:
    """The D1 archives for the page, one row each (`ladnn.data.check(...)["D1"]`): folder (the upload date), class
    and whether the data folder holds it; no row numbers (show with `.style.hide(axis="index")`)."""
    z = info.get("archives", {})
    present = set(z.get("present", info["zips"]))
    every = sorted(present | set(z.get("absent", [])), key=lambda r: (tuple(int(x) for x in Path(r).parent.name.split(".")
                                                                          if x.isdigit()), r))
    return pd.DataFrame([{"archive": Path(r).name, "class": "non-COVID" if "nocovid" in Path(r).name else "COVID",
                          "here": "yes" if r in present else "no"} for r in every])
