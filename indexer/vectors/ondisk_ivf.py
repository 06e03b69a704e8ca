"""IVF-SQ8 with its inverted lists on disk (FAISS OnDiskInvertedLists, memory-mapped): an index larger than RAM.

Built as FAISS documents for indexes that do not fit in memory (faiss/contrib/ondisk.py): train the cells once
on a sample, add the vectors shard by shard into copies of the trained index written to disk, then merge the
shards' lists into one `.ivfdata` file that searches map rather than load. Only the coarse quantiser (nlist x d
floats, ~9 MB at 5M vectors) is read into memory; a query touches the pages of the `nprobe` lists it scans.

Integrity: the lists file is too large (GBs) to checksum on every open, so its size and a CRC over sampled
blocks (the first and last MiB and 64 evenly spaced 64 KiB blocks) are recorded at build time and checked on
open: truncation, a replaced or half-copied file, and damage in any sampled block are caught in milliseconds.
`verify_full` checks a full CRC (recorded too) for when a damaged disk is suspected.
"""
from __future__ import annotations

import json
import math
import os
import sys
import zlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import faiss
import numpy as np

from indexer.errors import IndexFileError

SHARD_VECTORS = 1_000_000  # vectors added per shard (about 0.5 GB of codes held at once)
ADD_CHUNK = 100_000
TRAIN_POINTS_PER_LIST = 40
KMEANS_ITERATIONS = 10
CELLS_PER_SQRT_N = 2  # as the in-memory IVF: k-means over more cells costs more than 2 cores give
DEFAULT_NPROBE = 32  # 5M: recall@10 0.995, p50 30 ms (24: 0.993, 64: 0.998 at 54 ms); bench_ondisk.py
SAMPLE_BLOCKS, BLOCK, EDGE = 64, 64 << 10, 1 << 20

Progress = Callable[[str], None]


@dataclass
class ListsCheck:
    """What is recorded about the lists file at build time and checked when it is opened."""

    size: int
    sampled_crc: int
    full_crc: int


def build_ondisk(vectors: np.ndarray, ids: np.ndarray, target: Path, progress: Progress = lambda _: None,
                 shard_vectors: int = SHARD_VECTORS) -> "faiss.Index":
    """Train on a sample, add in shards, merge into `target` + `target`.ivfdata; return the mapped index.

    `vectors` may be a read-only memory map: rows are read a chunk at a time and never copied whole."""
    n, dim = vectors.shape
    trained = _trained(vectors, progress)
    shards = []
    try:
        for start in range(0, n, shard_vectors):
            stop = min(n, start + shard_vectors)
            shard = faiss.clone_index(trained)
            for lo in range(start, stop, ADD_CHUNK):
                hi = min(stop, lo + ADD_CHUNK)
                shard.add_with_ids(np.ascontiguousarray(vectors[lo:hi], np.float32), np.asarray(ids[lo:hi], np.int64))
            path = target.with_name(f"{target.name}.shard{len(shards)}")
            faiss.write_index(shard, str(path))
            shards.append(path)
            del shard
            progress(f"shard {len(shards)}: {stop}/{n} vectors added")
        faiss.write_index(trained, str(empty_path(target)))  # the trained cells, no vectors: a delta starts here
        _merge(trained, shards, lists_path(target))
    finally:
        for path in shards:
            path.unlink(missing_ok=True)
    trained.nprobe = DEFAULT_NPROBE
    faiss.write_index(trained, str(target))
    check = lists_check(lists_path(target), full=True)
    check_path(target).write_text(json.dumps(asdict(check)))
    return open_ondisk(target)


def lists_path(target: Path) -> Path:
    return target.with_name(target.name + ".ivfdata")


def empty_path(target: Path) -> Path:
    return target.with_name(target.name + ".empty")


def side_files(target: Path) -> list[Path]:
    """Every file an on-disk index at `target` consists of."""
    return [target, lists_path(target), check_path(target), empty_path(target)]


def check_path(target: Path) -> Path:
    return target.with_name(target.name + ".check")


def _trained(vectors: np.ndarray, progress: Progress) -> "faiss.Index":
    n, dim = vectors.shape
    nlist = max(1, min(int(CELLS_PER_SQRT_N * math.sqrt(n)), n // 39))
    sample = np.sort(np.random.default_rng(0).choice(n, min(n, nlist * TRAIN_POINTS_PER_LIST), replace=False))
    index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT, True)
    index.cp.niter = KMEANS_ITERATIONS
    index.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST
    index.train(np.ascontiguousarray(vectors[sample], np.float32))
    progress(f"trained {nlist} cells on {len(sample)} vectors")
    return index


def _merge(trained: "faiss.Index", shards: list[Path], ivfdata: Path) -> None:
    """faiss's own procedure: the shards' lists (mapped, not loaded), concatenated into one on-disk lists file."""
    from faiss.contrib.ondisk import merge_ondisk

    with _quiet_stdout():  # it prints "resizing ..." on stdout
        merge_ondisk(trained, [str(p) for p in shards], str(ivfdata))


def open_ondisk(target: Path) -> "faiss.Index":
    """Map a built index (lists file beside it), after the quick integrity check."""
    lists = lists_path(target)
    try:
        recorded = ListsCheck(**json.loads(check_path(target).read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise IndexFileError(f"on-disk index {target} has no readable check record ({exc})") from None
    found = lists_check(lists, full=False)
    if (found.size, found.sampled_crc) != (recorded.size, recorded.sampled_crc):
        raise IndexFileError(f"on-disk lists {lists} do not match the index (size or sampled checksum)")
    try:
        with _quiet_stdout():  # faiss prints a line on stdout for IO_FLAG_ONDISK_SAME_DIR (stdout is our output)
            return faiss.read_index(str(target), faiss.IO_FLAG_ONDISK_SAME_DIR)  # the lists are mapped, not read
    except RuntimeError as exc:
        raise IndexFileError(f"on-disk index {target} cannot be read: {str(exc).splitlines()[-1][-120:]}") from None


@contextmanager
def _quiet_stdout() -> Iterator[None]:
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def lists_check(path: Path, full: bool) -> ListsCheck:
    """Size, CRC of the sampled blocks, and (if `full`) CRC of the whole file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            sampled = 0
            for offset, length in _sampled_blocks(size):
                fh.seek(offset)
                sampled = zlib.crc32(fh.read(length), sampled)
            whole = _full_crc(fh) if full else 0
    except OSError as exc:
        raise IndexFileError(f"on-disk lists {path} cannot be read ({exc.strerror or exc})") from None
    return ListsCheck(size, sampled, whole)


def verify_full(target: Path) -> None:
    """The whole lists file against its recorded CRC (reads every byte: minutes for a large index)."""
    recorded = ListsCheck(**json.loads(check_path(target).read_text()))
    if lists_check(lists_path(target), full=True) != recorded:
        raise IndexFileError(f"on-disk lists {lists_path(target)} are damaged (full checksum mismatch)")


def _sampled_blocks(size: int) -> Iterator[tuple[int, int]]:
    yield 0, min(size, EDGE)
    stride = max(1, size // SAMPLE_BLOCKS)
    for n in range(SAMPLE_BLOCKS):
        yield min(size, n * stride), BLOCK
    yield max(0, size - EDGE), EDGE


def _full_crc(fh) -> int:
    fh.seek(0)
    crc = 0
    while chunk := fh.read(16 << 20):
        crc = zlib.crc32(chunk, crc)
    return crc

