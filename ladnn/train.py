"""Training for every backbone, method and fine-tuning mode (paper Section 2.2; defaults from the paper's code).

A run is a few named steps: `prepare_inputs` (splits, model, decoded images), `batch_source` (the one place that
chooses between augmented images and cached activations), then `fit_epoch` and `evaluate` per epoch, and `train`
keeps the epoch with the lowest validation COVID loss and writes the run directory."""
from __future__ import annotations

import contextlib
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
import torch.nn.functional as F
from tqdm import tqdm

from ladnn.config import LESIONS, Config
from ladnn.data import load_table, subset
from ladnn.images import ImageCache, augment, cache_dir, normalize
from ladnn.loss import lesion_attention_loss
from ladnn.metrics import binary_metrics, evaluate_predictions, lesion_prevalence
from ladnn.models import LADNN, build_model, split_model, timm_name
from ladnn.rundir import UNSEEN, Run, RunDir, is_done, predictions_table
from ladnn.sources import protocol_info, unseen_source_eval

VIEW_SEED = 1234  # augmented views cached for head/top are drawn once, shared by every seed and method
# The config fields the image and activation caches depend on: runs that agree on them share one cache.
CACHE_FIELDS = ("backbone", "dataset", "finetune", "top_blocks", "views", "tta", "limit", "pretrained", "weights",
                "device", "protocol", "preprocess", "augment")
TTA_SEED = 4321  # the test-time views are drawn once, the same for every run


