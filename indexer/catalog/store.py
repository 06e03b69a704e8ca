"""The SQLite catalog (SQLAlchemy Core): the library's source of truth, embeddings included.

Every write transaction bumps `meta.seq` and stamps the rows it touches with it, so a derived vector index
saved at some seq can be caught up from `images.seq` and `removed.seq`.
"""
from __future__ import annotations

import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

from indexer.catalog.migrations import MIGRATIONS
from indexer.catalog.reads import CatalogReads
from indexer.catalog.records import BatchWrite, Changes, FailedFile, KnownFile, StoredImage, folder_of
from indexer.catalog.writes import CatalogWrites
from indexer.durable import fsync_dir
from indexer.errors import CatalogError

# The records live in catalog_records; callers import them from here, with the Catalog that reads and writes them.
__all__ = ["BatchWrite", "Catalog", "Changes", "FailedFile", "KnownFile", "StoredImage", "folder_of"]

SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 60


def check_sqlite_file(path: Path) -> None:
    """Refuse a file that is not SQLite before SQLite (or we) write anything into it."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise CatalogError(f"cannot read catalog {path}: {exc.strerror}") from None
    if not head:
        # SQLite would take it for a new database, but a catalog is never empty once made: this one is damaged
        raise CatalogError(f"catalog {path} is an empty file, not a catalog (left untouched)")
    if head != SQLITE_MAGIC:
        raise CatalogError(f"catalog {path} is not a SQLite database (left untouched)")


def _side_files(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")

def _applied_migrations(path: Path) -> list[str]:
    """Read migration names through a read-only connection, so an unusable catalog is never modified."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    try:
        has_table = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='migrations'").fetchone()
        return [r[0] for r in conn.execute("SELECT name FROM migrations ORDER BY rowid")] if has_table else []
    except sqlite3.DatabaseError as exc:
        raise CatalogError(f"catalog {path} cannot be read: {exc} (left untouched)") from None
    finally:
        conn.close()


def _check_schema(path: Path, applied: list[str]) -> None:
    known = [name for name, _ in MIGRATIONS]
    unknown = [name for name in applied if name not in known]
    if unknown:
        raise CatalogError(
            f"catalog {path} was written by a newer searchengine (unknown schema steps: {', '.join(unknown)}); "
            "upgrade searchengine (left untouched)")


class _Cursor(sqlite3.Cursor):
    def scalar(self) -> Any:
        row = self.fetchone()
        return row[0] if row else None


class _ReadConnection:
    """A read-only stdlib connection with the slice of SQLAlchemy's Connection API that reads use.

    Reads skip SQLAlchemy because importing it costs ~0.2 s, a third of a cold query's budget.
    """

    def __init__(self, path: Path):
        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S,
                                    isolation_level=None, check_same_thread=False)

    def exec_driver_sql(self, sql: str, params: tuple = ()) -> _Cursor:
        return self.conn.cursor(factory=_Cursor).execute(sql, params)

    def close(self) -> None:
        self.conn.close()


def _make_engine(path: Path, writable: bool, create: bool = False) -> "Engine":
    from sqlalchemy import create_engine, event

    mode = "rwc" if create else "rw" if writable else "ro"
    engine = create_engine(
        f"sqlite+pysqlite:///file:{path}?mode={mode}&uri=true",
        connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        if writable:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA synchronous=NORMAL")
        dbapi_conn.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: "Connection") -> None:
        # IMMEDIATE takes the write lock up front: no deadlock-prone upgrade from a read lock mid-transaction.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writable else "BEGIN")

    return engine


