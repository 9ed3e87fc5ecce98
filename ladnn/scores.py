"""The scoring layer: the predictions table and everything scored from it.

- `PRED`, the one schema of a predictions table (a run's predictions.csv, an evaluation's, the benchmarks' tables):
  every reader and writer names a column through it.
- Aggregation: a patient's or a series' score from its slices (`AGGREGATION`).
- Every AUC or other metric with its interval, at a stated resampling level (`covid_scores`, `auc_interval`,
  `runs_auc`), and the test metrics of a run (`evaluate_predictions`).
- The tables built from them: per held-out collection (`collection_table`) and per negative collection
  (`subset_aucs`).

`ladnn.metrics` holds the array primitives underneath (scikit-learn's metrics, the clustered bootstrap); this
module is the only one above them, so train, evaluate, generalisation, serve, the chapters and the benchmarks all
score through here."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ladnn.config import LESIONS
from ladnn.data import groups_of
from ladnn.dicom import MIN_LUNG_FRACTION, Series
from ladnn.metrics import (
    auc,
    auc_ci,
    binary_metrics,
    bootstrap_ci,
    labelled,
    lesion_metrics,
    runs_auc_interval,
)
from ladnn.summary import Scores


@dataclass(frozen=True)
class PredictionColumns:
    """The columns of a predictions table, one row per scored image. A field's name is its column's name."""
    image: str = "image"  # the image's name (`ladnn.data`'s `name`; a file for an external set)
    y_true: str = "y_true"  # 1 COVID-19, 0 not
    p_covid: str = "p_covid"  # the model's COVID probability
    group: str = "group"  # the resampling cluster: patient, else source document, else the image
    lesions_known: str = "lesions_known"  # LA-DNN: whether the image's caption was read for lesions
    p_lesions: tuple[str, ...] = tuple(f"p_{k}" for k in LESIONS)  # LA-DNN: each lesion's probability
    y_lesions: tuple[str, ...] = tuple(f"y_{k}" for k in LESIONS)  # LA-DNN: each lesion's label
    # external sets (`ladnn.evaluate`): the patient, the DICOM slice's lung fraction, whether the slice is scored
    patient: str = "patient"
    lung_fraction: str = "lung_fraction"
    slice_scored: str = "slice_scored"
    # the benchmarks' tables (benchmarks/source_protocol.py, benchmarks/transfer.py): which run scored the image
    fold: str = "fold"
    collection: str = "collection"

    def probabilities(self, tasks) -> tuple[str, ...]:
        """The probability columns of a model with these tasks: COVID and, for LA-DNN, the five lesions."""
        return (self.p_covid, *self.p_lesions)[:len(tasks)]

    def check(self, table: pd.DataFrame, where: str, *columns: str) -> pd.DataFrame:
        """`table` itself, or a ValueError naming `where` (a file) and the columns it lacks."""
        missing = [c for c in (self.image, self.y_true, self.p_covid, *columns) if c not in table]
        if missing:
            raise ValueError(f"{where}: a predictions table needs the column(s) {', '.join(missing)}; it has "
                             f"{', '.join(map(str, table.columns))}")
        return table


PRED = PredictionColumns()

# How a patient's (or a series') score is made from its slices, in words for the pages and the JSON output.
AGGREGATION = ("mean COVID probability over the patient's slices that show lung (lung fraction >= "
               f"{MIN_LUNG_FRACTION:g}; ladnn.dicom.lung_fraction), or over all its slices for non-DICOM images")


def predictions_table(df: pd.DataFrame, probs: np.ndarray, tasks: tuple[str, ...]) -> pd.DataFrame:
    """The predictions table of a sample table (`ladnn.data` columns) and the probabilities of each task."""
    out = pd.DataFrame({PRED.image: df["name"], PRED.y_true: df["covid"].astype(int), PRED.p_covid: probs[:, 0]})
    out[PRED.group] = groups_of(df)
    if len(tasks) > 1:
        for k, col in enumerate(PRED.p_lesions):
            out[col] = probs[:, k + 1]
        for name, col in zip(LESIONS, PRED.y_lesions):
            out[col] = df[name].astype(int)
        out[PRED.lesions_known] = df["lesions_known"].astype(bool)
    return out


# ---------------------------------------------------------------- patients and series
def patient_means(p: pd.DataFrame, key: str = PRED.patient) -> pd.DataFrame:
    """One row per `key` (patient or series) of a slice table with `p_covid` and `lung_fraction` (NaN for
    non-DICOM images): AGGREGATION as `p_covid`, the label (`y_true`, when present) and the slices averaged."""
    lung = p[~(p[PRED.lung_fraction] < MIN_LUNG_FRACTION)]
    agg = {PRED.p_covid: (PRED.p_covid, "mean"), "slices": (PRED.p_covid, "size")}
    if PRED.y_true in p:
        agg = {PRED.y_true: (PRED.y_true, "first"), **agg}
    return lung.groupby(key, sort=False).agg(**agg).reset_index()


def external_slices(t: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """An external set's scored slices and its per-patient scores (AGGREGATION), each resampled by patient."""
    per = patient_means(t).drop(columns="slices")
    per[PRED.group] = per[PRED.patient]
    slices = t[t[PRED.slice_scored].astype(bool)]
    return slices.assign(**{PRED.group: slices[PRED.patient]}), per


