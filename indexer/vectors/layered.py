"""The on-disk vector index kind: an immutable on-disk IVF-SQ8 base plus the changes since it was built.

The base's lists file is mapped by every reader, so it is never modified: a writer changing it in place would
tear lists under a reader's feet and could not survive a SIGKILL. Rows added or changed after the build go to an
in-memory IVF-SQ8 delta over the base's own trained cells; ids removed from the base are filtered out of its
results. The delta and the removed ids are small (the writer rebuilds the base once they grow past a share of
it) and are saved in the index file itself, under its checksum; the base is referred to by name.
"""
from __future__ import annotations

import json
import struct
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from indexer.errors import IndexFileError

if TYPE_CHECKING:
    from indexer.catalog.store import Catalog
from indexer.vectors.ondisk_ivf import build_ondisk, empty_path, open_ondisk, side_files

BASE_PREFIX = "ondisk-"


class LayeredIndex:
    """The slice of faiss.Index that VectorIndex uses, over an on-disk base and an in-memory delta."""

    metric_type = faiss.METRIC_INNER_PRODUCT

    def __init__(self, base_path: Path, base: "faiss.Index", base_ids: np.ndarray, delta: "faiss.Index",
                 removed: np.ndarray):
        self.base_path = base_path
        self.base = base
        self.base_ids = base_ids  # sorted ids held by the base
        self.delta = delta
        self.removed = removed  # sorted ids of the base that are no longer current
        self.d = base.d

    @property
    def ntotal(self) -> int:
        return int(self.base.ntotal) - len(self.removed) + int(self.delta.ntotal)

    @property
    def nlist(self) -> int:
        return int(faiss.extract_index_ivf(self.base).nlist)

    @property
    def nprobe(self) -> int:
        return int(faiss.extract_index_ivf(self.base).nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        faiss.extract_index_ivf(self.base).nprobe = value
        self.delta.nprobe = value

    @property
    def changed_share(self) -> float:
        """Rows in the delta or removed from the base, as a share of the base."""
        return (len(self.removed) + int(self.delta.ntotal)) / max(int(self.base.ntotal), 1)

    def add_with_ids(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self.delta.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> int:
        """Remove ids from the delta and mask them in the base; returns how many current vectors went."""
        gone = int(self.delta.remove_ids(faiss.IDSelectorBatch(ids)))
        in_base = ids[_contains(self.base_ids, ids)]
        fresh = np.setdiff1d(in_base, self.removed)
        self.removed = np.union1d(self.removed, fresh).astype(np.int64)
        return gone + len(fresh)

    def search(self, queries: np.ndarray, k: int, params: "faiss.SearchParameters | None" = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Base (less removed ids) and delta results merged; `params` may carry nprobe and an id selector."""
        base_params, keep = self._base_params(params)  # noqa: F841 (keep: selectors alive during the call)
        scores, ids = self.base.search(queries, k, params=base_params)
        if self.delta.ntotal:
            more_scores, more_ids = self.delta.search(queries, k, params=params)
            scores, ids = np.concatenate([scores, more_scores], 1), np.concatenate([ids, more_ids], 1)
            scores[ids < 0] = -np.inf
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            scores, ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
        return scores, ids

    def range_search(self, queries: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """faiss's (lims, scores, ids) over base (less removed ids) and delta."""
        base_params, keep = self._base_params(None)  # noqa: F841
        parts = [self.base.range_search(queries, min_score, params=base_params)]
        if self.delta.ntotal:
            parts.append(self.delta.range_search(queries, min_score))
        lims, scores, ids = [0], [], []
        for q in range(len(queries)):
            for part_lims, part_scores, part_ids in parts:
                scores.append(part_scores[part_lims[q]:part_lims[q + 1]])
                ids.append(part_ids[part_lims[q]:part_lims[q + 1]])
            lims.append(lims[-1] + sum(len(x) for x in ids[len(ids) - len(parts):]))
        return (np.asarray(lims, np.int64), np.concatenate(scores) if scores else np.empty(0, np.float32),
                np.concatenate(ids) if ids else np.empty(0, np.int64))

    def _base_params(self, params: "faiss.SearchParameters | None") -> tuple["faiss.SearchParametersIVF", list]:
        """Search parameters for the base: the caller's nprobe and selector, and the removed ids left out."""
        base = faiss.SearchParametersIVF()
        base.nprobe = getattr(params, "nprobe", 0) or self.nprobe
        keep: list = []
        wanted = getattr(params, "sel", None) if params is not None else None
        if len(self.removed):
            keep.append(faiss.IDSelectorBatch(self.removed))
            keep.append(faiss.IDSelectorNot(keep[-1]))
            selector = keep[-1] if wanted is None else faiss.IDSelectorAnd(wanted, keep[-1])
            keep.append(selector)
            base.sel = selector
        elif wanted is not None:
            base.sel = wanted
        return base, keep

    def serialize(self) -> bytes:
        """The base's name, the removed ids and the delta: what the index file holds for this kind."""
        head = json.dumps({"base": self.base_path.name, "nprobe": self.nprobe}).encode()
        delta = faiss.serialize_index(self.delta).tobytes()
        return b"".join([struct.pack("<QQQ", len(head), len(self.removed), len(delta)), head,
                         self.removed.astype("<i8").tobytes(), delta])

    @classmethod
    def deserialize(cls, payload: bytes | memoryview, folder: Path) -> "LayeredIndex":
        view = memoryview(payload)
        head_len, removed_len, delta_len = struct.unpack_from("<QQQ", view)
        at = 24
        head = json.loads(bytes(view[at:at + head_len]))
        at += head_len
        removed = np.frombuffer(view[at:at + 8 * removed_len], "<i8").astype(np.int64)
        at += 8 * removed_len
        delta = faiss.deserialize_index(np.frombuffer(view[at:at + delta_len], np.uint8))
        index = _open_base(folder / head["base"], delta, removed)
        index.nprobe = int(head["nprobe"])
        return index


def snapshot_to_file(catalog: "Catalog", dim: int, path: Path, chunk: int = 20_000
                     ) -> tuple[int, np.ndarray, np.ndarray]:
    """(seq, ids, vectors mapped from `path`) of every image, read from one snapshot a chunk at a time."""
    with catalog.embeddings_snapshot(dim, chunk) as (seq, count, chunks):
        vectors = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(count, dim))
        ids = np.empty(count, np.int64)
        done = 0
        for chunk_ids, chunk_vectors in chunks:
            ids[done:done + len(chunk_ids)] = chunk_ids
            vectors[done:done + len(chunk_ids)] = chunk_vectors
            done += len(chunk_ids)
    vectors.flush()
    return seq, ids[:done], np.load(path, mmap_mode="r")[:done]


def build_layered(vectors: np.ndarray, ids: np.ndarray, folder: Path) -> LayeredIndex:
    """A new base under a fresh name in `folder` (readers of an older one keep theirs), with an empty delta."""
    target = folder / f"{BASE_PREFIX}{uuid.uuid4().hex[:12]}.ivf"
    try:
        build_ondisk(vectors, ids, target)
        np.save(_ids_path(target), np.sort(np.asarray(ids, np.int64)))
    except BaseException:
        remove_base(target)
        raise
    return _open_base(target, faiss.read_index(str(empty_path(target))), np.empty(0, np.int64))


def _open_base(target: Path, delta: "faiss.Index", removed: np.ndarray) -> LayeredIndex:
    base = open_ondisk(target)
    try:
        base_ids = np.load(_ids_path(target), mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise IndexFileError(f"on-disk index {target} has no readable id list ({exc})") from None
    if len(base_ids) != base.ntotal:
        raise IndexFileError(f"on-disk index {target} holds {base.ntotal} vectors, its id list {len(base_ids)}")
    return LayeredIndex(target, base, base_ids, delta, removed)


def _ids_path(target: Path) -> Path:
    return target.with_name(target.name + ".ids.npy")


def _contains(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    if not len(sorted_ids):
        return np.zeros(len(ids), bool)
    at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return np.asarray(sorted_ids[at]) == ids


def remove_base(target: Path) -> None:
    for path in [*side_files(target), _ids_path(target)]:
        path.unlink(missing_ok=True)


def remove_other_bases(folder: Path, keep: str | None) -> None:
    """Delete bases no longer referred to (a reader that has one mapped keeps reading it: unlinking is safe)."""
    for target in folder.glob(f"{BASE_PREFIX}*.ivf"):
        if target.name != keep:
            remove_base(target)
