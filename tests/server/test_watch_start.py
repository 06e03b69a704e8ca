"""`serve --watch`: a file that arrives after the first scan but before the file watch is set up raised no
event; the watch's first idle tick rescans once, so it is found in seconds, not at the 10-minute rescan."""
from __future__ import annotations

import time

from helpers.cli import run
from helpers.images import photo
from searchengine.library.api import Library
from searchengine.server import watch
from searchengine.server.backend import WatchState


def test_a_file_that_arrives_before_the_watch_starts_is_indexed(isolated, tiny_model_name, monkeypatch):
    photos = isolated / "photos"
    photos.mkdir()
    photo(1).save(photos / "p1.png")
    run("index", photos, "--model", tiny_model_name, "--workers", "0")
    monkeypatch.setattr(watch, "IDLE_YIELD_MS", 500, raising=False)
    library = Library.open(isolated / "library")
    first_scan = library.reindex

    def scan_then_a_file_arrives(*args, **kwargs):
        summary = first_scan(*args, **kwargs)
        if not (photos / "p2.png").exists():
            photo(2).save(photos / "p2.png")  # after the scan, before the watch: no event will say so
        return summary

    monkeypatch.setattr(library, "reindex", scan_then_a_file_arrives)
    watcher = watch.Watcher(library, WatchState())
    watcher.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and Library.open(isolated / "library").status().images < 2:
            time.sleep(0.2)
        assert Library.open(isolated / "library").status().images == 2
    finally:
        watcher.stop()
