"""`ladnn data fetch`: download the upstream data, pinned to commits, verified by SHA-256, extracted safely.

The COVID-CT archives' own hashes are not known to us (our offline copy came extracted), so each extracted image is
checked against `manifest.tsv`, the SHA-256 of every file of the reference copy. The LA-DNN files carry their own hash.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath

from tqdm import tqdm

COVID_CT = "https://github.com/UCSD-AI4H/COVID-CT/raw/1fc10ba9d4cb35944766fd8fc3c139fa60ee13a1"
LA_DNN = ("https://raw.githubusercontent.com/xiaoxuegao499/LA-DNN-for-COVID-19-diagnosis/"
          "39a5fca0f83652ffa90e6569b6253659e438af73")


class FetchError(RuntimeError):
    pass


@dataclass(frozen=True)
class Source:
    url: str
    dest: str  # path inside the data folder (for an archive that is extracted: the folder it is extracted into)
    sha256: str | None = None  # hash of the downloaded file; None: check each extracted member against the manifest
    extract: bool = False


def manifest() -> dict[str, str]:
    text = resources.files("ladnn").joinpath("manifest.tsv").read_text()
    return dict(line.split("\t") for line in text.splitlines() if line.strip())


def default_sources() -> list[Source]:
    m = manifest()
    out = [Source(f"{COVID_CT}/Images-processed/{n}.zip", "covid-ct/Images-processed", None, True)
           for n in ("CT_COVID", "CT_NonCOVID")]
    for rel in sorted(k for k in m if k.startswith("la-dnn/")):
        up = rel.removeprefix("la-dnn/")
        out.append(Source(f"{LA_DNN}/{urllib.parse.quote(up)}", rel, m[rel]))
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, to: Path, timeout: float = 60) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as r, open(to, "wb") as fh:
        total = int(r.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], leave=False) as bar:
            for chunk in iter(lambda: r.read(1 << 16), b""):
                fh.write(chunk)
                bar.update(len(chunk))


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


def fetch(dest: str | Path, sources: list[Source] | None = None, hashes: dict[str, str] | None = None) -> dict:
    """Download every source into `dest`. A file already present with the right hash is kept; a download or archive
    member with a wrong hash raises FetchError and leaves what was there untouched."""
    dest = Path(dest)
    sources = default_sources() if sources is None else sources
    hashes = manifest() if hashes is None else hashes
    dest.mkdir(parents=True, exist_ok=True)
    done = {"downloaded": [], "kept": []}
    with tempfile.TemporaryDirectory(dir=dest, prefix=".fetch-") as tmp:
        for src in tqdm(sources, desc="fetch", unit="file"):
            target = dest / src.dest
            if not src.extract and target.is_file() and sha256_file(target) == src.sha256:
                done["kept"].append(src.dest)
                continue
            part = Path(tmp) / "download"
            try:
                _download(src.url, part)
            except Exception as e:  # noqa: BLE001 - any failure to download is reported the same way
                raise FetchError(f"could not download {src.url}: {e}") from None
            if src.sha256 and sha256_file(part) != src.sha256:
                raise FetchError(f"{src.url}: SHA-256 mismatch (expected {src.sha256}, got {sha256_file(part)}); "
                                 f"nothing was written to {target}")
            if not src.extract:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(part, target)
                done["downloaded"].append(src.dest)
                continue
            stage = Path(tmp) / "stage"
            shutil.rmtree(stage, ignore_errors=True)
            with zipfile.ZipFile(part) as zf:
                members = _safe_members(zf, src.url)
                for info in members:
                    rel = f"{src.dest}/{info.filename}"
                    out = stage / info.filename
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as fin, open(out, "wb") as fout:
                        shutil.copyfileobj(fin, fout)
                    want = hashes.get(rel)
                    if want is None:
                        raise FetchError(f"{src.url}: member {info.filename!r} is not in the manifest")
                    if sha256_file(out) != want:
                        raise FetchError(f"{src.url}: member {info.filename!r} has a wrong SHA-256; nothing written")
            for info in members:  # all verified: move into place
                final = target / info.filename
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(stage / info.filename, final)
            done["downloaded"].append(src.dest)
    return done


def verify_tree(root: str | Path, hashes: dict[str, str] | None = None) -> dict:
    """Compare a data folder with the manifest: counts of matching, missing and mismatched files."""
    root = Path(root)
    hashes = manifest() if hashes is None else hashes
    missing, bad, ok = [], [], 0
    for rel, want in hashes.items():
        p = root / rel
        if not p.is_file():
            missing.append(rel)
        elif sha256_file(p) != want:
            bad.append(rel)
        else:
            ok += 1
    return {"ok": ok, "missing": missing, "mismatched": bad}
