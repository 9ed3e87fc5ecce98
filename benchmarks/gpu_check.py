"""The GPU check (`make gpu-check`): on a fresh GPU machine, with this repository, a data pack
(benchmarks/make_datapack.py) and the machine's own PyTorch, it prints

1. the device, its driver and the precision every run records (ladnn.infer.precision);
2. one `gpu`-profile run (EfficientNet-Lite0, the whole network, 15 epochs), trained as `ladnn train` trains it,
   with its time per phase (the phases of benchmarks/run_profile.py, measured in this process);
3. that run's test split scored on the GPU and on the CPU: the largest difference in P(COVID), the decisions
   changed at 0.5, and whether scoring on the GPU reproduces the run's own predictions.csv;
4. a reduced `gpu` book (one backbone, D0, both methods, one seed, one ablation) built with `--jobs N`, and its time.

    LADNN_DATA_DIR=PACK python benchmarks/gpu_check.py [--jobs 4]     # on the GPU machine: within 8 minutes
    python benchmarks/gpu_check.py --cpu                               # CI: the same steps on the CPU, 8 images

In CPU mode "the GPU" is the CPU (so step 3 compares the CPU with itself), the run is one epoch on 8 images per
split, and the reduced book is planned (`--plan`), not built: the smoke book of tests/test_book.py builds the book.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from run_profile import ORDER, PATCH  # the phase timers, shared with run_profile.py

REDUCED = {"backbone": ["tf_efficientnet_lite0"], "dataset": ["D0"], "method": ["baseline", "ladnn"], "seed": [0]}


def driver() -> str:
    """The NVIDIA driver's version, from nvidia-smi where it is installed."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.strip()
        return out.splitlines()[0] if out else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown (no nvidia-smi)"


def timed_run(cfg, out: Path) -> tuple[dict, float]:
    """`ladnn.train.train` with the phase timers of run_profile.py wrapped around its steps (in this process)."""
    import ladnn.train

    ns: dict = {}
    exec(PATCH, ns)  # noqa: S102 - our own timer code (run_profile.PATCH); it wraps ladnn.train's steps and RunWriter's writes for the rest of this process
    t = time.perf_counter()
    ladnn.train.train(cfg, out, overwrite=True)
    return ns["_PROF"]["s"], time.perf_counter() - t


def compare_devices(run: Path, cfg, gpu: str) -> dict:
    """The run's test images scored on `gpu` and on the CPU (its test-time views), and against predictions.csv."""

    from ladnn.data import splits
    from ladnn.predict import Predictor
    from ladnn.rundir import FinishedRun
    from ladnn.scores import PRED

    finished = FinishedRun(run)
    saved = finished.predictions
    test = splits(cfg)["test"]
    if list(test["name"]) != list(saved[PRED.image]):
        raise SystemExit(f"{run}: the images of its predictions are not the test split's, in order")
    paths = list(test["image"])
    p = {d: np.array([r[PRED.p_covid] for r in Predictor(run, d, onnx=False).predict_files(paths)])
         for d in (gpu, "cpu")}
    own = saved[PRED.p_covid].to_numpy()
    return {"images": len(paths), "max_abs_diff_gpu_cpu": float(np.abs(p[gpu] - p["cpu"]).max()),
            "decisions_changed_gpu_cpu": int(((p[gpu] >= 0.5) != (p["cpu"] >= 0.5)).sum()),
            "max_abs_diff_gpu_vs_predictions_csv": float(np.abs(p[gpu] - own).max()),
            "decisions_changed_gpu_vs_predictions_csv": int(((p[gpu] >= 0.5) != (own >= 0.5)).sum())}


