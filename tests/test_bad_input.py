"""The bad-input suite: one case per kind of bad input or fault a user can hit, through the command line, the book
runner, the library's readers and the service. Each case asserts the exit code or HTTP status, that the message
names the offending file, field or key, and that nothing on disk changed that should not have (`unchanged`).

Cases import only the public entry points (`ladnn.cli.main`, `ladnn.book.main`, `create_app`, `Predictor`,
`runs_table`, `decode`), so the suite can also be run against an older checkout to see what it did before."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ladnn.cli import main as cli_main

CASES: dict[str, object] = {}


def case(fn):
    """Register a case: a function taking the `env` fixture."""
    CASES[fn.__name__] = fn
    return fn


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` (and the names beside it), by relative path: what `unchanged` compares."""
    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    files["<siblings>"] = "\n".join(sorted(p.name for p in folder.parent.iterdir())).encode()
    return files


@contextlib.contextmanager
def unchanged(folder: Path):
    """The block must leave `folder` byte-identical, with nothing added beside it."""
    before = snapshot(folder)
    yield
    after = snapshot(folder)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"{folder}: changed {changed}"


class Env:
    """What a case works on: a fresh copy of the tiny run (`run`), a scratch folder, and the command line."""

    def __init__(self, tmp: Path, tiny_run: Path, capsys, monkeypatch, data_dir: Path):
        self.tmp, self.capsys, self.monkeypatch, self.data_dir = tmp, capsys, monkeypatch, data_dir
        self.run = tmp / "runs" / "tiny"
        shutil.copytree(tiny_run, self.run, ignore=shutil.ignore_patterns("eval*"))
        monkeypatch.setenv("LADNN_DATA_DIR", str(data_dir))  # `train --data-dir` sets it: restored after the case

    def cli(self, *args: str) -> tuple[int, str]:
        """The command line in-process: (exit code, what it printed to stdout and stderr)."""
        self.capsys.readouterr()
        try:
            rc = cli_main([str(a) for a in args])
        except SystemExit as e:  # argparse
            rc = e.code
        out = self.capsys.readouterr()
        return rc, out.out + out.err

    def book(self, *args: str) -> tuple[int, str]:
        from ladnn.book import main

        self.capsys.readouterr()
        rc = main([str(a) for a in args])
        out = self.capsys.readouterr()
        return rc, out.out + out.err

    def profile(self, text: str, name: str = "p") -> Path:
        """A profile file in a scratch repository root (`self.tmp`), for `--plan`."""
        (self.tmp / "profiles").mkdir(exist_ok=True)
        p = self.tmp / "profiles" / f"{name}.yaml"
        p.write_text(text)
        return p

    def image(self, name: str, arr: np.ndarray | None = None, fmt: str = "PNG", img: Image.Image | None = None,
              **kw) -> Path:
        """An image file in the scratch folder."""
        p = self.tmp / name
        (img or Image.fromarray(arr)).save(p, fmt, **kw)
        return p

    def client(self, run: Path | None = None):
        from fastapi.testclient import TestClient

        from ladnn.serve import create_app

        return TestClient(create_app(run or self.run, max_files=16))


def _ct_like(seed: int = 0, h: int = 128, w: int = 160) -> np.ndarray:
    """A grey image with a dark background and a brighter disc: not a real slice, but shaped like one."""
    yy, xx = np.mgrid[:h, :w]
    disc = ((yy - h / 2) ** 2 / (h / 2.2) ** 2 + (xx - w / 2) ** 2 / (w / 2.2) ** 2) < 1
    rng = np.random.default_rng(seed)
    a = np.where(disc, 150 + rng.integers(0, 60, (h, w)), rng.integers(0, 20, (h, w))).astype(np.uint8)
    return np.stack([a, a, a], -1)


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- a retrain never destroys a finished run
OVERWRITE = ["--backbone", "efficientnet_lite0", "--limit", "16", "--epochs", "1", "--finetune", "top", "--views",
             "2", "--tta", "4"]


