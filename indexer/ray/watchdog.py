"""Ends a local Ray instance whose driver died: `python -m indexer.ray.watchdog MARKER DRIVER_PID` (stdin: the driver's pipe).

A Ray instance started by `ray.init` shares the fate of its driver only in part: after a SIGKILL of the driver,
some of its processes (dashboard and runtime-env agents) live on. Every process of the instance inherits the
environment variable MARKER from the driver; when the driver's end of the pipe closes (exit or any kill), this
process ends every process of this user that carries the marker, then exits.
"""
from __future__ import annotations

import os
import signal
import sys
import time

MARKER_ENV = "SEARCHENGINE_RAY_SESSION"
GRACE_S = 3.0
SWEEP_S = 60.0


def marked_processes(marker: str, spare: tuple[int, ...] = ()) -> list[int]:
    """Pids of this user's processes whose environment holds MARKER_ENV=marker (not this one, nor `spare`)."""
    needle = f"{MARKER_ENV}={marker}".encode() + b"\0"
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in (os.getpid(), *spare):
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                if needle in fh.read() + b"\0":
                    found.append(int(name))
        except OSError:
            continue  # gone, or another user's
    return found


def end_processes(marker: str, spare: tuple[int, ...] = ()) -> None:
    """SIGTERM the marked processes, then SIGKILL what is left after a grace period."""
    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, GRACE_S)):
        pids = marked_processes(marker, spare)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            time.sleep(0.1)
            pids = [p for p in pids if _alive(p)]
        if not pids:
            return


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def main() -> None:
    marker, driver = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the terminal goes to the driver, which ends us
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except OSError:
        pass  # the pipe broke some other way: the driver is gone all the same
    # A process may still be starting while the instance dies (its raylet spawns agents): sweep until two
    # sweeps a second apart find nothing, for at most SWEEP_S.
    deadline, quiet = time.monotonic() + SWEEP_S, 0
    while quiet < 2 and time.monotonic() < deadline:
        found = marked_processes(marker, spare=(driver,))
        quiet = 0 if found else quiet + 1
        if found:
            end_processes(marker, spare=(driver,))
        time.sleep(1.0)


if __name__ == "__main__":
    main()
