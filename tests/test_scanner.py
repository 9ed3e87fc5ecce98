"""Real scanner data without surprises: DICOM that cannot be scored truthfully is refused or flagged, naming the file
and the field, on the command line, in `evaluate` and in the service alike; limits are read from the header before
any pixel is decoded; one bad file never sinks the others; a folder is split into series by patient, study and
series; labels files as spreadsheets write them are read, or refused naming the lines."""
import io
import json
import os
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless, generate_uid

from ladnn import dicom
from ladnn.cli import main
from ladnn.images import ImageError, decode, read_bytes

STUDY, SERIES = generate_uid(), generate_uid()


def ct(rows: int = 64, cols: int = 64, z: float = 0.0, patient: str = "P1", study: str = STUDY,
       series: str = SERIES, **fields) -> FileDataset:
    """An uncompressed CT slice: air around a body with two lungs, stored as HU + 1024 (intercept -1024)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    yy, xx = np.mgrid[:rows, :cols]
    cy, cx = rows / 2, cols / 2
    hu = np.full((rows, cols), -1000.0)
    hu[((yy - cy) / (0.42 * rows)) ** 2 + ((xx - cx) / (0.45 * cols)) ** 2 < 1] = 40
    for side in (-1, 1):
        hu[((yy - cy) / (0.3 * rows)) ** 2 + ((xx - cx - side * 0.2 * cols) / (0.14 * cols)) ** 2 < 1] = -800
    ds.update({"SOPClassUID": CTImageStorage, "SOPInstanceUID": meta.MediaStorageSOPInstanceUID, "Modality": "CT",
               "PatientID": patient, "StudyInstanceUID": study, "SeriesInstanceUID": series,
               "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"], "Rows": rows, "Columns": cols,
               "SamplesPerPixel": 1, "PhotometricInterpretation": "MONOCHROME2", "BitsAllocated": 16,
               "BitsStored": 16, "HighBit": 15, "PixelRepresentation": 0, "RescaleSlope": "1",
               "RescaleIntercept": "-1024", "ImagePositionPatient": [0, 0, z],
               "ImageOrientationPatient": [1, 0, 0, 0, 1, 0], "SliceLocation": str(z), "InstanceNumber": 1})
    ds.PixelData = (hu + 1024).astype(np.uint16).tobytes()
    for k, v in fields.items():
        if v is None:
            delattr(ds, k)
        else:
            setattr(ds, k, v)
    return ds


def raw(ds: FileDataset, keyword: str, value: bytes) -> FileDataset:
    """Put a raw, unvalidated value into a header field (as a scanner or a hand edit can write it)."""
    tag = pydicom.datadict.tag_for_keyword(keyword)
    vr = pydicom.datadict.dictionary_VR(tag)
    ds._dict[pydicom.tag.Tag(tag)] = RawDataElement(pydicom.tag.Tag(tag), vr, len(value), value, 0, False, True)
    return ds


def save(ds: FileDataset, path: Path | None = None) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.getvalue())
    return buf.getvalue()


# ------------------------------------------------------------------ slices that cannot be read truthfully
@pytest.mark.parametrize("make,message", [
    (lambda: ct(RescaleSlope=None), r"no RescaleSlope \(0028,1053\): required for CT"),
    (lambda: ct(RescaleIntercept=None), r"no RescaleIntercept \(0028,1052\): required for CT"),
    (lambda: raw(ct(), "RescaleSlope", b"NaN "), r"RescaleSlope \(0028,1053\) is nan, not a finite number"),
    (lambda: raw(ct(), "RescaleIntercept", b"inf "), r"RescaleIntercept \(0028,1052\) is inf, not a finite"),
    (lambda: raw(ct(), "RescaleSlope", b"abc "), r"RescaleSlope \(0028,1053\) (cannot be read|is 'abc')"),
    (lambda: raw(ct(), "NumberOfFrames", b"xx"), r"NumberOfFrames \(0028,0008\) (cannot be read|is 'xx')"),
    (lambda: raw(ct(), "SliceLocation", b"abcd"), r"SliceLocation \(0020,1041\) (cannot be read|is 'abcd')"),
    (lambda: ct(8, 8), r"8x8 pixels is below the minimum of 16 pixels a side"),
    (lambda: ct(1, 4000), r"4000x1 pixels is below the minimum"),
    (lambda: ct(Modality="MR"), r"modality 'MR', not CT"),
])
def test_a_slice_that_cannot_be_read_truthfully_is_refused_naming_file_and_field(make, message):
    with pytest.raises(ImageError, match=r"^scan\.dcm: .*" + message):
        decode(save(make()), "scan.dcm")


def test_the_good_synthetic_slice_is_read_in_hu():
    hu, _ = dicom.read_hu(save(ct()), "x.dcm")
    assert hu.min() == -1000 and hu.max() == 40 and dicom.lung_fraction(hu) > 0.1


@pytest.mark.parametrize("window", ["nan,nan", "1e309,1", "-600,inf", "0,nan"])
def test_a_window_that_is_not_finite_is_refused(window):
    with pytest.raises(ValueError, match="finite"):
        dicom.parse_window(window)


def test_a_decompression_bomb_is_refused_from_its_header_before_decoding(monkeypatch):
    """An RLE file of a few kilobytes that decodes to 2000 x 2000: refused from Rows x Columns, and the pixel data
    is never touched (benchmarks/dicom_bomb.py measures the memory of the 12000 x 12000 one)."""
    ds = ct(64, 64)
    big = np.zeros((2000, 2000), np.uint16)
    ds.Rows = ds.Columns = 2000
    ds.compress(RLELossless, big)
    data = save(ds)
    assert len(data) < 200_000  # 8 MB of pixels in 0.13 MB

    def touched(self):
        raise AssertionError("the pixel data was decoded")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(touched))
    with pytest.raises(ImageError, match=r"bomb\.dcm: 2000x2000 pixels x 1 frame\(s\) \(from the header\) exceeds "
                                         r"the limit of 1000000 pixels; not decoded"):
        decode(data, "bomb.dcm", max_pixels=1_000_000)


@pytest.mark.parametrize("syntax,package", [("1.2.840.10008.1.2.4.90", "pylibjpeg-openjpeg"),
                                            ("1.2.840.10008.1.2.4.70", "pylibjpeg-libjpeg")])
def test_a_missing_decoder_is_named(monkeypatch, syntax, package):
    from pydicom.encaps import encapsulate

    ds = ct()
    ds.PixelData = encapsulate([ds.PixelData])  # as a compressed file holds it (the codec is never reached)
    ds.file_meta.TransferSyntaxUID = syntax

    def no_handler(self):
        raise RuntimeError("Unable to decode the pixel data as none of the available plugins can decode it")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_handler))
    monkeypatch.setattr(dicom, "decoder_available", lambda syntax: False)  # as without its plugin
    with pytest.raises(ImageError, match=f"no decoder installed for its compression.*pip install pylibjpeg {package}"):
        decode(save(ds), "x.dcm")


def test_damaged_compressed_data_is_not_called_a_missing_decoder():
    """A JPEG-lossless slice (the COVID-CT-MD syntax) whose compressed bytes are garbage: its decoder is installed,
    so the error says the data cannot be decoded, not that a package is missing."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLosslessSV1

    ds = ct()
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.PixelData = encapsulate([b"\xff\xd8garbage" * 10])
    with pytest.raises(ImageError) as e:
        decode(save(ds), "broken.dcm")
    assert "no decoder installed" not in str(e.value)
    assert str(e.value).startswith("broken.dcm: pixel data cannot be decoded (JPEG Lossless")


