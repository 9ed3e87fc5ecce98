"""A real headless Chromium uploads an image to a running `ladnn serve` and sees the probability and the overlay."""
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ladnn.data import load_table


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_upload_in_browser(tiny_run, data_dir, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "ladnn.cli", "serve", str(tiny_run), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1300,1100"):
        opts.add_argument(a)
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    driver = None
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise AssertionError("ladnn serve did not start: " + server.stdout.read1().decode())
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"),
                                  options=opts)
        driver.get(url)
        assert "not a medical device" in driver.page_source
        # the figures table in the header: its text is dark on its light cells, not the header's white (4d8f8d4)
        colours = driver.execute_script(
            "const td = document.querySelector('#figures td'); const s = getComputedStyle(td);"
            "return [s.color, getComputedStyle(td.closest('table')).backgroundColor, td.textContent];")
        assert colours[0] == "rgb(34, 34, 34)" and colours[1] == "rgb(255, 255, 255)" and colours[2].startswith("0.")
        img = load_table("D0").query("covid == 1")["image"].iloc[0]
        driver.find_element("id", "files").send_keys(img)
        WebDriverWait(driver, 60).until(lambda d: d.find_elements("css selector", ".pcovid"))
        text = driver.find_element("css selector", ".pcovid").text
        assert text.startswith("COVID-19 probability: 0.") or text.endswith("1.000")
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "const i = document.querySelector('img.overlay'); return i && i.complete && i.naturalWidth > 0"))
        driver.find_elements("css selector", ".toggle button")[1].click()  # switch to the GGO map
        assert driver.execute_script("return document.querySelectorAll('#body tr').length") == 1
        shots = Path(os.environ.get("LADNN_SHOTS_DIR", tmp_path))
        shots.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shots / "serve.png"))
    finally:
        if driver:
            driver.quit()
        server.terminate()
        server.wait(10)
