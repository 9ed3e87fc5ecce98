"""Training throughput on this machine, same model (EfficientNet-Lite0, LA-DNN head) and data in one process:

- naive: the paper code's pipeline: every epoch each image is decoded from its file with PIL, resized, augmented
  with torchvision's RandomAffine and flip, and the whole network is trained;
- ours (the quick profile, settings read from profiles/quick.yaml): the lower network runs once over the augmented
  views of the decoded-once images, then each epoch trains only the top blocks and the head on those cached
  activations.

It prints images/s, the projected time of a 15-epoch run (425 training images) and of the profile's own epoch count,
their ratio, and the achieved
FLOP/s of each training step as a fraction of this machine's float32 matrix-multiply rate measured here.

    python benchmarks/train_throughput.py [--batches 4]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms as T

from ladnn.config import Config
from ladnn.data import splits
from ladnn.images import ImageCache, decode, read_bytes
from ladnn.infer import channels_last
from ladnn.models import build_model, split_model
from ladnn.profiles import load_profile
from ladnn.train import targets, train_step, train_views

EPOCHS, BATCH = 15, 32


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


def step_flops(net, x) -> float:
    """FLOPs of one training step, estimated as 3x the forward pass (backward ~ 2x forward). The forward count is
    torch's; its count of the backward of grouped (depthwise) convolutions ignores the groups and is ~20x too high."""
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net(x)
    return 3 * fc.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=4, help="timed batches per pipeline")
    a = ap.parse_args()
    torch.manual_seed(0)
    train = splits(Config())["train"]
    y, k = targets(train)
    n = len(train)
    q = load_profile("quick", Path(__file__).resolve().parents[1])["runs"][0]
    peak = matmul_peak()
    print(f"float32 matmul rate on this machine: {peak / 1e9:.1f} GFLOP/s ({torch.get_num_threads()} threads)")

    # naive
    model = build_model("efficientnet_lite0", "ladnn")
    mean, std = model.data_config["mean"], model.data_config["std"]
    tf = T.Compose([T.Resize((224, 224)), T.RandomAffine(0, shear=0.2, scale=(0.8, 1.2)), T.RandomHorizontalFlip(),
                    T.ToTensor(), T.Normalize(mean, std)])
    opt = torch.optim.Adam(model.parameters(), lr=5e-5, weight_decay=5e-4)
    model.train()
    paths = list(train["image"])

    def naive_batch(i):
        idx = [(i * BATCH + j) % n for j in range(BATCH)]
        x = torch.stack([tf(decode(read_bytes(paths[j]), paths[j])) for j in idx])  # decoded again every epoch
        return x, y[idx], k[idx]

    x0, _, _ = naive_batch(0)
    f_naive = step_flops(model, x0)
    t = time.perf_counter()
    for i in range(a.batches):
        x, yy, kk = naive_batch(i + 1)
        train_step(model, opt, x, yy, kk, Config(), torch.device("cpu"))
    dt = (time.perf_counter() - t) / a.batches
    naive_ips = BATCH / dt
    naive_run = EPOCHS * n / naive_ips
    print(f"naive: {naive_ips:.1f} images/s; 15 epochs of {n} images: {naive_run:.0f} s; "
          f"{f_naive / dt / 1e9:.1f} GFLOP/s = {f_naive / dt / peak:.1%} of the matmul rate")

    # ours
    model = build_model("efficientnet_lite0", "ladnn").to(memory_format=torch.channels_last)
    lower, upper = split_model(model, q.top_blocks)
    lower.eval()
    imgs = ImageCache(224).stack(paths)
    t = time.perf_counter()
    with torch.no_grad():
        feats = torch.cat([lower(train_views(imgs[i:i + 64], model)) for i in range(0, n, 64)])
    view_s = time.perf_counter() - t
    cache_s = q.views * view_s + (118 + 203) / n * view_s  # views of train + one plain pass over val and test
    opt = torch.optim.Adam(upper.parameters(), lr=q.lr, weight_decay=q.weight_decay)
    upper.train()
    f_ours = step_flops(upper, channels_last(feats[:BATCH]))
    t = time.perf_counter()
    for i in range(a.batches * 4):
        idx = torch.randint(0, n, (BATCH,))
        train_step(upper, opt, channels_last(feats[idx]), y[idx], k[idx], q, torch.device("cpu"))
    dt = (time.perf_counter() - t) / (a.batches * 4)
    ours_ips = BATCH / dt
    ours_run = cache_s + EPOCHS * n / ours_ips
    print(f"ours (top {q.top_blocks} blocks, {q.views} views): activation cache {cache_s:.0f} s once, then "
          f"{ours_ips:.1f} images/s; 15 epochs: {ours_run:.0f} s (cache included); the profile's {q.epochs} epochs: "
          f"{q.epochs * n / ours_ips:.0f} s once the cache exists; "
          f"{f_ours / dt / 1e9:.1f} GFLOP/s = {f_ours / dt / peak:.1%} of the matmul rate")
    print(f"speed-up of a 15-epoch run: {naive_run / ours_run:.1f}x (training steps alone: {ours_ips / naive_ips:.1f}x "
          "more images/s). Validation passes are left out of both projections.")


if __name__ == "__main__":
    main()
