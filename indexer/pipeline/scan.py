"""Walk indexed roots folder by folder, as bytes paths (file names need not be valid UTF-8).

Follows symbolic links to folders but visits each real folder once, so link loops end.
"""
from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from indexer.video.files import is_video_name

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".dib", ".tif", ".tiff",
                              ".heic", ".heif", ".avif"})


@dataclass
class FileEntry:
    path: bytes
    size: int
    mtime_ns: int


@dataclass
class FolderScan:
    """One folder's candidate photo and video files, and what went wrong reading it."""

    folder: bytes
    files: list[FileEntry] = field(default_factory=list)
    problems: list[tuple[bytes, str]] = field(default_factory=list)  # files that cannot be indexed, with why
    error: str | None = None  # the folder itself could not be listed: keep what the catalog has for it
    single_file: bool = False  # a root that is a file: nothing else in its folder is in scope


def is_image_name(name: bytes) -> bool:
    return os.path.splitext(name)[1].lower().decode("ascii", "replace") in IMAGE_EXTENSIONS


def is_media_name(name: bytes) -> bool:
    """A photo or a video, by its extension (any case)."""
    return is_image_name(name) or is_video_name(name)


def absolute(path: str | bytes) -> bytes:
    return os.path.abspath(os.fsencode(os.path.expanduser(path)))


class Excluder:
    """Glob patterns matched against a file's or folder's name and its whole path."""

    def __init__(self, patterns: Sequence[str]):
        self.patterns = [os.fsencode(p) for p in patterns]

    def __call__(self, path: bytes) -> bool:
        name = os.path.basename(path)
        return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(path, p) for p in self.patterns)


def scan_root(root: bytes, excluded: Excluder, visited: set[tuple[int, int]]) -> Iterator[FolderScan]:
    """Yield each folder under `root` (or `root` itself as a one-file scan when it is a file)."""
    try:
        info = os.stat(root)
    except OSError as exc:
        yield FolderScan(root, error=_reason(exc))
        return
    if not stat.S_ISDIR(info.st_mode):
        scan = FolderScan(os.path.dirname(root), single_file=True)
        scan.files.append(FileEntry(root, info.st_size, info.st_mtime_ns))
        yield scan
        return
    pending = [root]
    while pending:
        folder = pending.pop()
        scan, subfolders = _scan_folder(folder, excluded, visited)
        if scan is not None:
            yield scan
        pending.extend(reversed(subfolders))


def _scan_folder(folder: bytes, excluded: Excluder, visited: set) -> tuple[FolderScan | None, list[bytes]]:
    try:
        info = os.stat(folder)
    except OSError as exc:
        return FolderScan(folder, error=_reason(exc)), []
    key = (info.st_dev, info.st_ino)
    if key in visited:
        return None, []  # a link back to a folder already walked: a loop, or the same folder twice
    visited.add(key)
    scan = FolderScan(folder)
    subfolders: list[bytes] = []
    try:
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                _classify(entry, scan, subfolders, excluded)
    except OSError as exc:
        scan.error = f"cannot list folder ({_reason(exc)})"
    return scan, subfolders


def _classify(entry: os.DirEntry, scan: FolderScan, subfolders: list[bytes], excluded: Excluder) -> None:
    path = entry.path
    if excluded(path):
        return
    try:
        is_dir = entry.is_dir()
        is_file = entry.is_file()
    except OSError as exc:  # e.g. a link loop: worth a message only where an image was expected
        if is_media_name(entry.name):
            scan.problems.append((path, _reason(exc)))
        return
    if is_dir:
        subfolders.append(path)
    elif is_media_name(entry.name):
        if not is_file:
            reason = "broken symbolic link" if entry.is_symlink() else "not a regular file"
            scan.problems.append((path, reason))
            return
        try:
            info = entry.stat()
        except OSError as exc:
            scan.problems.append((path, _reason(exc)))
            return
        scan.files.append(FileEntry(path, info.st_size, info.st_mtime_ns))


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
