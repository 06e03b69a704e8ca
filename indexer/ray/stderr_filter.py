"""Keeps a library's C++ log lines (Ray's core worker writes them to the process's stderr) off the terminal."""
from __future__ import annotations

import os
import re
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

# Ray's C++ log format: "[2026-01-01 12:00:00,123 E 123 456] core_worker.cc:2465: ..."
NATIVE_LOG_LINE = re.compile(rb"^\[\d{4}-\d\d-\d\d [\d:,]+ [A-Z] \d+ \d+\] \S+\.cc:\d+: ")


@contextmanager
def filtered_stderr() -> Iterator[None]:
    """While inside, bytes written to file descriptor 2 pass through, except whole native log lines."""
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    # The pump writes to its own copy: processes started meanwhile (Ray's) may hold the pipe open after we leave.
    pump = threading.Thread(target=_pump, args=(read_end, os.dup(original)), daemon=True)
    pump.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end: the pump drains it and ends
        pump.join(timeout=5)
        os.close(original)


def _pump(read_end: int, out: int) -> None:
    pending = b""
    with os.fdopen(read_end, "rb", buffering=0) as source:
        while chunk := source.read(65536):
            pending += chunk
            # A line that might be a native log line waits for its end; anything else goes out at once
            # (a progress bar redraws with \\r and no newline).
            while pending:
                if not pending.startswith(b"["):
                    cut = pending.find(b"\n[")
                    head, pending = (pending, b"") if cut < 0 else (pending[:cut + 1], pending[cut + 1:])
                    os.write(out, head)
                    continue
                end = pending.find(b"\n")
                if end < 0:
                    break
                line, pending = pending[:end + 1], pending[end + 1:]
                if not NATIVE_LOG_LINE.match(line):
                    os.write(out, line)
    if pending:
        os.write(out, pending)
    os.close(out)
