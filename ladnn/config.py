"""One flat config for a training run. The command line's `train` options and the `parameters` cell of
notebooks/train.ipynb are both derived from these fields (`python -m ladnn.config` rewrites that cell)."""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LESIONS = ("GGO", "Csld", "CrPa", "AirBr", "InSepThi")
TASKS = ("COVID",) + LESIONS  # output column order of an LA-DNN model
METHODS = ("ladnn", "baseline")
DATASETS = ("D0", "D0+D1")
FINETUNE = ("full", "head", "top")
HEADS = ("linear", "fc3")
LESION_MASKS = ("any_lesion", "positives", "none")
REDUCTIONS = ("mean", "per_image")
PROTOCOLS = ("official", "grouped", "collection")
PREPROCESS = ("crop", "gray", "clahe", "jpeg")  # applied in this order (ladnn.images.preprocess)
AUGMENTS = ("paper", "strong")
TTA_SEED = 4321  # default seed of the test-time views (Config.tta_seed)
PAPER_COVID_WEIGHT = 5.0  # the paper code's weight of the COVID term (Section 2.2; Code/train.py)
SHORT_BACKBONES = ("vgg16, resnet18, resnet50, densenet121, densenet169, efficientnet_b0, efficientnet_b1, "
                   "efficientnet_lite0")


def _f(default: Any, help: str, choices: tuple | None = None, *, cache: bool) -> Any:
    """A config field with its help text, allowed values and `cache` as metadata. `cache` must be given for every
    field: True when the field changes what the frozen part of the network sees or computes (the decoded images, the
    cached activations, the test-time views), so runs that differ in it never share a cache (`cache_key`). A list
    field is given `[]` and starts empty in every Config."""
    meta = {"help": help, "choices": choices, "cache": cache}
    if isinstance(default, list):
        if default:
            raise ValueError("a list field starts empty")
        return field(default_factory=list, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    """Defaults follow the paper's released code (Code/train.py): Adam, lr 5e-5, wd 5e-4, 15 epochs, batch 32."""

    backbone: str = _f("efficientnet_lite0", f"short name ({SHORT_BACKBONES}) or any timm model name", cache=True)
    method: str = _f("ladnn", "ladnn: COVID + 5 lesion outputs; baseline: COVID only", METHODS, cache=False)
    dataset: str = _f("D0", "D0 (the paper's split) or D0+D1 (with the new data found)", DATASETS, cache=True)
    seed: int = _f(0, "random seed (initialisation, batch order, augmentation)", cache=False)
    epochs: int = _f(15, "training epochs", cache=False)
    batch_size: int = _f(32, "batch size", cache=False)
    lr: float = _f(5e-5, "Adam learning rate", cache=False)
    weight_decay: float = _f(5e-4, "Adam weight decay", cache=False)
    finetune: str = _f("full", "full: whole network (paper code); head: frozen backbone (paper text); top: the last "
                               "`top_blocks` blocks and the head", FINETUNE, cache=True)
    top_blocks: int = _f(2, "blocks trained when finetune is top", cache=True)
    views: int = _f(4, "augmented views per training image cached when finetune is head or top", cache=True)
    tta: int = _f(1, "test-time augmentation: average the logits of the plain image and tta - 1 augmented views "
                     "(validation and test)", cache=True)
    tta_seed: int = _f(TTA_SEED, "seed of the test-time views: an image's views depend only on it and the image's "
                                 "pixels (ladnn.infer), never on the other images scored with it", cache=True)
    head: str = _f("linear", "linear (paper code) or fc3 (three FC layers, paper Figure 2)", HEADS, cache=False)
    covid_weight: float = _f(PAPER_COVID_WEIGHT, "weight w of the COVID loss term (paper Section 2.2)", cache=False)
    lesion_mask: str = _f("any_lesion", "which samples get lesion loss terms (any_lesion: the paper code's rule)",
                          LESION_MASKS, cache=False)
    loss_reduction: str = _f("mean", "mean: the loss divided by N x 6 entries (paper code); per_image: by N",
                             REDUCTIONS, cache=False)
    protocol: str = _f("official", "official: the dataset's own split; grouped: cross-validation with no patient or "
                                   "document on both sides; collection: each negative collection held out whole "
                                   "(ladnn.sources)", PROTOCOLS, cache=True)
    folds: int = _f(5, "protocol grouped: number of folds; collection: the number of negative collections",
                    cache=False)
    fold: int = _f(0, "grouped or collection: the test fold (ladnn.sources.fold_splits)", cache=False)
    # _f returns dataclasses.field(default_factory=list) for a list: a fresh list per Config, hence the noqa
    preprocess: list[str] = _f([], "input pipeline against shortcuts, applied in this order: crop (to the body), "  # noqa: RUF009
                                   "gray, clahe (contrast-limited histogram equalisation), jpeg (every image "
                                   "re-encoded at quality 75)", PREPROCESS, cache=True)
    augment: str = _f("paper", "paper: the paper code's flip, scale and tiny shear; strong: adds rotation, shift, "
                               "brightness and contrast", AUGMENTS, cache=True)
    zero_lesions: list[str] = _f([], "ablation: train with these lesion labels set to 0", LESIONS, cache=False)  # noqa: RUF009
    pretrained: bool = _f(True, "start from ImageNet weights (no: random initialisation)", cache=True)
    weights: str | None = _f(None, "ImageNet weights file for the backbone", cache=True)
    limit: int | None = _f(None, "use at most this many images per split (tests, smoke runs)", cache=True)
    device: str = _f("auto", "auto, cpu or cuda", cache=True)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            allowed, value = f.metadata["choices"], getattr(self, f.name)
            bad = [v for v in (value if isinstance(value, list) else [value]) if allowed and v not in allowed]
            if bad:
                raise ValueError(f"config field {f.name!r}: {bad[0]!r} is not one of {allowed}")
        if self.epochs < 1 or self.batch_size < 1 or self.views < 1 or self.tta < 1:
            raise ValueError("config fields 'epochs', 'batch_size', 'views' and 'tta' must be >= 1")
        if self.folds < 3 or not 0 <= self.fold < self.folds:
            raise ValueError(f"config fields 'folds' (>= 3) and 'fold' (0..folds-1): got folds={self.folds}, "
                             f"fold={self.fold}")

    @property
    def tasks(self) -> tuple[str, ...]:
        return TASKS if self.method == "ladnn" else ("COVID",)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        unknown = set(d) - set(field_names())
        if unknown:
            raise ValueError(f"unknown config field(s): {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def from_namespace(cls, ns: dict) -> Config:
        """The fields found in a namespace, such as a notebook's globals after papermill filled the parameters."""
        return cls(**{k: ns[k] for k in field_names() if k in ns})

    @classmethod
    def load(cls, path: str | Path) -> Config:
        return cls.from_dict(json.loads(Path(path).read_text()))


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