def series_summary(results: list[dict], series: list[Series]) -> list[dict]:
    """One patient score per DICOM series among `Predictor.predict_files` results (the series of the folders,
    `ladnn.dicom.expand_inputs`, and those of DICOM files named one by one, grouped by folder, patient, study and
    series): AGGREGATION over its slices that show lung, with the slices scored, their order and what was left
    out."""
    by_file = {r["image"]: r for r in results}
    in_folders = {str(f) for s in series for f in s.files}
    loose: dict[tuple, list[Path]] = {}  # DICOM files named one by one: grouped by folder, patient, study, series
    for r in results:
        if "series_uid" in r and r["image"] not in in_folders:
            key = (str(Path(r["image"]).parent), r["patient_id"], r["study_uid"], r["series_uid"])
            loose.setdefault(key, []).append(Path(r["image"]))
    series = [*series, *(Series(folder, patient, study, uid, files, "as given on the command line")
                         for (folder, patient, study, uid), files in loose.items())]
    out = []
    for s in series:
        rows = [by_file[str(f)] for f in s.files if str(f) in by_file and "error" not in by_file[str(f)]]
        lung = [r[PRED.p_covid] for r in rows if r.get(PRED.lung_fraction, 0.0) >= MIN_LUNG_FRACTION]
        out.append({"series": s.label if len(series) > 1 else s.folder, "patient_id": s.patient,
                    "slices": len(s.files), "slices_scored": len(rows), "slices_with_lung": len(lung),
                    PRED.p_covid + "_patient": float(np.mean(lung)) if lung else None, "order": s.order,
                    **({"left_out": s.left_out} if s.left_out else {})})
    return out


# ---------------------------------------------------------------- metrics with their intervals
def covid_scores(p: pd.DataFrame, level: str | None = PRED.group, n_boot: int = 2000, seed: int = 0) -> dict:
    """The COVID metrics of a predictions table (`ladnn.metrics.binary_metrics`), their 95% intervals resampling
    whole `level` clusters within each class (None: each image its own), and the number of clusters."""
    groups = p[level] if level is not None and level in p else None
    return {"covid": binary_metrics(p[PRED.y_true], p[PRED.p_covid]),
            "covid_ci95": bootstrap_ci(p[PRED.y_true], p[PRED.p_covid], groups, n_boot=n_boot, seed=seed),
            "clusters": int(groups.nunique()) if groups is not None else len(p)}


