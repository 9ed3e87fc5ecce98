"""The one inference path: an image's test-time views depend on the image and the run alone, the augmentation's
global draws are unchanged, and the cache key follows the Config's field metadata."""
import dataclasses
import subprocess
import sys

import pytest
import torch
from torch import nn

from ladnn import config
from ladnn.config import Config, cache_fields, cache_key
from ladnn.images import _draw, augment
from ladnn.infer import channels_last, inference_net, tta_outputs, tta_view, view_outputs
from ladnn.models import build_model


def _imgs(n=6, seed=0):
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_views_do_not_depend_on_the_batch():
    x = _imgs()
    batch = tta_view(x, 1, 4321)
    alone = torch.cat([tta_view(x[i:i + 1], 1, 4321) for i in range(len(x))])
    assert torch.equal(batch, alone)
    flipped = tta_view(x.flip(0), 1, 4321).flip(0)  # other positions, other neighbours
    assert torch.equal(batch, flipped)
    assert not torch.equal(batch, tta_view(x, 2, 4321))  # view 2 is another view
    assert not torch.equal(batch, tta_view(x, 1, 1))  # another seed, other views
    assert torch.equal(tta_view(x, 0, 4321), x)  # view 0 is the plain image
    twins = tta_view(torch.cat([x[:1], x[:1]]), 1, 4321)
    assert torch.equal(twins[0], twins[1])  # equal pixels, equal views


def test_tta_outputs_of_an_image_alone_equal_those_in_a_batch():
    model = build_model("resnet18", "ladnn", pretrained=False).eval()
    x, dc, cpu = _imgs(5), model.data_config, torch.device("cpu")
    whole = tta_outputs(model, x, 4, dc, cpu, 4321, batch=5)
    small = tta_outputs(model, x, 4, dc, cpu, 4321, batch=2)
    alone = torch.cat([tta_outputs(model, x[i:i + 1], 4, dc, cpu, 4321) for i in range(5)])
    torch.testing.assert_close(whole, small, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(whole, alone, atol=1e-5, rtol=1e-5)
    plain = view_outputs(model, x, [0], dc, cpu, 4321)[0]
    assert not torch.allclose(whole, plain)  # the views change the scores


def test_inference_net_scores_as_the_model_at_any_batch_and_falls_back():
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", "ladnn", pretrained=False).eval()
    fast = inference_net(model, torch.zeros(1, 3, 64, 64))
    assert isinstance(fast, torch.jit.ScriptModule)  # traced and frozen, BatchNorm folded
    with torch.no_grad():
        for n in (1, 4, 7):  # traced on one image, run on others
            x = channels_last(torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(n)))
            torch.testing.assert_close(fast(x), model(x), atol=1e-4, rtol=1e-4)
    # the model's own weights are untouched, and a later change does not reach the copy
    before = fast(x).clone()
    with torch.no_grad():
        model.head.weight.add_(1.0) if hasattr(model.head, "weight") else next(model.head.parameters()).add_(1.0)
    torch.testing.assert_close(fast(x), before)

    class Untraceable(nn.Module):  # a dict output: torch.jit.trace refuses it
        def forward(self, x):
            return {"logits": x * 2}

    odd = Untraceable()
    assert inference_net(odd, torch.ones(1, 3, 4, 4)) is odd  # the eager module itself, in eval mode


def test_run_net_chunks_cpu_batches_and_changes_no_output(monkeypatch):
    from ladnn import infer

    calls = []

    class Counting(nn.Module):
        def forward(self, x):
            calls.append(len(x))
            return x.flatten(1).sum(1, keepdim=True) * 2

    x = torch.randn(10, 3, 8, 8)
    monkeypatch.setattr(infer, "CPU_CHUNK_VALUES", 4 * 3 * 8 * 8)  # 4 inputs a call
    out = infer.run_net(Counting(), x, torch.device("cpu"))
    assert calls == [4, 4, 2]
    torch.testing.assert_close(out, x.flatten(1).sum(1, keepdim=True) * 2)
    calls.clear()
    monkeypatch.setattr(infer, "CPU_CHUNK_VALUES", 1)  # never fewer than one input a call
    infer.run_net(Counting(), x[:3], torch.device("cpu"))
    assert calls == [1, 1, 1]


def test_global_augmentation_draws_are_unchanged():
    """The training views come from torch's global generator in the order they always had: per batch, the scale
    of every image, then the shear, then the flip (and for `strong` the rotation, shift, contrast, brightness)."""
    x = _imgs(4)
    torch.manual_seed(7)
    got = augment(x)
    torch.manual_seed(7)
    s = torch.empty(4).uniform_(0.8, 1.2)
    sh = torch.deg2rad(torch.empty(4).uniform_(-0.2, 0.2))
    flip = torch.where(torch.rand(4) < 0.5, -1.0, 1.0)
    theta = torch.zeros(4, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 1] = flip / s, -torch.tan(sh) / s, 1 / s
    grid = nn.functional.affine_grid(theta, [4, 3, 32, 32], align_corners=False)
    want = nn.functional.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    assert torch.equal(got, want)
    g = torch.Generator().manual_seed(3)
    p = _draw(2, True, 0.2, (0.8, 1.2), g)
    assert set(p) == {"scale", "shear", "flip", "angle", "shift", "contrast", "bright"} and p["shift"].shape == (2, 2)


