"""Fenced claims: a stale limit shorter than the heartbeat allows is refused; a worker paused past the stale limit
(a suspended job) stops when it resumes and never writes into, completes or removes the folder of the worker that
took its run over; a takeover never removes a claim refreshed or replaced after it was judged stale; a `--plan` line
run twice trains once. Races are replayed in a fixed order (a claim's heartbeat set back, a step of one worker run
inside another's) rather than waited for."""
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_metrics

import ladnn.rundir as R
from ladnn.rundir import Claim, RunClaimedError, RunWriter, claim_path, read_claim, status

# ClaimLostError is what the fencing adds; before it, a class nothing raises (so the old code fails on the behaviour)
LOST = getattr(R, "ClaimLostError", None) or type("ClaimLostError", (Exception,), {})
RESULTS = ("history.csv", "model.pt", "predictions.csv", "metrics.json")


def _silence(run, seconds: float = 3600) -> None:
    """The claim's last heartbeat `seconds` ago: its worker paused (a suspended job) or killed."""
    t = time.time() - seconds
    os.utime(claim_path(run), (t, t))


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


def _finished(run, worker: str) -> RunWriter:
    r = RunWriter(run)
    r.start({"worker": worker})
    for f in RESULTS:
        r.write(f, worker)
    r.finish()
    return r


def _replacement_written(run, first: str, second: str) -> tuple[dict[str, bytes], RunWriter]:
    """A finished run by `first` (its files returned), and `second`'s replacement, written but not finished."""
    _finished(run, first)
    before = _files(run)
    r = RunWriter(run)
    r.start({"worker": second}, overwrite=True)
    for f in RESULTS:
        r.write(f, second)
    return before, r


# ---------------------------------------------------------------- A: a stale limit below the heartbeat's margin
def test_a_stale_limit_below_three_heartbeats_is_refused(tmp_path, monkeypatch):
    run = tmp_path / "r"
    holder = Claim(run).acquire()
    _silence(run, 25)  # a live worker whose beat is late
    monkeypatch.setenv("LADNN_CLAIM_STALE_S", "20")
    with pytest.raises(ValueError, match=r"LADNN_CLAIM_STALE_S='20'.* at least 90 \(3 heartbeats of 30 s\)"):
        Claim(run).acquire()  # before: taken over, and both workers trained the run
    assert holder.owned()
    for bad in ("89", "nan", "ten minutes"):
        monkeypatch.setenv("LADNN_CLAIM_STALE_S", bad)
        for refused in (lambda: read_claim(tmp_path / "nobody"), lambda: RunWriter(tmp_path / "x").check()):
            with pytest.raises(ValueError, match="LADNN_CLAIM_STALE_S.*at least 90"):
                refused()
    assert not (tmp_path / "x").exists() and not claim_path(tmp_path / "x").exists()
    monkeypatch.setenv("LADNN_CLAIM_STALE_S", "90")
    with pytest.raises(RunClaimedError, match="another worker"):  # 25 s: live under the shortest limit
        Claim(run).acquire()
    holder.release()
    assert read_claim(run) is None


def test_a_plan_or_build_with_a_short_stale_limit_stops_with_one_line(monkeypatch, capsys, tmp_path):
    """Checked first, whatever the runs folder holds (a plan reads claims only of runs still to train)."""
    from conftest import book_copy

    from ladnn.book import main

    root = book_copy(tmp_path)
    monkeypatch.setenv("LADNN_CLAIM_STALE_S", "5")
    for extra in (["--plan"], ["--notebooks-only"]):
        assert main(["--profile", "smoke", "--root", str(root), *extra]) == 1
        err = capsys.readouterr().err
        assert err.startswith("book build failed: LADNN_CLAIM_STALE_S='5'") and "Traceback" not in err
    assert not (root / "runs").exists()


