"""Video file names and the video content identity (a few MiB read, not the whole file)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from indexer.video import files
from indexer.video.files import VIDEO_EXTENSIONS, is_video_name, video_content_hash


@pytest.mark.parametrize("name, expected", [
    (b"a.mp4", True), (b"B.MOV", True), (b"c.M4v", True), (b"clip.3gp", True), (b"x.mkv", True),
    (b"x.webm", True), (b"old.AVI", True), (b"photo.jpg", False), (b"mp4", False), (b"a.mp4.part", False),
    ("vidéo é.mp4".encode(), True), (b"\xff\xfe.mov", True),
])
def test_is_video_name(name, expected):
    assert is_video_name(name) is expected


def test_extensions_are_the_listed_seven():
    assert VIDEO_EXTENSIONS == {".mp4", ".m4v", ".mov", ".3gp", ".mkv", ".webm", ".avi"}


def write(path, data: bytes) -> bytes:
    path.write_bytes(data)
    return os.fsencode(path)


def test_a_small_file_is_hashed_whole(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 500_000, dtype=np.uint8).tobytes()
    first = video_content_hash(write(tmp_path / "a.mp4", data), len(data))
    changed = bytearray(data)
    changed[250_000] ^= 1
    assert len(first) == 16
    assert video_content_hash(write(tmp_path / "b.mp4", bytes(changed)), len(data)) != first
    assert video_content_hash(write(tmp_path / "c.mp4", data), len(data)) == first  # a copy: the same identity


def test_a_large_file_reads_head_tail_and_chunks_only(tmp_path, monkeypatch):
    size = 40 << 20
    path = tmp_path / "big.mov"
    with open(path, "wb") as out:  # sparse but for a marker, so 40 MiB costs nothing
        out.truncate(size)
    read = []
    real_pread = os.pread
    monkeypatch.setattr(files.os, "pread", lambda fd, n, at: read.append(n) or real_pread(fd, n, at))
    first = video_content_hash(os.fsencode(path), size)
    assert sum(read) == 2 * (1 << 20) + 16 * (64 << 10)  # 3 MiB of 40

    def patched(offset: int) -> bytes:
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(b"\x01")
        digest = video_content_hash(os.fsencode(path), size)
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(b"\x00")
        return digest

    assert patched(10) != first  # the head (an MP4's ftyp/moov with faststart)
    assert patched(size - 10) != first  # the tail (the moov otherwise, MKV cues)
    spans = files._spans(size)
    assert patched(spans[5][0] + 5) != first  # one of the 16 chunks
    between = spans[8][0] + spans[8][1] + 10
    assert between < spans[9][0]
    assert patched(between) == first  # between chunks: not read, by design (a changed file has a new mtime)
    assert video_content_hash(os.fsencode(path), size + 1) != first  # the size is part of it


def test_a_missing_file_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        video_content_hash(os.fsencode(tmp_path / "gone.mp4"), 10)
