"""Build the book for a profile: papermill runs the training notebook once per run and then the analysis notebooks
into book/_generated/, and `jupyter-book build` renders them without executing anything again. The pieces live in
`ladnn.profiles` (what to train), `ladnn.runner` (executing notebooks) and `ladnn.pages` (checking the pages)."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ladnn.pages import book_config, check_html, retitle, runs_index, write_toc
from ladnn.profiles import (
    OPTIONAL_FLAG,
    BuildError,
    check_claim_settings,
    load_profile,
    parse_overrides,
    plan,
    run_name,
    run_titles,
    training_runs,
)
from ladnn.rundir import profile_dirs, scan_runs, unreadable
from ladnn.runner import execute_all, prepare_caches

# Validity first: it is the longest (it scores every run again), and the others fit beside it on the other core.
ANALYSIS = ("validity", "sources", "data", "results", "gradcam", "pairplot", "reproduction", "lab")


def build(profile: str = "quick", root: str | Path = ".", only_notebooks: bool = False, jobs: int = 2,
          overrides: dict | None = None, optional: bool = False) -> Path:
    root = Path(root).resolve()
    check_claim_settings()
    prof = load_profile(profile, root, overrides, optional)
    print(f"[book {prof['name']}] {device_line(prof)}", flush=True)
    for backbone, why in (prof.get("joined") or {}).items():
        print(f"[book {prof['name']}] {backbone} joins ({OPTIONAL_FLAG}): weights from {why}", flush=True)
    for backbone, why in (prof.get("left_out") or {}).items():
        print(f"[book {prof['name']}] {backbone} left out: {why}", flush=True)
    from ladnn.data import DataError, data_dir

    try:
        print(f"[book {prof['name']}] data: {data_dir()}")
    except DataError as e:
        raise BuildError(str(e)) from None
    gen = root / "book" / "_generated"
    where = profile_dirs(root, prof["name"])
    runs_dir = where["matrix"]
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
    missing = [f"{name}: {e}" for name, _, out in todo if (e := unreadable(out))]
    if missing:  # a run the book needs: the build stops, naming each
        raise BuildError("runs the book needs are not complete:\n  " + "\n  ".join(missing))
    titles = run_titles(prof, root)
    for name, _, _ in todo:
        retitle(gen / "train" / f"{name}.ipynb", titles[name])
    (gen / "runs.md").write_text(runs_index([(name, titles[name], out) for name, _, out in todo]))
    from ladnn.report.lesson import write_pages

    write_pages(gen, runs_dir, root)  # the exercises of the multi-task chapter and the class's timings
    for line in [x for d in where.values() for x in scan_runs(d)[1]]:  # not in this profile: left out
        print(f"[book {prof['name']}] skipped (not read): {line}", flush=True)
    params = {"profile": prof["name"], "runs_dir": str(runs_dir.relative_to(root)),
              "gradcam_images": prof.get("gradcam_images", 6)}
    toc = write_toc(root, prof.get("pages"))  # a profile with `pages` builds only those (the class book)
    chapters = [nb for nb in ANALYSIS if "pages" not in prof or f"book/_generated/{nb}" in prof["pages"]]
    execute_all([(f"notebook {nb}", root / "notebooks" / f"{nb}.ipynb", gen / f"{nb}.ipynb", params)
                 for nb in chapters], root, jobs, t0, prof["name"])
    if only_notebooks:
        return gen
    print(f"[book {prof['name']}] jupyter-book build ({time.time() - t0:.0f} s)", flush=True)
    jb = shutil.which("jupyter-book", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if not jb:
        raise BuildError("jupyter-book is not installed: pip install -e '.[book]'")
    r = subprocess.run([jb, "build", str(root), "--config", str(book_config(root)), "--toc", str(toc), "--builder",
                        "html", "-W", "-n", "--keep-going"], cwd=root, check=False)
    if r.returncode:
        raise BuildError(f"jupyter-book build failed (exit {r.returncode}); see the messages above")
    problems = check_html(root)
    if problems:
        raise BuildError("the built book has problems:\n  " + "\n  ".join(problems))
    index = root / "_build" / "html" / "index.html"
    print(f"[book {prof['name']}] done in {time.time() - t0:.0f} s: {index}", flush=True)
    return index


def device_line(prof: dict) -> str:
    """The device the profile's runs will use and its precision (ladnn.infer.describe); a device the profile names
    that this machine lacks stops the build here, before anything is trained."""
    from ladnn.infer import describe, use_device

    names = sorted({c.device for c in prof["runs"]})
    try:
        return "; ".join(describe(use_device(n)) for n in names)
    except RuntimeError as e:
        raise BuildError(f"profile {prof['name']}: {e}") from None


def default_jobs() -> int:
    """Notebooks side by side: 2 on a CPU (or 1 on one core); on a GPU machine, up to 8, two CPU cores each. A run
    on a GPU spends most of its time starting, decoding, scoring and writing on the CPU (README, "Time on a GPU"),
    so several runs share one GPU and keep it busy."""
    from ladnn.runner import gpu_count

    cores = os.cpu_count() or 1
    return max(1, min(8, cores // 2)) if gpu_count() else min(2, cores)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ladnn.book", description=__doc__)
    ap.add_argument("--profile", default="quick", help="profile name in profiles/ or a YAML path (default: quick)")
    ap.add_argument("--root", default=".", help="the repository root (holds _toc.yml)")
    ap.add_argument("--notebooks-only", action="store_true", help="execute the notebooks, skip jupyter-book")
    ap.add_argument("--jobs", type=int, default=None,
                    help="notebooks executed side by side (default: 2 on a CPU, or 1 on one core; on a GPU machine "
                         "half its cores, at most 8, sharing the GPU); on a machine with several GPUs each gets one "
                         "of its own")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="replace a Config field in every run, e.g. --set device=cpu --set limit=8 (a dry run)")
    ap.add_argument(OPTIONAL_FLAG, dest="optional", action="store_true",
                    help="let the profile's optional backbones join where their ImageNet weights resolve (the model "
                         "hub, $LADNN_WEIGHTS_DIR or its local cache); without it a profile trains the same runs on "
                         "any machine")
    ap.add_argument("--plan", action="store_true",
                    help="print one `ladnn train` command per run not yet complete, for a scheduler; train nothing")
    a = ap.parse_args(argv)
    try:
        if a.plan:
            print("\n".join(plan(a.profile, a.root, parse_overrides(a.set), a.optional)))
            return 0
        jobs = default_jobs() if a.jobs is None else max(1, a.jobs)
        build(a.profile, a.root, a.notebooks_only, jobs, parse_overrides(a.set), a.optional)
    except BuildError as e:
        print(f"book build failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
