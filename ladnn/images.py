"""Safe image decoding, a decode-once cache, and the paper's augmentation."""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile

MAX_PIXELS = 50_000_000  # larger images are refused (decompression-bomb guard)
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(ValueError):
    """An image file that cannot be used; the message names the file."""


def read_bytes(path: str | Path) -> bytes:
    """Read a file, or a zip member written as `archive.zip::member`."""
    path = str(path)
    if "::" in path:
        archive, member = path.split("::", 1)
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    return Path(path).read_bytes()


def decode(data: bytes, name: str = "<upload>", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode bytes into an 8-bit RGB image; every mode in the data (RGBA, RGB, L, P, 16-bit, CMYK) works."""
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: {e}; exceeds the limit of {max_pixels} pixels") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many types for garbage
        raise ImageError(f"{name}: not a readable image ({type(e).__name__}: {e})") from None
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(f"{name}: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}")
    try:
        img.load()
    except Exception as e:  # noqa: BLE001 - truncated or corrupt data
        raise ImageError(f"{name}: image data is truncated or corrupt ({e})") from None
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
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


def load_resized(data: bytes, size: int, name: str = "<upload>", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode and resize to size x size (the paper's Resize((224, 224))), as HxWx3 uint8."""
    img = decode(data, name, max_pixels).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(img, dtype=np.uint8)


def cache_dir() -> Path:
    return Path(os.environ.get("LADNN_CACHE_DIR", Path.home() / ".cache" / "ladnn"))


class ImageCache:
    """Decode + resize each image once; keyed by the file's SHA-256 and the target size, kept in memory and on disk."""

    def __init__(self, size: int, root: Path | None = None):
        self.size = size
        self.root = (root or cache_dir()) / "images"
        self.mem: dict[str, np.ndarray] = {}

    def get(self, path: str | Path) -> np.ndarray:
        key = str(path)
        if key in self.mem:
            return self.mem[key]
        data = read_bytes(path)
        digest = hashlib.sha256(data).hexdigest()[:32]
        f = self.root / f"{digest}_{self.size}.npy"
        if f.exists():
            arr = np.load(f)
        else:
            arr = load_resized(data, self.size, name=str(path))
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = f.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, arr)
            os.replace(tmp, f)
        self.mem[key] = arr
        return arr

    def stack(self, paths) -> torch.Tensor:
        """uint8 tensor N x 3 x H x W."""
        return torch.from_numpy(np.stack([self.get(p) for p in paths])).permute(0, 3, 1, 2).contiguous()


def augment(x: torch.Tensor, shear_deg: float = 0.2, scale: tuple[float, float] = (0.8, 1.2)) -> torch.Tensor:
    """The paper code's augmentation, RandomAffine(0, shear=0.2, scale=(0.8, 1.2)) and a horizontal flip, drawn per
    image but applied to the whole batch at once on its device (affine_grid + grid_sample, bilinear, zero fill).
    torchvision reads that shear in degrees, so it is a very small shear; kept as in the paper code.
    Random parameters come from torch's global CPU generator, so a seed fixes them on any device.
    x: uint8 or float N x 3 x H x W; returns float32 in the same 0..255 range."""
    n = len(x)
    s = torch.empty(n).uniform_(*scale)
    sh = torch.deg2rad(torch.empty(n).uniform_(-shear_deg, shear_deg))
    flip = torch.where(torch.rand(n) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 1] = flip / s, -torch.tan(sh) / s, 1 / s
    theta = theta.pin_memory().to(x.device, non_blocking=True) if x.is_cuda else theta  # no host-device sync
    xf = x.float()
    grid = torch.nn.functional.affine_grid(theta, list(xf.shape), align_corners=False)
    return torch.nn.functional.grid_sample(xf, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """N x 3 x H x W in 0..255 (uint8 or float) -> float, normalised with the backbone's own mean/std."""
    x = x.float() / 255
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s
