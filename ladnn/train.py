"""One training function for every backbone and method (paper Section 2.2; defaults from the paper's code)."""
from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ladnn.config import LESIONS, Config
from ladnn.data import load_table, subset
from ladnn.images import ImageCache, augment, cache_dir, normalize
from ladnn.loss import lesion_attention_loss
from ladnn.metrics import binary_metrics, evaluate_predictions
from ladnn.models import LADNN, build_model, split_model, timm_name
from ladnn.rundir import RunDir, status

VIEW_SEED = 1234  # augmented views cached for head/top are drawn once, shared by every seed and method


def pick_device(name: str = "auto") -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def splits(cfg: Config, root=None) -> dict[str, pd.DataFrame]:
    df = subset(load_table(cfg.dataset, root), cfg.limit, seed=0)
    return {s: df[df["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}


def targets(df: pd.DataFrame, zero: list[str] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """Y (N, 6) = [COVID, GGO, Csld, CrPa, AirBr, InSepThi] and the lesions-known flag; `zero` lesions set to 0."""
    y = df[["covid", *LESIONS]].to_numpy(dtype=np.float32).copy()
    for name in zero:
        y[:, 1 + LESIONS.index(name)] = 0
    return torch.from_numpy(y), torch.from_numpy(df["lesions_known"].to_numpy(dtype=bool).copy())


class Prep:
    """uint8 images -> (augmented,) normalised float on the device, channels-last (faster on CPU and GPU alike)."""

    def __init__(self, model: LADNN, device: torch.device, aug: bool = False):
        self.mean, self.std, self.device, self.aug = model.data_config["mean"], model.data_config["std"], device, aug

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        x = normalize(augment(x) if self.aug else x, self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last)


def _cl(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


@torch.no_grad()
def run_batches(net: torch.nn.Module, xs: torch.Tensor, device, prep=None, batch: int = 64, desc: str = "") -> torch.Tensor:
    """Forward `xs` in batches (eval mode), returning float32 outputs on the CPU."""
    net.eval()
    out = []
    for i in tqdm(range(0, len(xs), batch), desc=desc, leave=False, disable=None if desc else True):
        x = xs[i:i + batch]
        x = prep(x) if prep else x.to(device)
        with _autocast(device):
            out.append(net(_cl(x)).float().cpu())
    return torch.cat(out)


def _feature_cache(cfg: Config, model: LADNN, lower, imgs: dict, device) -> dict[str, torch.Tensor]:
    """Activations of the frozen lower part: `views` augmented views of each training image, one plain view of the
    validation and test images. Stored on disk, keyed by everything they depend on."""
    parts = ["affine_grid-v1", timm_name(cfg.backbone), model.weights_source, cfg.finetune, cfg.top_blocks, cfg.views,
             VIEW_SEED, model.data_config, cfg.dataset, cfg.limit,
             {s: hashlib.sha256(x.cpu().numpy().tobytes()).hexdigest() for s, x in imgs.items()}]
    if not cfg.pretrained:  # a randomly initialised lower part differs from seed to seed
        parts.append(cfg.seed)
    key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]
    f = cache_dir() / "features" / f"{key}.pt"
    if f.exists():
        return torch.load(f, weights_only=True)
    t = time.time()
    print(f"caching activations of the frozen part: {cfg.views} augmented views of {len(imgs['train'])} training "
          f"images, {len(imgs['val'])} validation and {len(imgs['test'])} test images", flush=True)
    g = torch.get_rng_state()
    torch.manual_seed(VIEW_SEED)
    feats = {}
    n = len(imgs["train"])
    views = [run_batches(lower, imgs["train"], device, Prep(model, device, aug=True), desc=f"cache view {v + 1}")
             for v in range(cfg.views)]
    feats["train"] = torch.stack(views)  # V, N, ...
    for s in ("val", "test"):
        feats[s] = run_batches(lower, imgs[s], device, Prep(model, device), desc=f"cache {s}")
    torch.set_rng_state(g)
    print(f"cached in {time.time() - t:.0f} s: {f}", flush=True)
    assert feats["train"].shape[1] == n
    f.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(feats, buf)
    tmp = f.with_suffix(f".{os.getpid()}.tmp")  # runs in parallel may build the same cache: never share a temp file
    tmp.write_bytes(buf.getvalue())
    tmp.replace(f)
    return feats


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits)


def predictions_table(df: pd.DataFrame, probs: np.ndarray, tasks: tuple[str, ...]) -> pd.DataFrame:
    out = pd.DataFrame({"image": df["name"], "y_true": df["covid"].astype(int), "p_covid": probs[:, 0]})
    if len(tasks) > 1:
        for k, name in enumerate(LESIONS):
            out[f"p_{name}"] = probs[:, k + 1]
        for name in LESIONS:
            out[f"y_{name}"] = df[name].astype(int)
        out["lesions_known"] = df["lesions_known"].astype(bool)
    return out


def is_done(out: str | Path, cfg: Config) -> bool:
    """A finished run with exactly this config (the book's incremental build)."""
    p = Path(out) / "config.json"
    return status(out) == "complete" and p.is_file() and json.loads(p.read_text()) == cfg.to_dict()


def train_or_load(cfg: Config, out: str | Path, data_dir=None) -> dict:
    """The book's incremental step: reuse a finished run with exactly this config, else train (replacing `out`)."""
    if is_done(out, cfg):
        print(f"{out}: finished run with this config found; not training again")
        return json.loads((Path(out) / "metrics.json").read_text())
    return train(cfg, out, data_dir, overwrite=True)


def train(cfg: Config, out: str | Path, data_dir=None, overwrite: bool = False) -> dict:
    """Train, keep the epoch with the lowest validation COVID loss, predict the test split, write the run directory."""
    run = RunDir(out)
    run.start(cfg.to_dict(), overwrite=overwrite)
    try:
        return _train(cfg, run, data_dir)
    except BaseException as e:
        run.fail(e)
        raise


def _inputs(cfg: Config, data_dir, device: torch.device):
    """The splits, the model (channels-last on `device`) and every image decoded once (uint8, cached on disk)."""
    seed_everything(cfg.seed)
    data = splits(cfg, data_dir)
    model = build_model(cfg.backbone, cfg.method, cfg.head, cfg.pretrained, cfg.weights).to(device)
    model = model.to(memory_format=torch.channels_last)
    cache = ImageCache(model.data_config["input_size"][-1])
    imgs = {s: cache.stack(tqdm(d["image"], desc=f"decode {s}", leave=False)) for s, d in data.items()}
    if device.type == "cuda":  # decoded uint8 images live on the GPU (64 MB for D0): no copy per batch
        imgs = {s: x.to(device) for s, x in imgs.items()}
    return data, model, imgs


def cache_fields(cfg: Config) -> tuple:
    """The config fields the image and activation caches depend on: runs that agree on them share one cache."""
    return (cfg.backbone, cfg.dataset, cfg.finetune, cfg.top_blocks, cfg.views, cfg.limit, cfg.pretrained,
            cfg.weights, cfg.device, None if cfg.pretrained else cfg.seed)


def prepare(cfg: Config, data_dir=None) -> None:
    """Fill the caches a run reads first, as `train` would: the decoded images and, for `head`/`top`, the frozen
    part's activations. The book calls it once before runs train side by side, so they do not each build them."""
    device = pick_device(cfg.device)
    _, model, imgs = _inputs(cfg, data_dir, device)
    if cfg.finetune != "full":
        lower, _ = split_model(model, 0 if cfg.finetune == "head" else cfg.top_blocks)
        _feature_cache(cfg, model, lower, imgs, device)
    del model, imgs
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the runs that follow need the GPU's memory, not this process


def _train(cfg: Config, run: RunDir, data_dir) -> dict:
    t0 = time.time()
    device = pick_device(cfg.device)
    data, model, imgs = _inputs(cfg, data_dir, device)
    Y, known = {}, {}
    for s, d in data.items():
        Y[s], known[s] = (t.to(device) for t in targets(d, cfg.zero_lesions if s == "train" else []))
    ncol = len(cfg.tasks)
    prep, prep_aug = Prep(model, device), Prep(model, device, aug=True)

    if cfg.finetune == "full":
        net, trainable = model, model
        feats = None
    else:
        lower, net = split_model(model, 0 if cfg.finetune == "head" else cfg.top_blocks)
        for p in lower.parameters():
            p.requires_grad_(False)
        feats = _feature_cache(cfg, model, lower, imgs, device)
        trainable = net
    seed_everything(cfg.seed)  # the head's init and the batch order do not depend on a feature-cache hit
    for m in model.head.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    opt = torch.optim.Adam([p for p in trainable.parameters() if p.requires_grad], lr=cfg.lr,
                           weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    n = len(data["train"])
    history, best, best_state = [], float("inf"), None
    epochs = tqdm(range(1, cfg.epochs + 1), desc=f"{cfg.backbone}/{cfg.method}/seed{cfg.seed}", unit="epoch")
    for epoch in epochs:
        net.train()
        if feats is not None:
            view = torch.randint(0, cfg.views, (n,), generator=g)
        perm = torch.randperm(n, generator=g)
        tot = torch.zeros((), device=device)
        if device.type == "cuda" and feats is None:
            perm = perm.to(device)  # images and labels live on the GPU: index them there
        for i in range(0, n, cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            x = prep_aug(imgs["train"][idx]) if feats is None else _cl(feats["train"][view[idx], idx].to(device))
            with _autocast(device):
                logits = net(x).float()[:, :ncol]
            loss = lesion_attention_loss(logits, Y["train"][idx, :ncol], known["train"][idx], cfg.covid_weight,
                                         cfg.lesion_mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.detach() * len(idx)  # summed on the device: no sync per step
        tot = float(tot)
        vl = run_batches(net, imgs["val"] if feats is None else feats["val"], device, prep if feats is None else None)
        pv = probabilities(vl[:, 0]).numpy()
        val_covid = float(torch.nn.functional.binary_cross_entropy_with_logits(vl[:, 0], Y["val"][:, 0].cpu()))
        vm = binary_metrics(Y["val"][:, 0].cpu().numpy(), pv)
        history.append({"epoch": epoch, "train_loss": tot / n, "val_covid_loss": val_covid, "val_auc": vm["auc"],
                        "val_accuracy": vm["accuracy"], "val_f1": vm["f1"], "seconds": round(time.time() - t0, 2)})
        if val_covid < best:
            best, best_state = val_covid, copy.deepcopy(model.state_dict())
        epochs.set_postfix(loss=f"{tot / n:.3f}", val_loss=f"{val_covid:.3f}", val_auc=f"{vm['auc'] or 0:.3f}")
        if epochs.disable:
            print(f"epoch {epoch}/{cfg.epochs}: train loss {tot / n:.4f}, val COVID loss {val_covid:.4f}, "
                  f"val AUC {vm['auc'] or float('nan'):.4f} ({time.time() - t0:.0f} s)", flush=True)
    model.load_state_dict(best_state)
    best_epoch = min(history, key=lambda h: h["val_covid_loss"])["epoch"]
    tl = run_batches(net, imgs["test"] if feats is None else feats["test"], device, prep if feats is None else None)
    pred = predictions_table(data["test"], probabilities(tl).numpy(), cfg.tasks)
    metrics = evaluate_predictions(pred, seed=cfg.seed)
    metrics["run"] = {"best_epoch": best_epoch, "seconds": round(time.time() - t0, 1), "device": str(device),
                      "timm_name": timm_name(cfg.backbone), "weights_source": model.weights_source,
                      "pretrained": cfg.pretrained, "torch": torch.__version__,
                      "images": {s: len(d) for s, d in data.items()}}
    run.write("history.csv", pd.DataFrame(history).to_csv(index=False))
    run.write("predictions.csv", pred.to_csv(index=False))
    buf = io.BytesIO()
    torch.save({"config": cfg.to_dict(), "state_dict": model.state_dict(), "data_config": model.data_config,
                "weights_source": model.weights_source}, buf)
    run.write("model.pt", buf.getvalue())
    run.write("metrics.json", json.dumps(metrics, indent=2))
    run.finish()
    return metrics
