"""The one inference path: how a batch of decoded images becomes the network's input, and how a network's outputs
on an image are computed with test-time views. Training's validation and test scoring, the activation caches, the
source protocol, `Predictor` (so `predict`, `evaluate` and `serve`), Grad-CAM++ and the Validity rescoring all call
these functions.

Test-time augmentation (TTA) averages the logits of the plain image and `tta - 1` augmented views. View k of an
image is drawn from a generator seeded by the run's `tta_seed`, k and a hash of the image's pixels (uint8, at the
model's size, after the run's preprocessing): an image gets the same views alone or in a batch, at any position,
beside any other images, on any device."""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import os
import platform
import warnings

import numpy as np
import torch
from tqdm import tqdm

from ladnn.images import augment, cache_dir, normalize


def cuda_problem() -> str | None:
    """Why a GPU this machine seems to have cannot be used, in one line; None when CUDA works or there is no sign of
    a GPU. `torch.cuda.is_available()` answers False without a word when the driver is older than this torch's CUDA
    build needs: its warning is caught here, and an NVIDIA device file without a usable CUDA is named."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ok = torch.cuda.is_available()
    if ok:
        return None
    said = [str(w.message).split("(Triggered internally")[0].strip() for w in caught
            if "CUDA" in str(w.message) or "NVIDIA" in str(w.message)]
    built = f"this torch {torch.__version__} is built for CUDA {torch.version.cuda}" if torch.version.cuda else \
        f"this torch {torch.__version__} is built without CUDA"
    if said:
        return f"a GPU is present but unusable: {said[0]} ({built}); training on the CPU"
    if os.path.exists("/dev/nvidia0") or os.path.exists("/proc/driver/nvidia/version"):
        return f"an NVIDIA device is present but CUDA is not usable ({built}); training on the CPU"
    return None


def pick_device(name: str = "auto") -> torch.device:
    """`auto`: the GPU when there is one, else the CPU. A GPU asked for by name (`cuda`, `cuda:1`) that is not
    visible is an error, not a silent run on the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r}: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        problem = cuda_problem()
        raise RuntimeError(f"device {name!r} was asked for but this machine shows "
                           f"{torch.cuda.device_count() if torch.cuda.is_available() else 'no'} GPU(s) "
                           f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}"
                           f"{'; ' + problem.split(';')[0] if problem else ''}); "
                           "not training on the CPU instead: pass --device cpu for that")
    return device


# One stated precision on every device: float32 everywhere, with TF32 off, so that a run trained or scored on a GPU
# gives the numbers it gives on the CPU up to float32 rounding (the book's numbers hold on either). The networks
# here are small (EfficientNet-Lite, at batch 32): a run's time on a GPU goes mostly to starting, decoding and
# scoring, not to matrix arithmetic, so bfloat16 or TF32 would buy little and cost that agreement. On a GPU the
# cuDNN autotuner is off and deterministic algorithms are asked for (warn_only: an operation that has none, such as
# DenseNet's adaptive-pool backward, warns and runs), so the same seed repeats a run on the same GPU.
PRECISION = {"dtype": "float32", "tf32": False, "matmul_precision": "highest"}


def use_device(name: str = "auto") -> torch.device:
    """`pick_device`, with the precision settings of `PRECISION` applied to torch for that device."""
    device = pick_device(name)
    torch.set_float32_matmul_precision(PRECISION["matmul_precision"])  # no TF32, nor bfloat16 inside matmuls
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (read at its first use)
        torch.backends.cuda.matmul.allow_tf32 = PRECISION["tf32"]
        torch.backends.cudnn.allow_tf32 = PRECISION["tf32"]
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
    return device


