"""The Data chapter: the paper's Table 1 and Figure 3 recomputed from the data, and a sample of images."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

from ladnn.config import LESIONS
from ladnn.data import D1_SPLIT_RATIOS, groups_of
from ladnn.report import FIG_WIDTH, paper_table, short_name

SPLITS = {"train": "training", "val": "validation", "test": "test"}
# The paper's count of positives without lesion information (its footnote 2 and the text on Figure 3 (b)).
PAPER_NO_LESION = 18
# Table 1's quantities in reading order, with their names on the page.
QUANTITIES = {"images": "images", **{f"{s}_images": f"{w} images" for s, w in SPLITS.items()},
              "patients": "patients", **{f"{s}_patients": f"{w} patients" for s, w in SPLITS.items()}}
# Where the patient ids of each part come from (`ladnn.data`).
PATIENT_ORIGIN = {("D0", "positive"): "the patient column of LA-DNN's `COVID-CT-MetaInfo_new.csv`",
                  ("D0", "negative"): "COVID-CT's `NonCOVID-CT-MetaInfo.csv`",
                  ("D1", "positive"): "the file names", ("D1", "negative"): "the file names"}
# Figure text: about 10 pt or more once a figure of FIG_WIDTH inches is scaled to the 800 px column.
FONT = 11


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


def table1_cells(df: pd.DataFrame) -> pd.DataFrame:
    """`table1` narrow enough for the page: one row per dataset and class, one column per split (and all images),
    each cell "images (patients)", or the image count alone where the patients are not known."""
    t = table1(df)
    out = t[["dataset", "class"]].copy()
    for col, prefix in (("all", ""), *((w, f"{s}_") for s, w in SPLITS.items())):
        out[col] = [f"{i}" if pd.isna(p) else f"{i} ({p})"
                    for i, p in zip(t[f"{prefix}images"], t[f"{prefix}patients"])]
    return out


def table1_for_page(df: pd.DataFrame) -> Styler:
    """`table1_cells` without a row index, captioned."""
    return (table1_cells(df).style.hide(axis="index")
            .set_caption("images (patients) per split; an image count alone where the patients are not known"))


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


def table1_differences(df: pd.DataFrame) -> pd.DataFrame:
    """Only the counts of `table1_comparison` that differ from the paper's: dataset, class, quantity (in words),
    paper, ours (<NA>: not known), in the order of the paper's table and of `QUANTITIES`."""
    cmp = table1_comparison(df)
    order = {k: i for i, k in enumerate(paper_table(1)[["dataset", "class"]].itertuples(index=False, name=None))}
    bad = cmp[~cmp["agrees"]].copy()
    bad["_row"] = [order[k] for k in zip(bad["dataset"], bad["class"])]
    bad["_q"] = bad["quantity"].map(list(QUANTITIES).index)
    bad = bad.sort_values(["_row", "_q"])
    bad["quantity"] = bad["quantity"].map(QUANTITIES)
    return bad[["dataset", "class", "quantity", "paper", "ours"]].reset_index(drop=True)


def differences_for_page(df: pd.DataFrame) -> Styler:
    """`table1_differences` without a row index, each dataset and class named on its first row only, and "not
    known" where we cannot count."""
    t = table1_differences(df)
    shown = t.astype({"ours": object}).copy()
    shown["ours"] = ["not known" if pd.isna(o) else str(o) for o in t["ours"]]
    first = ~t.duplicated(["dataset", "class"])
    shown.loc[~first, "class"] = ""
    shown.loc[t["dataset"].duplicated(), "dataset"] = ""
    rule = ["border-top: 1px solid #bbb" if f and i else "" for i, f in enumerate(first)]  # a line between parts
    return shown.style.hide(axis="index").apply(lambda col: rule, axis=0)


def agreement_sentence(df: pd.DataFrame) -> str:
    """How many of the paper's Table 1 counts ours match, and which."""
    cmp = table1_comparison(df)
    ok = cmp[cmp["agrees"]]
    which = "; ".join(f"{ds} {cls}: " + ", ".join(QUANTITIES[q] for q in g["quantity"])
                      for (ds, cls), g in ok.groupby(["dataset", "class"], sort=False))
    return (f"{len(ok)} of the paper's {len(cmp)} counts in Table 1 agree with ours"
            + (f" ({which})" if len(ok) else "") + f". The {len(cmp) - len(ok)} that differ:")


