"""One flat config for a training run. The command line's `train` options and the `parameters` cell of
notebooks/train.ipynb are both derived from these fields (`python -m ladnn.config` rewrites that cell)."""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import json
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LESIONS = ("GGO", "Csld", "CrPa", "AirBr", "InSepThi")
TASKS = ("COVID",) + LESIONS  # output column order of an LA-DNN model
METHODS = ("ladnn", "baseline")
METHOD_NAMES = {"baseline": "baseline", "ladnn": "LA-DNN"}  # how pages and titles name the methods
DATASETS = ("D0", "D0+D1")
FINETUNE = ("full", "head", "top")
HEADS = ("linear", "fc3")
LESION_MASKS = ("any_lesion", "positives", "none")
REDUCTIONS = ("mean", "per_image")
PROTOCOLS = ("official", "grouped", "collection")
PREPROCESS = ("unmark", "crop", "lungcrop", "gray", "window", "clahe", "jpeg")  # in this order (ladnn.images.preprocess)
AUGMENTS = ("paper", "strong")
# How the task losses are combined into one update (ladnn.mtl): the paper's fixed weighted sum, uncertainty weighting
# (Kendall, Gal and Cipolla, CVPR 2018), or a Jacobian-descent aggregator of the per-task gradients from torchjd.
TASK_WEIGHTINGS = ("fixed", "uncertainty", "upgrad", "mgda", "pcgrad", "cagrad", "nashmtl")
TTA_SEED = 4321  # default seed of the test-time views (Config.tta_seed)
PAPER_COVID_WEIGHT = 5.0  # the paper code's weight of the COVID term (Section 2.2; Code/train.py)
# Our short names of backbones and the timm weights each stands for: the paper's seven, mapped to the timm weights
# closest to what it used (our guess, recorded in the column `suggested_timm_name` of
# ladnn/resources/paper_table2.csv; the paper names no weights), and EfficientNet-Lite0. Any other timm name is used
# as it is.
PAPER_SEVEN = {
    "vgg16": "vgg16.tv_in1k",
    "resnet18": "resnet18.tv_in1k",
    "resnet50": "resnet50.tv_in1k",
    "densenet121": "densenet121.tv_in1k",
    "densenet169": "densenet169.tv_in1k",
    "efficientnet_b0": "tf_efficientnet_b0.in1k",
    "efficientnet_b1": "tf_efficientnet_b1.in1k",
}
TIMM_WEIGHTS = {**PAPER_SEVEN, "efficientnet_lite0": "efficientnet_lite0.ra_in1k"}
# Research software, said once: the command line, the service, its page's JSON and the book's tables.
NOTICE = "Research software, not a medical device: never use it to diagnose anyone."


class ConfigError(ValueError):
    """A config value, key or file that cannot be used; the message names the field or key."""


