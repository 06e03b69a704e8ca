"""The SQLite catalog (SQLAlchemy Core): the library's source of truth, embeddings included.

Every write transaction bumps `meta.seq` and stamps the rows it touches with it, so a derived vector index
saved at some seq can be caught up from `images.seq` and `removed.seq`.
"""
from __future__ import annotations

import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

from indexer.catalog_metadata import write_metadata
from indexer.catalog_moves import MOVED, Claim, Reusable, find_reusable, forget_vanished, stash_removed, take_claim
from indexer.durable import fsync_dir
from indexer.errors import CatalogError
from indexer.metadata import ImageMetadata
from indexer.migrations import MIGRATIONS

SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 60
# SQLite allows 32,766 host parameters per statement; id lists are sent in chunks well below that.
IDS_PER_QUERY = 900


@dataclass
class KnownFile:
    id: int
    size: int
    mtime_ns: int


@dataclass
class StoredImage:
    """One image to insert or update: a new path, or a changed one (existing_id set)."""

    path: bytes
    size: int
    mtime_ns: int
    content_hash: bytes
    embedding: np.ndarray
    existing_id: int | None = None
    claim: Claim | None = None  # the entry of a moved file this path takes over
    metadata: ImageMetadata | None = None  # None: left for the next index run's header-only pass


@dataclass
class FailedFile:
    path: bytes
    size: int
    mtime_ns: int
    reason: str


@dataclass
class BatchWrite:
    """Everything one transaction applies: the unit that survives or vanishes whole in a crash."""

    stored: list[StoredImage] = field(default_factory=list)
    failed: list[FailedFile] = field(default_factory=list)
    removed_ids: list[int] = field(default_factory=list)
    removed_failures: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.stored) + len(self.failed) + len(self.removed_ids) + len(self.removed_failures)


@dataclass
class Changes:
    """What a vector index at some older seq needs to reflect `seq`: `total` is the catalog's image count then."""

    seq: int
    removed_ids: np.ndarray
    ids: np.ndarray
    vectors: np.ndarray
    total: int


def folder_of(path: bytes) -> bytes:
    return os.path.dirname(path)


def _rows_for_ids(conn: Any, columns: str, ids: list[int]) -> Iterator[tuple]:
    """`columns` of the images with these ids, a chunk of ids per statement (any number of ids)."""
    for start in range(0, len(ids), IDS_PER_QUERY):
        chunk = tuple(ids[start:start + IDS_PER_QUERY])
        marks = ",".join("?" * len(chunk))
        yield from conn.exec_driver_sql(f"SELECT {columns} FROM images WHERE id IN ({marks})", chunk)


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


