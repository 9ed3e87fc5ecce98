"""Run directories: `RunWriter` writes one atomically and never lets it look complete unless it is; `FinishedRun`
reads a complete one back. This module is the only one that knows the files of a run and where a profile's runs
live (`profile_dirs`); the columns of its predictions are `ladnn.scores.PRED`."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from functools import cached_property
from pathlib import Path

import pandas as pd

from ladnn.config import Config, ConfigError
from ladnn.files import write_folder_atomic
from ladnn.summary import Evaluation, RunMetrics

CONFIG, HISTORY, MODEL, PREDICTIONS, METRICS, STATUS = (
    "config.json", "history.csv", "model.pt", "predictions.csv", "metrics.json", "status.json")
FILES = (CONFIG, HISTORY, MODEL, PREDICTIONS, METRICS)
UNSEEN = "unseen_source.csv"  # official D0 runs: predictions on the D1 images present (sources D0 never saw)
GRADIENTS = "grad_diagnostics.csv"  # Config.grad_diagnostics: per step, each lesion term's gradient against COVID's

# Where a profile's runs live: its matrix's runs in `runs/<profile>/`, its ablations and the multi-task lab's runs
# in folders of their own inside it.
RUNS, ABLATIONS, LAB = "runs", "ablations", "lab"


def profile_dirs(root: str | Path, profile: str) -> dict[str, Path]:
    """The run folders of a profile under the repository `root`: `matrix`, `ablations` and `lab`."""
    return run_dirs(Path(root) / RUNS / profile)


def run_dirs(runs_dir: str | Path) -> dict[str, Path]:
    """The run folders inside a profile's runs folder (`runs/<profile>`, as the notebooks' `runs_dir` names it)."""
    runs_dir = Path(runs_dir)
    return {"matrix": runs_dir, "ablations": runs_dir / ABLATIONS, "lab": runs_dir / LAB}


STATES = ("complete", "running", "failed")


class RunExistsError(FileExistsError):
    pass


class IncompleteRunError(FileNotFoundError):
    """A folder that is not a complete run: never read as a result. The message names the file and why."""


class RunClaimedError(FileExistsError):
    """Another worker (host, process) is training this run and its heartbeat is recent."""


class ClaimLostError(RunClaimedError):
    """This worker's claim on a run was taken over, or removed, while it trained (its heartbeat was silent past the
    stale limit: a job suspended or paused): it stops and writes nothing more. The message names the run folder and
    who holds it now."""


# ---------------------------------------------------------------- claims: one worker per run, on any number of hosts
HEARTBEAT_S = 30.0  # how often a worker touches its claim while it trains
STALE_VAR = "LADNN_CLAIM_STALE_S"
MIN_STALE_BEATS = 3
# The stale limit is at least MIN_STALE_BEATS heartbeats. A live worker's claim is up to one heartbeat old, and older
# when a beat is late: a busy host, a slow NFS server, hosts whose clocks differ a little (the age compares this
# host's clock with the time the file server stamped). Three heartbeats let a live claim miss two beats in a row
# before anyone may take it; should a live worker lose its claim all the same, its next check stops it
# (ClaimLostError).


def stale_after() -> float:
    """Seconds without a heartbeat after which a claim may be taken over ($LADNN_CLAIM_STALE_S, default 600). A value
    below MIN_STALE_BEATS heartbeats, or not a number, is refused (ValueError naming the variable and the minimum)."""
    raw = os.environ.get(STALE_VAR, "600")
    least = MIN_STALE_BEATS * HEARTBEAT_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not seconds >= least:  # nan included
        raise ValueError(f"{STALE_VAR}={raw!r}: expected seconds, at least {least:g} ({MIN_STALE_BEATS} heartbeats of "
                         f"{HEARTBEAT_S:g} s); a shorter limit lets a second worker take over the claim of a worker "
                         "that is still training")
    return seconds


def claim_path(run: str | Path) -> Path:
    """The claim file of a run folder: beside it (`.NAME.claim`), so the folder itself can be replaced."""
    run = Path(run)
    return run.parent / f".{run.name}.claim"


def _snapshot(f: Path) -> tuple[bytes, int] | None:
    """A claim file's bytes and modification time (ns), read through one open file, or None when there is none.
    Opening the file makes an NFS client fetch its attributes afresh (close-to-open), so the time is the server's."""
    try:
        with open(f, "rb") as fh:
            return fh.read(), os.fstat(fh.fileno()).st_mtime_ns
    except FileNotFoundError:
        return None


