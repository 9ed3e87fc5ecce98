"""Build the book for a profile: papermill runs the training notebook once per run and then the analysis notebooks
into book/_generated/, and `jupyter-book build` renders them without executing anything again."""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import yaml

from ladnn.config import Config
from ladnn.rundir import status

# MathJax for offline reading: one self-contained file (SVG output needs no fonts) from the npm registry, pinned.
MATHJAX = ("mathjax@3.2.2", "package/es5/tex-svg.js",
           "d4295dc33744836935c1399feece5159577b34c5c8ffb9f1c6324cd82e03a882")
# Validity first: it is the longest (it scores every run again), and the others fit beside it on the other core.
ANALYSIS = ("validity", "sources", "data", "results", "gradcam", "pairplot", "reproduction")


class BuildError(RuntimeError):
    pass


def load_profile(name: str, root: Path, overrides: dict | None = None) -> dict:
    """A profile YAML: `matrix` (lists crossed into runs), `config` (Config fields shared by every run),
    `backbone_config` (fields for one backbone only, such as `pretrained: false`), `optional_backbones` (joined to the
    matrix only where their ImageNet weights resolve), `ablations` and notebook options. `overrides` (the runner's
    `--set`) replace fields of every run, ablations included."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else root / "profiles" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (root / "profiles").glob("*.yaml"))
        raise BuildError(f"no profile {name!r} ({path}); known profiles: {known}")
    prof = yaml.safe_load(path.read_text())
    prof["name"] = path.stem
    matrix = dict(prof["matrix"])
    optional = prof.get("optional_backbones") or []
    if optional:
        from ladnn.models import weights_available

        found = {b: weights_available(b) for b in optional}
        prof["left_out"] = {b: why for b, (ok, why) in found.items() if not ok}
        matrix["backbone"] = list(matrix["backbone"]) + [b for b, (ok, _) in found.items() if ok]
    keys = list(matrix)
    per_backbone = prof.get("backbone_config") or {}
    runs = []
    for values in itertools.product(*(matrix[k] for k in keys)):
        point = dict(zip(keys, values))
        cfg = {**prof.get("config", {}), **per_backbone.get(point.get("backbone"), {}), **point, **(overrides or {})}
        runs.append(Config.from_dict(cfg))  # validates every field
    prof["runs"] = runs
    abl = prof.get("ablations") or {}
    prof["ablation_runs"] = [
        (f"ablation-{name}-s{seed}", Config.from_dict({**runs[0].to_dict(), **change, "method": "ladnn", "seed": seed,
                                                       **(overrides or {})}))
        for name, change in (abl.get("variants") or {}).items() for seed in abl.get("seeds", [0])]
    return prof


def parse_overrides(items: list[str]) -> dict:
    """`KEY=VALUE` strings (VALUE read as YAML: 8, 1e-3, false, [AirBr]) into Config fields."""
    from ladnn.config import field_names

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or key not in field_names():
            raise BuildError(f"--set {item!r}: expected FIELD=VALUE with a Config field ({', '.join(field_names())})")
        out[key] = yaml.safe_load(value)
    return out


def run_name(cfg: Config) -> str:
    return f"{cfg.backbone}-{cfg.dataset.replace('+', '')}-{cfg.method}-s{cfg.seed}"


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
        pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name="python3", cwd=str(root),
                            log_output=True, progress_bar=False, execution_timeout=None)
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
    from ladnn.train import cache_key, prepare

    seen = set()
    for _, cfg, out in todo:
        key = cache_key(cfg)
        if key in seen or is_done(out, cfg):
            continue
        seen.add(key)
        print(f"[book {label}] caches for {cfg.backbone}/{cfg.dataset}/{cfg.finetune} ({time.time() - t0:.0f} s)",
              flush=True)
        prepare(cfg)


def toc_pages(root: Path) -> list[str]:
    """Every page the table of contents names (globs expanded), without suffix."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                pages.append(e["file"])
            if "glob" in e:
                pages.extend(sorted(str(p.relative_to(root).with_suffix("")) for p in root.glob(e["glob"])
                                    if p.suffix in (".ipynb", ".md")))
            walk(e.get("sections"))
            for part in e.get("parts", []):
                walk(part.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    return [re.sub(r"\.(md|ipynb)$", "", p) for p in pages]


def check_html(root: Path) -> list[str]:
    """Every toc page rendered, and none shows an error output or a traceback."""
    html = root / "_build" / "html"
    problems = []
    for page in toc_pages(root):
        f = html / f"{page}.html"
        if not f.is_file():
            problems.append(f"page {page} was not rendered ({f} missing)")
            continue
        text = f.read_text(errors="replace")
        if "Traceback (most recent call last)" in text or re.search(r'class="[^"]*output[^"]*error', text):
            problems.append(f"page {page} shows an error output or a traceback")
    return problems


def local_mathjax(root: Path) -> bool:
    """Put MathJax into _static/ so the book's equations render without internet; False when npm cannot get it."""
    import hashlib
    import tarfile
    import tempfile

    dst = root / "_static" / "mathjax" / "tex-svg.js"
    if dst.is_file() and hashlib.sha256(dst.read_bytes()).hexdigest() == MATHJAX[2]:
        return True
    npm = shutil.which("npm")
    if not npm:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        try:
            r = subprocess.run([npm, "pack", MATHJAX[0], "--silent"], cwd=tmp, capture_output=True, timeout=180,
                               check=False)
        except subprocess.TimeoutExpired:
            return False
        tgz = next(Path(tmp).glob("mathjax-*.tgz"), None)
        if r.returncode or tgz is None:
            return False
        with tarfile.open(tgz) as tf:
            data = tf.extractfile(MATHJAX[1]).read()
    if hashlib.sha256(data).hexdigest() != MATHJAX[2]:
        raise BuildError(f"{MATHJAX[0]} {MATHJAX[1]} does not have the pinned SHA-256")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)
    return True


