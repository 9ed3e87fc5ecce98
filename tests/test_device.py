"""The GPU paths, on a machine without a GPU: every function that moves tensors to a device runs with the model on a
pretend `cuda:0` (tests/fakecuda.py: tensors that report cuda and hold CPU values), where mixing devices fails as
it does on a GPU. Because the values underneath are the CPU's, a run on the pretend GPU must also give the CPU's
numbers: that holds the code to "the device changes where tensors live, nothing else"."""
import json
import os

import numpy as np
import pytest
import torch
from fakecuda import DeviceMismatch, FakeCudaTensor, fake_cuda

from ladnn.config import TASK_WEIGHTINGS, Config
from ladnn.models import build_model, cam_layer, split_model
from ladnn.mtl import GradientProbe, TaskCombiner
from ladnn.train import targets, train, train_step

CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def _restore_torch_settings():
    """`use_device("cuda")` switches on deterministic algorithms for the process: the other tests get it back."""
    det, bench, cudnn_det = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
                             torch.backends.cudnn.deterministic)
    yield
    torch.use_deterministic_algorithms(det)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = bench, cudnn_det


def _model(name="tf_efficientnet_lite0", method="ladnn"):
    torch.manual_seed(0)
    return build_model(name, method, pretrained=False)


def test_the_pretend_gpu_fails_where_a_gpu_fails():
    """The test's own instrument: without this, every other test here could pass by checking nothing."""
    with fake_cuda():
        x = torch.ones(2, 3).to("cuda")
        assert isinstance(x, FakeCudaTensor) and x.is_cuda and torch.cuda.is_available()
        with pytest.raises(DeviceMismatch):
            x + torch.ones(2, 3)
        with pytest.raises(DeviceMismatch):
            torch.nn.Linear(3, 1)(x)  # a module left on the CPU
        with pytest.raises(TypeError, match="numpy"):
            x.numpy()
        with pytest.raises(DeviceMismatch, match="generator"):
            torch.randperm(4, generator=torch.Generator().manual_seed(0), device="cuda")
        with pytest.raises(DeviceMismatch, match="indices"):
            torch.arange(5)[torch.tensor([1, 2]).to("cuda")]
        assert torch.arange(5).to("cuda")[torch.tensor([1, 2])].is_cuda  # CPU indices into cuda: allowed
        assert float((x * torch.tensor(2.0)).sum()) == 12.0  # a CPU scalar mixes, as on a GPU
        assert (x.cpu() + torch.ones(2, 3)).device.type == "cpu"
        lin = torch.nn.Linear(3, 1).to("cuda")
        lin(x).sum().backward()
        assert isinstance(lin.weight.grad, FakeCudaTensor)


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "resnet18"])
def test_split_model_follows_the_models_device(name):
    """The first crash of 4d8f8d4 on any GPU: the split check made its probe input on the CPU (every
    finetune=head/top run, the caches, `plain_probs`)."""
    m = _model(name)
    with fake_cuda():
        m.to(CUDA)
        _, upper = split_model(m, 2)
        assert isinstance(next(upper.parameters()), FakeCudaTensor)


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "resnet18"])
def test_cam_layer_follows_the_models_device(name):
    """The second crash of 4d8f8d4 on any GPU: the Grad-CAM++ layer search made its probe input on the CPU (every
    map on a GPU: the Grad-CAM++ chapter, the marks, `serve ?cam=true`)."""
    m = _model(name)
    want = cam_layer(m)
    with fake_cuda():
        m.to(CUDA)
        from ladnn.models import _CAM_LAYERS

        _CAM_LAYERS.pop(m, None)  # found again, on the GPU
        assert cam_layer(m) is want


def _gpu_and_cpu_runs(tmp_path, **kw):
    cfg = dict(backbone="tf_efficientnet_lite0", limit=8, epochs=1, batch_size=4, lr=1e-3, views=1, tta=2, **kw)
    with fake_cuda():
        gpu = train(Config(device="cuda", **cfg), tmp_path / "gpu")
    cpu = train(Config(device="cpu", **cfg), tmp_path / "cpu")
    return gpu, cpu


@pytest.mark.parametrize("finetune", ["full", "top"])
def test_a_run_on_the_gpu_trains_scores_and_writes_the_cpus_numbers(tmp_path, finetune, data_dir):
    """`train` end to end on the pretend GPU: the decoded images moved there, augmentation and test-time views on
    the device, the activation cache (top), the training step, validation, test and D1 scoring, the checkpoint.
    Its predictions equal the CPU run's, and metrics.json records the precision."""
    gpu, cpu = _gpu_and_cpu_runs(tmp_path, finetune=finetune, top_blocks=2)
    assert gpu.run.device == "cuda" and gpu.run.precision["device"] == "cuda:0"
    assert gpu.run.precision["dtype"] == "float32" and gpu.run.precision["tf32"] is False
    assert gpu.run.precision["deterministic_algorithms"] is True
    assert cpu.run.precision["device"] == "cpu"
    a = np.loadtxt(tmp_path / "gpu" / "predictions.csv", delimiter=",", skiprows=1, usecols=(1,))
    b = np.loadtxt(tmp_path / "cpu" / "predictions.csv", delimiter=",", skiprows=1, usecols=(1,))
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert json.loads((tmp_path / "gpu" / "metrics.json").read_text())["run"]["precision"]["tf32"] is False


