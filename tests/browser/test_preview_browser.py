"""The preview page in a real headless Chromium: the MJPEG stream plays and the stats update."""

from __future__ import annotations

import functools
import http.server
import itertools
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from faceswap_cam.daemon.outputs.base import Tick
from faceswap_cam.daemon.outputs.preview import PreviewSink

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    SELENIUM_ERROR = ""
except ImportError as exc:  # the dev extra is not installed
    SELENIUM_ERROR = f"selenium cannot be imported ({exc}): pip install -e '.[dev]'"

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
HAVE_BROWSER = CHROMIUM.is_file() and CHROMEDRIVER.is_file()

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not HAVE_BROWSER, reason="chromium/chromedriver not installed: "
                       "apt-get install chromium chromium-driver"),
    pytest.mark.skipif(bool(SELENIUM_ERROR), reason=SELENIUM_ERROR or "selenium available"),
]

SIZE = (320, 240)
TIMEOUT_S = 15


class Feeder:
    """Plays the publisher: sends changing frames at ~30 fps and counts them in the stats."""

    def __init__(self) -> None:
        self.sink: PreviewSink | None = None
        self.published = 0
        self._count = itertools.count(1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-feeder", daemon=True)

    def stats(self) -> dict[str, Any]:
        return {"frames_published": self.published, "capture_fps": 30.0, "engine": "debug",
                "engine_state": "ready", "showing": "swapped"}

    def _run(self) -> None:
        assert self.sink is not None
        while not self._stop.is_set():
            number = next(self._count)
            frame = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
            # The whole frame's colour steps every few frames, so the picture visibly changes.
            frame[:] = (0, 0, 255) if (number // 8) % 2 else (255, 0, 0)
            self.sink.send(frame, Tick(number=number, kind="swapped",
                                       published_ns=time.monotonic_ns(), latency_ms=20.0))
            self.published = number
            self._stop.wait(1 / 30)  # the frame clock, not a wait for a result

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def feeder() -> Feeder:
    return Feeder()


@pytest.fixture
def sink(feeder: Feeder) -> Iterator[PreviewSink]:
    preview = PreviewSink(port=0, max_fps=15, stats=feeder.stats)
    preview.open(SIZE, 30.0)
    feeder.sink = preview
    try:
        yield preview
    finally:
        preview.close()


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                     f"--window-size={SIZE[0] + 400},{SIZE[1] + 200}"):
        options.add_argument(argument)
    # An explicit driver path and browser binary: selenium-manager never downloads anything.
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        browser.set_page_load_timeout(TIMEOUT_S)
        yield browser
    finally:
        browser.quit()


# The centre pixel of what the <img> shows now, read through a canvas (same origin: readable).
CENTRE_PIXEL_JS = """
const img = document.getElementById('stream');
if (!img.naturalWidth) return null;
const canvas = document.createElement('canvas');
canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
const ctx = canvas.getContext('2d');
ctx.drawImage(img, 0, 0);
const d = ctx.getImageData(canvas.width >> 1, canvas.height >> 1, 1, 1).data;
return [d[0], d[1], d[2]];
"""


def test_page_plays_the_stream_and_updates_stats(sink: PreviewSink, feeder: Feeder,
                                                  driver: Any) -> None:
    with feeder:
        driver.get(sink.url)
        wait = WebDriverWait(driver, TIMEOUT_S, poll_frequency=0.1)

        wait.until(lambda d: d.execute_script(
            "return document.getElementById('stream').naturalWidth") == SIZE[0])
        assert driver.execute_script(
            "return document.getElementById('stream').naturalHeight") == SIZE[1]

        # The stream is live, not one frame: the picture turns from blue to red and back.
        seen: set[str] = set()

        def both_colours(d: Any) -> bool:
            rgb = d.execute_script(CENTRE_PIXEL_JS)
            if rgb:
                red, _, blue = rgb
                if red > 180 and blue < 80:
                    seen.add("red")
                elif blue > 180 and red < 80:
                    seen.add("blue")
            return seen == {"red", "blue"}

        wait.until(both_colours)

        def frames_text(d: Any) -> str:
            text: str = d.execute_script("return document.getElementById('frames').textContent")
            return text

        wait.until(lambda d: frames_text(d).isdigit())
        first_frames = int(frames_text(driver))
        first_stats = driver.find_element("id", "stats").text
        assert "capture_fps" in first_stats and "debug" in first_stats
        assert "preview.clients" in first_stats
        wait.until(lambda d: frames_text(d).isdigit() and int(frames_text(d)) > first_frames)
        wait.until(lambda d: d.find_element("id", "stats").text != first_stats)
        assert sink.clients >= 1
        assert sink.frames_encoded > 0


def test_stream_and_snapshot_are_same_origin_resources(sink: PreviewSink,
                                                       feeder: Feeder) -> None:
    with feeder:
        for path in ("/", "/snapshot.jpg", "/stream.mjpg"):
            deadline = time.monotonic() + TIMEOUT_S
            while True:
                try:
                    with urllib.request.urlopen(sink.url + path, timeout=TIMEOUT_S) as response:
                        headers = response.headers
                    break
                except urllib.error.HTTPError as error:  # 503 until the first frame
                    if error.code != 503 or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            assert headers["Cross-Origin-Resource-Policy"] == "same-origin", path


# A page that embeds the stream and says whether it loaded.
EMBEDDING_PAGE = """<!doctype html><title>embed</title>
<img id="stream" src="{src}" onload="document.title='loaded'" onerror="document.title='blocked'">
"""


class _PageHandler(http.server.BaseHTTPRequestHandler):
    def __init__(self, page: bytes, *args: Any) -> None:
        self._page = page
        super().__init__(*args)

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self._page)))
        self.end_headers()
        self.wfile.write(self._page)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def foreign_page(sink: PreviewSink) -> Iterator[str]:
    """A page on another loopback origin that embeds the preview's stream in an <img>."""
    page = EMBEDDING_PAGE.format(src=f"{sink.url}/stream.mjpg").encode()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_PageHandler, page))
    thread = threading.Thread(target=server.serve_forever, name="foreign-page", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_another_origin_cannot_embed_the_stream(sink: PreviewSink, feeder: Feeder,
                                                foreign_page: str, driver: Any) -> None:
    with feeder:
        wait = WebDriverWait(driver, TIMEOUT_S, poll_frequency=0.1)
        # The same <img> from the preview's own origin (what OBS's browser source loads) plays.
        driver.get(sink.url)
        wait.until(lambda d: d.execute_script(
            "return document.getElementById('stream').naturalWidth") == SIZE[0])

        driver.get(foreign_page)
        wait.until(lambda d: d.title in ("loaded", "blocked"))
        assert driver.title == "blocked"
        assert driver.execute_script(
            "return document.getElementById('stream').naturalWidth") == 0
