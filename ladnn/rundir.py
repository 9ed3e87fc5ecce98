"""Run directories: `RunDir` writes one atomically and never lets it look complete unless it is; `Run` reads a
complete one back. This module is the only one that knows the files of a run and the columns of its predictions."""
from __future__ import annotations

import io
import json
import shutil
import time
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from ladnn.config import LESIONS, Config
from ladnn.data import groups_of
from ladnn.files import write_atomic
from ladnn.summary import Evaluation, RunMetrics

CONFIG, HISTORY, MODEL, PREDICTIONS, METRICS, STATUS = (
    "config.json", "history.csv", "model.pt", "predictions.csv", "metrics.json", "status.json")
FILES = (CONFIG, HISTORY, MODEL, PREDICTIONS, METRICS)
UNSEEN = "unseen_source.csv"  # official D0 runs: predictions on the D1 images present (sources D0 never saw)

# Columns of predictions.csv: one row per test image.
IMAGE, Y_TRUE, P_COVID, LESIONS_KNOWN = "image", "y_true", "p_covid", "lesions_known"
GROUP = "group"  # the resampling cluster: patient, else source document, else the image
P_LESIONS = tuple(f"p_{k}" for k in LESIONS)  # LA-DNN only
Y_LESIONS = tuple(f"y_{k}" for k in LESIONS)


class RunExistsError(FileExistsError):
    pass


class IncompleteRunError(FileNotFoundError):
    """A folder that is not a complete run: never read as a result."""


def status(run: str | Path) -> str:
    """'complete', 'running', 'failed' or 'absent'."""
    p = Path(run) / STATUS
    return json.loads(p.read_text())["status"] if p.is_file() else "absent"


def predictions_table(df: pd.DataFrame, probs: np.ndarray, tasks: tuple[str, ...]) -> pd.DataFrame:
    """predictions.csv from a sample table (`ladnn.data` columns) and the probabilities of each task."""
    out = pd.DataFrame({IMAGE: df["name"], Y_TRUE: df["covid"].astype(int), P_COVID: probs[:, 0]})
    out[GROUP] = groups_of(df)
    if len(tasks) > 1:
        for k, col in enumerate(P_LESIONS):
            out[col] = probs[:, k + 1]
        for name, col in zip(LESIONS, Y_LESIONS):
            out[col] = df[name].astype(int)
        out[LESIONS_KNOWN] = df["lesions_known"].astype(bool)
    return out


