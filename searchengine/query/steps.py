"""Wall time of the steps of one query, for `scripts/profile_query.py`: with SEARCHENGINE_PROFILE=1 in the
environment, each `with step(name):` adds its seconds to `name`, and the CLI prints them to stderr as one JSON
line at exit. Without it, `step` hands back one shared no-op context: nothing is timed, nothing printed."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time

PROFILE_ENV = "SEARCHENGINE_PROFILE"
ENABLED = os.environ.get(PROFILE_ENV) == "1"
_seconds: dict[str, float] = {}
_NOTHING = contextlib.nullcontext()


class _Timed:
    __slots__ = ("name", "started")

    def __init__(self, name: str):
        self.name = name

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *_exc: object) -> None:
        _seconds[self.name] = _seconds.get(self.name, 0.0) + time.perf_counter() - self.started


def step(name: str) -> contextlib.AbstractContextManager:
    return _Timed(name) if ENABLED else _NOTHING


_began = [0.0]


def begin() -> None:
    """Where `since_begin` counts from (the CLI calls it on entry)."""
    if ENABLED:
        _began[0] = time.perf_counter()


def since_begin(name: str) -> None:
    """Record the time since `begin` as step `name` (the argument parsing that precedes a command's body)."""
    if ENABLED:
        _seconds[name] = time.perf_counter() - _began[0]


def report() -> None:
    """Print the steps' milliseconds (in the order they first ran) to stderr, when profiling."""
    if ENABLED:
        print(json.dumps({"profile_ms": {k: round(v * 1000, 2) for k, v in _seconds.items()}}), file=sys.stderr)