def precision(device: torch.device) -> dict:
    """What a run records of how it computed (`metrics.json`'s `run.precision`, shown on its page): the device and
    its name, the number type, and torch's settings as they are now (float32 matmul precision, TF32, determinism)."""
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        tf32 = bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)
        return {"device": f"cuda:{idx}", "name": torch.cuda.get_device_name(idx), "cuda": torch.version.cuda,
                "dtype": PRECISION["dtype"], "tf32": tf32,
                "matmul_precision": torch.get_float32_matmul_precision(),
                "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
                "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
                "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}
    return {"device": "cpu", "name": cpu_name(), "threads": torch.get_num_threads(), "dtype": PRECISION["dtype"],
            "tf32": False, "matmul_precision": torch.get_float32_matmul_precision(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}


def cpu_name() -> str:
    """The processor's model name (Linux's /proc/cpuinfo), else what `platform` knows of it."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: torch.device) -> str:
    """One line: the device a command computes on and its precision (the first line of a `train` and a build)."""
    p = precision(device)
    where = f"{p['device']} ({p['name']}, CUDA {p['cuda']})" if device.type == "cuda" else \
        f"cpu ({p['threads']} thread{'' if p['threads'] == 1 else 's'})"
    det = "deterministic algorithms, cuDNN autotuner off" if device.type == "cuda" else "CPU kernels"
    line = f"device: {where}; {p['dtype']}, TF32 {'on' if p['tf32'] else 'off'}, {det}"
    if device.type == "cpu" and (problem := cuda_problem()):
        line += f"\n{problem}"
    return line


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """4-D inputs in channels-last memory format (faster convolutions on CPU and GPU alike)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def agrees(got, want, rtol: float = 1e-4) -> bool:
    """Whether a scoring copy's outputs (a tensor or a sequence of them) equal the network's: the same shapes, and
    no value further than `rtol` of the output's scale from the network's."""
    got, want = ([t] if torch.is_tensor(t) else list(t) for t in (got, want))
    return len(got) == len(want) and all(g.shape == w.shape and bool((g - w).abs().max() <= rtol * (w.abs().max() + 1))
                                         for g, w in zip(got, want))


def inference_net(net: torch.nn.Module, example: torch.Tensor, rtol: float = 1e-4) -> torch.nn.Module:
    """A copy of `net` for scoring only, on the CPU: traced and frozen by TorchScript, which folds BatchNorm into
    the convolutions and fuses their activations; faster than the eager network (benchmarks/predict_latency.py
    measures it). It is
    checked against `net` on `example` (a batch of its input, on `net`'s device): where tracing fails or the two
    differ by more than `rtol` of the output's scale, `net` itself in eval mode. TorchScript is deprecated in
    favour of torch.compile, whose compilation was slow and whose result ran slower than the frozen trace.
    The copy's weights are those of the call: a network that trains on needs a new copy."""
    net.eval()
    if example.device.type != "cpu":
        return net
    example = channels_last(example)
    # The profiling executor specialises a graph on the shapes of its first calls and ran other batch sizes 1.5
    # times slower (one image's 4 views after a check on 1); the simple executor runs every shape at full speed.
    torch._C._jit_set_profiling_executor(False)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice; the fallback below is eager
            fast = torch.jit.freeze(torch.jit.trace(copy.deepcopy(net), example, check_trace=False))
            want, got = net(example), fast(example)
        ok = agrees(got, want, rtol)
    except Exception:  # noqa: BLE001 (any tracing failure: the eager network scores the same)
        ok = False
    return fast if ok else net


class OnnxNet(torch.nn.Module):
    """A network exported to ONNX, run by ONNX Runtime on the CPU on a batch of any size. Called, it returns the
    first output (a float32 tensor) like a network with one; `all_outputs` returns them all. `path`: its file."""

    def __init__(self, session, path=None):
        super().__init__()
        self.session, self.path = session, path
        self.input_name = session.get_inputs()[0].name
        self.n_outputs = len(session.get_outputs())

    def all_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.session.run(None, {self.input_name: x.detach().float().contiguous().numpy()})
        return [torch.from_numpy(o) for o in out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.all_outputs(x)[0]


def _onnx_session(path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _export_onnx(net: torch.nn.Module, example: torch.Tensor, path) -> None:
    """`net` to an ONNX file at `path` (written whole or not at all), the weights inside it, the batch dimension
    left free. torch's exporter (`dynamo=True`, whose graph optimisation ONNX Runtime runs fastest)
    prints its progress; it is kept out of the caller's output."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (example.contiguous(),), str(tmp), dynamo=True, input_names=["x"],
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                              external_data=False)  # the weights inside the one file (13 MB for Lite0)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def onnx_net(build, example: torch.Tensor, key: str, rtol: float = 1e-4) -> OnnxNet | None:
    """A copy of a network for scoring only on the CPU, run by ONNX Runtime: faster than the frozen TorchScript
    copy of `inference_net` (benchmarks/predict_latency.py); None where there is none to be had
    (no ONNX Runtime, an export that fails or disagrees with the network), and the caller scores another way.
    `key` names the network and its weights (`ladnn.models.state_digest`); `build()` returns the network itself
    (eval mode; its outputs a tensor or a tuple of them) and is called only when its ONNX file is not cached yet.
    An export takes seconds, so the file is kept in `$LADNN_CACHE_DIR/onnx`, named by a
    hash of `key`, the input shape and the versions of torch, timm and ONNX Runtime: a run is exported once per
    machine. A new export is checked against the network on `example` (`agrees`, every output, as for
    `inference_net`) and kept only if it agrees."""
    if example.device.type != "cpu":
        return None
    try:
        from importlib.metadata import version

        import onnxruntime as ort

        name = f"{key}:{tuple(example.shape[1:])}:{torch.__version__}:{version('timm')}:{ort.__version__}"
        path = cache_dir() / "onnx" / f"{hashlib.sha256(name.encode()).hexdigest()[:24]}.onnx"
        threads = torch.get_num_threads()
        if path.exists():
            try:
                return OnnxNet(_onnx_session(path, threads), path).eval()
            except Exception:  # noqa: BLE001 (a damaged file: exported again below)
                path.unlink(missing_ok=True)
        net = build().eval()
        path.parent.mkdir(parents=True, exist_ok=True)
        # torch.export fixes a dimension of size 1: the batch of the example is at least 2
        _export_onnx(net, example if len(example) > 1 else example.repeat(2, 1, 1, 1), path)
        fast = OnnxNet(_onnx_session(path, threads), path).eval()
        with torch.no_grad():
            if not agrees(fast.all_outputs(example), net(channels_last(example)), rtol):
                path.unlink(missing_ok=True)
                raise ValueError("the ONNX copy disagrees with the network")
        return fast
    except Exception:  # noqa: BLE001 (no ONNX Runtime, an operator it lacks, a disagreement: the caller decides)
        return None


def model_input(x: torch.Tensor, data_config: dict, device: torch.device | str | None = None) -> torch.Tensor:
    """Images N x 3 x H x W in 0..255 (uint8, or float from `augment`) -> the network's input: on `device`,
    normalised with the backbone's own mean and std (timm's pretrained config), channels-last."""
    if device is not None:
        x = x.to(device, non_blocking=True)
    return channels_last(normalize(x, data_config["mean"], data_config["std"]))


def pixel_digests(imgs: torch.Tensor) -> list[bytes]:
    """SHA-256 of each uint8 image's pixels (with its shape): what its test-time views are seeded from."""
    arr = imgs.detach().cpu().numpy()
    return [hashlib.sha256(str(a.shape).encode() + np.ascontiguousarray(a).tobytes()).digest() for a in arr]


def view_generators(digests: list[bytes], view: int, tta_seed: int) -> list[torch.Generator]:
    """One generator per image for test-time view `view` (1, 2, ...), seeded by `tta_seed`, `view` and the image."""
    out = []
    for d in digests:
        seed = int.from_bytes(hashlib.sha256(f"{tta_seed}:{view}:".encode() + d).digest()[:8], "little")
        out.append(torch.Generator().manual_seed(seed))
    return out


def tta_view(imgs: torch.Tensor, view: int, tta_seed: int, strength: str = "paper",
             digests: list[bytes] | None = None) -> torch.Tensor:
    """Test-time view `view` of each image (0: the plain image; k >= 1: the k-th augmented view), 0..255;
    `digests` (`pixel_digests` of `imgs`) when the caller already has them."""
    if view == 0:
        return imgs
    digests = pixel_digests(imgs) if digests is None else digests
    return augment(imgs, strength=strength, generators=view_generators(digests, view, tta_seed))


# On the CPU a network runs fastest on a few inputs at a time: with 64 images of 224 x 224 the activations leave
# the caches and EfficientNet-Lite0 took 2.5 times as long per image as with one (benchmarks/predict_latency.py).
# Inputs go through in chunks of at most this many input values (4 images of 224 x 224, so one image's 4 test-time
# views in one call; 29 cached activations of 112 x 14 x 14); a GPU takes the whole batch.
CPU_CHUNK_VALUES = 640_000


def run_net(net: torch.nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`net` on a batch of network inputs already on `device`, in CPU-sized chunks: float32 outputs on the CPU.
    The chunks change no draw and no order, only how many inputs share one call."""
    n = len(x) if device.type != "cpu" else max(1, CPU_CHUNK_VALUES // max(1, x[0].numel()))
    return torch.cat([net(c).float().cpu() for c in x.split(n)]) if len(x) else net(x).float().cpu()


def _scores(net: torch.nn.Module, x: torch.Tensor, data_config: dict, device: torch.device) -> torch.Tensor:
    """`net` on one batch of 0..255 images already on `device`: float32 outputs on the CPU."""
    return run_net(net, model_input(x, data_config), device)


@torch.no_grad()
def image_outputs(net: torch.nn.Module, imgs: torch.Tensor, data_config: dict, device: torch.device,
            transform=None, batch: int = 64, desc: str = "") -> torch.Tensor:
    """`net`'s outputs (eval mode, float32 on the CPU) on uint8 images, `batch` at a time, each batch passed through
    `transform` (0..255 in and out, such as the training augmentation) first. `net` may be the whole model or its
    frozen lower part (the activation caches)."""
    net.eval()
    out = []
    for i in tqdm(range(0, len(imgs), batch), desc=desc, leave=False, disable=None if desc else True):
        x = imgs[i:i + batch].to(device, non_blocking=True)
        out.append(_scores(net, transform(x) if transform else x, data_config, device))
    return torch.cat(out)


@torch.no_grad()
def view_outputs(net: torch.nn.Module, imgs: torch.Tensor, views, data_config: dict, device: torch.device,
                 tta_seed: int, strength: str = "paper", batch: int = 64, desc: str = "") -> torch.Tensor:
    """`net`'s outputs on the test-time views `views` (0: the plain image) of each uint8 image: len(views) x N x
    ... (eval mode, float32 on the CPU). Each batch is moved to the device and its pixels hashed once, for all
    its views; the views of a batch smaller than `batch` go through `net` together (one image's 4 views: one call
    of 4 instead of 4 of 1)."""
    net.eval()
    views = list(views)
    out: list[list[torch.Tensor]] = [[] for _ in views]
    for i in tqdm(range(0, len(imgs), batch), desc=desc, leave=False, disable=None if desc else True):
        x = imgs[i:i + batch].to(device, non_blocking=True)
        digests = pixel_digests(x) if any(views) else None
        together = max(1, batch // len(x))  # views per call of `net`, at most `batch` images in all
        for k in range(0, len(views), together):
            vs = views[k:k + together]
            y = _scores(net, torch.cat([tta_view(x, v, tta_seed, strength, digests) for v in vs]), data_config, device)
            for j, part in enumerate(y.split(len(x))):
                out[k + j].append(part)
    return torch.stack([torch.cat(o) for o in out])


def tta_outputs(net: torch.nn.Module, imgs: torch.Tensor, tta: int, data_config: dict, device: torch.device,
                tta_seed: int, strength: str = "paper", batch: int = 64, plain: torch.Tensor | None = None
                ) -> torch.Tensor:
    """Logits of uint8 images with test-time augmentation: the mean over the plain image and `tta - 1` views.
    `plain`: the plain images' outputs when the caller has them already (`Predictor.score`), so that only the
    augmented views go through `net`."""
    if plain is None:
        views = view_outputs(net, imgs, range(tta), data_config, device, tta_seed, strength, batch)
        return view_mean(views[0], views[1:])
    if tta <= 1:
        return plain.float().cpu()
    return view_mean(plain, view_outputs(net, imgs, range(1, tta), data_config, device, tta_seed, strength, batch))


def view_mean(plain: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """Test-time augmentation's rule, for whole images (`tta_outputs`) and cached activations
    (`ladnn.train.FeatureBatches`) alike: the mean of the plain view's logits and those of the augmented views
    (V x N x ...; none: the plain view's), float32 on the CPU."""
    plain = plain.float().cpu()
    return torch.cat([plain[None], views.float().cpu()]).mean(0) if len(views) else plain


@torch.no_grad()
def forward(net: torch.nn.Module, xs: torch.Tensor, device: torch.device, batch: int = 64) -> torch.Tensor:
    """`net`'s outputs (eval mode, float32 on the CPU) on inputs that are already the network's (cached
    activations), `batch` at a time."""
    net.eval()
    out = []
    for i in range(0, len(xs), batch):
        out.append(run_net(net, channels_last(xs[i:i + batch].to(device)), device))
    return torch.cat(out)


def adapt_batchnorm(net: torch.nn.Module, imgs: torch.Tensor, data_config: dict, device: torch.device,
                    batch: int = 64) -> torch.nn.Module:
    """AdaBN (Li et al., "Revisiting batch normalization for practical domain adaptation", 2016): a copy of `net`
    whose BatchNorm layers carry the mean and variance of the unlabelled target images `imgs` (uint8, plain views)
    instead of the training images'. No label and no gradient is used; the weights stay as trained."""
    adapted = copy.deepcopy(net).eval()
    bns = [m for m in adapted.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise ValueError("AdaBN: the network has no BatchNorm layer to adapt")
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every target batch
        m.train()
    with torch.no_grad():
        for i in range(0, len(imgs), batch):
            adapted(model_input(imgs[i:i + batch], data_config, device))
    return adapted.eval()
