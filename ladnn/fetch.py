"""`ladnn data fetch`: download the upstream data, pinned to commits, verified, extracted safely.

The COVID-CT archives' own hashes are not known to us (our offline copy came extracted), so each extracted image is
checked against `manifest.tsv`, the SHA-256 of every file of the reference copy. The LA-DNN files carry their own
hash: a SHA-256, or, for the eight D1 archives whose bytes we never held, the git blob id that the pinned LA-DNN
commit records for them (SHA-1 over `blob <size>\\0` and the bytes: `git hash-object` gives the same).

Downloads go through urllib, so $HTTPS_PROXY, $HTTP_PROXY and $NO_PROXY apply; each is retried with backoff, and an
archive is refused before extraction when it, or any member, is larger than its cap, or when its members are not the
ones the manifest expects (the report names every missing and unexpected member). $LADNN_COVID_CT_URL and
$LADNN_LA_DNN_URL replace the upstream addresses (a mirror, or the tests' local server).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath

COVID_CT = "https://github.com/UCSD-AI4H/COVID-CT/raw/1fc10ba9d4cb35944766fd8fc3c139fa60ee13a1"
LA_DNN = ("https://raw.githubusercontent.com/xiaoxuegao499/LA-DNN-for-COVID-19-diagnosis/"
          "39a5fca0f83652ffa90e6569b6253659e438af73")
# The patient of every COVID-CT negative: not in the two zips; kept in boyercb/bst263-final-project (commit 714a3163)
# with two derived columns more. Its first two columns are kept and checked against the manifest.
NONCOVID_META = ("https://raw.githubusercontent.com/boyercb/bst263-final-project/714a3163/images/"
                 "NonCOVID-CT-MetaInfo.csv")
D1_ZIPS = "la-dnn/New_data/"  # the D1 archives: optional (the data set works without them), each pinned
MAX_ARCHIVE = 2 << 30  # bytes of one download
MAX_MEMBER = 64 << 20  # bytes of one extracted file (the largest COVID-CT image is under 4 MB)
MAX_EXTRACTED = 4 << 30  # bytes extracted from one archive
RETRIES, BACKOFF_S = 3, 2.0  # attempts after the first, and the first wait (doubled each time)


class FetchError(RuntimeError):
    pass


def _bar(iterable=None, **kw):
    """A tqdm progress bar, or none where tqdm is not installed yet (`python -m ladnn.fetch` runs before the
    install step of the Makefile)."""
    try:
        from tqdm import tqdm
    except ImportError:
        import contextlib

        class _Quiet(contextlib.AbstractContextManager):
            def __exit__(self, *exc):
                return None

            def __iter__(self):
                return iter(iterable)

            def update(self, n):
                pass

        return _Quiet()
    return tqdm(iterable, **kw)


@dataclass(frozen=True)
class Source:
    url: str
    dest: str  # path inside the data folder (for an archive that is extracted: the folder it is extracted into)
    sha256: str | None = None  # the download's digest (hex SHA-256, or `git-blob:<sha1>`); None: check each member
    extract: bool = False
    optional: bool = False  # a failed download is reported, not fatal (the D1 archives)
    columns: int | None = None  # a CSV of which only the first `columns` columns are kept (then checked)


def manifest() -> dict[str, str]:
    text = resources.files("ladnn").joinpath("manifest.tsv").read_text()
    return dict(line.split("\t") for line in text.splitlines() if line.strip())


def upstream() -> tuple[str, str, str]:
    """The COVID-CT and LA-DNN base addresses and the negatives' patient file: the pinned commits, or
    $LADNN_COVID_CT_URL, $LADNN_LA_DNN_URL and $LADNN_NONCOVID_META_URL."""
    return (os.environ.get("LADNN_COVID_CT_URL", COVID_CT).rstrip("/"),
            os.environ.get("LADNN_LA_DNN_URL", LA_DNN).rstrip("/"),
            os.environ.get("LADNN_NONCOVID_META_URL", NONCOVID_META))


def default_sources() -> list[Source]:
    m = manifest()
    covid_ct, la_dnn, meta = upstream()
    out = [Source(f"{covid_ct}/Images-processed/{n}.zip", "covid-ct/Images-processed", None, True)
           for n in ("CT_COVID", "CT_NonCOVID")]
    rel = "covid-ct/NonCOVID-CT-MetaInfo.csv"
    out.append(Source(meta, rel, m[rel], columns=2))
    for rel in sorted(k for k in m if k.startswith("la-dnn/")):
        up = rel.removeprefix("la-dnn/")
        out.append(Source(f"{la_dnn}/{urllib.parse.quote(up)}", rel, m[rel], optional=is_d1_zip(rel)))
    return out


def is_d1_zip(rel: str) -> bool:
    return rel.startswith(D1_ZIPS) and rel.endswith(".zip")


def digest(path: Path, kind: str = "sha256") -> str:
    """The file's hex digest: `sha256`, or `git-blob` (git's object id of the file's bytes)."""
    h = hashlib.sha256() if kind == "sha256" else hashlib.sha1()
    if kind == "git-blob":
        h.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def matches(path: Path, want: str) -> bool:
    """Whether a file has the pinned digest `want` (hex SHA-256 or `git-blob:<sha1>`)."""
    kind, _, value = want.rpartition(":")
    return digest(path, kind or "sha256") == value


