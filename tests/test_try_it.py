"""Every "Try it" box of the book: its commands are complete (they run what the box says, against the profiles and
`Config`), and it says how long they take. Commands are checked without training anything: `ladnn train` with
`--dry-run`, the other `ladnn` commands and the scripts through their argument parsers, papermill's `-p` against the
notebook's parameters cell, `make book PROFILE=...` against the profiles."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from ladnn import cli
from ladnn.config import Config, field_names, parse_value
from ladnn.profiles import load_profile

ROOT = Path(__file__).resolve().parents[1]
# a phrase giving a run time: "about 2 minutes", "40 s", "under a second", "41 min"
TIME = re.compile(r"\b\d+(\.\d+)?\s*(s|seconds?|min|minutes?|h|hours?)\b|\bunder a (second|minute)\b")
# fields a command may change besides the one its box is about, without leaving the quick recipe
FREE = {"seed", "method"}


def try_boxes() -> list[tuple[str, str]]:
    """(where, text) of every Try-it admonition in the book's Markdown pages and notebooks."""
    sources = [(str(p.relative_to(ROOT)), p.read_text()) for p in sorted((ROOT / "book").glob("*.md"))]
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for k, c in enumerate(json.loads(nb.read_text())["cells"]):
            if c["cell_type"] == "markdown":
                sources.append((f"{nb.relative_to(ROOT)} cell {k}", "".join(c["source"])))
    # boxes a page builds in code, with run times measured during the build (here with stand-in times)
    from ladnn.report import dataset

    sources.append(("ladnn.report.dataset.try_it", dataset.try_it(check_seconds=1.0, page_seconds=10.0)))
    from ladnn.report import lesson

    sources.append(("ladnn.report.lesson.smaller_share_box", lesson.smaller_share_box()))
    out = []
    for where, text in sources:
        for m in re.finditer(r"^(`{3,})\{admonition\} Try it\n(.*?)^\1\s*$", text, re.DOTALL | re.MULTILINE):
            out.append((where, m.group(2)))
    return out


def commands(box: str) -> list[str]:
    """The shell commands of a box: fenced or indented code, continuation lines joined, comments dropped."""
    fenced = re.compile(r"^```\w*\n(.*?)^```", re.DOTALL | re.MULTILINE)
    blocks = fenced.findall(box)
    prose = fenced.sub("", box)
    blocks += re.findall(r"(?:^ {4}.*\n?)+", prose, re.MULTILINE)  # indented code blocks
    blocks += re.findall(r"`((?:ladnn|papermill|make|python3?) [^`]+)`", prose)  # inline commands in the prose
    lines = []
    for b in blocks:
        for line in re.sub(r"\s*\\\n\s*", " ", b).splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


BOXES = try_boxes()


def test_every_page_with_a_try_it_box_is_found():
    where = {w.split(" cell")[0] for w, _ in BOXES}
    assert {"book/training.md", "notebooks/train.ipynb", "notebooks/results.ipynb",
            "ladnn.report.dataset.try_it", "ladnn.report.lesson.smaller_share_box",
            "notebooks/validity.ipynb", "notebooks/lab.ipynb"} <= where
    assert all(commands(box) for _, box in BOXES), [w for w, b in BOXES if not commands(b)]


@pytest.mark.parametrize(("where", "box"), BOXES, ids=[w for w, _ in BOXES])
def test_a_box_says_how_long_its_commands_take(where, box):
    assert not re.search(r"RUN_TIME|CACHE_TIME|TIME_PLACEHOLDER", box), f"{where}: a time placeholder is left"
    assert TIME.search(box), f"{where}: the box gives no run time"


def quick_ladnn() -> dict:
    runs = load_profile("quick", ROOT)["runs"]
    return next(c for c in runs if c.method == "ladnn").to_dict()


def changed(cfg: dict, base: dict) -> set[str]:
    return {k for k, v in cfg.items() if k in base and base[k] != v} - FREE


def check_ladnn(argv: list[str], capsys) -> None:
    if argv[0] == "train":
        assert cli.main([*argv, "--dry-run"]) == 0, argv
        cfg = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        if "--profile" in argv:
            base = load_profile(argv[argv.index("--profile") + 1], ROOT)["runs"][0].to_dict()
            assert len(changed(cfg, {**base, "method": cfg["method"]})) <= 2, (argv, changed(cfg, base))
        else:  # spelled out by hand: it must still be the quick recipe with at most two changes
            assert len(changed(cfg, quick_ladnn())) <= 2, (argv, changed(cfg, quick_ladnn()))
    else:
        argv = [a.replace("<run>", "x") for a in argv]
        cli.parser().parse_args(argv)  # exits (SystemExit) on an option that does not exist


def check_papermill(argv: list[str]) -> None:
    nb = next(ROOT / a for a in argv if a.endswith(".ipynb") and (ROOT / a).is_file())
    cells = json.loads(nb.read_text())["cells"]
    params = next("".join(c["source"]) for c in cells if "parameters" in c["metadata"].get("tags", []))
    names = set(re.findall(r"^(\w+)\s*=", params, re.MULTILINE))
    given = {argv[k + 1]: argv[k + 2] for k, a in enumerate(argv) if a == "-p"}
    assert set(given) <= names, f"{nb.name} has no parameter(s) {set(given) - names}"
    if nb.name == "train.ipynb":
        ns: dict = {}
        exec(params, ns)  # noqa: S102 - the notebook's own defaults
        ns.update({k: parse_value(k, v) for k, v in given.items() if k in field_names()})
        cfg = Config.from_namespace(ns).to_dict()
        assert len(changed(cfg, quick_ladnn())) <= 2, (argv, changed(cfg, quick_ladnn()))


