"""`index --ray`: a library equal to the local path's; a killed driver or actor loses and repeats nothing; no Ray
process outlives a run. One local Ray instance (2 CPUs) serves the module; `--ray auto` runs start their own."""
from __future__ import annotations

import os
import signal
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
from indexer.ray.watchdog import MARKER_ENV, end_processes, marked_processes  # noqa: E402
from searchengine.library.api import Library  # noqa: E402

LEFTOVER_WAIT_S = 60


MODULE_MARKER = uuid.uuid4().hex


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray instance for the module; its processes carry a marker, so all of them are ended after."""
    marker = MODULE_MARKER
    os.environ[MARKER_ENV] = marker
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 object_store_memory=300 << 20, _node_ip_address="127.0.0.1")
    finally:
        del os.environ[MARKER_ENV]
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


def _tagged_processes(tag: str) -> list[int]:
    needle = f"SEARCHENGINE_TEST_TAG={tag}".encode()
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                if needle in fh.read():
                    found.append(int(name))
        except (OSError, ValueError):
            continue
    return found


def _wait_until_none_tagged(tag: str) -> list[int]:
    deadline = time.monotonic() + LEFTOVER_WAIT_S
    while (left := _tagged_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _process_names(pids: list[int]) -> list[str]:
    names = []
    for pid in pids:
        try:
            names.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:80].decode())
        except OSError:
            pass
    return names


@pytest.mark.parametrize("ending", ["finished", "driver SIGKILLed"])
def test_ray_auto_leaves_no_process_behind(isolated, tiny_model_name, monkeypatch, ending):
    files = make_photos(isolated / "photos", 24 if ending == "finished" else 200)
    library = isolated / "library"
    tag = uuid.uuid4().hex
    monkeypatch.setenv("SEARCHENGINE_TEST_TAG", tag)
    args = ["index", isolated / "photos", "--library", library, "--model", tiny_model_name, "--batch-size", "2",
            "--ray", "auto", "--json"]
    if ending == "finished":
        result = cli(*args, timeout=300)
        assert summary_of(result)["added"] == len(files)
        assert result.stderr == "", "Ray wrote to the terminal"
    else:
        proc = start(*args, log=isolated / "run")
        try:
            Kill(committed=2).wait(proc, lambda: len(catalog_rows(library)), len(files))
            assert proc.poll() is None, "the run ended before it could be killed"
            os.kill(proc.pid, signal.SIGKILL)  # the driver alone: Ray's own processes must follow it
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                kill_group(proc)
    left = _wait_until_none_tagged(tag)
    names = _process_names(left)
    for pid in left:  # do not leave them to the next test either
        os.kill(pid, signal.SIGKILL)
    assert not left, f"Ray processes left behind: {names}"