def _attempt(url: str, to: Path, timeout: float, cap: int) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler())  # the proxy variables, read now
    with opener.open(url, timeout=timeout) as r, open(to, "wb") as fh:
        total = int(r.headers.get("Content-Length") or 0) or None
        if total and total > cap:
            raise FetchError(f"{url}: {total} bytes announced, over the cap of {cap}")
        got = 0
        with _bar(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], leave=False) as bar:
            for chunk in iter(lambda: r.read(1 << 16), b""):
                got += len(chunk)
                if got > cap:
                    raise FetchError(f"{url}: more than the cap of {cap} bytes")
                fh.write(chunk)
                bar.update(len(chunk))
        if total is not None and got != total:
            raise ConnectionError(f"truncated: {got} of {total} bytes")


def download(url: str, to: Path, timeout: float = 60, retries: int = RETRIES, backoff: float = BACKOFF_S,
             cap: int = MAX_ARCHIVE) -> None:
    """`url` into `to`, retried `retries` times with a doubling wait on a network error, a truncated body or a
    server error (5xx); a client error (404) or a cap exceeded is final. FetchError names the URL and the cause."""
    for k in range(retries + 1):
        try:
            return _attempt(url, to, timeout, cap)
        except FetchError:
            raise
        except urllib.error.HTTPError as e:
            if e.code < 500 or k == retries:
                raise FetchError(f"could not download {url}: HTTP {e.code} {e.reason}") from None
            why = f"HTTP {e.code}"
        except (OSError, ValueError) as e:  # URLError, timeouts, resets, a truncated body
            if k == retries:
                raise FetchError(f"could not download {url} after {retries + 1} attempts: {e}") from None
            why = str(e)
        wait = backoff * 2 ** k
        print(f"{url}: {why}; retrying in {wait:.0f} s ({k + 1}/{retries})", file=sys.stderr, flush=True)
        time.sleep(wait)


def _keep_columns(path: Path, n: int) -> None:
    """Keep the first `n` comma-separated columns of every line, line endings as they were."""
    out = []
    for line in path.read_bytes().splitlines(keepends=True):
        body = line.rstrip(b"\r\n")
        out.append(b",".join(body.split(b",")[:n]) + line[len(body):])
    path.write_bytes(b"".join(out))


def _safe_members(zf: zipfile.ZipFile, archive: str) -> list[zipfile.ZipInfo]:
    out = []
    for info in zf.infolist():
        p = PurePosixPath(info.filename)
        if p.is_absolute() or ".." in p.parts or "\\" in info.filename:
            raise FetchError(f"{archive}: unsafe path in archive: {info.filename!r}")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise FetchError(f"{archive}: archive holds a symbolic link: {info.filename!r}")
        if info.is_dir() or p.parts[0] == "__MACOSX" or p.name.startswith("."):
            continue
        out.append(info)
    return out


