"""Scoring a run on labelled images: its test split or an external set (`evaluate_run`, `ladnn evaluate`), with
label sets read from a CSV or from class folders (`labels_table`, `external_table`), the per-patient scores, the ROC
figure and the summary; and many runs at once on the same images (`plain_probs`)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ladnn.config import LESIONS
from ladnn.data import splits
from ladnn.dicom import MIN_LUNG_FRACTION
from ladnn.infer import forward, image_outputs, inference_net
from ladnn.predict import Predictor
from ladnn.rundir import METRICS, PREDICTIONS
from ladnn.scores import AGGREGATION, PRED, evaluate_predictions, patient_scores, predictions_table
from ladnn.summary import Evaluation, Scores

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".dcm", ".dicom"}
DIAGNOSIS_COVID = {"covid-19", "covid19", "covid"}


def plain_probs(runs, images: list[tuple[bytes, str]], device: str = "auto") -> list[np.ndarray]:
    """Each run's probabilities of the plain view (tta 1) of the same images, given as (bytes, name): what
    `Predictor(run, tta=1).probs` gives, computed for many runs at once. An image is decoded and preprocessed once
    for all runs that preprocess alike, and runs whose frozen lower part holds the same weights (finetune head or
    top on one backbone's pretrained weights) share its activations, as training shares one activation cache:
    each such run adds only its upper part (ladnn.models.frozen_split)."""
    inputs: dict = {}
    lower_out: dict = {}
    out = []
    for run in runs:
        pr = Predictor(run, device, tta=1, onnx=False)  # a few images for many runs: no ONNX export per run
        key = (pr.size, tuple(pr.config.preprocess), repr(pr.window))
        if key not in inputs:
            inputs[key] = torch.cat([pr.preprocess(data, name)[1] for data, name in images])
        x = inputs[key]
        if pr.config.finetune == "full":
            out.append(pr.probs(x))
            continue
        from ladnn.models import frozen_split, weights_digest

        lower, upper = frozen_split(pr.config, pr.model)
        shared = (key, weights_digest(lower), repr(sorted(pr.data_config.items())))
        if shared not in lower_out:
            fast = inference_net(lower, pr.input(x[:2]))
            lower_out[shared] = image_outputs(fast, x, pr.data_config, pr.device)
        a = lower_out[shared]
        logits = forward(inference_net(upper, a[:2].to(pr.device)), a, pr.device)
        out.append(torch.sigmoid(logits).numpy())
    return out


def labels_table(csv_path: str | Path):
    """A labels CSV such as COVID-CT-MD's `labels.csv`: columns `file` (relative to the CSV's folder) and either
    `covid` (0/1) or `diagnosis` (COVID-19 is positive, anything else negative), optionally `patient` and
    `infected` (0/1/empty). A slice's label (`covid`) is its patient's; a slice of a COVID-19 patient whose
    `infected` is 0 shows no infection and is left out of the per-slice scores (`slice_scored` False), kept in its
    patient's score. Errors name the file and line."""
    import csv

    import pandas as pd

    path = Path(csv_path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: the BOM of a spreadsheet's "CSV UTF-8"
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = reader.fieldnames or []
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save it as CSV UTF-8") from None
    except csv.Error as e:
        raise ValueError(f"{path}:{reader.line_num}: not a readable CSV line ({e})") from None
    if header and not rows:
        raise ValueError(f"{path}: a header ({', '.join(header)}) and no rows")
    cols = set(rows[0]) if rows else set()
    if "file" not in cols or not cols & {"covid", "diagnosis"}:
        raise ValueError(f"{path}:1: a labels CSV needs the column 'file' and 'covid' or 'diagnosis'; has "
                         f"{sorted(cols)}")
    out = []
    home = path.parent.absolute()
    first_line: dict[Path, int] = {}
    for line, r in enumerate(rows, start=2):
        f = (r.get("file") or "").strip()
        if not f:
            raise ValueError(f"{path}:{line}: empty 'file'")
        image = Path(os.path.normpath(home / f))  # `..` resolved as written (a link inside the folder is followed)
        if not image.is_relative_to(home):
            raise ValueError(f"{path}:{line}: file {f!r} is outside the labels' folder {home}: paths in a labels "
                             "CSV stay inside its folder")
        if image in first_line:
            raise ValueError(f"{path}:{line}: file {f!r} is listed again (first on line {first_line[image]})")
        first_line[image] = line
        if not image.is_file():
            raise FileNotFoundError(f"{path}:{line}: file {f!r} not found ({image})")
        if "covid" in cols:
            v = (r["covid"] or "").strip()
            if v not in ("0", "1"):
                raise ValueError(f"{path}:{line}: column 'covid' must be 0 or 1, got {v!r}")
            covid = int(v)
        else:
            d = (r["diagnosis"] or "").strip()
            if not d:
                raise ValueError(f"{path}:{line}: empty 'diagnosis'")
            covid = int(d.lower() in DIAGNOSIS_COVID)
        inf = (r.get("infected") or "").strip()
        if inf not in ("", "0", "1"):
            raise ValueError(f"{path}:{line}: column 'infected' must be 0, 1 or empty, got {inf!r}")
        out.append({"name": f, "image": str(image), "covid": covid, "patient": (r.get("patient") or "").strip(),
                    "diagnosis": (r.get("diagnosis") or ("COVID-19" if covid else "not COVID-19")).strip(),
                    "slice_scored": not (covid and inf == "0"), "lesions_known": False, **{k: 0 for k in LESIONS}})
    if not out:
        raise ValueError(f"{path}: no rows")
    table = pd.DataFrame(out)
    table["line"] = range(2, len(table) + 2)
    for patient, g in table[table["patient"] != ""].groupby("patient", sort=False):
        if g["covid"].nunique() > 1:
            lines = ", ".join(f"{n} ({'COVID-19' if c else 'not COVID-19'})" for n, c in zip(g["line"], g["covid"]))
            raise ValueError(f"{path}: patient {patient!r} has conflicting labels on lines {lines}: a patient's "
                             "slices share its diagnosis")
    table = table.drop(columns="line")
    table.attrs["source"] = str(path)  # named in errors about the set as a whole
    return table


def external_table(folder: str | Path, labels: str | Path | None = None):
    """An external labelled set: a labels CSV (`labels`, else `labels.csv` in the folder; see `labels_table`), or
    `covid/` and `noncovid/` subfolders of images or DICOM files (each image its own patient)."""
    import pandas as pd

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: {'not a folder' if folder.exists() else 'does not exist'} (--images "
                                "takes a folder of images or DICOM files)")
    if labels or (folder / "labels.csv").is_file():
        return labels_table(labels or folder / "labels.csv")
    rows, skipped = [], []
    for sub, y in (("covid", 1), ("noncovid", 0)):
        d = folder / sub
        if not d.is_dir():
            raise FileNotFoundError(f"{folder}: expected labels.csv, or subfolders covid/ and noncovid/; {d} is "
                                    "missing")
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.suffix.lower() in IMAGE_EXT:
                rows.append({"name": f"{sub}/{p.relative_to(d)}", "image": str(p), "covid": y, "lesions_known": False,
                             "patient": "", "diagnosis": sub, "slice_scored": True, **{k: 0 for k in LESIONS}})
            elif p.is_file():
                skipped.append(f"{p}: not an image or DICOM file name (expected {', '.join(sorted(IMAGE_EXT))})")
    if not rows:
        raise FileNotFoundError(f"{folder}: no images found in covid/ or noncovid/")
    out = pd.DataFrame(rows)
    out.attrs.update(skipped=skipped, source=str(folder))
    return out


def score_table(pr: Predictor, df, progress: bool = False) -> tuple:
    """Predictions (the columns of predictions.csv, and for external sets `patient`, `lung_fraction` and
    `slice_scored`) of a sample table, and the scores of the scored slices; nothing is written."""
    res = pr.predict_files(df["image"], progress=progress)
    bad = [r for r in res if "error" in r]
    if bad:
        raise ValueError(f"{len(bad)} of the {len(res)} labelled image(s) could not be read; nothing was written "
                         "(an evaluation scores every labelled image or none):\n  "
                         + "\n  ".join(r["error"] for r in bad[:20]) + ("\n  ..." if len(bad) > 20 else ""))
    cols = PRED.probabilities(pr.tasks)
    pred = predictions_table(df, np.array([[r[c] for c in cols] for r in res]), pr.tasks)
    if "slice_scored" in df:
        lung = np.array([r.get(PRED.lung_fraction, np.nan) for r in res], dtype=float)
        pred[PRED.patient] = [p or n for p, n in zip(df["patient"], df["name"])]
        pred[PRED.group] = pred[PRED.patient]  # intervals resample whole patients
        pred[PRED.lung_fraction] = lung
        pred[PRED.slice_scored] = df["slice_scored"].to_numpy() & ~(lung < MIN_LUNG_FRACTION)
        if pred[PRED.slice_scored].sum() == 0:
            raise ValueError("no slice is left to score (every slice shows too little lung or is excluded)")
        scored = pred[pred[PRED.slice_scored]]
        if scored[PRED.y_true].nunique() < 2:
            raise ValueError(f"the {len(scored)} slices left to score (with lung, not excluded) hold one class "
                             "only: no AUC, sensitivity or specificity; nothing was written")
    else:
        scored = pred
    return pred, Scores.from_dict(evaluate_predictions(scored, seed=pr.config.seed))


def roc_figure(pred, scores: Scores, title: str, threshold: float = 0.5):
    """ROC curve (scikit-learn's RocCurveDisplay) with the chance line and the run's operating point; a bare
    matplotlib Figure, so no plotting backend or pyplot state is involved."""
    from matplotlib.figure import Figure
    from sklearn.metrics import RocCurveDisplay

    m, ci = scores.covid, scores.covid_ci95.auc
    fig = Figure(figsize=(4.6, 4.6))
    ax = fig.subplots()
    RocCurveDisplay.from_predictions(pred[PRED.y_true], pred[PRED.p_covid], ax=ax, name="COVID output",
                                     plot_chance_level=True)
    ax.plot(1 - m.specificity, m.sensitivity, "o", color="black",
            label=f"threshold {threshold:g}: sens. {m.sensitivity:.2f}, spec. {m.specificity:.2f}")
    ax.set_title(f"{title}\nAUC {m.auc:.3f} (95% interval {ci[0]:.3f} to {ci[1]:.3f})", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def summary_text(e: Evaluation, threshold: float = 0.5) -> str:
    """A short human-readable summary of an evaluation: counts, AUC with its interval, sensitivity and specificity
    at the run's threshold (counts in brackets), and where the files went."""
    m, ci = e.covid, e.covid_ci95
    pos = m.n_pos
    neg = m.n - pos
    lines = [(f"Evaluated on {e.evaluated_on}: {m.n} images, {pos} COVID and {neg} non-COVID, "
             f"in {e.clusters} resampling clusters ({e.cluster_note}).")]
    if m.auc is None:
        lines.append("AUC: undefined (the images hold only one class).")
    else:
        lines.append(f"AUC {m.auc:.3f} (95% interval {ci.auc[0]:.3f} to {ci.auc[1]:.3f}).")
    lines.append(f"At the run's threshold {threshold:g}: sensitivity {m.sensitivity:.3f} "
                 f"({round(m.sensitivity * pos)}/{pos}; 95% interval {ci.sensitivity[0]:.3f} to "
                 f"{ci.sensitivity[1]:.3f}), specificity {m.specificity:.3f} ({round(m.specificity * neg)}/"
                 f"{neg}; {ci.specificity[0]:.3f} to {ci.specificity[1]:.3f}).")
    if e.slices:
        lines.append(f"Scored: {e.slices}.")
    if e.per_patient is not None:
        pm, pc = e.per_patient.covid, e.per_patient.covid_ci95
        auc = "undefined (one class)" if pm.auc is None else f"{pm.auc:.3f} (95% interval {pc.auc[0]:.3f} to {pc.auc[1]:.3f})"
        lines.append(f"Per patient ({pm.n} patients, {pm.n_pos} COVID-19; {e.aggregation}): AUC {auc}.")
    if e.window:
        lines.append(f"DICOM window: centre {e.window[0]:g} HU, width {e.window[1]:g} HU.")
    lines.append("Wrote " + ", ".join(e.files) + ".")
    return "\n".join(lines)


def evaluate_run(run_dir: str | Path, images: str | Path | None = None, data_dir=None, device: str = "auto",
                 labels: str | Path | None = None, window=None, progress: bool = False) -> Evaluation:
    """Score the run's test split (or an external set, `external_table`) with the saved model; write `eval/` (the
    test split) or `eval-NAME-HASH/` (`evaluation_folder`) in the run: predictions.csv (and patients.csv),
    metrics.json and roc.png. External DICOM slices are scored when they show lung; a set with patients is also
    scored per patient (AGGREGATION)."""
    import dataclasses
    import io
    import sys

    pr = Predictor(run_dir, device, window=window)
    df = external_table(images, labels) if images else splits(pr.config, data_dir)["test"]
    for line in df.attrs.get("skipped", []):
        print(f"skipped {line}", file=sys.stderr)
    if df["covid"].nunique() < 2:
        only = "COVID-19" if df["covid"].iloc[0] else "not COVID-19"
        raise ValueError(f"{df.attrs.get('source', 'the test split')}: all {len(df)} images are labelled {only}; an "
                         "evaluation needs both classes (AUC, sensitivity and specificity): nothing was written")
    pred, scores = score_table(pr, df, progress)
    per, per_scores = patient_scores(pred, pr.config.seed) if images else (None, None)
    external = PRED.slice_scored in pred
    n_left = int((~pred[PRED.slice_scored]).sum()) if external else 0
    slices = ("every image of the test split" if not images else
              f"{int(pred[PRED.slice_scored].sum())} of {len(pred)} images: left out are DICOM slices with lung "
              f"fraction below {MIN_LUNG_FRACTION:g} and slices of COVID-19 patients labelled not infected "
              f"({n_left} in all)")
    dicom = PRED.lung_fraction in pred and pred[PRED.lung_fraction].notna().any()
    e = Evaluation(**vars(scores), evaluated_on=str(images) if images else f"{pr.config.dataset} test split",
                   cluster_note=("whole patients (the labels' patient column; else each image its own)" if images
                                 else "whole patients, else source documents, else single images"),
                   slices=slices, per_patient=per_scores, aggregation=AGGREGATION if per is not None else "",
                   window=list(pr.window) if dicom else None)
    buf = io.BytesIO()
    roc_figure(pred[pred[PRED.slice_scored]] if external else pred, scores,
               f"{pr.run.path.name} on {Path(images).name if images else 'its test split'}"
               ).savefig(buf, format="png", dpi=120)
    extra = {"roc.png": buf.getvalue(), **({"patients.csv": per.to_csv(index=False)} if per is not None else {})}
    out = pr.run.write_evaluation(evaluation_folder(images), pred, e, extra)
    files = [str(out / f) for f in (PREDICTIONS, METRICS, *extra)]
    return dataclasses.replace(e, written_to=str(out), files=files)


def evaluation_folder(images: str | Path | None) -> str:
    """The run's folder for an evaluation: `eval` for its test split, else `eval-<name>-<hash>`, the name and a hash
    of the set's full path, so two sets with one folder name never replace each other's results (`--images .`
    is named by the folder it means)."""
    import hashlib

    if not images:
        return "eval"
    full = Path(images).resolve()
    return f"eval-{full.name or 'root'}-{hashlib.sha256(str(full).encode()).hexdigest()[:8]}"
