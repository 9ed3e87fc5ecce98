"""The diagnosis service, in-process: every bad input gets a clear 4xx, valid images of every kind are scored."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import RUN_INFO
from conftest import scores_dict as _scores
from fastapi.testclient import TestClient
from PIL import Image

from ladnn.cli import main
from ladnn.data import load_table
from ladnn.serve import create_app


@pytest.fixture(scope="module")
def client(tiny_run):
    return TestClient(create_app(tiny_run, max_upload_mb=3, max_files=3, max_pixels=4_000_000))


def _img(mode, fmt="PNG", size=(64, 48)):
    if mode == "I;16":
        img = Image.fromarray(np.arange(size[0] * size[1], dtype=np.uint16).reshape(size[1], size[0]) * 7)
    else:
        img = Image.new(mode, size, 90 if mode in ("L", "P") else None)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def _noise_png(h=300, w=300):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def post(client, *files, cam=False):
    return client.post(f"/api/predict?cam={str(cam).lower()}", files=[("files", f) for f in files])


def test_health_model_and_page(client, tiny_run):
    assert client.get("/api/health").json() == {"status": "ok"}
    m = client.get("/api/model").json()
    assert m["config"]["backbone"] == "efficientnet_lite0" and m["outputs"][0] == "COVID" and len(m["outputs"]) == 6
    assert m["test_metrics"]["n"] == 16
    page = client.get("/").text
    words = " ".join(page.split())  # the page wraps its lines
    assert "not a medical device" in words and "only knows" in words
    assert 'src="http' not in page and 'href="http' not in page and "cdn" not in page.lower()
    assert client.get("/openapi.json").json()["paths"]["/api/predict"]


def test_matches_ladnn_predict(client, tiny_run, capsys, data_dir):
    paths = list(load_table("D0")["image"].iloc[[0, 400]])
    assert main(["predict", str(tiny_run), *paths]) == 0
    cli = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    files = [(p.rsplit("/", 1)[-1], Path(p).read_bytes()) for p in paths]
    res = post(client, *files).json()["results"]
    for a, b in zip(cli, res):
        for k in ("p_covid", "p_GGO", "p_InSepThi"):
            assert abs(a[k] - b[k]) < 1e-6


def test_an_image_scores_the_same_alone_or_in_a_batch(client, tiny_run, capsys, data_dir):
    """The run's test-time views (tta 4) of an image depend on the image alone: its scores are the same when it is
    uploaded alone, in a batch of three at any position, and through `ladnn predict`."""
    paths = list(load_table("D0")["image"].iloc[[3, 200, 500]])
    assert main(["predict", str(tiny_run), paths[1]]) == 0
    cli = json.loads(capsys.readouterr().out)
    files = [(p.rsplit("/", 1)[-1], Path(p).read_bytes()) for p in paths]
    alone = post(client, files[1]).json()["results"][0]
    batch = post(client, *files).json()["results"][1]
    reordered = post(client, files[1], files[2], files[0]).json()["results"][0]
    for k in ("p_covid", "p_GGO", "p_InSepThi"):
        assert abs(alone[k] - cli[k]) < 1e-6 and abs(batch[k] - cli[k]) < 1e-6 and abs(reordered[k] - cli[k]) < 1e-6


def test_cam_overlays_for_every_output(client, data_dir):
    p = load_table("D0")["image"].iloc[0]
    r = post(client, ("a.png", Path(p).read_bytes()), cam=True).json()["results"][0]
    assert set(r["cam"]) == {"COVID", "GGO", "Csld", "CrPa", "AirBr", "InSepThi"}
    assert r["cam"]["COVID"].startswith("data:image/jpeg;base64,") and r["image"].startswith("data:image/png")
    import base64

    import cv2

    for url, want in ((r["cam"]["GGO"], (224, 224, 3)), (r["image"], (224, 224, 3))):  # both decode, at the model's size
        img = cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape == want
    assert r["cam"]["COVID"] != r["cam"]["GGO"]


@pytest.mark.parametrize("mode,fmt", [("I;16", "PNG"), ("P", "PNG"), ("L", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG")])
def test_unusual_but_valid_images_are_scored(client, mode, fmt):
    r = post(client, (f"x.{fmt.lower()}", _img(mode, fmt)))
    assert r.status_code == 200, r.text
    assert 0 <= r.json()["results"][0]["p_covid"] <= 1


def test_bad_inputs_get_clear_4xx_and_service_keeps_serving(client):
    png = _img("RGB")
    cases = [
        (client.post("/api/predict"), 400, "no image"),
        (client.post("/api/predict", files=[("other", ("a.png", png))]), 400, "no image"),
        (post(client, ("evil.png", b"MZ this is not an image")), 415, "not a readable image"),
        (post(client, ("half.png", _noise_png()[:100_000])), 400, "truncated"),
        (post(client, ("zero.png", b"")), 400, "empty file"),
        (post(client, ("huge.png", _img("L", size=(2100, 2000)))), 413, "exceeds the limit"),
        (post(client, ("big.png", png + b"\0" * 3_200_000)), 413, "exceeds the limit"),
        (post(client, *[(f"{i}.png", png) for i in range(4)]), 413, "many"),
    ]
    for resp, code, text in cases:
        assert resp.status_code == code, (resp.status_code, resp.text)
        assert text in resp.json()["detail"].lower()
    assert post(client, ("ok.png", png)).status_code == 200


def test_uploads_never_touch_disk(client, monkeypatch):
    import tempfile

    def refuse(*a, **k):
        raise AssertionError("an upload was written to a temporary file")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    big = _noise_png(800, 700)
    assert 1.2e6 < len(big) < 3e6  # above Starlette's default 1 MB spool, below our limit
    assert post(client, ("noise.png", big)).status_code == 200


def test_warns_when_not_bound_to_localhost(tiny_run, monkeypatch, capsys):
    import uvicorn

    from ladnn import serve

    monkeypatch.setattr(uvicorn, "run", lambda app, host, port: None)
    serve.serve(tiny_run, "0.0.0.0", 8123)
    assert "warning" in capsys.readouterr().err
    serve.serve(tiny_run, "127.0.0.1", 8123)
    err = capsys.readouterr().err
    assert err.startswith("device: cpu (") and "warning" not in err  # the device line, and no warning


def test_model_info_shows_every_figure_and_warns(client, tiny_run):
    g = client.get("/api/model").json()["generalisation"]
    m = json.loads((Path(tiny_run) / "metrics.json").read_text())
    assert g["official_test"]["auc"] == m["covid"]["auc"]
    d1 = next(f for f in g["figures"] if f["name"] == "this run, D1 (new sources)")
    assert d1["auc"] == m["unseen_source"]["covid"]["auc"] and d1["new_data"]
    assert g["warning"] and "not been shown to work on CT from another hospital" in g["warning"]
    page = " ".join(client.get("/").text.split())
    assert 'id="gen-warning"' in page and "G.figures" in page
    assert page.index("G.warning") < page.index("G.figures")  # the warning is placed before the figures


def test_new_data_report_warning_rules():
    from ladnn.generalisation import NOT_SHOWN, new_data_report
    from ladnn.summary import RunMetrics

    def metrics(auc, unseen=None, lo=0.0, hi=1.0):
        m = {**_scores(auc, 100, auc - 0.05, auc + 0.05), "run": RUN_INFO,
             "protocol": {"protocol": "official", "test": "D0 test split"}}
        if unseen is not None:
            m["unseen_source"] = {**_scores(unseen, 80, lo, hi), "sources": 3, "evaluated_on": "D1",
                                  "sources_by_class": {"0": 2, "1": 1}}
        return RunMetrics.from_dict(m)

    def fig(auc, lo, hi, new=True):
        return {"name": "recipe, x", "auc": auc, "ci95": [lo, hi], "n": 100, "level": "group", "new_data": new,
                "on": "test"}

    assert "not been scored" in new_data_report(metrics(0.86))["warning"]
    below = new_data_report(metrics(0.86, unseen=0.60, lo=0.55, hi=0.70))["warning"]  # below 0.81..0.91
    assert below.startswith(NOT_SHOWN) and "below the official figure's interval" in below and "0.600" in below
    chance = new_data_report(metrics(0.86, unseen=0.80, lo=0.45, hi=0.95))["warning"]  # its interval holds 0.5
    assert chance.startswith(NOT_SHOWN) and "includes 0.5" in chance
    assert new_data_report(metrics(0.86, unseen=0.84, lo=0.78, hi=0.90))["warning"] is None  # new data holds up
    # a recipe figure from new data counts too, and a good one elsewhere does not cancel it
    g = new_data_report(metrics(0.86, unseen=0.84, lo=0.78, hi=0.90), [fig(0.85, 0.80, 0.90), fig(0.55, 0.40, 0.70)])
    assert g["warning"].startswith(NOT_SHOWN) and len(g["figures"]) == 4
    # a figure that is not from new data (protocol b) never warns and never reassures
    assert "not been scored" in new_data_report(metrics(0.86), [fig(0.5, 0.4, 0.6, new=False)])["warning"]
    fold = RunMetrics.from_dict({**_scores(0.7, 160, 0.6, 0.8), "run": RUN_INFO,
                                 "protocol": {"protocol": "collection", "test": "held-out collection MedPix",
                                              "test_groups": 60, "level": "group"}})
    g = new_data_report(fold)
    assert g["official_test"] is None and g["figures"][0]["new_data"] and g["warning"] is None
    # a figure on too few clusters shows no interval and never reassures, however high its AUC
    few = {**fig(0.95, 0.0, 0.0), "ci95": None, "few": {"positive": 2, "negative": 4, "p": 0.067}}
    g = new_data_report(metrics(0.86, unseen=0.84, lo=0.78, hi=0.90), [few])
    assert g["warning"].startswith(NOT_SHOWN) and "on 2 COVID-19 and 4 other group clusters, too few" in g["warning"]
    # the run's own D1 predictions, when given, are scored at their level: one positive article is too few
    import pandas as pd

    d1 = pd.DataFrame({"image": [f"{i}.png" for i in range(12)], "y_true": [1] * 6 + [0] * 6,
                       "p_covid": np.linspace(0.9, 0.1, 12), "group": ["article"] * 6 + [f"p{i}" for i in range(6)]})
    g = new_data_report(metrics(0.86, unseen=1.0, lo=0.99, hi=1.0), unseen=d1)
    d1_fig = g["figures"][1]
    assert d1_fig["ci95"] is None and d1_fig["few"] == {"positive": 1, "negative": 6, "p": pytest.approx(1 / 7)}
    assert "too few to tell any AUC from chance" in g["warning"]


def test_dicom_upload_and_not_ct_warnings(client, external_dir):
    import pandas as pd

    lab = pd.read_csv(external_dir / "labels.csv")
    neck = (external_dir / lab.sort_values("slice_location")["file"].iloc[0]).read_bytes()
    mid = (external_dir / lab["file"].iloc[40]).read_bytes()
    photo = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)).save(photo, "PNG")
    r = client.post("/api/predict", files=[("files", ("mid.dcm", mid)), ("files", ("neck.dcm", neck)),
                                           ("files", ("photo.png", photo.getvalue()))])
    assert r.status_code == 200
    mid_r, neck_r, photo_r = r.json()["results"]
    assert 0 <= mid_r["p_covid"] <= 1 and mid_r["warnings"] == [] and mid_r["lung_fraction"] > 0.05
    assert any("little lung" in w for w in neck_r["warnings"])
    assert any("coloured" in w for w in photo_r["warnings"])
    bad = client.post("/api/predict", files={"files": ("x.dcm", mid[: len(mid) // 2])})
    assert bad.status_code == 400 and "x.dcm: truncated DICOM file" in bad.json()["detail"]
