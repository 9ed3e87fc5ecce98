"""Every chapter for any grid: a grid-smoke book (two backbone families, both datasets, both methods), the runner's
overrides, optional backbones, `--plan` for schedulers and one GPU per parallel job."""
import json
import queue
import shlex
import shutil
from pathlib import Path

import pytest
from conftest import book_copy, run_metrics

from ladnn.book import build
from ladnn.profiles import BuildError, load_profile, parse_overrides, plan, training_runs
from ladnn.runner import _worker_init

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def grid_book(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    book_copy(root)
    build("grid-smoke", root)
    return root


def _page(root, name):
    return (root / "_build" / "html" / "book" / "_generated" / f"{name}.html").read_text()


def test_grid_smoke_profile_is_two_families_two_datasets():
    prof = load_profile("grid-smoke", ROOT)
    runs = prof["runs"]
    assert len(runs) == 8 and {c.dataset for c in runs} == {"D0", "D0+D1"}
    assert {(c.backbone, c.pretrained) for c in runs} == {("efficientnet_lite0", True), ("resnet18", False)}


def test_every_chapter_shows_every_backbone_and_dataset(grid_book):
    results = _page(grid_book, "results")
    for bb in ("efficientnet_lite0", "resnet18"):
        for ds in ("D0", "D0+D1"):
            assert f"{bb} on {ds}" in results  # a ROC figure and a mean-AUC sentence per pair
    assert results.count('<img alt=') >= 4
    assert results.count("<tr") > 64  # Table 2: 4 rows per backbone and dataset, ours and the paper's, none cut
    for page in ("gradcam", "pairplot"):
        text = _page(grid_book, page)
        assert "efficientnet_lite0 on D0+D1" in text and "resnet18 on D0" in text, page
    validity = _page(grid_book, "validity")
    assert "resnet18" in validity and "LA-DNN (profile)" in validity
    assert "resnet18" in _page(grid_book, "reproduction")


def test_overrides_reach_every_run_and_bad_ones_name_the_field():
    prof = load_profile("gpu", ROOT, parse_overrides(["device=cpu", "limit=8", "epochs=1"]))
    assert {(c.device, c.limit, c.epochs) for c in prof["runs"] + [c for _, c in prof["ablation_runs"]]} == {
        ("cpu", 8, 1)}
    assert {c.backbone for c in prof["runs"]} >= {"tf_efficientnet_lite0", "tf_efficientnet_lite1",
                                                 "tf_efficientnet_lite2"}
    assert {c.finetune for c in prof["runs"]} == {"full"}
    with pytest.raises(BuildError, match="unknown key 'epoch'; did you mean 'epochs'"):
        parse_overrides(["epoch=3"])


def test_plan_lists_the_runs_still_to_train(tmp_path):
    from ladnn.cli import _config, parser
    from ladnn.rundir import RunWriter

    (tmp_path / "profiles").mkdir()
    shutil.copy(ROOT / "profiles" / "smoke.yaml", tmp_path / "profiles" / "smoke.yaml")
    cmds = plan("smoke", tmp_path)
    prof = load_profile("smoke", tmp_path)
    todo = training_runs(prof, tmp_path)
    assert len(cmds) == len(todo) == 3
    train = next(a for a in parser()._actions if a.dest == "cmd").choices["train"]
    for cmd, (_, cfg, out) in zip(cmds, todo):
        args = shlex.split(cmd)
        assert args[:2] == ["ladnn", "train"]
        assert _config(train.parse_args(args[2:])) == cfg and args[args.index("--out") + 1] == str(out)
        assert Path(args[args.index("--data-dir") + 1]).is_absolute()  # the command runs from any directory
    _, cfg, out = todo[0]
    r = RunWriter(out)
    r.start(cfg.to_dict())
    for f in ("history.csv", "model.pt", "predictions.csv"):
        r.write(f, "x")
    r.write("metrics.json", json.dumps(run_metrics().to_dict()))
    r.finish()
    assert len(plan("smoke", tmp_path)) == 2 and str(out) not in " ".join(plan("smoke", tmp_path))


def test_each_worker_takes_its_own_gpu(monkeypatch):
    q = queue.Queue()
    for g in ("0", "1"):
        q.put(g)
    import os

    # _worker_init writes os.environ (in a worker process it must): have monkeypatch record every variable it
    # touches first, so each is restored (or removed again) after the test and nothing leaks into later tests
    for var in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "recorded")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    _worker_init(4, q)
    first = os.environ["CUDA_VISIBLE_DEVICES"]
    _worker_init(4, q)
    assert {first, os.environ["CUDA_VISIBLE_DEVICES"]} == {"0", "1"} and os.environ["OMP_NUM_THREADS"] == "4"
    assert os.environ["MKL_NUM_THREADS"] == "4"


def test_worker_environment_does_not_leak():
    import os

    # runs after the test above (file order): the variables it set are gone again
    assert os.environ.get("CUDA_VISIBLE_DEVICES") != "1" and os.environ.get("OMP_NUM_THREADS") != "4"
