"""Inference from a run directory: one code path for `ladnn predict`, `ladnn evaluate` and `ladnn serve`."""
from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ladnn.config import LESIONS, TASKS, Config
from ladnn.data import splits
from ladnn.dicom import AGGREGATION, MIN_LUNG_FRACTION, Series, parse_window, patient_means, scan_folder
from ladnn.images import MAX_PIXELS, ImageError, ct_check, decode_with_info, preprocess, read_bytes
from ladnn.infer import forward, inference_net, model_input, onnx_net, outputs, tta_outputs, use_device
from ladnn.rundir import P_COVID, P_LESIONS, IncompleteRunError, Run, predictions_table
from ladnn.summary import Evaluation, Scores

if TYPE_CHECKING:
    from ladnn.models import LADNN


class Predictor:
    """A trained model loaded once. Images are scored through `ladnn.infer`, the path training scored its own
    validation and test images on, so a run's `predictions.csv` is reproduced (to float tolerance) whatever the
    batch an image comes in."""

    def __init__(self, run_dir: str | Path, device: str = "auto", tta: int | None = None, window=None,
                 onnx: bool = True):
        """`device`: auto (the GPU when there is one: the book's analysis notebooks score there), cpu or cuda.
        `tta`: test-time views per image; None uses the run's own (`Config.tta`), 1 scores the plain image only.
        `window`: how DICOM slices are shown to the model (ladnn.dicom.parse_window; default the lung window).
        `onnx`: on the CPU, score with the run's ONNX Runtime copy (`scorer`); False scores with the frozen
        TorchScript copy and exports nothing (for a handful of images, where the first export's 8 s would not pay)."""
        self.onnx = onnx
        device = str(use_device(device))
        self.window = parse_window(window)
        self.run = Run(run_dir)  # refuses a run that is not complete
        self.checkpoint = self.run.checkpoint("cpu")  # read into a model built on the CPU, then moved (`model`)
        self.config = Config.from_dict(self.checkpoint["config"])
        self.tta = self.config.tta if tta is None else tta
        self.data_config: dict = self.checkpoint["data_config"]
        self.weights_source: str = self.checkpoint["weights_source"]
        self.device = torch.device(device)
        self.size = self.data_config["input_size"][-1]
        self.tasks = self.config.tasks
        self.run_dir = self.run.path

    @cached_property
    def model(self) -> LADNN:
        """The trained network, built on first use (timm, 2.5 s to import, is not needed where the run's ONNX copy
        scores: `scorer`)."""
        from ladnn.models import build_model

        c = self.config
        model = build_model(c.backbone, c.method, c.head, pretrained=False)
        try:
            model.load_state_dict(self.checkpoint["state_dict"])
        except RuntimeError as e:
            raise IncompleteRunError(f"{self.run.path / 'model.pt'}: its weights do not fit the "
                                     f"{c.backbone} {c.method} model that "
                                     f"{self.run.path / 'config.json'} describes ({str(e)[:300]})") from None
        model.data_config, model.weights_source = self.data_config, self.weights_source
        return model.eval().to(self.device).to(memory_format=torch.channels_last)  # faster convolutions

    @cached_property
    def scorer(self) -> torch.nn.Module:
        """The network `probs` scores with, built on first use: on the CPU the run's ONNX Runtime copy
        (ladnn.infer.onnx_net: exported once per machine, then read from the cache), which also returns the
        feature map that `cam_overlays` needs; else (a GPU, `onnx=False`, no ONNX copy) the frozen TorchScript copy
        of `ladnn.infer.inference_net`, or the model itself on a GPU."""
        from ladnn.models import WithFeatures, state_digest

        c = self.config
        example = torch.randn(2, 3, self.size, self.size, generator=torch.Generator().manual_seed(0)).to(self.device)
        key = f"{c.backbone}:{c.method}:{c.head}:with-features:{state_digest(self.checkpoint['state_dict'])}"
        fast = onnx_net(lambda: WithFeatures(self.model), example, key) if self.onnx else None
        return fast if fast is not None else inference_net(self.model, example)

    def preprocess(self, data: bytes, name: str = "<upload>", max_pixels: int = MAX_PIXELS
                   ) -> tuple[np.ndarray, torch.Tensor]:
        """Decode + the run's preprocessing + resize: uint8 HxWx3 (for display) and the uint8 1x3xHxW image that
        `probs` scores."""
        rgb, x, _ = self.preprocess_with_info(data, name, max_pixels)
        return rgb, x

    def preprocess_with_info(self, data: bytes, name: str = "<upload>", max_pixels: int = MAX_PIXELS
                             ) -> tuple[np.ndarray, torch.Tensor, dict]:
        """`preprocess`, and what is known of the input: `ladnn.images.ct_check` of the decoded image (its
        `warnings`) and, for a DICOM slice, its lung fraction, slice location and patient."""
        img, info = decode_with_info(data, name, max_pixels, self.window)
        check = ct_check(img)
        if info.get("lung_fraction", 1.0) < MIN_LUNG_FRACTION:  # the one rule of predict, evaluate and serve
            check["warnings"].append(low_lung_warning(info["lung_fraction"]))
        rgb = np.asarray(preprocess(img, self.size, self.config.preprocess), dtype=np.uint8)
        return rgb, torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None], {**info, "check": check}

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images -> the network's input (normalised, on the device), as Grad-CAM++ needs it."""
        return model_input(x, self.data_config, self.device)

    def probs(self, x: torch.Tensor, batch: int = 32, plain: torch.Tensor | None = None) -> np.ndarray:
        """Probabilities of uint8 N x 3 x H x W images; with `tta` > 1 the logits of the plain image averaged with
        `tta - 1` test-time views, each image's views seeded by the run's `tta_seed` and its own pixels. `plain`:
        the plain images' logits, when they are known (`score`)."""
        logits = tta_outputs(self.scorer, x, self.tta, self.data_config, self.device, self.config.tta_seed,
                             self.config.augment, batch, plain)
        return torch.sigmoid(logits).numpy()

    def score(self, x: torch.Tensor, outputs: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """`probs` of uint8 images and their Grad-CAM++ maps for `outputs` (as `cam_maps`). With the ONNX copy the
        plain view goes through the network once for both: its logits join the test-time views' and its feature
        map gives the maps."""
        plain, features = self._plain_and_features(x)
        return self.probs(x, plain=plain), self.cam_maps(x, outputs, features)

    def _plain_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The plain view's logits and the backbone's spatial feature map from one pass of the ONNX copy; (None,
        None) where the scorer is another (TorchScript, a GPU) or the map is not spatial (a transformer's tokens)."""
        from ladnn.infer import OnnxNet

        if not isinstance(self.scorer, OnnxNet):
            return None, None
        with torch.no_grad():
            plain, features = self.scorer.outputs(self.input(x))
        return (plain, features) if features.dim() == 4 else (None, None)

    def probs_batched(self, xs: list[torch.Tensor], batch: int = 32) -> np.ndarray:
        """Probabilities of many preprocessed 1x3xHxW images, `batch` at a time."""
        return self.probs(torch.cat(xs), batch)

    def result(self, p: np.ndarray) -> dict:
        """Probabilities by column name of predictions.csv."""
        return {col: float(v) for col, v in zip((P_COVID, *P_LESIONS)[:len(self.tasks)], p)}

    def cam_maps(self, x: torch.Tensor, outputs: list[int], features: torch.Tensor | None = None) -> np.ndarray:
        """Grad-CAM++ maps of uint8 images `x` (N), for each of `outputs` (0 = COVID, 1..5 = lesions): len(outputs)
        x N x H x W in [0, 1]. With the ONNX copy they come from the feature map it computes with the scores (one
        forward pass of the network for all the maps, `ladnn.cam.cam_maps_from_features`; `features`, when the
        caller has that map already), else through the model (`ladnn.cam.cam_maps`, one pass per output)."""
        from ladnn.cam import cam_maps, cam_maps_from_features

        n = len(x)
        if features is None:
            features = self._plain_and_features(x)[1]
        with torch.enable_grad():
            if features is not None:
                maps = cam_maps_from_features(self.model, features.repeat(len(outputs), 1, 1, 1),
                                              [k for k in outputs for _ in range(n)], self.size)
                return maps.reshape(len(outputs), n, *maps.shape[1:])
            return np.stack([cam_maps(self.model, self.input(x), [k] * n) for k in outputs])

    def cam_overlays(self, rgb: np.ndarray, x: torch.Tensor, outputs: list[int] | None = None,
                     maps: np.ndarray | None = None) -> dict[str, str]:
        """Grad-CAM++ overlays of one image as JPEG data URLs (`data_url`), one per output (COVID and, for LA-DNN,
        each lesion; `outputs`); `maps`: its maps when they are known (`score`)."""
        from ladnn.cam import overlay

        names = TASKS[: len(self.tasks)]
        outputs = self.outputs if outputs is None else outputs
        maps = self.cam_maps(x, outputs) if maps is None else maps
        return {names[k]: data_url(overlay(rgb, mask), "jpeg") for k, mask in zip(outputs, maps[:, 0])}

    @property
    def outputs(self) -> list[int]:
        """The model's output columns: COVID and, for LA-DNN, the five lesions."""
        return list(range(len(self.tasks)))

    def predict_files(self, paths, batch: int = 32, progress: bool = False) -> list[dict]:
        """One dict per path: the probabilities (with `warnings` when the image does not look like a CT slice, and
        a DICOM slice's `lung_fraction`, `slice_location` and `patient_id`), or `error` naming the file."""
        from tqdm import tqdm

        out: list[dict] = []
        xs, idx = [], []
        for p in tqdm(list(paths), desc="read", unit="image", disable=not progress):
            try:
                _, x, info = self.preprocess_with_info(read_bytes(p), str(p))
                xs.append(x)
                idx.append(len(out))
                warn = info.pop("check")["warnings"]
                info.pop("window", None)
                out.append({"image": str(p), **info, **({"warnings": warn} if warn else {})})
            except (ImageError, OSError) as e:
                out.append({"image": str(p), "error": str(e)})
        if xs:
            for j, pr in zip(idx, self.probs_batched(xs, batch)):
                out[j].update(self.result(pr))
        return out


def low_lung_warning(fraction: float) -> str:
    """The warning of a DICOM slice that shows little lung (`ladnn.dicom.lung_fraction` below MIN_LUNG_FRACTION)."""
    return (f"this DICOM slice shows little lung (lung fraction {fraction:.3f}, below {MIN_LUNG_FRACTION:g}): the "
            "model only saw slices through the lungs, so its score here means nothing")


def data_url(rgb: np.ndarray, kind: str = "png") -> str:
    """A uint8 H x W x 3 image as a data URL: `png` (lossless: the pixels the model saw) or `jpeg` (quality 90, for
    heatmap overlays: 0.5 ms to write where a PNG took 6 ms here)."""
    import base64

    import cv2

    params = [cv2.IMWRITE_PNG_COMPRESSION, 1] if kind == "png" else [cv2.IMWRITE_JPEG_QUALITY, 90]
    ok, buf = cv2.imencode(f".{'png' if kind == 'png' else 'jpg'}", np.ascontiguousarray(rgb[..., ::-1]), params)
    if not ok:
        raise ValueError(f"could not encode a {rgb.shape} image as {kind}")
    return f"data:image/{kind};base64," + base64.b64encode(buf.tobytes()).decode()


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
            lower_out[shared] = outputs(fast, x, pr.data_config, pr.device)
        a = lower_out[shared]
        logits = forward(inference_net(upper, a[:2].to(pr.device)), a, pr.device)
        out.append(torch.sigmoid(logits).numpy())
    return out


IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".dcm", ".dicom"}
DIAGNOSIS_COVID = {"covid-19", "covid19", "covid"}


def expand_inputs(paths) -> tuple[list[str], list[dict], list[Series]]:
    """Files as given, and folders replaced by the DICOM series inside them (`ladnn.dicom.scan_folder`: split by
    patient, study and series, duplicates and localizers left out, each in one order along the body). Returns the
    files to score, one `{"image", "error"}` record per file whose header cannot be read (the others are scored all
    the same), and the series found."""
    out: list[str] = []
    errors: list[dict] = []
    series: list[Series] = []
    for p in map(Path, paths):
        try:
            is_dir = p.is_dir()
        except OSError as e:  # a name too long, say: that path's error, the others are scored
            errors.append({"image": str(p), "error": f"{p}: {e.strerror or e}"})
            continue
        if not is_dir:
            out.append(str(p))
            continue
        found, bad = scan_folder(p)
        if not found and not bad:
            errors.append({"image": str(p), "error": f"{p}: a folder with no .dcm files"})
        series += found
        out += [str(f) for s in found for f in s.files]
        errors += [{"image": str(f), "error": why} for f, why in bad]
    return out, errors, series


def series_summary(results: list[dict], series: list[Series]) -> list[dict]:
    """One patient score per DICOM series among `predict_files` results (the series of the folders, `expand_inputs`,
    and those of DICOM files named one by one, grouped by folder, patient, study and series): AGGREGATION over its
    slices that show lung, with the slices scored, the order of the slices and what was left out."""
    by_file = {r["image"]: r for r in results}
    in_folders = {str(f) for s in series for f in s.files}
    loose: dict[tuple, list[Path]] = {}  # DICOM files named one by one: grouped by folder, patient, study, series
    for r in results:
        if "series_uid" in r and r["image"] not in in_folders:
            key = (str(Path(r["image"]).parent), r["patient_id"], r["study_uid"], r["series_uid"])
            loose.setdefault(key, []).append(Path(r["image"]))
    series = [*series, *(Series(folder, patient, study, uid, files, "as given on the command line")
                         for (folder, patient, study, uid), files in loose.items())]
    out = []
    for s in series:
        rows = [by_file[str(f)] for f in s.files if str(f) in by_file and "error" not in by_file[str(f)]]
        lung = [r[P_COVID] for r in rows if r.get("lung_fraction", 0.0) >= MIN_LUNG_FRACTION]
        out.append({"series": s.label if len(series) > 1 else s.folder, "patient_id": s.patient,
                    "slices": len(s.files), "slices_scored": len(rows), "slices_with_lung": len(lung),
                    P_COVID + "_patient": float(np.mean(lung)) if lung else None, "order": s.order,
                    **({"left_out": s.left_out} if s.left_out else {})})
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
    from ladnn.metrics import evaluate_predictions

    res = pr.predict_files(df["image"], progress=progress)
    bad = [r for r in res if "error" in r]
    if bad:
        raise ValueError(f"{len(bad)} of the {len(res)} labelled image(s) could not be read; nothing was written "
                         "(an evaluation scores every labelled image or none):\n  "
                         + "\n  ".join(r["error"] for r in bad[:20]) + ("\n  ..." if len(bad) > 20 else ""))
    cols = (P_COVID, *P_LESIONS)[:len(pr.tasks)]
    pred = predictions_table(df, np.array([[r[c] for c in cols] for r in res]), pr.tasks)
    if "slice_scored" in df:
        lung = np.array([r.get("lung_fraction", np.nan) for r in res], dtype=float)
        pred["patient"] = [p or n for p, n in zip(df["patient"], df["name"])]
        pred["group"] = pred["patient"]  # intervals resample whole patients
        pred["lung_fraction"] = lung
        pred["slice_scored"] = df["slice_scored"].to_numpy() & ~(lung < MIN_LUNG_FRACTION)
        if pred["slice_scored"].sum() == 0:
            raise ValueError("no slice is left to score (every slice shows too little lung or is excluded)")
        scored = pred[pred["slice_scored"]]
        if scored["y_true"].nunique() < 2:
            raise ValueError(f"the {len(scored)} slices left to score (with lung, not excluded) hold one class "
                             "only: no AUC, sensitivity or specificity; nothing was written")
    else:
        scored = pred
    return pred, Scores.from_dict(evaluate_predictions(scored, seed=pr.config.seed))


def patient_scores(pred, seed: int = 0) -> tuple:
    """Per-patient predictions (AGGREGATION) and their scores, intervals resampling patients; None when the set
    records one image per patient."""
    from ladnn.metrics import binary_metrics, bootstrap_ci

    if pred["patient"].nunique() == len(pred):
        return None, None
    per = patient_means(pred)
    missing = sorted(set(pred["patient"]) - set(per["patient"]))
    if missing:
        raise ValueError(f"patient(s) {missing[:5]} have no slice that shows lung: no patient score")
    return per, Scores.from_dict({"covid": binary_metrics(per["y_true"], per["p_covid"]), "clusters": len(per),
                                  "covid_ci95": bootstrap_ci(per["y_true"], per["p_covid"], per["patient"],
                                                             seed=seed)})


def roc_figure(pred, scores: Scores, title: str, threshold: float = 0.5):
    """ROC curve (scikit-learn's RocCurveDisplay) with the chance line and the run's operating point; a bare
    matplotlib Figure, so no plotting backend or pyplot state is involved."""
    from matplotlib.figure import Figure
    from sklearn.metrics import RocCurveDisplay

    m, ci = scores.covid, scores.covid_ci95.auc
    fig = Figure(figsize=(4.6, 4.6))
    ax = fig.subplots()
    RocCurveDisplay.from_predictions(pred["y_true"], pred["p_covid"], ax=ax, name="COVID output",
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
    n_left = int((~pred["slice_scored"]).sum()) if "slice_scored" in pred else 0
    slices = ("every image of the test split" if not images else
              f"{int(pred['slice_scored'].sum())} of {len(pred)} images: left out are DICOM slices with lung "
              f"fraction below {MIN_LUNG_FRACTION:g} and slices of COVID-19 patients labelled not infected "
              f"({n_left} in all)")
    dicom = "lung_fraction" in pred and pred["lung_fraction"].notna().any()
    e = Evaluation(**vars(scores), evaluated_on=str(images) if images else f"{pr.config.dataset} test split",
                   cluster_note=("whole patients (the labels' patient column; else each image its own)" if images
                                 else "whole patients, else source documents, else single images"),
                   slices=slices, per_patient=per_scores, aggregation=AGGREGATION if per is not None else "",
                   window=list(pr.window) if dicom else None)
    buf = io.BytesIO()
    roc_figure(pred[pred["slice_scored"]] if "slice_scored" in pred else pred, scores,
               f"{pr.run.path.name} on {Path(images).name if images else 'its test split'}"
               ).savefig(buf, format="png", dpi=120)
    extra = {"roc.png": buf.getvalue(), **({"patients.csv": per.to_csv(index=False)} if per is not None else {})}
    out = pr.run.write_evaluation(evaluation_folder(images), pred, e, extra)
    files = [str(out / f) for f in ("predictions.csv", "metrics.json", *extra)]
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
