import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LADNN_DATA_DIR", str((ROOT / ".." / "shared" / "data").resolve()))


os.environ.setdefault("LADNN_EXTERNAL_DIR",
                      str((ROOT / ".." / "shared" / "external" / "covid-ct-md-sample").resolve()))


@pytest.fixture(scope="session")
def external_dir() -> Path:
    p = Path(os.environ["LADNN_EXTERNAL_DIR"])
    assert (p / "labels.csv").is_file(), f"LADNN_EXTERNAL_DIR={p} holds no labels.csv: the tests need COVID-CT-MD"
    return p


@pytest.fixture(scope="session")
def data_dir() -> Path:
    p = Path(os.environ["LADNN_DATA_DIR"])
    assert (p / "covid-ct").is_dir(), f"LADNN_DATA_DIR={p} holds no covid-ct/: the tests need the data copy"
    return p


@pytest.fixture(autouse=True, scope="session")
def _cache(tmp_path_factory):
    """A cache of the test session's own, so tests never depend on what an earlier run left behind."""
    os.environ["LADNN_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


TINY = ["--backbone", "efficientnet_lite0", "--dataset", "D0", "--limit", "16", "--epochs", "2", "--views", "2",
        "--lr", "1e-3", "--batch-size", "8"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, data_dir):
    """A small real LA-DNN run (16 images per split), trained once through the command line, with test-time views
    (tta 4, as the quick profile) on cached activations."""
    from ladnn.cli import main

    out = tmp_path_factory.mktemp("runs") / "ladnn"
    assert main(["train", *TINY, "--finetune", "top", "--tta", "4", "--method", "ladnn", "--out", str(out)]) == 0
    return out


BOOK_SOURCES = ("_config.yml", "_toc.yml", "references.bib", "book", "notebooks", "profiles", "_static", "ladnn")  # ladnn: literalinclude


def book_copy(root: Path) -> Path:
    """The book's sources copied into `root` (no generated pages), so a test build never touches the checkout."""
    import shutil

    for s in BOOK_SOURCES:
        if (ROOT / s).exists():
            (shutil.copytree if (ROOT / s).is_dir() else shutil.copy)(ROOT / s, root / s)
    shutil.rmtree(root / "book" / "_generated", ignore_errors=True)
    return root


def scores_dict(auc: float, n: int, lo: float, hi: float) -> dict:
    """A metrics.json block with this COVID AUC and interval (the other metrics are filler)."""
    filler = dict.fromkeys(("ap", "sensitivity", "specificity", "precision", "f1", "accuracy"), 0.5)
    return {"covid": {"auc": auc, "n": n, "n_pos": n // 2, **filler},
            "covid_ci95": {"auc": [lo, hi], **{k: [0.4, 0.6] for k in filler}}, "clusters": n}


RUN_INFO = {"best_epoch": 1, "seconds": 1.0, "device": "cpu", "timm_name": "x", "weights_source": "none",
            "pretrained": False, "torch": "test"}


def run_metrics(auc: float = 1.0):
    """A complete, typed metrics.json (ladnn.summary.RunMetrics) with this COVID AUC."""
    from ladnn.summary import RunMetrics

    return RunMetrics.from_dict({**scores_dict(auc, 2, auc, auc), "run": RUN_INFO})
