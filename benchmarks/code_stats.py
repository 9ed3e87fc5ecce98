"""Structure numbers of the code base: lines of the library and its largest module, import cycles between `ladnn`
modules and imports against the layers (both counting imports inside functions), the modules that import `train`,
the places that rename a temporary file into place (atomic writes), the string-key reads of metrics.json, lines of
code in each notebook, and the places outside the run-folder module that name a run's files. It reads files as text
and prints numbers; it is not a test (the layers are `ladnn.layers`, which tests/test_layers.py checks).

    python benchmarks/code_stats.py [--root DIR]
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ladnn.layers import calls_to, column_literals, cycles, floors, import_graph, layer_violations

RUN_FILES = {"config.json", "metrics.json", "predictions.csv", "history.csv", "status.json", "model.pt"}
# metrics.json keys found nowhere else (a read of one is a metrics read), and keys that are a metrics read when a
# string key is read from their value in turn (m["covid"]["auc"]; df["covid"] alone is a label column).
METRIC_KEYS = {"covid_ci95", "unseen_source", "best_epoch", "weights_source", "evaluated_on", "cluster_note",
               "sources_by_class", "test_groups", "per_patient"}
METRIC_CHAINS = {"covid", "run", "lesions", "protocol", "covid_ci95", "unseen_source"}


def _str_key(node) -> str | None:
    """The string key of `x["key"]` or `x.get("key", ...)`."""
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
        return node.slice.value
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        return node.args[0].value
    return None


def metrics_reads(tree: ast.AST) -> int:
    """String-key reads of metrics.json in a parsed file (see METRIC_KEYS and METRIC_CHAINS)."""
    n = 0
    for node in ast.walk(tree):
        inner = node.value if isinstance(node, ast.Subscript) else (
            node.func.value if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) else None)
        key = _str_key(node)
        if key in METRIC_KEYS or (key is not None and _str_key(inner) in METRIC_CHAINS - METRIC_KEYS):
            n += 1
    return n


def atomic_places(root: Path, files: list[Path]) -> list[str]:
    """Calls that rename a temporary file into place: `os.replace(...)` and `tmp.replace(...)`."""
    out = []
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "replace":
                v = node.func.value
                if (isinstance(v, ast.Name) and (v.id == "os" or "tmp" in v.id or "part" in v.id)) and node.args:
                    out.append(f"{f.relative_to(root)}:{node.lineno}")
    return out


def notebook_code_lines(f: Path) -> tuple[int, int]:
    """(code lines, code lines that are not imports, blanks or comments) over the notebook's code cells, the
    `parameters` cell left out."""
    nb = json.loads(f.read_text())
    total = logic = 0
    for c in nb["cells"]:
        if c["cell_type"] != "code" or "parameters" in c.get("metadata", {}).get("tags", []):
            continue
        for line in "".join(c["source"]).splitlines():
            s = line.strip()
            if not s:
                continue
            total += 1
            if not (s.startswith(("#", "import ", "from ")) and (" import " in s or s.startswith("import "))) \
                    and not s.startswith("#"):
                logic += 1
    return total, logic


def code_of(f: Path) -> str:
    """A Python file's text, or a notebook's code cells joined."""
    if f.suffix == ".ipynb":
        return "\n".join("".join(c["source"]) for c in json.loads(f.read_text())["cells"] if c["cell_type"] == "code")
    return f.read_text()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
    root = Path(ap.parse_args().root)
    files = sorted((root / "ladnn").rglob("*.py"))
    sizes = {str(f.relative_to(root)): len(f.read_text().splitlines()) for f in files}
    graph = import_graph(root)
    big = max(sizes, key=sizes.get)
    print(f"library: {sum(sizes.values())} lines in {len(files)} modules; largest: {big} ({sizes[big]} lines)")
    print(f"ladnn/book.py: {sizes.get('ladnn/book.py', 0)} lines")
    print(f"import cycles between modules (imports inside functions counted): {cycles(graph) or 'none'}")
    stack = floors(graph)
    print(f"import-graph floors: {len(stack)}; modules on a floor of their own: "
          f"{[m[0] for m in stack.values() if len(m) == 1] or 'none'}")
    for k, mods in stack.items():
        print(f"  floor {k}: {' '.join(mods)}")
    print(f"ladnn/predict.py: {sizes.get('ladnn/predict.py', 0)} lines")
    scanned = [*files, *sorted((root / "benchmarks").glob("*.py")), *sorted((root / "notebooks").glob("*.ipynb"))]
    scanned = [f for f in scanned if f.name not in ("code_stats.py", "layers.py")]  # they name what they look for
    trees = {str(f.relative_to(root)): ast.parse(code_of(f)) for f in scanned}
    auc = sorted(k for k, t in trees.items() if calls_to(t, "roc_auc_score"))
    print(f"modules calling roc_auc_score: {len(auc)} {auc}")
    cols = {k: c for k, t in trees.items() if (c := column_literals(t))}
    print(f"modules spelling a prediction column (a string literal such as 'p_covid'): {len(cols)} "
          f"({sum(cols.values())} literals) {cols}")
    bad = layer_violations(graph)
    print(f"imports against the layers: {len(bad)}")
    for b in bad:
        print(f"  {b}")
    users = sorted(m for m, deps in graph.items() if "ladnn.train" in deps)
    print(f"modules importing ladnn.train: {len(users)} {users}")
    places = atomic_places(root, files)
    print(f"places that rename a temporary file into place: {len(places)} {places}")
    code = [*files, *sorted((root / "benchmarks").glob("*.py"))]
    reads = {str(f.relative_to(root)): metrics_reads(ast.parse(f.read_text())) for f in code
             if f.name != "code_stats.py"}
    for nb in sorted((root / "notebooks").glob("*.ipynb")):
        src = "\n".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")
        reads[str(nb.relative_to(root))] = metrics_reads(ast.parse(src))
    reads = {k: v for k, v in reads.items() if v}
    print(f"string-key reads of metrics.json: {sum(reads.values())} in {len(reads)} files {reads}")
    for nb in sorted((root / "notebooks").glob("*.ipynb")):
        total, logic = notebook_code_lines(nb)
        print(f"notebook {nb.name}: {total} code lines, {logic} that are not imports")
    places = []
    for f in [*files, *sorted((root / "benchmarks").glob("*.py")), *sorted((root / "notebooks").glob("*.ipynb"))]:
        if f.name in ("rundir.py", "code_stats.py"):
            continue
        text = f.read_text()
        if f.suffix == ".ipynb":
            text = "\n".join("".join(c["source"]) for c in json.loads(text)["cells"] if c["cell_type"] == "code")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.split("/")[-1] in RUN_FILES:
                places.append(f"{f.relative_to(root)}:{node.lineno} ({node.value})")
    print(f"places outside ladnn/rundir.py that name a run file (a string literal such as 'metrics.json'): "
          f"{len(places)}")
    for p in places:
        print(f"  {p}")


if __name__ == "__main__":
    main()
