"""Ends a local Ray instance whose driver died: `python -m indexer.ray.watchdog MARKER DRIVER_PID` (stdin: the driver's pipe).

A Ray instance started by `ray.init` shares the fate of its driver only in part: after a SIGKILL of the driver,
its GCS and raylet die with it, but its dashboard and runtime-env agents live on for a minute or more (they
block on reporting the raylet's death to the dead GCS, SIGTERM included). Every process of the instance
inherits the environment variable MARKER from the driver, with SPT_NOENV set so that Ray's setproctitle leaves
/proc/PID/environ whole (without it, the agents' marker is wiped, or not, at random). While the driver lives,
this process also remembers every marked process and every descendant of one, by pid and start time, so that
a process whose marker was lost anyway is still known. When the driver's end of the pipe closes (exit or any
kill), or the driver is gone, it ends all of them: SIGTERM, then SIGKILL, until two sweeps find nothing.

It never ends itself, the driver or the driver's ancestors; a pid is signalled only while its start time is the
one remembered, so a reused pid is never taken for one of the instance's.
"""
from __future__ import annotations

import os
import select
import signal
import sys
import time
from typing import Iterable, NamedTuple

MARKER_ENV = "SEARCHENGINE_RAY_SESSION"
KEEP_ENVIRON_ENV = "SPT_NOENV"  # Ray's vendored setproctitle: title within argv, /proc/PID/environ left as it was
GRACE_S = 3.0  # after SIGTERM, before SIGKILL
POLL_S = 0.5  # while the driver lives: how often the instance's processes are looked up
QUIET_S = 0.5  # after the driver: sweeps this far apart until two in a row find nothing ...
SWEEP_S = 60.0  # ... for at most this long


def instance_environ(marker: str) -> dict[str, str]:
    """What a Ray instance's processes must inherit for `Instance(marker)` to find them all."""
    return {MARKER_ENV: marker, KEEP_ENVIRON_ENV: "1"}


class Proc(NamedTuple):
    ppid: int
    start: int  # clock ticks after boot: with the pid, one process for good
    zombie: bool


def process_table() -> dict[int, Proc]:
    """Every process now: pid -> (parent, start time, whether it is a zombie)."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (proc := read_stat(int(name))) is not None:
            table[int(name)] = proc
    return table


def read_stat(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return Proc(int(fields[1]), int(fields[19]), fields[0] in (b"Z", b"X"))


def _has_marker(pid: int, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return needle in b"\0" + fh.read() + b"\0"
    except OSError:
        return False  # gone, or another user's


def _ancestors(pid: int) -> set[tuple[int, int]]:
    """`pid` and its ancestors, as (pid, start time)."""
    found = set()
    while pid > 0 and (proc := read_stat(pid)) is not None and (pid, proc.start) not in found:
        found.add((pid, proc.start))
        pid = proc.ppid
    return found


class Instance:
    """The processes of one Ray instance: those whose environment holds MARKER_ENV=marker, and the descendants of
    those, remembered by (pid, start time) from one `update` to the next while they live."""

    def __init__(self, marker: str, spare: Iterable[int] = ()) -> None:
        self.needle = f"\0{MARKER_ENV}={marker}\0".encode()
        self.spare = _ancestors(os.getpid()) | {key for pid in spare for key in _ancestors(pid)}
        self.known: dict[int, int] = {}  # pid -> start time

    def update(self) -> dict[int, int]:
        """Look the instance's processes up: the live ones, pid -> start time (zombies are not)."""
        table = process_table()
        live = {pid: proc for pid, proc in table.items()
                if not proc.zombie and pid != 1 and (pid, proc.start) not in self.spare}
        members = {pid: start for pid, start in self.known.items() if pid in live and live[pid].start == start}
        for pid, proc in live.items():  # read every time: a process forked by the driver shows the marker once it execs
            if pid not in members and _has_marker(pid, self.needle):
                members[pid] = proc.start
        children: dict[int, list[int]] = {}
        for pid, proc in live.items():
            children.setdefault(proc.ppid, []).append(pid)
        todo = list(members)
        while todo:  # descendants of members, marked or not (a lost marker, an environment of its own)
            for child in children.get(todo.pop(), ()):
                if child not in members:
                    members[child] = live[child].start
                    todo.append(child)
        self.known = members
        return dict(members)

    def alive(self, pid: int, start: int) -> bool:
        proc = read_stat(pid)
        return proc is not None and proc.start == start and not proc.zombie

    def end(self) -> bool:
        """SIGTERM the instance's processes, SIGKILL what is left after a grace period; False if there were none."""
        found = False
        for sig in (signal.SIGTERM, signal.SIGKILL):
            members = self.update()
            if not members:
                return found
            found = True
            for pid, start in members.items():
                if self.alive(pid, start):  # not a reused pid: its start time is the one known
                    try:
                        os.kill(pid, sig)
                    except OSError:
                        pass
            deadline = time.monotonic() + GRACE_S
            while members and time.monotonic() < deadline:
                time.sleep(0.1)
                members = {pid: start for pid, start in members.items() if self.alive(pid, start)}
        return found

    def sweep(self, quiet_s: float = QUIET_S, limit_s: float = SWEEP_S) -> None:
        """End the instance's processes until two sweeps `quiet_s` apart find none (a process may still be
        starting while the instance dies), for at most `limit_s`."""
        deadline, quiet = time.monotonic() + limit_s, 0
        while quiet < 2 and time.monotonic() < deadline:
            quiet = 0 if self.end() else quiet + 1
            if quiet < 2:
                time.sleep(quiet_s)


def marked_processes(marker: str, spare: tuple[int, ...] = ()) -> list[int]:
    """Pids of the processes whose environment holds MARKER_ENV=marker (not this one, nor `spare`)."""
    needle = f"\0{MARKER_ENV}={marker}\0".encode()
    return [pid for pid in process_table() if pid != os.getpid() and pid not in spare and _has_marker(pid, needle)]


def end_processes(marker: str, spare: tuple[int, ...] = ()) -> None:
    """End the marked processes and their descendants (not this one, `spare`, nor their ancestors)."""
    Instance(marker, spare).sweep()


def _watch(instance: Instance, driver: int) -> None:
    """Return once the driver's pipe is closed or the driver is gone (a child it forked may hold the pipe);
    meanwhile, remember the instance's processes."""
    proc = read_stat(driver)
    start = proc.start if proc is not None else None
    while True:
        instance.update()
        try:
            ready, _, _ = select.select([0], [], [], POLL_S)
            if ready and not os.read(0, 4096):
                return
        except OSError:
            return  # the pipe broke some other way: the driver is gone all the same
        if start is None or not instance.alive(driver, start):
            return


def main() -> None:
    marker, driver = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the terminal goes to the driver, which ends us
    instance = Instance(marker, spare=(driver,))
    _watch(instance, driver)
    instance.sweep()


if __name__ == "__main__":
    main()
