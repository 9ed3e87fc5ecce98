"""Training throughput on this machine, same model (EfficientNet-Lite0, LA-DNN head) and data in one process:

- naive: the paper code's pipeline: every epoch each image is decoded from its file with PIL, resized, augmented
  with torchvision's RandomAffine and flip, and the whole network is trained;
- ours (the quick profile, settings read from profiles/quick.yaml): one real 15-epoch run of the library's own
  functions from an empty image cache (a temporary folder): every training image decoded once, the frozen lower
  network once over its augmented views (`ladnn.train.training_views`, through the frozen scoring copy), then
  15 epochs of `ladnn.train.fit_epoch` on the top blocks and the head over those cached activations.

Both leave out validation and test scoring (the naive pipeline has neither cache nor test-time views to pay for).
The naive run is projected from `--batches` timed batches (15 epochs of it take about 20 minutes here); ours is
timed whole. It prints images/s, both 15-epoch times, their ratio (goal: 10x), and the achieved FLOP/s of each
training step as a fraction of this machine's float32 matrix-multiply rate measured here.

`--precision mixed-bf16` is a what-if, not the library's recipe: on a CPU with bfloat16 instructions (AVX512-BF16 or
AMX), ours trains under bfloat16 autocast, except the depthwise convolutions, which stay float32 (their bfloat16
backward was 2 to 4 times slower than float32's in oneDNN here). The cache stays the float32 frozen copy's (the frozen
part under bfloat16 autocast, run eagerly, took 22 s against 9 s here). It changes every update, so the book's
numbers would change; the library trains in float32. It also prints the bfloat16 matmul rate.

    python benchmarks/train_throughput.py [--batches 8] [--precision float32 [mixed-bf16]]
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms as T
from tqdm import tqdm

import ladnn.mtl
import ladnn.train
from ladnn.config import Config
from ladnn.data import splits
from ladnn.images import ImageCache, decode, read_bytes
from ladnn.infer import channels_last
from ladnn.models import build_model, frozen_split
from ladnn.mtl import TaskCombiner
from ladnn.profiles import load_profile
from ladnn.train import (
    FeatureBatches,
    fit_epoch,
    scoring_copy,
    targets,
    train_step,
    training_views,
)

EPOCHS, BATCH = 15, 32


def matmul_peak(n: int = 2048, reps: int = 5, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
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


@contextlib.contextmanager
def mixed_bf16(net: torch.nn.Module):
    """The what-if's training steps: `ladnn.train.train_step` under CPU bfloat16 autocast, with `net`'s depthwise
    convolutions run in float32 (patched for the duration only)."""
    def float32_forward(forward, x):
        with torch.autocast("cpu", enabled=False):
            return forward(x.float())

    depthwise = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    for m in depthwise:
        m.forward = functools.partial(float32_forward, m.forward)
    old = ladnn.mtl.TaskCombiner.forward

    def bf16_forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return old(self, x)

    ladnn.mtl.TaskCombiner.forward = bf16_forward
    try:
        yield
    finally:
        ladnn.mtl.TaskCombiner.forward = old
        for m in depthwise:
            del m.forward


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=8, help="timed batches of the naive pipeline, after one untimed")
    ap.add_argument("--precision", nargs="+", choices=("float32", "mixed-bf16"), default=["float32"],
                    help="ours in float32 (the library's), the bfloat16 what-if (see above), or both, one run each "
                         "after the same naive measurement")
    a = ap.parse_args()
    mixed = "mixed-bf16" in a.precision
    if mixed and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise SystemExit("--precision mixed-bf16: this CPU has no bfloat16 instructions for oneDNN (AVX512-BF16 or "
                         "AMX); bfloat16 would be emulated and slow")
    torch.manual_seed(0)
    train = splits(Config())["train"]
    y, k = targets(train)
    n = len(train)
    q = load_profile("quick", Path(__file__).resolve().parents[1])["runs"][0]
    peak = matmul_peak()
    print(f"float32 matmul rate on this machine: {peak / 1e9:.1f} GFLOP/s ({torch.get_num_threads()} threads)")
    if mixed:
        print(f"bfloat16 matmul rate: {matmul_peak(dtype=torch.bfloat16) / 1e9:.1f} GFLOP/s; ours in mixed-bf16 below is a "
              f"what-if, not the library's float32 recipe")

    # naive
    model = build_model(q.backbone, "ladnn")
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

    x0, y0, k0 = naive_batch(0)
    f_naive = step_flops(model, x0)
    naive = TaskCombiner(Config(), model)
    train_step(naive, opt, x0, y0, k0, Config(), torch.device("cpu"))  # warm-up: first-call allocations untimed
    t = time.perf_counter()
    for i in range(a.batches):
        x, yy, kk = naive_batch(i + 1)
        train_step(naive, opt, x, yy, kk, Config(), torch.device("cpu"))
    dt = (time.perf_counter() - t) / a.batches
    naive_ips = BATCH / dt
    naive_run = EPOCHS * n / naive_ips
    print(f"naive: {naive_ips:.1f} images/s; 15 epochs of {n} images: {naive_run:.0f} s; "
          f"{f_naive / dt / 1e9:.1f} GFLOP/s = {f_naive / dt / peak:.1%} of the matmul rate")

    # ours: one real run per precision, timed whole
    for precision in a.precision:
        cfg = dataclasses.replace(q, method="ladnn", epochs=EPOCHS)
        device = torch.device("cpu")
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            model = build_model(cfg.backbone, cfg.method, cfg.head, cfg.pretrained, cfg.weights)
            model = model.to(memory_format=torch.channels_last)
            imgs = ImageCache(model.data_config["input_size"][-1], Path(tmp), cfg.preprocess).stack(paths)  # empty
            decode_s = time.perf_counter() - t
            lower, upper = frozen_split(cfg, model)
            feats = training_views(cfg, model, scoring_copy(lower, model, {"train": imgs}, device), imgs, device)
            cache_s = time.perf_counter() - t
            source = FeatureBatches({"train": feats}, device)
            opt = torch.optim.Adam([p for p in upper.parameters() if p.requires_grad], lr=cfg.lr,
                                   weight_decay=cfg.weight_decay)
            g = torch.Generator().manual_seed(0)
            t = time.perf_counter()
            with mixed_bf16(upper) if precision == "mixed-bf16" else contextlib.nullcontext():
                for _ in tqdm(range(EPOCHS), desc=f"ours ({precision}): 15 epochs", unit="epoch"):
                    fit_epoch(TaskCombiner(cfg, upper), opt, source, y, k, cfg, g, device)
            epochs_s = time.perf_counter() - t
        ours_run = cache_s + epochs_s
        ours_ips = EPOCHS * n / epochs_s
        f_ours = step_flops(upper, channels_last(feats[0, :BATCH]))
        dt = BATCH / ours_ips
        print(f"ours ({precision}, top {cfg.top_blocks} blocks, {cfg.views} views, one real run): images decoded in "
              f"{decode_s:.0f} s and {cfg.views} views cached in {cache_s - decode_s:.0f} s, then {ours_ips:.1f} "
              f"images/s; 15 epochs: {ours_run:.0f} s (cache included); the profile's {q.epochs} epochs: "
              f"{q.epochs * n / ours_ips:.0f} s once the cache exists; {f_ours / dt / 1e9:.1f} GFLOP/s = "
              f"{f_ours / dt / peak:.1%} of the float32 matmul rate")
        print(f"speed-up of a 15-epoch run ({precision}): {naive_run / ours_run:.1f}x (goal 10x; training steps "
              f"alone: {ours_ips / naive_ips:.1f}x more images/s). Validation and test scoring are left out of both.")

if __name__ == "__main__":
    main()
