"""Evict files from the OS page cache without root, and check how much of them is resident (for cold figures).

`evict` calls posix_fadvise(POSIX_FADV_DONTNEED) on every file; `resident` asks mincore(2) (through ctypes)
which pages of each file are in memory, so a benchmark can say how cold its "cold cache" really was: pages
that another process holds mapped (a shared library in use elsewhere) are not dropped by the kernel.
Linux only.

    python scripts/page_cache.py evict|resident PATH...
"""
from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path

PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
MAP_FAILED = ctypes.c_void_p(-1).value


def files_under(paths: Iterable[Path | str]) -> Iterator[Path]:
    """Every regular file under the given files and folders (symlinks not followed)."""
    for root in paths:
        root = Path(root)
        if root.is_file():
            yield root
            continue
        for folder, _, names in os.walk(root):
            for name in names:
                path = Path(folder, name)
                if path.is_file() and not path.is_symlink():
                    yield path


def evict(paths: Iterable[Path | str]) -> tuple[int, int]:
    """Drop the given files (folders: every file under them) from the page cache; (files, bytes) advised."""
    count = size = 0
    for path in files_under(paths):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            count, size = count + 1, size + os.fstat(fd).st_size
        except OSError:
            pass
        finally:
            os.close(fd)
    return count, size


def resident(paths: Iterable[Path | str]) -> tuple[int, int]:
    """(resident bytes, total bytes) of the given files, page by page, via mincore(2)."""
    in_core = total = 0
    for path in files_under(paths):
        try:
            got, size = _resident_file(path)
        except OSError:
            continue
        in_core, total = in_core + got, total + size
    return in_core, total


def _resident_file(path: Path) -> tuple[int, int]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, 0
        address = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address in (None, MAP_FAILED):
            raise OSError(ctypes.get_errno(), "mmap failed")
        try:
            pages = (size + PAGE - 1) // PAGE
            vector = ctypes.create_string_buffer(pages)
            if _libc.mincore(address, size, vector) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
            return sum(b & 1 for b in vector.raw) * PAGE, size
        finally:
            _libc.munmap(address, size)
    finally:
        os.close(fd)


def python_files() -> list[Path]:
    """What any Python start reads: the interpreter, its shared library, and the standard library.

    Installed packages are left out (see installed_files): a venv's platstdlib holds only its site-packages.
    """
    paths = set()
    for name in ("stdlib", "platstdlib"):
        folder = Path(sysconfig.get_path(name))
        paths |= {p for p in folder.iterdir() if p.name != "site-packages"} if folder.is_dir() else set()
    paths.add(Path(os.path.realpath(sys.executable)))
    libdir, ldlibrary = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    if libdir and ldlibrary and Path(libdir, ldlibrary).is_file():
        paths.add(Path(os.path.realpath(Path(libdir, ldlibrary))))
    return sorted(paths)


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("evict", "resident"):
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    if sys.argv[1] == "evict":
        print("evicted %d files, %d bytes" % evict(sys.argv[2:]))
    else:
        got, total = resident(sys.argv[2:])
        print(f"resident {got} of {total} bytes ({100 * got / max(total, 1):.1f}%)")
