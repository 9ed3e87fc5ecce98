"""Grad-CAM++ maps (Chattopadhay et al. 2018; paper Section 4.1) through the `grad-cam` package."""
from __future__ import annotations

import numpy as np
import torch
from pytorch_grad_cam import GradCAMPlusPlus
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from ladnn.models import LADNN, cam_layer


def cam_maps(model: LADNN, x: torch.Tensor, outputs: list[int]) -> np.ndarray:
    """One map per image for the logit column `outputs[i]` (0 = COVID, 1..5 = lesions): N x H x W in [0, 1].
    The CAM object lives in a `with` block so its hooks are removed; it needs gradients, so no torch.no_grad()."""
    with GradCAMPlusPlus(model=model, target_layers=[cam_layer(model)]) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(k) for k in outputs])


def overlay(rgb: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The map as a JET heatmap over the image (uint8 HxWx3)."""
    return show_cam_on_image(rgb.astype(np.float32) / 255, mask, use_rgb=True, image_weight=1 - alpha)
