"""The text read in pictures: what is still to read, storing what was read (with its word index), reading it back.

Text is kept by content (a photo's content hash; a video's hash and the millisecond of a segment's frame), so a
renamed, moved or copied file keeps its text and is never read twice. Each batch of results is one transaction:
a run killed while reading loses at most that batch and the next run goes on where it stopped.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from indexer.catalog.reads import has_texts, rows_in  # noqa: F401 - has_texts is re-exported
from indexer.catalog.store import Catalog

if TYPE_CHECKING:  # the OCR modules are imported where text is stored or read back: a plain query needs neither
    from indexer.ocr.lines import TextLine

# A row's key into `texts`: a photo's frame_ms is -1.
FRAME_MS = "ifnull(CAST(round(images.frame_s * 1000) AS INTEGER), -1)"
OCR_KEY = "ocr"  # meta: "on" while the library reads text in its pictures


@dataclass(frozen=True)
class ReadTask:
    """A picture to read: one file holding that content (a photo, or a video and the second of the frame)."""

    content_hash: bytes
    frame_ms: int
    path: bytes
    frame_s: float | None
    size: int
    mtime_ns: int


@dataclass
class ReadResult:
    content_hash: bytes
    frame_ms: int
    lines: list[TextLine]
    engine: str
    error: str | None = None


@dataclass
class TextCounts:
    read: int = 0  # pictures read (with or without text)
    with_text: int = 0
    failed: int = 0
    pending: int = 0


def ocr_enabled(catalog: Catalog) -> bool:
    return catalog.meta().get(OCR_KEY) == "on"


def set_ocr(catalog: Catalog, on: bool) -> None:
    catalog.set_meta({OCR_KEY: "on" if on else "off"})


_UNREAD = f"NOT EXISTS (SELECT 1 FROM texts WHERE texts.content_hash = images.content_hash AND texts.frame_ms = {FRAME_MS})"


def pending(catalog: Catalog, limit: int, after: tuple[bytes, int] | None = None) -> list[ReadTask]:
    """Up to `limit` unread pictures in key order, after the key `after` (so a picture skipped in a run, its file
    changed or gone, is not handed out again in that run)."""
    start = after or (b"", -2)
    with catalog.read() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT images.content_hash, {FRAME_MS} AS fm, min(images.path), images.frame_s, images.size, "
            f"images.mtime_ns FROM images WHERE {_UNREAD} AND (images.content_hash, {FRAME_MS}) > (?, ?) "
            "GROUP BY images.content_hash, fm ORDER BY images.content_hash, fm LIMIT ?", (*start, limit)).fetchall()
    return [ReadTask(bytes(h), int(fm), bytes(p), s, int(size), int(mtime)) for h, fm, p, s, size, mtime in rows]


def pending_count(catalog: Catalog) -> int:
    with catalog.read() as conn:
        return int(conn.exec_driver_sql(
            f"SELECT count(*) FROM (SELECT DISTINCT content_hash, {FRAME_MS} FROM images WHERE {_UNREAD})").scalar())


def store_texts(catalog: Catalog, results: list[ReadResult]) -> None:
    """Keep what was read, with its words indexed, in one transaction (a result already stored is left alone)."""
    if not results:
        return
    from indexer.ocr.lines import joined
    from indexer.ocr.words import glued, normal

    now = time.time()
    with catalog.write() as conn:
        for result in results:
            cursor = conn.exec_driver_sql(
                "INSERT OR IGNORE INTO texts (content_hash, frame_ms, lines, engine, error, read_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (result.content_hash, result.frame_ms, json.dumps([line.to_json() for line in result.lines],
                                                                  ensure_ascii=False),
                 result.engine, result.error, now))
            if cursor.rowcount != 1 or not result.lines:
                continue
            text_id = cursor.lastrowid
            text = joined(result.lines)
            conn.exec_driver_sql("INSERT INTO text_words (rowid, words) VALUES (?, ?)", (text_id, normal(text)))
            long_tokens = glued(text)
            if long_tokens:
                conn.exec_driver_sql("INSERT INTO text_glued (rowid, glued) VALUES (?, ?)", (text_id, long_tokens))


def remove_orphans(conn: Any) -> int:
    """Forget the text of content no image row holds any longer (in the caller's write transaction)."""
    gone = [r[0] for r in conn.exec_driver_sql(
        "SELECT id FROM texts WHERE NOT EXISTS (SELECT 1 FROM images WHERE images.content_hash = texts.content_hash "
        f"AND {FRAME_MS} = texts.frame_ms)")]
    for text_id in gone:
        conn.exec_driver_sql("DELETE FROM text_words WHERE rowid = ?", (text_id,))
        conn.exec_driver_sql("DELETE FROM text_glued WHERE rowid = ?", (text_id,))
        conn.exec_driver_sql("DELETE FROM texts WHERE id = ?", (text_id,))
    return len(gone)


def lines_for(catalog: Catalog, ids: list[int]) -> dict[int, list[TextLine]]:
    """The read lines of each of `ids` that has been read (an empty list: read, no text)."""
    if not ids:
        return {}
    from indexer.ocr.lines import TextLine

    with catalog.read() as conn:
        keyed = list(rows_in(conn, f"id, content_hash, {FRAME_MS}", "id", ids))
        if not keyed:
            return {}
        found: dict[int, list[TextLine]] = {}
        for image_id, content_hash, frame_ms in keyed:
            row = conn.exec_driver_sql("SELECT lines FROM texts WHERE content_hash = ? AND frame_ms = ?",
                                       (content_hash, frame_ms)).fetchone()
            if row is not None:
                found[int(image_id)] = [TextLine.from_json(item) for item in json.loads(row[0])]
    return found


def text_counts(catalog: Catalog) -> TextCounts:
    with catalog.read() as conn:
        read, failed = conn.exec_driver_sql("SELECT count(*), count(error) FROM texts").fetchone()
        with_text = conn.exec_driver_sql("SELECT count(*) FROM text_words").scalar()
    return TextCounts(int(read), int(with_text), int(failed), pending_count(catalog))
