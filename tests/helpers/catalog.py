"""A library's catalog as the tests look into it.

Reads go through the product's own read-only opening (`Catalog.open(path, writable=False)` and its read
connection), so a test sees what a reader of the library sees. `raw_sqlite` is the SQLite file itself, for the
few tests that change it behind the product's back on purpose (an older schema, moved paths, a damaged file),
and for watching a catalog another process is writing or was killed writing: that observer must never upgrade
or write the file, as opening it through the product could.
"""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CATALOG_FILE = "catalog.sqlite"


def catalog_path(where: Path | str) -> Path:
    """The catalog file of a library folder (or the catalog file itself)."""
    where = Path(where)
    return where if where.suffix == ".sqlite" else where / CATALOG_FILE


@contextmanager
def read_catalog(where: Path | str) -> Iterator:
    """One read transaction on the catalog, opened read-only as the product opens it."""
    from indexer.catalog.store import Catalog

    catalog = Catalog.open(catalog_path(where), writable=False)
    try:
        with catalog.read() as conn:
            yield conn
    finally:
        catalog.close()


def catalog_query(where: Path | str, sql: str, params: tuple = ()) -> list[tuple]:
    """The rows of one query on the catalog."""
    with read_catalog(where) as conn:
        return conn.exec_driver_sql(sql, params).fetchall()


def catalog_meta(where: Path | str) -> dict[str, str]:
    """The catalog's meta table."""
    return dict(catalog_query(where, "SELECT key, value FROM meta"))


@contextmanager
def raw_sqlite(where: Path | str, read_only: bool = False, timeout: float = 5.0) -> Iterator[sqlite3.Connection]:
    """The catalog's SQLite file itself, past the product. Writable: the block is one transaction, committed at
    its end (rolled back on an error). The connection is closed after: the last one folds the write-ahead log in."""
    path = catalog_path(where)
    if read_only:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
    else:
        conn = sqlite3.connect(path, timeout=timeout)
    try:
        if read_only:
            yield conn
        else:
            with conn:
                yield conn
    finally:
        conn.close()
