"""`ladnn predict` latency for one image: cold (a new process: imports, model load, first call) and warm, with and
without a Grad-CAM++ map; `ladnn evaluate` on the run's test split (a new process, on a copy of the run); then the
scoring network's time per image by batch size, in one call and in the CPU chunks of `ladnn.infer.run_net` (why
`CPU_CHUNK_VALUES` is small). Then where one warm call with the run's test-time views spends its time, step by step,
and the scoring network on those views in other runtimes where they are installed (a what-if: OpenVINO, in float32
and, on a CPU with bfloat16 instructions, in bfloat16), with the largest change of a probability that each brings.

The warm figures are medians of `--repeat` calls after 10 warm-up calls; with `--rounds R` the whole warm
measurement is repeated R times and each round printed with the median of the rounds' medians, since timings on a
shared 2-core machine move by a third between processes. The CLI's `OMP_WAIT_POLICY=PASSIVE` is set here too.

    python benchmarks/predict_latency.py RUN_DIR [--repeat 20] [--rounds 1]
    pip install openvino   # optional, for the what-if
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


def median_ms(f, repeat: int) -> float:
    """Median milliseconds of `repeat` calls of `f`, after 5 untimed."""
    for _ in range(5):
        f()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1000


def steps(pr, data: bytes, name: str, repeat: int) -> torch.Tensor:
    """Median time of each step of one warm `predict` of one image with the run's test-time views and no map, as
    `Predictor.preprocess` and `Predictor.probs` take them (ladnn.infer.view_outputs: the views in one call); returns
    the network's input for those views."""
    from ladnn.images import MAX_PIXELS, ct_check, decode_with_info, preprocess
    from ladnn.infer import model_input, pixel_digests, tta_view

    img, _ = decode_with_info(data, name, MAX_PIXELS, pr.window)
    _, x = pr.preprocess(data, name)
    views = lambda: model_input(torch.cat([tta_view(x, v, pr.config.tta_seed, pr.config.augment, pixel_digests(x))
                                           for v in range(pr.tta)]), pr.data_config)
    inputs = views()
    with torch.inference_mode():
        ms = {"decode": median_ms(lambda: decode_with_info(data, name, MAX_PIXELS, pr.window), repeat),
              "CT check": median_ms(lambda: ct_check(img), repeat),
              "preprocessing and resize": median_ms(lambda: preprocess(img, pr.size, pr.config.preprocess), repeat),
              f"{pr.tta} views drawn and normalised": median_ms(views, repeat),
              f"scoring network, {pr.tta} views in one call": median_ms(lambda: pr.scorer(inputs), repeat)}
    print(f"one warm call with the run's {pr.tta} views, no map, by step (medians of {repeat} calls each; "
          f"{type(pr.scorer).__name__}):")
    for k, v in ms.items():
        print(f"  {k:<40} {v:6.1f} ms")
    print(f"  {'sum':<40} {sum(ms.values()):6.1f} ms (goal for the whole call: 15 ms)")
    return inputs


class OpenVinoNet(torch.nn.Module):
    """A compiled OpenVINO model called like a network: its first output as a float32 tensor."""

    def __init__(self, compiled):
        super().__init__()
        self.request, self.output = compiled.create_infer_request(), compiled.output(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.request.infer({0: x.contiguous().numpy()})[self.output].copy())


def other_runtimes(pr, inputs: torch.Tensor, repeat: int) -> None:
    """The scoring network in OpenVINO, if installed, against ONNX Runtime (ladnn's): the time of one image's
    test-time views `inputs` in one call, and over the test split with the run's views (as `ladnn evaluate` scores
    it) the AUC, the largest change of a COVID probability from ladnn's and how many calls at 0.5 it changes."""
    path = getattr(pr.scorer, "path", None)
    try:
        import openvino as ov
    except ImportError:
        print("other runtimes: OpenVINO is not installed (pip install openvino): skipped")
        return
    if path is None:
        print("other runtimes: the run has no ONNX copy here: skipped")
        return
    from ladnn.images import read_bytes
    from ladnn.metrics import binary_metrics

    test = load_table(pr.config.dataset).query("split == 'test'")
    imgs = torch.cat([pr.preprocess(read_bytes(f), f)[1] for f in test["image"]])
    y = test["covid"].to_numpy()
    ours = pr.scorer
    want = pr.probs(imgs)[:, 0]
    print(f"scoring network in other runtimes (what-if; ladnn uses ONNX Runtime): one call on one image's {pr.tta} "
          f"views, and the {len(test)} test images with the run's views")
    label = "ONNX Runtime, float32 (ladnn's)"
    print(f"  {label:<34}{median_ms(lambda: ours(inputs), repeat):6.1f} ms; AUC {binary_metrics(y, want)['auc']:.4f}")
    core = ov.Core()
    model = core.read_model(str(path))
    bf16 = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    try:
        for precision in ("f32", "bf16") if bf16 else ("f32",):
            net = OpenVinoNet(core.compile_model(model, "CPU", {
                "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": torch.get_num_threads()}))
            pr.scorer = net  # `probs` scores through it, views and all
            got = pr.probs(imgs)[:, 0]
            label = f"OpenVINO {ov.__version__.split('-')[0]}, {precision}"
            ms = median_ms(lambda: pr.scorer(inputs), repeat)
            flips = int(((got >= 0.5) != (want >= 0.5)).sum())
            print(f"  {label:<34}{ms:6.1f} ms; AUC {binary_metrics(y, got)['auc']:.4f}; largest change of a "
                  f"probability {np.abs(got - want).max():.4f}; {flips} of {len(y)} calls at 0.5 changed")
    finally:
        pr.scorer = ours
    if not bf16:
        print("  (no bfloat16 instructions on this CPU: OpenVINO bf16 not measured)")


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
    pr.tta = pr.config.tta
    other_runtimes(pr, steps(pr, data, img, a.repeat), a.repeat)


if __name__ == "__main__":
    main()
