"""Profiles: the YAML files in profiles/ that list a book's runs. Loading one checks every run's config; `--set`
replaces fields in every run; `training_runs` names each run's folder; `plan` prints the commands of the runs not yet
complete, for a scheduler. The book (ladnn.book) and the benchmarks read profiles only through this module."""
from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path

import yaml

from ladnn.config import (
    METHOD_NAMES,
    Config,
    ConfigError,
    check_key,
    config_args,
    field_names,
    parse_value,
    shown_value,
)


class BuildError(RuntimeError):
    """A profile, notebook or book build that cannot go on; the message says why."""


LOCAL_TOC = "_build/_toc.local.yml"  # a profile's book made of part of _toc.yml (the `pages` key): ladnn.book writes it


def toc_pages(root: Path, full: bool = False) -> list[str]:
    """Every page of the book last built (its table of contents: the profile's own when it keeps only some pages,
    else _toc.yml), globs expanded, without suffix; `full`: every page of _toc.yml."""
    local = root / LOCAL_TOC
    toc = yaml.safe_load((root / ("_toc.yml" if full or not local.is_file() else LOCAL_TOC)).read_text())
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


PROFILE_KEYS = ("base", "description", "matrix", "config", "backbone_config", "optional_backbones", "gradcam_images",
                "ablations", "lab", "pages")
ABLATION_KEYS = ("seeds", "variants")
LAB_KEYS = ("seeds", "fractions", "weightings", "diagnostic_seeds")


def read_yaml(path: Path) -> dict:
    """A YAML mapping; a syntax error names the file, line and column, and an empty file or one that is not a
    mapping is an error naming the file."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise BuildError(f"{where}: invalid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(data, dict):
        raise BuildError(f"{path}: expected a YAML mapping of profile keys, got "
                         f"{'an empty file' if data is None else type(data).__name__}")
    return data


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BuildError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _config(d: dict, where: str) -> Config:
    try:
        return Config.from_dict(d, where)
    except ConfigError as e:
        raise BuildError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None


OPTIONAL_FLAG = "--with-optional-backbones"


def load_profile(name: str, root: Path, overrides: dict | None = None, optional: bool = False) -> dict:
    """A profile YAML: `matrix` (lists crossed into runs), `config` (Config fields shared by every run),
    `backbone_config` (fields for one backbone only, such as `pretrained: false`), `optional_backbones` (joined to the
    matrix only when asked for, with `optional`, and then only where their ImageNet weights resolve: so a profile
    trains the same runs with or without a network unless asked otherwise), `ablations` and notebook options. `overrides` (the runner's
    `--set`) replace fields of every run, ablations included. Every key is checked: an unknown one, anywhere, is an
    error naming it and the nearest valid key, and every backbone must be a timm model."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else root / "profiles" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (root / "profiles").glob("*.yaml"))
        raise BuildError(f"no profile {name!r} ({path}); known profiles: {known}")
    prof = read_yaml(path)
    if "base" in prof:  # another profile's keys, each replaced whole by this one's
        base = prof["base"]
        if not isinstance(base, str) or base == path.stem:
            raise BuildError(f"{path}: base: expected the name of another profile, got {base!r}")
        base_path = root / "profiles" / f"{base}.yaml"
        if not base_path.is_file():
            raise BuildError(f"{path}: base: no profile {base!r} ({base_path})")
        parent = read_yaml(base_path)
        if "base" in parent:
            raise BuildError(f"{path}: base: {base_path} has a base of its own; one level only")
        prof = {**parent, **{k: v for k, v in prof.items() if k != "base"}}
    try:
        for k in prof:
            check_key(k, PROFILE_KEYS, str(path))
        if "matrix" not in prof:
            raise BuildError(f"{path}: a profile needs a 'matrix' (lists of Config fields crossed into runs)")
        matrix = dict(_mapping(prof["matrix"], f"{path}: matrix"))
        for k, v in matrix.items():
            check_key(k, field_names(), f"{path}: matrix")
            if not isinstance(v, list) or not v:
                raise BuildError(f"{path}: matrix.{k}: expected a non-empty list, got {v!r}")
        shared = _mapping(prof.get("config"), f"{path}: config")
        per_backbone = _mapping(prof.get("backbone_config"), f"{path}: backbone_config")
        abl = _mapping(prof.get("ablations"), f"{path}: ablations")
        for k in abl:
            check_key(k, ABLATION_KEYS, f"{path}: ablations")
        lab = _mapping(prof.get("lab"), f"{path}: lab")
        for k in lab:
            check_key(k, LAB_KEYS, f"{path}: lab")
        if "pages" in prof:
            prof["pages"] = book_pages(prof["pages"], root, f"{path}: pages")
    except ConfigError as e:
        raise BuildError(str(e)) from None
    prof["name"] = path.stem
    from ladnn.models import WeightsError, check_backbone

    for b in [*matrix.get("backbone", []), *(prof.get("optional_backbones") or []), *per_backbone]:
        try:
            check_backbone(str(b))
        except WeightsError as e:
            raise BuildError(f"{path}: {e}") from None
    extra = prof.get("optional_backbones") or []
    if extra and not optional:  # what a profile trains never depends on the network
        prof["left_out"] = {b: f"optional; joins only with {OPTIONAL_FLAG} (where its ImageNet weights resolve)"
                            for b in extra}
    elif extra:
        from ladnn.models import weights_available

        found = {b: weights_available(b) for b in extra}
        prof["left_out"] = {b: why for b, (ok, why) in found.items() if not ok}
        prof["joined"] = {b: why for b, (ok, why) in found.items() if ok}
        matrix["backbone"] = list(matrix["backbone"]) + [b for b, (ok, _) in found.items() if ok]
    keys = list(matrix)
    runs = []
    for values in itertools.product(*(matrix[k] for k in keys)):
        point = dict(zip(keys, values))
        extra = _mapping(per_backbone.get(point.get("backbone")), f"{path}: backbone_config.{point.get('backbone')}")
        runs.append(_config({**shared, **extra, **point, **(overrides or {})}, str(path)))  # validates every field
    prof["runs"] = runs
    variants = _mapping(abl.get("variants"), f"{path}: ablations.variants")
    prof["ablation_runs"] = [
        (f"ablation-{name}-s{seed}",
         _config({**runs[0].to_dict(), **_mapping(change, f"{path}: ablations.variants.{name}"), "method": "ladnn",
                  "seed": seed, **(overrides or {})}, f"{path}: ablations.variants.{name}"))
        for name, change in variants.items() for seed in abl.get("seeds", [0])]
    prof["lab_runs"] = lab_runs(lab, runs[0], overrides, f"{path}: lab") if lab else []
    return prof