@case
def overwrite_with_empty_data_folder(env: Env):
    (env.tmp / "empty").mkdir()
    with unchanged(env.run):
        rc, msg = env.cli("train", *OVERWRITE, "--out", env.run, "--overwrite", "--data-dir", env.tmp / "empty")
    assert rc == 2 and str(env.tmp / "empty") in msg


@case
def overwrite_with_a_string_learning_rate(env: Env):
    with unchanged(env.run):
        rc, msg = env.cli("train", *OVERWRITE, "--lr", "fast", "--out", env.run, "--overwrite")
    assert rc == 2 and "--lr" in msg


@case
def overwrite_with_an_unknown_backbone(env: Env):
    with unchanged(env.run):
        rc, msg = env.cli("train", *OVERWRITE, "--backbone", "resnet_18", "--out", env.run, "--overwrite")
    assert rc == 2 and "timm has no model named 'resnet_18'" in msg and "resnet18" in msg


@case
def overwrite_that_fails_during_training(env: Env):
    from ladnn import train as train_mod

    def killed(*a, **k):
        raise RuntimeError("killed in epoch 1")

    env.monkeypatch.setattr(train_mod, "_train", killed)
    with unchanged(env.run):
        rc, msg = env.cli("train", *OVERWRITE, "--out", env.run, "--overwrite")
    assert rc == 2 and "killed in epoch 1" in msg


@case
def train_without_overwrite_into_a_finished_run(env: Env):
    with unchanged(env.run):
        rc, msg = env.cli("train", *OVERWRITE, "--out", env.run)
    assert rc == 2 and str(env.run) in msg and "--overwrite" in msg


@case
def train_into_a_folder_that_is_not_a_run(env: Env):
    other = env.tmp / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with unchanged(other):
        rc, msg = env.cli("train", *OVERWRITE, "--out", other, "--overwrite")
    assert rc == 2 and str(other) in msg and "not a ladnn run" in msg


# ---------------------------------------------------------------- strict configuration
ONE_RUN = "matrix:\n  backbone: [efficientnet_lite0]\n"  # a profile of one run


@case
def limit_one(env: Env):
    rc, msg = env.cli("train", *OVERWRITE, "--limit", "1", "--out", env.tmp / "new")
    assert rc == 2 and "'limit'" in msg and not (env.tmp / "new").exists()


@case
def limit_zero(env: Env):
    rc, msg = env.cli("train", *OVERWRITE, "--limit", "0", "--out", env.tmp / "new")
    assert rc == 2 and "'limit'" in msg and not (env.tmp / "new").exists()


@case
def negative_learning_rate(env: Env):
    rc, msg = env.cli("train", *OVERWRITE, "--lr=-1e-3", "--out", env.tmp / "new")
    assert rc == 2 and "'lr'" in msg and not (env.tmp / "new").exists()


@case
def fold_outside_folds(env: Env):
    rc, msg = env.cli("train", *OVERWRITE, "--protocol", "grouped", "--folds", "3", "--fold", "3",
                      "--out", env.tmp / "new")
    assert rc == 2 and "'fold'" in msg and not (env.tmp / "new").exists()


@case
def set_float_in_exponent_notation(env: Env):
    """`--set lr=1e-3` (the runner's own example) is a float, not the string '1e-3'."""
    from ladnn.profiles import load_profile, parse_overrides

    prof = load_profile("smoke", Path(__file__).resolve().parents[1], parse_overrides(["lr=1e-3"]))
    assert all(isinstance(c.lr, float) and c.lr == 1e-3 for c in prof["runs"])


@case
def set_unknown_field(env: Env):
    env.profile(ONE_RUN)
    rc, msg = env.book("--profile", "p", "--root", env.tmp, "--plan", "--set", "epoch=3")
    assert rc == 1 and "'epoch'" in msg and "'epochs'" in msg


