"""Full-page screenshots of a built book's pages in headless Chromium (Debian's chromium and chromium-driver).

    python benchmarks/screenshots.py [--root .] [--out _build/screenshots] [PAGE ...]

PAGE is a page path without suffix (default: the multi-task and Results pages). It prints each file it writes.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

MAX_TILE = 16000  # px: the tallest window taken in one screenshot


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pages", nargs="*", default=["book/mtl", "book/_generated/results"])
    ap.add_argument("--root", default=".", help="repository root holding _build/html")
    ap.add_argument("--out", default="_build/screenshots")
    ap.add_argument("--width", type=int, default=1300)
    a = ap.parse_args()
    html, out = Path(a.root).resolve() / "_build" / "html", Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={a.width},1200",
                "--allow-file-access-from-files", "--disable-background-networking"):
        opts.add_argument(arg)
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)
    try:
        for page in a.pages:
            f = html / f"{page}.html"
            if not f.is_file():
                raise SystemExit(f"{f} does not exist: build the book first")
            driver.set_window_size(a.width, 1200)  # the last page's height would stretch this one's scrollHeight
            driver.get(f.as_uri())
            WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.readyState") == "complete")
            height = driver.execute_script("return document.documentElement.scrollHeight")
            tile = min(height + 100, MAX_TILE)
            driver.set_window_size(a.width, tile)
            name = page.replace("/", "_")
            # a page taller than one tile is shot in parts, scrolled a tile at a time (Chrome caps a window's height)
            for k, top in enumerate(range(0, height, tile)):
                driver.execute_script(f"window.scrollTo(0, {top})")
                dst = out / (f"{name}.png" if top == 0 else f"{name}_part{k + 1}.png")
                driver.save_screenshot(str(dst))
                print(f"{dst} ({a.width} x {tile} px, from {top} px)")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
