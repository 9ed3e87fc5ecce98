"""The page of `ladnn serve` with hostile or damaged evaluations in the run: data never runs as script, and a damaged
evaluation is named on stderr and left out while the service works."""
import json
import re
import shutil
import subprocess

import pytest
from conftest import scores_dict
from fastapi.testclient import TestClient

from ladnn.serve import PAGE, create_app

SCRIPT = "</script><script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
HOSTILE_FOLDER = "eval-<img src=x onerror=alert(2)>"  # a folder name may hold < > = and spaces, not /


def evaluation(evaluated_on: str = "external set", **extra) -> dict:
    """A valid `ladnn evaluate` metrics.json (ladnn.summary.Evaluation), scored per slice and per patient."""
    return {**scores_dict(0.7, 40, 0.6, 0.8), "evaluated_on": evaluated_on, "cluster_note": "whole patients",
            "slices": "every slice", "per_patient": scores_dict(0.7, 10, 0.5, 0.9), "aggregation": "mean",
            **extra}


def put(run, name: str, data: str | bytes) -> None:
    """`data` as the metrics.json of the evaluation folder `name` of `run`."""
    (run / name).mkdir()
    f = run / name / "metrics.json"
    f.write_bytes(data) if isinstance(data, bytes) else f.write_text(data)


def embedded_info(page: str) -> dict:
    """The JSON the page's script holds (`const INFO = ...;`), parsed back."""
    m = re.search(r"const INFO = (.*);\n", page)
    assert m, "no INFO in the page"
    return json.loads(m.group(1))


@pytest.fixture
def hostile_run(tiny_run, tmp_path):
    """A copy of the tiny run with evaluations whose shown strings (evaluated_on, slices, aggregation, the folder's
    name) hold HTML and a script."""
    run = shutil.copytree(tiny_run, tmp_path / "run")
    put(run, "eval-x", json.dumps(evaluation(f"/data/{SCRIPT}/{IMG}", slices=f"{IMG} {SCRIPT}",
                                             aggregation=f"{SCRIPT} & {IMG}")))
    put(run, HOSTILE_FOLDER, json.dumps(evaluation("/data/plain")))
    return run


def test_script_json_is_the_same_json_without_markup():
    from ladnn.serve import script_json

    value = {"a": f"{SCRIPT} {IMG} <!-- & -->", "b": ["\u2028", "é"], "c": 1.5}
    s = script_json(value)
    assert json.loads(s) == value
    assert not set("<>&") & set(s)


def test_hostile_evaluation_is_shown_as_text_not_run(hostile_run):
    client = TestClient(create_app(hostile_run))
    page = client.get("/").text
    # the page's own script tag is the only one; no markup from the data is in the HTML
    assert page.count("<script") == 1 and page.count("</script") == 1
    assert SCRIPT not in page and "</script><script>" not in page
    assert "<img" not in page and "<" not in page[page.index("const INFO"):page.index("const OUT")]
    info = embedded_info(page)
    assert info == client.get("/api/model").json()
    shown = {f["name"]: f["on"] for f in info["generalisation"]["figures"]}
    assert shown["this run, eval-x per slice"] == f"/data/{SCRIPT}/{IMG}: {IMG} {SCRIPT}"
    assert shown["this run, eval-x per patient"] == f"/data/{SCRIPT}/{IMG}: {SCRIPT} & {IMG}"
    assert shown[f"this run, {HOSTILE_FOLDER} per slice"] == "/data/plain: every slice"


# Ways a script turns a string into HTML (or code); the page uses none, so no data can become markup.
HTML_SINKS = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "createContextualFragment",
              "DOMParser", "srcdoc", "eval(", "Function(", "setAttribute(")


def script_of(page: str) -> str:
    """The page's one script."""
    scripts = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    assert len(scripts) == 1
    return scripts[0]


def test_page_script_never_parses_strings_as_html():
    script = script_of(PAGE.read_text())
    assert [s for s in HTML_SINKS if s in script] == []
    # nor builds HTML in strings: no string literal holds a tag
    assert re.findall(r"""["'`][^"'`\n]*<[a-zA-Z/!]""", script) == []