@case
def set_value_of_the_wrong_type(env: Env):
    env.profile(ONE_RUN)
    rc, msg = env.book("--profile", "p", "--root", env.tmp, "--plan", "--set", "epochs=three")
    assert rc == 1 and "'epochs'" in msg and "three" in msg


@case
def profile_float_without_a_dot(env: Env):
    """YAML 1.1 reads `2e-4` as a string; the profile reader parses it by the field's type."""
    from ladnn.profiles import load_profile

    env.profile(ONE_RUN + "config:\n  lr: 2e-4\n")
    prof = load_profile("p", env.tmp)
    assert prof["runs"][0].lr == 2e-4 and isinstance(prof["runs"][0].lr, float)


def _plan_refuses(env: Env, profile: str, *named: str) -> str:
    """`--plan` on this profile text exits 1 with one message naming the profile file and each of `named`."""
    p = env.profile(profile)
    rc, msg = env.book("--profile", "p", "--root", env.tmp, "--plan")
    assert rc == 1 and str(p) in msg and "Traceback" not in msg, msg
    assert all(n in msg for n in named), (named, msg)
    return msg.split(f"{p}:", 1)[-1]


@case
def profile_config_key_typo(env: Env):
    _plan_refuses(env, ONE_RUN + "config:\n  learning_rate: 0.001\n", "'learning_rate'")


@case
def profile_top_level_key_typo(env: Env):
    _plan_refuses(env, ONE_RUN + "ablation:\n  seeds: [0]\n", "'ablation'", "'ablations'")


@case
def profile_backbone_config_typo(env: Env):
    _plan_refuses(env, ONE_RUN + "backbone_confg:\n  resnet18: {pretrained: false}\n", "'backbone_confg'",
                  "'backbone_config'")


@case
def profile_ablation_variant_typo(env: Env):
    _plan_refuses(env, ONE_RUN + "ablations:\n  variants:\n    w1: {covid_wieght: 1.0}\n", "'covid_wieght'",
                  "'covid_weight'")


@case
def profile_invalid_yaml(env: Env):
    rest = _plan_refuses(env, "matrix:\n  backbone: [efficientnet_lite0\nconfig:\n  lr: 1\n", "invalid YAML")
    line, col = rest.split(":")[:2]  # file:line:column
    assert line.isdigit() and col.isdigit()


@case
def profile_empty_file(env: Env):
    _plan_refuses(env, "", "empty")


@case
def profile_unknown_backbone(env: Env):
    _plan_refuses(env, "matrix:\n  backbone: [efficientnet_lite9]\n", "timm has no model named 'efficientnet_lite9'",
                  "close names: efficientnet_lite")


@case
def unknown_backbone_does_not_ask_the_hub(env: Env):
    import socket

    def no_network(*a, **k):
        raise AssertionError("the hub was asked about a model that does not exist")

    env.monkeypatch.setattr(socket, "create_connection", no_network)
    rc, msg = env.cli("train", *OVERWRITE, "--backbone", "convnext_tiniest", "--out", env.tmp / "new")
    assert rc == 2 and "timm has no model named 'convnext_tiniest'" in msg and "convnext_tiny" in msg


# ---------------------------------------------------------------- damaged run folders are named and skipped
def _damage_plan(env: Env, content: str) -> None:
    """A run of a one-run profile whose status.json holds `content`: `--plan` lists it again, names the file, and
    changes nothing on disk."""
    from ladnn.profiles import load_profile, run_name

    env.profile(ONE_RUN + "config:\n  limit: 16\n  epochs: 1\n")
    run = env.tmp / "runs" / "p" / run_name(load_profile("p", env.tmp)["runs"][0])
    shutil.copytree(env.run, run)
    (run / "status.json").write_text(content)
    with unchanged(run):
        rc, msg = env.book("--profile", "p", "--root", env.tmp, "--plan")
    assert rc == 0 and f"--out {run}" in msg and str(run / "status.json") in msg


