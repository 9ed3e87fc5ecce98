"""`ladnn predict` latency for one image: cold (a new process: imports, model load, first call) and warm, with and
without a Grad-CAM++ map; `ladnn evaluate` on the run's test split (a new process, on a copy of the run); then the
scoring network's time per image by batch size, in one call and in the CPU chunks of `ladnn.infer.run_net` (why
`CPU_CHUNK_VALUES` is small).

The warm figures are medians of `--repeat` calls after 10 warm-up calls; with `--rounds R` the whole warm
measurement is repeated R times and each round printed with the median of the rounds' medians, since timings on a
shared 2-core machine move by a third between processes. The CLI's `OMP_WAIT_POLICY=PASSIVE` is set here too.

    python benchmarks/predict_latency.py RUN_DIR [--repeat 20] [--rounds 1]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `ladnn predict` and `ladnn serve` set it (ladnn.cli)

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
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    img = load_table("D0").query("split == 'test'")["image"].iloc[0]
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ladnn.cli", "predict", a.run, img], check=True, capture_output=True)
    print(f"cold `ladnn predict` (new process, one image; the first one on this machine also exports the run's ONNX "
          f"copy): {time.perf_counter() - t:.2f} s")
    with tempfile.TemporaryDirectory() as tmp:  # evaluate writes eval/ into the run: a copy of it
        run = shutil.copytree(a.run, Path(tmp) / Path(a.run).name, ignore=shutil.ignore_patterns("eval*"))
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ladnn.cli", "evaluate", str(run)], check=True, capture_output=True)
        n = len(load_table("D0").query("split == 'test'"))
        print(f"`ladnn evaluate` (new process, the {n} test images with the run's test-time views, ONNX copy "
              f"cached): {time.perf_counter() - t:.2f} s (goal: 15 s)")

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
            medians = []
            for r in range(a.rounds):
                times = []
                for i in range(a.repeat + 10):
                    t = time.perf_counter()
                    rgb, x = pr.preprocess(data, img)
                    if cam:  # as `ladnn serve` does: one pass for the probabilities and the map
                        probs, maps = pr.score(x, [0])
                        pr.cam_overlays(rgb, x, [0], maps)
                    else:
                        probs = pr.probs(x)
                    pr.result(probs[0])
                    if i >= 10:  # the first 10 calls are the warm-up
                        times.append(time.perf_counter() - t)
                ms = np.array(times) * 1000
                medians.append(np.median(ms))
                print(f"warm, one image, {label}, {'with' if cam else 'without'} a Grad-CAM++ map: "
                      f"median {np.median(ms):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms ({a.repeat} calls"
                      + (f", round {r + 1} of {a.rounds})" if a.rounds > 1 else ")"))
            if a.rounds > 1:
                print(f"  median of the {a.rounds} rounds: {np.median(medians):.1f} ms "
                      f"(goal: {50 if cam else 15} ms)")

    from ladnn.infer import run_net

    print(f"scoring network alone, ms per image by batch ({torch.get_num_threads()} threads):")
    print("batch   one call   CPU chunks")
    for n in (1, 2, 4, 8, 16, 32, 64):
        one = per_image_ms(pr.scorer, n, pr.size)
        chunked = per_image_ms(lambda x: run_net(pr.scorer, x, pr.device), n, pr.size)
        print(f"{n:5d} {one:10.1f} {chunked:12.1f}")


if __name__ == "__main__":
    main()
