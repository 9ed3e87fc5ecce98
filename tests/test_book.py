"""The book: a smoke-profile build renders every page, no page shows an error, a real browser displays them."""
import os
import shutil
from pathlib import Path

import nbformat
import pytest
from conftest import book_copy

from ladnn.book import build
from ladnn.pages import check_html, layout_problems, toc_pages
from ladnn.profiles import BuildError, load_profile
from ladnn.runner import _finish_notebook

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("book")
    book_copy(root)
    index = build("smoke", root)
    return root, index


def test_every_toc_page_is_rendered_without_errors(built):
    root, index = built
    assert index.is_file()
    pages = toc_pages(root)
    assert len(pages) >= 10 and any("/train/" in p for p in pages)
    assert check_html(root) == []
    for p in pages:
        assert (root / "_build" / "html" / f"{p}.html").stat().st_size > 2000


def test_injected_parameters_are_hidden(built):
    root, _ = built
    nb = nbformat.read(next((root / "book/_generated/train").glob("*.ipynb")), as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "remove-cell" in injected[0].metadata["tags"]
    html = next((root / "_build/html/book/_generated/train").glob("*.html")).read_text()
    assert "injected" not in html.lower() and 'out = &quot;runs/smoke' not in html


def test_runs_are_not_trained_twice(built, capfd):
    root, _ = built
    build("smoke", root, only_notebooks=True)  # runs after the first execute in worker processes: capture fd 1
    out = capfd.readouterr().out
    prof = load_profile("smoke", root)
    assert out.count("not training again") == len(prof["runs"]) + len(prof["ablation_runs"]) == 3


def _chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1800",
              "--allow-file-access-from-files"):
        opts.add_argument(a)
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)


def test_the_layout_check_can_fail(tmp_path):
    """A table wider than the column and a code block that scrolls are both named; a fitting page is not."""
    page = tmp_path / "p.html"
    cells = "".join(f"<td>column{k}_with_long_text</td>" for k in range(40))
    page.write_text('<html><body><main><article class="bd-article" style="width:600px">'
                    f'<h2>A section</h2><table><tr>{cells}</tr></table>'
                    '<div class="highlight" style="overflow-x:auto"><pre>' + "x" * 400 + '</pre></div>'
                    "<p>fits</p></article></main></body></html>")
    driver = _chromium()
    try:
        driver.get(page.as_uri())
        found = layout_problems(driver, "p")
    finally:
        driver.quit()
    assert len(found) == 2 and found[0].startswith('p: table under "A section"') and "highlight" in found[1], found