@case
def status_json_garbled(env: Env):
    _damage_plan(env, '{"status": "compl')


@case
def status_json_holding_a_list(env: Env):
    _damage_plan(env, '["complete"]')


@case
def status_json_with_the_wrong_key(env: Env):
    _damage_plan(env, '{"state": "complete"}')


def _runs_table_skips(env: Env, name: str, damage) -> None:
    from ladnn.rundir import runs_table

    bad = env.run.parent / "bad"
    shutil.copytree(env.run, bad)
    damage(bad)
    env.capsys.readouterr()
    with unchanged(bad):
        table = runs_table(env.run.parent)
    assert len(table) == 1  # the intact run is read, the damaged one skipped
    assert str(bad / name) in env.capsys.readouterr().out


@case
def config_json_garbled(env: Env):
    _runs_table_skips(env, "config.json", lambda r: (r / "config.json").write_text("{not json"))


@case
def config_json_unknown_field(env: Env):
    def damage(r):
        d = json.loads((r / "config.json").read_text())
        (r / "config.json").write_text(json.dumps({**d, "learning_rate": 0.1}))

    _runs_table_skips(env, "config.json", damage)


@case
def config_json_mistyped_field(env: Env):
    def damage(r):
        d = json.loads((r / "config.json").read_text())
        (r / "config.json").write_text(json.dumps({**d, "epochs": "two"}))

    _runs_table_skips(env, "config.json", damage)


@case
def metrics_json_garbled(env: Env):
    _runs_table_skips(env, "metrics.json", lambda r: (r / "metrics.json").write_text('{"covid": '))


@case
def result_file_missing(env: Env):
    _runs_table_skips(env, "predictions.csv", lambda r: (r / "predictions.csv").unlink())


@case
def model_pt_empty(env: Env):
    (env.run / "model.pt").write_bytes(b"")
    with unchanged(env.run):
        rc, msg = env.cli("predict", env.run, env.image("a.png", _ct_like()))
    assert rc == 2 and str(env.run / "model.pt") in msg


