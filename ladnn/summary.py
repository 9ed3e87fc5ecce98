"""The typed form of a run's `metrics.json` (and of an evaluation's): what `FinishedRun.metrics` returns and what
training and `ladnn evaluate` write. On disk it stays plain JSON with the same keys; in code it is read by attribute, so a
misspelt key is an AttributeError where it is written, not a KeyError (or a silent None) far away.

The per-lesion block (`lesions`) stays a dict: it nests per-lesion records and baselines that only the lesion table
(ladnn.report.lesions) and the runs table read, and typing it would double its code for no reader's gain."""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field


def _build(tp, value):
    """`value` (parsed JSON) as type `tp`: dataclasses field by field, lists and dicts of them, Optional."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [t for t in typing.get_args(tp) if t is not type(None)]
        return _build(inner[0], value) if len(inner) == 1 else value
    if dataclasses.is_dataclass(tp):
        return tp.from_dict(value)
    if origin is tuple:
        return tuple(value)
    return value


class _Record:
    """from_dict / to_dict for the dataclasses below (unknown keys are an error naming them)."""

    @classmethod
    def from_dict(cls, d: dict):
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown key(s) {sorted(unknown)}")
        return cls(**{k: _build(hints[k], v) for k, v in d.items()})

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Binary(_Record):
    """`ladnn.metrics.binary_metrics`: COVID = 1 positive; the thresholded ones at p >= 0.5."""
    auc: float | None
    ap: float | None
    sensitivity: float
    specificity: float
    precision: float
    f1: float
    accuracy: float
    n: int
    n_pos: int


@dataclass(frozen=True)
class Intervals(_Record):
    """`ladnn.metrics.bootstrap_ci`: 95% percentile intervals [low, high] of each metric of `Binary`."""
    auc: tuple[float, float]
    ap: tuple[float, float]
    sensitivity: tuple[float, float]
    specificity: tuple[float, float]
    precision: tuple[float, float]
    f1: tuple[float, float]
    accuracy: tuple[float, float]


@dataclass(frozen=True, kw_only=True)
class Scores(_Record):
    """Scores on a set of labelled images: COVID metrics, their intervals (resampling `clusters` whole clusters),
    and for LA-DNN the lesion metrics (`ladnn.scores.evaluate_predictions`)."""
    covid: Binary
    covid_ci95: Intervals
    clusters: int
    lesions: dict | None = None


@dataclass(frozen=True, kw_only=True)
class Unseen(Scores):
    """A run scored on images from sources it never saw (the D1 images present, for a run trained on D0): `sources`
    counts their collections, `clusters` the patients its intervals resample."""
    sources: int
    sources_by_class: dict[str, int]
    evaluated_on: str


@dataclass(frozen=True, kw_only=True)
class Protocol(_Record):
    """What the test split was (`ladnn.sources.protocol_info`)."""
    protocol: str
    test: str
    level: str = "patient"  # what its intervals resample: patient, group (protocol b) or collection (c)
    fold: int | None = None
    folds: int | None = None
    test_groups: int | None = None
    groups_shared_with_training: int | None = None
    held_out: str | None = None  # protocol (c): the negative collection held out

    @classmethod
    def from_dict(cls, d: dict):
        """Also reads runs written before the protocols were grouped by patient (their `source` counts)."""
        old = {"test_sources": "test_groups", "sources_shared_with_training": "groups_shared_with_training"}
        return super().from_dict({old.get(k, k): v for k, v in d.items()})


@dataclass(frozen=True, kw_only=True)
class RunInfo(_Record):
    """How the run went."""
    best_epoch: int
    seconds: float
    device: str
    timm_name: str
    weights_source: str
    pretrained: bool
    torch: str
    images: dict[str, int] = field(default_factory=dict)
    # how it computed (ladnn.infer.precision): device and name, float32 and TF32, determinism; runs written before
    # it was recorded have none
    precision: dict | None = None


@dataclass(frozen=True, kw_only=True)
class RunMetrics(Scores):
    """A training run's `metrics.json`: its test scores, its protocol, how it went and, for an official D0 run, its
    scores on unseen sources."""
    protocol: Protocol | None = None
    run: RunInfo
    unseen_source: Unseen | None = None


@dataclass(frozen=True, kw_only=True)
class Evaluation(Scores):
    """`ladnn evaluate`'s metrics.json: scores on the run's test split or on a folder, and where they went."""
    evaluated_on: str
    cluster_note: str
    written_to: str = ""
    files: list[str] = field(default_factory=list)
    slices: str = ""  # which images were scored (external sets: the rule that chose the slices)
    per_patient: Scores | None = None  # external sets with patients: one score per patient
    aggregation: str = ""  # how slice scores became a patient's
    window: list[float] | None = None  # the DICOM window (centre, width) the slices were shown through
