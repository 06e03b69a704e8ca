"""Catalog reads behind the search filters: ids matching an SQL condition, counts, subsets, newest first,
cameras by name, stored embeddings of an id set, and the great-circle distance registered for `--near`.

Filters arrive as an SQL condition over the `images` columns plus its parameters (searchengine/query/filters.py
builds them), so this module owns no query syntax of its own.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from indexer.catalog.reads import rows_in
from indexer.catalog.store import Catalog

EARTH_RADIUS_KM = 6371.0088  # mean radius
DISTANCE_FUNCTION = "se_distance_km"  # SQL function registered on readers: great-circle km between two points


def matching_ids(catalog: Catalog, where: str, params: tuple, limit: int | None = None) -> np.ndarray:
    """Ids of images satisfying `where`, at most `limit` of them (int64, in no particular order)."""
    # One joined string instead of a Python row per id: 10k ids in ~2.5 ms instead of 10-40 ms on a busy box.
    inner = f"SELECT id FROM images WHERE {where}" + (" LIMIT ?" if limit is not None else "")
    with catalog.read() as conn:
        text = _reader(conn).exec_driver_sql(f"SELECT group_concat(id) FROM ({inner})",
                                             params + ((limit,) if limit is not None else ())).scalar()
    return np.array(text.split(","), dtype=np.int64) if text else np.empty(0, np.int64)


def cameras_matching(catalog: Catalog, pattern: str) -> list[tuple[str | None, str | None]]:
    """(make, model) of the cameras whose make or model is LIKE `pattern` (escape character backslash)."""
    with catalog.read() as conn:
        rows = conn.exec_driver_sql("SELECT make, model FROM cameras WHERE make LIKE ? ESCAPE '\\' "
                                    "OR model LIKE ? ESCAPE '\\'", (pattern, pattern)).fetchall()
    return [(make or None, model or None) for make, model in rows]


def count_matching(catalog: Catalog, where: str, params: tuple, cap: int | None = None) -> int:
    """How many images satisfy `where` (counted inside SQLite: no row reaches Python); with `cap`, counting stops
    there (a filter matching half of a million images is not counted to the end: ~0.1 s a query at 1M)."""
    inner = f"SELECT 1 FROM images WHERE {where}" + (" LIMIT ?" if cap is not None else "")
    with catalog.read() as conn:
        return int(_reader(conn).exec_driver_sql(f"SELECT count(*) FROM ({inner})",
                                                 params + ((cap,) if cap is not None else ())).scalar())


def which_match(catalog: Catalog, ids: np.ndarray, where: str, params: tuple) -> np.ndarray:
    """The subset of `ids` satisfying `where` (any number of ids)."""
    if not len(ids):
        return np.empty(0, np.int64)
    with catalog.read() as conn:
        rows = list(rows_in(_reader(conn), "id", "id", [int(i) for i in ids], f" AND ({where})", params))
    return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))


def newest(catalog: Catalog, where: str, params: tuple, limit: int) -> list[int]:
    """Ids satisfying `where`, newest `taken_at` first (unknown dates last)."""
    with catalog.read() as conn:
        rows = _reader(conn).exec_driver_sql(
            f"SELECT id FROM images WHERE ({where}) AND taken_at IS NOT NULL ORDER BY taken_at DESC, id DESC LIMIT ?",
            (*params, limit)).fetchall()
        if len(rows) < limit:
            rows += conn.exec_driver_sql(
                f"SELECT id FROM images WHERE ({where}) AND taken_at IS NULL ORDER BY id DESC LIMIT ?",
                (*params, limit - len(rows))).fetchall()
    return [int(r[0]) for r in rows]


def distance_km(lat1: float | None, lon1: float | None, lat2: float, lon2: float) -> float | None:
    """Great-circle (haversine) distance in km; None when a position is unknown."""
    if lat1 is None or lon1 is None:
        return None
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _reader(conn: Any) -> Any:
    """The read connection, with the filters' SQL function registered (a stdlib sqlite3 call, microseconds)."""
    conn.conn.create_function(DISTANCE_FUNCTION, 4, distance_km, deterministic=True)
    return conn


def embeddings_for(catalog: Catalog, ids: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, float32 embeddings) of those of `ids` still in the catalog, read from one snapshot."""
    with catalog.read() as conn:
        rows = list(rows_in(conn, "id, embedding", "id", [int(i) for i in ids]))
    if not rows:
        return np.empty(0, np.int64), np.empty((0, dim), np.float32)
    found = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    return found, np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), dim)