class Catalog:
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

    # --- what the scanner compares against ----------------------------------------------------------------------
    def folder_state(self, folder: bytes) -> tuple[dict[bytes, KnownFile], dict[bytes, KnownFile]]:
        """Indexed and failed files directly in `folder`, by path."""
        with self.read() as conn:
            images = conn.exec_driver_sql("SELECT path, id, size, mtime_ns FROM images WHERE folder=?", (folder,))
            known = {p: KnownFile(i, s, m) for p, i, s, m in images}
            failures = conn.exec_driver_sql("SELECT path, size, mtime_ns FROM failures WHERE folder=?", (folder,))
            failed = {p: KnownFile(0, s, m) for p, s, m in failures}
        return known, failed

    def folders_under(self, root: bytes) -> set[bytes]:
        """Folders holding indexed or failed files at or below `root`."""
        low, high = root.rstrip(b"/") + b"/", root.rstrip(b"/") + b"0"  # b"0" follows b"/" in byte order
        with self.read() as conn:
            rows = conn.exec_driver_sql(
                "SELECT DISTINCT folder FROM images WHERE folder=? OR (folder>=? AND folder<?) "
                "UNION SELECT DISTINCT folder FROM failures WHERE folder=? OR (folder>=? AND folder<?)",
                (root, low, high, root, low, high))
            return {r[0] for r in rows}

    def reusable(self, content_hash: bytes) -> Reusable | None:
        """A stored embedding for this content, with the entry a moved file takes over (catalog_moves)."""
        with self.read() as conn:
            return find_reusable(conn, content_hash)

    def forget_vanished(self) -> None:
        """End of a complete run: removed entries that no moved file claimed are dropped for good."""
        with self.write() as conn:
            forget_vanished(conn)

    # --- writes ---------------------------------------------------------------------------------------------
    def apply(self, batch: BatchWrite) -> int:
        """Apply one batch atomically; returns its seq."""
        with self.write() as conn:
            seq = int(conn.exec_driver_sql("SELECT value FROM meta WHERE key='seq'").scalar()) + 1
            conn.exec_driver_sql("UPDATE meta SET value=? WHERE key='seq'", (str(seq),))
            now = time.time()
            delta = 0
            for item in batch.stored:
                delta += self._store(conn, item, seq, now)
            for failed in batch.failed:
                conn.exec_driver_sql(
                    "INSERT OR REPLACE INTO failures (path, folder, size, mtime_ns, reason) VALUES (?,?,?,?,?)",
                    (failed.path, folder_of(failed.path), failed.size, failed.mtime_ns, failed.reason))
                delta -= self._remove_path(conn, failed.path, seq)
            stash_removed(conn, batch.removed_ids)
            for image_id in batch.removed_ids:
                delta -= conn.exec_driver_sql("DELETE FROM images WHERE id=?", (image_id,)).rowcount
                conn.exec_driver_sql("INSERT OR REPLACE INTO removed (id, seq) VALUES (?, ?)", (image_id, seq))
            for path in batch.removed_failures:
                conn.exec_driver_sql("DELETE FROM failures WHERE path=?", (path,))
            conn.exec_driver_sql("UPDATE meta SET value=value+? WHERE key='image_count'", (delta,))
        return seq

    @staticmethod
    def _store(conn: "Connection", item: StoredImage, seq: int, now: float) -> int:
        """Insert or update; returns the change in the image count."""
        new = conn.exec_driver_sql("SELECT 1 FROM images WHERE path=?", (item.path,)).fetchone() is None
        reuse_id = take_claim(conn, item.claim) if new else None
        blob = np.ascontiguousarray(item.embedding, dtype=np.float32).tobytes()
        conn.exec_driver_sql(
            "INSERT INTO images (id, path, folder, size, mtime_ns, content_hash, embedding, seq, indexed_at) "
            "VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(path) DO UPDATE SET size=excluded.size, "
            "mtime_ns=excluded.mtime_ns, content_hash=excluded.content_hash, embedding=excluded.embedding, "
            "seq=excluded.seq, indexed_at=excluded.indexed_at",
            (reuse_id, item.path, folder_of(item.path), item.size, item.mtime_ns, item.content_hash, blob, seq, now))
        write_metadata(conn, item.path, item.metadata)
        conn.exec_driver_sql("DELETE FROM failures WHERE path=?", (item.path,))
        moved_here = reuse_id is not None and item.claim.kind == MOVED
        return int(new) - int(moved_here)  # a moved entry left its old path: the count is unchanged

    @staticmethod
    def _remove_path(conn: "Connection", path: bytes, seq: int) -> int:
        """Remove an indexed path (it became unreadable); 1 when there was one."""
        row = conn.exec_driver_sql("SELECT id FROM images WHERE path=?", (path,)).fetchone()
        if row:
            conn.exec_driver_sql("DELETE FROM images WHERE id=?", (row[0],))
            conn.exec_driver_sql("INSERT OR REPLACE INTO removed (id, seq) VALUES (?, ?)", (row[0], seq))
        return int(row is not None)

    # --- what queries and the vector index read ---------------------------------------------------------------
    def seq(self) -> int:
        with self.read() as conn:
            return int(conn.exec_driver_sql("SELECT value FROM meta WHERE key='seq'").scalar())

    def image_count(self) -> int:
        """Indexed images, from the count every write keeps (no table scan)."""
        with self.read() as conn:
            return int(conn.exec_driver_sql("SELECT value FROM meta WHERE key='image_count'").scalar())

    def counts(self) -> tuple[int, int]:
        """(indexed images, failed files)."""
        with self.read() as conn:
            images = conn.exec_driver_sql("SELECT count(*) FROM images").scalar()
            failed = conn.exec_driver_sql("SELECT count(*) FROM failures").scalar()
        return int(images), int(failed)

    def paths_for(self, ids: list[int]) -> dict[int, bytes]:
        """Paths of the given ids that are in the catalog now, in one query."""
        with self.read() as conn:
            return {int(i): p for i, p in _rows_for_ids(conn, "id, path", ids)}

    def vectors_for(self, ids: np.ndarray, dim: int) -> np.ndarray:
        """Stored embeddings for `ids` in that order (zeros for ids no longer present)."""
        out = np.zeros((len(ids), dim), dtype=np.float32)
        wanted = [int(i) for i in ids if i >= 0]
        if not wanted:
            return out
        position = {int(i): n for n, i in enumerate(ids)}
        with self.read() as conn:
            for image_id, blob in _rows_for_ids(conn, "id, embedding", wanted):
                out[position[int(image_id)]] = np.frombuffer(blob, dtype=np.float32)
        return out

    def image_by_path(self, path: bytes) -> tuple[np.ndarray, int, int] | None:
        """(embedding, size, mtime_ns) of an indexed path."""
        with self.read() as conn:
            row = conn.exec_driver_sql(
                "SELECT embedding, size, mtime_ns FROM images WHERE path=?", (path,)).fetchone()
        return (np.frombuffer(row[0], dtype=np.float32).copy(), int(row[1]), int(row[2])) if row else None

    def changes(self, dim: int, since_seq: int = 0, chunk: int = 20000) -> "Changes":
        """Rows written and ids removed after `since_seq` (everything for 0), read from one snapshot."""
        with self.read() as conn:
            seq = int(conn.exec_driver_sql("SELECT value FROM meta WHERE key='seq'").scalar())
            removed = conn.exec_driver_sql("SELECT id FROM removed WHERE seq>?", (since_seq,)).fetchall()
            count = int(conn.exec_driver_sql("SELECT count(*) FROM images WHERE seq>?", (since_seq,)).scalar())
            ids = np.empty(count, dtype=np.int64)
            vectors = np.empty((count, dim), dtype=np.float32)
            # No ORDER BY: it makes SQLite walk the whole table by rowid instead of the seq index.
            result = conn.exec_driver_sql("SELECT id, embedding FROM images WHERE seq>?", (since_seq,))
            done = 0
            while rows := result.fetchmany(chunk):
                n = len(rows)
                ids[done:done + n] = [r[0] for r in rows]
                vectors[done:done + n] = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(n, dim)
                done += n
            total = int(conn.exec_driver_sql("SELECT value FROM meta WHERE key='image_count'").scalar())
        removed_ids = np.fromiter((r[0] for r in removed), dtype=np.int64, count=len(removed))
        return Changes(seq, removed_ids, ids[:done], vectors[:done], total)

    def embedding_chunks(self, dim: int, chunk: int = 20000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) of every image, `chunk` rows at a time, from one snapshot."""
        with self.read() as conn:
            result = conn.exec_driver_sql("SELECT id, embedding FROM images")
            while rows := result.fetchmany(chunk):
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                yield ids, np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), dim)

    def failures(self) -> list[FailedFile]:
        with self.read() as conn:
            rows = conn.exec_driver_sql("SELECT path, size, mtime_ns, reason FROM failures ORDER BY path")
            return [FailedFile(p, s, m, r) for p, s, m, r in rows]
