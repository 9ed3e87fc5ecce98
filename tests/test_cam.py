import numpy as np
import torch
from pytorch_grad_cam import GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from ladnn.cam import cam_maps, overlay
from ladnn.models import build_model, cam_layer


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


def test_backward_to_the_target_layer_only_gives_the_same_map():
    torch.manual_seed(0)
    m = build_model("resnet18", "ladnn", pretrained=False).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with GradCAMPlusPlus(model=m, target_layers=[cam_layer(m)]) as cam:  # the whole backward pass
        want = cam(input_tensor=x, targets=[ClassifierOutputTarget(k) for k in (0, 2)])
    got = cam_maps(m, x, [0, 2])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert all(p.requires_grad for p in m.parameters())  # the freeze is undone
    assert all(not mod._forward_hooks for mod in m.modules())


def test_maps_from_the_feature_map_equal_the_models():
    """The ONNX path of `Predictor.cam_maps`: Grad-CAM++ from the backbone's final feature map (`WithFeatures`),
    through the pooling and the head only, gives the maps of the whole model's target layer."""
    from ladnn.cam import cam_maps_from_features
    from ladnn.models import WithFeatures

    torch.manual_seed(0)
    for name in ("tf_efficientnet_lite0", "resnet18"):
        m = build_model(name, "ladnn", pretrained=False).eval()
        x = torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            logits, features = WithFeatures(m)(x)
            torch.testing.assert_close(logits, m(x))
        got = cam_maps_from_features(m, features, [0, 2, 5], 96)
        want = cam_maps(m, x, [0, 2, 5])
        assert got.shape == (3, 96, 96)
        np.testing.assert_allclose(got, want, atol=1e-4)
        assert all(p.requires_grad for p in m.parameters()) and all(not mod._forward_hooks for mod in m.modules())
