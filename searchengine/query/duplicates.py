"""Near-duplicate groups: identical files (same content hash) and near-identical embeddings (cosine >= threshold).

Pairs come from the vector index's range search, run over every stored embedding in chunks of queries (memory
stays bounded by one chunk's results), never from all pairs in Python; a union-find turns pairs into groups.
On the approximate (IVF-SQ8) index a few cells are probed and candidates within ANN_MARGIN of the threshold are
re-scored exactly from the catalog's float32 embeddings, so the threshold means the same on every index kind.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from indexer.catalog.bulk import embeddings_by_chunks, same_content_groups, video_of_segments
from indexer.catalog.images import ImageRecord, records
from indexer.catalog.store import Catalog
from indexer.errors import QueryError

# Planted copies (50% resize, JPEG quality 60, 2% crop) of real photos scored >= 0.9937 with their original on
# the tiny test model (synthetic photos: >= 0.977), so 0.95 keeps every one of them. Whether it also keeps
# distinct photos apart depends on the model: check a trained model's value with --threshold on known photos.
DEFAULT_THRESHOLD = 0.95
QUERY_CHUNK = 2048
ANN_NPROBE = 2  # a near-copy sits next to its original, nearly always in the same cell (bench: recall 1.0)
ANN_MARGIN = 0.02  # 8-bit codes score within ~0.01 of exact on unit vectors


@dataclass
class DuplicateImage:
    """One file of a group (a video once, by one of its moments)."""

    id: int
    path: str
    size: int
    width: int | None
    height: int | None
    taken_at: str | None
    modified: str
    kind: str = "image"


@dataclass
class DuplicateGroup:
    """Images that are copies of each other; the largest (pixels, then bytes) first."""

    images: list[DuplicateImage]
    identical: bool  # every file has the same content
    similarity: float  # the lowest cosine similarity among the pairs that linked the group


class _Groups:
    """Union-find over image ids, remembering each group's lowest link score."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.lowest: dict[int, float] = {}

    def find(self, x: int) -> int:
        root = x
        while self.parent.setdefault(root, root) != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int, score: float) -> None:
        ra, rb = self.find(a), self.find(b)
        low = min(self.lowest.get(ra, 1.0), self.lowest.get(rb, 1.0), score)
        if ra != rb:
            self.parent[rb] = ra
            self.lowest.pop(rb, None)
        self.lowest[ra] = low

    def members(self) -> list[tuple[list[int], float]]:
        out: dict[int, list[int]] = {}
        for x in list(self.parent):
            out.setdefault(self.find(x), []).append(x)
        return [(ids, self.lowest.get(root, 1.0)) for root, ids in out.items() if len(ids) > 1]


class _VideoKeys:
    """A video takes part in the groups as one file: each of its moments stands for its first moment's id."""

    def __init__(self, video_of: dict[int, bytes]):
        first: dict[bytes, int] = {}
        for image_id, path in sorted(video_of.items()):
            first.setdefault(path, image_id)
        self._key = {image_id: first[path] for image_id, path in video_of.items()}

    def key(self, image_id: int) -> int:
        return self._key.get(image_id, image_id)


def find_duplicates(catalog: Catalog, index, threshold: float = DEFAULT_THRESHOLD) -> list[DuplicateGroup]:
    """Groups of copies in the library, most images first; `index` is the library's current VectorIndex."""
    if not 0 < threshold <= 1:
        raise QueryError(f"--threshold must be in (0, 1], not {threshold}")
    dim = int(catalog.meta()["dim"])
    groups = _Groups()
    video = _VideoKeys(video_of_segments(catalog))
    for ids in same_content_groups(catalog):
        for other in ids[1:]:
            groups.union(video.key(ids[0]), video.key(other), 1.0)
    exact = index.kind == "flat"
    for ids, vectors in embeddings_by_chunks(catalog, dim, QUERY_CHUNK):
        lims, scores, found = index.range_search(vectors, threshold if exact else threshold - ANN_MARGIN,
                                                 None if exact else ANN_NPROBE)
        rows = np.repeat(np.arange(len(ids)), np.diff(lims))
        keep = ids[rows] != found
        rows, found, scores = rows[keep], found[keep], scores[keep]
        if not exact and len(rows):
            scores = _exact_scores(catalog, vectors, rows, found, dim)
            keep = scores >= threshold
            rows, found, scores = rows[keep], found[keep], scores[keep]
        for a, b, score in zip(ids[rows].tolist(), found.tolist(), scores.tolist()):
            a, b = video.key(a), video.key(b)
            if a != b:  # two moments of one video are alike, not copies
                groups.union(a, b, min(score, 1.0))
    return _described(catalog, groups.members())


def _exact_scores(catalog: Catalog, queries: np.ndarray, rows: np.ndarray, found: np.ndarray, dim: int) -> np.ndarray:
    unique, inverse = np.unique(found, return_inverse=True)
    stored = catalog.vectors_for(unique, dim)
    return np.einsum("nd,nd->n", queries[rows], stored[inverse])


def _described(catalog: Catalog, members: list[tuple[list[int], float]]) -> list[DuplicateGroup]:
    found = records(catalog, [i for ids, _ in members for i in ids])
    out = []
    for ids, lowest in members:
        present = list({found[i].path: found[i] for i in sorted(ids, reverse=True) if i in found}.values())
        if len(present) < 2:  # removed meanwhile, or moments of a single video
            continue  # removed meanwhile
        present.sort(key=lambda r: (-(r.metadata.width or 0) * (r.metadata.height or 0), -r.size, r.path))
        identical = len({r.content_hash for r in present}) == 1
        out.append(DuplicateGroup([_image(r) for r in present], identical, 1.0 if identical else lowest))
    out.sort(key=lambda g: (-len(g.images), -sum(i.size for i in g.images), g.images[0].path))
    return out


def _image(record: ImageRecord) -> DuplicateImage:
    meta = record.metadata
    taken = meta.taken_at_local or (_iso(meta.taken_at) if meta.taken_at is not None else None)
    return DuplicateImage(record.id, os.fsdecode(record.path), record.size, meta.width, meta.height, taken,
                          _iso(record.mtime_ns / 1e9), record.kind)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
