"""Bad and odd input, one test per kind: each file is skipped with a message, or indexed where readable;
never a traceback, never a hang. Runs the CLI in-process with --workers 0 (so patches reach the reader)."""
from __future__ import annotations

import io
import json
import os
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.catalog import catalog_query
from helpers.checks import assert_clear_winner
from helpers.cli import run
from helpers.images import bomb_png, photo, write_good, write_non_utf8


def _permissions_bind_us() -> bool:
    """False for root (or anyone allowed past file modes): then unreadable files cannot be made."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "probe"
        probe.write_bytes(b"x")
        probe.chmod(0)
        try:
            probe.read_bytes()
        except PermissionError:
            return True
        return False


mode_bits_ignored = not _permissions_bind_us()


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging."""
    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def folder(isolated) -> Path:
    """A photo folder holding one ordinary picture, so every library has something to search."""
    path = isolated / "photos"
    path.mkdir()
    photo(7).save(path / "ordinary.png")
    return path


@pytest.fixture
def index(folder, tiny_model_name):
    def index(*extra: str, ok: bool = True):
        with deadline(120):
            result = run("index", folder, "--model", tiny_model_name, "--workers", "0", "--json", *extra, ok=ok)
        return (json.loads(result.stdout) if result.exit_code == 0 else None), result.stderr
    return index


def skipped(stderr: str, path: Path | bytes, reason: str) -> bool:
    line = f"skipped {os.fsdecode(path)}: "
    return any(l.startswith(line) and reason in l for l in stderr.splitlines())


def status() -> dict:
    return json.loads(run("status", "--json", "--failures").stdout)


def first_hit(path: Path | bytes) -> dict:
    return json.loads(run("search", "--image", path, "--json", "--limit", "5").stdout)[0]


def assert_indexed(*paths: Path) -> None:
    for path in paths:
        hit = first_hit(path)
        assert hit["path"] == str(path) and hit["score"] > 0.999


def stored_embedding(path: Path) -> np.ndarray:
    blob = catalog_query(os.environ["SEARCHENGINE_LIBRARY"], "SELECT embedding FROM images WHERE path=?",
                         (os.fsencode(path),))[0][0]
    return np.frombuffer(blob, np.float32)


def fresh_embedding(path: Path) -> np.ndarray:
    return np.array(json.loads(run("embed", "--image", path, "--json").stdout)[0]["embedding"], np.float32)


# --- unreadable content: skipped with a message --------------------------------------------------------------
def test_zero_byte_file(folder, index):
    (folder / "empty.jpg").write_bytes(b"")
    summary, stderr = index()
    assert skipped(stderr, folder / "empty.jpg", "empty file")
    assert (summary["added"], summary["failed"]) == (1, 1)
    assert status()["failures"] == [{"path": str(folder / "empty.jpg"), "reason": "empty file"}]


