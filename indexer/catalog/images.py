"""One image as the catalog holds it (`ImageRecord`: every column but the embedding), read by id, by path or
by a list of ids; one image's embedding; the roots `index` was given (for `index` without PATH)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np

from indexer.catalog.metadata import METADATA_COLUMNS
from indexer.catalog.reads import rows_in
from indexer.catalog.store import Catalog
from indexer.images.metadata import ImageMetadata

_COLUMNS = ("id, path, folder, size, mtime_ns, content_hash, indexed_at, meta_version, " + ", ".join(METADATA_COLUMNS)
            + ", segment, start_s, end_s, frame_s, duration_s, fps, codec")
_META_END = 8 + len(METADATA_COLUMNS)
_ID_LIMIT = 2 ** 63  # ids no SQLite integer can hold are simply not there


@dataclass
class ImageRecord:
    """One indexed image as the catalog holds it (embedding aside); metadata fields are None when unknown."""

    id: int
    path: bytes
    folder: bytes
    size: int
    mtime_ns: int
    content_hash: bytes
    indexed_at: float
    metadata_read: bool  # False for rows indexed before metadata was stored, until the next index run
    metadata: ImageMetadata
    segment: int = 0  # a video's moment: its number, span and frame, and the video's facts (None for a photo)
    start_s: float | None = None
    end_s: float | None = None
    frame_s: float | None = None
    duration_s: float | None = None
    fps: float | None = None
    codec: str | None = None

    @property
    def kind(self) -> str:
        return "video" if self.start_s is not None else "image"


@dataclass
class IndexRoot:
    root: bytes
    exclude: list[str]


def _holdable(image_id: int) -> bool:
    # A comparison, not `in range(...)`: that is a linear scan for a numpy integer.
    return 0 <= int(image_id) < _ID_LIMIT


def _record(row: tuple) -> ImageRecord:
    return ImageRecord(int(row[0]), row[1], row[2], int(row[3]), int(row[4]), row[5], float(row[6]),
                       row[7] is not None, ImageMetadata(*row[8:_META_END]), int(row[_META_END]), *row[_META_END + 1:])


def record(catalog: Catalog, image_id: int | None = None, path: bytes | None = None) -> ImageRecord | None:
    """The record of one image, by id or by path (a video's by path: its first moment); None when there is none."""
    if image_id is not None and not _holdable(image_id):
        return None
    column, value = ("id", image_id) if image_id is not None else ("path", path)
    with catalog.read() as conn:
        row = conn.exec_driver_sql(f"SELECT {_COLUMNS} FROM images WHERE {column}=? ORDER BY segment LIMIT 1",
                                   (value,)).fetchone()
    return None if row is None else _record(row)


def records(catalog: Catalog, ids: list[int]) -> dict[int, ImageRecord]:
    """The records of those of `ids` still in the catalog, by id, from one snapshot."""
    wanted = [int(i) for i in ids if _holdable(i)]
    with catalog.read() as conn:
        return {r.id: r for r in map(_record, rows_in(conn, _COLUMNS, "id", wanted))}


def moments_of(catalog: Catalog, path: bytes) -> list[tuple[int, float, float, float]]:
    """(id, start_s, end_s, frame_s) of every moment of the video at `path`, in time order."""
    with catalog.read() as conn:
        return [(int(i), a, b, f) for i, a, b, f in conn.exec_driver_sql(
            "SELECT id, start_s, end_s, frame_s FROM images WHERE path=? AND start_s IS NOT NULL ORDER BY segment",
            (path,))]


def metadata_for(catalog: Catalog, ids: list[int]) -> dict[int, ImageMetadata]:
    """Metadata of the given ids, by id (what search hits carry: the metadata columns only)."""
    with catalog.read() as conn:
        return {int(r[0]): ImageMetadata(*r[1:])
                for r in rows_in(conn, "id, " + ", ".join(METADATA_COLUMNS), "id", [int(i) for i in ids])}


def embedding_of(catalog: Catalog, image_id: int) -> np.ndarray | None:
    if not _holdable(image_id):
        return None
    with catalog.read() as conn:
        row = conn.exec_driver_sql("SELECT embedding FROM images WHERE id=?", (image_id,)).fetchone()
    return np.frombuffer(row[0], dtype=np.float32).copy() if row else None


def index_roots(catalog: Catalog) -> list[IndexRoot]:
    """The roots `index` was given, oldest first (empty for a catalog that has not recorded any yet)."""
    with catalog.read() as conn:
        has = conn.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='index_roots'").fetchone()
        if not has:
            return []
        rows = conn.exec_driver_sql("SELECT root, exclude FROM index_roots ORDER BY indexed_at, root").fetchall()
    return [IndexRoot(bytes(r), list(json.loads(e))) for r, e in rows]


def remember_roots(catalog: Catalog, roots: list[bytes], exclude: list[str]) -> None:
    """Record (or refresh) the roots of a finished index run with its excludes."""
    now = time.time()
    with catalog.write() as conn:
        if not conn.exec_driver_sql(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='index_roots'").fetchone():
            return  # a catalog opened without the migration (tests simulating older code)
        for root in roots:
            conn.exec_driver_sql(
                "INSERT INTO index_roots (root, exclude, indexed_at) VALUES (?,?,?) "
                "ON CONFLICT(root) DO UPDATE SET exclude=excluded.exclude",
                (root, json.dumps(list(exclude)), now))
