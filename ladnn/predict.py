"""Inference from a run directory: one code path for `ladnn predict`, `ladnn evaluate` and `ladnn serve`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ladnn.config import LESIONS, TASKS, Config
from ladnn.images import MAX_PIXELS, ImageError, load_resized, normalize, read_bytes
from ladnn.models import LADNN, build_model
from ladnn.rundir import P_COVID, P_LESIONS, Run, predictions_table


class Predictor:
    """A trained model loaded once; `predict_bytes` scores images given as bytes."""

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
        """Decode + the run's preprocessing + resize (uint8 HxWx3, for display) and the normalised 1x3xHxW input."""
        rgb = load_resized(data, self.size, name, max_pixels, steps=self.config.preprocess)
        x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None]
        return rgb, normalize(x, self.model.data_config["mean"], self.model.data_config["std"]).to(self.device)

    @torch.no_grad()
    def probs(self, x: torch.Tensor) -> np.ndarray:
        """Probabilities of normalised inputs; with the run's `tta` > 1, the logits of the plain input averaged with
        `tta - 1` augmented views drawn with the training code's TTA_SEED, as the run's own test metrics were."""
        logits = self.model(x.contiguous(memory_format=torch.channels_last))
        if self.tta > 1:
            from ladnn.images import augment
            from ladnn.train import TTA_SEED, fixed_rng

            dc = self.model.data_config
            mean = torch.tensor(dc["mean"], device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(dc["std"], device=x.device).view(1, 3, 1, 1)
            raw = ((x * std + mean) * 255).clamp(0, 255)
            with fixed_rng(TTA_SEED):
                views = [self.model(normalize(augment(raw, strength=self.config.augment), dc["mean"], dc["std"])
                                    .contiguous(memory_format=torch.channels_last)) for _ in range(self.tta - 1)]
            logits = torch.stack([logits, *views]).mean(0)
        return torch.sigmoid(logits).cpu().numpy()

    def probs_batched(self, xs: list[torch.Tensor], batch: int = 32) -> np.ndarray:
        """Probabilities of many preprocessed 1x3xHxW inputs, `batch` at a time."""
        return np.concatenate([self.probs(torch.cat(xs[i:i + batch])) for i in range(0, len(xs), batch)])

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
                mask = cam_maps(self.model, x, [k])[0]
            buf = io.BytesIO()
            Image.fromarray(overlay(rgb, mask)).save(buf, "PNG")
            out[names[k]] = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        return out

    def predict_bytes(self, data: bytes, name: str = "<upload>") -> dict:
        _, x = self.preprocess(data, name)
        return self.result(self.probs(x)[0])

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
    """Predictions (the columns of predictions.csv) of a sample table, and its metrics; nothing is written."""
    from ladnn.metrics import evaluate_predictions

    res = pr.predict_files(df["image"])
    bad = [r for r in res if "error" in r]
    if bad:
        raise ValueError(f"{len(bad)} image(s) could not be read, e.g. {bad[0]['error']}")
    cols = (P_COVID, *P_LESIONS)[:len(pr.tasks)]
    pred = predictions_table(df, np.array([[r[c] for c in cols] for r in res]), pr.tasks)
    return pred, evaluate_predictions(pred, seed=pr.config.seed)


def roc_figure(pred, metrics: dict, title: str, threshold: float = 0.5):
    """ROC curve (scikit-learn's RocCurveDisplay) with the chance line and the run's operating point; a bare
    matplotlib Figure, so no plotting backend or pyplot state is involved."""
    from matplotlib.figure import Figure
    from sklearn.metrics import RocCurveDisplay

    m, ci = metrics["covid"], metrics["covid_ci95"]["auc"]
    fig = Figure(figsize=(4.6, 4.6))
    ax = fig.subplots()
    RocCurveDisplay.from_predictions(pred["y_true"], pred["p_covid"], ax=ax, name="COVID output",
                                     plot_chance_level=True)
    ax.plot(1 - m["specificity"], m["sensitivity"], "o", color="black",
            label=f"threshold {threshold:g}: sens. {m['sensitivity']:.2f}, spec. {m['specificity']:.2f}")
    ax.set_title(f"{title}\nAUC {m['auc']:.3f} (95% interval {ci[0]:.3f} to {ci[1]:.3f})", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def summary_text(metrics: dict, threshold: float = 0.5) -> str:
    """A short human-readable summary of an evaluation: counts, AUC with its interval, sensitivity and specificity
    at the run's threshold (counts in brackets), and where the files went."""
    m, ci = metrics["covid"], metrics["covid_ci95"]
    n, pos = m["n"], m["n_pos"]
    neg = n - pos
    lines = [(f"Evaluated on {metrics['evaluated_on']}: {n} images, {pos} COVID and {neg} non-COVID, "
             f"in {metrics['clusters']} resampling clusters ({metrics['cluster_note']}).")]
    if m["auc"] is None:
        lines.append("AUC: undefined (the images hold only one class).")
    else:
        lines.append(f"AUC {m['auc']:.3f} (95% interval {ci['auc'][0]:.3f} to {ci['auc'][1]:.3f}).")
    lines.append(f"At the run's threshold {threshold:g}: sensitivity {m['sensitivity']:.3f} "
                 f"({round(m['sensitivity'] * pos)}/{pos}; 95% interval {ci['sensitivity'][0]:.3f} to "
                 f"{ci['sensitivity'][1]:.3f}), specificity {m['specificity']:.3f} ({round(m['specificity'] * neg)}/"
                 f"{neg}; {ci['specificity'][0]:.3f} to {ci['specificity'][1]:.3f}).")
    lines.append("Wrote " + ", ".join(metrics["files"]) + ".")
    return "\n".join(lines)


def evaluate_run(run_dir: str | Path, images: str | Path | None = None, data_dir=None, device: str = "cpu") -> dict:
    """Score the run's test split (or an external folder) with the saved model; write `eval[-NAME]/` in the run:
    predictions.csv, metrics.json and roc.png."""
    from ladnn.train import splits

    pr = Predictor(run_dir, device)
    df = external_table(images) if images else splits(pr.config, data_dir)["test"]
    pred, metrics = score_table(pr, df)
    metrics["evaluated_on"] = str(images) if images else f"{pr.config.dataset} test split"
    metrics["cluster_note"] = ("images resampled one by one: the folder records no patients or sources" if images
                               else "whole patients, else source documents, else single images")
    out = pr.run.write_evaluation(f"eval-{Path(images).name}" if images else "eval", pred, metrics)
    fig = roc_figure(pred, metrics, f"{pr.run.path.name} on {Path(images).name if images else 'its test split'}")
    fig.savefig(out / "roc.png", dpi=120)
    metrics["written_to"] = str(out)
    metrics["files"] = [str(out / f) for f in ("predictions.csv", "metrics.json", "roc.png")]
    return metrics