def _token(f: Path) -> str | None:
    """The token in a claim file; None when there is no file, '' when it holds none (being written, or damaged)."""
    snap = _snapshot(f)
    if snap is None:
        return None
    try:
        d = json.loads(snap[0])
    except ValueError:
        return ""
    return str(d.get("token", "")) if isinstance(d, dict) else ""


def _claim_info(raw: bytes, mtime_ns: int, limit: float) -> dict:
    try:
        d = json.loads(raw or b"{}")
    except ValueError:  # being written, or damaged: a claim all the same, judged by its age
        d = {}
    age = time.time() - mtime_ns / 1e9
    return {**(d if isinstance(d, dict) else {}), "age": age, "live": age < limit}


def read_claim(run: str | Path) -> dict | None:
    """The claim on a run (host, pid, token, started) with `age`, the seconds since its last heartbeat (the file's
    modification time), and `live` (age below `stale_after`); None when nobody claims it."""
    limit = stale_after()  # a limit too short is refused even where nothing is claimed yet
    snap = _snapshot(claim_path(run))
    return None if snap is None else _claim_info(*snap, limit)


def _describe(c: dict) -> str:
    return (f"host {c.get('host', '?')}, pid {c.get('pid', '?')}, since {c.get('started', '?')}, last heartbeat "
            f"{c['age']:.0f} s ago")


def _put_back(aside: Path, file: Path) -> None:
    """Return a claim file moved aside to its place, unless a claim was made there meanwhile (then the one moved aside
    has lost the run, and its worker's next check stops it)."""
    try:
        os.link(aside, file)  # never over a claim made meanwhile
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links: a plain rename, which would replace a claim made meanwhile
        os.rename(aside, file)
        return
    aside.unlink(missing_ok=True)


