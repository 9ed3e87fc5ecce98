"""The Data chapter: the paper's Table 1 and Figure 3 recomputed from the data, and a sample of images."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ladnn.config import LESIONS
from ladnn.report import paper_table


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
    """The number of patients of the images `d`, or None unless every image names its patient."""
    known = d[d["patient"] != ""]
    return int(known["patient"].nunique()) if len(known) == len(d) and len(d) else None


def table1_comparison(df: pd.DataFrame) -> pd.DataFrame:
    """Every count of the paper's Table 1 beside ours (`table1`), one row per dataset, class and quantity, and
    whether they agree."""
    ours = table1(df).set_index(["dataset", "class"])
    paper = paper_table(1).set_index(["dataset", "class"])
    out = []
    for key in paper.index:
        for col in ("images", "train_images", "val_images", "test_images", "patients", "train_patients",
                    "val_patients", "test_patients"):
            p, o = paper.loc[key, col], ours.loc[key, col] if key in ours.index else None
            if pd.notna(p):
                out.append({"dataset": key[0], "class": key[1], "quantity": col, "paper": int(p),
                            "ours": None if o is None or pd.isna(o) else int(o)})
    t = pd.DataFrame(out)
    t["ours"] = t["ours"].astype("Int64")
    t["agrees"] = (t["paper"] == t["ours"]).fillna(False).astype(bool)
    return t


def differences_sentence(df: pd.DataFrame) -> str:
    """Why our Table 1 differs from the paper's, with every number read from the data and the paper's table."""
    paper = paper_table(1).set_index(["dataset", "class"])
    d0 = df[df["dataset"] == "D0"]
    pos, neg = int(d0["covid"].sum()), int((d0["covid"] == 0).sum())
    p_pos, p_neg = int(paper.loc[("D0", "positive"), "images"]), int(paper.loc[("D0", "negative"), "images"])
    d1 = df[df["dataset"] == "D1"]
    p_d1 = int(paper.loc[("D1", "positive"), "images"] + paper.loc[("D1", "negative"), "images"])
    ours_pat = table1(df).set_index(["dataset", "class"]).loc[("D0", "positive")]
    split_pat = "/".join(str(ours_pat[f"{s}_patients"]) for s in ("train", "val", "test"))
    paper_pat = "/".join(str(int(paper.loc[("D0", "positive"), f"{s}_patients"])) for s in ("train", "val", "test"))
    return (f"The main reasons. (1) The released split files list {pos} positives and {neg} negatives in D0; the "
            f"paper counts {p_pos} and {p_neg}, because, its footnote says, {pos - p_pos} of the positives should "
            f"have been negatives, and it relabelled them (the split files were not changed). (2) Only {len(d1)} of "
            f"D1's {p_d1} images are in this data copy (see its README for the missing archives). (3) The COVID-CT "
            f"non-COVID images carry no patient ids, so their patients cannot be counted. (4) Per split, our D0 "
            f"positives come from {split_pat} patients (training/validation/test) against the paper's {paper_pat}: "
            f"the patient ids in the metadata file do not reproduce the paper's counts exactly.")


def lesion_figure(df: pd.DataFrame):
    """Figure 3 (a)-(d), two panels to a row: lesion counts, lesion labels per positive image, co-occurrence,
    negatives by source."""
    import seaborn as sns

    pos = df[(df["covid"] == 1) & df["lesions_known"]]
    fig, ax = plt.subplots(2, 2, figsize=(10, 7.6))
    ax = ax.ravel()
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
    """`n` COVID images (first row) and `n` non-COVID images drawn at random (`seed`), each titled by class and name;
    the page's width at most."""
    from ladnn.images import decode, read_bytes

    width = min(10, 2.3 * n)
    fig, ax = plt.subplots(2, n, figsize=(width, 2 * width / n + 1.2), squeeze=False)
    for r, (cls, label) in enumerate(((1, "COVID"), (0, "non-COVID"))):
        pick = df[df["covid"] == cls].sample(n, random_state=seed)
        for c, (_, row) in enumerate(pick.iterrows()):
            ax[r, c].imshow(decode(read_bytes(row["image"]), row["image"]))
            ax[r, c].set_title(f"{label}\n{row['name'][:22]}", fontsize=7)
            ax[r, c].axis("off")
    fig.tight_layout()
    return fig
