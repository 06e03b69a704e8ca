"""The catalog's image-metadata columns and how one row's metadata is written (inside a batch's transaction).

Reads of metadata live with the records (images.py) and the filter reads (matching.py).
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from indexer.images.metadata import METADATA_VERSION, ImageMetadata

METADATA_COLUMNS = tuple(f.name for f in fields(ImageMetadata))
SET_METADATA = ", ".join(f"{c}=?" for c in METADATA_COLUMNS)  # the SET clause of an UPDATE of every column


def metadata_values(metadata: ImageMetadata) -> tuple:
    return tuple(getattr(metadata, c) for c in METADATA_COLUMNS)


def write_metadata(conn: Any, path: bytes, metadata: ImageMetadata | None) -> None:
    """Store `metadata` on the row of `path` (None clears it and marks the row for the next header pass)."""
    values = metadata_values(metadata) if metadata else (None,) * len(METADATA_COLUMNS)
    version = METADATA_VERSION if metadata else None
    conn.exec_driver_sql(f"UPDATE images SET {SET_METADATA}, meta_version=? WHERE path=?", (*values, version, path))
    add_camera(conn, metadata)


def add_camera(conn: Any, metadata: ImageMetadata | None) -> None:
    # Cameras are only added: one whose last image is gone matches no image, which costs nothing.
    if metadata is not None and (metadata.make or metadata.model):
        conn.exec_driver_sql("INSERT OR IGNORE INTO cameras (make, model) VALUES (?, ?)",
                             (metadata.make or "", metadata.model or ""))
