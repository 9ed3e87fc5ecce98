"""The rendered book's pages: which pages the table of contents names, a check that each was rendered without an
error output, and MathJax served from the book itself so equations render offline."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from ladnn.profiles import BuildError

# MathJax for offline reading: one self-contained file (SVG output needs no fonts) from the npm registry, pinned.
MATHJAX = ("mathjax@3.2.2", "package/es5/tex-svg.js",
           "d4295dc33744836935c1399feece5159577b34c5c8ffb9f1c6324cd82e03a882")


def toc_pages(root: Path) -> list[str]:
    """Every page the table of contents names (globs expanded), without suffix."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                pages.append(e["file"])
            if "glob" in e:
                pages.extend(sorted(str(p.relative_to(root).with_suffix("")) for p in root.glob(e["glob"])
                                    if p.suffix in (".ipynb", ".md")))
            walk(e.get("sections"))
            for part in e.get("parts", []):
                walk(part.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    return [re.sub(r"\.(md|ipynb)$", "", p) for p in pages]


def check_html(root: Path) -> list[str]:
    """Every toc page rendered, and none shows an error output or a traceback."""
    html = root / "_build" / "html"
    problems = []
    for page in toc_pages(root):
        f = html / f"{page}.html"
        if not f.is_file():
            problems.append(f"page {page} was not rendered ({f} missing)")
            continue
        text = f.read_text(errors="replace")
        if "Traceback (most recent call last)" in text or re.search(r'class="[^"]*output[^"]*error', text):
            problems.append(f"page {page} shows an error output or a traceback")
    return problems


def local_mathjax(root: Path) -> bool:
    """Put MathJax into _static/ so the book's equations render without internet; False when npm cannot get it."""
    import hashlib
    import tarfile
    import tempfile

    dst = root / "_static" / "mathjax" / "tex-svg.js"
    if dst.is_file() and hashlib.sha256(dst.read_bytes()).hexdigest() == MATHJAX[2]:
        return True
    npm = shutil.which("npm")
    if not npm:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        try:
            r = subprocess.run([npm, "pack", MATHJAX[0], "--silent"], cwd=tmp, capture_output=True, timeout=180,
                               check=False)
        except subprocess.TimeoutExpired:
            return False
        tgz = next(Path(tmp).glob("mathjax-*.tgz"), None)
        if r.returncode or tgz is None:
            return False
        with tarfile.open(tgz) as tf:
            data = tf.extractfile(MATHJAX[1]).read()
    if hashlib.sha256(data).hexdigest() != MATHJAX[2]:
        raise BuildError(f"{MATHJAX[0]} {MATHJAX[1]} does not have the pinned SHA-256")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)
    return True


def book_config(root: Path) -> Path:
    """_config.yml, plus the local MathJax when it could be had."""
    if not local_mathjax(root):
        print("[book] npm could not fetch MathJax: equations will load MathJax from its CDN when the book is read")
        return root / "_config.yml"
    cfg = yaml.safe_load((root / "_config.yml").read_text())
    cfg.setdefault("sphinx", {}).setdefault("config", {})["mathjax_path"] = "mathjax/tex-svg.js"
    out = root / "_build" / "_config.local.yml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out
