"""The import graph reads top to bottom: every `ladnn` module imports only modules of its own layer or below,
counting imports inside functions, and there are no cycles (benchmarks/code_stats.py prints the same numbers)."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _code_stats():
    spec = importlib.util.spec_from_file_location("code_stats", ROOT / "benchmarks" / "code_stats.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_module_has_a_layer_and_imports_downwards():
    cs = _code_stats()
    graph = cs.import_graph(ROOT)
    assert set(graph) == set(cs.LAYER_OF), "a module has no layer in benchmarks/code_stats.py: give it one"
    assert cs.layer_violations(graph) == []
    assert cs.cycles(graph) == []


def test_the_checks_can_fail():
    cs = _code_stats()
    graph = {"ladnn.config": {"ladnn.train"}, "ladnn.train": {"ladnn.config"}}
    assert cs.cycles(graph) == [["ladnn.config", "ladnn.train"]]
    assert cs.layer_violations(graph) == ["ladnn.config (layer 0) imports ladnn.train (layer 3)"]


def test_predictor_does_not_import_training():
    graph = _code_stats().import_graph(ROOT)
    assert "ladnn.train" not in graph["ladnn.predict"] and "ladnn.train" not in graph["ladnn.serve"]
    assert not any(m.startswith("ladnn.report") for m in graph["ladnn.serve"])