@case
def model_pt_truncated(env: Env):
    data = (env.run / "model.pt").read_bytes()
    (env.run / "model.pt").write_bytes(data[: len(data) // 2])
    with unchanged(env.run):
        rc, msg = env.cli("evaluate", env.run)
    assert rc == 2 and str(env.run / "model.pt") in msg


@case
def model_pt_of_another_backbone(env: Env):
    """A ResNet-18 checkpoint copied into a Lite0 run folder is refused, naming both files."""
    from ladnn.models import build_model

    ckpt = torch.load(env.run / "model.pt", weights_only=False)
    other = build_model("resnet18", "ladnn", pretrained=False)
    torch.save({**ckpt, "config": {**ckpt["config"], "backbone": "resnet18"}, "state_dict": other.state_dict()},
               env.run / "model.pt")
    with unchanged(env.run), pytest.raises(Exception, match="model.pt") as e:
        env.client()
    assert "config.json" in str(e.value) and "resnet18" in str(e.value)


@case
def model_pt_weights_that_do_not_fit(env: Env):
    """Same config, other weights (a state_dict of another architecture): refused, naming both files."""
    from ladnn.models import build_model

    ckpt = torch.load(env.run / "model.pt", weights_only=False)
    torch.save({**ckpt, "state_dict": build_model("resnet18", "ladnn", pretrained=False).state_dict()},
               env.run / "model.pt")
    with unchanged(env.run):
        rc, msg = env.cli("predict", env.run, env.image("a.png", _ct_like()))
    assert rc == 2 and str(env.run / "model.pt") in msg and str(env.run / "config.json") in msg


@case
def run_that_failed(env: Env):
    (env.run / "status.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
    with unchanged(env.run):
        rc, msg = env.cli("evaluate", env.run)
    assert rc == 2 and str(env.run) in msg and "failed" in msg


@case
def activation_cache_corrupt(env: Env):
    """A truncated activation cache file is named, removed and rebuilt: the run trains and is complete."""
    cache = env.tmp / "cache"
    env.monkeypatch.setenv("LADNN_CACHE_DIR", str(cache))  # a cache of its own: the others' stay intact
    out = env.tmp / "fresh"
    rc, _ = env.cli("train", *OVERWRITE, "--out", out)
    files = sorted((cache / "features").glob("*.pt"))
    assert rc == 0 and files, f"no activation cache under {cache}"
    for f in files:
        f.write_bytes(f.read_bytes()[:100])
    rc, msg = env.cli("train", *OVERWRITE, "--out", out, "--overwrite")
    assert rc == 0 and str(files[0]) in msg and "damaged" in msg
    assert json.loads((out / "status.json").read_text())["status"] == "complete"


@case
def image_cache_corrupt(env: Env):
    """A damaged decoded-image cache entry is named, removed and decoded again, with the same result."""
    from ladnn.images import ImageCache

    src = env.image("a.png", _ct_like())
    good = ImageCache(32, root=env.tmp / "cache").get(src)
    (f,) = list((env.tmp / "cache").rglob("*.npy"))
    f.write_bytes(b"\x93NUMPY garbage")
    env.capsys.readouterr()
    assert np.array_equal(ImageCache(32, root=env.tmp / "cache").get(src), good)  # a new process, as it were
    assert str(f) in env.capsys.readouterr().out


# ---------------------------------------------------------------- decoding rules
def _predict_one(env: Env, path: Path) -> tuple[int, dict]:
    rc, msg = env.cli("predict", env.run, path)
    return rc, json.loads(msg.splitlines()[0])


@case
def image_one_pixel(env: Env):
    rc, r = _predict_one(env, env.image("dot.png", np.zeros((1, 1, 3), np.uint8)))
    assert rc == 1 and "dot.png" in r["error"] and "minimum" in r["error"] and "p_covid" not in r


@case
def image_too_small(env: Env):
    rc, r = _predict_one(env, env.image("thumb.png", _ct_like(h=10, w=200)))
    assert rc == 1 and "thumb.png" in r["error"] and "minimum" in r["error"]


@case
def image_float_tiff_with_nan(env: Env):
    a = np.linspace(-1000, 1000, 64 * 64, dtype=np.float32).reshape(64, 64)
    a[3, 5] = np.nan
    rc, r = _predict_one(env, env.image("nan.tif", img=Image.fromarray(a, mode="F"), fmt="TIFF"))
    assert rc == 1 and "nan.tif" in r["error"] and "not finite" in r["error"]


@case
def image_float_tiff_with_infinity(env: Env):
    a = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    a[0, 0] = np.inf
    rc, r = _predict_one(env, env.image("inf.tif", img=Image.fromarray(a, mode="F"), fmt="TIFF"))
    assert rc == 1 and "inf.tif" in r["error"] and "not finite" in r["error"]


@case
def image_exif_orientation(env: Env):
    """A slice stored sideways with EXIF orientation 6 (as a camera or phone stores it) is decoded upright and
    scores exactly as the upright file does (PNG: lossless, so the pixels must match)."""
    from ladnn.data import load_table
    from ladnn.images import decode

    upright = np.asarray(Image.open(load_table("D0")["image"].iloc[5]).convert("RGB"))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    a = env.image("upright.png", upright)
    b = env.image("sideways.png", np.ascontiguousarray(np.rot90(upright, 1)), exif=exif)
    assert np.array_equal(np.asarray(decode(b.read_bytes(), "sideways.png")), upright)
    rc, msg = env.cli("predict", env.run, a, b)
    ra, rb = (json.loads(x) for x in msg.splitlines()[:2])
    assert rc == 0 and abs(ra["p_covid"] - rb["p_covid"]) < 1e-6


@case
def image_empty_file(env: Env):
    p = env.tmp / "empty.png"
    p.write_bytes(b"")
    rc, r = _predict_one(env, p)
    assert rc == 1 and "empty.png" in r["error"] and "empty" in r["error"]


@case
def image_missing_file(env: Env):
    rc, r = _predict_one(env, env.tmp / "nowhere.png")
    assert rc == 1 and "nowhere.png" in r["error"]


@case
def image_uniform_black_square_warns(env: Env):
    """A black square is scored (it is a readable image) but warned about: it is not a CT slice."""
    rc, r = _predict_one(env, env.image("black.png", np.zeros((256, 256, 3), np.uint8)))
    assert rc == 0 and any("uniform" in w for w in r["warnings"])


# ---------------------------------------------------------------- evaluate --images
def _folder(env: Env, classes: dict[str, int]) -> Path:
    root = env.tmp / "external"
    for sub, n in classes.items():
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(_ct_like(i)).save(root / sub / f"{i}.png")
    return root


@case
def evaluate_folder_with_one_class(env: Env):
    root = _folder(env, {"covid": 3, "noncovid": 0})
    with unchanged(env.run):
        rc, msg = env.cli("evaluate", env.run, "--images", root)
    assert rc == 2 and str(root) in msg and "both classes" in msg


@case
def evaluate_labels_csv_with_one_class(env: Env):
    root = _folder(env, {"covid": 3})
    (root / "labels.csv").write_text("file,covid\n" + "".join(f"covid/{i}.png,1\n" for i in range(3)))
    with unchanged(env.run):
        rc, msg = env.cli("evaluate", env.run, "--images", root)
    assert rc == 2 and "labels.csv" in msg and "both classes" in msg


@case
def evaluate_labels_csv_bad_value(env: Env):
    root = _folder(env, {"covid": 2})
    (root / "labels.csv").write_text("file,covid\ncovid/0.png,1\ncovid/1.png,yes\n")
    with unchanged(env.run):
        rc, msg = env.cli("evaluate", env.run, "--images", root)
    assert rc == 2 and f"{root / 'labels.csv'}:3" in msg and "'covid'" in msg


@case
def evaluate_lists_skipped_files(env: Env):
    """Files that are not images are listed with the reason; a GIF is scored like any image."""
    root = _folder(env, {"covid": 2, "noncovid": 2})
    (root / "covid" / "notes.txt").write_text("not an image")
    Image.fromarray(_ct_like(9)[..., 0]).save(root / "noncovid" / "x.gif")
    rc, msg = env.cli("evaluate", env.run, "--images", root)
    assert rc == 0 and "notes.txt" in msg and "skipped" in msg
    (ev,) = env.run.glob("eval-external-*")  # eval-<name>-<hash of the set's full path>
    pred = (ev / "predictions.csv").read_text()
    assert "x.gif" in pred and "notes.txt" not in pred


@case
def evaluate_fails_midway_writes_nothing(env: Env):
    """A failure while writing the outputs (here the ROC figure) leaves no partial eval folder."""
    from ladnn import evaluate as evaluate_mod

    root = _folder(env, {"covid": 2, "noncovid": 2})

    def broken(*a, **k):
        raise RuntimeError("disk full while drawing")

    env.monkeypatch.setattr(evaluate_mod, "roc_figure", broken)
    with unchanged(env.run):
        rc, msg = env.cli("evaluate", env.run, "--images", root)
    assert rc == 2 and "disk full" in msg


# ---------------------------------------------------------------- the service
def _post(client, files, cam=False):
    return client.post(f"/api/predict?cam={str(cam).lower()}", files=[("files", f) for f in files])


@case
def service_good_and_bad_files(env: Env):
    good = _png_bytes(_ct_like())
    r = _post(env.client(), [("a.png", good), ("bad.txt", b"hello"), ("b.png", good), ("empty.png", b"")])
    body = r.json()
    assert r.status_code == 207 and [x["filename"] for x in body["results"]] == ["a.png", "b.png"]
    assert {e["filename"]: e["status"] for e in body["errors"]} == {"bad.txt": 415, "empty.png": 400}
    assert all(e["filename"] in e["error"] for e in body["errors"])


@case
def service_only_bad_files(env: Env):
    r = _post(env.client(), [("x.txt", b"hello"), ("y.doc", b"world")])
    assert r.status_code == 415 and "x.txt" in r.json()["detail"] and "y.doc" in r.json()["detail"]


@case
def service_nan_tiff(env: Env):
    a = np.ones((64, 64), np.float32)
    a[1, 1] = np.nan
    buf = io.BytesIO()
    Image.fromarray(a, mode="F").save(buf, "TIFF")
    r = _post(env.client(), [("nan.tif", buf.getvalue())])
    assert r.status_code == 400 and "nan.tif" in r.json()["detail"] and "not finite" in r.json()["detail"]


@case
def service_tiny_image(env: Env):
    r = _post(env.client(), [("dot.png", _png_bytes(np.zeros((2, 2, 3), np.uint8)))])
    assert r.status_code in (400, 415) and "dot.png" in r.json()["detail"] and "minimum" in r.json()["detail"]


@case
def service_health_while_scoring(env: Env):
    """While the largest permitted request (16 files with Grad-CAM++) is scored, /api/health keeps answering:
    scoring runs off the event loop. Each file's scoring is slowed by 0.2 s here (a sleep, which releases the GIL as
    ONNX Runtime does), so the request lasts over 3 s whatever the machine: on the event loop it would block every
    health check. (The real latency is printed by benchmarks/load_test.py --health.)"""
    import httpx
    import uvicorn

    from ladnn.predict import Predictor
    from ladnn.serve import create_app

    real = Predictor.score

    def slow(self, *a, **k):
        time.sleep(0.2)
        return real(self, *a, **k)

    server = uvicorn.Server(uvicorn.Config(create_app(env.run, max_files=16), host="127.0.0.1", port=0,
                                           log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.time() + 120  # the first start of a run on a machine exports its ONNX copy
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    Predictor.score = slow
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    files = [("files", (f"{i}.png", _png_bytes(_ct_like(i)))) for i in range(16)]
    result = {}

    def big():
        result["r"] = httpx.post(f"{url}/api/predict?cam=true", files=files, timeout=600)

    try:
        worker = threading.Thread(target=big)
        worker.start()
        time.sleep(0.3)
        answered = 0
        while worker.is_alive():
            if httpx.get(f"{url}/api/health", timeout=600).json() == {"status": "ok"} and worker.is_alive():
                answered += 1
            time.sleep(0.05)
        worker.join()
    finally:
        Predictor.score = real
        server.should_exit = True
        t.join(10)
    assert result["r"].status_code == 200 and len(result["r"].json()["results"]) == 16
    assert answered >= 10, f"/api/health answered {answered} times while the 16-file request was being scored"


@case
def service_refuses_a_damaged_run(env: Env):
    (env.run / "status.json").write_text("{")
    with pytest.raises(Exception, match="status.json"):
        env.client()


@case
def service_documents_partial_results(env: Env):
    responses = env.client().get("/openapi.json").json()["paths"]["/api/predict"]["post"]["responses"]
    assert "207" in responses and "errors" in json.dumps(responses["207"])


@pytest.fixture
def env(tmp_path, tiny_run, capsys, monkeypatch, data_dir):
    return Env(tmp_path, Path(tiny_run), capsys, monkeypatch, data_dir)


def test_the_suite_covers_at_least_forty_kinds():
    assert len(CASES) >= 40, len(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, env):
    CASES[name](env)
