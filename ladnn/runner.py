"""The notebook runner: papermill executes notebooks one at a time or several side by side (a process pool that
splits the CPU cores, one GPU per worker where there are several), hides the injected-parameters cell, and fails on
any error output. `prepare_caches` fills the shared caches first, so runs side by side never build one twice."""
from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

import nbformat

from ladnn.config import Config, cache_key
from ladnn.profiles import BuildError


def _finish_notebook(path: Path) -> None:
    """Hide papermill's injected-parameters cell from readers; fail on any error output."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                raise BuildError(f"{path}: a cell raised {out.get('ename')}: {out.get('evalue')}")
    nbformat.write(nb, path)


class _PrintHandler(logging.Handler):
    """Print to whatever sys.stdout is now (a StreamHandler would keep the stream it was created with), each line
    tagged with the notebook it comes from (runs may execute side by side)."""

    tag = ""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"    {self.tag}{self.format(record)}", flush=True)


def execute(src: Path, dst: Path, params: dict, root: Path, tag: str = "") -> None:
    import papermill as pm

    log = logging.getLogger("papermill")
    if not log.handlers:  # show the notebook's own output (one line per epoch) while it runs
        h = _PrintHandler()
        h.addFilter(lambda r: not re.match(r"(Executing|Ending) Cell|(In|Out)put Notebook|Working directory",
                                           str(r.msg)))
        log.addHandler(h)
        log.setLevel(logging.INFO)
        log.propagate = False
    for h in log.handlers:
        if isinstance(h, _PrintHandler):
            h.tag = f"[{tag}] " if tag else ""

    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        # a kernel on a loaded machine (other builds beside this one) may take over papermill's 60 s to start
        pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name="python3", cwd=str(root),
                            log_output=True, progress_bar=False, execution_timeout=None, start_timeout=600)
    except pm.PapermillExecutionError as e:
        raise BuildError(f"notebook {src.name} failed ({e.ename}: {e.evalue}); the executed copy with the "
                         f"traceback is {dst}") from None
    if not dst.is_file():
        raise BuildError(f"papermill wrote no {dst}")
    _finish_notebook(dst)


def gpu_count() -> int:
    """GPUs this process may use (none without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _worker_init(threads: int, gpus) -> None:
    """A worker process: its kernels use `threads` CPU threads, and one GPU of their own when there are several
    (taken from the queue `gpus`; CUDA_VISIBLE_DEVICES is inherited by the kernels it starts)."""
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())


def execute_all(jobs: list[tuple[str, Path, Path, dict]], root: Path, workers: int, t0: float, label: str) -> None:
    """Execute notebooks (name, src, dst, params) `workers` at a time, splitting the CPU cores between them. On two
    cores, two runs side by side with one thread each train as fast as one after the other with two threads, and
    each hides the other's kernel start. The first failure stops the build: notebooks not yet started are cancelled."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    if workers <= 1 or len(jobs) <= 1:
        for k, (name, src, dst, params) in enumerate(jobs, 1):
            print(f"[book {label}] {k}/{len(jobs)}: {name} ({time.time() - t0:.0f} s)", flush=True)
            execute(src, dst, params, root)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = get_context("spawn")
    n_gpu, gpus = gpu_count(), None
    if n_gpu > 1:  # one GPU per worker, round robin when there are more workers than GPUs
        gpus = ctx.Manager().Queue()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", ",".join(map(str, range(n_gpu)))).split(",")
        for k in range(workers):
            gpus.put(visible[k % n_gpu])
    print(f"[book {label}] {len(jobs)} notebooks, {workers} at a time with {threads} thread(s)"
          + (f" and one of {n_gpu} GPUs" if gpus is not None else "") + " each", flush=True)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(threads, gpus)) as pool:
        futures = {pool.submit(execute, src, dst, params, root, name): name for name, src, dst, params in jobs}
        for k, f in enumerate(as_completed(futures), 1):
            if f.exception() is not None:
                pool.shutdown(wait=True, cancel_futures=True)
                raise f.exception()
            print(f"[book {label}] {k}/{len(jobs)} done: {futures[f]} ({time.time() - t0:.0f} s)", flush=True)


def prepare_caches(todo: list[tuple[str, Config, Path]], t0: float, label: str) -> None:
    """Fill the image and activation caches once, in this process with every core, for the runs still to train, so
    that runs side by side never build the same cache twice."""
    from ladnn.rundir import is_done
    from ladnn.train import prepare

    seen = set()
    for _, cfg, out in todo:
        key = cache_key(cfg)
        if key in seen or is_done(out, cfg):
            continue
        seen.add(key)
        print(f"[book {label}] caches for {cfg.backbone}/{cfg.dataset}/{cfg.finetune} ({time.time() - t0:.0f} s)",
              flush=True)
        prepare(cfg)