def evaluate_predictions(pred: pd.DataFrame, train_prevalence: list[float] | None = None, n_boot: int = 2000,
                         seed: int = 0) -> dict:
    """All test metrics of a predictions table (`predictions_table`): the COVID metrics with 95% intervals that
    resample whole `group` clusters (patient, else source document, else the image; `covid_scores`). Lesion metrics
    use only the images that carry lesion labels, beside two predictors the head must beat: every lesion scored by
    its training prevalence (`train_prevalence`), and every lesion scored by the COVID probability."""
    out = covid_scores(pred, PRED.group, n_boot, seed)
    if PRED.p_lesions[0] in pred:
        Y = pred[list(PRED.y_lesions)].to_numpy()
        k = labelled(Y) & pred[PRED.lesions_known].astype(bool).to_numpy()
        Yk = Y[k]
        out["lesions"] = lesion_metrics(Yk, pred.loc[k, list(PRED.p_lesions)].to_numpy())
        out["lesions"]["images"] = (f"{int(k.sum())} test images that carry at least one lesion label; "
                                    f"{int((pred[PRED.y_true] == 1).sum() - k.sum())} positives without one are "
                                    "left out")
        covid = np.repeat(pred.loc[k, [PRED.p_covid]].to_numpy(), len(LESIONS), 1)
        base = {"covid_score": lesion_metrics(Yk, covid)}
        if train_prevalence is not None:
            base["constant"] = lesion_metrics(Yk, np.tile(np.asarray(train_prevalence, float), (len(Yk), 1)))
            base["constant"]["scores"] = list(train_prevalence)
        out["lesions"]["baselines"] = base
    return out


def patient_scores(pred: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame | None, Scores | None]:
    """Per-patient predictions (AGGREGATION) of an external set and their COVID scores, intervals resampling
    patients; (None, None) when the set records one image per patient."""
    if pred[PRED.patient].nunique() == len(pred):
        return None, None
    per = patient_means(pred)
    missing = sorted(set(pred[PRED.patient]) - set(per[PRED.patient]))
    if missing:
        raise ValueError(f"patient(s) {missing[:5]} have no slice that shows lung: no patient score")
    return per, Scores.from_dict(covid_scores(per, PRED.patient, seed=seed))


@dataclass(frozen=True)
class AucInterval:
    """An AUC with its 95% percentile interval, and what the interval resampled: `clusters` of the column
    `level`, whole, within each class."""
    auc: float | None  # None: the images hold one class
    lo: float
    hi: float
    n: int
    clusters: int
    level: str

    def row(self) -> dict:
        """The columns of the chapters' tables: AUC, lo, hi, n, clusters."""
        return {"AUC": self.auc, "lo": self.lo, "hi": self.hi, "n": self.n, "clusters": self.clusters}

    def text(self) -> str:
        """'0.871 (95% interval 0.821 to 0.915)'."""
        return f"{self.auc:.3f} (95% interval {self.lo:.3f} to {self.hi:.3f})"


# Below this many clusters in a class, a percentile bootstrap interval is not shown: it has too few distinct
# resamples to mean what "95%" says (2 COVID-19 patients give 3 positive compositions). `at_level` gives the exact
# permutation p-value instead, and the smallest AUC such a set could tell from chance.
MIN_CLUSTERS = 5