def test_more_pixel_data_than_the_header_says_is_refused():
    ds = ct(64, 64)
    ds.Rows = 60  # the data still holds 64 rows: a cropped image would be scored
    with pytest.raises(ImageError, match=r"8192 bytes of pixel data, but Rows x Columns x BitsAllocated "
                                         r"\(60 x 64 x 16\) need 7680"):
        decode(save(ds), "x.dcm")


# ------------------------------------------------------------------ files that are not files
def test_special_files_are_refused_without_reading(tmp_path):
    fifo = tmp_path / "pipe.dcm"
    os.mkfifo(fifo)
    done = []
    t = threading.Thread(target=lambda: done.append(pytest.raises(OSError, read_bytes, fifo)), daemon=True)
    t.start()
    t.join(5)
    assert done and "a FIFO, not a regular file" in str(done[0].value)  # no hang
    with pytest.raises(OSError, match="a device, not a regular file"):
        read_bytes("/dev/zero")
    big = tmp_path / "big.dcm"
    big.write_bytes(b"\0" * 2048)
    with pytest.raises(OSError, match="2048 bytes exceeds the limit of 1024 bytes"):
        read_bytes(big, max_bytes=1024)


def test_a_file_name_with_two_colons_is_a_file_not_a_zip_member(tmp_path):
    f = tmp_path / "scan::1.dcm"
    data = save(ct(), f)
    assert read_bytes(f) == data
    (tmp_path / "notzip.zip").write_text("not a zip file")
    with pytest.raises(ImageError, match="cannot be read from the zip file"):
        read_bytes(tmp_path / "notzip.zip::a.png")
    import zipfile

    with zipfile.ZipFile(tmp_path / "bad.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.dcm", b"x" * 1000)
    raw_zip = bytearray((tmp_path / "bad.zip").read_bytes())
    start = raw_zip.index(b"a.dcm") + len("a.dcm")  # the member's deflated bytes follow its local header
    raw_zip[start:start + 4] = b"\xff\xff\xff\xff"
    (tmp_path / "bad.zip").write_bytes(bytes(raw_zip))
    with pytest.raises(ImageError, match=r"bad.zip::a.dcm: cannot be read from the zip file .*\(error"):
        read_bytes(f"{tmp_path / 'bad.zip'}::a.dcm")