def test_cache_key_follows_field_metadata():
    assert {"backbone", "tta", "tta_seed", "preprocess", "augment"} <= set(cache_fields())
    assert not {"lr", "seed", "method", "epochs"} & set(cache_fields())
    base = cache_key(Config())
    for f in dataclasses.fields(Config):
        v = getattr(Config(), f.name)
        other = {int: v + 1 if isinstance(v, int) and not isinstance(v, bool) else v, bool: not v}.get(type(v), v)
        if other == v:
            continue
        changed = cache_key(dataclasses.replace(Config(), **{f.name: other})) != base
        assert changed == f.metadata["cache"] or (f.name == "seed"), f.name
    with pytest.raises(TypeError, match="cache"):
        config.config_field(1, "a field that does not say whether it changes the caches")


def test_importing_ladnn_modules_in_any_order(tmp_path):
    """Every module imports on its own in a fresh interpreter (no import works only because of another's order)."""
    mods = ["config", "files", "summary", "layers", "sources", "data", "images", "models", "infer", "cam", "scores",
            "train", "predict", "evaluate", "generalisation", "serve", "cli", "profiles", "runner", "pages", "book"]
    code = "; ".join(f"import ladnn.{m}" for m in reversed(mods))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


def test_onnx_net_scores_as_the_model_is_cached_and_gives_none_when_it_cannot(monkeypatch, tmp_path):
    from ladnn import infer

    monkeypatch.setenv("LADNN_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", "ladnn", pretrained=False).eval()
    built = []

    def build():
        built.append(1)
        return model

    example = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    fast = infer.onnx_net(build, example, "lite0:test")
    assert isinstance(fast, infer.OnnxNet) and len(built) == 1
    files = list((tmp_path / "onnx").glob("*.onnx"))
    assert len(files) == 1 and not list((tmp_path / "onnx").glob(".*tmp"))  # one file, no temporary left
    assert fast.path == files[0]  # where the copy lives (benchmarks/predict_latency.py reads it with OpenVINO)
    with torch.no_grad():
        for n in (1, 3, 8):  # exported on 2 images, run on other batch sizes
            x = channels_last(torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(n)))
            torch.testing.assert_close(fast(x), model(x), atol=1e-4, rtol=1e-4)
    # a second copy reads the file: nothing is built or exported
    monkeypatch.setattr(infer, "_export_onnx", lambda *a: pytest.fail("exported again"))
    again = infer.onnx_net(build, example, "lite0:test")
    assert isinstance(again, infer.OnnxNet) and len(built) == 1 and again.path == files[0]
    # another key (other weights) is another file; an export that fails gives None (the caller scores otherwise)
    # and leaves no file
    monkeypatch.setattr(infer, "_export_onnx", lambda *a: (_ for _ in ()).throw(RuntimeError("no operator")))
    assert infer.onnx_net(build, example, "lite0:other") is None
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1
    # a damaged file is removed and exported again
    files[0].write_bytes(b"not onnx")
    monkeypatch.undo()
    monkeypatch.setenv("LADNN_CACHE_DIR", str(tmp_path))
    n = len(built)
    fixed = infer.onnx_net(build, example, "lite0:test")
    assert isinstance(fixed, infer.OnnxNet) and len(built) > n and files[0].stat().st_size > 1000


def test_onnx_net_refuses_a_copy_that_disagrees(monkeypatch, tmp_path):
    from ladnn import infer

    monkeypatch.setenv("LADNN_CACHE_DIR", str(tmp_path))
    model = build_model("efficientnet_lite0", "ladnn", pretrained=False).eval()
    real = infer._export_onnx

    def wrong(net, example, path):  # exports a network with other weights
        other = build_model("efficientnet_lite0", "ladnn", pretrained=False).eval()
        with torch.no_grad():
            next(other.head.parameters()).add_(1.0)
        real(other, example, path)

    monkeypatch.setattr(infer, "_export_onnx", wrong)
    assert infer.onnx_net(lambda: model, torch.randn(2, 3, 64, 64), "lite0:wrong") is None
    assert not list((tmp_path / "onnx").glob("*.onnx"))


def test_onnx_copy_with_two_outputs_scores_and_maps_like_the_model(monkeypatch, tmp_path):
    """`Predictor`'s ONNX network: the logits and the feature map of `WithFeatures`, every output checked."""
    from ladnn import infer
    from ladnn.models import WithFeatures

    monkeypatch.setenv("LADNN_CACHE_DIR", str(tmp_path))
    model = build_model("efficientnet_lite0", "baseline", pretrained=False).eval()
    fast = infer.onnx_net(lambda: WithFeatures(model), torch.randn(2, 3, 64, 64), "lite0:two")
    assert fast is not None and fast.n_outputs == 2
    x = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits, features = fast.all_outputs(x)
        torch.testing.assert_close(logits, model(x), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(features, model.backbone.forward_features(x), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(fast(x), logits)  # called: the first output
