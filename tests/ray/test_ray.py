"""`index --ray`: a library equal to the local path's; a killed driver or actor loses and repeats nothing; no Ray
process outlives a run. One local Ray instance (2 CPUs) serves the module; `--ray auto` runs start their own."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]' (or '.[test]')")
pytest.importorskip("pyarrow", reason="the ray extra is not installed: pip install -e '.[ray]' (or '.[test]')")

from helpers.catalog import catalog_query  # noqa: E402
from helpers.checks import check_complete  # noqa: E402
from helpers.cli import cli, start, summary_of  # noqa: E402
from helpers.faults import Kill, catalog_rows, kill_group  # noqa: E402
from helpers.images import make_library_folder, make_photos  # noqa: E402
from indexer.pipeline.local import IndexOptions  # noqa: E402
from indexer.ray.watchdog import MARKER_ENV, end_processes, instance_environ, marked_processes  # noqa: E402
from searchengine.library.api import Library  # noqa: E402

LEFTOVER_WAIT_S = 20  # a killed driver's agents live on for 60 s by themselves; the watchdog ends them in a few


MODULE_MARKER = uuid.uuid4().hex


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray instance for the module; its processes carry a marker, so all of them are ended after."""
    marker = MODULE_MARKER
    mp = pytest.MonkeyPatch()
    for name, value in instance_environ(marker).items():
        mp.setenv(name, value)
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 object_store_memory=300 << 20, _node_ip_address="127.0.0.1")
    finally:
        mp.undo()
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        end_processes(marker, spare=(os.getpid(),))


def _rows(library: Path) -> dict[bytes, tuple[int, bytes, np.ndarray]]:
    """path -> (size, content hash, embedding) of every indexed image."""
    return {p: (s, h, np.frombuffer(e, np.float32)) for p, s, h, e in
            catalog_query(library, "SELECT path, size, content_hash, embedding FROM images")}


def test_ray_library_equals_the_local_one(ray_address, isolated, tiny_model_name):
    folder = isolated / "photos"
    make_library_folder(folder)
    local, remote = Library.open(isolated / "local"), Library.open(isolated / "remote")
    expected = local.index([str(folder)], model=tiny_model_name, options=IndexOptions(batch_size=4, workers=0))
    got = remote.index([str(folder)], model=tiny_model_name, options=IndexOptions(batch_size=4), ray="auto")
    for field in ("added", "updated", "removed", "unchanged", "failed", "reused", "encoded"):
        assert getattr(got, field) == getattr(expected, field), field
    assert (remote.status().images, remote.status().failed) == (local.status().images, local.status().failed)
    assert remote.failures() == local.failures()
    mine, theirs = _rows(isolated / "remote"), _rows(isolated / "local")
    assert mine.keys() == theirs.keys()
    for path, (size, digest, vector) in mine.items():
        assert (size, digest) == theirs[path][:2]
        assert float(vector @ theirs[path][2]) >= 0.9999, path

    # A copy is given its original's embedding by content, an unchanged folder is only compared.
    copy = folder / "copy of a.jpg"
    copy.write_bytes((folder / "a.jpg").read_bytes())
    again = remote.index([str(folder)], ray="auto")
    assert (again.added, again.reused, again.encoded) == (1, 1, 0)
    assert np.array_equal(_rows(isolated / "remote")[os.fsencode(copy)][2], mine[os.fsencode(folder / "a.jpg")][2])


def _encoder_actor_pids() -> list[int]:
    """Encoder actors of this module's Ray instance (not of another one running on the machine)."""
    return [pid for pid in marked_processes(MODULE_MARKER) if b"_EncodeActor" in _cmdline(pid)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_an_actor_killed_mid_run_is_restarted_and_the_run_completes(ray_address, isolated, tiny_model_name):
    files = make_photos(isolated / "photos", 40)
    library = isolated / "library"
    killed: list[int] = []

    def kill_the_actor_once_it_has_committed() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if len(catalog_rows(library)) >= 4 and (pids := _encoder_actor_pids()):
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.02)

    killer = threading.Thread(target=kill_the_actor_once_it_has_committed, daemon=True)
    killer.start()
    summary = Library.open(library).index([str(isolated / "photos")], model=tiny_model_name,
                                          options=IndexOptions(batch_size=2), ray="auto")
    killer.join(timeout=130)
    assert killed, "the run ended before an encoder actor could be killed"
    assert (summary.added, summary.failed) == (len(files), 0)
    assert (summary.device, summary.compute_precision) == ("cpu", "fp32")  # what the actors ran on, recorded
    assert Library.open(library).status().device == "cpu"
    check_complete(library, files, failed=0)