def book_pages(pages, root: Path, where: str) -> list[str]:
    """A profile's `pages`: the pages of _toc.yml its book keeps, in this order, the first one its front page (the
    class profile's book is the multi-task chapter and the lab). Each must be _toc.yml's root or one of its chapters;
    a chapter's sections (the run pages under Training runs) go with it."""
    if not isinstance(pages, list) or not pages or not all(isinstance(p, str) for p in pages):
        raise BuildError(f"{where}: expected a non-empty list of pages of _toc.yml, got {pages!r}")
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    known = [toc["root"], *(e["file"] for e in toc.get("chapters", []) if "file" in e)]
    for page in pages:
        if page not in known:
            raise BuildError(f"{where}: {page!r} is not the root or a chapter of _toc.yml ({', '.join(known)})")
    return pages


def lab_runs(lab: dict, first: Config, overrides: dict | None, where: str) -> list[tuple[str, Config]]:
    """The multi-task lab's runs (book chapter "Multi-task lab"), each the profile's first recipe with one change:
    - `fractions` x both methods x `seeds`: the learning curves (`train_fraction`; the whole split is the matrix's);
    - `weightings` x `seeds`: LA-DNN with another way of combining the tasks (`task_weighting`);
    - `diagnostic_seeds`: LA-DNN on the whole split recording its tasks' gradients (`grad_diagnostics`)."""
    seeds = lab.get("seeds", [0])
    base = first.to_dict()
    todo = [(f"lab-ladnn-gradients-s{s}", {"method": "ladnn", "grad_diagnostics": True, "seed": s})
            for s in lab.get("diagnostic_seeds", [])]  # the longest first: two jobs then end together
    for kind in lab.get("weightings", []):
        todo += [(f"lab-ladnn-{kind}-s{s}", {"method": "ladnn", "task_weighting": kind, "seed": s}) for s in seeds]
    for frac in sorted(lab.get("fractions", []), reverse=True):
        for method in ("baseline", "ladnn"):
            todo += [(f"lab-{method}-f{round(float(frac) * 100):03d}-s{s}", {"method": method, "train_fraction": frac,
                                                                           "seed": s}) for s in seeds]
    return [(name, _config({**base, **change, **(overrides or {})}, where)) for name, change in todo]


