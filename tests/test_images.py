import io
import zlib

import numpy as np
import pytest
from PIL import Image

from ladnn import images
from ladnn.images import ImageCache, ImageError, decode, load_resized


def _png(mode, size=(40, 30), fmt="PNG", **kw):
    arr = {"I;16": np.arange(1200, dtype=np.uint16).reshape(30, 40) * 50}.get(mode)
    img = Image.fromarray(arr) if arr is not None else Image.new(mode, size)
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode,fmt", [("RGBA", "PNG"), ("RGB", "PNG"), ("L", "PNG"), ("P", "PNG"), ("LA", "PNG"),
                                      ("I;16", "PNG"), ("CMYK", "JPEG"), ("RGB", "JPEG"), ("L", "JPEG")])
def test_every_mode_becomes_rgb(mode, fmt):
    img = decode(_png(mode, fmt=fmt), "x")
    assert img.mode == "RGB" and img.size == (40, 30)


def test_16_bit_is_rescaled_not_clipped():
    a = np.asarray(decode(_png("I;16"), "x"))
    assert a.min() == 0 and a.max() == 255


def test_rgba_is_composited_on_black():
    buf = io.BytesIO()
    Image.new("RGBA", (20, 20), (200, 100, 50, 0)).save(buf, "PNG")
    assert np.asarray(decode(buf.getvalue())).max() == 0


def test_bad_files_are_named(tmp_path):
    good = _png("RGB", (300, 300))
    noisy = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(noisy, "PNG")
    with pytest.raises(ImageError, match=r"a\.png: empty file"):
        decode(b"", "a.png")
    with pytest.raises(ImageError, match=r"b\.png: not a readable image"):
        decode(b"hello, not an image", "b.png")
    with pytest.raises(ImageError, match=r"c\.png: image data is truncated"):
        decode(noisy.getvalue()[:100_000], "c.png")
    with pytest.raises(ImageError, match=r"d\.png: 300x300 = 90000 pixels exceeds"):
        decode(good, "d.png", max_pixels=10_000)


def test_huge_header_is_refused_before_decoding():
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = (100_000).to_bytes(4, "big") + (100_000).to_bytes(4, "big")  # IHDR width/height: 10^10 pixels
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    with pytest.raises(ImageError, match="exceeds the limit"):
        decode(bytes(data), "bomb.png")


def test_cache_decodes_each_image_once(tmp_path, monkeypatch):
    f = tmp_path / "a.png"
    f.write_bytes(_png("RGB"))
    calls = []
    real = images.load_resized
    monkeypatch.setattr(images, "load_resized", lambda *a, **k: calls.append(1) or real(*a, **k))
    c = ImageCache(32, root=tmp_path / "c")
    a1 = c.get(f)
    a2 = c.get(f)
    a3 = ImageCache(32, root=tmp_path / "c").get(f)  # a new process would find it on disk
    assert len(calls) == 1 and a1.shape == (32, 32, 3)
    assert np.array_equal(a1, a2) and np.array_equal(a1, a3)
    ImageCache(16, root=tmp_path / "c").get(f)  # another size is another entry
    assert len(calls) == 2


def test_real_images_of_every_kind_decode(data_dir):
    import pandas as pd

    from ladnn.data import load_table

    df = load_table("D0+D1")
    pick = pd.concat([df[df["name"].str.endswith(".jpg")].head(2), df[df["name"].str.endswith(".png")].head(2),
                      df[df["dataset"] == "D1"].head(2)])
    for p in pick["image"]:
        a = load_resized(images.read_bytes(p), 64, p)
        assert a.shape == (64, 64, 3) and a.dtype == np.uint8


def test_augment_is_per_image_and_seeded():
    import torch

    from ladnn.images import augment

    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(0)
    plain = augment(x, shear_deg=0, scale=(1, 1))  # only the flip is left
    for a, b in zip(plain, x.float()):
        assert torch.allclose(a, b, atol=1e-3) or torch.allclose(a, b.flip(-1), atol=1e-3)
    flipped = [not torch.allclose(a, b, atol=1e-3) for a, b in zip(plain, x.float())]
    assert 0 < sum(flipped) < 8  # each image draws its own flip
    torch.manual_seed(1)
    a = augment(x)
    torch.manual_seed(1)
    assert torch.equal(a, augment(x)) and a.shape == (8, 3, 32, 32) and 0 <= a.min() and a.max() <= 255
    zoom = augment(x[:1].expand(64, -1, -1, -1))
    assert len({round(float(z.mean()), 3) for z in zoom}) > 10  # scales differ between images


def _figure(seed: int = 0) -> Image.Image:
    """A synthetic figure panel: a grey 'body' ellipse on black, a white panel letter in a corner, a red arrow."""
    from PIL import ImageDraw

    img = Image.new("RGB", (200, 160))
    d = ImageDraw.Draw(img)
    d.ellipse((50, 30, 170, 140), fill=(120, 120, 120))
    d.ellipse((80, 60, 110, 100), fill=(40, 40, 40))  # a darker "lung"
    d.rectangle((2, 2, 14, 16), fill=(255, 255, 255))  # the letter "a"
    d.line((150, 20, 120, 60), fill=(255, 0, 0), width=3)
    return img


def test_crop_to_body_drops_the_border_and_letters():
    out = images.crop_to_body(_figure())
    w, h = out.size
    assert 120 <= w <= 135 and 110 <= h <= 130  # the ellipse (and the arrow touching it) plus a 2% margin
    assert np.asarray(out)[:3, :3].max() < 50  # the white letter is gone
    blank = Image.new("RGB", (50, 50))
    assert images.crop_to_body(blank).size == (50, 50)  # nothing to crop to: unchanged


def test_gray_clahe_and_jpeg_steps():
    fig = _figure()
    g = np.asarray(images.preprocess(fig, 64, ["gray"]))
    assert g.shape == (64, 64, 3) and (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()
    c = np.asarray(images.preprocess(fig, 64, ["clahe"]))
    assert (c[..., 0] == c[..., 2]).all()  # CLAHE works on the grey image
    assert not np.array_equal(c, g)
    j = np.asarray(images.preprocess(fig, 64, ["jpeg"]))
    plain = np.asarray(images.preprocess(fig, 64, []))
    assert j.shape == plain.shape and 0 < np.abs(j.astype(int) - plain).mean() < 10  # codec artefacts only
    with pytest.raises(ValueError, match="blur"):
        images.preprocess(fig, 64, ["blur"])


def test_cache_keys_on_the_pipeline(tmp_path):
    f = tmp_path / "a.png"
    _figure().save(f)
    a = ImageCache(32, root=tmp_path).get(f)
    b = ImageCache(32, root=tmp_path, steps=("crop", "gray")).get(f)
    assert not np.array_equal(a, b) and (b[..., 0] == b[..., 2]).all()
    assert len(list((tmp_path / "images").glob("*.npy"))) == 2


def test_strong_augmentation_is_seeded_and_stays_in_range():
    import torch

    x = torch.from_numpy(np.asarray(_figure().resize((64, 64)))).permute(2, 0, 1)[None].repeat(4, 1, 1, 1)
    torch.manual_seed(0)
    paper = images.augment(x)
    torch.manual_seed(0)
    strong = images.augment(x, strength="strong")
    torch.manual_seed(0)
    again = images.augment(x, strength="strong")
    assert torch.equal(strong, again) and not torch.allclose(paper, strong)
    assert strong.min() >= 0 and strong.max() <= 255 and strong.shape == x.shape
    torch.manual_seed(0)
    assert torch.equal(images.augment(x, strength="paper"), paper)  # the paper's draws are unchanged
