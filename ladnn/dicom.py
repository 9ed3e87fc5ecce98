"""Real CT as input: DICOM slices read with pydicom, rescaled to Hounsfield units and windowed to 8-bit grey, and
series (folders of slices) ordered by slice location.

- HU = stored value x RescaleSlope + RescaleIntercept (DICOM PS3.3 C.11.1.1.2).
- A window (centre c, width w) maps HU linearly onto 0..255, clipping outside [c - w/2, c + w/2]. The default is a
  lung window (c -600, w 1500), the common reading window for lung parenchyma; `mediastinal` is (50, 350), and any
  `C,W` pair is accepted. The D0 figures were cut from papers that showed lung windows, so the lung window is the
  closest match to what the model learnt from.
- JPEG-lossless files need a decoder plugin (pylibjpeg with pylibjpeg-libjpeg); a missing one is named in the error.
- `lung_fraction` measures how much of a slice is lung: the share of the image inside the body whose HU lies in
  [-950, -300] (aerated lung) once the air around the body (connected to the image border) is removed. Slices of a
  series that reach the neck or the abdomen show little lung; the model only ever saw slices through the lungs.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

WINDOWS = {"lung": (-600.0, 1500.0), "mediastinal": (50.0, 350.0)}
DEFAULT_WINDOW = "lung"
LUNG_HU = (-950.0, -300.0)
MIN_LUNG_FRACTION = 0.05  # a slice "shows lung" when at least this share of the image is aerated lung


AGGREGATION = ("mean COVID probability over the patient's slices that show lung (lung fraction >= "
               f"{MIN_LUNG_FRACTION:g}; ladnn.dicom.lung_fraction), or over all its slices for non-DICOM images")


def patient_means(p, key: str = "patient"):
    """One row per `key` (patient or series) of a slice table with `p_covid` and `lung_fraction` (NaN for
    non-DICOM images): AGGREGATION as `p_covid`, the label (`y_true`, when present) and the slices averaged."""
    lung = p[~(p["lung_fraction"] < MIN_LUNG_FRACTION)]
    agg = {"p_covid": ("p_covid", "mean"), "slices": ("p_covid", "size")}
    if "y_true" in p:
        agg = {"y_true": ("y_true", "first"), **agg}
    return lung.groupby(key, sort=False).agg(**agg).reset_index()


class DicomError(ValueError):
    """A DICOM file that cannot be scored; the message names the file and the reason."""


def is_dicom(data: bytes) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then `DICM`."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def parse_window(window: str | tuple[float, float] | None) -> tuple[float, float]:
    """`lung`, `mediastinal`, `C,W` (e.g. `-600,1500`) or a (centre, width) pair -> (centre, width)."""
    if window is None:
        window = DEFAULT_WINDOW
    if isinstance(window, tuple):
        c, w = window
    elif window in WINDOWS:
        c, w = WINDOWS[window]
    else:
        try:
            c, w = (float(v) for v in str(window).split(","))
        except ValueError:
            raise ValueError(f"window {window!r}: use {' or '.join(WINDOWS)} or CENTRE,WIDTH in HU "
                             "(e.g. -600,1500)") from None
    if w <= 0:
        raise ValueError(f"window {window!r}: the width must be positive")
    return float(c), float(w)


def read_hu(data: bytes, name: str = "<upload>"):
    """The slice in HU (float32 H x W) and its dataset. Refuses, naming `name`: a file that is not DICOM, not CT,
    has no pixel data, is not one grey frame, or whose compression has no decoder installed."""
    import warnings

    import pydicom

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
        except Exception as e:  # noqa: BLE001 - pydicom raises several types for garbage
            raise DicomError(f"{name}: not a readable DICOM file ({type(e).__name__}: {e})") from None
    ends = [str(w.message) for w in caught if "end of file" in str(w.message).lower()]
    if ends:
        raise DicomError(f"{name}: truncated DICOM file ({ends[0]})")
    modality = str(ds.get("Modality", ""))
    if modality != "CT":
        raise DicomError(f"{name}: modality {modality or 'missing'!r}, not CT: the model scores CT slices only")
    if "PixelData" not in ds:
        raise DicomError(f"{name}: no pixel data (a DICOM file without an image)")
    frames, spp = int(ds.get("NumberOfFrames", 1) or 1), int(ds.get("SamplesPerPixel", 1))
    if frames != 1 or spp != 1:
        raise DicomError(f"{name}: unsupported frame layout ({frames} frame(s), {spp} sample(s) per pixel): one "
                         "grey slice per file is expected")
    try:
        a = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - a missing decoder is a RuntimeError, bad data others
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        what = f"{syntax.name} ({syntax})" if syntax is not None else "unknown"
        if "handler" in str(e).lower() or "plugin" in str(e).lower() or "decod" in str(e).lower():
            raise DicomError(f"{name}: no decoder installed for its compression, {what}: install pylibjpeg and "
                             "pylibjpeg-libjpeg (pip install pylibjpeg pylibjpeg-libjpeg)") from None
        raise DicomError(f"{name}: pixel data cannot be read ({type(e).__name__}: {e})") from None
    if a.ndim != 2:
        raise DicomError(f"{name}: unsupported frame layout (pixel array of shape {a.shape})")
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    return a.astype(np.float32) * slope + intercept, ds


def window_image(hu: np.ndarray, window=None) -> np.ndarray:
    """HU -> uint8 through the window (centre, width)."""
    c, w = parse_window(window)
    lo = c - w / 2
    return (np.clip((hu - lo) / w, 0, 1) * 255).round().astype(np.uint8)


def lung_fraction(hu: np.ndarray) -> float:
    """Share of the image that is aerated lung inside the body (see the module docstring)."""
    import cv2

    air = (hu < LUNG_HU[1]).astype(np.uint8)
    _, lab = cv2.connectedComponents(air, connectivity=4)
    border = set(np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))) - {0}
    inside = (air == 1) & ~np.isin(lab, list(border)) & (hu >= LUNG_HU[0])
    return float(inside.mean())


def decode_dicom(data: bytes, name: str = "<upload>", window=None):
    """A DICOM CT slice as an 8-bit RGB PIL image (grey in all three channels) through `window`, and what the file
    says of it: its lung fraction, slice location, patient and window (centre, width)."""
    from PIL import Image

    hu, ds = read_hu(data, name)
    loc = ds.get("SliceLocation", None)
    info = {"lung_fraction": round(lung_fraction(hu), 4), "slice_location": None if loc is None else float(loc),
            "patient_id": str(ds.get("PatientID", "")), "window": list(parse_window(window))}
    return Image.fromarray(window_image(hu, window), mode="L").convert("RGB"), info


def series_files(folder: str | Path) -> list[Path]:
    """The DICOM files under `folder` (any depth), ordered by folder and then by SliceLocation (0020,1041), else
    InstanceNumber, else file name: the order of a series along the body, not the order of the file names."""
    import pydicom

    files = [p for p in sorted(Path(folder).rglob("*")) if p.is_file() and p.suffix.lower() in (".dcm", ".dicom")]
    keyed = []
    for p in files:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        loc = ds.get("SliceLocation", ds.get("InstanceNumber", None))
        keyed.append((str(p.parent), float(loc) if loc is not None else float("inf"), p.name, p))
    return [k[-1] for k in sorted(keyed)]