def config_field(default: Any, help: str, choices: tuple | None = None, *, cache: bool, low: float | None = None,
       above: float | None = None) -> Any:
    """A config field with its help text, allowed values, range (`low` <= value, or `above` < value) and `cache` as
    metadata. `cache` must be given for every field: True when the field changes what the frozen part of the network
    sees or computes (the decoded images, the cached activations, the test-time views), so runs that differ in it
    never share a cache (`cache_key`). A list field is given `[]` and starts empty in every Config."""
    meta = {"help": help, "choices": choices, "cache": cache, "low": low, "above": above}
    if isinstance(default, list):
        if default:
            raise ValueError("a list field starts empty")
        return field(default_factory=list, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    """Defaults follow the paper's released code (Code/train.py): Adam, lr 5e-5, wd 5e-4, 15 epochs, batch 32."""

    backbone: str = config_field("efficientnet_lite0", f"short name ({', '.join(TIMM_WEIGHTS)}) or any timm model name", cache=True)
    method: str = config_field("ladnn", "ladnn: COVID + 5 lesion outputs; baseline: COVID only", METHODS, cache=False)
    dataset: str = config_field("D0", "D0 (the paper's split) or D0+D1 (with the new data found)", DATASETS, cache=True)
    seed: int = config_field(0, "random seed (initialisation, batch order, augmentation)", cache=False, low=0)
    epochs: int = config_field(15, "training epochs", cache=False, low=1)
    batch_size: int = config_field(32, "batch size", cache=False, low=1)
    lr: float = config_field(5e-5, "Adam learning rate", cache=False, above=0)
    weight_decay: float = config_field(5e-4, "Adam weight decay", cache=False, low=0)
    finetune: str = config_field("full", "full: whole network (paper code); head: frozen backbone (paper text); top: the last "
                               "`top_blocks` blocks and the head", FINETUNE, cache=True)
    top_blocks: int = config_field(2, "blocks trained when finetune is top", cache=True, low=0)
    views: int = config_field(4, "augmented views per training image cached when finetune is head or top", cache=True, low=1)
    tta: int = config_field(1, "test-time augmentation: average the logits of the plain image and tta - 1 augmented views "
                     "(validation and test)", cache=True, low=1)
    tta_seed: int = config_field(TTA_SEED, "seed of the test-time views: an image's views depend only on it and the image's "
                                 "pixels (ladnn.infer), never on the other images scored with it", cache=True)
    head: str = config_field("linear", "linear (paper code) or fc3 (three FC layers, paper Figure 2)", HEADS, cache=False)
    covid_weight: float = config_field(PAPER_COVID_WEIGHT, "weight w of the COVID loss term (paper Section 2.2)", cache=False,
                              above=0)
    lesion_mask: str = config_field("any_lesion", "which samples get lesion loss terms (any_lesion: the paper code's rule)",
                          LESION_MASKS, cache=False)
    loss_reduction: str = config_field("mean", "mean: the loss divided by N x 6 entries (paper code); per_image: by N",
                             REDUCTIONS, cache=False)
    protocol: str = config_field("official", "official: the dataset's own split; grouped: cross-validation with no patient or "
                                   "document on both sides; collection: each negative collection held out whole "
                                   "(ladnn.sources)", PROTOCOLS, cache=True)
    folds: int = config_field(5, "protocol grouped: number of folds (at least 3); collection: the number of negative "
                                 "collections of D0 (2)", cache=False, low=2)
    fold: int = config_field(0, "grouped or collection: the test fold (ladnn.sources.fold_splits)", cache=False, low=0)
    # _f returns dataclasses.field(default_factory=list) for a list: a fresh list per Config, hence the noqa
    preprocess: list[str] = config_field([], "input pipeline against shortcuts, applied in this order: unmark (drawn "  # noqa: RUF009
                                   "marks painted out, ladnn.marks), crop (to the body), lungcrop (to the lungs, "
                                   "ladnn.lung), gray, window (grey levels matched to a lung window), clahe "
                                   "(contrast-limited histogram equalisation), jpeg (every image re-encoded at "
                                   "quality 75)", PREPROCESS, cache=True)
    augment: str = config_field("paper", "paper: the paper code's flip, scale and tiny shear; strong: adds rotation, shift, "
                               "brightness and contrast", AUGMENTS, cache=True)
    task_weighting: str = config_field("fixed", "how the tasks are combined: fixed (the paper's weighted sum of its six terms: "
                                      "covid_weight, loss_reduction); or, over its two tasks (COVID, the lesions' "
                                      "sum; ladnn.mtl), uncertainty (learned weights, Kendall et al. 2018) or a "
                                      "torchjd aggregator of their gradients on the shared layers (upgrad, mgda, "
                                      "pcgrad, cagrad, nashmtl); ladnn only", TASK_WEIGHTINGS, cache=False)
    grad_diagnostics: bool = config_field(False, "record, every training step, the cosine and norm ratio of each lesion "
                                       "term's gradient to the COVID term's on the shared layers "
                                       "(grad_diagnostics.csv; ladnn only; six extra backward passes per step)",
                                cache=False)
    train_fraction: float = config_field(1.0, "share of the training patients used, drawn per class and nested: for one seed "
                                    "a smaller share's patients are among a larger one's (ladnn.data.train_subset)",
                               cache=False, above=0)
    zero_lesions: list[str] = config_field([], "ablation: train with these lesion labels set to 0", LESIONS, cache=False)  # noqa: RUF009
    pretrained: bool = config_field(True, "start from ImageNet weights (no: random initialisation)", cache=True)
    weights: str | None = config_field(None, "ImageNet weights file for the backbone", cache=True)
    limit: int | None = config_field(None, "use at most this many images per split, half of each class (tests, smoke runs; "
                                  "at least 2, and every split must keep both classes)", cache=True, low=2)
    device: str = config_field("auto", "auto, cpu or cuda", cache=True)

    def __post_init__(self) -> None:
        """Every field's type (from its annotation; an int is taken as a float), allowed values and range."""
        for f in dataclasses.fields(self):
            value = _typed(f.name, getattr(self, f.name))
            object.__setattr__(self, f.name, value)
            allowed, low, above = f.metadata["choices"], f.metadata["low"], f.metadata["above"]
            bad = [v for v in (value if isinstance(value, list) else [value]) if allowed and v not in allowed]
            if bad:
                raise ConfigError(f"config field {f.name!r}: {bad[0]!r} is not one of {allowed}")
            if value is not None and low is not None and value < low:
                raise ConfigError(f"config field {f.name!r}: {value!r} is below its minimum {low:g}")
            if value is not None and above is not None and value <= above:
                raise ConfigError(f"config field {f.name!r}: {value!r} must be above {above:g}")
        if self.train_fraction > 1:
            raise ConfigError(f"config field 'train_fraction': {self.train_fraction!r} is above its maximum 1")
        if self.method == "baseline" and (self.task_weighting != "fixed" or self.grad_diagnostics):
            field_ = "task_weighting" if self.task_weighting != "fixed" else "grad_diagnostics"
            raise ConfigError(f"config field {field_!r}: the baseline has one task; use method 'ladnn'")
        if not self.fold < self.folds:
            raise ConfigError(f"config field 'fold' must be below 'folds' ({self.folds}): got {self.fold}")
        if self.protocol == "grouped" and self.folds < 3:
            raise ConfigError(f"config field 'folds': grouped cross-validation needs at least 3 (test, validation, "
                              f"training); got {self.folds}")
        if self.protocol != "official" and self.dataset != "D0":
            raise ConfigError(f"config field 'dataset': protocol {self.protocol!r} draws its folds from D0 only; D1 "
                              f"stays external (protocol d scores it), so {self.dataset!r} is refused")

    @property
    def tasks(self) -> tuple[str, ...]:
        return TASKS if self.method == "ladnn" else ("COVID",)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> Config:
        """A Config from a mapping (a profile's entries, config.json); strings are parsed by the field's type
        (`parse_value`, so YAML's `2e-4` string is a float), and an unknown key is an error naming the nearest
        field. `where` names the source in errors."""
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a mapping of config fields, got {type(d).__name__}")
        for k in d:
            check_key(k, field_names(), where)
        return cls(**{k: parse_value(k, v) if isinstance(v, str) else v for k, v in d.items()})

    @classmethod
    def from_namespace(cls, ns: dict) -> Config:
        """The fields found in a namespace, such as a notebook's globals after papermill filled the parameters."""
        return cls.from_dict({k: ns[k] for k in field_names() if k in ns})

    @classmethod
    def load(cls, path: str | Path) -> Config:
        """config.json; an unreadable file or a bad field is an error naming the file."""
        try:
            d = json.loads(Path(path).read_text())
            return cls.from_dict(d, where=str(path))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: cannot read the config ({type(e).__name__}: {e})") from None
        except ConfigError as e:
            msg = str(e)
            raise ConfigError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None


def check_key(key: str, valid, where: str) -> None:
    """An unknown key is an error that names it, where it was found, and the nearest valid key."""
    valid = list(valid)
    if key not in valid:
        near = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
        hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys: {', '.join(valid)}"
        raise ConfigError(f"{where}: unknown key {key!r}{hint}")


@functools.cache
def field_types() -> dict[str, tuple[Any, bool]]:
    """Each field's annotated type, `X | None` read as X, and whether it may be None: what `Config` checks,
    `parse_value` parses and the command line's options take."""
    out = {}
    for name, kind in typing.get_type_hints(Config).items():
        optional = typing.get_origin(kind) in (typing.Union, types.UnionType)
        out[name] = (next(t for t in typing.get_args(kind) if t is not type(None)) if optional else kind, optional)
    return out


def _typed(name: str, value):
    """`value` checked against the field's annotation (an int for a float is converted); a ConfigError names the
    field."""
    kind, optional = field_types()[name]
    if value is None and optional:
        return None
    if typing.get_origin(kind) is list:
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, list) and all(isinstance(v, typing.get_args(kind)[0]) for v in value):
            return value
    elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, kind):
        return value
    raise ConfigError(f"config field {name!r}: expected {_kind_name(kind)}, got {value!r} "
                      f"({type(value).__name__})")