class Claim:
    """Exclusive right to train one run folder, on a shared file system: the claim file is created with O_EXCL and
    carries host, pid, a token of this taker's own and the start time; a thread touches it every `HEARTBEAT_S`
    seconds through the file it created, so a beat never refreshes a claim that is no longer this one. A claim silent
    for `stale_after()` (a killed job) is taken over (`_take_over`). `check` before every write that matters stops a
    worker whose claim was taken over (ClaimLostError).

    Assumes rename, link and O_EXCL creation are atomic, as on a local POSIX file system and on NFS, where each is one
    operation on the server. Over NFS a request retried after a lost reply may report EEXIST or ENOENT for an
    operation that did happen: here that only makes a worker refuse the run, or try again and leave a stray
    `.NAME.claim.stale-*` file. A file removed while its worker holds it open stays as `.nfs*` until it is closed."""

    def __init__(self, run: str | Path):
        self.run, self.file = Path(run), claim_path(run)
        self.tag = uuid.uuid4().hex  # this taker's own: names its claim token and its run folder
        self.token = f"{socket.gethostname()}-{os.getpid()}-{self.tag}"
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.took_over: dict | None = None

    def acquire(self) -> Claim:
        stale_after()  # a limit too short is refused before anything is claimed
        self.file.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            try:
                fd = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over()  # RunClaimedError while the claim is live
                continue
            self._fd = fd
            os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                                     "started": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode())
            self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.run.name}", daemon=True)
            self._thread.start()
            return self
        raise RunClaimedError(f"{self.run}: could not claim the run (its claim file kept changing)")

    def _take_over(self) -> None:
        """Remove a stale claim, or refuse (RunClaimedError) a live one. The claim is renamed to a name of our own,
        which only one worker can do, and read again: only if it is still the claim judged stale (the same bytes and
        the same heartbeat) is it removed. One refreshed since it was read (its worker woke up), or a fresh one (another
        worker took the run over first), is put back and the run refused."""
        seen = _snapshot(self.file)
        if seen is None:  # released meanwhile: try again
            return
        other = _claim_info(*seen, stale_after())
        if other["live"]:
            raise RunClaimedError(f"{self.run} is being trained by another worker ({_describe(other)}); "
                                  "not starting a second one")
        aside = self.file.with_name(f"{self.file.name}.stale-{self.tag[:8]}")
        try:
            os.rename(self.file, aside)
        except FileNotFoundError:  # another worker moved it first: try again
            return
        if _snapshot(aside) != seen:
            _put_back(aside, self.file)
            raise RunClaimedError(f"{self.run}: its claim changed while it was being taken over (its worker is alive, "
                                  "or another worker took the run first); not starting a second one")
        aside.unlink(missing_ok=True)
        self.took_over = other
        print(f"{self.run}: taking over a stale claim ({_describe(other)})", flush=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self._fd if os.utime in os.supports_fd else self.file)  # the file we made, wherever it is
            except (OSError, TypeError):
                return

    def owned(self) -> bool:
        return _token(self.file) == self.token

    def check(self, doing: str) -> None:
        """Go on only while the claim file is still this worker's; else stop (ClaimLostError) before `doing`. A claim
        file that is missing is looked for again for a moment: a worker taking over a claim it judged stale moves it
        aside and puts it back if it is live."""
        for pause in (0.05, 0.1, 0.2, None):
            token = _token(self.file)
            if token == self.token:
                return
            if token is not None or pause is None:
                break
            time.sleep(pause)
        holder = read_claim(self.run)
        now = f"it is held by {_describe(holder)}" if holder else "nobody holds it now"
        raise ClaimLostError(f"{self.run}: this worker (host {socket.gethostname()}, pid {os.getpid()}) lost its claim "
                             f"on the run (its heartbeat was silent past {STALE_VAR}, as in a suspended or paused job, "
                             f"and the run was taken over; or the claim file was removed); {now}. Stopped before "
                             f"{doing}: nothing more is written")

    def release(self) -> None:
        """Stop the heartbeat and remove the claim, if it is still ours: it is renamed aside first and put back if it
        is not, so a worker that lost its claim never removes the one that took it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()  # before the file is closed: a beat never touches a number reused by another file
            self._thread = None
        if self._fd is None:  # never acquired, or released already
            return
        os.close(self._fd)
        self._fd = None
        aside = self.file.with_name(f"{self.file.name}.gone-{self.tag[:8]}")
        try:
            os.rename(self.file, aside)
        except FileNotFoundError:
            return
        if _token(aside) == self.token:
            aside.unlink(missing_ok=True)
        else:
            _put_back(aside, self.file)


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


def _write_into(folder: Path, name: str, data: str | bytes) -> None:
    """`ladnn.files.write_atomic` into a folder that must exist: a worker's folder removed under it (its claim taken
    over) is never made again."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunWriter:
    """The writer: `start`, `write` each file, then `finish` (or `fail`), under the run's claim (`Claim`). The run is
    written into a hidden folder of this worker's own beside the run folder (`.NAME.new-` and 8 hex digits) and moved
    into place by `finish`, replacing a finished run only then (`overwrite`), or by `fail` where no finished run is
    there: the run folder holds a finished run, a failed one or nothing, and a worker can write into no folder but
    its own. Each write, and the move, checks the claim first: a worker whose claim was taken over stops there
    (ClaimLostError). Hidden folders of a killed or taken-over worker are removed by the next `start` of the run,
    under its own claim."""

    def __init__(self, path: str | Path):
        self.path = self.final = Path(path)
        self.claim: Claim | None = None
        self.replacing = False  # a finished run is in the run folder: `fail` leaves it there

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
            self._recover()
            return self.check(overwrite)
        except BaseException:
            self.release()
            raise

    def _aside(self, kind: str) -> list[Path]:
        """This run's hidden folders of one kind (`.NAME.new-` or `.NAME.old-` and 8 hex digits), and not those of
        another run whose name begins with this one's (`NAME.new-x`)."""
        pattern = re.compile(rf"\.{re.escape(self.final.name)}\.{kind}-[0-9a-f]{{8}}")
        return [p for p in self.final.parent.glob(f".*.{kind}-*") if pattern.fullmatch(p.name)]

    def _recover(self) -> None:
        """Under the claim: a move into place killed between its two renames (`_move_in`) leaves the run folder
        missing and the run it was replacing in `.NAME.old-*`: that run is put back. Other `.old-*` folders (a move
        that completed but was killed before its clean-up) are removed."""
        olds = sorted(self._aside("old"), key=lambda p: p.stat().st_mtime)
        if olds and not os.path.lexists(self.final):
            os.rename(olds.pop(), self.final)
            print(f"{self.final}: put back from an interrupted replacement", flush=True)
        for p in olds:
            shutil.rmtree(p, ignore_errors=True)

    def take_unless_done(self, cfg: Config, overwrite: bool = False) -> bool:
        """Claim the run (`take`) and return True, unless it holds a complete run with exactly `cfg`: then False, and
        the run folder is not touched (a claim taken to look again, since another worker may have just finished it,
        is released)."""
        if is_done(self.final, cfg):
            return False
        if self.claim is None:
            self.claim = Claim(self.final).acquire()
        if is_done(self.final, cfg):
            self.release()
            return False
        self.take(overwrite)
        return True

    def release(self) -> None:
        if self.claim:
            self.claim.release()
            self.claim = None

    def start(self, config: dict, overwrite: bool = False) -> None:
        """Create this worker's folder, marked running, under its claim (`take`, done here if not yet)."""
        state = self.take(overwrite)
        try:
            self.claim.check("starting the run")
            for stale in self._replacements():  # a killed or taken-over worker's: under our claim, no one else's
                shutil.rmtree(stale, ignore_errors=True)
            self.replacing = state == "complete"
            self.path = self.final.parent / f".{self.final.name}.new-{self.claim.tag[:8]}"
            self.path.mkdir()
            self._status("running")
            self.write(CONFIG, json.dumps(config, indent=2))
        except BaseException:
            self._discard()
            self.release()
            raise

    def _replacements(self) -> list[Path]:
        """The hidden folders `start` trains runs in (`_aside("new")`)."""
        return self._aside("new")

    def _check(self, doing: str) -> None:
        """Stop unless this worker is writing its own folder under its claim (ClaimLostError once taken over)."""
        if self.claim is None or self.path == self.final:
            raise RuntimeError(f"{self.final}: {doing} refused: the run is not started, or already finished")
        self.claim.check(doing)

    def write(self, name: str, data: str | bytes) -> None:
        self._check(f"writing {name}")
        _write_into(self.path, name, data)

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
        """Mark the run complete, move it into place (`_move_in`) and release the claim."""
        self._check("finishing the run")
        missing = [f for f in FILES if not (self.path / f).is_file()]
        if missing:
            raise RuntimeError(f"{self.path}: run is missing {missing}")
        self._status("complete")
        self._move_in()
        self.release()

    def _move_in(self) -> None:
        """This worker's folder into the run folder's place, once the claim is checked. What is there (a finished run
        being replaced, a failed or damaged one) is renamed aside first and removed only once ours is in; if ours
        cannot move (removed by a worker that took the run over while this one was paused), it is put back."""
        self._check("moving the run into place")
        old: Path | None = self.final.parent / f".{self.final.name}.old-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(self.final, old)
        except FileNotFoundError:
            old = None
        try:
            os.rename(self.path, self.final)
        except OSError:
            if old is not None:
                os.rename(old, self.final)
            self.claim.check("moving the run into place")  # ClaimLostError: the usual reason
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.path = self.final

    def _discard(self) -> None:
        """Remove this worker's own folder (never the run folder)."""
        if self.path != self.final:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = self.final

    def fail(self, err: BaseException) -> None:
        """Mark the run failed and move it into place; a replacement that failed is removed, and the finished run it
        was to replace stays. A worker that lost its claim removes its own folder and touches nothing else."""
        try:
            if self.claim is None or self.path == self.final:  # not started, or finished: nothing of ours to mark
                return
            if self.replacing or status(self.final) == "complete":
                self._discard()
                print(f"{self.final}: the new run failed ({type(err).__name__}); the finished run there is unchanged")
                return
            try:
                self._status("failed", error=f"{type(err).__name__}: {err}")
                self._move_in()
            except ClaimLostError as lost:
                self._discard()
                if not isinstance(err, ClaimLostError):
                    print(f"{self.final}: not marked failed ({type(err).__name__}: {err}): {lost}", flush=True)
        finally:
            self.release()