class Catalog(CatalogReads, CatalogWrites):
    """Open with `Catalog.open`; all reads see one committed state, all writes are whole transactions."""

    def __init__(self, path: Path, writable: bool, create: bool = False):
        self.path = path
        self.writable = writable
        self._create = create
        self._engine: "Engine | None" = None
        self._reader: _ReadConnection | None = None

    @property
    def engine(self) -> "Engine":
        """The SQLAlchemy engine that carries migrations and write transactions (created on first write)."""
        if self._engine is None:
            self._engine = _make_engine(self.path, self.writable, self._create)
        return self._engine

    @classmethod
    def open(cls, path: Path, writable: bool, create: bool = False) -> "Catalog":
        path = Path(path)
        exists = path.exists()
        if not exists and not create:
            raise CatalogError(f"no catalog at {path}")
        applied: list[str] = []
        if exists:
            check_sqlite_file(path)
            if writable and not os.stat(path).st_mode & 0o222:
                raise CatalogError(f"catalog {path} is read-only (left untouched)")
            applied = _applied_migrations(path)
            _check_schema(path, applied)
        catalog = cls(path, writable or create, create and not exists)
        try:
            catalog._migrate(writable or create, set(applied))
        except CatalogError:
            catalog.close()
            raise
        return catalog

    @classmethod
    def create(cls, path: Path, meta: dict[str, str]) -> "Catalog":
        """A new catalog holding `meta`, built aside and renamed into place: a crash leaves all of it or none.

        The caller holds the writer lock and has seen that `path` does not exist.
        """
        path = Path(path)
        aside = path.with_name(f".{path.name}.new")
        for leftover in (aside, *_side_files(aside)):
            leftover.unlink(missing_ok=True)  # from a run that died while creating
        catalog = cls.open(aside, writable=True, create=True)
        try:
            catalog.set_meta(meta)
        finally:
            catalog.close()  # the last connection: SQLite folds the -wal file in and removes it
        if any(side.exists() for side in _side_files(aside)):
            raise CatalogError(f"cannot create catalog {path}: SQLite kept its write-ahead log")
        if path.exists():
            raise CatalogError(f"catalog {path} already exists (left untouched)")
        os.replace(aside, path)
        fsync_dir(path.parent)
        return cls.open(path, writable=True)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _migrate(self, writable: bool, applied: set[str]) -> None:
        """Apply the steps not in `applied` (read by `open` through its read-only check)."""
        pending = [(n, m) for n, m in MIGRATIONS if n not in applied]
        if pending and not writable:
            if not os.stat(self.path).st_mode & 0o222:
                raise CatalogError(f"catalog {self.path} needs an upgrade but is read-only (left untouched)")
            Catalog.open(self.path, writable=True).close()  # a reader upgrades too: each step is one transaction
            return
        for name, migrate in pending:
            with self.write() as conn:
                conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at REAL)")
                if conn.exec_driver_sql("SELECT 1 FROM migrations WHERE name=?", (name,)).fetchone():
                    continue  # another process applied it while we waited for the lock
                migrate(conn)
                conn.exec_driver_sql("INSERT INTO migrations VALUES (?, ?)", (name, time.time()))

    @contextmanager
    def write(self) -> Iterator["Connection"]:
        """One write transaction; a SQLite failure (disk full, I/O error) rolls it back and becomes a CatalogError."""
        from sqlalchemy.exc import DBAPIError

        try:
            with self.engine.begin() as conn:
                yield conn
        except DBAPIError as exc:
            raise CatalogError(f"cannot write catalog {self.path}: {exc.orig} (the last batch was rolled back)") from None

    @contextmanager
    def read(self) -> Iterator[_ReadConnection]:
        """One read transaction: a consistent snapshot even while a writer commits."""
        try:
            if self._reader is None:
                self._reader = _ReadConnection(self.path)
            reader = self._reader
            reader.conn.execute("BEGIN")
            try:
                yield reader
            finally:
                reader.conn.execute("ROLLBACK")
        except sqlite3.DatabaseError as exc:
            raise CatalogError(f"cannot read catalog {self.path}: {exc}") from None

    # --- meta -------------------------------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        with self.read() as conn:
            return dict(conn.exec_driver_sql("SELECT key, value FROM meta").fetchall())

    def set_meta(self, values: dict[str, str]) -> None:
        with self.write() as conn:
            for key, value in values.items():
                conn.exec_driver_sql("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))
