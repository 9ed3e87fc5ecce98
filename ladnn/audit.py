"""Checks of the paper's code and numbers, run on our own data and predictions (book: Reproduction notes)."""
from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
from sklearn import metrics as skm
from sklearn.preprocessing import MultiLabelBinarizer

from ladnn.config import LESIONS
from ladnn.data import SPLIT_DIR, data_dir

# Code/train.py's label classes, as described in shared/paper/README.md (its binarizer spells two lesions otherwise)
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
        paper = pd.DataFrame(mlb.fit_transform(tokens), columns=["COVID", *LESIONS]).sum()
    from ladnn.data import parse_label_csv

    ours = parse_label_csv(path)[["covid", *LESIONS]].sum()
    ours.index = ["COVID", *LESIONS]
    return pd.DataFrame({"ours (strict parser)": ours, "paper code's binarizer": paper})


def thresholded_auc(pred: pd.DataFrame) -> dict:
    """AUC from probabilities, the paper code's AUC of 0/1 decisions, and balanced accuracy (which the latter equals)."""
    y, p = pred["y_true"], pred["p_covid"]
    return {"AUC (probabilities)": skm.roc_auc_score(y, p),
            "AUC of 0/1 decisions (paper code)": skm.roc_auc_score(y, (p >= 0.5).astype(int)),
            "balanced accuracy": skm.balanced_accuracy_score(y, (p >= 0.5).astype(int))}
