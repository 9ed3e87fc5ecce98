"""A trained run loaded once for scoring (`Predictor`): the one path by which `ladnn predict`, `ladnn evaluate`, the
service and the chapters score images and draw their Grad-CAM++ maps."""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ladnn.config import TASKS, Config
from ladnn.dicom import MIN_LUNG_FRACTION, low_lung_warning, parse_window
from ladnn.images import MAX_PIXELS, ImageError, ct_check, data_url, decode_with_info, preprocess, read_bytes
from ladnn.infer import inference_net, model_input, onnx_net, tta_outputs, use_device
from ladnn.rundir import CONFIG, MODEL, FinishedRun, IncompleteRunError
from ladnn.scores import PRED

if TYPE_CHECKING:
    from ladnn.models import LADNN


class Predictor:
    """A trained model loaded once. Images are scored through `ladnn.infer`, the path training scored its own
    validation and test images on, so a run's `predictions.csv` is reproduced (to float tolerance) whatever the
    batch an image comes in: plain or with test-time views (`probs`), and with Grad-CAM++ maps (`score`).
    One other path remains, `ladnn.evaluate.plain_probs`, only so that runs on one frozen backbone share its
    activations; it gives `Predictor(run, tta=1).probs` (tests/test_end_to_end.py)."""

    def __init__(self, run_dir: str | Path, device: str = "auto", tta: int | None = None, window=None,
                 onnx: bool = True):
        """`device`: auto (the GPU when there is one: the book's analysis notebooks score there), cpu or cuda.
        `tta`: test-time views per image; None uses the run's own (`Config.tta`), 1 scores the plain image only.
        `window`: how DICOM slices are shown to the model (ladnn.dicom.parse_window; default the lung window).
        `onnx`: on the CPU, score with the run's ONNX Runtime copy (`scorer`); False scores with the frozen
        TorchScript copy and exports nothing (for a handful of images, where the first export would cost more than it saves)."""
        self.onnx = onnx
        device = str(use_device(device))
        self.window = parse_window(window)
        self.run = FinishedRun(run_dir)  # refuses a run that is not complete
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
        """The trained network, built on first use (timm, slow to import, is not needed where the run's ONNX copy
        scores: `scorer`)."""
        from ladnn.models import build_model

        c = self.config
        model = build_model(c.backbone, c.method, c.head, pretrained=False)
        try:
            model.load_state_dict(self.checkpoint["state_dict"])
        except RuntimeError as e:
            raise IncompleteRunError(f"{self.run.path / MODEL}: its weights do not fit the "
                                     f"{c.backbone} {c.method} model that "
                                     f"{self.run.path / CONFIG} describes ({str(e)[:300]})") from None
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

    def score(self, x: torch.Tensor, task_indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """`probs` of uint8 images and their Grad-CAM++ maps for `task_indices` (as `cam_maps`). With the ONNX copy the
        plain view goes through the network once for both: its logits join the test-time views' and its feature
        map gives the maps."""
        plain, features = self._plain_and_features(x)
        return self.probs(x, plain=plain), self.cam_maps(x, task_indices, features)

    def _plain_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The plain view's logits and the backbone's spatial feature map from one pass of the ONNX copy; (None,
        None) where the scorer is another (TorchScript, a GPU) or the map is not spatial (a transformer's tokens)."""
        from ladnn.infer import OnnxNet

        if not isinstance(self.scorer, OnnxNet):
            return None, None
        with torch.no_grad():
            plain, features = self.scorer.all_outputs(self.input(x))
        return (plain, features) if features.dim() == 4 else (None, None)

    def probs_batched(self, xs: list[torch.Tensor], batch: int = 32) -> np.ndarray:
        """Probabilities of many preprocessed 1x3xHxW images, `batch` at a time."""
        return self.probs(torch.cat(xs), batch)

    def result(self, p: np.ndarray) -> dict:
        """Probabilities by column name of predictions.csv."""
        return {col: float(v) for col, v in zip(PRED.probabilities(self.tasks), p)}

    def cam_maps(self, x: torch.Tensor, task_indices: list[int], features: torch.Tensor | None = None) -> np.ndarray:
        """Grad-CAM++ maps of uint8 images `x` (N), for each of `task_indices` (0 = COVID, 1..5 = lesions): len(task_indices)
        x N x H x W in [0, 1]. With the ONNX copy they come from the feature map it computes with the scores (one
        forward pass of the network for all the maps, `ladnn.cam.cam_maps_from_features`; `features`, when the
        caller has that map already), else through the model (`ladnn.cam.cam_maps`, one pass per output)."""
        from ladnn.cam import cam_maps, cam_maps_from_features

        n = len(x)
        if features is None:
            features = self._plain_and_features(x)[1]
        with torch.enable_grad():
            if features is not None:
                maps = cam_maps_from_features(self.model, features.repeat(len(task_indices), 1, 1, 1),
                                              [k for k in task_indices for _ in range(n)], self.size)
                return maps.reshape(len(task_indices), n, *maps.shape[1:])
            return np.stack([cam_maps(self.model, self.input(x), [k] * n) for k in task_indices])

    def cam_overlays(self, rgb: np.ndarray, x: torch.Tensor, task_indices: list[int] | None = None,
                     maps: np.ndarray | None = None) -> dict[str, str]:
        """Grad-CAM++ overlays of one image as JPEG data URLs (`data_url`), one per output (COVID and, for LA-DNN,
        each lesion; `task_indices`); `maps`: its maps when they are known (`score`)."""
        from ladnn.cam import overlay

        names = TASKS[: len(self.tasks)]
        task_indices = self.task_indices if task_indices is None else task_indices
        maps = self.cam_maps(x, task_indices) if maps is None else maps
        return {names[k]: data_url(overlay(rgb, mask), "jpeg") for k, mask in zip(task_indices, maps[:, 0])}

    @property
    def task_indices(self) -> list[int]:
        """The model's output columns, by index: 0 COVID and, for LA-DNN, 1..5 the five lesions."""
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
