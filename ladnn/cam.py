"""Grad-CAM++ maps (Chattopadhay et al. 2018; paper Section 4.1) through the `grad-cam` package."""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from pytorch_grad_cam import GradCAMPlusPlus
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from ladnn.models import LADNN, FromFeatures, cam_layer


@contextlib.contextmanager
def gradients_from(model: torch.nn.Module, layer: torch.nn.Module):
    """Inside the block, a backward pass of `model` stops at `layer`'s output: every parameter is frozen (restored
    after) and the layer's output becomes a leaf that requires grad. Grad-CAM++ needs only the gradients of that
    output, so its backward pass covers the head alone instead of the whole network; the map is the same."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    hook = layer.register_forward_hook(lambda m, i, o: o.requires_grad_(True))
    try:
        yield
    finally:
        hook.remove()
        for p, f in flags:
            p.requires_grad_(f)


def cam_maps(model: LADNN, x: torch.Tensor, columns: list[int]) -> np.ndarray:
    """One map per image for the logit column `columns[i]` (0 = COVID, 1..5 = lesions): N x H x W in [0, 1].
    The CAM object lives in a `with` block so its hooks are removed; it needs gradients, so no torch.no_grad()
    (`gradients_from` keeps them to the layers above the target layer)."""
    layer = cam_layer(model)
    with gradients_from(model, layer), GradCAMPlusPlus(model=model, target_layers=[layer]) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(k) for k in columns])


class _ImageSizedCam(GradCAMPlusPlus):
    """Grad-CAM++ of a network whose input is a feature map, with maps of the image's size (the package sizes its
    maps by the input)."""

    def __init__(self, size: tuple[int, int], **kw):
        super().__init__(**kw)
        self.size = size

    def get_target_width_height(self, input_tensor: torch.Tensor) -> tuple[int, int]:
        return self.size


def cam_maps_from_features(model: LADNN, features: torch.Tensor, columns: list[int], size: int) -> np.ndarray:
    """`cam_maps` from the backbone's final feature map (`ladnn.models.WithFeatures`, as ONNX Runtime computed it
    with the probabilities): only the pooling and the head run here, forward and backward, so a map needs no second
    pass through the backbone. The same maps as `cam_maps` where the target layer outputs that feature map (checked in
    tests/test_cam.py); `features[i]` goes with `columns[i]`."""
    net = FromFeatures(model)
    if model.training:
        raise ValueError("cam_maps_from_features: the model is in training mode (dropout, batch statistics)")
    with gradients_from(net, net.features), _ImageSizedCam((size, size), model=net, target_layers=[net.features]) as cam:
        return cam(input_tensor=features.detach().float(), targets=[ClassifierOutputTarget(k) for k in columns])


def overlay(rgb: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The map as a JET heatmap over the image (uint8 HxWx3)."""
    return show_cam_on_image(rgb.astype(np.float32) / 255, mask, use_rgb=True, image_weight=1 - alpha)
