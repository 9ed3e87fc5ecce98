"""The import graph reads top to bottom: every `ladnn` module imports only modules of its own layer or below
(`ladnn.layers`), counting imports inside functions, and there are no cycles (benchmarks/code_stats.py prints the
same numbers)."""
from pathlib import Path

from ladnn import layers

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_has_a_layer_and_imports_downwards():
    graph = layers.import_graph(ROOT)
    assert set(graph) == set(layers.LAYER_OF), "a module has no layer in ladnn/layers.py: give it one"
    assert layers.layer_violations(graph) == []
    assert layers.cycles(graph) == []


def test_the_checks_can_fail():
    graph = {"ladnn.config": {"ladnn.train"}, "ladnn.train": {"ladnn.config"}}
    assert layers.cycles(graph) == [["ladnn.config", "ladnn.train"]]
    assert layers.layer_violations(graph) == ["ladnn.config (layer 0) imports ladnn.train (layer 3)"]
    assert layers.layer_violations({"ladnn.nowhere": set()}) == ["ladnn.nowhere has no layer"]


def test_floors_measure_the_tower():
    graph = {"a": set(), "b": {"a"}, "c": {"a", "b"}, "d": {"a"}}
    assert layers.floors(graph) == {0: ["a"], 1: ["b", "d"], 2: ["c"]}


def test_profiles_stand_below_the_command_line():
    """The profiles read the config's options from `ladnn.config`, not from the command line: they once imported
    `ladnn.cli`, which imports the service, and so stood on a floor of their own above both."""
    graph = layers.import_graph(ROOT)
    assert "ladnn.cli" not in graph["ladnn.profiles"]
    floor = {m: k for k, mods in layers.floors(graph).items() for m in mods}
    assert floor["ladnn.profiles"] < floor["ladnn.cli"] and floor["ladnn.profiles"] < floor["ladnn.serve"]


def test_predictor_does_not_import_training():
    graph = layers.import_graph(ROOT)
    assert "ladnn.train" not in graph["ladnn.predict"] and "ladnn.train" not in graph["ladnn.serve"]
    assert not any(m.startswith("ladnn.report") for m in graph["ladnn.serve"])


def _trees(*folders: str, suffix: str = ".py") -> dict[str, object]:
    import ast

    return {str(f.relative_to(ROOT)): ast.parse(f.read_text()) for d in folders
            for f in sorted((ROOT / d).rglob(f"*{suffix}")) if f.name != "layers.py"}


def test_every_auc_comes_from_the_scoring_primitives():
    """scikit-learn's `roc_auc_score` is called in `ladnn.metrics` alone (its `auc`); everything else scores
    through `ladnn.scores` or `ladnn.metrics`."""
    callers = [k for k, t in _trees("ladnn", "benchmarks").items() if layers.calls_to(t, "roc_auc_score")]
    assert callers == ["ladnn/metrics.py"]


def test_only_the_scoring_layer_spells_a_prediction_column():
    """A predictions table's columns are named through `ladnn.scores.PRED` (the library and the benchmarks)."""
    spelled = {k: n for k, t in _trees("ladnn", "benchmarks").items()
               if k != "benchmarks/code_stats.py" and (n := layers.column_literals(t))}
    assert spelled == {"ladnn/scores.py": 4}  # y_true, p_covid, f"p_{k}", f"y_{k}": the schema itself


def test_the_rule_checks_can_fail():
    import ast

    tree = ast.parse('import sklearn.metrics as skm\nskm.roc_auc_score(p["y_true"], p[f"p_{k}"])\n')
    assert layers.calls_to(tree, "roc_auc_score") == 1 and layers.column_literals(tree) == 2