@pytest.mark.parametrize("device", ["tpu", "meta", "cuda:x"])
def test_an_unknown_device_is_named(tiny_run, capsys, device):
    assert main(["predict", str(tiny_run), "x.png", "--device", device]) == 2
    assert f"device {device!r}: use auto, cpu, cuda or cuda:N" in capsys.readouterr().err


def test_port_out_of_range_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "run", "--port", "99999"])
    assert e.value.code == 2 and "99999 is not a port: use 1 to 65535" in capsys.readouterr().err


# ------------------------------------------------------------------ one bad file never sinks the others
def _predict(capsys, *args) -> tuple[int, list[dict]]:
    rc = main(["predict", *map(str, args)])
    return rc, [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("keyword,value", [("SliceLocation", b"abcd"), ("RescaleSlope", b"abc "),
                                           ("NumberOfFrames", b"xx")])
def test_predict_scores_the_good_files_beside_a_bad_header(tiny_run, tmp_path, capsys, keyword, value):
    good, bad = tmp_path / "good.dcm", tmp_path / "bad.dcm"
    save(ct(), good)
    save(raw(ct(), keyword, value), bad)
    rc, lines = _predict(capsys, tiny_run, good, bad)
    by = {r["image"]: r for r in lines if "image" in r}  # then the series line of good.dcm
    assert rc == 1 and 0 <= by[str(good)]["p_covid"] <= 1
    assert by[str(bad)]["error"].startswith(f"{bad}: {keyword} (")


def test_a_bad_path_or_an_empty_folder_beside_a_good_file_gets_its_own_line(tiny_run, tmp_path, capsys):
    good = tmp_path / "good.dcm"
    save(ct(), good)
    (tmp_path / "empty").mkdir()
    long = tmp_path / ("x" * 300)
    rc, lines = _predict(capsys, tiny_run, good, tmp_path / "empty", long)
    by = {r["image"]: r for r in lines if "image" in r}
    assert rc == 1 and 0 <= by[str(good)]["p_covid"] <= 1
    assert by[str(tmp_path / "empty")]["error"].endswith("a folder with no .dcm files")
    assert "File name too long" in by[str(long)]["error"]


def test_dangling_links_and_loops_named_dcm_in_a_folder_are_reported(tiny_run, tmp_path, capsys):
    save(ct(), tmp_path / "s" / "a.dcm")
    (tmp_path / "s" / "gone.dcm").symlink_to(tmp_path / "nowhere.dcm")
    (tmp_path / "s" / "loop.dcm").symlink_to(tmp_path / "s" / "loop.dcm")
    rc, lines = _predict(capsys, tiny_run, tmp_path / "s")
    errors = {Path(r["image"]).name: r["error"] for r in lines if "error" in r}
    assert rc == 1 and set(errors) == {"gone.dcm", "loop.dcm"} and sum("p_covid" in r for r in lines) == 1


def test_a_picture_named_dcm_in_a_series_folder_is_named_and_the_series_scored(tiny_run, tmp_path, capsys):
    from PIL import Image

    for i in range(3):
        save(ct(z=float(i)), tmp_path / "s" / f"{i}.dcm")
    Image.new("L", (64, 64), 90).save(tmp_path / "s" / "photo.dcm", "PNG")
    rc, lines = _predict(capsys, tiny_run, tmp_path / "s")
    errors = [r for r in lines if "error" in r]
    assert rc == 1 and len(errors) == 1 and "photo.dcm: not a readable DICOM file" in errors[0]["error"]
    assert sum("p_covid" in r for r in lines) == 3
    (summary,) = [r for r in lines if "series" in r]
    assert summary["slices"] == summary["slices_scored"] == 3


def test_predict_warns_of_a_slice_without_lung(tiny_run, external_dir, capsys):
    """The first slice of P001 (the neck): lung fraction below 0.05, the same warning as the service gives."""
    import pandas as pd

    lab = pd.read_csv(external_dir / "labels.csv")
    first = external_dir / lab[lab["patient"] == "P001"].sort_values("slice_location")["file"].iloc[0]
    _, (line, series) = _predict(capsys, tiny_run, first)
    assert series["slices_with_lung"] == 0 and series["p_covid_patient"] is None
    assert line["lung_fraction"] < dicom.MIN_LUNG_FRACTION
    assert any("shows little lung" in w for w in line["warnings"])


def test_the_service_answers_207_naming_a_bad_header_and_scores_the_rest(tiny_run):
    from ladnn.serve import create_app

    client = TestClient(create_app(tiny_run))
    files = [("files", ("good.dcm", save(ct()))), ("files", ("bad.dcm", save(raw(ct(), "SliceLocation", b"abcd"))))]
    r = client.post("/api/predict", files=files)
    assert r.status_code == 207
    body = r.json()
    assert [x["filename"] for x in body["results"]] == ["good.dcm"]
    assert body["errors"][0]["filename"] == "bad.dcm" and "SliceLocation (0020,1041)" in body["errors"][0]["error"]


def test_the_service_refuses_a_bomb_from_its_header(tiny_run):
    from ladnn.serve import create_app

    ds = ct()
    ds.Rows = ds.Columns = 3000
    ds.compress(RLELossless, np.zeros((3000, 3000), np.uint16))
    client = TestClient(create_app(tiny_run, max_pixels=4_000_000))
    r = client.post("/api/predict", files=[("files", ("bomb.dcm", save(ds)))])
    assert r.status_code == 413 and "(from the header) exceeds the limit" in r.json()["detail"]


def test_evaluate_names_every_unreadable_labelled_file_and_writes_nothing(tiny_run, tmp_path, capsys):
    root = tmp_path / "set"
    rows = ["file,covid,patient"]
    for i in range(4):
        save(ct(z=float(i), patient=f"P{i}"), root / f"{i}.dcm")
        rows.append(f"{i}.dcm,{i % 2},P{i}")
    save(raw(ct(patient="P9"), "RescaleSlope", b"abc "), root / "bad.dcm")
    rows.append("bad.dcm,1,P9")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    before = set(os.listdir(tiny_run))
    assert main(["evaluate", str(tiny_run), "--images", str(root)]) == 2
    err = capsys.readouterr().err
    assert "1 of the 5 labelled image(s) could not be read; nothing was written" in err
    assert f"{root / 'bad.dcm'}: RescaleSlope (0028,1053)" in err
    assert set(os.listdir(tiny_run)) == before


# ------------------------------------------------------------------ series are patients
def _series(folder: Path):
    found, bad = dicom.scan_folder(folder)
    return {s.patient: s for s in found}, bad


def test_a_folder_of_two_patients_is_two_series(tiny_run, tmp_path, capsys):
    for p in ("A", "B"):
        for i in range(3):
            save(ct(z=float(i), patient=p, study=f"1.2.3.{ord(p)}", series=f"1.2.3.{ord(p)}.1"),
                 tmp_path / "mixed" / f"{p}{i}.dcm")
    series, bad = _series(tmp_path / "mixed")
    assert sorted(series) == ["A", "B"] and not bad and all(len(s.files) == 3 for s in series.values())
    _, lines = _predict(capsys, tiny_run, tmp_path / "mixed")
    summaries = [r for r in lines if "series" in r]
    assert sorted(r["patient_id"] for r in summaries) == ["A", "B"]
    assert all("patient A" in r["series"] or "patient B" in r["series"] for r in summaries)


def test_a_duplicate_sop_instance_is_scored_once_and_named(tmp_path):
    ds = ct(z=1.0)
    save(ds, tmp_path / "s" / "a.dcm")
    save(ds, tmp_path / "s" / "copy-of-a.dcm")
    save(ct(z=2.0), tmp_path / "s" / "b.dcm")
    (s,) = dicom.scan_folder(tmp_path / "s")[0]
    assert len(s.files) == 2 and len(s.left_out) == 1
    assert "the same SOPInstanceUID as" in s.left_out[0] and "scored once" in s.left_out[0]


@pytest.mark.parametrize("image_type", [["ORIGINAL", "PRIMARY", "LOCALIZER"], "LOCALIZER"])
def test_localizers_are_left_out_and_listed(tmp_path, image_type):
    save(ct(z=1.0), tmp_path / "s" / "a.dcm")
    save(ct(z=2.0, ImageType=image_type), tmp_path / "s" / "scout.dcm")
    (s,) = dicom.scan_folder(tmp_path / "s")[0]
    assert [f.name for f in s.files] == ["a.dcm"] and "scout.dcm: a localizer" in s.left_out[0]


def test_a_duplicate_in_another_subfolder_is_scored_once_too(tmp_path):
    ds = ct(z=1.0)
    save(ds, tmp_path / "s" / "one" / "a.dcm")
    save(ds, tmp_path / "s" / "two" / "a.dcm")
    found = dicom.scan_folder(tmp_path / "s")[0]
    assert sum(len(s.files) for s in found) == 1
    assert sum("the same SOPInstanceUID" in x for s in found for x in s.left_out) == 1


def test_dicom_files_named_one_by_one_get_their_series_line(tiny_run, tmp_path, capsys):
    for i in range(2):
        save(ct(z=float(i)), tmp_path / "s" / f"{i}.dcm")
    _, lines = _predict(capsys, tiny_run, tmp_path / "s" / "0.dcm", tmp_path / "s" / "1.dcm")
    (summary,) = [r for r in lines if "series" in r]
    assert summary["slices"] == 2 and summary["order"] == "as given on the command line"
    assert summary["p_covid_patient"] == pytest.approx(np.mean([r["p_covid"] for r in lines if "p_covid" in r]))


@pytest.mark.parametrize("drop,key", [((), "ImagePositionPatient along the slice normal"),
                                      (("ImagePositionPatient",), "SliceLocation"),
                                      (("ImagePositionPatient", "SliceLocation"), "InstanceNumber"),
                                      (("ImagePositionPatient", "SliceLocation", "InstanceNumber"), "file name")])
def test_slices_are_ordered_by_one_key_and_it_is_named(tmp_path, drop, key):
    zs = [3.0, 1.0, 2.0]
    for name, z in zip("abc", zs):
        ds = ct(z=z, InstanceNumber=int(z))
        ds.SliceLocation = str(z)
        for k in drop:
            delattr(ds, k)
        save(ds, tmp_path / "s" / f"{name}.dcm")
    if drop:  # one slice keeps the dropped field: one key for the whole series, not a mix
        keep = ct(z=9.0, InstanceNumber=9)
        for k in drop[:-1]:
            delattr(keep, k)
        save(keep, tmp_path / "s" / "d.dcm")
    (s,) = dicom.scan_folder(tmp_path / "s")[0]
    assert s.order == key
    want = ["b", "c", "a", *(["d"] if drop else [])] if key != "file name" else ["a", "b", "c", "d"]
    assert [f.name for f in s.files] == [f"{n}.dcm" for n in want]


def test_the_sample_series_is_ordered_along_its_normal_as_by_slice_location(external_dir):
    (s,) = dicom.scan_folder(external_dir / "covid-19" / "P002")[0]
    locs = [float(pydicom.dcmread(f, stop_before_pixels=True).SliceLocation) for f in s.files]
    assert s.order == "ImagePositionPatient along the slice normal" and locs == sorted(locs)


# ------------------------------------------------------------------ labels files a spreadsheet writes
def _labels(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    for i in range(4):
        if not (tmp_path / f"{i}.dcm").exists():
            save(ct(z=float(i)), tmp_path / f"{i}.dcm")
    f = tmp_path / "labels.csv"
    f.write_text(text, encoding=encoding)
    return f


def test_a_labels_file_with_a_bom_keeps_its_first_column(tmp_path):
    from ladnn.evaluate import labels_table

    f = _labels(tmp_path, "patient,file,covid\nA,0.dcm,1\nA,1.dcm,1\nB,2.dcm,0\nB,3.dcm,0\n", "utf-8-sig")
    assert f.read_bytes().startswith(b"\xef\xbb\xbf")
    t = labels_table(f)
    assert list(t["patient"]) == ["A", "A", "B", "B"]


@pytest.mark.parametrize("text,message", [
    ("file,covid\n0.dcm,1\n1.dcm,0\n0.dcm,1\n", r"labels.csv:4: file '0.dcm' is listed again \(first on line 2\)"),
    ("file,covid,patient\n0.dcm,1,A\n1.dcm,0,A\n",
     r"patient 'A' has conflicting labels on lines 2 \(COVID-19\), 3 \(not COVID-19\)"),
    ("file,covid\n../outside.dcm,1\n", r"labels.csv:2: file '../outside.dcm' is outside the labels' folder"),
    ("file,covid\n/etc/passwd,1\n", r"labels.csv:2: file '/etc/passwd' is outside the labels' folder"),
    ("file,covid\nsub/../../x.dcm,1\n", r"labels.csv:2: file 'sub/../../x.dcm' is outside"),
])
def test_a_labels_file_that_would_mislead_is_refused_naming_the_lines(tmp_path, text, message):
    from ladnn.evaluate import labels_table

    with pytest.raises(ValueError, match=message):
        labels_table(_labels(tmp_path, text))


@pytest.mark.parametrize("write,message", [
    (lambda f: f.write_text("file,covid\n0.dcm,1\n", encoding="utf-16"), r"labels.csv: not UTF-8 text"),
    (lambda f: f.write_text("file,covid\n"), r"labels.csv: a header \(file, covid\) and no rows"),
    (lambda f: f.write_text("file,covid\n" + "x" * 200_000 + ",1\n"), r"labels.csv:\d+: not a readable CSV line"),
])
def test_a_labels_file_that_cannot_be_read_says_why(tmp_path, write, message):
    from ladnn.evaluate import labels_table

    f = _labels(tmp_path, "")
    write(f)
    with pytest.raises(ValueError, match=message):
        labels_table(f)


@pytest.mark.parametrize("images,message", [("", "--images is empty"), ("labels.csv", "not a folder"),
                                            ("missing", "does not exist")])
def test_evaluate_refuses_an_images_argument_that_is_not_a_folder(tiny_run, tmp_path, capsys, images, message):
    _labels(tmp_path, "file,covid\n0.dcm,1\n1.dcm,0\n")
    arg = str(tmp_path / images) if images else ""
    before = set(os.listdir(tiny_run))
    assert main(["evaluate", str(tiny_run), "--images", arg]) == 2
    assert message in capsys.readouterr().err and set(os.listdir(tiny_run)) == before


def test_two_sets_with_one_folder_name_get_two_evaluation_folders(tmp_path, monkeypatch):
    from ladnn.evaluate import evaluation_folder

    a, b = tmp_path / "x" / "scans", tmp_path / "y" / "scans"
    a.mkdir(parents=True)
    assert evaluation_folder(a) != evaluation_folder(b)
    assert evaluation_folder(a).startswith("eval-scans-") and evaluation_folder(a) == evaluation_folder(a)
    monkeypatch.chdir(a.parent)
    assert evaluation_folder(".") == evaluation_folder(tmp_path / "x") != "eval-"
    assert evaluation_folder(None) == "eval"