def pick_device(name: str = "auto") -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def splits(cfg: Config, root=None) -> dict[str, pd.DataFrame]:
    """Training, validation and test tables: the dataset's own split (`protocol=official`), or fold `cfg.fold` of
    the source cross-validation (`protocol=source`, ladnn.sources). `row` is the image's place in the whole table."""
    df = load_table(cfg.dataset, root)
    df["row"] = np.arange(len(df))
    df = subset(df, cfg.limit, seed=0)  # with protocol=source: the same images for every fold
    if cfg.protocol == "source":
        from ladnn.sources import fold_splits

        df["split"] = fold_splits(df, cfg.folds, cfg.fold)
    return {s: df[df["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}


def targets(df: pd.DataFrame, zero: list[str] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """Y (N, 6) = [COVID, GGO, Csld, CrPa, AirBr, InSepThi] and the lesions-known flag; `zero` lesions set to 0."""
    y = df[["covid", *LESIONS]].to_numpy(dtype=np.float32).copy()
    for name in zero:
        y[:, 1 + LESIONS.index(name)] = 0
    return torch.from_numpy(y), torch.from_numpy(df["lesions_known"].to_numpy(dtype=bool).copy())


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def autocast(device: torch.device):
    """bf16 autocast on a GPU, nothing on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


class Prep:
    """uint8 images -> (augmented,) normalised float on the device, channels-last (faster on CPU and GPU alike)."""

    def __init__(self, model: LADNN, device: torch.device, aug: bool = False, strength: str = "paper"):
        self.mean, self.std, self.device, self.aug = model.data_config["mean"], model.data_config["std"], device, aug
        self.strength = strength

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        x = normalize(augment(x, strength=self.strength) if self.aug else x, self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def run_batches(net: torch.nn.Module, xs: torch.Tensor, device, prep=None, batch: int = 64, desc: str = "") -> torch.Tensor:
    """Forward `xs` in batches (eval mode), returning float32 outputs on the CPU."""
    net.eval()
    out = []
    for i in tqdm(range(0, len(xs), batch), desc=desc, leave=False, disable=None if desc else True):
        x = xs[i:i + batch]
        x = prep(x) if prep else x.to(device)
        with autocast(device):
            out.append(net(channels_last(x)).float().cpu())
    return torch.cat(out)


# ---------------------------------------------------------------- batch sources
class ImageBatches:
    """finetune=full: the network sees decoded images, augmented afresh in every batch (the paper's pipeline)."""

    def __init__(self, model: LADNN, imgs: dict[str, torch.Tensor], device: torch.device, tta: int = 1,
                 strength: str = "paper"):
        self.imgs, self.device, self.tta = imgs, device, tta
        self.prep, self.prep_aug = Prep(model, device), Prep(model, device, aug=True, strength=strength)

    def epoch(self, batch_size: int, g: torch.Generator):
        """(indices, inputs) of one shuffled pass over the training split."""
        perm = torch.randperm(len(self.imgs["train"]), generator=g)
        if self.device.type == "cuda":
            perm = perm.to(self.device)  # images and labels live on the GPU: index them there
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            yield idx, self.prep_aug(self.imgs["train"][idx])

    def outputs(self, net: torch.nn.Module, split: str) -> torch.Tensor:
        """Logits of the plain images, averaged with those of `tta - 1` augmented views (drawn with TTA_SEED)."""
        plain = run_batches(net, self.imgs[split], self.device, self.prep)
        if self.tta == 1:
            return plain
        with fixed_rng(TTA_SEED):
            views = [run_batches(net, self.imgs[split], self.device, self.prep_aug) for _ in range(self.tta - 1)]
        return torch.stack([plain, *views]).mean(0)


class FeatureBatches:
    """finetune=head/top: the trainable upper part sees cached activations of the frozen lower part; each training
    image contributes one of its `views` augmented views per epoch, drawn at random."""

    def __init__(self, feats: dict[str, torch.Tensor], device: torch.device):
        self.feats, self.device = feats, device

    def epoch(self, batch_size: int, g: torch.Generator):
        views, n = self.feats["train"].shape[:2]
        view = torch.randint(0, views, (n,), generator=g)
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            yield idx, channels_last(self.feats["train"][view[idx], idx].to(self.device))

    def outputs(self, net: torch.nn.Module, split: str) -> torch.Tensor:
        """Logits of the plain view, averaged with those of the cached test-time views (`<split>_tta`) if any."""
        plain = run_batches(net, self.feats[split], self.device)
        extra = self.feats.get(f"{split}_tta")
        if extra is None:
            return plain
        return torch.stack([plain, *(run_batches(net, v, self.device) for v in extra)]).mean(0)


@contextlib.contextmanager
def fixed_rng(seed: int):
    """Draw from torch's global CPU generator with a fixed seed inside the block; its state is restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _save(f: Path, feats: dict) -> None:
    f.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(feats, buf)
    tmp = f.with_suffix(f".{os.getpid()}.tmp")  # runs in parallel may build the same cache: never share a temp file
    tmp.write_bytes(buf.getvalue())
    tmp.replace(f)


def _cache_file(cfg: Config, model: LADNN, imgs: dict) -> Path:
    parts = ["affine_grid-v1", timm_name(cfg.backbone), model.weights_source, cache_key(cfg), VIEW_SEED,
             model.data_config, {s: hashlib.sha256(x.cpu().numpy().tobytes()).hexdigest() for s, x in imgs.items()}]
    return cache_dir() / "features" / f"{hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]}.pt"


def pooled_feature_cache(cfg: Config, model: LADNN, lower, imgs: dict, data: dict, device) -> dict[str, torch.Tensor]:
    """protocol=source: one cache for every fold. The frozen part sees every image of the table once plain and in
    max(views, tta - 1) augmented views (VIEW_SEED); a fold's training images use the first `views` of them, and its
    validation and test images the plain view plus the first `tta - 1` as test-time views."""
    rows = torch.cat([torch.tensor(data[s]["row"].to_numpy()) for s in ("train", "val", "test")])
    order = torch.argsort(rows)
    pool = torch.cat([imgs[s] for s in ("train", "val", "test")])[order.to(imgs["train"].device)]
    f = _cache_file(cfg, model, {"pool": pool})
    if f.exists():
        cache = torch.load(f, weights_only=True)
    else:
        t, n_views = time.time(), max(cfg.views, cfg.tta - 1)
        print(f"caching activations of the frozen part for every fold: {n_views} augmented views and the plain "
              f"view of {len(pool)} images", flush=True)
        aug = Prep(model, device, aug=True, strength=cfg.augment)
        with fixed_rng(VIEW_SEED):
            views = [run_batches(lower, pool, device, aug, desc=f"cache view {v + 1}") for v in range(n_views)]
        cache = {"views": torch.stack(views), "plain": run_batches(lower, pool, device, Prep(model, device),
                                                                   desc="cache plain")}
        print(f"cached in {time.time() - t:.0f} s: {f}", flush=True)
        _save(f, cache)
    sorted_rows = rows[order]
    pos = {s: torch.searchsorted(sorted_rows, torch.tensor(data[s]["row"].to_numpy())) for s in data}
    feats = {"train": cache["views"][:cfg.views, pos["train"]]}
    for s in ("val", "test"):
        feats[s] = cache["plain"][pos[s]]
        if cfg.tta > 1:
            feats[f"{s}_tta"] = cache["views"][:cfg.tta - 1, pos[s]]
    return feats


def feature_cache(cfg: Config, model: LADNN, lower, imgs: dict, device) -> dict[str, torch.Tensor]:
    """Activations of the frozen lower part: `views` augmented views of each training image, one plain view of the
    validation and test images and, with `tta` > 1, `tta - 1` augmented views of them (`val_tta`, `test_tta`).
    Stored on disk, keyed by everything they depend on."""
    f = _cache_file(cfg, model, imgs)
    if f.exists():
        return torch.load(f, weights_only=True)
    t = time.time()
    print(f"caching activations of the frozen part: {cfg.views} augmented views of {len(imgs['train'])} training "
          f"images, {len(imgs['val'])} validation and {len(imgs['test'])} test images", flush=True)
    aug = Prep(model, device, aug=True, strength=cfg.augment)
    with fixed_rng(VIEW_SEED):
        views = [run_batches(lower, imgs["train"], device, aug, desc=f"cache view {v + 1}") for v in range(cfg.views)]
    feats = {"train": torch.stack(views)}  # V, N, ...
    for s in ("val", "test"):
        feats[s] = run_batches(lower, imgs[s], device, Prep(model, device), desc=f"cache {s}")
        if cfg.tta > 1:
            with fixed_rng(TTA_SEED):
                feats[f"{s}_tta"] = torch.stack([run_batches(lower, imgs[s], device, aug, desc=f"cache {s} TTA")
                                                 for _ in range(cfg.tta - 1)])
    print(f"cached in {time.time() - t:.0f} s: {f}", flush=True)
    _save(f, feats)
    return feats


def cache_key(cfg: Config) -> tuple:
    """The values of CACHE_FIELDS, and the seed when the lower part is randomly initialised (it differs per seed)."""
    values = (getattr(cfg, k) for k in CACHE_FIELDS)
    return tuple(tuple(v) if isinstance(v, list) else v for v in values) + (None if cfg.pretrained else cfg.seed,)


def batch_source(cfg: Config, model: LADNN, imgs: dict, device, data: dict | None = None
                 ) -> tuple[ImageBatches | FeatureBatches, torch.nn.Module]:
    """The batches and the trainable network of a fine-tuning mode: the whole model on images (`full`), or the part
    above a frozen lower part on its cached activations (`head`: the head alone; `top`: the last `top_blocks`)."""
    if cfg.finetune == "full":
        return ImageBatches(model, imgs, device, cfg.tta, cfg.augment), model
    lower, upper = split_model(model, 0 if cfg.finetune == "head" else cfg.top_blocks)
    for p in lower.parameters():
        p.requires_grad_(False)
    if cfg.protocol == "source":
        feats = pooled_feature_cache(cfg, model, lower, imgs, data, device)
    else:
        feats = feature_cache(cfg, model, lower, imgs, device)
    return FeatureBatches(feats, device), upper


# ---------------------------------------------------------------- the steps
def train_step(net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               known: torch.Tensor, cfg: Config, device: torch.device) -> torch.Tensor:
    """One optimiser step on the lesion-attention loss (eq. in Section 2.2); returns the batch loss (no sync)."""
    with autocast(device):
        logits = net(x).float()[:, :len(cfg.tasks)]
    loss = lesion_attention_loss(logits, y[:, :len(cfg.tasks)], known, cfg.covid_weight, cfg.lesion_mask,
                                cfg.loss_reduction)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def fit_epoch(net, opt, source, y: torch.Tensor, known: torch.Tensor, cfg: Config, g: torch.Generator, device) -> float:
    """One pass over the training split; the mean loss per image."""
    net.train()
    total = torch.zeros((), device=device)
    for idx, x in source.epoch(cfg.batch_size, g):
        total += train_step(net, opt, x, y[idx], known[idx], cfg, device) * len(idx)  # summed on the device
    return float(total) / len(y)


def evaluate(net, source, y: torch.Tensor) -> dict:
    """Validation COVID loss (the paper code's selection criterion), AUC, accuracy and F1."""
    logits = source.outputs(net, "val")
    m = binary_metrics(y[:, 0].cpu().numpy(), torch.sigmoid(logits[:, 0]).numpy())
    return {"val_covid_loss": float(F.binary_cross_entropy_with_logits(logits[:, 0], y[:, 0].cpu())),
            "val_auc": m["auc"], "val_accuracy": m["accuracy"], "val_f1": m["f1"]}


def prepare_inputs(cfg: Config, data_dir, device: torch.device):
    """The splits, the model (channels-last on `device`) and every image decoded once (uint8, cached on disk)."""
    seed_everything(cfg.seed)
    data = splits(cfg, data_dir)
    model = build_model(cfg.backbone, cfg.method, cfg.head, cfg.pretrained, cfg.weights).to(device)
    model = model.to(memory_format=torch.channels_last)
    cache = ImageCache(model.data_config["input_size"][-1], steps=cfg.preprocess)
    imgs = {s: cache.stack(tqdm(d["image"], desc=f"decode {s}", leave=False)) for s, d in data.items()}
    if device.type == "cuda":  # decoded uint8 images live on the GPU (64 MB for D0): no copy per batch
        imgs = {s: x.to(device) for s, x in imgs.items()}
    return data, model, imgs


def prepare(cfg: Config, data_dir=None) -> None:
    """Fill the caches a run reads first, as `train` would: the decoded images and, for `head`/`top`, the frozen
    part's activations. The book calls it once before runs train side by side, so they do not each build them."""
    device = pick_device(cfg.device)
    data, model, imgs = prepare_inputs(cfg, data_dir, device)
    batch_source(cfg, model, imgs, device, data)
    del model, imgs
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the runs that follow need the GPU's memory, not this process


def train_or_load(cfg: Config, out: str | Path, data_dir=None) -> dict:
    """The book's incremental step: reuse a finished run with exactly this config, else train (replacing `out`)."""
    if is_done(out, cfg):
        print(f"{out}: finished run with this config found; not training again")
        return Run(out).metrics
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


def _train(cfg: Config, run: RunDir, data_dir) -> dict:
    t0 = time.time()
    device = pick_device(cfg.device)
    data, model, imgs = prepare_inputs(cfg, data_dir, device)
    Y, known = {}, {}
    for s, d in data.items():
        Y[s], known[s] = (t.to(device) for t in targets(d, cfg.zero_lesions if s == "train" else []))
    source, net = batch_source(cfg, model, imgs, device, data)
    seed_everything(cfg.seed)  # the head's init and the batch order do not depend on a feature-cache hit
    for m in model.head.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    history, best_state = [], None
    bar = tqdm(range(1, cfg.epochs + 1), desc=f"{cfg.backbone}/{cfg.method}/seed{cfg.seed}", unit="epoch")
    for epoch in bar:
        loss = fit_epoch(net, opt, source, Y["train"], known["train"], cfg, g, device)
        h = {"epoch": epoch, "train_loss": loss, **evaluate(net, source, Y["val"]), "seconds": round(time.time() - t0, 2)}
        if not history or h["val_covid_loss"] < min(x["val_covid_loss"] for x in history):
            best_state = copy.deepcopy(model.state_dict())
        history.append(h)
        bar.set_postfix(loss=f"{loss:.3f}", val_loss=f"{h['val_covid_loss']:.3f}", val_auc=f"{h['val_auc'] or 0:.3f}")
        if bar.disable:
            print(f"epoch {epoch}/{cfg.epochs}: train loss {loss:.4f}, val COVID loss {h['val_covid_loss']:.4f}, "
                  f"val AUC {h['val_auc'] or float('nan'):.4f} ({time.time() - t0:.0f} s)", flush=True)
    model.load_state_dict(best_state)
    pred = predictions_table(data["test"], torch.sigmoid(source.outputs(net, "test")).numpy(), cfg.tasks)
    metrics = evaluate_predictions(pred, lesion_prevalence(data["train"][list(LESIONS)].to_numpy()), seed=cfg.seed)
    metrics["protocol"] = protocol_info(cfg, data)
    unseen = unseen_source_eval(cfg, model, device, data_dir)
    if unseen is not None:
        metrics["unseen_source"] = unseen[0]
        run.write(UNSEEN, unseen[1].to_csv(index=False))
    metrics["run"] = {"best_epoch": min(history, key=lambda h: h["val_covid_loss"])["epoch"],
                      "seconds": round(time.time() - t0, 1), "device": str(device),
                      "timm_name": timm_name(cfg.backbone), "weights_source": model.weights_source,
                      "pretrained": cfg.pretrained, "torch": torch.__version__,
                      "images": {s: len(d) for s, d in data.items()}}
    checkpoint = {"config": cfg.to_dict(), "state_dict": model.state_dict(), "data_config": model.data_config,
                  "weights_source": model.weights_source}
    run.write_results(pd.DataFrame(history), pred, checkpoint, metrics)
    return metrics
