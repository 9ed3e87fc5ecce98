"""A DICOM decompression bomb against `ladnn predict`: a CT slice of 12000 x 12000 pixels, RLE-compressed to a few
megabytes (every pixel the same), written by hand (one replicate packet per 128 bytes of each byte plane), then
scored by `ladnn predict RUN FILE` in a child process. Prints the file's size, the exit code, the first line of
the error, the wall time and the child's peak resident memory (ru_maxrss). `--service` instead posts 4 such files in
one request (17 MB, under the service's 20 MB upload limit) to the service in a child process (`create_app`,
FastAPI's TestClient) and prints the answer's status, the child's peak memory and its memory after the request.

    python benchmarks/dicom_bomb.py RUN [--side 12000] [--repo PATH] [--service]   # --repo: another checkout's code
"""
from __future__ import annotations

import argparse
import io
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rle_plane(n: int, value: int) -> bytes:
    """PackBits-style RLE of `n` copies of one byte: replicate packets of 128 (header -127), then the rest."""
    out = bytearray(bytes([0x81, value])) * (n // 128)
    if n % 128:
        out += bytes([(257 - n % 128) % 256, value])
    return bytes(out + (b"\0" if len(out) % 2 else b""))


def bomb(side: int) -> bytes:
    """The DICOM file: 16-bit CT, RLE Lossless, all pixels 1024 (0 HU)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import CTImageStorage, RLELossless, generate_uid

    hi, lo = rle_plane(side * side, 0x04), rle_plane(side * side, 0x00)  # 1024 = 0x0400, high byte first
    header = struct.pack("<16I", 2, 64, 64 + len(hi), *([0] * 13))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = RLELossless
    ds = FileDataset("bomb.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.update({"SOPClassUID": CTImageStorage, "SOPInstanceUID": meta.MediaStorageSOPInstanceUID, "Modality": "CT",
               "Rows": side, "Columns": side, "SamplesPerPixel": 1, "PhotometricInterpretation": "MONOCHROME2",
               "BitsAllocated": 16, "BitsStored": 16, "HighBit": 15, "PixelRepresentation": 0,
               "RescaleSlope": "1", "RescaleIntercept": "-1024"})
    ds.PixelData = encapsulate([header + hi + lo])
    ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


SERVICE = """
import resource, sys
from fastapi.testclient import TestClient
from ladnn.serve import create_app
data = open(sys.argv[2], "rb").read()
client = TestClient(create_app(sys.argv[1]))
r = client.post("/api/predict", files=[("files", (f"bomb{i}.dcm", data)) for i in range(4)])
rss = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS"))
print(r.status_code, str(r.json().get("detail", r.json()))[:300])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, rss)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--side", type=int, default=12000)
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--service", action="store_true", help="4 bombs in one request to the service")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "bomb.dcm"
        data = bomb(a.side)
        f.write_bytes(data)
        env = {**os.environ, "PYTHONPATH": a.repo}
        t = time.perf_counter()
        cmd = ["-c", SERVICE, a.run, str(f)] if a.service else ["-m", "ladnn.cli", "predict", a.run, str(f)]
        r = subprocess.run([sys.executable, *cmd], cwd=a.repo, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t
    if a.service:
        status, peak_rss = r.stdout.splitlines()[-2:] if r.returncode == 0 else (r.stderr[-500:], "0 0")
        peak, now = (int(v) / 2**20 for v in peak_rss.split())
        print(f"bomb: {a.side}x{a.side} pixels, {len(data) / 2**20:.1f} MiB, 4 in one request; code {a.repo}")
        print(f"service: {status}; {wall:.1f} s; peak memory {peak:.2f} GiB, {now:.2f} GiB held after the request")
        return
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    said = (r.stdout.splitlines() or [""])[0][:300]
    print(f"bomb: {a.side}x{a.side} pixels, {len(data) / 2**20:.1f} MiB; code {a.repo}")
    print(f"ladnn predict: exit {r.returncode}, {wall:.1f} s, peak memory {peak:.2f} GiB")
    print(f"first line: {said}")


if __name__ == "__main__":
    main()
