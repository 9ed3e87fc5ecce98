"""Profiles: the YAML files in profiles/ that list a book's runs. Loading one checks every run's config; `--set`
replaces fields in every run; `training_runs` names each run's folder; `plan` prints the commands of the runs not yet
complete, for a scheduler. The book (ladnn.book) and the benchmarks read profiles only through this module."""
from __future__ import annotations

import itertools
from pathlib import Path

import yaml

from ladnn.config import Config


class BuildError(RuntimeError):
    """A profile, notebook or book build that cannot go on; the message says why."""


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
