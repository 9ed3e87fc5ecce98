"""Structure numbers of the code base (issue "The house"): lines of the library and its largest module, import cycles
between `ladnn` modules, lines of code in each notebook, and the places outside the run-folder module that name
a run's files. It reads files as text and prints numbers; it is not a test.

    python benchmarks/code_stats.py [--root DIR]
"""
from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

RUN_FILES = {"config.json", "metrics.json", "predictions.csv", "history.csv", "status.json", "model.pt"}


def module_name(root: Path, f: Path) -> str:
    parts = list(f.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def ladnn_imports(root: Path, f: Path) -> set[str]:
    """The `ladnn` modules that `f` imports anywhere (module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ladnn"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("ladnn"))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
    root = Path(ap.parse_args().root)
    files = sorted((root / "ladnn").rglob("*.py"))
    sizes = {str(f.relative_to(root)): len(f.read_text().splitlines()) for f in files}
    mods = {module_name(root, f): f for f in files}
    graph = {m: {i for i in ladnn_imports(root, f) if i in mods and i != m} for m, f in mods.items()}
    big = max(sizes, key=sizes.get)
    print(f"library: {sum(sizes.values())} lines in {len(files)} modules; largest: {big} ({sizes[big]} lines)")
    print(f"import cycles between modules: {cycles(graph) or 'none'}")
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
