"""Shared by the web app's tests: a small indexed library, an in-process client, a real server process."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import REPO
from helpers.images import make_library_folder, photo, write_non_utf8

URL_LINE = re.compile(r"(http://\S+)")


def build_library(base: Path, model_name: str) -> tuple[Path, Path]:
    """(photos folder, library folder): every test format, bad files, a non-UTF-8 name, 12 extra photos."""
    from searchengine.library.api import Library

    photos = base / "photos"
    make_library_folder(photos)
    write_non_utf8(photos)
    for k in range(12):
        photo(1000 + k, (640, 480)).save(photos / f"extra{k:02d}.jpg", quality=90)
    library = base / "library"
    Library.open(library).index([str(photos)], model=model_name)
    return photos, library


WORD_PICTURES = {  # name -> text_picture arguments: the words the page and API tests look for
    "pass.png": dict(lines=["BOARDING PASS", "Gate 12 Seat 4A"], seed=1),
    "invoice.png": dict(lines=["Invoice number 4471"], seed=3, text_px=28),
    "coffee.jpg": dict(lines=["Fresh coffee", "Gate opens at noon"], seed=4, size=(480, 640)),
}


def build_words_library(base: Path, model_name: str) -> tuple[Path, Path]:
    """(photos folder, library folder) indexed with --ocr: WORD_PICTURES, two photos without text, and a video
    (station.mp4) whose first moment shows "PLATFORM 9" and whose second has no text (5 frames with text)."""
    import numpy as np

    from helpers.cli import index_json
    from helpers.texts import background, text_picture
    from helpers.videos import make_video

    photos = base / "photos"
    photos.mkdir(parents=True)
    for name, spec in WORD_PICTURES.items():
        text_picture(**spec).save(photos / name, **({"quality": 92} if name.endswith(".jpg") else {}))
    for n in range(2):
        background((640, 480), seed=100 + n).save(photos / f"plain{n}.jpg", quality=90)
    sign = np.asarray(text_picture(["PLATFORM 9"], size=(480, 320), text_px=40, seed=6, photo=False))
    make_video(photos / "station.mp4", [(lambda t, size: sign, 2.0), (1, 2.0)], size=(480, 320))
    library = base / "library"
    summary = index_json(photos, "--library", library, "--model", model_name, "--ocr")
    assert summary["added"] == 6 and summary["words_with_text"] == 4, summary
    return photos, library


def client(library: Path, **config):
    """A TestClient on the app, addressed as http://localhost like a browser on this machine."""
    from starlette.testclient import TestClient

    from searchengine.library.api import Library
    from searchengine.server.app import ServerConfig, create_app

    return TestClient(create_app(Library.open(library), ServerConfig(**config)), base_url="http://localhost")


class ServerProcess:
    """`searchengine serve --port 0` in a child process; `url` is what it printed."""

    def __init__(self, library: Path, *extra: str, env: dict | None = None, timeout: float = 90):
        cmd = [sys.executable, "-m", "searchengine", "serve", "--library", str(library), "--port", "0", *extra]
        full_env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                        **(env or {}))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
        self.url = ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if found := URL_LINE.search(line):
                self.url = found.group(1)
                break
        if not self.url:
            self.stop()
            raise RuntimeError(f"server did not start: {self.proc.stderr.read()}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