def differences_sentence(df: pd.DataFrame) -> str:
    """Why our Table 1 differs from the paper's, as a numbered Markdown list, with every number read from the data
    and the paper's table."""
    paper = paper_table(1).set_index(["dataset", "class"])
    ours = table1(df).set_index(["dataset", "class"])
    d0 = df[df["dataset"] == "D0"]
    pos, neg = int(d0["covid"].sum()), int((d0["covid"] == 0).sum())
    p_pos, p_neg = int(paper.loc[("D0", "positive"), "images"]), int(paper.loc[("D0", "negative"), "images"])
    moved = pos - p_pos
    where = [w for s, w in SPLITS.items() if ours.loc[("D0", "positive"), f"{s}_images"]
             != paper.loc[("D0", "positive"), f"{s}_images"]]
    d1 = df[df["dataset"] == "D1"]
    p_d1 = int(paper.loc[("D1", "positive"), "images"] + paper.loc[("D1", "negative"), "images"])
    neg_pat = int(paper.loc[("D0", "negative"), "patients"]), ours.loc[("D0", "negative"), "patients"]
    pat_note = ""
    if pd.notna(neg_pat[1]) and neg_pat[0] - int(neg_pat[1]) == moved:
        pat_note = (f"; the paper's D0 negatives also have {moved} more patients ({neg_pat[0]} against "
                    f"{int(neg_pat[1])}), as if each relabelled image came from a patient of its own")
    ours_pat = ours.loc[("D0", "positive")]
    split_pat = "/".join(str(ours_pat[f"{s}_patients"]) for s in SPLITS)
    paper_pat = "/".join(str(int(paper.loc[("D0", "positive"), f"{s}_patients"])) for s in SPLITS)
    unknown = [f"{ds} {cls}" for (ds, cls), r in ours.iterrows() if pd.isna(r["patients"])]
    as_one = d1[(d1["patient"] != "") & (d1["patient"] == d1["source"])]
    one_note = (f"; where a D1 file name names a collection but no patient ({len(as_one)} images), the collection "
                f"counts as one patient, so D1's patient counts are too small" if len(as_one) else "")
    return (f"Why they differ:\n\n"
            f"1. The released split files list {pos} positives and {neg} negatives in D0; the paper counts {p_pos} "
            f"and {p_neg}: its footnote says {moved} of the positives should have been negatives, and it relabelled "
            f"them, while the split files still call them positive. The difference lies in the "
            f"{' and '.join(where) or 'no'} split{'s' if len(where) > 1 else ''}{pat_note}.\n"
            f"2. Only {len(d1)} of D1's {p_d1} images are in this data copy (its README names the missing archives), "
            f"so every D1 and D0+D1 count is smaller.\n"
            f"3. Where some image has no patient id ({', '.join(unknown) or 'nowhere'}), we do not count patients{one_note}.\n"
            f"4. Per split, our D0 positives come from {split_pat} patients (training/validation/test) against the "
            f"paper's {paper_pat}: the patient ids of the metadata file do not reproduce the paper's counts exactly.")


def copy_summary(info: dict) -> str:
    """What the data copy holds, from `ladnn.data.check(verify=False)`, in a sentence."""
    d0, d1 = info["D0"], info["D1"]
    arch = d1["archives"]
    absent = ", ".join(f"`{a.rsplit('/', 1)[-1]}`" for a in arch["absent"]) or "none"
    return (f"This copy holds D0's {d0['covid']} COVID and {d0['noncovid']} non-COVID images, and {d1['found']} "
            f"of D1's {d1['of_paper']} images ({d1['covid']} COVID, {d1['noncovid']} non-COVID) from "
            f"{len(arch['present'])} of the {arch['pinned']} D1 archives of the pinned LA-DNN commit. Absent: "
            f"{absent}; `ladnn data fetch` downloads them and checks each against its git blob id.")


