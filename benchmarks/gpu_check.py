"""GPU check (issue: fast on a GPU). For each of the paper's seven backbones and EfficientNet-Lite0 it prints the
training throughput with our data pipeline (decoded-once uint8 images kept on the GPU, augmented and normalised
there per batch, as `ladnn train` does) and with synthetic tensors already on the GPU, under bf16 autocast and channels-last, and
the peak GPU memory. Then it runs one full 15-epoch fine-tuning of Lite0, LA-DNN and baseline, with test metrics.

    python benchmarks/gpu_check.py            # on a GPU machine
    python benchmarks/gpu_check.py --cpu      # dry run on the CPU (tiny settings)

Backbones other than Lite0 start from random weights here (no hub access on the device); throughput does not
depend on the weights.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from ladnn.config import Config
from ladnn.data import splits
from ladnn.images import ImageCache
from ladnn.models import PAPER_BACKBONES, build_model
from ladnn.train import targets, train, train_step, train_views


def throughput(backbone: str, device: torch.device, imgs: dict, steps: int, batch: int) -> dict:
    model = build_model(backbone, "ladnn", pretrained=backbone == "efficientnet_lite0").to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    size = model.data_config["input_size"][-1]
    opt = torch.optim.Adam(model.parameters(), lr=5e-5, weight_decay=5e-4)
    x_dev, y_all, known = (t.to(device) for t in imgs[size])  # as `ladnn train` keeps them: uint8, on the device
    cfg = Config()  # LA-DNN's loss with the paper code's weight and mask

    def step(x, y, k):
        train_step(model, opt, x, y, k, cfg, device)  # the library's own step, bf16 autocast on the GPU

    def timed(make_batch) -> float:
        for _ in range(3):
            step(*make_batch())
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(steps):
            step(*make_batch())
        if device.type == "cuda":
            torch.cuda.synchronize()
        return steps * batch / (time.perf_counter() - t)

    xs = torch.randn(batch, 3, size, size, device=device)
    if device.type == "cuda":
        xs = xs.contiguous(memory_format=torch.channels_last)
    ys, ks = y_all[:batch].to(device), known[:batch].to(device)
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    synthetic = timed(lambda: (xs, ys, ks))
    n = len(x_dev)

    def real():
        idx = torch.randint(0, n, (batch,), device=device)
        return train_views(x_dev[idx], model), y_all[idx], known[idx]

    pipeline = timed(real)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"backbone": backbone, "input": size, "synthetic_img_s": round(synthetic, 1),
            "pipeline_img_s": round(pipeline, 1), "pipeline/synthetic": round(pipeline / synthetic, 3),
            "peak_mem_GiB": round(peak, 2), "weights": model.weights_source}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="dry run on the CPU with tiny settings")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--backbones", nargs="*", default=[*PAPER_BACKBONES, "efficientnet_lite0"])
    ap.add_argument("--out", default="runs/gpu_check")
    a = ap.parse_args()
    if a.cpu:
        a.steps, a.batch, a.epochs = 2, 4, 1
    device = torch.device("cpu" if a.cpu or not torch.cuda.is_available() else "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # throughput only; training below is run as `ladnn train` runs it
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    train_df = splits(Config(limit=16 if a.cpu else None))["train"]
    y, known = targets(train_df)
    imgs = {}
    for s in (224, 240):
        imgs[s] = (ImageCache(s).stack(train_df["image"]), y, known)
    for bb in a.backbones:
        print(json.dumps(throughput(bb, device, imgs, a.steps, a.batch)), flush=True)
    torch.backends.cudnn.benchmark = False
    for method in ("ladnn", "baseline"):
        cfg = Config(method=method, finetune="full", epochs=a.epochs, device=device.type,
                     limit=16 if a.cpu else None)
        t = time.perf_counter()
        m = train(cfg, f"{a.out}/lite0-full-{method}", overwrite=True)
        print(json.dumps({"run": f"efficientnet_lite0 {method} full {a.epochs} epochs", "seconds": round(
            time.perf_counter() - t, 1), **{k: round(getattr(m.covid, k), 4) for k in ("auc", "sensitivity", "f1",
                                                                                 "accuracy")},
            "best_epoch": m.run.best_epoch}), flush=True)


if __name__ == "__main__":
    main()
