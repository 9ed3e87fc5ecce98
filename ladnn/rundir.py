"""Run directories: `RunDir` writes one atomically and never lets it look complete unless it is; `Run` reads a
complete one back. This module is the only one that knows the files of a run and the columns of its predictions."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import threading
import time
import uuid
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from ladnn.config import LESIONS, Config, ConfigError
from ladnn.data import groups_of
from ladnn.files import replace_folder, write_atomic, write_folder_atomic
from ladnn.summary import Evaluation, RunMetrics

CONFIG, HISTORY, MODEL, PREDICTIONS, METRICS, STATUS = (
    "config.json", "history.csv", "model.pt", "predictions.csv", "metrics.json", "status.json")
FILES = (CONFIG, HISTORY, MODEL, PREDICTIONS, METRICS)
UNSEEN = "unseen_source.csv"  # official D0 runs: predictions on the D1 images present (sources D0 never saw)
GRADIENTS = "grad_diagnostics.csv"  # Config.grad_diagnostics: per step, each lesion term's gradient against COVID's

# Columns of predictions.csv: one row per test image.
IMAGE, Y_TRUE, P_COVID, LESIONS_KNOWN = "image", "y_true", "p_covid", "lesions_known"
GROUP = "group"  # the resampling cluster: patient, else source document, else the image
P_LESIONS = tuple(f"p_{k}" for k in LESIONS)  # LA-DNN only
Y_LESIONS = tuple(f"y_{k}" for k in LESIONS)


STATES = ("complete", "running", "failed")


class RunExistsError(FileExistsError):
    pass


class IncompleteRunError(FileNotFoundError):
    """A folder that is not a complete run: never read as a result. The message names the file and why."""


class RunClaimedError(FileExistsError):
    """Another worker (host, process) is training this run and its heartbeat is recent."""


# ---------------------------------------------------------------- claims: one worker per run, on any number of hosts
HEARTBEAT_S = 30.0  # how often a worker touches its claim while it trains


def stale_after() -> float:
    """Seconds without a heartbeat after which a claim may be taken over ($LADNN_CLAIM_STALE_S, default 600)."""
    return float(os.environ.get("LADNN_CLAIM_STALE_S", "600"))


def claim_path(run: str | Path) -> Path:
    """The claim file of a run folder: beside it (`.NAME.claim`), so the folder itself can be replaced."""
    run = Path(run)
    return run.parent / f".{run.name}.claim"


def read_claim(run: str | Path) -> dict | None:
    """The claim on a run (host, pid, token, started) with `age`, the seconds since its last heartbeat (the file's
    modification time), and `live` (age below `stale_after`); None when nobody claims it."""
    f = claim_path(run)
    try:
        age = time.time() - f.stat().st_mtime
        d = json.loads(f.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # being written, or damaged: a claim all the same, judged by its age
        d = {}
    return {**(d if isinstance(d, dict) else {}), "age": age, "live": age < stale_after()}


def _describe(c: dict) -> str:
    return (f"host {c.get('host', '?')}, pid {c.get('pid', '?')}, since {c.get('started', '?')}, last heartbeat "
            f"{c['age']:.0f} s ago")


class Claim:
    """Exclusive right to train one run folder, on a shared file system (NFS included): the claim file is created
    with O_EXCL and carries host, pid, a token and the start time; a thread touches it every `HEARTBEAT_S` seconds.
    A claim whose heartbeat is older than `stale_after()` (a killed job) is taken over: it is renamed aside, which
    only one worker can do, and claimed anew."""

    def __init__(self, run: str | Path):
        self.run, self.file = Path(run), claim_path(run)
        self.token = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.took_over: dict | None = None

    def acquire(self) -> Claim:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                other = read_claim(self.run)
                if other is None:  # released meanwhile: try again
                    continue
                if other["live"]:
                    raise RunClaimedError(f"{self.run} is being trained by another worker ({_describe(other)}); "
                                          "not starting a second one") from None
                aside = self.file.with_name(f"{self.file.name}.stale-{uuid.uuid4().hex[:8]}")
                try:
                    os.rename(self.file, aside)  # one worker wins this rename; the others find no file and retry
                except FileNotFoundError:
                    continue
                aside.unlink(missing_ok=True)
                self.took_over = other
                print(f"{self.run}: taking over a stale claim ({_describe(other)})", flush=True)
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump({"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S")}, fh)
            self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.run.name}", daemon=True)
            self._thread.start()
            return self
        raise RunClaimedError(f"{self.run}: could not claim the run (its claim file kept changing)")

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.file)
            except OSError:
                return

    def owned(self) -> bool:
        try:
            return json.loads(self.file.read_text()).get("token") == self.token
        except (OSError, ValueError, AttributeError):
            return False

    def release(self) -> None:
        """Stop the heartbeat and remove the claim, if it is still ours."""
        self._stop.set()
        if self.owned():
            self.file.unlink(missing_ok=True)


def read_status(run: str | Path) -> tuple[str, str]:
    """(state, why): 'complete', 'running', 'failed', 'absent' (no status.json) or 'damaged' (a status.json that
    cannot be read, or holds no known state; `why` names the file and says what is wrong)."""
    p = Path(run) / STATUS
    if not p.is_file():
        return "absent", f"{p}: no such file"
    try:
        d = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return "damaged", f"{p}: cannot be read ({type(e).__name__}: {e})"
    state = d.get("status") if isinstance(d, dict) else None
    if state not in STATES:
        return "damaged", f"{p}: expected an object with 'status' one of {STATES}, got {str(d)[:80]!r}"
    return state, ""


def status(run: str | Path) -> str:
    """'complete', 'running', 'failed', 'absent' or 'damaged' (`read_status`)."""
    return read_status(run)[0]


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
    """The writer: `start`, `write` each file, then `finish` (or `fail`). Replacing a finished run (`overwrite`)
    writes the new run into a hidden folder beside it (`.NAME.new-*`) and swaps it in only at `finish`: a run that
    fails or is killed leaves the finished one as it was. A killed replacement's hidden folder is removed by the
    next `start` of the same run, which holds the run's claim."""

    def __init__(self, path: str | Path):
        self.path = self.final = Path(path)
        self.claim: Claim | None = None

    def check(self, overwrite: bool = False) -> str:
        """Whether `start` may write here (RunExistsError if not; RunClaimedError while another worker trains it),
        touching nothing; returns the folder's state."""
        other = read_claim(self.final)
        if other and other["live"] and not (self.claim and self.claim.owned()):
            raise RunClaimedError(f"{self.final} is being trained by another worker ({_describe(other)}); "
                                  "not starting a second one")
        state = status(self.final)
        if state == "complete" and not overwrite:
            raise RunExistsError(f"{self.final} holds a finished run; pass --overwrite to replace it")
        if self.final.exists() and (not self.final.is_dir() or (any(self.final.iterdir()) and state == "absent")):
            raise RunExistsError(f"{self.final} exists and is not a ladnn run directory; refusing to write into it")
        return state

    def take(self, overwrite: bool = False) -> str:
        """Claim the run (`Claim`; a second worker stops here with RunClaimedError) and check it again: it may have
        finished while we were claiming it. Returns the folder's state."""
        if self.claim is None:
            self.claim = Claim(self.final).acquire()
        try:
            return self.check(overwrite)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self.claim:
            self.claim.release()
            self.claim = None

    def start(self, config: dict, overwrite: bool = False) -> None:
        """Create the folder, marked running, under this worker's claim (`take`, done here if not yet)."""
        state = self.take(overwrite)
        for stale in self._replacements():  # a killed replacement's: under our claim, no one else's
            shutil.rmtree(stale, ignore_errors=True)
        if state == "complete":  # trained beside it, swapped in by `finish`
            self.path = self.final.parent / f".{self.final.name}.new-{uuid.uuid4().hex[:8]}"
        elif self.final.exists():  # a failed, interrupted or damaged run: nothing worth keeping
            shutil.rmtree(self.final)
        self.path.mkdir(parents=True)
        self._status("running")
        self.write(CONFIG, json.dumps(config, indent=2))

    def _replacements(self) -> list[Path]:
        """The hidden folders `start` trains replacements of this run in (`.NAME.new-` and 8 hex digits), and not
        those of another run whose name begins with this one's (`NAME.new-x`)."""
        pattern = re.compile(rf"\.{re.escape(self.final.name)}\.new-[0-9a-f]{{8}}")
        return [p for p in self.final.parent.glob(".*.new-*") if pattern.fullmatch(p.name)]

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
        self.write(STATUS, json.dumps({"status": state, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                       "host": socket.gethostname(), "pid": os.getpid(), **extra}))

    def finish(self) -> None:
        missing = [f for f in FILES if not (self.path / f).is_file()]
        if missing:
            raise RuntimeError(f"{self.path}: run is missing {missing}")
        self._status("complete")
        if self.path != self.final:  # the old run leaves only once the new one is complete
            self.path = replace_folder(self.path, self.final)
        self.release()

    def fail(self, err: BaseException) -> None:
        """Mark the run failed; a replacement that failed is removed, and the finished run it was to replace
        stays."""
        try:
            if self.path != self.final:
                shutil.rmtree(self.path, ignore_errors=True)
                print(f"{self.final}: the new run failed ({type(err).__name__}); the finished run there is unchanged")
                return
            self._status("failed", error=f"{type(err).__name__}: {err}")
        finally:
            self.release()


