import functools
import hashlib
import http.server
import io
import threading
import zipfile

import pytest

from ladnn.fetch import FetchError, Source, fetch, verify_tree


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
    assert verify_tree(dest, hashes) == {"ok": 2, "missing": [], "mismatched": []}
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
    assert all(("1fc10ba9" in s.url) or ("39a5fca0" in s.url) for s in srcs)
    assert all(s.sha256 or s.extract for s in srcs) and len(srcs) == 2 + 9
