"""The layers of the package, bottom first: a module imports only modules of its own layer or a lower one
(imports inside functions count). tests/test_layers.py holds the package to it and benchmarks/code_stats.py prints
the numbers; both read the list, the import graph and the rules written once (`calls_to`, `column_literals`)
from here."""
from __future__ import annotations

import ast
from pathlib import Path

from ladnn.config import LESIONS

LAYERS = (
    # 0: the config and what every module may use
    ("ladnn", "ladnn.config", "ladnn.files", "ladnn.summary", "ladnn.layers"),
    # 1: data, images, networks, losses, metrics and run folders
    ("ladnn.data", "ladnn.sources", "ladnn.dicom", "ladnn.images", "ladnn.marks", "ladnn.lung", "ladnn.models",
     "ladnn.rundir", "ladnn.loss",
     "ladnn.metrics", "ladnn.fetch", "ladnn.mtl"),
    # 2: inference and scoring
    ("ladnn.infer", "ladnn.cam", "ladnn.scores"),
    # 3: training, prediction, evaluation and how a run does on new data
    ("ladnn.train", "ladnn.predict", "ladnn.evaluate", "ladnn.generalisation"),
    # 4: the book's chapters, the service, the command line and the build
    ("ladnn.report", "ladnn.report.dataset", "ladnn.report.leakage", "ladnn.report.lesions", "ladnn.report.maps",
     "ladnn.report.marks", "ladnn.report.reproduction", "ladnn.report.results", "ladnn.report.selection",
     "ladnn.report.unseen", "ladnn.report.validity", "ladnn.report.lab", "ladnn.report.lesson", "ladnn.serve",
     "ladnn.cli",
     "ladnn.profiles", "ladnn.runner", "ladnn.pages", "ladnn.book"),
)
LAYER_OF = {m: k for k, layer in enumerate(LAYERS) for m in layer}


def module_name(root: Path, f: Path) -> str:
    """`ladnn/report/lab.py` -> `ladnn.report.lab` (a package's `__init__.py` is the package)."""
    parts = list(f.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def ladnn_imports(f: Path) -> set[str]:
    """The `ladnn` modules (and names) that `f` imports anywhere, at module level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ladnn"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("ladnn"))
    return out


def import_graph(root: str | Path) -> dict[str, set[str]]:
    """Each `ladnn` module under `root` and the `ladnn` modules it imports."""
    root = Path(root)
    mods = {module_name(root, f): f for f in sorted((root / "ladnn").rglob("*.py"))}
    return {m: {i for i in ladnn_imports(f) if i in mods and i != m} for m, f in mods.items()}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a module from a higher layer than the importer's; a module without a layer is one too."""
    out = []
    for m in sorted(graph):
        if m not in LAYER_OF:
            out.append(f"{m} has no layer")
            continue
        out += [f"{m} (layer {LAYER_OF[m]}) imports {i} (layer {LAYER_OF[i]})"
                for i in sorted(graph[m]) if LAYER_OF.get(i, 99) > LAYER_OF[m]]
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
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


def floors(graph: dict[str, set[str]]) -> dict[int, list[str]]:
    """The import graph's floors: a module that imports no `ladnn` module is on floor 0, any other one floor above
    the highest module it imports. How tall the tower stands, measured rather than declared (no cycles assumed)."""
    floor: dict[str, int] = {}

    def of(m: str) -> int:
        if m not in floor:
            floor[m] = 1 + max((of(i) for i in graph.get(m, ())), default=-1)
        return floor[m]

    out: dict[int, list[str]] = {}
    for m in sorted(graph):
        out.setdefault(of(m), []).append(m)
    return dict(sorted(out.items()))


# ---------------------------------------------------------------- rules written once
# Columns that only a predictions table has (`ladnn.scores.PRED`, which sits higher and is not imported here): a
# string literal spelling one reads or writes a column outside the scoring layer.
PRED_COLUMNS = {"y_true", "p_covid", *(f"{p}_{k}" for p in "py" for k in LESIONS)}


def calls_to(tree: ast.AST, name: str) -> int:
    """Calls of a function by name: `name(...)` or `module.name(...)`."""
    return sum(1 for n in ast.walk(tree) if isinstance(n, ast.Call) and (
        (isinstance(n.func, ast.Name) and n.func.id == name) or
        (isinstance(n.func, ast.Attribute) and n.func.attr == name)))


def column_literals(tree: ast.AST) -> int:
    """String literals (f-string parts included) that are a prediction column, or build one (`f"p_{k}"`)."""
    n = 0
    for node in ast.walk(tree):
        literal = isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in PRED_COLUMNS
        built = (isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant)
                 and node.values[0].value in ("p_", "y_"))
        n += bool(literal or built)
    return n