def test_driver_killed_mid_run_then_rerun_repeats_nothing(ray_address, isolated, tiny_model_name):
    files = make_photos(isolated / "photos", 40)
    library = isolated / "library"
    args = ["index", isolated / "photos", "--library", library, "--model", tiny_model_name, "--batch-size", "2",
            "--ray", ray_address, "--json"]
    proc = start(*args, log=isolated / "killed")
    Kill(committed=6).wait(proc, lambda: len(catalog_rows(library)), len(files))
    assert kill_group(proc), "the run ended before it could be killed"
    before = catalog_rows(library)
    assert 0 < len(before) < len(files)
    summary = summary_of(cli(*args))
    assert summary["encoded"] == len(files) - len(before), "a committed image was encoded again"
    assert summary["unchanged"] == len(before)
    after = catalog_rows(library)
    assert all(after[path] == row for path, row in before.items()), "a committed row was rewritten"
    check_complete(library, files, failed=0)


class _RunProcesses:
    """Every process of a run, seen from outside while it runs: the driver's descendants and the processes that
    carry the test's tag, each remembered by (pid, start time) from the moment it is first seen, so that one that
    loses its tag (Ray's setproctitle may overwrite /proc/PID/environ) or its parent (orphans go to init) is
    still known. Polled in a thread from the run's start to the end of the test."""

    def __init__(self, driver: int, tag: str):
        self.needle = f"\0SEARCHENGINE_TEST_TAG={tag}\0".encode()
        self.driver = (driver, _process_table()[driver][1])
        self.seen: dict[tuple[int, int], str] = {self.driver: _name(driver)}  # (pid, start time) -> command line
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.poll()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.poll()

    def poll(self) -> list[tuple[int, int]]:
        """Record what is new; the recorded processes still alive."""
        table = _process_table()
        with self._lock:
            alive = {pid for pid, start in self.seen if table.get(pid, (0, -1, True))[1:] == (start, False)}
            for pid, (_, start, zombie) in table.items():
                if pid != os.getpid() and not zombie and pid not in alive and _environ_has(pid, self.needle):
                    alive.add(pid)
                    self.seen.setdefault((pid, start), _name(pid))
            children: dict[int, list[int]] = {}
            for pid, (ppid, _, zombie) in table.items():
                if not zombie:
                    children.setdefault(ppid, []).append(pid)
            todo = list(alive)
            while todo:
                for child in children.get(todo.pop(), ()):
                    if child not in alive and child != os.getpid():
                        alive.add(child)
                        self.seen.setdefault((child, table[child][1]), _name(child))
            return [(pid, table[pid][1]) for pid in alive]

    def ray_processes(self) -> list[str]:
        with self._lock:
            return [name for key, name in self.seen.items() if key != self.driver]

    def wait_until_none_left(self, timeout: float) -> tuple[list[str], float]:
        """Wait until every process of the run has ended: those left (their command lines now) and the wait."""
        began = time.monotonic()
        while (left := self.poll()) and time.monotonic() - began < timeout:
            time.sleep(0.1)
        return [_name(pid) or self.seen[(pid, start)] for pid, start in left], time.monotonic() - began

    def stop(self) -> None:
        """Stop watching; SIGKILL what is left, not to leave it to the next test."""
        self._stop.set()
        self._thread.join()
        for pid, start in self.poll():
            if _process_table().get(pid, (0, -1))[1] == start:
                os.kill(pid, signal.SIGKILL)


def _name(pid: int) -> str:
    return _cmdline(pid).replace(b"\0", b" ")[:80].decode(errors="replace").strip()


def _process_table() -> dict[int, tuple[int, int, bool]]:
    """pid -> (parent, start time, whether a zombie) of every process."""
    table = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(name)] = (int(fields[1]), int(fields[19]), fields[0] in (b"Z", b"X"))
    return table


