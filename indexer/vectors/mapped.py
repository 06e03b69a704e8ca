"""IVF lists left in the index file's mapping (VectorIndex.load): what a search will read, read ahead at once.

On a cold page cache the kernel's read-ahead reads the whole 50 MB file of a 100k library for a search that
probes ~10% of it, and without read-ahead the probed lists come in as ~1000 page faults one after the other
(either way ~55 ms here). So the mapping is advised MADV_RANDOM, and before each search the cells it will probe
(the coarse quantiser's answer, ~0.2 ms) are advised MADV_WILLNEED, all at once: their reads are issued together.
With a warm cache the advice costs microseconds. Where madvise is not available the advice is skipped.
"""
from __future__ import annotations

import ctypes
import mmap
import time

import numpy as np

_PAGE = mmap.PAGESIZE
_MADV_RANDOM = getattr(mmap, "MADV_RANDOM", 1)
_MADV_WILLNEED = getattr(mmap, "MADV_WILLNEED", 3)
_libc: dict[str, object] = {}
KNOWN_FOR_S = 60.0


def _function(name: str, *argtypes):
    """libc's `name` through ctypes (which releases the GIL), or False where there is none."""
    if name not in _libc:
        try:
            function = getattr(ctypes.CDLL(None, use_errno=True), name)
            function.argtypes = list(argtypes)
            function.restype = ctypes.c_int
            _libc[name] = function
        except (OSError, AttributeError):
            _libc[name] = False
    return _libc[name]


class MappedLists:
    """The mapped lists of one index (faiss OnDiskInvertedLists, read-only)."""

    def __init__(self, lists) -> None:
        self._base = int(lists.ptr)
        self._total = int(lists.totsize)
        entry = int(lists.code_size) + 8  # each list: its codes, then its 8-byte ids
        count = int(lists.nlist)
        self._bytes = np.array([lists.list_size(c) for c in range(count)], dtype=np.int64) * entry
        # faiss lays the lists out one after the other in cell order; checked at the last one (each `.at()`
        # makes a proxy object: ~30 us, 20 ms for every cell of a 100k index).
        self._offsets = int(lists.lists.at(0).offset) + np.concatenate([[0], np.cumsum(self._bytes)[:-1]])
        if count and int(lists.lists.at(count - 1).offset) != int(self._offsets[-1]):
            self._offsets = np.array([lists.lists.at(c).offset for c in range(count)], dtype=np.int64)
        self._pages = np.zeros(64, dtype=np.uint8)  # mincore's answer for one list (grown as needed)
        # Lists seen in memory (or read ahead) lately: a server's searches ask only about the others. A list
        # evicted since is merely read by page faults; the memory is refreshed every KNOWN_FOR_S.
        self._known = np.zeros(count, dtype=bool)
        self._known_since = time.monotonic()
        self._advise(self._base, self._total, _MADV_RANDOM)

    def will_need(self, cells: np.ndarray) -> None:
        """Start reading these cells' lists (ids of cells; -1 entries are ignored) where they are not in memory
        (advising pages already cached costs ~0.1 ms a list; asking whether they are, ~20 us a list here: ~1 ms of
        a warm search probing 48 lists, hence the memory of lists known to be in)."""
        if time.monotonic() - self._known_since > KNOWN_FOR_S:
            self._known[:] = False
            self._known_since = time.monotonic()
        cells = _distinct(cells[cells >= 0])
        for cell in cells[~self._known[cells]]:
            self._known[cell] = True
            size = int(self._bytes[cell])
            if not size:
                continue
            start = int(self._offsets[cell])
            first = start - start % _PAGE
            length = start + size - first
            if not self._cached(self._base + first, length):
                self._advise(self._base + first, length, _MADV_WILLNEED)

    def _cached(self, address: int, length: int) -> bool:
        """Whether every page of the range is in memory (mincore); False where that cannot be asked."""
        mincore = _function("mincore", ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
        pages = (length + _PAGE - 1) // _PAGE
        if not mincore or address % _PAGE:
            return False
        if len(self._pages) < pages:
            self._pages = np.zeros(pages, dtype=np.uint8)
        if mincore(address, length, self._pages.ctypes.data) != 0:
            return False
        return bool(np.all(self._pages[:pages] & 1))

    def will_need_all(self) -> None:
        """A scan of every cell (duplicates): read the whole file ahead."""
        self._advise(self._base, self._total, _MADV_WILLNEED)

    @staticmethod
    def _advise(address: int, length: int, advice: int) -> None:
        madvise = _function("madvise", ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        if madvise:
            madvise(address, length, advice)  # advice only: a failure changes nothing but speed


def _distinct(values: np.ndarray) -> np.ndarray:
    """np.unique of a 1-D array without it: numpy 2.4's unique imports numpy.ma on first use (~12 ms of a search
    in a new process)."""
    ordered = np.sort(values.ravel())
    keep = np.ones(len(ordered), dtype=bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    return ordered[keep]
