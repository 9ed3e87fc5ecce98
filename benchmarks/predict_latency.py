"""`ladnn predict` latency for one image: cold (a new process: imports, model load, first call) and warm, with and
without a Grad-CAM++ map; then the scoring network's time per image by batch size, in one call and in the CPU
chunks of `ladnn.infer.run_net` (why `CPU_CHUNK_VALUES` is small).

    python benchmarks/predict_latency.py RUN_DIR [--repeat 20]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np
import torch

from ladnn.data import load_table


def per_image_ms(f, n: int, size: int, calls: int = 3) -> float:
    """Median milliseconds per image of `f` on `n` random inputs, after one warm-up call."""
    x = torch.randn(n, 3, size, size).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        f(x)
        for _ in range(calls):
            t = time.perf_counter()
            f(x)
            times.append(time.perf_counter() - t)
    return float(np.median(times)) / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()
    img = load_table("D0").query("split == 'test'")["image"].iloc[0]
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ladnn.cli", "predict", a.run, img], check=True, capture_output=True)
    print(f"cold `ladnn predict` (new process, one image): {time.perf_counter() - t:.2f} s")

    from ladnn.images import read_bytes
    from ladnn.predict import Predictor

    t = time.perf_counter()
    pr = Predictor(a.run)
    print(f"model load in-process: {time.perf_counter() - t:.2f} s")
    data = read_bytes(img)
    print("goals: 15 ms without a map, 50 ms with one (warm, one image, 2 cores)")
    for tta in sorted({pr.config.tta, 1}, reverse=True):
        pr.tta = tta
        label = f"{tta} test-time view{'s' if tta > 1 else ''}" + (" (the run's)" if tta == pr.config.tta else "")
        for cam in (False, True):
            times = []
            for i in range(a.repeat + 10):
                t = time.perf_counter()
                rgb, x = pr.preprocess(data, img)
                pr.result(pr.probs(x)[0])
                if cam:
                    pr.cam_overlays(rgb, x, [0])
                if i >= 10:  # the first 10 calls are the warm-up
                    times.append(time.perf_counter() - t)
            ms = np.array(times) * 1000
            print(f"warm, one image, {label}, {'with' if cam else 'without'} a Grad-CAM++ map: "
                  f"median {np.median(ms):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms ({a.repeat} calls)")

    from ladnn.infer import run_net

    print(f"scoring network alone, ms per image by batch ({torch.get_num_threads()} threads):")
    print("batch   one call   CPU chunks")
    for n in (1, 2, 4, 8, 16, 32, 64):
        one = per_image_ms(pr.scorer, n, pr.size)
        chunked = per_image_ms(lambda x: run_net(pr.scorer, x, pr.device), n, pr.size)
        print(f"{n:5d} {one:10.1f} {chunked:12.1f}")


if __name__ == "__main__":
    main()