def reduced_book(root: Path, jobs: int, overrides: list[str], plan_only: bool) -> float:
    """The `gpu` profile cut to REDUCED and one ablation, built (or planned) in a copy of the book's sources."""
    prof = yaml.safe_load((ROOT / "profiles" / "gpu.yaml").read_text())
    prof.pop("optional_backbones", None)
    prof["matrix"] = REDUCED
    prof["description"] = "gpu check: " + prof["description"]
    prof["ablations"] = {"seeds": [0], "variants": dict(list(prof["ablations"]["variants"].items())[:1])}
    for s in ("_config.yml", "_toc.yml", "book", "notebooks", "profiles", "ladnn", "_static"):
        if (ROOT / s).exists():
            (shutil.copytree if (ROOT / s).is_dir() else shutil.copy)(ROOT / s, root / s)
    shutil.rmtree(root / "book" / "_generated", ignore_errors=True)
    (root / "profiles" / "gpu-check.yaml").write_text(yaml.safe_dump(prof, sort_keys=False))
    cmd = [sys.executable, "-m", "ladnn.book", "--profile", "gpu-check", "--root", str(root), "--jobs", str(jobs),
           *[x for o in overrides for x in ("--set", o)], *(["--plan"] if plan_only else [])]
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=root, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
                       capture_output=plan_only, text=True)
    if r.returncode:
        raise SystemExit(f"the reduced gpu book failed (exit {r.returncode}): {' '.join(cmd)}\n{r.stderr or ''}")
    if plan_only:
        lines = [x for x in r.stdout.splitlines() if x.strip()]
        print(f"reduced gpu book planned: {len(lines)} runs (`--plan`)")
        if len(lines) != 2 * 1 + 1:
            raise SystemExit(f"the reduced gpu book should plan 3 runs, planned {len(lines)}:\n{r.stdout}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="the same steps on the CPU, on 8 images per split (CI)")
    ap.add_argument("--jobs", type=int, default=4, help="notebooks side by side in the reduced book (default 4)")
    ap.add_argument("--out", default=None, help="where the run and the book go (default: a temporary folder)")
    a = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    t_all = time.perf_counter()
    from ladnn.config import Config
    from ladnn.infer import cuda_problem, describe, use_device
    from ladnn.profiles import load_profile
    from ladnn.rundir import FinishedRun

    device = use_device("cpu" if a.cpu else "cuda")  # asked for by name: no GPU is an error, not a CPU run
    print(f"gpu check ({'CPU mode' if a.cpu else 'GPU'}); {describe(device)}")
    if device.type == "cuda":
        import torch

        print(f"driver {driver()}; torch {torch.__version__}, CUDA {torch.version.cuda}, "
              f"cuDNN {torch.backends.cudnn.version()}")
    elif (problem := cuda_problem()):
        print(problem)
    small = ["limit=8", "epochs=1", "batch_size=4"] if a.cpu else []
    overrides = [f"device={device.type}", *small]
    first = next(c for c in load_profile("gpu", ROOT)["runs"] if c.dataset == "D0")
    cfg = Config.from_dict({**first.to_dict(), **dict(o.split("=", 1) for o in overrides)})
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.out or tmp)
        work.mkdir(parents=True, exist_ok=True)
        run = work / "run"
        phases, wall = timed_run(cfg, run)
        metrics = FinishedRun(run).metrics
        covid = metrics.covid
        print(f"one gpu-profile run ({cfg.backbone}, {cfg.method}, {cfg.finetune}, {cfg.epochs} epochs, "
              f"{covid.n} test images): {wall:.1f} s, test AUC {covid.auc:.4f}")
        print(f"  {'phase':<24}{'seconds':>9}")
        for k in ORDER[2:9]:
            print(f"  {k:<24}{phases.get(k, 0.0):>9.2f}")
        print(f"  {'other (start, checks)':<24}{wall - sum(phases.values()):>9.2f}")
        print(f"  precision recorded: {json.dumps(metrics.run.precision)}")
        cmp = compare_devices(run, cfg, device.type)
        print("test split, GPU against CPU: " + json.dumps(cmp))
        book_root = work / "book"
        book_root.mkdir(exist_ok=True)
        b = reduced_book(book_root, a.jobs, overrides, plan_only=a.cpu)
        if not a.cpu:
            print(f"reduced gpu book (3 runs, 8 notebooks, --jobs {a.jobs}): {b:.0f} s")
    print(f"gpu check done in {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
