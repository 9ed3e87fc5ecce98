"""One flat config for a training run; mirrors the `parameters` cell of notebooks/train.ipynb."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

LESIONS = ("GGO", "Csld", "CrPa", "AirBr", "InSepThi")
TASKS = ("COVID",) + LESIONS  # output column order of an LA-DNN model
METHODS = ("ladnn", "baseline")
DATASETS = ("D0", "D0+D1")
FINETUNE = ("full", "head", "top")
LESION_MASKS = ("any_lesion", "positives", "none")


@dataclass
class Config:
    """Defaults follow the paper's released code (Code/train.py): Adam, lr 5e-5, wd 5e-4, 15 epochs, batch 32."""

    backbone: str = "efficientnet_lite0"
    method: str = "ladnn"  # ladnn: 6 outputs (COVID + 5 lesions); baseline: COVID only
    dataset: str = "D0"
    seed: int = 0
    epochs: int = 15
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 5e-4
    finetune: str = "full"  # full (paper code) | head (paper text) | top (last `top_blocks` blocks + head)
    top_blocks: int = 2
    views: int = 4  # augmented views per training image cached for head/top fine-tuning
    head: str = "linear"  # linear (paper code) | fc3 (paper Figure 2)
    covid_weight: float = 5.0
    lesion_mask: str = "any_lesion"  # any_lesion (paper code) | positives | none
    zero_lesions: list[str] = field(default_factory=list)  # ablation: lesions forced to 0 in training
    pretrained: bool = True
    weights: str | None = None  # explicit weights file
    limit: int | None = None  # use at most this many images per split (tests, smoke runs)
    device: str = "auto"

    def __post_init__(self) -> None:
        for name, allowed in [("method", METHODS), ("dataset", DATASETS), ("finetune", FINETUNE),
                              ("lesion_mask", LESION_MASKS), ("head", ("linear", "fc3"))]:
            if getattr(self, name) not in allowed:
                raise ValueError(f"config field {name!r}: {getattr(self, name)!r} is not one of {allowed}")
        bad = [x for x in self.zero_lesions if x not in LESIONS]
        if bad:
            raise ValueError(f"config field 'zero_lesions': unknown lesion(s) {bad}; known: {LESIONS}")
        if self.epochs < 1 or self.batch_size < 1 or self.views < 1:
            raise ValueError("config fields 'epochs', 'batch_size' and 'views' must be >= 1")

    @property
    def tasks(self) -> tuple[str, ...]:
        return TASKS if self.method == "ladnn" else ("COVID",)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config field(s): {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> Config:
        return cls.from_dict(json.loads(Path(path).read_text()))
