"""The class in multi-task learning: the exercises' worked solutions come from the library, the data and the runs;
a profile's `pages` build a book of part of the table of contents, whose links to the other pages still resolve;
launch buttons open the notebooks the pages were made from."""
import math
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import book_copy

from ladnn.pages import book_config, check_html, repository, toc_pages, write_toc
from ladnn.profiles import BuildError, load_profile
from ladnn.report import lab, lesson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import launch_source
import partial_book


# ---------------------------------------------------------------- the solutions
def test_the_mask_exercise_is_computed_by_the_library_loss():
    table, loss = lesson.mask_example(5.0)
    assert (table > 0).to_numpy().sum() == 14  # 4 COVID terms, 5 lesion terms for each of (c) and (d)
    assert table.loc["(b) COVID, no lesion named"].iloc[1:].sum() == 0
    assert loss == pytest.approx((4 * 5 + 10) * math.log(2) / 24, rel=1e-6)
    assert lesson.mask_example(1.0)[1] == pytest.approx(14 * math.log(2) / 24, rel=1e-6)


def test_adam_hides_the_loss_scale_but_not_weight_decay():
    step = lesson.adam_step(1, 0).abs().max().item()
    assert (lesson.adam_step(6, 0) - lesson.adam_step(1, 0)).abs().max().item() < 0.01 * step
    assert (lesson.adam_step(6, 5e-4) - lesson.adam_step(1, 5e-4)).abs().max().item() > 0.5 * step


def test_a_solution_reads_the_run_with_the_commands_configuration(tmp_path):
    """With no run of its own, a solution reads the lab's committed run of the same configuration, or says which
    profile trains it; it never reads a run whose configuration differs."""
    tables = lab.committed()
    for command in lesson.BY_KEY["quarter"].commands + lesson.BY_KEY["uncertainty"].commands:
        found = lesson.find_run(lesson.command_config(command, ROOT), tmp_path, tables)
        assert found is not None and "committed" in found.where, command
    w1 = lesson.command_config(lesson.BY_KEY["covid_weight"].commands[0], ROOT)
    assert lesson.find_run(w1, tmp_path, tables) is None
    assert "make book PROFILE=class" in lesson.solution("covid_weight", tmp_path, tables, ROOT)


def test_a_solution_prefers_this_builds_run(tiny_run, tmp_path):
    """A finished run of this build with the exact configuration is the one a solution reads, named by its folder."""
    import shutil

    from ladnn.rundir import FinishedRun

    runs = tmp_path / "runs" / "x"
    shutil.copytree(tiny_run, runs / "one")
    cfg = FinishedRun(runs / "one").config
    found = lesson.find_run(cfg, runs, lab.committed())
    assert found.where == "this build's run `runs/x/one`"
    assert found.auc[0] == pytest.approx(FinishedRun(runs / "one").metrics.covid.auc)


def test_the_teachers_times_name_the_device_each_run_recorded(tiny_run, tmp_path, monkeypatch):
    """The run-time table reads each matching run's seconds, device and threads from its metrics.json."""
    import shutil

    from ladnn.rundir import FinishedRun

    runs = tmp_path / "runs" / "x"
    shutil.copytree(tiny_run, runs / "one")
    run = FinishedRun(runs / "one")
    command = lesson.BY_KEY["covid_weight"].commands[0]
    monkeypatch.setattr(lesson, "class_runs", lambda root=None: {command: run.config})
    text = lesson.times_markdown(runs)
    threads = (run.metrics.run.precision or {}).get("threads")
    row = next(line for line in text.splitlines() if line.startswith(f"| {lesson.number('covid_weight')} |"))
    assert f"| {run.metrics.run.seconds:.0f} | {run.metrics.run.device}" in row
    assert threads and f"{threads} thread" in row
    assert "trained 1 of the exercises' 1 runs" in text


def test_the_discussion_questions_claims_hold_for_the_labs_results():
    """The teacher's page words its discussion questions from the lab's committed results: no share of the learning
    curve, and no other weighting, with an interval clear of zero; the summed lesion gradient conflicting in most
    steps."""
    page = (ROOT / "book" / "class.md").read_text()
    assert "finds no difference at any training share" in page and "disagrees with the COVID gradient in\n   most steps" in page
    tables = lab.committed()
    curve = lab.learning_curve(tables)
    assert ((curve["diff_lo"] <= 0) & (curve["diff_hi"] >= 0)).all()
    comb = lab.combination_table(tables).dropna(subset=["diff_lo"])
    assert len(comb) == 6 and ((comb["diff_lo"] <= 0) & (comb["diff_hi"] >= 0)).all()
    summed = lab.gradient_summary(tables).set_index("term").loc["all five lesions"]
    assert summed["conflicting steps"] > 0.5


