"""Put search results into a folder, as copies or symbolic links, for another program to pick up."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable

from indexer.errors import SearchEngineError

COPY, LINK = "copy", "link"
MAX_CLASHES = 100_000  # bounded search for a free `name (n).ext`


class ExportError(SearchEngineError):
    """The destination folder cannot be made or written."""


def free_name(folder: bytes, name: bytes, taken: set[bytes]) -> bytes:
    """`name`, or `stem (2).ext`, `stem (3).ext`... whichever is neither on disk nor already used."""
    stem, ext = os.path.splitext(name)
    candidate = name
    for n in range(2, MAX_CLASHES):
        if candidate not in taken and not os.path.lexists(os.path.join(folder, candidate)):
            return candidate
        candidate = stem + b" (%d)" % n + ext
    raise ExportError(f"too many files named {os.fsdecode(name)} in {os.fsdecode(folder)}")


def export(paths: Iterable[str | bytes], folder: str | Path, mode: str = COPY) -> list[str]:
    """Copy (or symlink, mode "link") each file into `folder`, created if needed; names kept, clashes numbered.

    Returns the paths written, in order. Existing files in `folder` are never overwritten.
    """
    if mode not in (COPY, LINK):
        raise ValueError(f"unknown export mode {mode!r}")
    target = os.fsencode(os.path.abspath(os.path.expanduser(os.fsencode(folder))))
    try:
        os.makedirs(target, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create folder {os.fsdecode(target)}: {exc.strerror or exc}") from None
    written: list[str] = []
    taken: set[bytes] = set()
    for path in paths:
        source = os.path.abspath(os.fsencode(path))
        name = free_name(target, os.path.basename(source), taken)
        taken.add(name)
        destination = os.path.join(target, name)
        try:
            if mode == LINK:
                os.symlink(source, destination)
            else:
                shutil.copy2(source, destination)
        except OSError as exc:
            raise ExportError(f"cannot {mode} {os.fsdecode(source)} to {os.fsdecode(target)}: "
                              f"{exc.strerror or exc}") from None
        written.append(os.fsdecode(destination))
    return written