class FinishedRun:
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
        return f"FinishedRun({str(self.path)!r})"

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

    @cached_property
    def unseen_predictions(self) -> pd.DataFrame | None:
        """Its predictions on the D1 images present (official D0 runs: `UNSEEN`), or None when it has none."""
        f = self.path / UNSEEN
        return pd.read_csv(f) if f.is_file() else None

    def evaluations(self) -> dict:
        """Every `ladnn evaluate` output of the run (folder name -> Evaluation), e.g. `eval-covid-ct-md-sample-1a2b3c4d`.
        A damaged one (its metrics.json unreadable, not JSON, or not an evaluation) is named in one line on stderr and
        left out: the others are still read."""
        import sys

        out = {}
        for f in sorted(self.path.glob("eval*/" + METRICS)):
            try:
                d = json.loads(f.read_text())
                if not isinstance(d, dict):
                    raise TypeError(f"expected a JSON object, got {type(d).__name__}")
                out[f.parent.name] = Evaluation.from_dict(d)
            except Exception as err:  # noqa: BLE001 - any damage (bad bytes, JSON, keys or types): named and skipped
                print(f"{f}: damaged evaluation, skipped ({' '.join(f'{type(err).__name__}: {err}'.split())})",
                      file=sys.stderr, flush=True)
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
        FinishedRun(path)
        return ""
    except IncompleteRunError as e:
        return str(e)


