import numpy as np
import torch

from ladnn.cam import cam_maps, overlay
from ladnn.models import build_model


def test_gradcampp_maps_per_output():
    torch.manual_seed(0)
    m = build_model("efficientnet_lite0", "ladnn").eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    maps = cam_maps(m, x, [0, 1])
    assert maps.shape == (2, 224, 224) and maps.min() >= 0 and maps.max() <= 1 and maps.max() > 0
    other = cam_maps(m, x[:1], [3])
    assert not np.allclose(other[0], maps[0])
    ov = overlay(np.zeros((224, 224, 3), np.uint8), maps[0])
    assert ov.shape == (224, 224, 3) and ov.dtype == np.uint8
    # hooks are removed after the `with` block
    assert all(not mod._forward_hooks for mod in m.modules())
