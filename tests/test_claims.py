"""One worker per run on many machines: claims with heartbeats, a race for one run, the takeover of a killed run's
claim, `--plan` leaving out a run being trained, profiles that do not depend on the network, the hub probe through a
proxy, and a GPU asked for that is missing."""
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import ClassVar

import pytest
import yaml
from conftest import ROOT

import ladnn.rundir as R
from ladnn.profiles import load_profile, plan, training_runs
from ladnn.rundir import Claim, RunClaimedError, RunWriter, claim_path, read_claim

HOLD = textwrap.dedent("""
    import sys, time
    from ladnn.rundir import Claim, RunClaimedError
    import ladnn.rundir as R
    R.HEARTBEAT_S = 0.2
    start = float(sys.argv[2])
    while time.time() < start:
        time.sleep(0.001)
    try:
        c = Claim(sys.argv[1]).acquire()
    except RunClaimedError as e:
        print("REFUSED", e, flush=True)
        sys.exit(3)
    print("CLAIMED", flush=True)
    time.sleep(float(sys.argv[3]))
    c.release()
""")


def _holder(run, start: float, hold: float, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLD, str(run), str(start), str(hold)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})


def test_two_processes_racing_for_one_run_one_wins(tmp_path):
    run = tmp_path / "runs" / "r"
    for _ in range(3):  # three races, to catch a lucky ordering
        start = time.time() + 1.5
        procs = [_holder(run, start, 1.0) for _ in range(2)]
        outs = [p.communicate(timeout=60)[0] for p in procs]
        codes = sorted(p.returncode for p in procs)
        assert codes == [0, 3], outs
        refused = next(o for o in outs if o.startswith("REFUSED"))
        assert str(run) in refused and "another worker" in refused and "pid" in refused
        assert not claim_path(run).exists()  # released by the winner


def test_a_killed_runs_claim_is_taken_over_once_stale(tmp_path, monkeypatch):
    run = tmp_path / "r"
    p = _holder(run, 0, 600)
    assert p.stdout.readline().strip() == "CLAIMED"
    with pytest.raises(RunClaimedError, match="heartbeat"):  # alive: refused
        Claim(run).acquire()
    time.sleep(0.5)
    assert read_claim(run)["age"] < 0.45  # its heartbeat keeps the claim fresh
    p.send_signal(signal.SIGKILL)
    p.wait()
    monkeypatch.setattr(R, "HEARTBEAT_S", 0.2)  # as the killed worker's: a limit of 1 s is 5 heartbeats
    monkeypatch.setenv("LADNN_CLAIM_STALE_S", "1")
    with pytest.raises(RunClaimedError):  # killed just now: not yet stale
        Claim(run).acquire()
    time.sleep(1.3)
    c = Claim(run).acquire()
    assert c.took_over and c.took_over["pid"] == p.pid and c.owned()
    assert json.loads(claim_path(run).read_text())["pid"] == os.getpid()
    c.release()
    assert read_claim(run) is None


def test_rundir_claims_while_it_trains_and_releases_after(tmp_path):
    run = tmp_path / "r"
    r = RunWriter(run)
    r.start({"x": 1})
    assert read_claim(run)["pid"] == os.getpid()
    st = json.loads((r.path / "status.json").read_text())  # its own folder, beside the run folder
    assert st["status"] == "running" and st["pid"] == os.getpid() and st["host"]
    with pytest.raises(RunClaimedError):
        RunWriter(run).check()
    r.fail(RuntimeError("boom"))
    assert read_claim(run) is None


def test_plan_leaves_out_a_run_being_trained(tmp_path, capsys):
    (tmp_path / "profiles").mkdir()
    shutil.copy(ROOT / "profiles" / "smoke.yaml", tmp_path / "profiles" / "smoke.yaml")
    todo = training_runs(load_profile("smoke", tmp_path), tmp_path)
    busy = todo[0][2]
    p = _holder(busy, 0, 600)
    try:
        assert p.stdout.readline().strip() == "CLAIMED"
        for _ in range(2):  # twice while the job runs: never listed
            cmds = plan("smoke", tmp_path)
            assert len(cmds) == len(todo) - 1 and str(busy) not in " ".join(cmds)
            assert f"{busy} left out: being trained" in capsys.readouterr().err
    finally:
        p.kill()
        p.wait()
    os.utime(claim_path(busy), (time.time() - 3600, time.time() - 3600))  # its heartbeat stopped an hour ago
    assert str(busy) in " ".join(plan("smoke", tmp_path))


def test_a_profile_trains_the_same_runs_with_or_without_the_hub(monkeypatch, capsys):
    import ladnn.models as M

    counts = {}
    for reachable in (True, False):
        monkeypatch.setattr(M, "hub_reachable", lambda timeout=3.0, r=reachable: r)
        prof = load_profile("gpu", ROOT)
        counts[reachable] = len(training_runs(prof, ROOT))
        assert all("--with-optional-backbones" in why for why in prof["left_out"].values())
    assert counts[True] == counts[False] == 51
    monkeypatch.setattr(M, "hub_reachable", lambda timeout=3.0: True)
    asked = load_profile("gpu", ROOT, optional=True)
    assert len(training_runs(asked, ROOT)) > 51 and set(asked["joined"]) >= {"resnet18", "vgg16"}


def test_optional_backbones_join_only_when_asked_and_with_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: the hub is unreachable
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "p.yaml").write_text(yaml.safe_dump({
        "description": "x", "matrix": {"backbone": ["efficientnet_lite0"], "seed": [0]},
        "optional_backbones": ["resnet18", "efficientnet_lite1"]}))
    assert [c.backbone for c in load_profile("p", tmp_path)["runs"]] == ["efficientnet_lite0"]
    prof = load_profile("p", tmp_path, optional=True)
    assert [c.backbone for c in prof["runs"]] == ["efficientnet_lite0", "efficientnet_lite1"]
    assert list(prof["left_out"]) == ["resnet18"] and "unreachable" in prof["left_out"]["resnet18"]
    wdir = tmp_path / "weights"
    wdir.mkdir()
    (wdir / "resnet18.tv_in1k.safetensors").write_bytes(b"x")
    monkeypatch.setenv("LADNN_WEIGHTS_DIR", str(wdir))
    assert "resnet18" in [c.backbone for c in load_profile("p", tmp_path, optional=True)["runs"]]


class _Proxy(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list] = []

    def do_HEAD(self):
        _Proxy.seen.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


def test_the_hub_probe_goes_through_the_proxy(monkeypatch):
    from ladnn.models import hub_reachable

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", "http://hub.invalid")  # resolvable only through the proxy
        for var in ("NO_PROXY", "no_proxy", "HF_HUB_OFFLINE"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv("HTTP_PROXY", raising=False)
        monkeypatch.delenv("http_proxy", raising=False)
        assert not hub_reachable(2)
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{srv.server_port}")
        assert hub_reachable(2) and _Proxy.seen[-1].startswith("http://hub.invalid")
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert not hub_reachable(2)
    finally:
        srv.shutdown()


def test_a_gpu_asked_for_and_missing_is_an_error():
    import torch

    from ladnn.infer import pick_device

    if torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="not training on the CPU"):
            pick_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(RuntimeError, match="asked for but this machine shows no GPU"):
            pick_device("cuda")
        assert pick_device("auto").type == "cpu"