@pytest.mark.parametrize("weighting", TASK_WEIGHTINGS)
def test_every_task_combiner_and_the_gradient_probe_on_the_gpu(weighting):
    m = _model()
    cfg = Config(task_weighting=weighting, grad_diagnostics=True, finetune="top", top_blocks=1)
    x_cpu = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    y, known = targets(__import__("pandas").DataFrame(
        {"covid": [1, 0, 1, 0], **{k: [1, 0, 0, 0] for k in ("GGO", "Csld", "CrPa", "AirBr", "InSepThi")},
         "lesions_known": [True, False, True, False]}))
    with fake_cuda():
        m.to(CUDA)
        lower, upper = split_model(m, 1)
        for p in lower.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            feats = lower(x_cpu.to(CUDA))
        combine = TaskCombiner(cfg, upper).to(CUDA)
        params = [p for p in upper.parameters() if p.requires_grad] + combine.parameters()
        opt = torch.optim.Adam(params, lr=1e-3)
        probe = GradientProbe(cfg, upper)
        before = [p.detach().cpu().clone() for p in params]
        loss = train_step(combine, opt, feats, y.to(CUDA), known.to(CUDA), cfg, CUDA, probe)
        assert isinstance(loss, FakeCudaTensor) and np.isfinite(float(loss))
        assert any(not torch.equal(b, p.detach().cpu()) for b, p in zip(before, params))
        assert probe.rows and np.isfinite(probe.epoch_summary()["grad_cosine_lesions"])


def test_adabn_and_views_on_the_gpu():
    from ladnn.infer import adapt_batchnorm, view_outputs

    m = _model().eval()
    imgs = torch.randint(0, 255, (3, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    want = view_outputs(m, imgs, range(3), m.data_config, torch.device("cpu"), tta_seed=1)
    with fake_cuda():
        m.to(CUDA)
        got = view_outputs(m, imgs, range(3), m.data_config, CUDA, tta_seed=1)
        adapted = adapt_batchnorm(m, imgs, m.data_config, CUDA)
        assert isinstance(next(adapted.parameters()), FakeCudaTensor)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_predictor_maps_plain_probs_and_service_on_the_gpu(tiny_run):
    """`Predictor` on the GPU (the model itself scores: no ONNX copy), its Grad-CAM++ maps, `plain_probs` (the
    Validity chapter's rescoring) and the service with maps: the CPU's numbers, no device error."""
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from ladnn.evaluate import plain_probs
    from ladnn.predict import Predictor
    from ladnn.serve import create_app

    img = np.random.default_rng(0).integers(0, 255, (96, 96), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    data = buf.getvalue()
    cpu = Predictor(tiny_run, "cpu", onnx=False)
    x = cpu.preprocess(data)[1]
    want_p, want_maps = cpu.probs(x), cpu.cam_maps(x, [0, 1])
    want_plain = plain_probs([tiny_run], [(data, "a.png")], "cpu")[0]
    with fake_cuda():
        gpu = Predictor(tiny_run, "cuda")
        assert gpu.device.type == "cuda" and isinstance(next(gpu.model.parameters()), FakeCudaTensor)
        got_p, got_maps = gpu.score(x, [0, 1])
        got_plain = plain_probs([tiny_run], [(data, "a.png")], "cuda")[0]
        client = TestClient(create_app(tiny_run, device="cuda"))
        r = client.post("/api/predict?cam=true", files=[("files", ("a.png", data))])
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(got_p, want_p, atol=1e-5)
    np.testing.assert_allclose(got_maps, want_maps, atol=1e-4)
    np.testing.assert_allclose(got_plain, want_plain, atol=1e-5)
    assert abs(r.json()["results"][0]["p_covid"] - float(want_p[0, 0])) < 1e-5


def test_an_unusable_gpu_is_said_in_one_line(monkeypatch):
    """A driver too old for this torch's CUDA build: `torch.cuda.is_available()` only warns and answers False, so
    `auto` would fall back to the CPU without a word. The device line says why; `cuda` by name stops, saying it."""
    import warnings

    from ladnn import infer

    def unavailable():
        warnings.warn("CUDA initialization: The NVIDIA driver on your system is too old (found version 12040).",
                      stacklevel=1)
        return False

    monkeypatch.setattr(torch.cuda, "is_available", unavailable)
    real_exists = os.path.exists  # no NVIDIA device file either, as on this CPU machine (a GPU machine has them)
    monkeypatch.setattr(os.path, "exists", lambda p: False if "nvidia" in str(p) else real_exists(p))
    first, second = infer.describe(infer.use_device("auto")).split("\n")
    assert first.startswith("device: cpu (") and "float32, TF32 off" in first
    assert second.startswith("a GPU is present but unusable: CUDA initialization: The NVIDIA driver")
    assert "too old" in second and second.endswith("training on the CPU")
    with pytest.raises(RuntimeError, match="too old"):
        infer.pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "\n" not in infer.describe(infer.use_device("auto"))  # no GPU, nothing to say


def test_a_build_names_its_device_first_and_stops_where_the_profile_wants_a_missing_gpu():
    from unittest import mock

    from conftest import ROOT

    from ladnn.book import device_line
    from ladnn.profiles import BuildError, load_profile

    with mock.patch("torch.cuda.is_available", return_value=False):  # as on a machine without a GPU
        assert device_line(load_profile("quick", ROOT)).startswith("device: cpu (")
        with pytest.raises(BuildError, match="profile gpu: device 'cuda' was asked for"):
            device_line(load_profile("gpu", ROOT))
    with fake_cuda():
        assert device_line(load_profile("gpu", ROOT)).startswith("device: cuda:0 (pretend GPU")