class RunDir:
    """The writer: `start`, `write` each file, then `finish` (or `fail`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def start(self, config: dict, overwrite: bool = False) -> None:
        if status(self.path) == "complete" and not overwrite:
            raise RunExistsError(f"{self.path} holds a finished run; pass --overwrite to replace it")
        if self.path.exists() and any(self.path.iterdir()) and status(self.path) == "absent":
            raise RunExistsError(f"{self.path} exists and is not a ladnn run directory; refusing to write into it")
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        self._status("running")
        self.write(CONFIG, json.dumps(config, indent=2))

    def write(self, name: str, data: str | bytes) -> None:
        write_atomic(self.path / name, data)

    def write_results(self, history: pd.DataFrame, predictions: pd.DataFrame, checkpoint: dict,
                      metrics: RunMetrics) -> None:
        """Every result file, then the `complete` mark."""
        import torch

        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        self.write(HISTORY, history.to_csv(index=False))
        self.write(PREDICTIONS, predictions.to_csv(index=False))
        self.write(MODEL, buf.getvalue())
        self.write(METRICS, json.dumps(metrics.to_dict(), indent=2))
        self.finish()

    def _status(self, state: str, **extra) -> None:
        self.write(STATUS, json.dumps({"status": state, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}))

    def finish(self) -> None:
        missing = [f for f in FILES if not (self.path / f).is_file()]
        if missing:
            raise RuntimeError(f"{self.path}: run is missing {missing}")
        self._status("complete")

    def fail(self, err: BaseException) -> None:
        self._status("failed", error=f"{type(err).__name__}: {err}")


class Run:
    """The reader: a complete run's config, history, predictions and metrics, each read once when first used."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if (st := status(self.path)) != "complete":
            raise IncompleteRunError(f"{self.path}: not a finished run (status: {st})")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @cached_property
    def config(self) -> Config:
        return Config.load(self.path / CONFIG)

    @cached_property
    def metrics(self) -> RunMetrics:
        return RunMetrics.from_dict(json.loads((self.path / METRICS).read_text()))

    @cached_property
    def history(self) -> pd.DataFrame:
        return pd.read_csv(self.path / HISTORY)

    @cached_property
    def predictions(self) -> pd.DataFrame:
        return pd.read_csv(self.path / PREDICTIONS)

    def evaluations(self) -> dict:
        """Every `ladnn evaluate` output of the run (folder name -> Evaluation), e.g. `eval-covid-ct-md-sample`."""
        out = {}
        for f in sorted(self.path.glob("eval*/" + METRICS)):
            out[f.parent.name] = Evaluation.from_dict(json.loads(f.read_text()))
        return out

    def checkpoint(self, device: str = "cpu") -> dict:
        """model.pt: config, state_dict, data_config and weights_source."""
        import torch

        return torch.load(self.path / MODEL, map_location=device, weights_only=False)

    def matches(self, cfg: Config) -> bool:
        """Trained with exactly `cfg`: the saved fields, read as written (a run saved before a field existed was
        trained without it and matches no config that has it)."""
        return json.loads((self.path / CONFIG).read_text()) == cfg.to_dict()

    def summary(self) -> dict:
        """One row of the runs table: the config, the test metrics, and how the run went."""
        m = self.metrics
        row = {**self.config.to_dict(), "path": str(self.path),
               **{k: getattr(m.covid, k) for k in ("auc", "ap", "sensitivity", "precision", "f1", "accuracy")},
               "seconds": m.run.seconds, "best_epoch": m.run.best_epoch, "weights_source": m.run.weights_source}
        if m.lesions and m.lesions.get("n"):
            les = m.lesions
            row.update({"lesion_label_accuracy": les["label_accuracy"], "hamming_loss": les["hamming_loss"],
                        "lesion_exact_match": les["exact_match"], "lesion_auc": les.get("mean_auc"),
                        "lesion_ap": les.get("mean_ap"), "lesion_images": les["n"]})
        return row

    def write_evaluation(self, name: str, predictions: pd.DataFrame, metrics: Evaluation) -> Path:
        """`ladnn evaluate`'s output: predictions.csv and metrics.json in the sub-folder `name` of the run."""
        out = self.path / name
        write_atomic(out / PREDICTIONS, predictions.to_csv(index=False))
        write_atomic(out / METRICS, json.dumps(metrics.to_dict(), indent=2))
        return out

    @staticmethod
    def evaluation_files(out: Path) -> list[str]:
        return [str(out / f) for f in (PREDICTIONS, METRICS, "roc.png")]


def is_done(path: str | Path, cfg: Config) -> bool:
    """A complete run with exactly this config (the book's incremental build)."""
    return status(path) == "complete" and Run(path).matches(cfg)


def find_runs(folder: str | Path) -> list[Run]:
    """Every complete run directly inside `folder`, by name. Folders that are not complete runs are skipped with a
    line saying so: a failed or interrupted run is never read as a result."""
    runs = []
    for p in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        if (p / STATUS).is_file():
            try:
                runs.append(Run(p))
            except IncompleteRunError as e:
                print(f"skipping {e}")
    return runs


def runs_table(folder: str | Path) -> pd.DataFrame:
    """One row per complete run in `folder` (`Run.summary`)."""
    runs = find_runs(folder)
    if not runs:
        raise FileNotFoundError(f"no finished runs in {folder}")
    return pd.DataFrame([r.summary() for r in runs])