def test_the_smaller_share_try_it_counts_the_subsets(data_dir, monkeypatch, tmp_path):
    """The lab's "Try it" on a 5% share counts its subsets with train_subset on D0, and says so when it cannot."""
    from ladnn.data import load_table, train_subset

    train = load_table("D0").query("split == 'train'")
    sizes = sorted((len(x), int(x["covid"].sum())) for x in (train_subset(train, 0.05, s) for s in (0, 1, 2)))
    box = lesson.smaller_share_box(0.05)
    assert f"keep {sizes[0][0]} to {sizes[-1][0]} training images" in box
    assert f"the smallest with {sizes[0][1]} COVID-19 images against {sizes[0][0] - sizes[0][1]} others" in box
    assert "fractions: [0.05, 0.1, 0.25, 0.5]" in box and "the lab's 37, then" in box
    monkeypatch.setenv("LADNN_DATA_DIR", str(tmp_path))
    assert "built without the data to count them" in lesson.smaller_share_box(0.05)


@pytest.mark.parametrize("key", [e.key for e in lesson.EXERCISES])
def test_every_exercise_renders_with_its_solution_folded(key, tmp_path, data_dir):
    box = lesson.box(key, tmp_path, lab.committed(), ROOT)
    assert box.startswith(f"`````{{admonition}} Exercise {lesson.number(key)}: ")
    assert "````{dropdown} Solution" in box and box.rstrip().endswith("`````")
    solution = box.split("````{dropdown} Solution", 1)[1]
    assert len(solution) > 200 and "nan" not in solution.lower().replace("[", " ").replace("%", " ").split()
    assert "{" not in solution.replace("{dropdown}", "").replace("{-s_t}", "")  # no f-string left unfilled


def test_the_solutions_follow_the_numbers():
    """The conclusions are read from the tables: a curve with an interval clear of 0, or a large detectable size,
    and an MGDA row below the fixed weights, change what the solution says."""
    import pandas as pd

    curve = pd.DataFrame({"share of training patients": [0.25, 1.0], "diff": [0.004, 0.002],
                          "diff_lo": [-0.002, -0.003], "diff_hi": [0.009, 0.008], "detectable": [0.007, 0.009]})
    text = " ".join(lesson.curve_solution(curve).split())
    assert "No interval lies clear of zero" in text and "at every share" in text and "below 0.9 points" in text
    curve.loc[0, ["diff_lo", "detectable"]] = [0.001, 0.02]
    text = " ".join(lesson.curve_solution(curve).split())
    assert "Clear of zero: 25%" in text and "at 100% but not at 25%" in text and "sample-efficient on" not in text
    comb = pd.DataFrame({"key": ["fixed", "mgda"], "auc": [(0.87, 0.77, 0.95), (0.85, 0.75, 0.93)],
                         "seeds": [3, 3], "diff": [0.0, -0.02], "diff_lo": [float("nan"), -0.03],
                         "diff_hi": [float("nan"), -0.01]})
    assert "lies below 0: MGDA did worse" in " ".join(lesson.mgda_solution(comb).split())
    comb.loc[1, ["diff_lo", "diff_hi"]] = [-0.03, 0.01]
    assert "neither" in lesson.mgda_solution(comb)


def test_the_class_pages_name_their_sources(tmp_path, data_dir):
    files = lesson.write_pages(tmp_path, tmp_path / "none", ROOT)
    assert sorted(f.name for f in files) == ["class_pitfalls.md", "class_times.md", "mtl_exercises.md", "mtl_time.md"]
    assert "trained none of the exercises' 4 runs" in (tmp_path / "class_times.md").read_text()
    assert (tmp_path / "mtl_exercises.md").read_text().count("{dropdown} Solution") == 4


# ---------------------------------------------------------------- a book of some pages
def test_a_profiles_pages_must_be_pages_of_the_toc(tmp_path):
    book_copy(tmp_path)
    (tmp_path / "profiles" / "x.yaml").write_text("base: quick\npages: [book/class, book/nope]\n")
    with pytest.raises(BuildError, match=r"pages: 'book/nope' is not the root or a chapter of _toc.yml"):
        load_profile("x", tmp_path)
    (tmp_path / "profiles" / "x.yaml").write_text("base: quick\npages: book/class\n")
    with pytest.raises(BuildError, match="expected a non-empty list"):
        load_profile("x", tmp_path)


def test_the_class_toc_keeps_its_pages_and_names_the_others(tmp_path):
    book_copy(tmp_path)
    pages = load_profile("class", tmp_path)["pages"]
    toc = yaml.safe_load(write_toc(tmp_path, pages).read_text())
    assert toc["root"] == "book/class"
    assert [c["file"] for c in toc["chapters"]] == pages[1:]
    assert any("sections" in c for c in toc["chapters"])  # the run pages go with Training runs
    assert toc_pages(tmp_path)[0] == "book/class" and "book/_generated/results" not in toc_pages(tmp_path)
    left = yaml.safe_load(book_config(tmp_path).read_text())["sphinx"]["config"]["ladnn_left_out"]
    assert left["book/_generated/results"] == "Results" and "book/mtl" not in left
    assert write_toc(tmp_path, None) == tmp_path / "_toc.yml" and not (tmp_path / "_build/_toc.local.yml").exists()
    order = ["book/class", "book/_generated/lab", "book/mtl"]  # the profile's order, not _toc.yml's
    assert [c["file"] for c in yaml.safe_load(write_toc(tmp_path, order).read_text())["chapters"]] == order[1:]
    with pytest.raises(BuildError, match="not the root or a chapter"):
        write_toc(tmp_path, ["book/class", "book/_generated/train/x"])