def _environ_has(pid: int, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return needle in b"\0" + fh.read() + b"\0"
    except OSError:
        return False


_DRIVER = """
import json, os, subprocess, sys, time
marker, out, orphan = sys.argv[1:4]
clean = {k: v for k, v in os.environ.items() if k != "SEARCHENGINE_RAY_SESSION"}
watchdog = subprocess.Popen([sys.executable, "-m", "indexer.ray.watchdog", marker, str(os.getpid())],
                            stdin=subprocess.PIPE, env=clean, start_new_session=True)
# the instance: a marked process that leaves a child without the marker (a lost marker), orphaned after 1 s
subprocess.Popen(["sh", "-c", f"env -i sleep 300 & echo $! > {orphan}; sleep 1"], env={**clean, "SEARCHENGINE_RAY_SESSION": marker})
bystander = subprocess.Popen(["sleep", "300"], env=clean)  # the driver's, not the instance's
holder = os.fork()  # keeps the driver's end of the watchdog's pipe open after the driver dies
if holder == 0:
    time.sleep(300)
    os._exit(0)
with open(out + ".tmp", "w") as fh:
    json.dump({"watchdog": watchdog.pid, "bystander": bystander.pid, "holder": holder}, fh)
os.rename(out + ".tmp", out)
time.sleep(300)
"""


def test_the_watchdog_ends_the_instance_of_a_killed_driver_and_nothing_else(isolated):
    """A descendant of a marked process is ended though it lost the marker and its parent; the watchdog acts on the
    driver's death though a child the driver forked holds the pipe open; the driver's (marked) parent, a child of
    the driver outside the instance and that forked child are left alone."""
    marker, out = uuid.uuid4().hex, isolated / "pids.json"
    orphan_file, pids, orphan = isolated / "orphan", {}, 0
    parent = subprocess.Popen(["sh", "-c", f'env -u {MARKER_ENV} "$0" -c "$1" "$2" "$3" "$4"; exec sleep 300',
                               sys.executable, _DRIVER, marker, out, orphan_file],
                              env={**os.environ, MARKER_ENV: marker}, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and orphan_file.exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        pids, orphan = json.loads(out.read_text()), int(orphan_file.read_text())
        driver = _process_table()[pids["holder"]][0]
        time.sleep(2)  # the marked shell has exited: the watchdog knows the orphan only from before
        assert _process_table()[orphan][0] != driver and not _environ_has(orphan, MARKER_ENV.encode())
        os.kill(driver, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while (_running(orphan) or _running(pids["watchdog"])) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(orphan), "a process of the instance outlived its driver"
        assert not _running(pids["watchdog"]), "the watchdog waited on a pipe that a forked child holds"
        for name, pid in (("the driver's parent", parent.pid), ("the bystander", pids["bystander"]),
                          ("the forked child", pids["holder"])):
            assert _running(pid), f"the watchdog ended {name}"
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
        for pid in (pids.get("bystander"), pids.get("holder"), pids.get("watchdog"), orphan):
            if pid and _running(pid):
                os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    proc = _process_table().get(pid)
    return proc is not None and not proc[2]


@pytest.mark.parametrize("ending", ["finished", "driver SIGKILLed"])
def test_ray_auto_leaves_no_process_behind(isolated, tiny_model_name, monkeypatch, ending):
    """No process of a `--ray auto` run outlives it by more than LEFTOVER_WAIT_S, its driver SIGKILLed included
    (Ray's dashboard and runtime-env agents then live on for a minute by themselves)."""
    files = make_photos(isolated / "photos", 24 if ending == "finished" else 200)
    library = isolated / "library"
    tag = uuid.uuid4().hex
    monkeypatch.setenv("SEARCHENGINE_TEST_TAG", tag)
    args = ["index", isolated / "photos", "--library", library, "--model", tiny_model_name, "--batch-size", "2",
            "--ray", "auto", "--json"]
    proc = start(*args, log=isolated / "run")
    run = _RunProcesses(proc.pid, tag)
    try:
        if ending == "finished":
            assert proc.wait(timeout=300) == 0, (isolated / "run.err").read_text()
            assert json.loads((isolated / "run.out").read_text())["added"] == len(files)
            assert (isolated / "run.err").read_text() == "", "Ray wrote to the terminal"
        else:
            Kill(committed=2).wait(proc, lambda: len(catalog_rows(library)), len(files))
            assert proc.poll() is None, "the run ended before it could be killed"
            assert len(run.ray_processes()) >= 3, f"no Ray instance to leave anything behind: {run.ray_processes()}"
            os.kill(proc.pid, signal.SIGKILL)  # the driver alone: Ray's own processes must follow it
            proc.wait(timeout=30)
        left, waited = run.wait_until_none_left(LEFTOVER_WAIT_S)
        assert not left, f"Ray processes left behind {waited:.0f} s after the run: {left}"
    finally:
        if proc.poll() is None:
            kill_group(proc)
        run.stop()
