import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LADNN_DATA_DIR", str((ROOT / ".." / "shared" / "data").resolve()))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    p = Path(os.environ["LADNN_DATA_DIR"])
    assert (p / "covid-ct").is_dir(), f"LADNN_DATA_DIR={p} holds no covid-ct/: the tests need the data copy"
    return p


@pytest.fixture(autouse=True, scope="session")
def _cache(tmp_path_factory):
    """A cache of the test session's own, so tests never depend on what an earlier run left behind."""
    os.environ["LADNN_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