@dataclass(frozen=True)
class ClusterTest:
    """An AUC on a set with few clusters: the exact one-sided permutation p-value of the AUC (the classes of whole
    clusters permuted), the smallest p-value any ranking of this set could reach (1 / the number of ways to choose
    the positive clusters), and the smallest AUC whose p-value is at most 0.05 (None when none is)."""
    auc: float | None
    p: float
    least_p: float
    auc_needed: float | None
    n: int
    positive_clusters: int
    negative_clusters: int
    level: str

    def row(self) -> dict:
        """The columns of the chapters' tables: AUC, no interval, n, clusters, the exact p and the AUC needed."""
        return {"AUC": self.auc, "lo": np.nan, "hi": np.nan, "n": self.n,
                "clusters": self.positive_clusters + self.negative_clusters, "exact p": self.p,
                "AUC needed": np.nan if self.auc_needed is None else self.auc_needed}

    def text(self) -> str:
        """The AUC and what these clusters can show, in words."""
        few = f"{self.positive_clusters} COVID-19 and {self.negative_clusters} other clusters"
        if self.auc_needed is None:
            return (f"{self.auc:.3f} ({few}: too few for any AUC to differ from chance at the 5% level; the "
                    f"smallest possible permutation p-value is {self.least_p:.3f})")
        return (f"{self.auc:.3f} ({few}; exact permutation p = {self.p:.3f}; an AUC of at least "
                f"{self.auc_needed:.3f} would be needed at the 5% level)")


def cluster_classes(p: pd.DataFrame, level: str) -> tuple[np.ndarray, np.ndarray]:
    """Each image's cluster index (of `level`) and each cluster's class; a ValueError when a cluster holds both."""
    codes, uniq = pd.factorize(p[level].astype(str), sort=True)
    y = p[PRED.y_true].to_numpy().astype(int)
    lo, hi = np.full(len(uniq), 1), np.zeros(len(uniq), dtype=int)
    np.minimum.at(lo, codes, y)
    np.maximum.at(hi, codes, y)
    if (lo != hi).any():
        raise ValueError(f"a {level} cluster holds both classes: its label cannot be permuted as a whole")
    return codes, hi


def cluster_test(p: pd.DataFrame, level: str = PRED.group, max_ways: int = 200_000) -> ClusterTest:
    """The exact permutation test of the AUC of `p` at `level`: every way of choosing which clusters are COVID-19
    (as many as there are), each image labelled by its cluster; p = the share of choices whose AUC is at least the
    observed one. Exact up to `max_ways` choices (a ValueError beyond: use `auc_interval`)."""
    from itertools import combinations
    from math import comb

    codes, cls = cluster_classes(p, level)
    k, n = int(cls.sum()), len(cls)
    ways = comb(n, k)
    if ways > max_ways:
        raise ValueError(f"{ways} ways to choose {k} of {n} clusters: too many to enumerate; use the bootstrap")
    s = p[PRED.p_covid].to_numpy()
    draws = np.array([auc((np.isin(codes, c)).astype(int), s) for c in combinations(range(n), k)])
    obs = auc(p[PRED.y_true], s)
    p_value = float(np.mean(draws >= obs - 1e-12))
    ranked = np.sort(draws)[::-1]
    reach = ranked[int(np.floor(0.05 * ways)) - 1] if 0.05 * ways >= 1 else None  # the ceil(5%)-th largest AUC
    return ClusterTest(obs, p_value, 1 / ways, None if reach is None else float(reach), len(p), k, n - k, level)


def at_level(p: pd.DataFrame, level: str = PRED.group, n_boot: int = 2000, seed: int = 0
             ) -> AucInterval | ClusterTest:
    """The AUC of `p` at its protocol's level: with at least MIN_CLUSTERS clusters in each class, with its
    bootstrap interval (`auc_interval`); with fewer, the exact permutation test (`cluster_test`) and no interval
    (a set whose clusters hold both classes keeps the bootstrap, which draws such clusters as a stratum)."""
    return cluster_test(p, level) if exact_only(p, level) else auc_interval(p, level, n_boot, seed)


def exact_only(p: pd.DataFrame, level: str = PRED.group) -> bool:
    """The rule of `at_level` and of every paired comparison: a class has fewer than MIN_CLUSTERS clusters and no
    cluster holds both classes, so no bootstrap interval is given, only the exact permutation test."""
    return too_few_clusters(p, level) and not mixed_clusters(p, level)