def table1_prose(df: pd.DataFrame) -> str:
    """Where Table 1's splits and patient counts come from, part by part, with the numbers read from `df`."""
    ratios = "/".join(f"{round(100 * r)}" for r in D1_SPLIT_RATIOS.values())
    intro = (f"D0 keeps the paper's own split files. D1 comes with none, so `ladnn` puts each patient (where the "
             f"file name names none, each article or collection) in training, validation or test by a hash of its "
             f"name, in the ratios {ratios} that the caption of the paper's Table 1 gives. A patient count is shown "
             f"only where every image of a cell has a patient id. Per part:")
    lines = [intro, ""]
    t = table1(df).set_index(["dataset", "class"])
    for (ds, cls), origin in PATIENT_ORIGIN.items():
        part = df[(df["dataset"] == ds) & (df["covid"] == (cls == "positive"))]
        if not len(part):
            continue
        n = len(part)
        head = f"- {ds} {cls}s ({n} images):"
        if (part["patient"] == "").all():
            lines.append(f"{head} no image has a patient id (the file names name only the article), so only "
                         f"images are counted, in this row and in every D0+D1 {cls} cell that includes them.")
            continue
        if (part["patient"] == "").any():
            lines.append(f"{head} {int((part['patient'] != '').sum())} images have a patient id, so only images "
                         f"are counted.")
            continue
        per = []
        for coll, g in part.groupby("collection", sort=True):
            if part["collection"].nunique() == 1 and (g["patient"] != g["source"]).all():
                break  # one collection whose images name their patients: nothing to add
            name = coll.removeprefix("D1:").split("_")[-1]
            if (g["patient"] == g["source"]).all():
                per.append(f"the {len(g)} {name} images carry only an image number, so they count as one patient "
                           f"(a collection, not a person; likewise in D0+D1's {cls} row)")
            else:
                per.append(f"{name}, {g['patient'].nunique()} patients in {len(g)} images")
        lines.append(f"{head} {t.loc[(ds, cls), 'patients']} patients, read from {origin}"
                     + (": " + "; ".join(per) if per else "") + ".")
    return "\n".join(lines)


def d1_split_sentence(df: pd.DataFrame) -> str:
    """How D1's images present fall into the splits, by class, and why a class can land in one split."""
    d1 = df[df["dataset"] == "D1"]
    if not len(d1):
        return "No D1 image is present, so D1's rows are empty."
    parts, single = [], []
    for cls, c in (("positives", d1[d1["covid"] == 1]), ("negatives", d1[d1["covid"] == 0])):
        if not len(c):
            continue
        n_groups = len(set(groups_of(c)))
        split = "/".join(str(int((c["split"] == s).sum())) for s in SPLITS)
        parts.append(f"its {len(c)} {cls} form {n_groups} group{'s' if n_groups > 1 else ''} and fall {split}")
        if (c["split"].nunique() == 1) or n_groups < len(SPLITS):
            single.append(cls)
    out = ("In this copy of D1, " + "; ".join(parts) + " into training/validation/test (a group is a patient, or "
           "an article or collection where no patient is named).")
    if single:
        out += (f" Grouping keeps every group on one side, so D1's {' and '.join(single)}, which come from fewer "
                f"groups than there are splits, cannot fill all three splits.")
    return out


def lesion_basis_sentence(df: pd.DataFrame) -> str:
    """Which positives Figure 3 (a)-(c) counts: those with lesion annotations, by dataset."""
    pos = df[df["covid"] == 1]
    ann = pos[pos["lesions_known"]]
    by = {ds: int((ann["dataset"] == ds).sum()) for ds in ("D0", "D1")}
    tot = {ds: int((pos["dataset"] == ds).sum()) for ds in ("D0", "D1")}
    return (f"Panels (a)-(c) count the {len(ann)} positive images whose captions were annotated for lesions (an "
            f"annotation may name no lesion at all): {by['D0']} of D0's "
            f"{tot['D0']} positives and {by['D1']} of the {tot['D1']} D1 positives present (a D1 positive is "
            f"annotated only if D1's metadata file lists it).")


def no_lesion_sentence(df: pd.DataFrame) -> str:
    """How many annotated positives carry no lesion label, against the paper's count."""
    pos = df[(df["covid"] == 1) & df["lesions_known"]]
    none = int((pos[list(LESIONS)].sum(axis=1) == 0).sum())
    return (f"{none} of these {len(pos)} annotated images name no lesion; the paper reports {PAPER_NO_LESION} "
            f"positives without lesion information. We have not found what explains the difference: the paper does "
            f"not say how it counted.")


def lesion_figure(df: pd.DataFrame):
    """Figure 3 (a)-(d), two panels to a row: lesion counts, lesion labels per positive image, co-occurrence,
    negatives by collection; sized for the page (`FIG_WIDTH`, `FONT`)."""
    import seaborn as sns

    pos = df[(df["covid"] == 1) & df["lesions_known"]]
    with plt.rc_context({"font.size": FONT, "axes.titlesize": FONT + 1, "axes.labelsize": FONT,
                         "xtick.labelsize": FONT, "ytick.labelsize": FONT}):
        fig, ax = plt.subplots(2, 2, figsize=(FIG_WIDTH, 7.2))
        ax = ax.ravel()
        counts = pos[list(LESIONS)].sum()
        sns.barplot(x=list(LESIONS), y=counts.values, ax=ax[0], color="C0")
        ax[0].set(title="(a) images with each lesion", ylabel="images")
        ax[0].tick_params(axis="x", rotation=30)
        per = pos[list(LESIONS)].sum(axis=1).value_counts().sort_index()
        sns.barplot(x=per.index.astype(str), y=per.values, ax=ax[1], color="C1")
        ax[1].set(title="(b) lesion labels per image", xlabel="lesion labels", ylabel="images")
        co = pos[list(LESIONS)].T.dot(pos[list(LESIONS)])
        sns.heatmap(co, annot=True, fmt="d", cmap="Blues", ax=ax[2], cbar=False, annot_kws={"size": FONT})
        ax[2].set(title="(c) lesion co-occurrence")
        ax[2].tick_params(axis="x", rotation=30)
        ax[2].tick_params(axis="y", rotation=0)
        comp = negative_composition(df)
        ax[3].barh([textwrap.fill(s, 16) for s in comp.index], comp.values, color="C2")
        ax[3].set(title="(d) negatives by collection", xlabel="images")
        fig.tight_layout()
    return fig


