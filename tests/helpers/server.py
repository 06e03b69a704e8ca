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