def check_make(argv: list[str], made: dict[str, Path]) -> None:
    profile = next((a.split("=", 1)[1] for a in argv if a.startswith("PROFILE=")), "quick")
    load_profile(str(made.get(profile, profile)), ROOT)  # a profile that does not exist raises BuildError


@pytest.mark.parametrize(("where", "box"), BOXES, ids=[w for w, _ in BOXES])
def test_every_command_is_complete(where, box, capsys, tmp_path):
    made: dict[str, Path] = {}
    for line in commands(box):
        argv = [a for a in shlex.split(line) if not re.match(r"^[A-Z_]+=", a) or a.startswith("PROFILE=")]
        if argv[0] == "sed" and ">" in argv:  # a profile written from another: write it here instead
            dst = Path(argv[argv.index(">") + 1])
            out = subprocess.run(argv[: argv.index(">")], cwd=ROOT, capture_output=True, text=True, check=True).stdout
            (tmp_path / dst.name).write_text(out)
            made[dst.stem] = tmp_path / dst.name
        elif argv[0] == "ladnn" and "--help" in argv:  # names where the options are listed
            with pytest.raises(SystemExit) as done:
                cli.parser().parse_args(argv[1:])
            assert done.value.code == 0, line
        elif argv[0] == "ladnn":
            check_ladnn(argv[1:], capsys)
        elif argv[0] == "papermill":
            check_papermill(argv)
        elif argv[0] == "make":
            check_make(argv, made)
        elif argv[0].startswith("python"):
            script = next(a for a in argv[1:] if not a.startswith("-"))
            assert (ROOT / script).is_file() or argv[1] == "-m", f"{where}: {script} does not exist"
        else:
            pytest.fail(f"{where}: a command this test does not know how to check: {line}")


def test_the_checks_can_fail(capsys):
    with pytest.raises(AssertionError):
        check_ladnn(["train", "--finetune", "top", "--epochs", "5", "--out", "x"], capsys)  # the notebook's defaults
    with pytest.raises(AssertionError):
        check_papermill(["papermill", "-k", "python3", "notebooks/train.ipynb", "/tmp/x.ipynb", "-p", "covid_weight",
                         "1.0", "-p", "out", "runs/try/w1"])
    with pytest.raises(SystemExit):
        check_ladnn(["evaluate", "x", "--no-such-option"], capsys)
    assert commands("```bash\nladnn train --profile quick \\\n    --seed 7 --out x\n```\n") == [
        "ladnn train --profile quick --seed 7 --out x"]
    assert not TIME.search("run it and see")


# ---------------------------------------------------------------- the class's exercises (ladnn.report.lesson)
from ladnn.report import lesson

EXERCISE_COMMANDS = [(e.key, c) for e in lesson.EXERCISES for c in e.commands]


def test_the_class_has_exercises_that_train_and_exercises_that_read():
    trains = {e.key for e in lesson.EXERCISES if e.commands}
    assert {"covid_weight", "quarter", "uncertainty"} <= trains
    assert {e.chapter for e in lesson.EXERCISES} == {"mtl", "lab"}
    assert lesson.plan()["minutes"].sum() == 120  # a two-hour class


@pytest.mark.parametrize(("key", "command"), EXERCISE_COMMANDS, ids=[c for _, c in EXERCISE_COMMANDS])
def test_every_exercise_command_is_complete_and_the_class_profile_trains_it(key, command, capsys):
    """The command runs (its --dry-run is the quick recipe with at most two changes), its box states a time, and the
    class profile trains exactly its configuration, so `make book PROFILE=class` computes its solution."""
    argv = shlex.split(command)
    check_ladnn(argv[1:], capsys)
    assert cli.main([*argv[1:], "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    printed.pop("out")
    cfg = lesson.command_config(command, ROOT)
    assert cfg.to_dict() == printed  # the solution reads the configuration the command trains
    assert TIME.search(lesson.BY_KEY[key].run_time), key
    from ladnn.profiles import training_runs

    prof = load_profile("class", ROOT)
    trained = [c.to_dict() for _, c, _ in training_runs(prof, ROOT)]
    assert cfg.to_dict() in trained, f"the class profile does not train {command}"


def test_the_class_profile_trains_nothing_the_exercises_do_not_read():
    from ladnn.profiles import training_runs

    prof = load_profile("class", ROOT)
    wanted = [c.to_dict() for c in lesson.class_runs(ROOT).values()]
    # the quick recipe itself, each method, seed 0: what the exercises compare against
    wanted += [lesson.command_config(f"ladnn train --profile quick --method {m} --out x", ROOT).to_dict()
               for m in ("baseline", "ladnn")]
    extra = [name for name, c, _ in training_runs(prof, ROOT) if c.to_dict() not in wanted]
    assert extra == []
    assert prof["pages"][0] == "book/class" and "book/_generated/lab" in prof["pages"]


def test_the_checks_of_exercise_commands_can_fail(capsys):
    with pytest.raises(SystemExit):  # an option that does not exist
        check_ladnn(shlex.split("train --profile quick --no-such-option 1 --out x"), capsys)
    wrong = lesson.command_config("ladnn train --profile quick --covid-weight 2.0 --out x", ROOT).to_dict()
    from ladnn.profiles import training_runs

    assert wrong not in [c.to_dict() for _, c, _ in training_runs(load_profile("class", ROOT), ROOT)]
