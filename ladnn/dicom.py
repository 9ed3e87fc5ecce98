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
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

WINDOWS = {"lung": (-600.0, 1500.0), "mediastinal": (50.0, 350.0)}
DEFAULT_WINDOW = "lung"
LUNG_HU = (-950.0, -300.0)
MIN_LUNG_FRACTION = 0.05  # a slice "shows lung" when at least this share of the image is aerated lung
MIN_SIDE = 16  # images, DICOM slices included, narrower or lower than this are refused
MAX_PIXELS = 50_000_000  # larger images are refused (decompression-bomb guard; DICOM: from the header)
# Transfer syntaxes that need a decoder plugin, and the packages that bring one (pydicom's own handlers decode the
# uncompressed, deflated and RLE syntaxes).
DECODERS = {
    **dict.fromkeys(("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                     "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"),
                    "pylibjpeg pylibjpeg-libjpeg"),  # JPEG baseline, extended, lossless; JPEG-LS
    **dict.fromkeys(("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
                     "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"),
                    "pylibjpeg pylibjpeg-openjpeg"),  # JPEG 2000 and HTJ2K
}


def low_lung_warning(fraction: float) -> str:
    """The warning of a DICOM slice that shows little lung (`lung_fraction` below MIN_LUNG_FRACTION)."""
    return (f"this DICOM slice shows little lung (lung fraction {fraction:.3f}, below {MIN_LUNG_FRACTION:g}): the "
            "model only saw slices through the lungs, so its score here means nothing")


class DicomError(ValueError):
    """A DICOM file that cannot be scored; the message names the file and the reason."""


def is_dicom(data: bytes) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then `DICM`."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def parse_window(window: str | tuple[float, float] | None) -> tuple[float, float]:
    """`lung`, `mediastinal`, `C,W` (e.g. `-600,1500`) or a (centre, width) pair -> (centre, width), both finite."""
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
    if not (math.isfinite(c) and math.isfinite(w)):
        raise ValueError(f"window {window!r}: the centre and the width must be finite numbers of HU")
    if w <= 0:
        raise ValueError(f"window {window!r}: the width must be positive")
    return float(c), float(w)


def tag_name(keyword: str) -> str:
    """`RescaleSlope (0028,1053)`: a header field as the errors name it."""
    from pydicom.datadict import tag_for_keyword

    t = tag_for_keyword(keyword)
    return f"{keyword} ({t >> 16:04X},{t & 0xFFFF:04X})" if t is not None else keyword


def header_number(ds, keyword: str, name: str, kind=float, required: str = ""):
    """A numeric header field (DS or IS) as `kind`, or None when absent. A value that is not one finite number is a
    DicomError naming the file and the field; so is an absent field when `required` says why it is needed."""
    try:
        value = ds.get(keyword, None)
    except Exception as e:  # noqa: BLE001 - pydicom converts DS/IS values on access and raises ValueError and others
        raise DicomError(f"{name}: {tag_name(keyword)} cannot be read ({type(e).__name__}: {e})") from None
    if value is None or value == "":
        if required:
            raise DicomError(f"{name}: no {tag_name(keyword)}: {required}")
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise DicomError(f"{name}: {tag_name(keyword)} is {str(value)!r}, not a number") from None
    if not math.isfinite(number):
        raise DicomError(f"{name}: {tag_name(keyword)} is {number}, not a finite number")
    return number


def check_header(ds, name: str, max_pixels: int) -> tuple[int, int]:
    """What the header must say before any pixel is decoded: CT, pixel data, one grey frame, a size between MIN_SIDE
    a side and `max_pixels` (Rows x Columns x frames: a small compressed file can decode to gigabytes). Returns
    (rows, columns)."""
    modality = str(ds.get("Modality", ""))
    if modality != "CT":
        raise DicomError(f"{name}: modality {modality or 'missing'!r}, not CT: the model scores CT slices only")
    if "PixelData" not in ds:
        raise DicomError(f"{name}: no pixel data (a DICOM file without an image)")
    frames = header_number(ds, "NumberOfFrames", name, int) or 1
    spp = header_number(ds, "SamplesPerPixel", name, int) or 1
    rows = header_number(ds, "Rows", name, int, required="the image size is unknown")
    cols = header_number(ds, "Columns", name, int, required="the image size is unknown")
    if rows * cols * max(frames, 1) > max_pixels:
        raise DicomError(f"{name}: {cols}x{rows} pixels x {frames} frame(s) (from the header) exceeds the limit of "
                         f"{max_pixels} pixels; not decoded")
    if frames != 1 or spp != 1:
        raise DicomError(f"{name}: unsupported frame layout ({frames} frame(s), {spp} sample(s) per pixel): one "
                         "grey slice per file is expected")
    if min(rows, cols) < MIN_SIDE:
        raise DicomError(f"{name}: {cols}x{rows} pixels is below the minimum of {MIN_SIDE} pixels a side: too small to "
                         "be a CT slice")
    return rows, cols


def decoder_available(syntax) -> bool:
    """Whether pydicom has a working decoder for a transfer syntax (its plugins installed); False for an unknown one."""
    try:
        from pydicom.pixels import get_decoder

        return bool(get_decoder(syntax).is_available)
    except Exception:  # noqa: BLE001 - no decoder is registered for it
        return False


def read_hu(data: bytes, name: str = "<upload>", max_pixels: int = MAX_PIXELS):
    """The slice in HU (float32 H x W) and its dataset. Refuses, naming `name` and the field: a file that is not
    DICOM or not CT, has no pixel data, is not one grey frame, is smaller than MIN_SIDE or larger than `max_pixels`
    (read from the header, before decoding), lacks a finite RescaleSlope or RescaleIntercept (Type 1 for CT: without
    them the HU scale is unknown), has a compression with no decoder installed, or decodes to values that are not
    finite."""
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
    rows, cols = check_header(ds, name, max_pixels)
    why = "required for CT images (DICOM PS3.3 C.8.2.1): without it the Hounsfield scale is unknown"
    slope = header_number(ds, "RescaleSlope", name, required=why)
    intercept = header_number(ds, "RescaleIntercept", name, required=why)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and not syntax.is_compressed:  # the stored size must be what the header says, no more
        need = rows * cols * int(ds.get("BitsAllocated", 16) or 16) // 8
        have = len(ds.PixelData)
        if have > need + 1:  # one byte of padding to an even length is allowed
            raise DicomError(f"{name}: {have} bytes of pixel data, but Rows x Columns x BitsAllocated "
                             f"({rows} x {cols} x {ds.get('BitsAllocated')}) need {need}: the header does not describe "
                             "the image")
    try:
        a = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - a missing decoder is a RuntimeError, bad data others
        what = f"{syntax.name} ({syntax})" if syntax is not None else "unknown"
        if not decoder_available(syntax):
            need = DECODERS.get(str(syntax), "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg")
            raise DicomError(f"{name}: no decoder installed for its compression, {what}: install "
                             f"{' and '.join(need.split())} (pip install {need})") from None
        raise DicomError(f"{name}: pixel data cannot be decoded ({what}; damaged or truncated? "
                         f"{type(e).__name__}: {' '.join(str(e).split())[:300]})") from None
    if a.shape != (rows, cols):
        raise DicomError(f"{name}: pixel array of shape {a.shape}, but the header says {rows} rows and {cols} columns")
    hu = a.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    if not np.isfinite(hu).all():
        raise DicomError(f"{name}: {int((~np.isfinite(hu)).sum())} pixel(s) in HU are not finite")
    return hu, ds


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


def decode_dicom(data: bytes, name: str = "<upload>", window=None, max_pixels: int = MAX_PIXELS):
    """A DICOM CT slice as an 8-bit RGB PIL image (grey in all three channels) through `window`, and what the file
    says of it: its lung fraction, slice location, patient, study and series, and the window (centre, width)."""
    from PIL import Image

    hu, ds = read_hu(data, name, max_pixels)
    info = {"lung_fraction": round(lung_fraction(hu), 4),
            "slice_location": header_number(ds, "SliceLocation", name),
            "patient_id": str(ds.get("PatientID", "")), "study_uid": str(ds.get("StudyInstanceUID", "")),
            "series_uid": str(ds.get("SeriesInstanceUID", "")), "window": list(parse_window(window))}
    return Image.fromarray(window_image(hu, window), mode="L").convert("RGB"), info


@dataclass
class Series:
    """One series of a folder: the slices of one patient, study and series, in order along the body."""
    folder: str
    patient: str
    study: str
    uid: str
    files: list[Path]
    order: str  # which header field ordered the slices
    left_out: list[str] = field(default_factory=list)  # "file: why" (duplicates, localizers)

    @property
    def label(self) -> str:
        """How the output names it: the folder, with the patient and the study and series (their last digits)."""
        return f"{self.folder} [patient {self.patient or '?'}, study ...{self.study[-6:]}, series ...{self.uid[-6:]}]"


def _position(ds) -> float | None:
    """The slice's position along its normal: ImagePositionPatient . (row direction x column direction), from
    ImageOrientationPatient; None when either is missing or not numeric."""
    try:
        ipp = [float(v) for v in ds.get("ImagePositionPatient", None) or []]
        iop = [float(v) for v in ds.get("ImageOrientationPatient", None) or []]
    except (TypeError, ValueError):
        return None
    if len(ipp) != 3 or len(iop) != 6 or not all(map(math.isfinite, ipp + iop)):
        return None
    normal = np.cross(iop[:3], iop[3:])
    return float(np.dot(ipp, normal)) if np.linalg.norm(normal) > 0.5 else None


ORDER_KEYS = ("ImagePositionPatient along the slice normal", "SliceLocation", "InstanceNumber", "file name")


def scan_folder(folder: str | Path) -> tuple[list[Series], list[tuple[Path, str]]]:
    """The DICOM files under `folder` (any depth), as series: files are grouped by PatientID, StudyInstanceUID and
    SeriesInstanceUID (a folder holding two patients gives two series); a SOPInstanceUID seen twice is scored once,
    and localizers (ImageType LOCALIZER) are left out, both listed in `left_out`; each series is ordered by one key,
    the first that every slice of it has (ORDER_KEYS), and says which. Also returns the files whose header cannot be
    read, each with the reason, for the caller to report: they never stop the others."""
    import pydicom

    from ladnn.files import check_regular_file

    # by name, whatever they are: a dangling link or a link loop named .dcm is reported below, not dropped
    found = [p for p in sorted(Path(folder).rglob("*")) if p.suffix.lower() in (".dcm", ".dicom") and not p.is_dir()]
    groups: dict[tuple, list] = {}
    bad: list[tuple[Path, str]] = []
    for p in found:
        try:
            check_regular_file(p)
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            key = (str(p.parent.relative_to(folder)) if p.parent != Path(folder) else ".",
                   str(ds.get("PatientID", "")), str(ds.get("StudyInstanceUID", "")),
                   str(ds.get("SeriesInstanceUID", "")))
            keys = (_position(ds), _optional(ds, "SliceLocation", float), _optional(ds, "InstanceNumber", int))
            groups.setdefault(key, []).append((p, ds, keys))
        except OSError as e:  # ladnn.files.FileRefused among them
            bad.append((p, str(e)))
        except Exception as e:  # noqa: BLE001 - pydicom raises several types for files that are not DICOM
            bad.append((p, f"{p}: not a readable DICOM file ({type(e).__name__}: {e})"))
    out = []
    seen: dict[str, Path] = {}  # SOPInstanceUID -> the file scored for it, across the whole folder
    for (sub, patient, study, uid), items in groups.items():
        left, kept = [], []
        for p, ds, keys in items:
            sop = str(ds.get("SOPInstanceUID", ""))
            kind = ds.get("ImageType", None) or []
            kinds = [str(v).upper() for v in ([kind] if isinstance(kind, str) else kind)]
            if "LOCALIZER" in kinds:
                left.append(f"{p}: a localizer (ImageType {'/'.join(kinds)}), not a slice")
            elif sop and sop in seen:
                left.append(f"{p}: the same SOPInstanceUID as {seen[sop]}, scored once")
            else:
                seen[sop] = p
                kept.append((p, keys))
        if not kept:
            out.append(Series(str(Path(folder) / sub), patient, study, uid, [], "none", left))
            continue
        k = next((i for i in range(3) if all(keys[i] is not None for _, keys in kept)), 3)
        kept.sort(key=lambda item: (item[1][k], item[0].name) if k < 3 else item[0].name)
        out.append(Series(str(Path(folder) / sub), patient, study, uid, [p for p, _ in kept], ORDER_KEYS[k], left))
    return out, bad


def _optional(ds, keyword: str, kind):
    """A numeric header field for ordering: None when absent or not a finite number (another key orders then)."""
    try:
        return header_number(ds, keyword, "", kind)
    except DicomError:
        return None


def series_files(folder: str | Path) -> list[Path]:
    """The files of `scan_folder`'s series, one series after another, each in its order along the body."""
    return [f for s in scan_folder(folder)[0] for f in s.files]


def expand_inputs(paths) -> tuple[list[str], list[dict], list[Series]]:
    """Files as given, and folders replaced by the DICOM series inside them (`scan_folder`: split by
    patient, study and series, duplicates and localizers left out, each in one order along the body). Returns the
    files to score, one `{"image", "error"}` record per file whose header cannot be read (the others are scored all
    the same), and the series found."""
    out: list[str] = []
    errors: list[dict] = []
    series: list[Series] = []
    for p in map(Path, paths):
        try:
            is_dir = p.is_dir()
        except OSError as e:  # a name too long, say: that path's error, the others are scored
            errors.append({"image": str(p), "error": f"{p}: {e.strerror or e}"})
            continue
        if not is_dir:
            out.append(str(p))
            continue
        found, bad = scan_folder(p)
        if not found and not bad:
            errors.append({"image": str(p), "error": f"{p}: a folder with no .dcm files"})
        series += found
        out += [str(f) for s in found for f in s.files]
        errors += [{"image": str(f), "error": why} for f, why in bad]
    return out, errors, series
