"""`serve --watch`: re-index the remembered roots when files change under them (inotify via watchfiles,
debounced), with a periodic full rescan as the fallback where events are unavailable or missed.

Indexing goes through `Library.reindex`, hence the writer lock: a separate `searchengine index` just waits.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict

from indexer.errors import SearchEngineError
from searchengine.library.api import Library

DEBOUNCE_MS = 1500
RESCAN_S = 600.0  # even with events: catches what a full event queue or a network mount dropped
POLL_RESCAN_S = 30.0  # without events
IDLE_YIELD_MS = 5_000  # the watch yields this often without events: the first yield rescans once (see _watch)


class Watcher:
    def __init__(self, library: Library, state) -> None:
        self.library = library
        self.state = state
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="searchengine-watch", daemon=True)

    def start(self) -> None:
        self.state.watching = True
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)

    def _roots(self) -> list[str]:
        try:
            return sorted(os.fsdecode(r.root) for r in self.library.remembered_roots() if os.path.isdir(r.root))
        except SearchEngineError:
            return []

    def _run(self) -> None:
        from indexer.cpu import yield_to_queries

        yield_to_queries()  # this thread indexes; the server's request threads answer first
        self._reindex()
        while not self.stop_event.is_set():
            roots = self._roots()
            if not roots:
                self.stop_event.wait(POLL_RESCAN_S)
                self._reindex()
                continue
            try:
                self._watch(roots)
            except Exception as exc:  # noqa: BLE001 - no inotify (limits, odd file systems): poll instead
                self.state.last_error = f"file events unavailable ({type(exc).__name__}); rescanning every " \
                                        f"{POLL_RESCAN_S:.0f} s"
                self.stop_event.wait(POLL_RESCAN_S)
                self._reindex()

    def _watch(self, roots: list[str]) -> None:
        """Until stopped or the remembered roots change: re-index on each debounced burst of changes."""
        import watchfiles

        last_scan = time.monotonic()
        first = True  # files that arrived between the last scan and the watch's start raised no event
        for changes in watchfiles.watch(*roots, stop_event=self.stop_event, debounce=DEBOUNCE_MS,
                                        yield_on_timeout=True, rust_timeout=IDLE_YIELD_MS, recursive=True,
                                        raise_interrupt=False):
            due = time.monotonic() - last_scan > RESCAN_S
            if changes or due or first:
                self._reindex()
                last_scan = time.monotonic()
                first = False
            if self._roots() != roots:
                return

    def _reindex(self) -> None:
        if self.stop_event.is_set():
            return
        self.state.running, self.state.done, self.state.total = True, 0, 0
        try:
            summary = self.library.reindex(reporter=_StateReporter(self.state))
            self.state.last_summary = asdict(summary)
            self.state.last_error = None
        except SearchEngineError as exc:
            self.state.last_error = str(exc)
        except Exception as exc:  # noqa: BLE001 - the server keeps serving; the status line says what failed
            self.state.last_error = f"indexing failed: {type(exc).__name__}: {exc}"
        finally:
            self.state.running = False


class _StateReporter:
    def __init__(self, state) -> None:
        self.state = state

    def start(self, total: int) -> None:
        self.state.total = total

    def start_phase(self, label: str, total: int) -> None:
        """The words phase after the embeddings: its own count (the status line shows done of total again)."""
        self.state.done, self.state.total = 0, total

    def skipped(self, path: bytes, reason: str) -> None: ...

    def advance(self, n: int) -> None:
        self.state.done += n
