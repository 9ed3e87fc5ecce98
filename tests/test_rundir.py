import json

import pytest
from conftest import run_metrics, scores_dict

from ladnn.rundir import RunExistsError, RunWriter, status
from ladnn.summary import Evaluation, Scores


def test_lifecycle_and_refusal(tmp_path):
    r = RunWriter(tmp_path / "run")
    r.start({"a": 1})
    assert status(r.path) == "running"
    with pytest.raises(RuntimeError, match="missing"):
        r.finish()  # files absent: never marked complete
    for f in ("history.csv", "model.pt", "predictions.csv", "metrics.json"):
        r.write(f, "x")
    r.finish()
    assert status(r.path) == "complete"
    with pytest.raises(RunExistsError, match="--overwrite"):
        RunWriter(r.path).start({"a": 2})
    assert json.loads((r.path / "config.json").read_text()) == {"a": 1}
    new = RunWriter(r.path)
    new.start({"a": 2}, overwrite=True)  # trained beside the finished run, which stays until the new one is done
    assert new.path != r.path and new.path.parent == r.path.parent and new.path.name.startswith(".")
    assert status(new.path) == "running" and status(r.path) == "complete"
    assert json.loads((r.path / "config.json").read_text()) == {"a": 1}
    for f in ("history.csv", "model.pt", "predictions.csv", "metrics.json"):
        new.write(f, "y")
    new.finish()
    assert new.path == r.path and json.loads((r.path / "config.json").read_text()) == {"a": 2}
    assert (r.path / "model.pt").read_text() == "y" and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_failed_replacement_leaves_the_finished_run_byte_identical(tmp_path):
    r = RunWriter(tmp_path / "run")
    r.start({"a": 1})
    for f in ("history.csv", "model.pt", "predictions.csv", "metrics.json"):
        r.write(f, f"old {f}")
    r.finish()
    before = {p.name: p.read_bytes() for p in r.path.iterdir()}
    new = RunWriter(r.path)
    new.start({"a": 2}, overwrite=True)
    new.write("history.csv", "half")
    new.fail(RuntimeError("killed"))
    assert {p.name: p.read_bytes() for p in r.path.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the replacement's folder is gone


def test_a_killed_replacements_hidden_folder_is_removed_by_the_next_start(tmp_path):
    r = RunWriter(tmp_path / "run")
    r.start({"a": 1})
    for f in ("history.csv", "model.pt", "predictions.csv", "metrics.json"):
        r.write(f, "old")
    r.finish()
    killed = RunWriter(r.path)
    killed.start({"a": 2}, overwrite=True)  # then killed: no fail(), no finish(); its claim goes stale
    killed.write("history.csv", "half")
    killed.release()
    others = [tmp_path / ".run2.new-0000abcd", tmp_path / ".run.new-b.new-0000abcd"]  # other runs' replacements
    for other in others:  # (of runs `run2` and `run.new-b`): not ours to remove
        other.mkdir()
    assert killed.path.exists()
    new = RunWriter(r.path)
    new.start({"a": 3}, overwrite=True)
    assert not killed.path.exists() and all(o.exists() for o in others) and new.path.exists()
    assert json.loads((r.path / "config.json").read_text()) == {"a": 1}  # the finished run is untouched
    new.fail(RuntimeError("stop"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(o.name for o in others), "run"])


def test_failure_is_marked(tmp_path):
    r = RunWriter(tmp_path / "run")
    r.start({})
    r.fail(ValueError("boom"))
    s = json.loads((r.path / "status.json").read_text())
    assert s["status"] == "failed" and "boom" in s["error"]
    RunWriter(r.path).start({})  # an unfinished run may be replaced without --overwrite


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(RunExistsError, match="not a ladnn run"):
        RunWriter(tmp_path).start({})
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_reader_refuses_unfinished_runs_and_reads_finished_ones(tmp_path):
    import pandas as pd

    from ladnn.config import Config
    from ladnn.rundir import FinishedRun, IncompleteRunError, find_runs, is_done
    from ladnn.scores import PRED, predictions_table

    r = RunWriter(tmp_path / "run")
    r.start(Config().to_dict())
    with pytest.raises(IncompleteRunError, match="running"):
        FinishedRun(r.path)
    df = pd.DataFrame({"name": ["a.png", "b.png"], "covid": [1, 0], "lesions_known": [True, False],
                       **{k: [1, 0] for k in ("GGO", "Csld", "CrPa", "AirBr", "InSepThi")}})
    import numpy as np

    pred = predictions_table(df, np.array([[0.9] * 6, [0.2] * 6]), Config().tasks)
    metrics = run_metrics(1.0)
    r.write_results(pd.DataFrame({"epoch": [1]}), pred, {"config": {}}, metrics)
    run = FinishedRun(r.path)
    assert run.config == Config() and run.metrics == metrics and run.metrics.covid.auc == 1.0
    assert list(run.predictions[PRED.p_covid]) == [0.9, 0.2] and list(run.history["epoch"]) == [1]
    assert is_done(r.path, Config()) and not is_done(r.path, Config(seed=1))
    e = Evaluation(**vars(Scores.from_dict(scores_dict(1.0, 2, 1.0, 1.0))),
                   evaluated_on="test", cluster_note="none")
    out = run.write_evaluation("eval", pred, e)
    assert Evaluation.from_dict(json.loads((out / "metrics.json").read_text())) == e
    RunWriter(r.path).start(Config().to_dict(), overwrite=True)
    assert FinishedRun(r.path).metrics == metrics  # a replacement that has not finished hides nothing
    assert [x.path for x in find_runs(tmp_path)] == [r.path]  # and its hidden folder is never read as a run


def test_predictions_carry_the_resampling_cluster():
    import numpy as np
    import pandas as pd

    from ladnn.scores import PRED, predictions_table

    df = pd.DataFrame({"name": ["a.png", "b.png", "c.png"], "covid": [1, 1, 0], "lesions_known": [True, True, False],
                       "patient": ["Patient 7", "", ""], "source": ["2020.03.01", "2020.03.01", ""]})
    pred = predictions_table(df, np.array([[0.9], [0.8], [0.1]]), ("COVID",))
    assert list(pred[PRED.group]) == ["Patient 7", "2020.03.01", "c.png"]  # patient, else source document, else image
    bare = predictions_table(df[["name", "covid", "lesions_known"]], np.array([[0.9], [0.8], [0.1]]), ("COVID",))
    assert list(bare[PRED.group]) == ["a.png", "b.png", "c.png"]  # a folder of images: each image its own cluster


def test_a_run_saved_before_a_config_field_existed_is_not_reused(tmp_path):
    import pandas as pd

    from ladnn.config import Config
    from ladnn.rundir import is_done

    r = RunWriter(tmp_path / "old")
    old = Config().to_dict()
    del old["loss_reduction"]  # trained before the field existed, with the loss then in use
    r.start(old)
    r.write_results(pd.DataFrame({"epoch": [1]}), pd.DataFrame({"image": ["a"], "y_true": [1], "p_covid": [0.5]}),
                    {"config": old}, run_metrics())
    assert not is_done(r.path, Config())
