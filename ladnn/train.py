"""Training for every backbone, method and fine-tuning mode (paper Section 2.2; defaults from the paper's code).

A run is a few named steps: `prepare_inputs` (splits, model, decoded images), `batch_source` (the one place that
chooses between augmented images and cached activations), then `fit_epoch` and `evaluate` per epoch, and `train`
keeps the epoch with the lowest validation COVID loss and writes the run directory. Every score (validation, test,
the cached test-time views, the D1 images) goes through `ladnn.infer`, the path `Predictor` uses afterwards."""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ladnn.config import LESIONS, Config, cache_key
from ladnn.data import load_table, splits, subset, train_subset
from ladnn.files import load_cache, write_atomic
from ladnn.images import ImageCache, augment, cache_dir
from ladnn.infer import (
    channels_last,
    describe,
    forward,
    image_outputs,
    inference_net,
    model_input,
    precision,
    tta_outputs,
    use_device,
    view_mean,
    view_outputs,
)
from ladnn.loss import paper_loss, task_losses
from ladnn.metrics import binary_metrics, lesion_prevalence
from ladnn.models import LADNN, build_model, frozen_split, timm_name
from ladnn.mtl import GradientProbe, TaskCombiner
from ladnn.rundir import GRADIENTS, UNSEEN, FinishedRun, RunWriter, is_done
from ladnn.scores import PRED, covid_scores, evaluate_predictions, predictions_table
from ladnn.sources import linked_groups, protocol_info
from ladnn.summary import RunInfo, RunMetrics, Scores, Unseen