FAKE_DOM = r"""
// A minimal DOM: elements record their children and text; setting innerHTML or outerHTML is an error.
class El {
  constructor(tag) { this.tag = tag; this.children = []; this.text = ""; this.classList = { add() {}, remove() {} }; }
  set textContent(t) { this.children = []; this.text = String(t); }
  get textContent() { return this.text + this.children.map(c => c.textContent).join(""); }
  set innerHTML(h) { throw new Error("innerHTML set to " + JSON.stringify(h)); }
  set outerHTML(h) { throw new Error("outerHTML set to " + JSON.stringify(h)); }
  appendChild(c) { this.children.push(c); return c; }
  append(...cs) { for (const c of cs) this.children.push(typeof c === "string" ? new Text(c) : c); }
  prepend(c) { this.children.unshift(c); }
  replaceChildren(...cs) { this.children = []; this.append(...cs); }
  querySelectorAll() { return []; }
}
class Text { constructor(t) { this.textContent = t; } }
const ids = {};
global.document = {
  getElementById: id => (ids[id] = ids[id] || new El("div")),
  createElement: tag => new El(tag),
  createTextNode: t => new Text(t),
};
global.Image = El;
"""


def test_page_script_runs_and_shows_hostile_strings_as_text(hostile_run, tmp_path):
    """The served page's script, run by node on a minimal DOM: it never sets innerHTML, and the figures table holds
    the hostile strings as text."""
    page = TestClient(create_app(hostile_run)).get("/").text
    script = script_of(page)
    js = tmp_path / "page.js"
    js.write_text(FAKE_DOM + script + "\nconsole.log(JSON.stringify(ids.auc.children[0].children[1].children.map("
                  "tr => [tr.title, ...tr.children.map(td => td.textContent)])));\n"
                  "console.log(JSON.stringify(ids['gen-warning'].textContent));\n")
    out = subprocess.run(["node", str(js)], check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows, warning = (json.loads(line) for line in out.stdout.splitlines())
    shown = {name: title for title, _auc, name, _n, _new in rows}
    assert shown["this run, eval-x per slice"] == f"/data/{SCRIPT}/{IMG}: {IMG} {SCRIPT}"
    assert shown["this run, eval-x per patient"] == f"/data/{SCRIPT}/{IMG}: {SCRIPT} & {IMG}"
    assert shown[f"this run, {HOSTILE_FOLDER} per slice"] == "/data/plain: every slice"
    assert warning.startswith("Warning: ")


COVID = scores_dict(0.7, 40, 0.6, 0.8)["covid"]
DAMAGED = {  # metrics.json of eval-y
    "invalid JSON": b'{"covid": {"auc": 0.9,',
    "not UTF-8": b"\xff\xfe{}",
    "not an object": b"[1, 2, 3]",
    "missing keys": json.dumps({"evaluated_on": "x"}).encode(),
    "unknown key": json.dumps(evaluation(colour="blue")).encode(),
    "AUC not a number": json.dumps(evaluation(covid={**COVID, "auc": "high"})).encode(),
    "AUC NaN": json.dumps(evaluation(covid={**COVID, "auc": float("nan")})).encode(),
}


@pytest.mark.parametrize("damage", list(DAMAGED))
def test_damaged_evaluation_is_named_and_skipped(tiny_run, tmp_path, capsys, damage):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    put(run, "eval-good", json.dumps(evaluation("/data/good")))
    put(run, "eval-y", DAMAGED[damage])
    client = TestClient(create_app(run))
    err = [line for line in capsys.readouterr().err.splitlines() if "eval-y" in line]
    assert len(err) == 1 and err[0].startswith(str(run / "eval-y" / "metrics.json")) and "skipped" in err[0]
    r = client.get("/api/model")
    assert r.status_code == 200
    names = [f["name"] for f in r.json()["generalisation"]["figures"]]
    assert "this run, eval-good per slice" in names and not any("eval-y" in n for n in names)
    page = client.get("/")
    assert page.status_code == 200 and embedded_info(page.text) == r.json()