def is_done(path: str | Path, cfg: Config) -> bool:
    """A complete run with exactly this config (the book's incremental build); a damaged one is not done."""
    try:
        return status(path) == "complete" and FinishedRun(path).matches(cfg)
    except (IncompleteRunError, OSError, ValueError):
        return False


def scan_runs(folder: str | Path) -> tuple[list[FinishedRun], list[str]]:
    """The complete runs directly inside `folder`, by name, and why each other folder that looks like a run (it has
    a status.json) is not read as one: failed, interrupted or damaged, with the file named. Hidden folders (a
    replacement being trained, `RunWriter`) are not looked at."""
    runs, skipped = [], []
    for p in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        if (p / STATUS).is_file() and not p.name.startswith("."):
            try:
                runs.append(FinishedRun(p))
            except IncompleteRunError as e:
                skipped.append(str(e))
    return runs, skipped


def find_runs(folder: str | Path) -> list[FinishedRun]:
    """Every complete run directly inside `folder` (`scan_runs`), with a line for each folder skipped and why: a
    failed, interrupted or damaged run is never read as a result."""
    runs, skipped = scan_runs(folder)
    for why in skipped:
        print(f"skipping {why}")
    return runs


def runs_table(folder: str | Path) -> pd.DataFrame:
    """One row per complete run in `folder` (`FinishedRun.summary`)."""
    runs = find_runs(folder)
    if not runs:
        raise FileNotFoundError(f"no finished runs in {folder}")
    return pd.DataFrame([r.summary() for r in runs])
