"""Inference from a run directory: one code path for `ladnn predict`, `ladnn evaluate` and `ladnn serve`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ladnn.config import LESIONS, TASKS, Config
from ladnn.data import splits
from ladnn.files import write_atomic
from ladnn.images import MAX_PIXELS, ImageError, load_resized, read_bytes
from ladnn.infer import model_input, tta_outputs
from ladnn.models import LADNN, build_model
from ladnn.rundir import P_COVID, P_LESIONS, Run, predictions_table
from ladnn.summary import Evaluation, Scores


class Predictor:
    """A trained model loaded once. Images are scored through `ladnn.infer`, the path training scored its own
    validation and test images on, so a run's `predictions.csv` is reproduced (to float tolerance) whatever the
    batch an image comes in."""

    def __init__(self, run_dir: str | Path, device: str = "cpu", tta: int | None = None):
        """`tta`: test-time views per image; None uses the run's own (`Config.tta`), 1 scores the plain image only."""
        self.run = Run(run_dir)  # refuses a run that is not complete
        ckpt = self.run.checkpoint(device)
        self.config = Config.from_dict(ckpt["config"])
        self.tta = self.config.tta if tta is None else tta
        self.model: LADNN = build_model(self.config.backbone, self.config.method, self.config.head, pretrained=False)
        self.model.load_state_dict(ckpt["state_dict"])
        self.model.data_config = ckpt["data_config"]
        self.model.weights_source = ckpt["weights_source"]
        self.model.eval().to(device).to(memory_format=torch.channels_last)  # faster convolutions, CPU and GPU
        self.device = torch.device(device)
        self.size = self.model.data_config["input_size"][-1]
        self.tasks = self.config.tasks
        self.run_dir = self.run.path

    def preprocess(self, data: bytes, name: str = "<upload>", max_pixels: int = MAX_PIXELS
                   ) -> tuple[np.ndarray, torch.Tensor]:
        """Decode + the run's preprocessing + resize: uint8 HxWx3 (for display) and the uint8 1x3xHxW image that
        `probs` scores."""
        rgb = load_resized(data, self.size, name, max_pixels, steps=self.config.preprocess)
        return rgb, torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None]

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images -> the network's input (normalised, on the device), as Grad-CAM++ needs it."""
        return model_input(x, self.model.data_config, self.device)

    def probs(self, x: torch.Tensor, batch: int = 32) -> np.ndarray:
        """Probabilities of uint8 N x 3 x H x W images; with `tta` > 1 the logits of the plain image averaged with
        `tta - 1` test-time views, each image's views seeded by the run's `tta_seed` and its own pixels."""
        logits = tta_outputs(self.model, x, self.tta, self.model.data_config, self.device, self.config.tta_seed,
                             self.config.augment, batch)
        return torch.sigmoid(logits).numpy()

    def probs_batched(self, xs: list[torch.Tensor], batch: int = 32) -> np.ndarray:
        """Probabilities of many preprocessed 1x3xHxW images, `batch` at a time."""
        return self.probs(torch.cat(xs), batch)

    def result(self, p: np.ndarray) -> dict:
        """Probabilities by column name of predictions.csv."""
        return {col: float(v) for col, v in zip((P_COVID, *P_LESIONS)[:len(self.tasks)], p)}

    def cam_overlays(self, rgb: np.ndarray, x: torch.Tensor, outputs: list[int] | None = None) -> dict[str, str]:
        """Grad-CAM++ overlays of one image as PNG data URLs, one per output (COVID and, for LA-DNN, each lesion)."""
        import base64
        import io

        from PIL import Image

        from ladnn.cam import cam_maps, overlay

        names = TASKS[: len(self.tasks)]
        outputs = list(range(len(names))) if outputs is None else outputs
        out = {}
        for k in outputs:
            with torch.enable_grad():
                mask = cam_maps(self.model, self.input(x), [k])[0]
            buf = io.BytesIO()
            Image.fromarray(overlay(rgb, mask)).save(buf, "PNG")
            out[names[k]] = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        return out

    def predict_files(self, paths, batch: int = 32) -> list[dict]:
        """One dict per path: the probabilities, or `error` naming the file."""
        out: list[dict] = []
        xs, idx = [], []
        for p in paths:
            try:
                xs.append(self.preprocess(read_bytes(p), str(p))[1])
                idx.append(len(out))
                out.append({"image": str(p)})
            except (ImageError, OSError) as e:
                out.append({"image": str(p), "error": str(e)})
        if xs:
            for j, pr in zip(idx, self.probs_batched(xs, batch)):
                out[j].update(self.result(pr))
        return out


IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def external_table(folder: str | Path):
    """An external labelled folder: `covid/` and `noncovid/` subfolders of images."""
    import pandas as pd

    folder = Path(folder)
    rows = []
    for sub, y in (("covid", 1), ("noncovid", 0)):
        d = folder / sub
        if not d.is_dir():
            raise FileNotFoundError(f"{folder}: expected subfolders covid/ and noncovid/; {d} is missing")
        rows += [{"name": f"{sub}/{p.name}", "image": str(p), "covid": y, "lesions_known": False,
                  **{k: 0 for k in LESIONS}} for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_EXT]
    if not rows:
        raise FileNotFoundError(f"{folder}: no images found in covid/ or noncovid/")
    return pd.DataFrame(rows)


def score_table(pr: Predictor, df) -> tuple:
    """Predictions (the columns of predictions.csv) of a sample table, and its scores; nothing is written."""
    from ladnn.metrics import evaluate_predictions

    res = pr.predict_files(df["image"])
    bad = [r for r in res if "error" in r]
    if bad:
        raise ValueError(f"{len(bad)} image(s) could not be read, e.g. {bad[0]['error']}")
    cols = (P_COVID, *P_LESIONS)[:len(pr.tasks)]
    pred = predictions_table(df, np.array([[r[c] for c in cols] for r in res]), pr.tasks)
    return pred, Scores.from_dict(evaluate_predictions(pred, seed=pr.config.seed))


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
    lines.append("Wrote " + ", ".join(e.files) + ".")
    return "\n".join(lines)


def evaluate_run(run_dir: str | Path, images: str | Path | None = None, data_dir=None,
                 device: str = "cpu") -> Evaluation:
    """Score the run's test split (or an external folder) with the saved model; write `eval[-NAME]/` in the run:
    predictions.csv, metrics.json and roc.png."""
    import dataclasses
    import io

    pr = Predictor(run_dir, device)
    df = external_table(images) if images else splits(pr.config, data_dir)["test"]
    pred, scores = score_table(pr, df)
    e = Evaluation(**vars(scores), evaluated_on=str(images) if images else f"{pr.config.dataset} test split",
                   cluster_note=("images resampled one by one: the folder records no patients or sources" if images
                                 else "whole patients, else source documents, else single images"))
    out = pr.run.write_evaluation(f"eval-{Path(images).name}" if images else "eval", pred, e)
    buf = io.BytesIO()
    roc_figure(pred, scores, f"{pr.run.path.name} on {Path(images).name if images else 'its test split'}"
               ).savefig(buf, format="png", dpi=120)
    write_atomic(out / "roc.png", buf.getvalue())
    return dataclasses.replace(e, written_to=str(out), files=Run.evaluation_files(out))
