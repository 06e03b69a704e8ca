"""The catalog's reads: what the scanner compares against, and what queries and the vector index read.

Mixed into `Catalog`, which provides `read()` (one snapshot per call).
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np

from typing import TYPE_CHECKING

from indexer.catalog.records import Changes, FailedFile, KnownFile

if TYPE_CHECKING:  # the index run's modules, imported where used: a search needs neither
    from indexer.catalog.moves import Reusable, ReusableVideo

# SQLite allows 32,766 host parameters per statement: other values go in chunks well below that. Integer ids go
# as one JSON array per chunk (json_each), a single parameter: 20k ids in one statement instead of 23.
IDS_PER_QUERY = 900
INTS_PER_QUERY = 20000


def rows_in(conn: Any, columns: str, key: str, values: Sequence[Any], also: str = "",
            params: tuple = ()) -> Iterator[tuple]:
    """`columns` of the images whose `key` is one of `values` (and `also`, an extra SQL condition whose own
    parameters are `params`), a chunk of values per statement, so any number of values fits.

    The one way the catalog reads rows by a list of values (ids, paths)."""
    integers = all(isinstance(v, (int, np.integer)) for v in values)
    step = INTS_PER_QUERY if integers else IDS_PER_QUERY
    for start in range(0, len(values), step):
        chunk = values[start:start + step]
        if integers:
            where, args = "IN (SELECT value FROM json_each(?))", (json.dumps([int(v) for v in chunk]),)
        else:
            where, args = f"IN ({','.join('?' * len(chunk))})", tuple(chunk)
        yield from conn.exec_driver_sql(f"SELECT {columns} FROM images WHERE {key} {where}{also}", args + params)


class CatalogReads:
    """Reads of `Catalog` (mixed in): each method reads one committed snapshot."""

    # --- what the scanner compares against ----------------------------------------------------------------------
    def folder_state(self, folder: bytes) -> tuple[dict[bytes, KnownFile], dict[bytes, KnownFile]]:
        """Indexed and failed files directly in `folder`, by path."""
        with self.read() as conn:
            images = conn.exec_driver_sql(
                "SELECT path, id, size, mtime_ns FROM images WHERE folder=? ORDER BY path, segment", (folder,))
            known: dict[bytes, KnownFile] = {}
            for p, i, s, m in images:
                if p in known:  # a video's next segment
                    known[p].more_ids += (int(i),)
                else:
                    known[p] = KnownFile(int(i), s, m)
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
            from indexer.catalog.moves import find_reusable

            return find_reusable(conn, content_hash)

    def reusable_video(self, content_hash: bytes) -> ReusableVideo | None:
        """The segments already cut for this video content (a moved or copied video is not decoded again)."""
        with self.read() as conn:
            from indexer.catalog.moves import find_reusable_video

            return find_reusable_video(conn, content_hash)

    # --- what queries and the vector index read ---------------------------------------------------------------
    def seq(self) -> int:
        with self.read() as conn:
            return int(conn.exec_driver_sql("SELECT value FROM meta WHERE key='seq'").scalar())

    def image_count(self) -> int:
        """Indexed images, from the count every write keeps (no table scan)."""
        with self.read() as conn:
            return int(conn.exec_driver_sql("SELECT value FROM meta WHERE key='image_count'").scalar())

    def failed_count(self) -> int:
        """Files that could not be indexed (the indexed ones: image_count and media_counts, without a scan)."""
        with self.read() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM failures").scalar())

    def media_counts(self) -> tuple[int, int, int]:
        """(photos, videos, video segments), through the index on start_s (segments are the rows with a start)."""
        with self.read() as conn:
            segments, videos = conn.exec_driver_sql(
                "SELECT count(*), count(DISTINCT path) FROM images WHERE start_s IS NOT NULL").fetchone()
            total = int(conn.exec_driver_sql("SELECT value FROM meta WHERE key='image_count'").scalar())
        return total - int(segments), int(videos), int(segments)

    def paths_for(self, ids: list[int]) -> dict[int, bytes]:
        """Paths of the given ids that are in the catalog now, in one query."""
        with self.read() as conn:
            return {int(i): p for i, p in rows_in(conn, "id, path", "id", ids)}

    def hit_rows(self, ids: list[int]) -> dict[int, tuple[bytes, float | None, float | None, float | None]]:
        """(path, start_s, end_s, frame_s) of the given ids in the catalog now (the moment is None for a photo)."""
        with self.read() as conn:
            rows = rows_in(conn, "id, path, start_s, end_s, frame_s", "id", ids)
            return {int(i): (p, a, b, f) for i, p, a, b, f in rows}

    def vectors_for(self, ids: np.ndarray, dim: int) -> np.ndarray:
        """Stored embeddings for `ids` in that order (zeros for ids no longer present)."""
        out = np.zeros((len(ids), dim), dtype=np.float32)
        wanted = [int(i) for i in ids if i >= 0]
        if not wanted:
            return out
        position = {int(i): n for n, i in enumerate(ids)}
        with self.read() as conn:
            for image_id, blob in rows_in(conn, "id, embedding", "id", wanted):
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
        with self.embeddings_snapshot(dim, chunk) as (_, _, chunks):
            yield from chunks

    @contextmanager
    def embeddings_snapshot(self, dim: int, chunk: int = 20000
                            ) -> Iterator[tuple[int, int, Iterator[tuple[np.ndarray, np.ndarray]]]]:
        """(seq, image count, chunks of (ids, vectors) of every image), all of one snapshot."""
        with self.read() as conn:
            seq = int(conn.exec_driver_sql("SELECT value FROM meta WHERE key='seq'").scalar())
            count = int(conn.exec_driver_sql("SELECT count(*) FROM images").scalar())

            def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
                result = conn.exec_driver_sql("SELECT id, embedding FROM images")
                while rows := result.fetchmany(chunk):
                    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                    yield ids, np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), dim)

            yield seq, count, chunks()

    def failures(self) -> list[FailedFile]:
        with self.read() as conn:
            rows = conn.exec_driver_sql("SELECT path, size, mtime_ns, reason FROM failures ORDER BY path")
            return [FailedFile(p, s, m, r) for p, s, m, r in rows]

    def rows_missing_metadata(self, root: bytes, chunk: int = 500) -> Iterator[list[tuple[int, bytes, int, int]]]:
        """(id, path, size, mtime_ns) of rows at or below folder `root` whose metadata is not read yet, by chunks."""
        from indexer.images.metadata import METADATA_VERSION

        low, high = root.rstrip(b"/") + b"/", root.rstrip(b"/") + b"0"
        last = -1
        while True:
            with self.read() as conn:
                rows = conn.exec_driver_sql(
                    "SELECT id, path, size, mtime_ns FROM images WHERE (meta_version IS NULL OR meta_version<?) "
                    "AND (folder=? OR (folder>=? AND folder<?) OR path=?) AND id>? ORDER BY id LIMIT ?",
                    (METADATA_VERSION, root, low, high, root, last, chunk)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [(int(i), p, int(s), int(m)) for i, p, s, m in rows]


def has_texts(catalog: CatalogReads) -> bool:
    """Whether any picture of the library (a Catalog) has text (else a plain query skips the words entirely).
    Here, not in texts.py, so that a search of a library without texts does not import the texts' module (~3 ms)."""
    with catalog.read() as conn:
        return bool(conn.exec_driver_sql("SELECT EXISTS (SELECT 1 FROM text_words)").scalar())