# ---------------------------------------------------------------- B: fencing
def test_a_paused_worker_stops_and_never_marks_the_new_workers_run_complete(tmp_path):
    run = tmp_path / "r"
    a = RunWriter(run)
    a.start({"worker": "a"})
    a.write("history.csv", "a")
    _silence(run)  # a is suspended: its heartbeat stops
    b = RunWriter(run)
    b.start({"worker": "b"})  # takes a's stale claim over
    b.write("history.csv", "b")
    for step in (lambda: a.write("model.pt", "a"), a.finish):  # a resumes
        with pytest.raises(LOST) as lost:
            step()
        msg = str(lost.value)
        assert str(run) in msg and "lost its claim" in msg and f"held by host {os.uname().nodename}" in msg
    a.fail(lost.value)  # what `ladnn.train.train` does with the error: a touches nothing of b's
    assert status(run) == "absent" and b.claim.owned()
    assert _files(b.path).keys() == {"config.json", "status.json", "history.csv"}
    assert (b.path / "history.csv").read_text() == "b" and status(b.path) == "running"
    for f in RESULTS:
        b.write(f, "b")
    b.finish()
    assert json.loads((run / "config.json").read_text()) == {"worker": "b"}
    assert all((run / f).read_text() == "b" for f in RESULTS) and status(run) == "complete"
    assert read_claim(run) is None and sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_a_write_already_past_its_check_never_lands_in_the_new_workers_folder(tmp_path, monkeypatch):
    """A worker paused between its check and its write: the write fails, and the folder of the worker that took
    the run over is as that worker left it."""
    run = tmp_path / "r"
    a = RunWriter(run)
    a.start({"worker": "a"})
    _silence(run)
    b = RunWriter(run)
    b.start({"worker": "b"})
    before = _files(b.path)
    monkeypatch.setattr(a.claim, "check", lambda doing: None, raising=False)  # a checked just before it paused
    with pytest.raises(OSError):
        a.write("model.pt", "a")
    assert _files(b.path) == before and not (run / "model.pt").exists()
    assert not (a.path != b.path and a.path.exists())  # a's own folder, removed by b, is not made again
    b.fail(RuntimeError("stop"))


def test_a_worker_paused_inside_finish_cannot_move_its_run_into_place(tmp_path, monkeypatch):
    """Replacing a finished run: the worker passes its last check, is suspended, and another takes the run over;
    when it resumes, the finished run is still there, byte-identical, and it stops."""
    run = tmp_path / "r"
    before, a = _replacement_written(run, "old", "a")
    check, b = getattr(a.claim, "check", lambda doing: None), RunWriter(run)

    def suspended_after(doing: str) -> None:
        check(doing)
        if doing == "moving the run into place" and b.claim is None:
            _silence(run)
            b.start({"worker": "b"}, overwrite=True)

    monkeypatch.setattr(a.claim, "check", suspended_after, raising=False)
    with pytest.raises(LOST):
        a.finish()
    assert _files(run) == before and b.claim.owned()
    b.fail(RuntimeError("stop"))
    assert _files(run) == before and sorted(p.name for p in tmp_path.iterdir()) == ["r"]


WORKER = textwrap.dedent("""
    import sys
    from ladnn.rundir import RunWriter
    r = RunWriter(sys.argv[1])
    r.start({"worker": "a"})
    r.write("history.csv", "a")
    print("STARTED", flush=True)
    sys.stdin.readline()
    try:
        for f in ("model.pt", "predictions.csv", "metrics.json"):
            r.write(f, "a")
        r.finish()
    except Exception as e:
        r.fail(e)
        print("STOPPED", type(e).__name__, e, flush=True)
        sys.exit(2)
    print("FINISHED", flush=True)
""")


