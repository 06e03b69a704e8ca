"""The catalog's writes: one batch per transaction, each bumping `meta.seq` and stamping its rows.

Mixed into `Catalog`, which provides `write()` (one transaction per call).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from indexer.catalog.records import BatchWrite, StoredImage, folder_of

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from indexer.images.metadata import ImageMetadata

# The modules of the writes themselves are imported where they are used: every reader (a `search` process) has
# this class in its Catalog, and importing them cost ~7 ms of a query.


class CatalogWrites:
    """Writes of `Catalog` (mixed in): each method is one whole transaction."""

    def forget_vanished(self) -> None:
        """End of a complete run: removed entries that no moved file claimed are dropped for good."""
        from indexer.catalog.moves import forget_vanished

        with self.write() as conn:
            forget_vanished(conn)

    # --- writes ---------------------------------------------------------------------------------------------
    def apply(self, batch: BatchWrite) -> int:
        """Apply one batch atomically; returns its seq."""
        from indexer.catalog.moves import stash_removed
        from indexer.catalog.videos import remove_path, store_video

        with self.write() as conn:
            seq = int(conn.exec_driver_sql("SELECT value FROM meta WHERE key='seq'").scalar()) + 1
            conn.exec_driver_sql("UPDATE meta SET value=? WHERE key='seq'", (str(seq),))
            now = time.time()
            delta = 0
            for item in batch.stored:
                delta += self._store(conn, item, seq, now)
            for video in batch.videos:
                delta += store_video(conn, video, seq, now)
            for failed in batch.failed:
                conn.exec_driver_sql(
                    "INSERT OR REPLACE INTO failures (path, folder, size, mtime_ns, reason) VALUES (?,?,?,?,?)",
                    (failed.path, folder_of(failed.path), failed.size, failed.mtime_ns, failed.reason))
                delta -= remove_path(conn, failed.path, seq)  # its row, or a video's every segment
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
        from indexer.catalog.metadata import write_metadata
        from indexer.catalog.moves import MOVED, take_claim

        new = conn.exec_driver_sql("SELECT 1 FROM images WHERE path=?", (item.path,)).fetchone() is None
        reuse_id = take_claim(conn, item.claim) if new else None
        blob = np.ascontiguousarray(item.embedding, dtype=np.float32).tobytes()
        conn.exec_driver_sql(
            "INSERT INTO images (id, path, folder, size, mtime_ns, content_hash, embedding, seq, indexed_at) "
            "VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(path, segment) DO UPDATE SET size=excluded.size, "
            "mtime_ns=excluded.mtime_ns, content_hash=excluded.content_hash, embedding=excluded.embedding, "
            "seq=excluded.seq, indexed_at=excluded.indexed_at",
            (reuse_id, item.path, folder_of(item.path), item.size, item.mtime_ns, item.content_hash, blob, seq, now))
        write_metadata(conn, item.path, item.metadata)
        if item.no_text_by is not None:  # read in the same transaction as its embedding (see catalog/texts.py)
            conn.exec_driver_sql("INSERT OR IGNORE INTO texts (content_hash, frame_ms, lines, engine, error, read_at) "
                                 "VALUES (?, -1, '[]', ?, NULL, ?)", (item.content_hash, item.no_text_by, now))
        conn.exec_driver_sql("DELETE FROM failures WHERE path=?", (item.path,))
        moved_here = reuse_id is not None and item.claim.kind == MOVED
        return int(new) - int(moved_here)  # a moved entry left its old path: the count is unchanged

    def write_metadata_by_id(self, items: list[tuple[int, ImageMetadata]]) -> None:
        """Fill in metadata of existing rows in one transaction; seq is untouched (embeddings did not change)."""
        from indexer.catalog.metadata import SET_METADATA, add_camera, metadata_values
        from indexer.images.metadata import METADATA_VERSION

        if not items:
            return
        with self.write() as conn:
            for image_id, metadata in items:
                conn.exec_driver_sql(f"UPDATE images SET {SET_METADATA}, meta_version=? WHERE id=?",
                                     (*metadata_values(metadata), METADATA_VERSION, image_id))
                add_camera(conn, metadata)