def _check_members(members: list[zipfile.ZipInfo], src: Source, hashes: dict[str, str]) -> None:
    """Before anything is extracted: every member within its cap, the total within its cap, and the members
    exactly those the manifest expects under the archive's folder (each missing and unexpected one named)."""
    big = [f"{i.filename} ({i.file_size} bytes)" for i in members if i.file_size > MAX_MEMBER]
    if big:
        raise FetchError(f"{src.url}: members over the cap of {MAX_MEMBER} bytes: {', '.join(big[:5])}; "
                         "nothing extracted")
    total = sum(i.file_size for i in members)
    if total > MAX_EXTRACTED:
        raise FetchError(f"{src.url}: would extract {total} bytes, over the cap of {MAX_EXTRACTED}; nothing extracted")
    got = {f"{src.dest}/{i.filename}" for i in members}
    tops = {PurePosixPath(i.filename).parts[0] for i in members} or {Path(urllib.parse.urlparse(src.url).path).stem}
    want = {k for k in hashes if any(k.startswith(f"{src.dest}/{t}/") for t in tops)}
    missing, extra = sorted(want - got), sorted(got - want)
    if missing or extra:
        lines = [f"{len(missing)} member(s) the manifest expects are missing", *missing[:10],
                 f"{len(extra)} member(s) are not in the manifest", *extra[:10]]
        raise FetchError(f"{src.url}: the archive's members are not the pinned ones; nothing extracted:\n  "
                         + "\n  ".join(lines))


def _copy_capped(fin, fout, cap: int, name: str) -> None:
    n = 0
    for chunk in iter(lambda: fin.read(1 << 20), b""):
        n += len(chunk)
        if n > cap:
            raise FetchError(f"{name}: expands past the cap of {cap} bytes; nothing extracted")
        fout.write(chunk)


def fetch(dest: str | Path, sources: list[Source] | None = None, hashes: dict[str, str] | None = None) -> dict:
    """Download every source into `dest`. A file already present with the right digest is kept; a download or
    archive member with a wrong digest raises FetchError and leaves what was there untouched. An optional source
    that cannot be downloaded is listed under `absent` with the reason."""
    dest = Path(dest)
    sources = default_sources() if sources is None else sources
    hashes = manifest() if hashes is None else hashes
    dest.mkdir(parents=True, exist_ok=True)
    done = {"downloaded": [], "kept": [], "absent": {}}
    with tempfile.TemporaryDirectory(dir=dest, prefix=".fetch-") as tmp:
        for src in _bar(sources, desc="fetch", unit="file"):
            target = dest / src.dest
            if not src.extract and target.is_file() and matches(target, src.sha256):
                done["kept"].append(src.dest)
                continue
            part = Path(tmp) / "download"
            try:
                download(src.url, part)
            except FetchError as e:
                if not src.optional:
                    raise
                done["absent"][src.dest] = str(e)
                continue
            if src.columns:
                _keep_columns(part, src.columns)
            if src.sha256 and not matches(part, src.sha256):
                kind, _, value = src.sha256.rpartition(":")
                raise FetchError(f"{src.url}: {'SHA-256' if not kind else kind} mismatch (expected {value}, got "
                                 f"{digest(part, kind or 'sha256')}); nothing was written to {target}")
            if not src.extract:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(part, target)
                done["downloaded"].append(src.dest)
                continue
            stage = Path(tmp) / "stage"
            shutil.rmtree(stage, ignore_errors=True)
            try:
                zf = zipfile.ZipFile(part)
            except zipfile.BadZipFile as e:
                raise FetchError(f"{src.url}: not a readable zip archive ({e}); nothing extracted") from None
            with zf:
                members = _safe_members(zf, src.url)
                _check_members(members, src, hashes)
                for info in members:
                    rel = f"{src.dest}/{info.filename}"
                    out = stage / info.filename
                    out.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        with zf.open(info) as fin, open(out, "wb") as fout:
                            _copy_capped(fin, fout, MAX_MEMBER, f"{src.url}: {info.filename}")
                    except (zipfile.BadZipFile, OSError, EOFError) as e:
                        raise FetchError(f"{src.url}: member {info.filename!r} cannot be read ({e}); "
                                         "nothing extracted") from None
                    if not matches(out, hashes[rel]):
                        raise FetchError(f"{src.url}: member {info.filename!r} has a wrong SHA-256; nothing written")
            for info in members:  # all verified: move into place
                final = target / info.filename
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(stage / info.filename, final)
            done["downloaded"].append(src.dest)
    return done