def test_truncated_jpeg(folder, index):
    buf = io.BytesIO()
    photo(99, (256, 256)).save(buf, "JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    summary, stderr = index()
    assert skipped(stderr, folder / "truncated.jpg", "truncated")
    assert (summary["added"], summary["failed"]) == (1, 1)


@pytest.mark.parametrize("name", ["text.jpg", "text.png"])
def test_text_file_with_an_image_name(folder, index, name):
    (folder / name).write_text("this is not an image\n")
    summary, stderr = index()
    assert skipped(stderr, folder / name, "cannot decode image")
    assert summary["failed"] == 1


def test_decompression_bomb_png(folder, index):
    """60000x60000 declared: refused before any pixel is allocated (in a decode worker, too)."""
    (folder / "bomb.png").write_bytes(bomb_png())
    summary, stderr = index("--workers", "1")
    assert skipped(stderr, folder / "bomb.png", "decompression bomb")
    assert (summary["added"], summary["failed"]) == (1, 1)


# --- odd but readable: indexed ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["animated.gif", "cmyk.jpg", "sixteen.png", "palette.png", "tiny.png", "wide.png"])
def test_odd_but_readable_formats(folder, index, name):
    """Animated GIF (first frame), CMYK JPEG, 16-bit PNG, palette PNG with transparency, 1x1, 5000x12."""
    path = write_good(folder, name, seed=3)
    summary, stderr = index()
    assert (summary["added"], summary["failed"]) == (2, 0) and "skipped" not in stderr
    assert_indexed(path)


def test_exif_rotated_jpeg_is_indexed_upright(folder, index, isolated):
    rotated = write_good(folder, "rotated.jpg", seed=11)  # EXIF orientation 6 on photo(11)
    photo(11).save(folder / "sideways.jpg", "JPEG")  # the same pixels without the EXIF tag
    summary, _ = index()
    assert summary["added"] == 3
    upright = isolated / "upright.png"
    photo(11).transpose(Image.Transpose.ROTATE_270).save(upright)
    hits = json.loads(run("search", "--image", upright, "--json", "--limit", "5").stdout)
    assert hits[0]["path"] == str(rotated)
    assert_clear_winner(hits)


def test_upper_and_mixed_case_extensions(folder, index):
    paths = [folder / "A.JPG", folder / "B.PNG", folder / "c.JpEg", folder / "d.TIFF"]
    for n, path in enumerate(paths):
        photo(20 + n).save(path, {".JPG": "JPEG", ".PNG": "PNG", ".JpEg": "JPEG", ".TIFF": "TIFF"}[path.suffix])
    summary, _ = index()
    assert (summary["added"], summary["failed"]) == (5, 0)
    assert_indexed(*paths)


# --- odd file system entries -------------------------------------------------------------------------------------
def test_symlink_loops_end_and_index_each_file_once(folder, index):
    sub = folder / "sub"
    sub.mkdir()
    photo(30).save(sub / "inner.png")
    (sub / "up").symlink_to("..")  # a folder link to its parent's parent: a loop
    (folder / "self").symlink_to(".")
    (folder / "loop.jpg").symlink_to("loop.jpg")  # a file link to itself
    (folder / "loop").symlink_to("loop")  # not an image name: ignored like any other non-image
    summary, stderr = index()
    assert (summary["added"], summary["failed"]) == (2, 1)
    assert skipped(stderr, folder / "loop.jpg", "symbolic links")
    listed = [h["path"] for h in json.loads(run("search", "x", "--json", "--limit", "100").stdout)]
    assert sorted(listed) == sorted([str(folder / "ordinary.png"), str(sub / "inner.png")])


def test_broken_symlink(folder, index):
    (folder / "gone.jpg").symlink_to(folder / "nowhere.jpg")
    summary, stderr = index()
    assert skipped(stderr, folder / "gone.jpg", "broken symbolic link")
    assert (summary["added"], summary["failed"]) == (1, 1)


def test_folder_named_like_an_image(folder, index):
    (folder / "album.jpg").mkdir()
    photo(40).save(folder / "album.jpg" / "inside.png")
    (folder / "empty.png").mkdir()
    summary, stderr = index()
    assert (summary["added"], summary["failed"]) == (2, 0) and "skipped" not in stderr
    assert_indexed(folder / "album.jpg" / "inside.png")


def test_fifo_named_like_an_image_does_not_hang(folder, index):
    os.mkfifo(folder / "pipe.jpg")
    summary, stderr = index()
    assert skipped(stderr, folder / "pipe.jpg", "not a regular file")
    assert summary["added"] == 1


def test_file_names_that_are_not_utf8(folder, tiny_model_name):
    good = write_non_utf8(folder)
    bad = os.path.join(os.fsencode(folder), b"bad-\xff\xfe.jpg")
    with open(bad, "wb") as fh:
        fh.write(b"not an image")
    result = run("index", folder, "--model", tiny_model_name, "--workers", "0", "--json")
    summary = json.loads(result.stdout)
    assert (summary["added"], summary["failed"]) == (2, 1)
    assert b"skipped " + bad + b": cannot decode" in result.stderr_bytes  # the name's own bytes
    assert os.fsencode(first_hit(good)["path"]) == good
    listing = run("status", "--failures")
    assert b"failed\t" + bad + b"\t" in listing.stdout_bytes


# --- files that change between the scan and the read ------------------------------------------------------------
@pytest.fixture
def before_read(monkeypatch):
    """Run `action(path)` once, just before the next read of a file named `name` (read in-process)."""
    import indexer.pipeline.prepare

    real = indexer.pipeline.prepare.read_file

    def install(name: str, action):
        pending = [action]

        def read_file(path: bytes):
            if pending and os.path.basename(path) == name.encode():
                pending.pop()(Path(os.fsdecode(path)))
            return real(path)

        monkeypatch.setattr(indexer.pipeline.prepare, "read_file", read_file)
    return install


def test_file_deleted_between_scan_and_read(folder, index, before_read):
    photo(50).save(folder / "vanishing.png")
    before_read("vanishing.png", Path.unlink)
    summary, stderr = index()
    assert skipped(stderr, folder / "vanishing.png", "No such file")
    assert summary["added"] == 1
    assert (status()["images"], status()["failed"]) == (1, 0)  # a file that is gone is not a failure


def test_indexed_file_changed_then_deleted_before_read(folder, index, before_read):
    path = folder / "changing.png"
    photo(51).save(path)
    index()
    photo(52).save(path)
    os.utime(path, ns=(1, 1))
    before_read("changing.png", Path.unlink)
    summary, stderr = index()
    assert skipped(stderr, path, "No such file") and summary["removed"] == 1
    assert (status()["images"], status()["failed"]) == (1, 0)


def test_file_truncated_between_scan_and_read(folder, index, before_read):
    path = folder / "shrinking.jpg"
    photo(53, (256, 256)).save(path, "JPEG")
    whole = path.read_bytes()
    before_read("shrinking.jpg", lambda p: p.write_bytes(whole[: len(whole) // 2]))
    summary, stderr = index()
    assert skipped(stderr, path, "truncated") and summary["failed"] == 1
    path.write_bytes(whole)  # repaired: the next run picks it up
    summary, _ = index()
    assert (summary["added"], summary["failed"]) == (1, 0)
    assert_indexed(path)


def test_file_rewritten_between_scan_and_read(folder, index, before_read):
    path = folder / "rewritten.png"
    photo(54).save(path)
    before_read("rewritten.png", lambda p: photo(55, (80, 80)).save(p))
    summary, _ = index()
    assert summary["added"] == 2
    assert float(stored_embedding(path) @ fresh_embedding(path)) > 0.999  # the content actually read
    summary, _ = index()  # stored with the size and mtime of what was read: unchanged now
    assert (summary["unchanged"], summary["encoded"]) == (2, 0), summary


# --- permissions ----------------------------------------------------------------------------------------------
@pytest.mark.skipif(mode_bits_ignored, reason="this user reads any file (root)")
def test_unreadable_file(folder, index):
    path = folder / "secret.png"
    photo(60).save(path)
    path.chmod(0)
    summary, stderr = index()
    assert skipped(stderr, path, "Permission denied") and summary["failed"] == 1


@pytest.mark.skipif(mode_bits_ignored, reason="this user lists any folder (root)")
def test_unreadable_folder_keeps_its_indexed_files(folder, index):
    sub = folder / "private"
    sub.mkdir()
    photo(61).save(sub / "kept.png")
    index()
    sub.chmod(0)
    try:
        summary, stderr = index()
    finally:
        sub.chmod(0o755)
    assert skipped(stderr, sub, "Permission denied") and summary["removed"] == 0
    assert status()["images"] == 2


def test_unlistable_folder_keeps_its_indexed_files(folder, index, monkeypatch):
    """The same as above, as root: listing the folder fails as it would without permission."""
    import indexer.pipeline.scan

    sub = folder / "private"
    (sub / "deeper").mkdir(parents=True)
    photo(62).save(sub / "kept.png")
    photo(63).save(sub / "deeper" / "kept too.png")
    index()
    real = os.scandir

    def scandir(path):
        if os.fsencode(path) == os.fsencode(sub):
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(indexer.pipeline.scan.os, "scandir", scandir)
    summary, stderr = index()
    assert skipped(stderr, os.fsencode(sub), "Permission denied")
    assert summary["removed"] == 0 and status()["images"] == 3