class Run:
    """The reader: a complete run's config, history, predictions and metrics, each read once when first used."""

    def __init__(self, path: str | Path):
        """Refuses (IncompleteRunError, naming the file) a folder that is not a complete run: a status other than
        complete, a missing result file, or a config.json or metrics.json that cannot be read."""
        self.path = Path(path)
        st, why = read_status(self.path)
        if st != "complete":
            raise IncompleteRunError(f"{self.path}: not a finished run (status: {st}{'; ' + why if why else ''})")
        missing = [f for f in FILES if not (self.path / f).is_file()]
        if missing:
            raise IncompleteRunError(f"{self.path}: marked complete but {', '.join(str(self.path / f) for f in missing)} "
                                     "missing")
        try:
            self.config  # noqa: B018 - read now, so a damaged file is named here
            self.metrics  # noqa: B018
        except ConfigError as e:
            raise IncompleteRunError(str(e)) from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise IncompleteRunError(f"{self.path / METRICS}: cannot be read ({type(e).__name__}: {e})") from None

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
        """model.pt: config, state_dict, data_config and weights_source. A file that cannot be read, or whose
        config differs from config.json (a checkpoint copied from another run), is refused naming both."""
        import torch

        f = self.path / MODEL
        try:
            ckpt = torch.load(f, map_location=device, weights_only=False)
        except Exception as e:  # noqa: BLE001 - torch raises EOFError, RuntimeError, UnpicklingError...
            raise IncompleteRunError(f"{f}: cannot be read as a checkpoint ({type(e).__name__}: {e})") from None
        if not isinstance(ckpt, dict) or not {"config", "state_dict", "data_config", "weights_source"} <= set(ckpt):
            raise IncompleteRunError(f"{f}: not a ladnn checkpoint (expected config, state_dict, data_config and "
                                     "weights_source)")
        saved = json.loads((self.path / CONFIG).read_text())
        if ckpt["config"] != saved:
            diff = sorted(k for k in set(saved) | set(ckpt["config"]) if saved.get(k) != ckpt["config"].get(k))
            shown = ", ".join(f"{k}: {ckpt['config'].get(k)!r} in {MODEL}, {saved.get(k)!r} in {CONFIG}"
                              for k in diff[:4])
            raise IncompleteRunError(f"{f} does not belong to {self.path / CONFIG}: they differ in {shown}")
        return ckpt

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

    def write_evaluation(self, name: str, predictions: pd.DataFrame, metrics: Evaluation,
                         extra: dict[str, str | bytes] | None = None) -> Path:
        """`ladnn evaluate`'s output: predictions.csv, metrics.json and `extra` files (roc.png, patients.csv) in the
        sub-folder `name` of the run, written all at once (a failure leaves the earlier evaluation as it was)."""
        files = {PREDICTIONS: predictions.to_csv(index=False), METRICS: json.dumps(metrics.to_dict(), indent=2),
                 **(extra or {})}
        return write_folder_atomic(self.path / name, files)