def test_a_suspended_process_resumes_after_a_takeover_and_exits_with_claim_lost(tmp_path):
    run = tmp_path / "r"
    a = subprocess.Popen([sys.executable, "-c", WORKER, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    try:
        assert a.stdout.readline().strip() == "STARTED"
        a.send_signal(signal.SIGSTOP)  # SLURM's suspend: the whole process, heartbeat included
        _silence(run)
        b = RunWriter(run)
        b.start({"worker": "b"})
        b.write("history.csv", "b")
        a.send_signal(signal.SIGCONT)
        out, _ = a.communicate("go\n", timeout=60)
    finally:
        a.kill()
    assert a.returncode == 2 and "STOPPED ClaimLostError" in out, out
    assert str(run) in out and f"pid {os.getpid()}" in out  # names the run and who holds it now
    assert _files(b.path).keys() == {"config.json", "status.json", "history.csv"} and status(run) == "absent"
    for f in RESULTS:
        b.write(f, "b")
    b.finish()
    assert all((run / f).read_text() == "b" for f in RESULTS) and json.loads((run / "config.json").read_text()) == {
        "worker": "b"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


# ---------------------------------------------------------------- C: an atomic takeover
def _once_before_rename(monkeypatch, src: Path, step) -> None:
    """Run `step` once, just before the first rename of `src` to a `.stale-` name (a takeover moving it aside)."""
    real = os.rename

    def rename(a, b, *args, **kw):
        if Path(a) == src and ".stale-" in str(b):
            monkeypatch.setattr(os, "rename", real)
            step()
        return real(a, b, *args, **kw)

    monkeypatch.setattr(os, "rename", rename)


def test_a_claim_refreshed_after_it_was_judged_stale_is_never_taken(tmp_path, monkeypatch):
    run = tmp_path / "r"
    holder = Claim(run).acquire()
    _silence(run)  # judged stale by the taker below...
    _once_before_rename(monkeypatch, claim_path(run), lambda: os.utime(claim_path(run)))  # ...then it beats
    with pytest.raises(RunClaimedError, match="changed while it was being taken over"):
        Claim(run).acquire()
    assert holder.owned() and read_claim(run)["live"]
    holder.release()
    assert read_claim(run) is None and list(tmp_path.iterdir()) == []


def test_two_workers_taking_over_one_stale_claim_never_both_hold_it(tmp_path, monkeypatch):
    run = tmp_path / "r"
    f = claim_path(run)
    f.write_text(json.dumps({"host": "gone", "pid": 1, "token": "killed", "started": "2020-01-01T00:00:00"}))
    _silence(run)
    x, y = Claim(run), Claim(run)
    _once_before_rename(monkeypatch, f, y.acquire)  # both judged it stale; y took it over first
    with pytest.raises(RunClaimedError):
        x.acquire()
    assert y.owned() and y.took_over["token"] == "killed" and not x.owned()
    y.release()
    assert list(tmp_path.iterdir()) == []


def test_a_claim_made_while_another_is_moved_aside_leaves_one_holder(tmp_path, monkeypatch):
    """The taker moves a claim aside; its worker beats (through its open file) and a third worker claims the empty
    place before it can be put back: the third holds the run, the taker is refused and the first stops at its next
    check."""
    run = tmp_path / "r"
    first = RunWriter(run)
    first.start({"worker": "first"})
    _silence(run)
    third = Claim(run)
    real = os.rename

    def rename(a, b, *args, **kw):
        out = real(a, b, *args, **kw)
        if Path(a) == claim_path(run) and ".stale-" in str(b):
            monkeypatch.setattr(os, "rename", real)
            os.utime(b)
            third.acquire()
        return out

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(RunClaimedError):
        Claim(run).acquire()
    assert third.owned() and not first.claim.owned()
    with pytest.raises(LOST):
        first.write("model.pt", "first")
    first.fail(RuntimeError("lost"))
    assert third.owned() and [p.name for p in tmp_path.iterdir()] == [claim_path(run).name]
    third.release()


TAKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ladnn.rundir import Claim, RunClaimedError
    print("READY", flush=True)
    while not Path(sys.argv[2]).exists():
        time.sleep(0.001)
    try:
        c = Claim(sys.argv[1]).acquire()
        time.sleep(0.3)  # training
        getattr(c, "check", lambda doing: None)("finishing")  # the fencing; before it a worker went on regardless
    except RunClaimedError as e:
        print("REFUSED", type(e).__name__, e, flush=True)
        sys.exit(3)
    print("FINISHED", flush=True)
    c.release()
""")


def test_processes_taking_over_one_stale_claim_at_once_one_finishes(tmp_path):
    run, go = tmp_path / "r", tmp_path / "go"
    for rnd in range(2):
        claim_path(run).write_text(json.dumps({"host": "gone", "pid": 1, "token": f"killed-{rnd}"}))
        _silence(run)
        procs = [subprocess.Popen([sys.executable, "-c", TAKER, str(run), str(go)], stdout=subprocess.PIPE,
                                  text=True) for _ in range(4)]
        assert all(p.stdout.readline().strip() == "READY" for p in procs)
        go.touch()
        outs = [p.communicate(timeout=60)[0] for p in procs]
        go.unlink()
        assert sorted(p.returncode for p in procs) == [0, 3, 3, 3], outs
        assert read_claim(run) is None


# ---------------------------------------------------------------- E: a plan line run twice
def _fake_training(monkeypatch) -> list:
    """`ladnn.train.train` with its data and its training replaced: the run folder as a real run leaves it."""
    import ladnn.train as T

    calls = []

    def fake(cfg, run, device, data, model, imgs, t0):
        calls.append(cfg)
        for f in ("history.csv", "model.pt", "predictions.csv"):
            run.write(f, "x")
        run.write("metrics.json", json.dumps(run_metrics().to_dict()))
        run.finish()
        return run_metrics()

    monkeypatch.setattr(T, "prepare_inputs", lambda cfg, data_dir, device: (None, None, None))
    monkeypatch.setattr(T, "_train", fake)
    return calls


def test_a_plan_line_run_twice_trains_once(tmp_path, monkeypatch, capsys):
    from ladnn.cli import main
    from ladnn.profiles import load_profile, plan, training_runs

    monkeypatch.setenv("LADNN_DATA_DIR", os.environ["LADNN_DATA_DIR"])  # `--data-dir` sets it: restored after
    (tmp_path / "profiles").mkdir()
    shutil.copy(ROOT / "profiles" / "smoke.yaml", tmp_path / "profiles" / "smoke.yaml")
    (_, cfg, out), (_, cfg2, out2) = training_runs(load_profile("smoke", tmp_path), tmp_path)[:2]
    r = RunWriter(out2)  # finished with another config: its line replaces it
    r.start({**cfg2.to_dict(), "epochs": 9})
    for f in ("history.csv", "model.pt", "predictions.csv"):
        r.write(f, "x")
    r.write("metrics.json", json.dumps(run_metrics().to_dict()))
    r.finish()
    lines = plan("smoke", tmp_path)
    line, line2 = (next(ln for ln in lines if f"--out {o}" in ln) for o in (out, out2))
    calls = _fake_training(monkeypatch)
    for ln, o, c in ((line, out, cfg), (line2, out2, cfg2)):
        args = shlex.split(ln)[1:]
        assert main(args) == 0 and calls == [c] and status(o) == "complete"
        done = _files(o)
        capsys.readouterr()
        assert main(args) == 0 and calls == [c], "the second run of the line trained again"
        assert _files(o) == done and "not training again" in capsys.readouterr().out
        assert json.loads((o / "config.json").read_text()) == c.to_dict()
        calls.clear()
    assert "--overwrite" not in shlex.split(line) and "--overwrite" in shlex.split(line2)  # only to replace a run


def test_a_replacement_killed_between_its_two_renames_leaves_the_finished_run(tmp_path, monkeypatch):
    """`finish` moves the finished run aside (`.NAME.old-*`), then the new one in. A kill between the two renames
    left no run folder; the next worker on the run puts the finished run back before anything else."""
    run = tmp_path / "r"
    want, r = _replacement_written(run, "first", "second")
    real = os.rename

    def killed_after_the_first(a, b, *args, **kw):
        real(a, b, *args, **kw)
        if ".old-" in str(b):
            raise KeyboardInterrupt("killed")  # as a SIGKILL there: nothing after runs

    monkeypatch.setattr(os, "rename", killed_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        r.finish()
    monkeypatch.setattr(os, "rename", real)
    r.claim._stop.set()  # the killed worker's heartbeat stops with it
    _silence(run)
    assert not run.exists() and [p.name.split("-")[0] for p in tmp_path.glob(".r.old-*")] == [".r.old"]
    third = RunWriter(run)
    assert third.take(overwrite=True) == "complete"  # put back under the claim, then judged
    assert _files(run) == want and status(run) == "complete" and not list(tmp_path.glob(".r.old-*"))
    third.release()
