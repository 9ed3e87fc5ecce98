import functools
import hashlib
import http.server
import io
import os
import shutil
import threading
import zipfile
from pathlib import Path
from typing import ClassVar

import pytest

from ladnn.fetch import FetchError, Source, fetch, manifest, verify_tree


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    return buf.getvalue()


def test_fetch_verifies_extracts_and_keeps(server, tmp_path):
    www, url = server
    (www / "a.csv").write_bytes(b"imgname\n")
    (www / "imgs.zip").write_bytes(_zip({"CT_COVID/x.png": b"png-bytes"}))
    hashes = {"la-dnn/a.csv": sha(b"imgname\n"), "covid-ct/CT_COVID/x.png": sha(b"png-bytes")}
    srcs = [Source(f"{url}/a.csv", "la-dnn/a.csv", sha(b"imgname\n")),
            Source(f"{url}/imgs.zip", "covid-ct", None, extract=True)]
    dest = tmp_path / "data"
    r = fetch(dest, srcs, hashes)
    assert (dest / "la-dnn/a.csv").read_bytes() == b"imgname\n"
    assert (dest / "covid-ct/CT_COVID/x.png").read_bytes() == b"png-bytes"
    assert verify_tree(dest, hashes) == {"ok": 2, "missing": [], "mismatched": [], "absent_d1": []}
    assert r["downloaded"] == ["la-dnn/a.csv", "covid-ct"]
    assert fetch(dest, srcs[:1], hashes)["kept"] == ["la-dnn/a.csv"]


def test_bad_hash_leaves_the_good_copy(server, tmp_path):
    www, url = server
    dest = tmp_path / "data"
    (dest / "la-dnn").mkdir(parents=True)
    (dest / "la-dnn/a.csv").write_bytes(b"old good")
    (www / "a.csv").write_bytes(b"tampered")
    with pytest.raises(FetchError, match="SHA-256 mismatch"):
        fetch(dest, [Source(f"{url}/a.csv", "la-dnn/a.csv", sha(b"the real one"))], {})
    assert (dest / "la-dnn/a.csv").read_bytes() == b"old good"
    assert [p.name for p in dest.iterdir()] == ["la-dnn"]  # no temporary left behind


@pytest.mark.parametrize("member,msg", [("../evil.png", "unsafe path"), ("/etc/evil", "unsafe path"),
                                        ("CT_COVID/unknown.png", "not in the manifest")])
def test_unsafe_or_unknown_members_are_refused(server, tmp_path, member, msg):
    www, url = server
    (www / "z.zip").write_bytes(_zip({"CT_COVID/x.png": b"ok", member: b"bad"}))
    dest = tmp_path / "data"
    with pytest.raises(FetchError, match=msg):
        fetch(dest, [Source(f"{url}/z.zip", "covid-ct", None, True)], {"covid-ct/CT_COVID/x.png": sha(b"ok")})
    assert not (dest / "covid-ct").exists() and not (tmp_path / "evil.png").exists()


def test_wrong_member_content_writes_nothing(server, tmp_path):
    www, url = server
    (www / "z.zip").write_bytes(_zip({"CT_COVID/x.png": b"changed"}))
    with pytest.raises(FetchError, match="wrong SHA-256"):
        fetch(tmp_path / "d", [Source(f"{url}/z.zip", "covid-ct", None, True)], {"covid-ct/CT_COVID/x.png": sha(b"ok")})
    assert not (tmp_path / "d/covid-ct").exists()


def test_unreachable_url_is_a_clear_error(tmp_path):
    with pytest.raises(FetchError, match="could not download http://127.0.0.1:9/x"):
        fetch(tmp_path, [Source("http://127.0.0.1:9/x", "x", "0" * 64)], {})


def test_default_sources_are_pinned():
    from ladnn.fetch import default_sources

    srcs = default_sources()
    assert all(("1fc10ba9" in s.url) or ("39a5fca0" in s.url) or ("714a3163" in s.url) for s in srcs)
    assert all(s.sha256 or s.extract for s in srcs) and len(srcs) == 3 + 9 + 8
    d1 = [s for s in srcs if s.dest.endswith(".zip")]
    assert len(d1) == 11 and all(s.optional for s in d1)
    assert sum(s.sha256.startswith("git-blob:") for s in d1) == 8


