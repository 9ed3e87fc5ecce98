"""Real CT as input: DICOM slices of the COVID-CT-MD sample, the errors for files that cannot be scored, and the
external evaluation per slice and per patient."""
import io
import json

import numpy as np
import pandas as pd
import pydicom
import pytest

from ladnn import dicom
from ladnn.images import ImageError, ct_check, decode


@pytest.fixture(scope="module")
def labels(external_dir):
    return pd.read_csv(external_dir / "labels.csv")


def _bytes(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _file(external_dir, labels, i: int = 40) -> bytes:
    return (external_dir / labels["file"].iloc[i]).read_bytes()


def test_hu_window_and_lung(external_dir, labels):
    data = _file(external_dir, labels)
    assert dicom.is_dicom(data)
    hu, ds = dicom.read_hu(data, "x.dcm")
    assert ds.Modality == "CT" and hu.shape == (512, 512)
    assert hu.min() >= -1100 and hu.max() > 200  # air and bone in HU (stored - 1024)
    w = dicom.window_image(hu, "mediastinal")
    c, width = dicom.WINDOWS["mediastinal"]
    assert w[hu <= c - width / 2].max() == 0 and w[hu >= c + width / 2].min() == 255
    assert np.abs(dicom.window_image(hu, "lung") - np.clip((hu + 1350) / 1500, 0, 1) * 255).max() <= 0.51
    assert dicom.parse_window("-600,1200") == (-600.0, 1200.0)
    with pytest.raises(ValueError, match="CENTRE,WIDTH"):
        dicom.parse_window("wide")
    # the first slice of a series (neck) shows little lung, a mid-series slice a lot
    p1 = labels[labels["patient"] == "P001"].sort_values("slice_location")
    top = dicom.lung_fraction(dicom.read_hu((external_dir / p1["file"].iloc[0]).read_bytes())[0])
    mid = dicom.lung_fraction(dicom.read_hu((external_dir / p1["file"].iloc[len(p1) // 2]).read_bytes())[0])
    assert top < dicom.MIN_LUNG_FRACTION < mid
    img = decode(data, "x.dcm")
    assert img.mode == "RGB" and img.size == (512, 512) and not ct_check(img)["warnings"]


def test_series_order_is_slice_location(external_dir, labels):
    files = dicom.series_files(external_dir / "covid-19" / "P002")
    locs = [float(pydicom.dcmread(f, stop_before_pixels=True).SliceLocation) for f in files]
    assert locs == sorted(locs) and len(files) == (labels["patient"] == "P002").sum()
    assert [f.name for f in files] != sorted(f.name for f in files)  # file names would give another order


@pytest.mark.parametrize("change,message", [
    (lambda ds: setattr(ds, "Modality", "MR"), "modality 'MR', not CT"),
    (lambda ds: delattr(ds, "PixelData"), "no pixel data"),
    (lambda ds: setattr(ds, "NumberOfFrames", 3), "unsupported frame layout"),
    (lambda ds: setattr(ds, "SamplesPerPixel", 3), "unsupported frame layout"),
])
def test_unscorable_files_are_named(external_dir, labels, change, message):
    ds = pydicom.dcmread(io.BytesIO(_file(external_dir, labels)))
    change(ds)
    with pytest.raises(ImageError, match=f"bad.dcm: .*{message}"):
        decode(_bytes(ds), "bad.dcm")


def test_missing_decoder_is_named(external_dir, labels, monkeypatch):
    def no_plugin(self):
        raise RuntimeError("Unable to decompress 'JPEG Lossless' pixel data because all plugins are missing "
                           "dependencies")
    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_plugin))
    monkeypatch.setattr(dicom, "decoder_available", lambda syntax: False)  # as without pylibjpeg-libjpeg
    with pytest.raises(ImageError, match="s.dcm: no decoder installed .*pylibjpeg-libjpeg"):
        decode(_file(external_dir, labels), "s.dcm")


def test_truncated_and_empty_dicom(external_dir, labels):
    data = _file(external_dir, labels)
    with pytest.raises(ImageError, match=r"t.dcm: truncated DICOM file"):
        decode(data[: len(data) // 2], "t.dcm")
    with pytest.raises(ImageError, match="e.dcm: modality 'missing', not CT"):  # a header with no dataset
        decode(b"\0" * 128 + b"DICM" + b"\x02\x00", "e.dcm")


def test_ct_check_flags_what_is_not_ct():
    from PIL import Image

    rng = np.random.default_rng(0)
    photo = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    assert any("coloured" in w for w in ct_check(Image.fromarray(photo))["warnings"])
    assert any("uniform" in w for w in ct_check(Image.new("RGB", (64, 64), (200, 200, 200)))["warnings"])
    bright = np.full((100, 100, 3), 230, np.uint8)  # a bright picture with a small dark patch (2%)
    bright[:10, :20] = 100
    bright[50:] = 200
    assert any("darkest fifth" in w for w in ct_check(Image.fromarray(bright))["warnings"])


def test_ct_check_passes_the_data(data_dir, external_dir, labels):
    """Calibration: at least 99% of D0 and D1 and every COVID-CT-MD slice checked here pass."""
    from ladnn.data import load_table
    from ladnn.images import read_bytes

    t = load_table("D0+D1")
    flagged = [bool(ct_check(decode(read_bytes(p)))["warnings"]) for p in t["image"]]
    assert np.mean(flagged) <= 0.01
    for f in labels["file"].iloc[::15]:
        assert not ct_check(decode((external_dir / f).read_bytes()))["warnings"], f


def test_predict_and_evaluate_dicom(tiny_run, external_dir, labels, tmp_path, capsys):
    """`ladnn predict RUN FILE.dcm` and a folder; `ladnn evaluate RUN --images` with a labels CSV prints per-slice
    and per-patient AUC with intervals (a subset of the sample: 10 slices with lung per patient)."""
    from ladnn.cli import main

    f = external_dir / labels["file"].iloc[40]
    assert main(["predict", str(tiny_run), str(f)]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert 0 <= line["p_covid"] <= 1 and line["lung_fraction"] > 0 and line["image"] == str(f)
    sub = labels.groupby("patient").apply(lambda g: g.iloc[len(g) // 4: len(g) // 4 + 10], include_groups=False)
    sub = sub.reset_index(level=0)
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "sample").symlink_to(external_dir)  # paths in a labels CSV stay inside its folder
    sub["file"] = ["sample/" + x for x in sub["file"]]
    sub["infected"] = sub["infected"].astype("Int64")  # 0, 1 or empty, as in labels.csv
    sub.to_csv(tmp_path / "set" / "labels.csv", index=False)
    assert main(["evaluate", str(tiny_run), "--images", str(tmp_path / "set")]) == 0
    out = capsys.readouterr().out
    assert "AUC" in out and "Per patient (6 patients, 2 COVID-19" in out and "95% interval" in out
    assert "DICOM window: centre -600 HU, width 1500 HU" in out
    (ev,) = tiny_run.glob("eval-set-*")  # eval-<name>-<hash of the set's full path>
    m = json.loads((ev / "metrics.json").read_text())
    pred = pd.read_csv(ev / "predictions.csv")
    infected_0 = sub["diagnosis"].eq("COVID-19") & sub["infected"].eq(0)
    assert m["covid"]["n"] == int(pred["slice_scored"].sum()) == int((~infected_0 & (pred["lung_fraction"] >= 0.05)
                                                                      .to_numpy()).sum())
    assert m["per_patient"]["covid"]["n"] == 6 and m["per_patient"]["clusters"] == 6
    per = pd.read_csv(ev / "patients.csv")
    lung = pred[pred["lung_fraction"] >= 0.05]
    assert np.allclose(per.set_index("patient")["p_covid"], lung.groupby("patient")["p_covid"].mean())


def test_labels_csv_errors_name_the_line(tmp_path):
    from ladnn.evaluate import labels_table

    (tmp_path / "a.dcm").write_bytes(b"x")
    f = tmp_path / "labels.csv"
    f.write_text("file,diagnosis\na.dcm,COVID-19\nb.dcm,normal\n")
    with pytest.raises(FileNotFoundError, match=r"labels.csv:3: file 'b.dcm' not found"):
        labels_table(f)
    f.write_text("file,covid\na.dcm,yes\n")
    with pytest.raises(ValueError, match=r"labels.csv:2: column 'covid' must be 0 or 1"):
        labels_table(f)
    f.write_text("image,label\na.dcm,1\n")
    with pytest.raises(ValueError, match=r"labels.csv:1: .*'file'"):
        labels_table(f)
