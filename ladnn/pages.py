"""The rendered book's pages: which pages the table of contents names, a check that each was rendered without an
error output, and MathJax served from the book itself so equations render offline."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import yaml

from ladnn.profiles import LOCAL_TOC, BuildError, book_pages, toc_pages

# MathJax for offline reading: one self-contained file (SVG output needs no fonts) from the npm registry, pinned.
MATHJAX = ("mathjax@3.2.2", "package/es5/tex-svg.js",
           "d4295dc33744836935c1399feece5159577b34c5c8ffb9f1c6324cd82e03a882")


def write_toc(root: Path, pages: list[str] | None) -> Path:
    """The table of contents of a book made of some of _toc.yml's pages (`pages`, the first one its front page, each
    chapter with its sections), written to LOCAL_TOC; without `pages`, _toc.yml itself (and no LOCAL_TOC)."""
    local = root / LOCAL_TOC
    local.unlink(missing_ok=True)
    if not pages:
        return root / "_toc.yml"
    pages = book_pages(pages, root, "pages")  # the root or chapters of _toc.yml (a profile's are checked when loaded)
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    entries = {e["file"]: e for e in toc.get("chapters", []) if "file" in e} | {toc["root"]: {"file": toc["root"]}}
    keep = [entries[p] for p in pages[1:]]
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text(yaml.safe_dump({"format": toc["format"], "root": pages[0], "chapters": keep}, sort_keys=False))
    return local


def page_title(root: Path, page: str) -> str:
    """A page's first heading, read from its source: book/X.md, or notebooks/X.ipynb for book/_generated/X."""
    if page.startswith("book/_generated/"):
        nb = nbformat.read(root / "notebooks" / f"{page.rsplit('/', 1)[1]}.ipynb", as_version=4)
        text = next(c.source for c in nb.cells if c.cell_type == "markdown")
    else:
        text = (root / f"{page}.md").read_text()
    found = re.search(r"^# (.+)$", text, re.MULTILINE)
    if not found:
        raise BuildError(f"{page}: no '# ' title in its source")
    return found.group(1).strip()


def left_out(root: Path) -> dict[str, str]:
    """The pages of _toc.yml that the book last built leaves out, with their titles (book/_ext/partial_book.py
    renders a link to one as its title, marked as a chapter of the full book)."""
    mine = set(toc_pages(root))
    return {p: page_title(root, p) for p in toc_pages(root, full=True) if p not in mine and "/train/" not in p}


def retitle(notebook: Path, title: str) -> None:
    """Give an executed run page its own title: the first heading of its first Markdown cell becomes `title` (the
    sidebar, the previous/next links and the browser tab show it)."""
    nb = nbformat.read(notebook, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "markdown")
    first.source = re.sub(r"\A# .*", lambda _: f"# {title}", first.source, count=1)
    nbformat.write(nb, notebook)


def runs_index(rows: list[tuple[str, str, Path]]) -> str:
    """The Training runs page's table (Markdown): each run's page (name, title, run folder) linked, with its test
    AUC, its interval and the epoch it kept, read from the run's metrics.json."""
    from ladnn.rundir import FinishedRun

    out = ["| run | test AUC | 95% interval | kept epoch |", "|---|---|---|---|"]
    for name, title, folder in rows:
        m = FinishedRun(folder).metrics
        lo, hi = m.covid_ci95.auc
        auc = "none" if m.covid.auc is None else f"{m.covid.auc:.3f}"
        out.append(f"| {{doc}}`{title} </book/_generated/train/{name}>` | {auc} | [{lo:.3f}, {hi:.3f}] | "
                   f"{m.run.best_epoch} |")
    return "\n".join(out) + "\n"


def check_html(root: Path) -> list[str]:
    """What a reader must never meet in the built book, one line per problem naming the page: a page not rendered,
    an error output or a traceback, an empty code block, warning text in an output, a page title used twice, a run
    page whose configuration table differs from its run's config.json, and Thebe set up for another project."""
    from bs4 import BeautifulSoup

    html = root / "_build" / "html"
    problems, titles = [], {}
    for page in toc_pages(root):
        f = html / f"{page}.html"
        if not f.is_file():
            problems.append(f"page {page} was not rendered ({f} missing)")
            continue
        text = f.read_text(errors="replace")
        if "Traceback (most recent call last)" in text or re.search(r'class="[^"]*output[^"]*error', text):
            problems.append(f"page {page} shows an error output or a traceback")
        soup = BeautifulSoup(text, "html.parser")
        main = soup.find("main") or soup
        empty = [b for b in main.select("div.highlight pre") if not b.get_text().strip()]
        if empty:
            problems.append(f"page {page} shows {len(empty)} empty code block(s)")
        for out in main.select("div.cell_output"):
            if m := WARNING_TEXT.search(out.get_text()):
                problems.append(f"page {page} shows warning text in an output: {m.group(0)!r}")
        if "binder-examples" in text:
            problems.append(f"page {page} configures Thebe or Binder for another repository (binder-examples)")
        title = soup.title.get_text().strip() if soup.title else ""
        titles.setdefault(title, []).append(page)
        if re.search(r"(^|/)train/", page):  # a run page
            problems += [f"page {page}: {p}" for p in run_page_problems(root, main)]
    problems += [f"pages {', '.join(pages)} share the title {title!r}" for title, pages in titles.items()
                 if len(pages) > 1]
    return problems


# what warnings look like when Python or a library prints them into an output
WARNING_TEXT = re.compile(r"\b\w*Warning: .{0,60}|warnings\.warn\(.{0,40}")