def book_config(root: Path) -> Path:
    """_config.yml, plus the local MathJax when it could be had."""
    if not local_mathjax(root):
        print("[book] npm could not fetch MathJax: equations will load MathJax from its CDN when the book is read")
        return root / "_config.yml"
    cfg = yaml.safe_load((root / "_config.yml").read_text())
    cfg.setdefault("sphinx", {}).setdefault("config", {})["mathjax_path"] = "mathjax/tex-svg.js"
    out = root / "_build" / "_config.local.yml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def training_runs(prof: dict, root: Path) -> list[tuple[str, Config, Path]]:
    """(name, config, run folder) of every run of a profile, ablations included."""
    runs_dir = root / "runs" / prof["name"]
    todo = [(run_name(c), c, runs_dir / run_name(c)) for c in prof["runs"]]
    return todo + [(name, c, runs_dir / "ablations" / name) for name, c in prof["ablation_runs"]]


def plan(profile: str, root: str | Path = ".", overrides: dict | None = None) -> list[str]:
    """One self-contained `ladnn train` command per run of the profile that is not complete yet, to run from the
    repository root on any machine that shares the `runs/` folder (a SLURM job array, say)."""
    import shlex

    from ladnn.cli import config_args
    from ladnn.rundir import is_done

    root = Path(root).resolve()
    prof = load_profile(profile, root, overrides)
    return [shlex.join(["ladnn", "train", *config_args(cfg), "--out", str(out.relative_to(root)), "--overwrite"])
            for _, cfg, out in training_runs(prof, root) if not is_done(out, cfg)]


def build(profile: str = "quick", root: str | Path = ".", only_notebooks: bool = False, jobs: int = 2,
          overrides: dict | None = None) -> Path:
    root = Path(root).resolve()
    prof = load_profile(profile, root, overrides)
    for backbone, why in (prof.get("left_out") or {}).items():
        print(f"[book {prof['name']}] {backbone} left out: {why}", flush=True)
    from ladnn.data import DataError, data_dir

    try:
        print(f"[book {prof['name']}] data: {data_dir()}")
    except DataError as e:
        raise BuildError(str(e)) from None
    gen = root / "book" / "_generated"
    runs_dir = root / "runs" / prof["name"]
    os.environ.setdefault("TQDM_DISABLE", "1")  # the notebooks print one line per epoch instead of bars
    t0 = time.time()
    shutil.rmtree(gen, ignore_errors=True)  # never mix one profile's pages with another's
    (gen / "train").mkdir(parents=True)
    (gen / "profile.json").write_text(json.dumps({"profile": prof["name"], "description": prof["description"],
                                                  "runs": [run_name(c) for c in prof["runs"]]}, indent=2))
    todo = training_runs(prof, root)
    print(f"[book {prof['name']}] {len(todo)} training runs", flush=True)
    if jobs > 1:
        prepare_caches(todo, t0, prof["name"])
    execute_all([(f"run {name}", root / "notebooks" / "train.ipynb", gen / "train" / f"{name}.ipynb",
                  {**cfg.to_dict(), "out": str(out.relative_to(root))}) for name, cfg, out in todo],
                root, jobs, t0, prof["name"])
    for name, _, out in todo:
        if status(out) != "complete":
            raise BuildError(f"training notebook for {name} finished but {out} is not a complete run")
    params = {"profile": prof["name"], "runs_dir": str(runs_dir.relative_to(root)),
              "gradcam_images": prof.get("gradcam_images", 6)}
    execute_all([(f"notebook {nb}", root / "notebooks" / f"{nb}.ipynb", gen / f"{nb}.ipynb", params)
                 for nb in ANALYSIS], root, jobs, t0, prof["name"])
    if only_notebooks:
        return gen
    print(f"[book {prof['name']}] jupyter-book build ({time.time() - t0:.0f} s)", flush=True)
    jb = shutil.which("jupyter-book", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if not jb:
        raise BuildError("jupyter-book is not installed: pip install -e '.[book]'")
    r = subprocess.run([jb, "build", str(root), "--config", str(book_config(root)), "--builder", "html", "-W", "-n",
                        "--keep-going"], cwd=root, check=False)
    if r.returncode:
        raise BuildError(f"jupyter-book build failed (exit {r.returncode}); see the messages above")
    problems = check_html(root)
    if problems:
        raise BuildError("the built book has problems:\n  " + "\n  ".join(problems))
    index = root / "_build" / "html" / "index.html"
    print(f"[book {prof['name']}] done in {time.time() - t0:.0f} s: {index}", flush=True)
    return index


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ladnn.book", description=__doc__)
    ap.add_argument("--profile", default="quick", help="profile name in profiles/ or a YAML path (default: quick)")
    ap.add_argument("--root", default=".", help="the repository root (holds _toc.yml)")
    ap.add_argument("--notebooks-only", action="store_true", help="execute the notebooks, skip jupyter-book")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="notebooks executed side by side (default: 2, or 1 on one core); on a machine with several "
                         "GPUs each gets one of its own")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="replace a Config field in every run, e.g. --set device=cpu --set limit=8 (a dry run)")
    ap.add_argument("--plan", action="store_true",
                    help="print one `ladnn train` command per run not yet complete, for a scheduler; train nothing")
    a = ap.parse_args(argv)
    try:
        if a.plan:
            print("\n".join(plan(a.profile, a.root, parse_overrides(a.set))))
            return 0
        build(a.profile, a.root, a.notebooks_only, max(1, a.jobs), parse_overrides(a.set))
    except BuildError as e:
        print(f"book build failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