class _App:
    """A stand-in for the Sphinx application: only its config value."""
    config = SimpleNamespace(ladnn_left_out={"book/_generated/results": "Results"})


def test_a_link_to_a_left_out_page_becomes_its_title():
    from docutils import nodes
    from sphinx.addnodes import pending_xref

    def ref(target, explicit):
        n = pending_xref(reftype="doc", reftarget=target, refdoc="book/mtl", refexplicit=explicit)
        return n, nodes.literal(text="the Results chapter" if explicit else target)

    out = partial_book._missing(_App, None, *ref("_generated/results", True))
    assert out.astext() == "the Results chapter (full book)"
    assert partial_book._missing(_App, None, *ref("/book/_generated/results", False)).astext() == "Results (full book)"
    assert partial_book._missing(_App, None, *ref("_generated/nowhere", True)) is None  # still fails the build


# ---------------------------------------------------------------- launch buttons
def test_launch_buttons_open_the_source_notebook():
    url = "https://mybinder.org/v2/gh/o/r/main?urlpath=tree/"
    assert launch_source.source_of(url + "book/_generated/lab.ipynb") == url + "notebooks/lab.ipynb"
    assert launch_source.source_of(url + "book/_generated/train/tf-D0-ladnn-s0.ipynb") == url + "notebooks/train.ipynb"
    assert launch_source.source_of(url + "book/mtl.md") == url + "book/mtl.md"


def test_launch_buttons_need_a_public_github_repository(tmp_path, monkeypatch):
    book_copy(tmp_path)
    monkeypatch.setenv("LADNN_REPOSITORY_URL", "git@github.com:someone/la-dnn.git")
    monkeypatch.setenv("LADNN_REPOSITORY_BRANCH", "main")
    assert repository(tmp_path) == ("https://github.com/someone/la-dnn", "main")
    cfg = yaml.safe_load(book_config(tmp_path).read_text())
    assert cfg["repository"]["url"] == "https://github.com/someone/la-dnn"
    assert cfg["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    monkeypatch.setenv("LADNN_REPOSITORY_URL", "https://example.org/la-dnn")
    assert repository(tmp_path) is None
    assert yaml.safe_load(book_config(tmp_path).read_text())["launch_buttons"]["binderhub_url"] == ""


def test_binder_installs_the_library_at_the_books_versions():
    post = (ROOT / "binder" / "postBuild").read_text()
    assert os.access(ROOT / "binder" / "postBuild", os.X_OK)
    assert "-c constraints.txt" in post and "-e \".[book]\"" in post and "whl/cpu" in post
    env = yaml.safe_load((ROOT / "binder" / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]


# ---------------------------------------------------------------- the class book, small
@pytest.fixture(scope="module")
def class_book(tmp_path_factory):
    """The class profile's book with tiny runs (16 images per split, one epoch, one view), and launch buttons."""
    from ladnn.book import build

    root = book_copy(tmp_path_factory.mktemp("class"))
    old = os.environ.get("LADNN_REPOSITORY_URL")
    os.environ["LADNN_REPOSITORY_URL"] = "https://github.com/someone/la-dnn"
    try:
        build("class", root, overrides={"limit": 16, "epochs": 1, "views": 1, "tta": 1, "top_blocks": 1})
    finally:
        os.environ.pop("LADNN_REPOSITORY_URL") if old is None else os.environ.__setitem__("LADNN_REPOSITORY_URL", old)
    return root


def test_the_class_book_has_the_class_pages_only(class_book):
    root = class_book
    html = root / "_build" / "html"
    assert check_html(root) == []
    assert (html / "index.html").read_text().count("book/class.html") >= 1  # the front page
    pages = toc_pages(root)
    assert pages[:4] == ["book/class", "book/mtl", "book/_generated/lab", "book/training"]
    assert not (html / "book" / "_generated" / "results.html").exists()
    lab_page = (html / "book" / "_generated" / "lab.html").read_text()
    assert "(full book)" in lab_page and "results.html" not in lab_page
    assert "https://mybinder.org/v2/gh/someone/la-dnn/" in lab_page and "notebooks/lab.ipynb" in lab_page
    assert "_generated/lab.ipynb" not in lab_page.split("mybinder.org", 1)[1].split('"', 1)[0]
    mtl = (html / "book" / "mtl.html").read_text()
    assert mtl.count("Exercise ") >= 4 and "mybinder" not in mtl  # a Markdown page has no notebook to launch
    assert lab_page.count('sd-summary-text">Solution') == 5  # rendered as dropdowns, not as literal fences
    assert mtl.count('sd-summary-text">Solution') == 4