def unreadable(path: str | Path) -> str:
    """Why `path` cannot be read as a complete run (naming the file), or '' when it can."""
    try:
        Run(path)
        return ""
    except IncompleteRunError as e:
        return str(e)


def is_done(path: str | Path, cfg: Config) -> bool:
    """A complete run with exactly this config (the book's incremental build); a damaged one is not done."""
    try:
        return status(path) == "complete" and Run(path).matches(cfg)
    except (IncompleteRunError, OSError, ValueError):
        return False


def scan_runs(folder: str | Path) -> tuple[list[Run], list[str]]:
    """The complete runs directly inside `folder`, by name, and why each other folder that looks like a run (it has
    a status.json) is not read as one: failed, interrupted or damaged, with the file named. Hidden folders (a
    replacement being trained, `RunDir`) are not looked at."""
    runs, skipped = [], []
    for p in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        if (p / STATUS).is_file() and not p.name.startswith("."):
            try:
                runs.append(Run(p))
            except IncompleteRunError as e:
                skipped.append(str(e))
    return runs, skipped


def find_runs(folder: str | Path) -> list[Run]:
    """Every complete run directly inside `folder` (`scan_runs`), with a line for each folder skipped and why: a
    failed, interrupted or damaged run is never read as a result."""
    runs, skipped = scan_runs(folder)
    for why in skipped:
        print(f"skipping {why}")
    return runs


def runs_table(folder: str | Path) -> pd.DataFrame:
    """One row per complete run in `folder` (`Run.summary`)."""
    runs = find_runs(folder)
    if not runs:
        raise FileNotFoundError(f"no finished runs in {folder}")
    return pd.DataFrame([r.summary() for r in runs])
