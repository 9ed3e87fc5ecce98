"""Load test of `ladnn serve`: N concurrent clients send M requests in all to a local server; prints p50/p95.
With --health: one request of the largest permitted size (16 files, Grad-CAM++ maps) while /api/health is asked
every 20 ms; prints the health latencies seen while that request was being scored (goal: at most 100 ms).

    python benchmarks/load_test.py RUN_DIR [--clients 20] [--requests 200] [--cam]
    python benchmarks/load_test.py RUN_DIR --health

It starts its own server on 127.0.0.1 (a free port), sends real D0 test images, and stops by itself.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from ladnn.data import load_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--cam", action="store_true", help="ask for Grad-CAM++ maps too")
    ap.add_argument("--health", action="store_true",
                    help="time /api/health during one 16-file request with Grad-CAM++ maps instead")
    a = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "ladnn.cli", "serve", a.run, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                httpx.get(f"{url}/api/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        paths = list(load_table("D0").query("split == 'test'")["image"].head(40))
        blobs = [(p.rsplit("/", 1)[-1], Path(p).read_bytes()) for p in paths]
        if a.health:
            health_during_big_request(url, blobs[:16])
            return
        lat, errors, lock = [], [], threading.Lock()
        counter = iter(range(a.requests))

        def client() -> None:
            with httpx.Client(timeout=300) as c:
                for i in counter:
                    t = time.perf_counter()
                    r = c.post(f"{url}/api/predict?cam={str(a.cam).lower()}", files=[("files", blobs[i % len(blobs)])])
                    with lock:
                        lat.append(time.perf_counter() - t)
                        if r.status_code != 200:
                            errors.append(r.status_code)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(a.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        ms = np.array(lat) * 1000
        print(f"{len(lat)} requests from {a.clients} clients in {wall:.1f} s ({len(lat) / wall:.1f} req/s), "
              f"cam={a.cam}: errors {len(errors)}, latency p50 {np.percentile(ms, 50):.0f} ms, "
              f"p95 {np.percentile(ms, 95):.0f} ms, max {ms.max():.0f} ms")
    finally:
        server.terminate()
        server.wait(10)


def health_during_big_request(url: str, blobs: list) -> None:
    """/api/health latencies while one request with `blobs` and ?cam=true is being scored."""
    done: dict = {}

    def big() -> None:
        t = time.perf_counter()
        done["status"] = httpx.post(f"{url}/api/predict?cam=true", files=[("files", b) for b in blobs],
                                    timeout=600).status_code
        done["seconds"] = time.perf_counter() - t

    lat = []
    with httpx.Client(timeout=60) as c:
        c.get(f"{url}/api/health")  # the client's connection is open before the clock starts
        worker = threading.Thread(target=big)
        worker.start()
        time.sleep(0.5)  # the upload is parsed and scoring has begun
        while worker.is_alive():
            t = time.perf_counter()
            ok = c.get(f"{url}/api/health").status_code == 200
            if ok and worker.is_alive():
                lat.append(time.perf_counter() - t)
            time.sleep(0.02)
    worker.join()
    ms = np.array(lat) * 1000
    print(f"one request of {len(blobs)} files with Grad-CAM++: status {done['status']}, {done['seconds']:.1f} s; "
          f"/api/health meanwhile: {len(ms)} answers, p50 {np.percentile(ms, 50):.1f} ms, "
          f"p95 {np.percentile(ms, 95):.1f} ms, max {ms.max():.1f} ms (goal: at most 100 ms)")


if __name__ == "__main__":
    main()
