"""Catalog reads and writes for the web app and `index` without PATH: image records by id, remembered roots."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from indexer.catalog import Catalog

# Columns that are plumbing, not something to show about an image.
_HIDDEN = {"embedding", "folder", "seq", "path", "content_hash"}


@dataclass
class ImageRow:
    """One indexed image as the catalog holds it; `extra` has whatever other columns the schema has (metadata)."""

    id: int
    path: bytes
    size: int
    mtime_ns: int
    content_hash: bytes
    indexed_at: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class IndexRoot:
    root: bytes
    exclude: list[str]


def image_row(catalog: Catalog, image_id: int) -> ImageRow | None:
    """The image with this id, or None (also for ids no SQLite integer can hold)."""
    if not 0 <= image_id < 2 ** 63:
        return None
    with catalog.read() as conn:
        cursor = conn.exec_driver_sql("SELECT * FROM images WHERE id=?", (image_id,))
        row = cursor.fetchone()
        names = [d[0] for d in cursor.description]
    if row is None:
        return None
    return _row(dict(zip(names, row)))


def image_rows(catalog: Catalog, ids: list[int]) -> dict[int, ImageRow]:
    """The rows of the given ids still in the catalog, in one query (embeddings left out)."""
    wanted = [i for i in ids if 0 <= i < 2 ** 63]
    if not wanted:
        return {}
    with catalog.read() as conn:
        names = [r[1] for r in conn.exec_driver_sql("PRAGMA table_info(images)") if r[1] != "embedding"]
        cursor = conn.exec_driver_sql(f"SELECT {', '.join(names)} FROM images WHERE id IN "
                                      f"({','.join('?' * len(wanted))})", tuple(wanted))
        rows = cursor.fetchall()
    return {int(r[0]): _row(dict(zip(names, r))) for r in rows}


def _row(values: dict[str, Any]) -> ImageRow:
    extra = {k: v for k, v in values.items() if k not in _HIDDEN and k not in ImageRow.__dataclass_fields__}
    return ImageRow(int(values["id"]), values["path"], int(values["size"]), int(values["mtime_ns"]),
                    values["content_hash"], float(values["indexed_at"]), extra)


def embedding_of(catalog: Catalog, image_id: int) -> np.ndarray | None:
    if not 0 <= image_id < 2 ** 63:
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