def mixed_clusters(p: pd.DataFrame, level: str = PRED.group) -> bool:
    """Whether a cluster holds both classes (then its label cannot be permuted whole)."""
    return bool((p.groupby(level)[PRED.y_true].nunique() > 1).any())


def too_few_clusters(p: pd.DataFrame, level: str = PRED.group) -> bool:
    """Whether one class has images in fewer than MIN_CLUSTERS clusters."""
    by_class = p.groupby(PRED.y_true)[level].nunique()
    return len(by_class) < 2 or int(by_class.min()) < MIN_CLUSTERS


def auc_interval(p: pd.DataFrame, level: str = PRED.group, n_boot: int = 2000, seed: int = 0) -> AucInterval:
    """The COVID AUC of a predictions table with its 95% interval, resampling whole `level` clusters within each
    class (`ladnn.metrics.auc_ci`)."""
    y, s = p[PRED.y_true], p[PRED.p_covid]
    lo, hi = auc_ci(y, s, p[level], n_boot=n_boot, seed=seed)
    return AucInterval(auc(y, s), lo, hi, len(p), int(p[level].nunique()), level)


def runs_auc(y, P, groups, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean test AUC over the S runs of P (S x N probabilities of the same images, such as seeds), and its 95%
    interval: whole `groups` drawn within each class, and the runs drawn with replacement
    (`ladnn.metrics.runs_auc_interval`)."""
    return runs_auc_interval(y, P, groups, n_boot, seed)


def lesion_aucs(p: pd.DataFrame) -> dict[str, float | None]:
    """Each lesion's AUC on the images of a predictions table that carry a lesion label (None where a lesion has
    one class there)."""
    Y = p[list(PRED.y_lesions)].to_numpy()
    keep = labelled(Y) & p[PRED.lesions_known].astype(bool).to_numpy()
    out = {}
    for j, (k, col) in enumerate(zip(LESIONS, PRED.p_lesions)):
        y = Y[keep, j]
        out[k] = auc(y, p.loc[keep, col].to_numpy()) if 0 < y.sum() < len(y) else None
    return out


# ---------------------------------------------------------------- tables
def held_out(f: pd.DataFrame) -> str:
    """The negative collection(s) of a fold of protocol (c): the collection held out."""
    return ", ".join(sorted(f.loc[f[PRED.y_true] == 0, PRED.collection].unique()))


def collection_table(p: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """Protocol (c) per held-out collection (one fold each: its negatives and the positives of its held-out
    papers), the AUC with its interval resampling `group`s; worst first."""
    rows = []
    for fold, f in p.groupby(PRED.fold):
        rows.append({"held-out collection": held_out(f), PRED.fold: fold,
                     "negatives": int((f[PRED.y_true] == 0).sum()), "positives": int(f[PRED.y_true].sum()),
                     **auc_interval(f, n_boot=n_boot).row()})
    return pd.DataFrame(rows).sort_values("AUC").reset_index(drop=True)


def fold_aucs(p: pd.DataFrame) -> list[float]:
    """The AUC of each fold of pooled cross-validation predictions that holds both classes."""
    return [auc(g[PRED.y_true], g[PRED.p_covid]) for _, g in p.groupby(PRED.fold) if g[PRED.y_true].nunique() == 2]


def subset_aucs(p: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """AUC of a protocol's pooled predictions against each negative collection alone and without each: how much of
    the pooled figure one collection carries."""
    rows = [{"negatives": "all", **auc_interval(p, n_boot=n_boot).row()}]
    negatives = p[PRED.y_true] == 0
    for c in sorted(p.loc[negatives, PRED.collection].unique()):
        rows.append({"negatives": f"only {c}", **auc_interval(p[~negatives | (p[PRED.collection] == c)],
                                                              n_boot=n_boot).row()})
        rows.append({"negatives": f"all but {c}", **auc_interval(p[~negatives | (p[PRED.collection] != c)],
                                                                 n_boot=n_boot).row()})
    return pd.DataFrame(rows).set_index("negatives")
