"""Headless Chromium for page tests (Selenium + Debian's chromium and chromium-driver).

:func:`browser_or_skip` starts one; without the binaries a test is skipped with
the reason, except in CI (``CI`` set), where it fails: CI installs them
(``.ci/run``). :func:`save_shot` writes a screenshot, and also into
``$DASHBOARD_SHOTS_DIR`` when set (``make screenshots`` refreshes the ones in docs/).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)
DRIVER = shutil.which("chromedriver")


def browser_or_skip() -> Any:
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromium-driver", DRIVER)) if not path]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if missing:
        reason = f"browser tests need {', '.join(missing)} (apt-get install -y chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(reason + ": CI must have them (.ci/run installs them)")
        pytest.skip(reason)
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,900", "--no-first-run"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=opts)
    driver.set_page_load_timeout(20)
    return driver


def save_shot(driver: Any, tmp: Path, name: str) -> bytes:
    png = driver.get_screenshot_as_png()
    (tmp / name).write_bytes(png)
    out = os.environ.get("DASHBOARD_SHOTS_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / name).write_bytes(png)
    return png


def not_blank(png: bytes) -> bool:
    """More than one colour in the screenshot (PNG decoded with the standard library)."""
    import struct
    import zlib

    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, width, height, ctype = 8, [], 0, 0, 0
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        body = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, _depth, ctype = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    raw = zlib.decompress(b"".join(chunks))
    bpp = {2: 3, 6: 4}.get(ctype, 4)
    stride = width * bpp + 1
    colours = set()
    for row in range(0, height, max(height // 40, 1)):
        line = raw[row * stride + 1:(row + 1) * stride]  # filter byte skipped; filtered bytes still vary with content
        colours.update(line[i:i + bpp] for i in range(0, len(line), bpp * 37))
        if len(colours) > 8:
            return True
    return False
