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
    """`thresholded_auc` of every run, one row per run (rounded)."""
    rows = {Path(p).name: thresholded_auc(FinishedRun(p).predictions) for p in runs["path"]}
    return pd.DataFrame(rows).T.round(4)


def recipe_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The fine-tuning settings of a profile's runs, one row per distinct recipe."""
    cols = ["backbone", "method", "finetune", "top_blocks", "head", "lr", "epochs", "views", "tta", "covid_weight",
            "lesion_mask", "loss_reduction"]
    return runs[cols].drop_duplicates(subset=["backbone", "method", "finetune", "head", "lr"]).reset_index(drop=True)