def test_book_pages_load_in_a_real_browser(built):
    from selenium.webdriver.support.ui import WebDriverWait

    root, _ = built
    shots = Path(os.environ.get("LADNN_SHOTS_DIR", root / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    driver = _chromium()
    try:
        for page in ["book/intro", "book/mtl", "book/_generated/data", "book/_generated/results",
                     "book/_generated/gradcam", "book/_generated/pairplot", "book/_generated/validity",
                     "book/_generated/sources", "book/_generated/reproduction"]:
            driver.get((root / "_build/html" / f"{page}.html").as_uri())
            titles = [e.text for e in driver.find_elements("css selector", "main h1") if e.is_displayed()]
            assert any(t.strip() for t in titles), f"{page}: no visible title"
            broken = driver.execute_script(
                "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
            assert broken == [], f"{page}: images did not render: {broken}"
            if page == "book/mtl":  # equations are typeset by the local MathJax, offline
                WebDriverWait(driver, 20).until(
                    lambda d: d.execute_script("return document.querySelectorAll('mjx-container svg').length") >= 3)
            if page == "book/mtl":  # the library's own code, included when the book is built
                code = driver.execute_script("return document.querySelector('main').innerText")
                assert "def paper_loss" in code and "def task_losses" in code and "class LADNN" in code and "def train_step" in code
            if page.endswith("results"):  # ours beside the paper's in one table
                heads = driver.execute_script("return Array.from(document.querySelectorAll('th')).map(t => t.innerText)")
                assert "LA-DNN" in heads and heads.count("paper") >= 2
            try_boxes = driver.find_elements("css selector", "div.admonition.tip")
            want = "Exercise " if page == "book/mtl" else "Try it"  # the class's chapter has exercises instead
            assert any(want in b.text for b in try_boxes), f"{page}: no {want.strip()!r} box"
            n_img = driver.execute_script("return document.images.length")
            if page != "book/intro":
                assert n_img >= 1 or page.endswith("reproduction"), f"{page}: no figure"
            driver.save_screenshot(str(shots / f"{page.replace('/', '_')}.png"))
        wide = []  # every page of the book, run pages included: nothing wider than the column at 1400 px
        for page in toc_pages(root):
            driver.get((root / "_build/html" / f"{page}.html").as_uri())
            wide += layout_problems(driver, page)
        assert wide == []
    finally:
        driver.quit()
    assert len(list(shots.glob("book*.png"))) == 9


def test_run_pages_are_titled_by_their_run_and_listed(built):
    root, _ = built
    prof = load_profile("smoke", root)
    html = root / "_build/html"
    titles = [(html / f"{p}.html").read_text().split("<title>")[1].split("</title>")[0]
              for p in toc_pages(root) if "/train/" in p]
    assert len(titles) == len(set(titles)) == len(prof["runs"]) + len(prof["ablation_runs"])
    assert any(t.startswith("LA-DNN, efficientnet_lite0, D0, seed 0: lesion_mask none") for t in titles)
    from bs4 import BeautifulSoup

    table = BeautifulSoup((html / "book/training.html").read_text(), "html.parser").select_one("article table")
    links = [a["href"] for a in table.select("a") if "_generated/train/" in a["href"]]
    assert len(links) == len(set(links)) == len(titles) and "nan" not in table.get_text().lower()


def _page(root: Path, name: str, body: str, title: str) -> None:
    f = root / "_build/html" / f"{name}.html"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(f"<html><head><title>{title}</title></head><body><main>{body}</main></body></html>")


def test_the_page_checks_can_fail(tmp_path):
    """check_html names each problem the issue listed: an empty code block, warning text in an output, a title
    used twice, Thebe set up for another project, and a run page whose table is not its config.json."""
    import json

    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: a\nchapters:\n- file: b\n- glob: train/*\n")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "r.ipynb").write_text("{}")
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    json.dump({"seed": 3, "epochs": 5}, (run / "config.json").open("w"))
    _page(tmp_path, "a", '<div class="highlight"><pre> </pre></div>'
          '<div class="cell_output">UserWarning: something</div>', "Same")
    _page(tmp_path, "b", '<script>repo: "binder-examples/x"</script>', "Same")
    _page(tmp_path, "train/r", '<div class="cell_output">run directory: runs/r</div><table><caption>r/config.json'
          '</caption><tbody><tr><td>seed</td><td>0</td></tr><tr><td>epochs</td><td>5</td></tr></tbody></table>',
          "Run")
    found = "\n".join(check_html(tmp_path))
    for problem in ("a shows 1 empty code block", "warning text in an output: 'UserWarning: something'",
                    "share the title 'Same'", "b configures Thebe or Binder", "shows seed = '0' but config.json has '3'",
                    "shows no row for the config field 'backbone'"):
        assert problem in found, (problem, found)


def test_failed_notebook_fails_the_build(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("1/0")
    cell.outputs = [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])]
    nb.cells = [cell]
    nbformat.write(nb, tmp_path / "x.ipynb")
    with pytest.raises(BuildError, match="ZeroDivisionError"):
        _finish_notebook(tmp_path / "x.ipynb")


def test_profiles(tmp_path):
    quick = load_profile("quick", ROOT)
    assert len(quick["runs"]) == 6 and {c.method for c in quick["runs"]} == {"baseline", "ladnn"}
    assert len(load_profile("paper", ROOT)["runs"]) == 7 * 2 * 2 * 3
    with pytest.raises(BuildError, match="known profiles"):
        load_profile("nope", ROOT)
    bad = tmp_path / "bad.yaml"
    bad.write_text("description: x\nmatrix: {seed: [0]}\nconfig: {finetune: sideways}\n")
    with pytest.raises(BuildError, match=r"bad\.yaml: config field 'finetune': 'sideways' is not one of"):
        load_profile(str(bad), ROOT)


def test_virtual_environments_in_the_repository_are_not_read_as_pages():
    """Sphinx reads every Markdown file under the root that exclude_patterns does not name; packages in a .venv
    ship README.md files whose front matter breaks the build (seen with `{{ card_data }}`)."""
    import yaml

    excluded = yaml.safe_load((ROOT / "_config.yml").read_text())["exclude_patterns"]
    assert {".venv", "venv", "env", "_build", "runs"} <= set(excluded)