VIEW_SEED = 1234  # augmented training views cached for head/top are drawn once, shared by every seed and method
UNSEEN_SPLIT = "d1"  # the images of protocol (d), scored like the test split but never used to choose anything


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def targets(df: pd.DataFrame, zero: list[str] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """Y (N, 6) = [COVID, GGO, Csld, CrPa, AirBr, InSepThi] and the lesions-known flag; `zero` lesions set to 0."""
    y = df[["covid", *LESIONS]].to_numpy(dtype=np.float32).copy()
    for name in zero:
        y[:, 1 + LESIONS.index(name)] = 0
    return torch.from_numpy(y), torch.from_numpy(df["lesions_known"].to_numpy(dtype=bool).copy())


def train_views(x: torch.Tensor, model: LADNN, strength: str = "paper") -> torch.Tensor:
    """Training images (uint8, on their device) -> augmented network input, the random draws from torch's global
    generator (the paper's pipeline: a new view every time an image is drawn)."""
    return model_input(augment(x, strength=strength), model.data_config)


# ---------------------------------------------------------------- batch sources
class ImageBatches:
    """finetune=full: the network sees decoded images, augmented afresh in every batch (the paper's pipeline)."""

    def __init__(self, model: LADNN, imgs: dict[str, torch.Tensor], device: torch.device, tta: int = 1,
                 strength: str = "paper", tta_seed: int = Config.tta_seed):
        self.model, self.imgs, self.device, self.tta = model, imgs, device, tta
        self.strength, self.tta_seed = strength, tta_seed

    def epoch(self, batch_size: int, g: torch.Generator):
        """(indices, inputs) of one shuffled pass over the training split."""
        perm = torch.randperm(len(self.imgs["train"]), generator=g)
        if self.device.type == "cuda":
            perm = perm.to(self.device)  # images and labels live on the GPU: index them there
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            yield idx, train_views(self.imgs["train"][idx].to(self.device), self.model, self.strength)

    def split_logits(self, net: torch.nn.Module, split: str) -> torch.Tensor:
        """Logits of the plain images, averaged with those of `tta - 1` test-time views (ladnn.infer)."""
        return tta_outputs(net, self.imgs[split], self.tta, self.model.data_config, self.device, self.tta_seed,
                           self.strength)

    def keep_train(self, rows: torch.Tensor) -> None:
        """Train on these rows of the training split only (`Config.train_fraction`)."""
        self.imgs = {**self.imgs, "train": self.imgs["train"][rows.to(self.imgs["train"].device)]}


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

    def split_logits(self, net: torch.nn.Module, split: str) -> torch.Tensor:
        """Logits of the plain view, averaged with those of the cached test-time views (`<split>_tta`) if any: the
        same views as `ladnn.infer.tta_outputs` of the whole model, through cached activations."""
        plain = forward(net, self.feats[split], self.device)
        extra = self.feats.get(f"{split}_tta")
        if extra is None:
            return plain
        return view_mean(plain, torch.stack([forward(net, v, self.device) for v in extra]))

    def keep_train(self, rows: torch.Tensor) -> None:
        """Train on these rows of the training split only (`Config.train_fraction`); the cache is not copied."""
        self.feats = {**self.feats, "train": self.feats["train"][:, rows]}


@contextlib.contextmanager
def fixed_rng(seed: int):
    """Draw from torch's global CPU generator with a fixed seed inside the block; its state is restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _save(f: Path, feats: dict) -> None:
    buf = io.BytesIO()
    torch.save(feats, buf)
    write_atomic(f, buf.getvalue())  # runs in parallel may build the same cache


def _load(f: Path) -> dict | None:
    """A cached activation file, or None when there is none or it is damaged (`load_cache`)."""
    return load_cache(f, lambda p: torch.load(p, weights_only=True),
                      lambda d: "" if isinstance(d, dict) and all(torch.is_tensor(v) for v in d.values())
                      else "not a mapping of tensors")


def _cache_file(cfg: Config, model: LADNN, imgs: dict) -> Path:
    parts = ["per-image-tta-v2", timm_name(cfg.backbone), model.weights_source, cache_key(cfg), VIEW_SEED,
             model.data_config, {s: hashlib.sha256(x.cpu().numpy().tobytes()).hexdigest() for s, x in imgs.items()}]
    return cache_dir() / "features" / f"{hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]}.pt"


def training_views(cfg: Config, model: LADNN, lower, x: torch.Tensor, device) -> torch.Tensor:
    """`cfg.views` augmented views of each training image through the frozen part (V x N x ...), drawn once with
    VIEW_SEED from torch's global generator, 64 images at a time."""
    aug = lambda b: augment(b, strength=cfg.augment)
    with fixed_rng(VIEW_SEED):
        return torch.stack([image_outputs(lower, x, model.data_config, device, aug, desc=f"cache view {v + 1}")
                            for v in range(cfg.views)])


def _test_views(cfg: Config, model: LADNN, lower, x: torch.Tensor, device, desc: str) -> dict[str, torch.Tensor]:
    """The plain view of each image through the frozen part and, with `tta` > 1, its `tta - 1` test-time views
    (ladnn.infer: the views `Predictor` draws for the same image)."""
    v = view_outputs(lower, x, range(cfg.tta), model.data_config, device, cfg.tta_seed, cfg.augment, desc=desc)
    return {"plain": v[0], **({"tta": v[1:]} if cfg.tta > 1 else {})}


def scoring_copy(lower, model: LADNN, imgs: dict, device):
    """The frozen part as `ladnn.infer.inference_net` scores with (built only when a cache is filled)."""
    return inference_net(lower, model_input(imgs["train"][:2], model.data_config, device))


def pooled_feature_cache(cfg: Config, model: LADNN, lower, imgs: dict, data: dict, device) -> dict[str, torch.Tensor]:
    """Protocols (b) and (c) (`Config.protocol` grouped or collection): one cache for every fold. The frozen part
    sees every image of the table in `views` augmented training views (VIEW_SEED), plain, and in its `tta - 1`
    test-time views; a fold's training images use the first, its validation and test images the others."""
    rows = torch.cat([torch.tensor(data[s]["row"].to_numpy()) for s in ("train", "val", "test")])
    order = torch.argsort(rows)
    pool = torch.cat([imgs[s] for s in ("train", "val", "test")])[order.to(imgs["train"].device)]
    f = _cache_file(cfg, model, {"pool": pool})
    cache = _load(f)
    if cache is None:
        t = time.time()
        print(f"caching activations of the frozen part for every fold: {cfg.views} training views, the plain view "
              f"and {cfg.tta - 1} test-time views of {len(pool)} images", flush=True)
        lower = scoring_copy(lower, model, imgs, device)
        cache = {"views": training_views(cfg, model, lower, pool, device),
                 **_test_views(cfg, model, lower, pool, device, "cache pool")}
        print(f"cached in {time.time() - t:.0f} s: {f}", flush=True)
        _save(f, cache)
    sorted_rows = rows[order]
    pos = {s: torch.searchsorted(sorted_rows, torch.tensor(data[s]["row"].to_numpy())) for s in data}
    feats = {"train": cache["views"][:, pos["train"]]}
    for s in ("val", "test"):
        feats[s] = cache["plain"][pos[s]]
        if cfg.tta > 1:
            feats[f"{s}_tta"] = cache["tta"][:, pos[s]]
    return feats


def feature_cache(cfg: Config, model: LADNN, lower, imgs: dict, device) -> dict[str, torch.Tensor]:
    """Activations of the frozen lower part: `views` augmented views of each training image, one plain view of every
    scored split's images (validation, test, D1) and, with `tta` > 1, their `tta - 1` test-time views (`val_tta`, ...).
    Stored on disk, keyed by everything they depend on."""
    f = _cache_file(cfg, model, imgs)
    if (feats := _load(f)) is not None:
        return feats
    t = time.time()
    scored = [s for s in imgs if s != "train"]
    print(f"caching activations of the frozen part: {cfg.views} augmented views of {len(imgs['train'])} training "
          "images; the plain and test-time views of " + ", ".join(f"{len(imgs[s])} {s}" for s in scored) + " images",
          flush=True)
    lower = scoring_copy(lower, model, imgs, device)
    feats = {"train": training_views(cfg, model, lower, imgs["train"], device)}  # V, N, ...
    for s in scored:
        views = _test_views(cfg, model, lower, imgs[s], device, f"cache {s}")
        feats[s] = views["plain"]
        if "tta" in views:
            feats[f"{s}_tta"] = views["tta"]
    print(f"cached in {time.time() - t:.0f} s: {f}", flush=True)
    _save(f, feats)
    return feats


def batch_source(cfg: Config, model: LADNN, imgs: dict, device, data: dict | None = None
                 ) -> tuple[ImageBatches | FeatureBatches, torch.nn.Module]:
    """The batches and the trainable network of a fine-tuning mode: the whole model on images (`full`), or the part
    above a frozen lower part on its cached activations (`head`: the head alone; `top`: the last `top_blocks`)."""
    if cfg.finetune == "full":
        return ImageBatches(model, imgs, device, cfg.tta, cfg.augment, cfg.tta_seed), model
    lower, upper = frozen_split(cfg, model)
    if cfg.protocol != "official":
        feats = pooled_feature_cache(cfg, model, lower, imgs, data, device)
    else:
        feats = feature_cache(cfg, model, lower, imgs, device)
    return FeatureBatches(feats, device), upper


# ---------------------------------------------------------------- the steps
def train_step(combine: TaskCombiner, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               known: torch.Tensor, cfg: Config, device: torch.device, probe: GradientProbe | None = None
               ) -> torch.Tensor:
    """One optimiser step: the six task losses (`task_losses`), combined by `cfg.task_weighting` (the paper's
    weighted sum of Section 2.2 by default; ladnn.mtl). Returns the batch's value of the paper's loss, whatever
    the combination (no sync)."""
    features, logits = combine.forward(x)
    losses = task_losses(logits[:, :len(cfg.tasks)], y[:, :len(cfg.tasks)], known, cfg.lesion_mask)
    opt.zero_grad(set_to_none=True)
    if probe is not None:  # the tasks' gradients on the shared layers, before the step
        probe.record(losses)
    combine.backward(losses, features)
    opt.step()
    return paper_loss(losses.detach(), cfg.covid_weight, cfg.loss_reduction)


def fit_epoch(combine: TaskCombiner, opt, source, y: torch.Tensor, known: torch.Tensor, cfg: Config,
              g: torch.Generator, device, probe: GradientProbe | None = None) -> float:
    """One pass over the training split; the mean loss per image (the paper's loss)."""
    combine.body.train()
    combine.head.train()
    total = torch.zeros((), device=device)
    for idx, x in source.epoch(cfg.batch_size, g):
        total += train_step(combine, opt, x, y[idx], known[idx], cfg, device, probe) * len(idx)  # summed on device
    return float(total) / len(y)


def evaluate(net, source, y: torch.Tensor) -> dict:
    """Validation COVID loss (the paper code's selection criterion), AUC, accuracy and F1."""
    logits = source.split_logits(net, "val")
    m = binary_metrics(y[:, 0].cpu().numpy(), torch.sigmoid(logits[:, 0]).numpy())
    return {"val_covid_loss": float(F.binary_cross_entropy_with_logits(logits[:, 0], y[:, 0].cpu())),
            "val_auc": m["auc"], "val_accuracy": m["accuracy"], "val_f1": m["f1"]}


def unseen_table(cfg: Config, data_dir=None) -> pd.DataFrame | None:
    """Protocol (d): the D1 images present, for a run trained on D0 by the official split (their sources gave no
    image to D0). None when the run saw D1 or the D1 images present are of one class only."""
    if cfg.protocol != "official" or cfg.dataset != "D0":
        return None
    d1 = load_table("D0+D1", data_dir).query("dataset == 'D1'").reset_index(drop=True)
    if d1.empty:  # no D1 zip present (a data pack holds D0 only)
        return None
    d1 = subset(d1, cfg.limit, seed=0).reset_index(drop=True)
    return d1 if d1["covid"].nunique() == 2 else None


def prepare_inputs(cfg: Config, data_dir, device: torch.device):
    """The splits (with `d1`, the unseen-source images of protocol (d), where the run has them), the model
    (channels-last on `device`) and every image decoded once (uint8, cached on disk)."""
    seed_everything(cfg.seed)
    data = splits(cfg, data_dir)
    if (d1 := unseen_table(cfg, data_dir)) is not None:
        data[UNSEEN_SPLIT] = d1
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
    device = use_device(cfg.device)
    data, model, imgs = prepare_inputs(cfg, data_dir, device)
    batch_source(cfg, model, imgs, device, data)
    del model, imgs
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the runs that follow need the GPU's memory, not this process


def unseen_source_eval(cfg: Config, d1: pd.DataFrame, logits: torch.Tensor) -> tuple[Unseen, pd.DataFrame]:
    """Protocol (d): a run trained on D0 by the official split, scored (`logits`, the one inference path with the
    run's test-time views) on the D1 images present (`unseen_table`). Intervals resample whole patients: the 3
    collections of D1 are too few to resample."""
    pred = predictions_table(d1, torch.sigmoid(logits).numpy(), cfg.tasks)
    m = Unseen.from_dict({
        **covid_scores(pred, PRED.group, seed=cfg.seed), "sources": int(d1["collection"].nunique()),
        "sources_by_class": {str(k): int(v) for k, v in d1.groupby("covid")["collection"].nunique().items()},
        "evaluated_on": f"the {len(d1)} D1 images present: sources that gave no image to D0"})
    return m, pred


def train_or_load(cfg: Config, out: str | Path, data_dir=None) -> RunMetrics:
    """The book's incremental step: reuse a finished run with exactly this config, else train (replacing `out`)."""
    if is_done(out, cfg):
        print(f"{out}: finished run with this config found; not training again")
        return FinishedRun(out).metrics
    return train(cfg, out, data_dir, overwrite=True, skip_done=True)  # finished by another worker meanwhile: kept


def train(cfg: Config, out: str | Path, data_dir=None, overwrite: bool = False, skip_done: bool = False
          ) -> RunMetrics:
    """Train, keep the epoch with the lowest validation COVID loss, predict the test split, write the run directory.
    The run is claimed first (one worker per run, on any host; ladnn.rundir.Claim). The config, the data and the
    weights are checked, and the images decoded, before `out` is touched; with `overwrite` a finished run in `out` is
    replaced only once the new one is complete (ladnn.rundir.RunWriter). With `skip_done`, a finished run in `out` with
    exactly this config is kept and its metrics returned: nothing is trained."""
    t0 = time.time()
    run = RunWriter(out)
    if skip_done and not run.take_unless_done(cfg, overwrite):
        print(f"{out}: finished run with this config found; not training again", flush=True)
        return FinishedRun(out).metrics
    run.check(overwrite)
    run.take(overwrite)  # claimed before the data are read: a second worker on this run stops at once
    try:
        device = use_device(cfg.device)
        print(describe(device), flush=True)
        inputs = prepare_inputs(cfg, data_dir, device)
    except BaseException:
        run.release()
        raise
    run.start(cfg.to_dict(), overwrite=overwrite)
    try:
        return _train(cfg, run, device, *inputs, t0)
    except BaseException as e:
        run.fail(e)
        raise


def _train(cfg: Config, run: RunWriter, device: torch.device, data: dict, model: LADNN, imgs: dict, t0: float
           ) -> RunMetrics:
    source, net = batch_source(cfg, model, imgs, device, data)
    if cfg.train_fraction < 1:  # the multi-task lab's learning curves: nested subsets of the training patients
        kept = train_subset(data["train"], cfg.train_fraction, cfg.seed)
        source.keep_train(torch.tensor(kept.index.to_numpy()))
        data = {**data, "train": kept.reset_index(drop=True)}
    Y, known = {}, {}
    for s in ("train", "val", "test"):
        Y[s], known[s] = (t.to(device) for t in targets(data[s], cfg.zero_lesions if s == "train" else []))
    seed_everything(cfg.seed)  # the head's init and the batch order do not depend on a feature-cache hit
    for m in model.head.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    combine = TaskCombiner(cfg, net).to(device)
    probe = GradientProbe(cfg, net) if cfg.grad_diagnostics else None
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    if combine.parameters():  # uncertainty weighting's log-variances: no weight decay
        opt.add_param_group({"params": combine.parameters(), "weight_decay": 0.0})
    g = torch.Generator().manual_seed(cfg.seed)
    history, best_state = [], None
    bar = tqdm(range(1, cfg.epochs + 1), desc=f"{cfg.backbone}/{cfg.method}/seed{cfg.seed}", unit="epoch")
    for epoch in bar:
        if probe is not None:
            probe.epoch = epoch
        loss = fit_epoch(combine, opt, source, Y["train"], known["train"], cfg, g, device, probe)
        h = {"epoch": epoch, "train_loss": loss, **evaluate(net, source, Y["val"]), **combine.weights(),
             **(probe.epoch_summary() if probe is not None else {}), "seconds": round(time.time() - t0, 2)}
        if not history or h["val_covid_loss"] < min(x["val_covid_loss"] for x in history):
            best_state = copy.deepcopy(model.state_dict())
        history.append(h)
        bar.set_postfix(loss=f"{loss:.3f}", val_loss=f"{h['val_covid_loss']:.3f}", val_auc=f"{h['val_auc'] or 0:.3f}")
        if bar.disable:
            print(f"epoch {epoch}/{cfg.epochs}: train loss {loss:.4f}, val COVID loss {h['val_covid_loss']:.4f}, "
                  f"val AUC {h['val_auc'] or float('nan'):.4f} ({time.time() - t0:.0f} s)", flush=True)
    model.load_state_dict(best_state)
    pred = predictions_table(data["test"], torch.sigmoid(source.split_logits(net, "test")).numpy(), cfg.tasks)
    if cfg.protocol != "official":  # intervals resample the groups the protocol holds out
        pred[PRED.group] = linked_groups(data["test"]).to_numpy()
    scores = evaluate_predictions(pred, lesion_prevalence(data["train"][list(LESIONS)].to_numpy()), seed=cfg.seed)
    unseen = None
    if UNSEEN_SPLIT in data:
        unseen = unseen_source_eval(cfg, data[UNSEEN_SPLIT], source.split_logits(net, UNSEEN_SPLIT))
        run.write(UNSEEN, unseen[1].to_csv(index=False))
    if probe is not None:
        run.write(GRADIENTS, pd.DataFrame(probe.rows).to_csv(index=False))
    info = RunInfo(best_epoch=min(history, key=lambda h: h["val_covid_loss"])["epoch"],
                   seconds=round(time.time() - t0, 1), device=str(device), precision=precision(device), timm_name=timm_name(cfg.backbone),
                   weights_source=model.weights_source, pretrained=cfg.pretrained, torch=torch.__version__,
                   images={s: len(d) for s, d in data.items()})
    metrics = RunMetrics(**vars(Scores.from_dict(scores)), protocol=protocol_info(cfg, data), run=info,
                         unseen_source=unseen and unseen[0])
    checkpoint = {"config": cfg.to_dict(), "state_dict": model.state_dict(), "data_config": model.data_config,
                  "weights_source": model.weights_source}
    run.write_results(pd.DataFrame(history), pred, checkpoint, metrics)
    return metrics