# ---------------------------------------------------------------- upstream stood in for by a local server
def _upstream_tree(data_dir, www):
    """The three upstream addresses laid out under `www` from the data copy: the two COVID-CT zips (one folder
    each), the LA-DNN files at their paths (the three D1 archives we hold; the eight others are absent: 404), and
    the negatives' patient file with two derived columns, as upstream has it."""
    img = data_dir / "covid-ct" / "Images-processed"
    (www / "covid" / "Images-processed").mkdir(parents=True)
    for name in ("CT_COVID", "CT_NonCOVID"):
        with zipfile.ZipFile(www / "covid" / "Images-processed" / f"{name}.zip", "w") as z:
            for f in sorted((img / name).iterdir()):
                z.write(f, f"{name}/{f.name}")
    shutil.copytree(data_dir / "la-dnn", www / "la")
    meta = (data_dir / "covid-ct" / "NonCOVID-CT-MetaInfo.csv").read_bytes()
    (www / "meta.csv").write_bytes(meta.replace(b"\r\n", b",derived,42\r\n"))


class _Flaky(http.server.SimpleHTTPRequestHandler):
    """Serves `www`; the first `fail` requests for a path answer 503, and paths in `cut` send half their bytes."""
    fail: ClassVar[dict] = {}
    cut: ClassVar[set] = set()

    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.fail.get(self.path, 0) > 0:
            self.fail[self.path] -= 1
            self.send_error(503)
            return
        if self.path in self.cut:
            body = Path(self.translate_path(self.path)).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:len(body) // 2])
            return
        super().do_GET()


@pytest.fixture(scope="module")
def upstream(data_dir, tmp_path_factory):
    www = tmp_path_factory.mktemp("upstream")
    _upstream_tree(data_dir, www)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Flaky, directory=str(www)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield www, {"LADNN_COVID_CT_URL": f"{url}/covid", "LADNN_LA_DNN_URL": f"{url}/la",
                "LADNN_NONCOVID_META_URL": f"{url}/meta.csv"}
    httpd.shutdown()


@pytest.fixture
def quick_retries(monkeypatch):
    import ladnn.fetch as F

    monkeypatch.setattr(F, "BACKOFF_S", 0.01)


def test_a_fresh_fetch_from_upstream_gives_the_reference_copy(upstream, tmp_path, monkeypatch, quick_retries,
                                                              capsys):
    from ladnn.data import check
    from ladnn.fetch import ensure

    _, env = upstream
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("LADNN_DATA_DIR", raising=False)
    _Flaky.fail = {"/la/data_split/test_meta.csv": 2}  # a server error, twice: retried
    dest = ensure(tmp_path / "data", tmp_path / "nothing-here")
    assert "retrying" in capsys.readouterr().err
    v = verify_tree(dest)
    assert v["ok"] == len(manifest()) - 8 and v["missing"] == [] and v["mismatched"] == [] and len(v["absent_d1"]) == 8
    monkeypatch.setenv("LADNN_DATA_DIR", str(dest))
    r = check(dest)
    assert r["D0"]["covid"] == 349 and r["D1"]["found"] == 76
    z = r["D1"]["archives"]
    assert z["pinned"] == 11 and len(z["verified"]) == 3 and len(z["absent"]) == 8


def test_a_truncated_archive_is_retried_then_refused(upstream, tmp_path, quick_retries):
    _, env = upstream
    _Flaky.cut = {"/covid/Images-processed/CT_COVID.zip"}
    try:
        with pytest.raises(FetchError, match="after 4 attempts: truncated"):
            fetch(tmp_path / "d", [Source(f"{env['LADNN_COVID_CT_URL']}/Images-processed/CT_COVID.zip",
                                          "covid-ct/Images-processed", None, True)])
    finally:
        _Flaky.cut = set()
    assert not (tmp_path / "d" / "covid-ct").exists()


def test_a_wrong_hash_from_upstream_writes_nothing(upstream, tmp_path):
    www, env = upstream
    (www / "la" / "bad.csv").write_bytes(b"imgname\nchanged\n")
    with pytest.raises(FetchError, match="SHA-256 mismatch"):
        fetch(tmp_path / "d", [Source(f"{env['LADNN_LA_DNN_URL']}/bad.csv", "la-dnn/bad.csv", sha(b"imgname\n"))])
    assert not (tmp_path / "d" / "la-dnn").exists()


