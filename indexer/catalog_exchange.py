"""Catalog reads and writes for export and import: every image in chunks, and which paths are already held."""
from __future__ import annotations

from typing import Iterator, Sequence

from indexer.catalog import Catalog

CORE_COLUMNS = ("id", "path", "folder", "size", "mtime_ns", "content_hash", "embedding", "seq", "indexed_at")
EXPORTED = ("path", "size", "mtime_ns", "content_hash", "embedding")


def extra_columns(catalog: Catalog) -> list[str]:
    """Columns of `images` beyond the core ones (metadata added by later schema steps), exported as they are."""
    with catalog.read() as conn:
        names = [row[1] for row in conn.exec_driver_sql("PRAGMA table_info(images)")]
    return [n for n in names if n not in CORE_COLUMNS]


def image_rows(catalog: Catalog, columns: Sequence[str], chunk: int) -> Iterator[list[tuple]]:
    """Every image row (the given columns), `chunk` rows at a time, in id order, from one snapshot."""
    quoted = ", ".join(f'"{c}"' for c in columns)
    with catalog.read() as conn:
        result = conn.exec_driver_sql(f"SELECT {quoted} FROM images ORDER BY id")
        while rows := result.fetchmany(chunk):
            yield rows


def held_paths(catalog: Catalog, paths: Sequence[bytes]) -> set[bytes]:
    """Which of `paths` the catalog holds now."""
    found: set[bytes] = set()
    with catalog.read() as conn:
        for start in range(0, len(paths), 500):
            part = list(paths[start:start + 500])
            marks = ",".join("?" * len(part))
            found.update(r[0] for r in conn.exec_driver_sql(f"SELECT path FROM images WHERE path IN ({marks})",
                                                            tuple(part)))
    return found