def _kind_name(kind) -> str:
    return kind.__name__ if isinstance(kind, type) else str(kind)


def parse_value(name: str, text: str):
    """A field's value from text (`--set FIELD=VALUE`, a profile's string): parsed by the field's annotated type,
    so `1e-3` is a float, `none` empties an optional field, and a list is `[a, b]` or `a,b`."""
    check_key(name, field_names(), "config")
    kind, optional = field_types()[name]
    t = text.strip()
    if optional and t.lower() in ("none", "null", ""):
        return None
    try:
        if typing.get_origin(kind) is list:
            inner = t[1:-1] if t.startswith("[") and t.endswith("]") else t
            return [v.strip().strip("'\"") for v in inner.split(",") if v.strip()]
        if kind is bool:
            low = t.lower()
            if low in ("true", "yes", "1", "on"):
                return True
            if low in ("false", "no", "0", "off"):
                return False
            raise ValueError(t)
        if kind is int:
            return int(t)
        if kind is float:
            return float(t)
    except ValueError:
        raise ConfigError(f"config field {name!r}: {text!r} is not a valid {_kind_name(kind)}") from None
    return text


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Config)]


def cache_fields() -> tuple[str, ...]:
    """The fields marked `cache=True`: what the image and activation caches depend on."""
    return tuple(f.name for f in dataclasses.fields(Config) if f.metadata["cache"])


