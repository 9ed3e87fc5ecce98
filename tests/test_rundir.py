import json

import pytest

from ladnn.rundir import RunDir, RunExistsError, status


def test_lifecycle_and_refusal(tmp_path):
    r = RunDir(tmp_path / "run")
    r.start({"a": 1})
    assert status(r.path) == "running"
    with pytest.raises(RuntimeError, match="missing"):
        r.finish()  # files absent: never marked complete
    for f in ("history.csv", "model.pt", "predictions.csv", "metrics.json"):
        r.write(f, "x")
    r.finish()
    assert status(r.path) == "complete"
    with pytest.raises(RunExistsError, match="--overwrite"):
        RunDir(r.path).start({"a": 2})
    assert json.loads((r.path / "config.json").read_text()) == {"a": 1}
    RunDir(r.path).start({"a": 2}, overwrite=True)
    assert status(r.path) == "running" and not (r.path / "metrics.json").exists()


def test_failure_is_marked(tmp_path):
    r = RunDir(tmp_path / "run")
    r.start({})
    r.fail(ValueError("boom"))
    s = json.loads((r.path / "status.json").read_text())
    assert s["status"] == "failed" and "boom" in s["error"]
    RunDir(r.path).start({})  # an unfinished run may be replaced without --overwrite


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(RunExistsError, match="not a ladnn run"):
        RunDir(tmp_path).start({})
    assert (tmp_path / "mine.txt").read_text() == "precious"