def run_page_problems(root: Path, main) -> list[str]:
    """A run page shows the configuration its run used: the table under "The configuration of this run" holds
    every field of the run folder's config.json with the same value (the folder named in the page's output)."""
    import json

    from ladnn.config import field_names, shown_value

    outputs = " ".join(o.get_text() for o in main.select("div.cell_output"))
    found = re.search(r"run directory: ([^\s;,]+)", outputs)
    if not found:
        return ["names no run directory"]
    folder = root / found.group(1)
    if not (folder / "config.json").is_file():
        return [f"names the run directory {found.group(1)}, which holds no config.json"]
    cfg = json.loads((folder / "config.json").read_text())
    table = next((t for t in main.select("table") if "config.json" in t.get_text()), None)
    if table is None:
        return ["shows no configuration table (its caption must name config.json)"]
    shown = {tds[0].get_text().strip(): tds[-1].get_text().strip()
             for row in table.select("tbody tr") if len(tds := row.find_all(["th", "td"])) >= 2}
    out = [f"shows no row for the config field {k!r}" for k in field_names() if k not in shown]
    out += [f"shows {k} = {shown[k]!r} but config.json has {shown_value(v)!r}" for k, v in cfg.items()
            if k in shown and shown[k] != shown_value(v)]
    return out


# In the browser, at the page's width: a code block, output, table or figure wider than the text column, or one that
# hides part of itself behind a horizontal scroll bar (run by tests/test_book.py and benchmarks/screenshots.py).
LAYOUT_JS = """
const col = document.querySelector('article.bd-article') || document.querySelector('main');
const right = col.getBoundingClientRect().right;
const out = [];
const seen = new Set();
for (const el of col.querySelectorAll('pre, table, img, svg, mjx-container[display="true"], div.cell_output, div.output, div.highlight, div.pst-scrollable-table-container, div.table-wrapper')) {
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) continue;
  const hidden = el.scrollWidth - el.clientWidth;
  if (r.right > right + 2 || (hidden > 2 && el.tagName !== 'svg')) {
    let key = el;
    while (key.parentElement && key.parentElement !== col && !key.classList.contains('cell')) key = key.parentElement;
    if (seen.has(key)) continue;
    seen.add(key);
    const where = (el.closest('section') || col).querySelector('h1, h2, h3');
    out.push(`${el.tagName.toLowerCase()}${el.className && typeof el.className === 'string' ? '.' + el.className.split(' ')[0] : ''}`
             + ` under "${where ? where.innerText.replace(/#$/, '').trim().slice(0, 60) : ''}": `
             + `${Math.round(r.right - right)} px past the column, ${hidden} px scrolled out of sight: `
             + JSON.stringify((el.innerText || el.getAttribute('alt') || '').slice(0, 60)));
  }
}
return out;
"""


def layout_problems(driver, page: str) -> list[str]:
    """LAYOUT_JS on the page a Selenium `driver` has open, each line naming `page`."""
    return [f"{page}: {line}" for line in driver.execute_script(LAYOUT_JS)]


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


BINDER = "https://mybinder.org"


def repository(root: Path) -> tuple[str, str] | None:
    """The public GitHub repository the book is published from and its branch, for the launch buttons:
    $LADNN_REPOSITORY_URL (and $LADNN_REPOSITORY_BRANCH, default the checked-out branch), else the git remote
    `origin` when it is on GitHub; None when neither names a GitHub repository (the buttons stay off)."""
    import os

    def git(*args: str) -> str:
        r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return r.stdout.strip() if r.returncode == 0 else ""

    url = os.environ.get("LADNN_REPOSITORY_URL") or git("remote", "get-url", "origin")
    m = re.match(r"^(?:https://github\.com/|git@github\.com:)([\w.-]+)/([\w.-]+?)(?:\.git)?/?$", url)
    if not m:
        return None
    branch = os.environ.get("LADNN_REPOSITORY_BRANCH") or git("rev-parse", "--abbrev-ref", "HEAD")
    if branch in ("", "HEAD"):  # a detached checkout (CI): the remote's default branch, else main
        branch = git("symbolic-ref", "--short", "refs/remotes/origin/HEAD").removeprefix("origin/") or "main"
    return f"https://github.com/{m.group(1)}/{m.group(2)}", branch


def book_config(root: Path) -> Path:
    """_config.yml as this build uses it, written to _build/_config.local.yml: the local MathJax when it could be had,
    the local extensions' folders resolved, and the pages the book leaves out (`left_out`)."""
    cfg = yaml.safe_load((root / "_config.yml").read_text())
    sphinx = cfg.setdefault("sphinx", {}).setdefault("config", {})
    if local_mathjax(root):
        sphinx["mathjax_path"] = "mathjax/tex-svg.js"
    else:
        print("[book] npm could not fetch MathJax: equations will load MathJax from its CDN when the book is read")
    # jupyter-book reads local extensions' folders relative to the config file, which is written elsewhere here
    for name, folder in (cfg["sphinx"].get("local_extensions") or {}).items():
        cfg["sphinx"]["local_extensions"][name] = str((root / folder).resolve())
    sphinx["ladnn_left_out"] = left_out(root)
    repo = repository(root)
    if repo:  # launch buttons on the notebook pages (book/_ext/launch_source.py opens the notebook in notebooks/)
        cfg["repository"] = {"url": repo[0], "branch": repo[1]}
        cfg.setdefault("launch_buttons", {})["binderhub_url"] = BINDER
    out = root / "_build" / "_config.local.yml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out
