"""Catalog reads for export and import: every image in chunks, which paths are held, which rows came without a file.

A row imported without a file on this machine is recorded with size 0 and mtime 0: searches list it although
its path does not exist here, and an index run that finds the file there later sees it as changed.
"""
from __future__ import annotations

from typing import Iterator, Sequence

from indexer.catalog.reads import rows_in
from indexer.catalog.store import Catalog
from indexer.catalog.texts import FRAME_MS

CORE_COLUMNS = ("id", "path", "folder", "size", "mtime_ns", "content_hash", "embedding", "seq", "indexed_at")
EXPORTED = ("path", "size", "mtime_ns", "content_hash", "embedding")


def column_types(catalog: Catalog) -> dict[str, str]:
    """Every column of `images` with its declared SQL type (upper case, "" when none)."""
    with catalog.read() as conn:
        return {row[1]: (row[2] or "").upper() for row in conn.exec_driver_sql("PRAGMA table_info(images)")}


def extra_columns(catalog: Catalog) -> list[str]:
    """Columns of `images` beyond the core ones (metadata added by later schema steps), exported as they are."""
    return [n for n in column_types(catalog) if n not in CORE_COLUMNS]


# The lines read in the row's picture (JSON, see indexer/ocr/lines.py), NULL where not read.
TEXT_LINES = ("(SELECT lines FROM texts WHERE texts.content_hash = images.content_hash "
              f"AND texts.frame_ms = {FRAME_MS} AND texts.error IS NULL)")


def rows_for_export(catalog: Catalog, columns: Sequence[str], chunk: int,
                    computed: Sequence[str] = ()) -> Iterator[list[tuple]]:
    """Every image row (the given columns, then the `computed` SQL expressions), `chunk` rows at a time, in id
    order, from one snapshot."""
    quoted = ", ".join([f'"{c}"' for c in columns] + list(computed))
    with catalog.read() as conn:
        result = conn.exec_driver_sql(f"SELECT {quoted} FROM images ORDER BY id")
        while rows := result.fetchmany(chunk):
            yield rows


def held_paths(catalog: Catalog, paths: Sequence[bytes]) -> set[bytes]:
    """Which of `paths` the catalog holds now."""
    with catalog.read() as conn:
        return {r[0] for r in rows_in(conn, "path", "path", list(paths))}


def imported_without_file(catalog: Catalog, ids: Sequence[int]) -> set[int]:
    """Which of `ids` were imported without a file on this machine (recorded with size 0 and mtime 0)."""
    with catalog.read() as conn:
        return {r[0] for r in rows_in(conn, "id", "id", list(ids), " AND size=0 AND mtime_ns=0")}