def cache_key(cfg: Config) -> tuple:
    """The values of the `cache_fields`, and the seed when the network starts from random weights (its frozen lower
    part then differs per seed): runs with equal keys share their caches."""
    values = (getattr(cfg, k) for k in cache_fields())
    return tuple(tuple(v) if isinstance(v, list) else v for v in values) + (None if cfg.pretrained else cfg.seed,)


def parameters_cell() -> str:
    """The `parameters` cell of notebooks/train.ipynb: every field with its default and help, then the run folder."""
    lines = [f"{f.name} = {getattr(Config(), f.name)!r}  # {f.metadata['help']}" for f in dataclasses.fields(Config)]
    return "\n".join(lines + ['out = "runs/notebook/efficientnet_lite0-D0-ladnn-s0"  # run directory to write'])


def sync_notebook(path: str | Path) -> bool:
    """Rewrite the `parameters` cell of a notebook from `Config`; True when it changed."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    if cell.source == parameters_cell():
        return False
    cell.source = parameters_cell()
    nbformat.write(nb, path)
    return True


if __name__ == "__main__":  # python -m ladnn.config [NOTEBOOK]: after adding a field, update the training notebook
    nb_path = sys.argv[1] if len(sys.argv) > 1 else "notebooks/train.ipynb"
    print(f"{nb_path}: parameters cell {'rewritten' if sync_notebook(nb_path) else 'already matches Config'}")


# ---------------------------------------------------------------- the command line's options, from the fields
def add_config_options(p: argparse.ArgumentParser) -> None:
    """One option per `Config` field: the name with dashes, the default and choices from the dataclass, the help
    from the field's metadata; booleans get --x/--no-x, lists take several values."""
    default = Config()
    for f in dataclasses.fields(Config):
        kind, _ = field_types()[f.name]  # X | None -> X
        kw = {"help": f.metadata["help"], "default": getattr(default, f.name)}
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is list:
            kw.update(nargs="*", type=typing.get_args(kind)[0], metavar=f.name.upper().rstrip("S"))
        else:
            kw["type"] = kind
        if f.metadata["choices"]:
            kw["choices"] = f.metadata["choices"]
        p.add_argument(f"--{f.name.replace('_', '-')}", **kw)


def config_args(cfg: Config) -> list[str]:
    """The `ladnn train` options that give `cfg`, every field spelled out (so a command keeps its meaning if a default
    changes; only None and empty lists are left out): the inverse of `add_config_options`, for the book's `--plan`."""
    args = []
    for f in dataclasses.fields(Config):
        v, opt = getattr(cfg, f.name), f"--{f.name.replace('_', '-')}"
        if v is None or v == []:
            continue
        if isinstance(v, bool):
            args.append(opt if v else f"--no-{opt[2:]}")
        elif isinstance(v, list):
            args += [opt, *map(str, v)]
        else:
            args += [opt, str(v)]
    return args


def shown_value(v, sep: str = ", ") -> str:
    """How the book prints a config value (run pages, run titles): lists joined by `sep` ("none" when empty), None
    as "none"."""
    if isinstance(v, (list, tuple)):
        return sep.join(map(str, v)) or "none"
    return "none" if v is None else str(v)