def parse_overrides(items: list[str]) -> dict:
    """`KEY=VALUE` strings into Config fields, each VALUE parsed by its field's type (`ladnn.config.parse_value`:
    8, 1e-3, false, [AirBr])."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise BuildError(f"--set {item!r}: expected FIELD=VALUE with a Config field ({', '.join(field_names())})")
        try:
            out[key] = parse_value(key, value)
        except ConfigError as e:
            raise BuildError(f"--set {item!r}: {e}") from None
    return out


def run_name(cfg: Config) -> str:
    return f"{cfg.backbone}-{cfg.dataset.replace('+', '')}-{cfg.method}-s{cfg.seed}"


# fields a run page's title never names as a variant: the title names them itself, or they say where a run is written
_TITLED = {"backbone", "method", "dataset", "seed"}


def run_title(cfg: Config, base: Config | None = None) -> str:
    """A run page's title: method, backbone, dataset and seed, then each field that differs from `base` (the
    profile's first run of the same backbone and dataset), e.g. "LA-DNN, tf_efficientnet_lite0, D0, seed 0:
    covid_weight 1.0"."""
    title = f"{METHOD_NAMES.get(cfg.method, cfg.method)}, {cfg.backbone}, {cfg.dataset}, seed {cfg.seed}"
    if base is None:
        return title
    mine, theirs = cfg.to_dict(), base.to_dict()
    changed = [f"{k} {shown_value(v, '+')}" for k, v in mine.items() if k not in _TITLED and theirs.get(k) != v]
    return title + (": " + ", ".join(changed) if changed else "")


def run_titles(prof: dict, root: Path) -> dict[str, str]:
    """The title of every run of a profile (`training_runs`'s names), each against the first matrix run of its
    backbone and dataset."""
    firsts = {}
    for c in prof["runs"]:
        firsts.setdefault((c.backbone, c.dataset), c)
    return {name: run_title(cfg, firsts.get((cfg.backbone, cfg.dataset), prof["runs"][0]))
            for name, cfg, _ in training_runs(prof, root)}


def training_runs(prof: dict, root: Path) -> list[tuple[str, Config, Path]]:
    """(name, config, run folder) of every run of a profile, ablations and the lab's runs included."""
    from ladnn.rundir import profile_dirs

    where = profile_dirs(root, prof["name"])
    todo = [(run_name(c), c, where["matrix"] / run_name(c)) for c in prof["runs"]]
    todo += [(name, c, where["ablations"] / name) for name, c in prof["ablation_runs"]]
    return todo + [(name, c, where["lab"] / name) for name, c in prof.get("lab_runs", [])]


def check_claim_settings() -> None:
    """The claims' stale limit ($LADNN_CLAIM_STALE_S, `ladnn.rundir.stale_after`), checked before a plan or a build
    does anything: a BuildError naming the variable."""
    from ladnn.rundir import stale_after

    try:
        stale_after()
    except ValueError as e:
        raise BuildError(str(e)) from None


def plan(profile: str, root: str | Path = ".", overrides: dict | None = None, optional: bool = False) -> list[str]:
    """One self-contained `ladnn train` command per run of the profile that is neither complete nor being trained
    (a claim with a recent heartbeat, `ladnn.rundir.Claim`), for any machine that shares the `runs/` folder (a SLURM
    job array, say). The run folder and the data folder are absolute, so a command runs from any directory. A command
    run again, or after its run was finished elsewhere, exits 0 and trains nothing (`--skip-done`); it carries
    `--overwrite` only where a finished run with another config is to be replaced."""
    import shlex

    from ladnn.data import data_dir
    from ladnn.rundir import is_done, read_claim, read_status

    check_claim_settings()
    root = Path(root).resolve()
    prof = load_profile(profile, root, overrides, optional)
    data = str(data_dir().resolve())
    lines = []
    for _, cfg, out in training_runs(prof, root):
        if is_done(out, cfg):
            continue
        claim = read_claim(out)
        if claim and claim["live"]:
            print(f"plan: {out} left out: being trained (host {claim.get('host', '?')}, pid {claim.get('pid', '?')}, "
                  f"heartbeat {claim['age']:.0f} s ago)", file=sys.stderr)
            continue
        state, why = read_status(out)
        if state == "damaged":  # listed again, and the file it could not read is named
            print(f"plan: {out} is listed again: {why}", file=sys.stderr)
        replace = ["--overwrite"] if state == "complete" else []  # finished with another config
        lines.append(shlex.join(["ladnn", "train", *config_args(cfg), "--data-dir", data, "--out", str(out),
                                 "--skip-done", *replace]))
    return lines
