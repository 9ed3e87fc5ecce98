"""Safe image decoding, a decode-once cache, and the paper's augmentation."""
from __future__ import annotations

import functools
import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

from ladnn.config import PREPROCESS
from ladnn.dicom import MAX_PIXELS, MIN_SIDE, DicomError, decode_dicom, is_dicom
from ladnn.files import MAX_FILE_BYTES, FileRefused, check_regular_file, load_cache, write_atomic

# MAX_PIXELS and MIN_SIDE (ladnn.dicom): larger images are refused; so are images narrower or lower than 16 pixels
# (D0's smallest is 53 x 26 pixels)
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(ValueError):
    """An image file that cannot be used; the message names the file."""


def read_bytes(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Read a regular file of at most `max_bytes` (`check_regular_file`), or a zip member written as
    `archive.zip::member` (only when no file has that whole name, and the part before `::` is a zip file)."""
    path = str(path)
    if "::" in path and not os.path.lexists(path):
        archive, member = path.split("::", 1)
        check_regular_file(archive, max_bytes=2**40)
        try:
            with zipfile.ZipFile(archive) as zf:
                if zf.getinfo(member).file_size > max_bytes:
                    raise FileRefused(f"{path}: {zf.getinfo(member).file_size} bytes exceeds the limit of {max_bytes} "
                                     "bytes a file; not read")
                return zf.read(member)
        except FileRefused:
            raise
        except Exception as e:  # noqa: BLE001 - BadZipFile, KeyError, zlib.error, EOFError, an encrypted member...
            raise ImageError(f"{path}: cannot be read from the zip file {archive} ({type(e).__name__}: {e})") from None
    check_regular_file(path, max_bytes)
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)  # a file that grew since stat is still capped
    if len(data) > max_bytes:
        raise FileRefused(f"{path}: more than the limit of {max_bytes} bytes a file; not read")
    return data


def decode(data: bytes, name: str = "<upload>", max_pixels: int = MAX_PIXELS, window=None) -> Image.Image:
    """Decode bytes into an 8-bit RGB image; every mode in the data (RGBA, RGB, L, P, 16-bit, CMYK) works, and a
    DICOM CT slice is rescaled to HU and shown through `window` (ladnn.dicom; default: the lung window)."""
    return decode_with_info(data, name, max_pixels, window)[0]


def decode_with_info(data: bytes, name: str = "<upload>", max_pixels: int = MAX_PIXELS, window=None
                     ) -> tuple[Image.Image, dict]:
    """`decode`, and what a DICOM file says of its slice (`ladnn.dicom.decode_dicom`; empty for other files)."""
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    if is_dicom(data):
        try:
            return decode_dicom(data, name, window, max_pixels)  # the size is checked from the header
        except DicomError as e:
            raise ImageError(str(e)) from None
    return _decode_picture(data, name, max_pixels), {}


def _decode_picture(data: bytes, name: str, max_pixels: int) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: {e}; exceeds the limit of {max_pixels} pixels") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many types for garbage
        why = "" if isinstance(e, Image.UnidentifiedImageError) else f" ({type(e).__name__}: {e})"
        raise ImageError(f"{name}: not a readable image or DICOM file{why}") from None
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(f"{name}: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}")
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"{name}: {w}x{h} pixels is below the minimum of {MIN_SIDE} pixels a side: too small to be "
                         "a CT slice")
    try:
        img.load()
        img = ImageOps.exif_transpose(img)  # a photo's EXIF orientation, as a viewer shows it
    except Exception as e:  # noqa: BLE001 - truncated or corrupt data
        raise ImageError(f"{name}: image data is truncated or corrupt ({e})") from None
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if not np.isfinite(a).all():
            raise ImageError(f"{name}: {int((~np.isfinite(a)).sum())} pixel(s) are not finite (NaN or infinity): "
                             "the image cannot be scaled to grey levels")
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(a)
        img = Image.fromarray(a.round().astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(black, rgba)
    return img.convert("RGB")


def crop_to_body(img: Image.Image, min_fraction: float = 0.1, margin: float = 0.02) -> Image.Image:
    """Crop to the bounding box of the largest bright connected region (the body on a CT slice), dropping the
    border, panel letters and labels outside it. Otsu's threshold on a blurred grey copy; the image is returned
    unchanged when that region covers less than `min_fraction` of it."""
    import cv2

    g = cv2.GaussianBlur(np.asarray(img.convert("L")), (5, 5), 0)
    _, mask = cv2.threshold(g, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n < 2:
        return img
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(v) for v in stats[k, :4])
    if w * h < min_fraction * img.width * img.height:
        return img
    mx, my = int(margin * img.width), int(margin * img.height)
    return img.crop((max(0, x - mx), max(0, y - my), min(img.width, x + w + mx), min(img.height, y + h + my)))


def clahe(img: Image.Image, clip: float = 2.0, tiles: int = 8) -> Image.Image:
    """Contrast-limited adaptive histogram equalisation (OpenCV) of the grey image, returned as grey RGB: every
    source's display window and contrast are brought to a common local histogram."""
    import cv2

    eq = cv2.createCLAHE(clipLimit=clip, tileGridSize=(tiles, tiles)).apply(np.asarray(img.convert("L")))
    return Image.fromarray(eq, mode="L").convert("RGB")


def jpeg_roundtrip(img: Image.Image, quality: int = 75) -> Image.Image:
    """Encode as JPEG and decode again: every image, whatever its file format, carries the same codec's artefacts."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def preprocess(img: Image.Image, size: int, steps=()) -> Image.Image:
    """The input pipeline (Config.preprocess): drawn marks painted out, crop to the body or to the lungs, grey, the
    lung-window match and CLAHE on the full-resolution image, then the resize to size x size (the paper's
    Resize((224, 224))), then the JPEG round trip at the model's size."""
    from ladnn import lung, marks

    unknown = set(steps) - set(PREPROCESS)
    if unknown:
        raise ValueError(f"unknown preprocessing step(s) {sorted(unknown)}")
    if "unmark" in steps:
        img = Image.fromarray(marks.unmark(np.asarray(img.convert("RGB"))))
    if "crop" in steps:
        img = crop_to_body(img)
    if "lungcrop" in steps:
        img = Image.fromarray(lung.lung_crop(np.asarray(img.convert("RGB"))))
    if "gray" in steps:
        img = img.convert("L").convert("RGB")
    if "window" in steps:
        img = Image.fromarray(lung.lung_window(np.asarray(img.convert("RGB"))))
    if "clahe" in steps:
        img = clahe(img)
    img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    return jpeg_roundtrip(img) if "jpeg" in steps else img


def load_resized(data: bytes, size: int, name: str = "<upload>", max_pixels: int = MAX_PIXELS,
                 steps=(), window=None) -> np.ndarray:
    """Decode (DICOM through `window`), preprocess (`steps`, see `preprocess`) and resize to size x size, as HxWx3
    uint8."""
    return np.asarray(preprocess(decode(data, name, max_pixels, window), size, steps), dtype=np.uint8)


# What `ct_check` measures on the decoded image (before preprocessing), with the limits beyond which it warns. The
# limits pass 99% of D0 and D1 and every COVID-CT-MD slice (tests/test_images.py measures both).
COLOUR_DIFF = 40  # a pixel is coloured when its channels differ by more than this (0..255)
MAX_COLOURED = 0.10  # share of coloured pixels above which an image is not a grey CT slice
MIN_STD = 8.0  # grey standard deviation below which an image is nearly uniform
DARK_LEVEL = 0.2  # a pixel is dark below this fraction of the image's own grey range (1st to 99th percentile)
MIN_DARK = 0.03  # a CT slice shows dark air around the body and in the lungs: at least this share of dark pixels


def ct_check(img: Image.Image) -> dict:
    """A simple check that an image looks like a CT slice, saying what it measured: the share of coloured pixels
    (CT is grey), the grey standard deviation (a blank image has none) and the share of pixels in the darkest fifth
    of the image's own grey range (air around the body and in the lungs). `warnings` is empty when the image
    passes. It cannot tell a chest radiograph from a CT slice, and passing proves nothing about the image."""
    a = np.asarray(img.convert("RGB"))
    r, g, b = (a[..., k].astype(np.int16) for k in range(3))  # per plane: reductions over an axis of 3 are slow
    grey = (r + g + b) / 3
    spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    lo, hi = np.percentile(grey, [1, 99])
    m = {"coloured_share": round(float((spread > COLOUR_DIFF).mean()), 4),
         "grey_std": round(float(grey.std()), 2),
         "dark_share": round(float(((grey - lo) < DARK_LEVEL * max(hi - lo, 1)).mean()), 4)}
    w = []
    if m["grey_std"] < MIN_STD:
        w.append(f"the image is nearly uniform (grey standard deviation {m['grey_std']:.1f}, below {MIN_STD:g}): "
                 "a blank or flat image, not a CT slice")
    elif m["dark_share"] < MIN_DARK:
        w.append(f"only {m['dark_share']:.1%} of its pixels lie in the darkest fifth of its grey range (a CT slice "
                 f"has at least {MIN_DARK:.0%}: air around the body and in the lungs)")
    if m["coloured_share"] > MAX_COLOURED:
        w.append(f"{m['coloured_share']:.0%} of its pixels are coloured (above {MAX_COLOURED:.0%}): CT slices are "
                 "grey, so this may be a photograph or a coloured figure")
    return {**m, "warnings": w}


def cache_dir() -> Path:
    return Path(os.environ.get("LADNN_CACHE_DIR", Path.home() / ".cache" / "ladnn"))


class ImageCache:
    """Decode + preprocess + resize each image once; keyed by the file's SHA-256, the target size and the
    preprocessing steps, kept in memory and on disk."""

    def __init__(self, size: int, root: Path | None = None, steps=()):
        self.size, self.steps = size, tuple(s for s in PREPROCESS if s in steps)  # one key per set of steps
        self.root = (root or cache_dir()) / "images"
        self.mem: dict[str, np.ndarray] = {}

    def get(self, path: str | Path) -> np.ndarray:
        key = str(path)
        if key in self.mem:
            return self.mem[key]
        data = read_bytes(path)
        digest = hashlib.sha256(data).hexdigest()[:32]
        tag = "".join(f"_{s}{step_version(s)}" for s in self.steps)
        f = self.root / f"{digest}_{self.size}{tag}.npy"
        arr = _load_cached(f, self.size)
        if arr is None:
            arr = load_resized(data, self.size, name=str(path), steps=self.steps)
            buf = io.BytesIO()
            np.save(buf, arr)
            write_atomic(f, buf.getvalue())
        self.mem[key] = arr
        return arr

    def stack(self, paths) -> torch.Tensor:
        """uint8 tensor N x 3 x H x W."""
        return torch.from_numpy(np.stack([self.get(p) for p in paths])).permute(0, 3, 1, 2).contiguous()


def step_version(step: str) -> str:
    """The version of a step's rules in the cache key (`unmark`: ladnn.marks; `lungcrop`, `window`: ladnn.lung)."""
    from ladnn import lung, marks

    return {"unmark": f"v{marks.VERSION}", "lungcrop": f"v{lung.VERSION}", "window": f"v{lung.VERSION}"}.get(step, "")


def _load_cached(f: Path, size: int) -> np.ndarray | None:
    """A cached decoded image, or None when there is none or it is damaged (`load_cache`)."""
    want = (size, size, 3)
    return load_cache(f, np.load, lambda a: "" if a.shape == want and a.dtype == np.uint8 else
                      f"holds {a.dtype} {a.shape}, expected uint8 {want}")


def _draw(n: int, strong: bool, shear_deg: float, scale: tuple[float, float],
          g: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The random parameters of `augment` for n images, from `g` (None: torch's global CPU generator), always in
    the same order, so a seed fixes them."""
    p = {"scale": torch.empty(n).uniform_(*((0.75, 1.25) if strong else scale), generator=g)}
    lim = 5.0 if strong else shear_deg
    p["shear"] = torch.deg2rad(torch.empty(n).uniform_(-lim, lim, generator=g))
    p["flip"] = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    if strong:
        p["angle"] = torch.deg2rad(torch.empty(n).uniform_(-15.0, 15.0, generator=g))
        p["shift"] = torch.empty(n, 2).uniform_(-0.16, 0.16, generator=g)  # +-8% of the side (grid units span 2)
        p["contrast"] = torch.empty(n).uniform_(0.75, 1.25, generator=g)
        p["bright"] = torch.empty(n).uniform_(-20.0, 20.0, generator=g)
    return p


def augment(x: torch.Tensor, shear_deg: float = 0.2, scale: tuple[float, float] = (0.8, 1.2),
            strength: str = "paper", generators: list[torch.Generator] | None = None) -> torch.Tensor:
    """The paper code's augmentation, RandomAffine(0, shear=0.2, scale=(0.8, 1.2)) and a horizontal flip, drawn per
    image but applied to the whole batch at once on its device (affine_grid + grid_sample, bilinear, zero fill).
    torchvision reads that shear in degrees, so it is a very small shear; kept as in the paper code.
    Random parameters come from torch's global CPU generator, so a seed fixes them on any device; with `generators`
    (one per image), each image's parameters come from its own generator instead, whatever else is in the batch.
    `strength="strong"` adds a rotation (+-15 degrees), a shift (+-8%), a shear of +-5 degrees, and brightness
    (+-20 levels) and contrast (x0.75..1.25) changes, against shortcuts in framing and display window.
    x: uint8 or float N x 3 x H x W; returns float32 in the same 0..255 range."""
    n = len(x)
    strong = strength == "strong"
    if generators is None:
        p = _draw(n, strong, shear_deg, scale)
    else:
        if len(generators) != n:
            raise ValueError(f"augment: {len(generators)} generators for {n} images")
        each = [_draw(1, strong, shear_deg, scale, g) for g in generators]
        p = {k: torch.cat([e[k] for e in each]) for k in each[0]}
    s, sh = p["scale"], p["shear"]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 1] = p["flip"] / s, -torch.tan(sh) / s, 1 / s
    if strong:
        a = p["angle"]
        rot = torch.stack([torch.stack([a.cos(), -a.sin()], 1), torch.stack([a.sin(), a.cos()], 1)], 1)
        theta[:, :, :2] = rot @ theta[:, :, :2]
        theta[:, :, 2] = p["shift"]
    theta = theta.pin_memory().to(x.device, non_blocking=True) if x.is_cuda else theta  # no host-device sync
    xf = x.float()
    grid = torch.nn.functional.affine_grid(theta, list(xf.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(xf, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if not strong:
        return out
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    c, b = (t.view(n, 1, 1, 1).to(x.device) for t in (p["contrast"], p["bright"]))
    return ((out - mean) * c + mean + b).clamp(0, 255)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """N x 3 x H x W in 0..255 (uint8 or float) -> float, normalised with the backbone's own mean/std."""
    x = x.float() / 255
    m, s = _mean_std(tuple(mean), tuple(std), x.device, x.dtype)
    return (x - m) / s


@functools.lru_cache(maxsize=16)
def _mean_std(mean: tuple, std: tuple, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std as 1 x 3 x 1 x 1 tensors on `device`, made once per device (no host-to-device copy per
    batch)."""
    return tuple(torch.tensor(v, dtype=dtype, device=device).view(1, 3, 1, 1) for v in (mean, std))


def data_url(rgb: np.ndarray, kind: str = "png") -> str:
    """A uint8 H x W x 3 image as a data URL: `png` (lossless: the pixels the model saw) or `jpeg` (quality 90, for
    heatmap overlays, which need no lossless copy and are much faster to write; benchmarks/predict_latency.py)."""
    import base64

    import cv2

    params = [cv2.IMWRITE_PNG_COMPRESSION, 1] if kind == "png" else [cv2.IMWRITE_JPEG_QUALITY, 90]
    ok, buf = cv2.imencode(f".{'png' if kind == 'png' else 'jpg'}", np.ascontiguousarray(rgb[..., ::-1]), params)
    if not ok:
        raise ValueError(f"could not encode a {rgb.shape} image as {kind}")
    return f"data:image/{kind};base64," + base64.b64encode(buf.tobytes()).decode()