def negative_composition(df: pd.DataFrame) -> pd.Series:
    """Negative images per collection (`ladnn.data`: D0's MedPix and crawled paper figures, D1's collections),
    labelled with their dataset, fewest first."""
    neg = df[df["covid"] == 0]
    lab = np.where(neg["dataset"] == "D0", "D0 " + neg["collection"],
                   "D1 " + neg["collection"].str.removeprefix("D1:").str.split("_").str[-1])
    return pd.Series(lab).value_counts().sort_values()


def sample_grid(df: pd.DataFrame, n: int = 4, seed: int = 0, cols: int = 4):
    """`n` COVID and `n` non-COVID images drawn at random (`seed`), `cols` to a row, each titled by its file name
    (shortened and wrapped to the panel); sized for the page (`FIG_WIDTH`, `FONT`)."""
    from ladnn.images import decode, read_bytes

    rows = -(-n // cols)
    panel = FIG_WIDTH / cols
    chars = int((panel - 0.15) * 72 / (0.62 * FONT))  # characters of FONT pt that fit a panel
    fig = plt.figure(figsize=(FIG_WIDTH, 2 * rows * (0.78 * panel + 0.4) + 0.6), layout="constrained")
    for sub, (cls, label) in zip(fig.subfigures(2, 1), ((1, "COVID-19 positive"), (0, "non-COVID"))):
        sub.suptitle(f"{label}: {n} images drawn at random", fontsize=FONT + 1)
        ax = np.atleast_1d(sub.subplots(rows, cols)).ravel()
        pick = df[df["covid"] == cls].sample(n, random_state=seed)
        for a, (_, row) in zip(ax, pick.iterrows()):
            a.imshow(decode(read_bytes(row["image"]), row["image"]))
            a.set_title(_short(row["name"], chars), fontsize=FONT)
        for a in ax:
            a.axis("off")
    return fig


def _short(name: str, width: int, lines: int = 2) -> str:
    """`name` in at most `lines` lines of `width` characters, its middle elided if longer."""
    return "\n".join(textwrap.wrap(short_name(name, width * lines), width, break_long_words=True,
                                   break_on_hyphens=False))


def cli_seconds(*args: str) -> float:
    """Wall-clock seconds of the command `ladnn ARGS` (the installed script, else `python -m ladnn.cli`), which
    must succeed; for the page's run times."""
    exe = shutil.which("ladnn")
    cmd = [exe, *args] if exe else [sys.executable, "-c", "from ladnn.cli import main; main()", *args]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=os.environ.copy())
    return time.perf_counter() - t0


def try_it(check_seconds: float, page_seconds: float) -> str:
    """The page's Try-it box (MyST), with the run times measured while the book was built."""
    return f"""````{{admonition}} Try it
:class: tip
See what another copy of the data holds, for instance after `ladnn data fetch` has added D1 archives to it:

```bash
LADNN_DATA_DIR=/path/to/your/data ladnn data check --no-verify
```

It took {check_seconds:.1f} s when this book was built. It prints how many COVID and non-COVID images D0 has and how
its split divides them, how many of D1's images it found, and which D1 archives are absent. Without `--no-verify` it
also checks every file against the pinned SHA-256 digests.

To recompute this page on that copy (it reads no runs, so nothing is trained), run from the repository root

```bash
LADNN_DATA_DIR=/path/to/your/data \\
    papermill -k python3 notebooks/data.ipynb /tmp/data.ipynb
```

and open `/tmp/data.ipynb` in Jupyter. Its cells took {page_seconds:.0f} s when this book was built, plus the time
papermill needs to start a kernel. Every D1 archive you add moves images into the D1 and D0+D1 rows of Table 1, and
the table of differences loses the counts that then match the paper's.
````"""