def test_an_archive_that_expands_past_the_cap_is_refused_before_extraction(server, tmp_path, monkeypatch):
    import ladnn.fetch as F

    www, url = server
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("CT_COVID/x.png", b"\0" * 200_000)  # 200 kB of zeros: a few hundred bytes compressed
    (www / "bomb.zip").write_bytes(buf.getvalue())
    monkeypatch.setattr(F, "MAX_MEMBER", 100_000)
    with pytest.raises(FetchError, match="over the cap of 100000 bytes"):
        fetch(tmp_path / "d", [Source(f"{url}/bomb.zip", "covid-ct", None, True)],
              {"covid-ct/CT_COVID/x.png": sha(b"\0" * 200_000)})
    assert not (tmp_path / "d" / "covid-ct").exists()
    monkeypatch.setattr(F, "MAX_MEMBER", 1 << 30)
    monkeypatch.setattr(F, "MAX_EXTRACTED", 100_000)
    with pytest.raises(FetchError, match="would extract 200000 bytes"):
        fetch(tmp_path / "d", [Source(f"{url}/bomb.zip", "covid-ct", None, True)],
              {"covid-ct/CT_COVID/x.png": sha(b"\0" * 200_000)})


def test_missing_and_unexpected_members_are_all_named(server, tmp_path):
    www, url = server
    (www / "z.zip").write_bytes(_zip({"CT_COVID/x.png": b"ok", "CT_COVID/new1.png": b"1", "CT_COVID/new2.png": b"2"}))
    hashes = {f"covid-ct/CT_COVID/{n}": sha(b"ok") for n in ("x.png", "gone1.png", "gone2.png")}
    with pytest.raises(FetchError) as e:
        fetch(tmp_path / "d", [Source(f"{url}/z.zip", "covid-ct", None, True)], hashes)
    msg = str(e.value)
    assert "2 member(s) the manifest expects are missing" in msg and "gone1.png" in msg and "gone2.png" in msg
    assert "2 member(s) are not in the manifest" in msg and "new1.png" in msg and "new2.png" in msg


def test_offline_with_no_data_stops_at_once_with_one_line(tmp_path):
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items() if k != "LADNN_DATA_DIR"}
    env.update(LADNN_COVID_CT_URL="http://127.0.0.1:9/covid")  # nothing listens: the server is gone
    t = time.time()
    r = subprocess.run([sys.executable, "-m", "ladnn.fetch", str(tmp_path / "data"), str(tmp_path / "none")],
                       capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1], check=False)
    assert time.time() - t < 5 and r.returncode == 1 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "LADNN_DATA_DIR" in lines[0] and "127.0.0.1:9" in lines[0]
    assert not (tmp_path / "data").exists()


def test_the_d1_archives_we_hold_have_the_blob_ids_of_the_pinned_commit(data_dir):
    from ladnn.fetch import digest

    want = {"5.16/5.16_nocovidct.zip": "74b78acb", "6.10/6.10_nocovidct.zip": "8773c373",
            "6.2/6.2_covidct.zip": "9e03923c"}
    for rel, prefix in want.items():
        assert digest(data_dir / "la-dnn" / "New_data" / rel, "git-blob").startswith(prefix)


def test_fetch_works_before_tqdm_is_installed(server, tmp_path, monkeypatch):
    """The Makefile's data step runs before the install: without tqdm there is no progress bar, and no error."""
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    www, url = server
    (www / "a.csv").write_bytes(b"imgname\n")
    (www / "imgs.zip").write_bytes(_zip({"CT_COVID/x.png": b"png-bytes"}))
    r = fetch(tmp_path / "d", [Source(f"{url}/a.csv", "la-dnn/a.csv", sha(b"imgname\n")),
                               Source(f"{url}/imgs.zip", "covid-ct", None, True)],
              {"covid-ct/CT_COVID/x.png": sha(b"png-bytes")})
    assert r["downloaded"] == ["la-dnn/a.csv", "covid-ct"]
