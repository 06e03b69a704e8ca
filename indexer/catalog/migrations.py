"""Named catalog migrations, applied in order, each in its own transaction, recorded in `migrations`.

Never edit a released migration: add a new one. A catalog holding a name not listed here is from a newer version.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from sqlalchemy import Connection

Migration = Callable[["Connection"], None]


def m001_initial(conn: "Connection") -> None:
    # Paths are BLOBs of the file system's own bytes: names need not be valid UTF-8.
    conn.exec_driver_sql("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.exec_driver_sql(
        """CREATE TABLE images (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            path BLOB NOT NULL UNIQUE,
            folder BLOB NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            content_hash BLOB NOT NULL,
            embedding BLOB NOT NULL,
            seq INTEGER NOT NULL,
            indexed_at REAL NOT NULL
        )"""
    )
    conn.exec_driver_sql("CREATE INDEX images_folder ON images (folder)")
    conn.exec_driver_sql("CREATE INDEX images_hash ON images (content_hash)")
    conn.exec_driver_sql("CREATE INDEX images_seq ON images (seq)")
    conn.exec_driver_sql(
        """CREATE TABLE failures (
            path BLOB PRIMARY KEY,
            folder BLOB NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            reason TEXT NOT NULL
        )"""
    )
    conn.exec_driver_sql("CREATE INDEX failures_folder ON failures (folder)")
    # Ids removed from `images`, so a vector index saved at an older seq can be caught up.
    conn.exec_driver_sql("CREATE TABLE removed (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL)")
    conn.exec_driver_sql("CREATE INDEX removed_seq ON removed (seq)")
    conn.exec_driver_sql("INSERT INTO meta (key, value) VALUES ('seq', '0')")


def m002_image_count(conn: "Connection") -> None:
    # Kept by every write transaction, so a query never counts a million rows to check the vector index.
    conn.exec_driver_sql("INSERT INTO meta (key, value) SELECT 'image_count', count(*) FROM images")


def m003_vanished(conn: "Connection") -> None:
    # Rows removed because their file vanished, kept until the run ends so a moved file can claim its entry.
    conn.exec_driver_sql(
        """CREATE TABLE vanished (
            id INTEGER PRIMARY KEY,
            path BLOB NOT NULL,
            content_hash BLOB NOT NULL,
            embedding BLOB NOT NULL
        )"""
    )
    conn.exec_driver_sql("CREATE INDEX vanished_hash ON vanished (content_hash)")


def m004_metadata(conn: "Connection") -> None:
    # NULL meta_version = not read yet: the next index run fills the row from the file's header.
    # taken_at is UTC epoch seconds (see indexer/images/metadata.py); the local wall-clock text and offset are kept.
    for column in ("meta_version INTEGER", "taken_at REAL", "taken_at_local TEXT", "taken_at_offset TEXT",
                   "taken_at_source TEXT", "width INTEGER", "height INTEGER", "format TEXT", "make TEXT",
                   "model TEXT", "lens TEXT", "latitude REAL", "longitude REAL"):
        conn.exec_driver_sql(f"ALTER TABLE images ADD COLUMN {column}")
    # Covering index for filters: a date range is a range scan, any other filter scans this index instead
    # of the table, whose rows carry 2 KB embeddings.
    conn.exec_driver_sql("CREATE INDEX images_taken_at ON images "
                         "(taken_at, format, width, height, latitude, longitude, make, model)")
    conn.exec_driver_sql("CREATE INDEX images_place ON images (latitude, longitude)")
    conn.exec_driver_sql("CREATE INDEX images_meta_version ON images (meta_version)")


def m005_cameras(conn: "Connection") -> None:
    # The distinct cameras ('' for an unknown make or model): a --camera substring is matched against these few
    # names, and their images are then found through images_camera, instead of a LIKE on every image row.
    conn.exec_driver_sql("CREATE TABLE cameras (make TEXT NOT NULL, model TEXT NOT NULL, PRIMARY KEY (make, model))")
    conn.exec_driver_sql("INSERT OR IGNORE INTO cameras SELECT DISTINCT ifnull(make, ''), ifnull(model, '') "
                         "FROM images WHERE make IS NOT NULL OR model IS NOT NULL")
    # Covering the columns other filters test, so a camera or format filter combined with them reads no image row.
    conn.exec_driver_sql("CREATE INDEX images_camera ON images (make, model, taken_at, format, width, height)")
    conn.exec_driver_sql("CREATE INDEX images_format ON images (format, taken_at, width, height)")


def m006_index_roots(conn: "Connection") -> None:
    # The folders (and excludes) `index` was given, so `index` without PATH and `serve --watch` can redo them.
    conn.exec_driver_sql(
        "CREATE TABLE index_roots (root BLOB PRIMARY KEY, exclude TEXT NOT NULL, indexed_at REAL NOT NULL)")


# A video is one row per segment (a moment with its own embedding); a photo is one row, segment 0, start_s NULL.
VIDEO_COLUMNS = ("segment INTEGER NOT NULL DEFAULT 0", "start_s REAL", "end_s REAL", "frame_s REAL",
                 "duration_s REAL", "fps REAL", "codec TEXT")


def m007_video_segments(conn: "Connection") -> None:
    # `path` was UNIQUE; a video's segments share it, so the key becomes (path, segment). SQLite cannot drop a
    # column's UNIQUE constraint: the table is rebuilt (SQLite's documented procedure), in this one transaction.
    old = [r[1] for r in conn.exec_driver_sql("PRAGMA table_info(images)")]
    types = {r[1]: r[2] for r in conn.exec_driver_sql("PRAGMA table_info(images)")}
    indexes = [r[0] for r in conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type='index' AND tbl_name='images' AND sql IS NOT NULL")]
    # ids are never reused (a vector index may hold a removed one): keep AUTOINCREMENT's high-water mark
    high = conn.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name='images'").scalar()
    rest = ", ".join(f"{c} {types[c]}".strip() for c in old if c not in
                     ("id", "path", "folder", "size", "mtime_ns", "content_hash", "embedding", "seq", "indexed_at"))
    conn.exec_driver_sql(
        f"""CREATE TABLE images_new (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            path BLOB NOT NULL,
            folder BLOB NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            content_hash BLOB NOT NULL,
            embedding BLOB NOT NULL,
            seq INTEGER NOT NULL,
            indexed_at REAL NOT NULL{", " + rest if rest else ""},
            {", ".join(VIDEO_COLUMNS)},
            UNIQUE (path, segment)
        )""")
    columns = ", ".join(old)
    conn.exec_driver_sql(f"INSERT INTO images_new ({columns}) SELECT {columns} FROM images")
    conn.exec_driver_sql("DROP TABLE images")
    conn.exec_driver_sql("ALTER TABLE images_new RENAME TO images")
    for sql in indexes:
        conn.exec_driver_sql(sql)
    if high is not None:
        conn.exec_driver_sql("INSERT INTO sqlite_sequence (name, seq) SELECT 'images', 0 WHERE NOT EXISTS "
                             "(SELECT 1 FROM sqlite_sequence WHERE name='images')")
        conn.exec_driver_sql("UPDATE sqlite_sequence SET seq=max(seq, ?) WHERE name='images'", (high,))
    # `--kind` and the status counts: segments are the rows with a start
    conn.exec_driver_sql("CREATE INDEX images_start ON images (start_s)")
    # removed rows stay claimable by a moved video with their segments
    for column in ("segment INTEGER NOT NULL DEFAULT 0", "start_s REAL", "end_s REAL", "frame_s REAL"):
        conn.exec_driver_sql(f"ALTER TABLE vanished ADD COLUMN {column}")


def m008_texts(conn: "Connection") -> None:
    # The text read in pictures (OCR), kept by content: a renamed or copied photo keeps its text unread again.
    # frame_ms is -1 for a photo, else the millisecond of the video frame that stands for a segment.
    # `error` set: the engine could not read the picture (a recorded failure, not retried by later runs).
    conn.exec_driver_sql(
        """CREATE TABLE texts (
            id INTEGER PRIMARY KEY,
            content_hash BLOB NOT NULL,
            frame_ms INTEGER NOT NULL,
            lines TEXT NOT NULL,
            engine TEXT NOT NULL,
            error TEXT,
            read_at REAL NOT NULL,
            UNIQUE (content_hash, frame_ms)
        )""")
    # The word index (rowid = texts.id): words in their normal form (indexer/ocr/words.py), and long tokens
    # again in a trigram index, where words a recogniser ran together are found.
    conn.exec_driver_sql("CREATE VIRTUAL TABLE text_words USING fts5(words, tokenize='unicode61 remove_diacritics 2')")
    conn.exec_driver_sql("CREATE VIRTUAL TABLE text_glued USING fts5(glued, tokenize='trigram')")
    # What is still to read is found through this index, not by reading image rows with their embeddings.
    conn.exec_driver_sql("CREATE INDEX images_text_key ON images (content_hash, frame_s)")


MIGRATIONS: list[tuple[str, Migration]] = [
    ("001_initial", m001_initial),
    ("002_image_count", m002_image_count),
    ("003_vanished", m003_vanished),
    ("004_metadata", m004_metadata),
    ("005_cameras", m005_cameras),
    ("006_index_roots", m006_index_roots),
    ("007_video_segments", m007_video_segments),
    ("008_texts", m008_texts),
]
