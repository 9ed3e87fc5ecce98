"""Write a compact copy of D0 for a machine without the data: every image resized once to SIZE x SIZE (what the
training pipeline does first anyway) and stored as lossless PNG (grayscale where R = G = B), with the split files,
in the layout `LADNN_DATA_DIR` expects. D1 is left out.

    python benchmarks/make_datapack.py OUT_DIR [--size 224]
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from ladnn.data import NONCOVID_META, SPLIT_DIR, data_dir, load_table
from ladnn.images import load_resized, read_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=224)
    a = ap.parse_args()
    src, out = data_dir(), Path(a.out)
    (out / SPLIT_DIR).mkdir(parents=True, exist_ok=True)
    (out / "la-dnn" / "New_data").mkdir(parents=True, exist_ok=True)
    for f in (src / SPLIT_DIR).glob("*.csv"):
        shutil.copy(f, out / SPLIT_DIR / f.name)
    for f in (src / "la-dnn" / "New_data").glob("*.csv"):
        shutil.copy(f, out / "la-dnn" / "New_data" / f.name)
    (out / NONCOVID_META).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / NONCOVID_META, out / NONCOVID_META)  # the patient of every negative: the loader needs it
    df = load_table("D0")
    for p in df["image"]:
        arr = load_resized(read_bytes(p), a.size, p)
        img = Image.fromarray(arr[..., 0]) if (arr == arr[..., :1]).all() else Image.fromarray(arr)
        dst = out / Path(p).relative_to(src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(dst, "wb") as fh:  # keeps the original name; the decoder reads the format from the content
            img.save(fh, "PNG", optimize=True)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    load_table("D0", out)  # the pack loads as the data does, or this stops with the loader's own error
    print(f"{len(df)} images at {a.size} px in {out}: {total / 2**20:.1f} MiB (loads as D0)")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