def verify_tree(root: str | Path, hashes: dict[str, str] | None = None) -> dict:
    """Compare a data folder with the manifest: files that match, are missing or mismatch, and the D1 archives
    that are absent (optional: listed apart, not as missing)."""
    root = Path(root)
    hashes = manifest() if hashes is None else hashes
    missing, bad, absent, ok = [], [], [], 0
    for rel, want in hashes.items():
        p = root / rel
        if not p.is_file():
            (absent if is_d1_zip(rel) else missing).append(rel)
        elif not matches(p, want):
            bad.append(rel)
        else:
            ok += 1
    return {"ok": ok, "missing": missing, "mismatched": bad, "absent_d1": absent}


def holds_data(folder: str | Path) -> bool:
    """Whether a folder looks like a data copy: COVID-CT's images and the LA-DNN split."""
    folder = Path(folder)
    return (folder / "covid-ct" / "Images-processed").is_dir() and (folder / "la-dnn" / "data_split").is_dir()


def reachable(url: str, timeout: float = 3.0) -> str:
    """'' when `url`'s server answers a HEAD request within `timeout` seconds (through the proxy variables; any
    HTTP answer counts), else why not."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler())
    try:
        opener.open(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
        return ""
    except urllib.error.HTTPError:
        return ""
    except (OSError, ValueError) as e:
        return str(getattr(e, "reason", e))


def ensure(default: str | Path, beside: str | Path | None = None) -> Path:
    """The data folder for the two commands: $LADNN_DATA_DIR when set (it must hold the data); else `default` (the
    repository's `data/`) or `beside` (a copy the Makefile names, next to the repository) when one holds the data;
    else the data are fetched into `default`, after a check of a few seconds that upstream answers, so that a
    machine without internet stops at once with one line (FetchError) instead of retrying."""
    env = os.environ.get("LADNN_DATA_DIR")
    if env:
        if not holds_data(env):
            raise FetchError(f"LADNN_DATA_DIR={env} holds no data copy (covid-ct/Images-processed and "
                             "la-dnn/data_split); unset it to fetch one into the repository's data/")
        return Path(env).resolve()
    for folder in (default, beside):
        if folder and holds_data(folder):
            return Path(folder).resolve()
    url = default_sources()[0].url
    why = reachable(url)
    if why:
        host = urllib.parse.urlparse(url).netloc
        raise FetchError(f"no data here ($LADNN_DATA_DIR unset, nothing in {default}) and {host} cannot be reached "
                         f"to fetch it ({why}): set LADNN_DATA_DIR to a copy (a folder with covid-ct/ and la-dnn/), "
                         "or run where the internet is reachable")
    print(f"no data found: fetching it into {default} (verified against ladnn/manifest.tsv; set LADNN_DATA_DIR "
          "to use another copy)", file=sys.stderr, flush=True)
    r = fetch(default)
    for rel, why in r["absent"].items():
        print(f"not fetched (optional): {rel}: {why}", file=sys.stderr, flush=True)
    return Path(default).resolve()


if __name__ == "__main__":  # python -m ladnn.fetch DEST [BESIDE]: the Makefile's data step, before any install
    if not 2 <= len(sys.argv) <= 3:
        sys.exit("usage: python -m ladnn.fetch DEST [BESIDE]: print the data folder, fetching the data into DEST "
                 "when neither $LADNN_DATA_DIR, DEST nor BESIDE holds them")
    try:
        print(ensure(*sys.argv[1:]))
    except FetchError as err:
        print(f"make: {err}", file=sys.stderr)
        sys.exit(1)
