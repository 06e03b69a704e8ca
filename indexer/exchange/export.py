"""`searchengine export`: the library's images and embeddings as Parquet, written in row groups (bounded memory).

One row per image: path (text; `path_bytes` holds the file system's exact bytes), size, mtime_ns, content_hash,
any metadata columns the catalog holds, the embedding as a list of float32, and the text read in the picture
(`text`, a line each, and `text_lines`, JSON lines with confidence and box; null where not read). The model identity is in the
file's key-value metadata (keys `searchengine.*`), which `searchengine import` reads back.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexer.catalog.exchange import EXPORTED, TEXT_LINES, column_types, extra_columns, rows_for_export
from indexer.catalog.store import Catalog
from indexer.errors import SearchEngineError

EXPORT_FILE = "images.parquet"
ROW_GROUP = 10_000  # rows held in memory at once (about 20 MB of 512-d embeddings)
FORMAT_VERSION = "1"
META_PREFIX = "searchengine."


@dataclass
class ExportSummary:
    file: str
    rows: int


def import_pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise SearchEngineError("Parquet needs pyarrow: pip install 'searchengine[parquet]'") from None
    return pyarrow


def export_parquet(catalog: Catalog, folder: Path, row_group: int = ROW_GROUP) -> ExportSummary:
    """Write `folder`/images.parquet (through a temp file renamed into place)."""
    pa = import_pyarrow()
    meta = catalog.meta()
    dim = int(meta["dim"])
    extras = extra_columns(catalog)
    schema = _schema(pa, dim, extras, catalog).with_metadata(
        {f"{META_PREFIX}{k}": meta.get(k, "") for k in ("model", "pretrained", "dim", "image_precision")}
        | {f"{META_PREFIX}format_version": FORMAT_VERSION})
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / EXPORT_FILE
    partial = folder / f".{EXPORT_FILE}.partial"
    rows = 0
    import pyarrow.parquet as pq

    try:
        with pq.ParquetWriter(partial, schema) as writer:
            for chunk in rows_for_export(catalog, [*EXPORTED, *extras], row_group, [TEXT_LINES]):
                writer.write_table(_table(pa, schema, chunk, dim, extras), row_group_size=row_group)
                rows += len(chunk)
        os.replace(partial, target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise SearchEngineError(f"cannot write {target}: {exc.strerror or exc}") from None
    return ExportSummary(str(target), rows)


def _schema(pa: Any, dim: int, extras: list[str], catalog: Catalog) -> Any:
    fields = [pa.field("path", pa.string()), pa.field("path_bytes", pa.binary()), pa.field("size", pa.int64()),
              pa.field("mtime_ns", pa.int64()), pa.field("content_hash", pa.binary()),
              pa.field("embedding", pa.list_(pa.float32(), dim))]
    return pa.schema(fields + [pa.field(name, _extra_type(pa, catalog, name)) for name in extras]
                     + [pa.field("text", pa.string()), pa.field("text_lines", pa.string())])


def _extra_type(pa: Any, catalog: Catalog, name: str) -> Any:
    kind = column_types(catalog).get(name, "")
    if "INT" in kind:
        return pa.int64()
    if "REAL" in kind or "FLOA" in kind or "DOUB" in kind:
        return pa.float64()
    if "BLOB" in kind:
        return pa.binary()
    return pa.string()


def _table(pa: Any, schema: Any, rows: list[tuple], dim: int, extras: list[str]) -> Any:
    paths = [r[0] for r in rows]
    vectors = np.frombuffer(b"".join(r[4] for r in rows), np.float32)
    columns = [
        pa.array([p.decode("utf-8", "replace") for p in paths], pa.string()),  # lossy only for non-UTF-8 names
        pa.array(paths, pa.binary()),
        pa.array([r[1] for r in rows], pa.int64()),
        pa.array([r[2] for r in rows], pa.int64()),
        pa.array([r[3] for r in rows], pa.binary()),
        pa.FixedSizeListArray.from_arrays(pa.array(vectors, pa.float32()), dim),
    ]
    for n, name in enumerate(extras):
        columns.append(pa.array([r[5 + n] for r in rows], schema.field(name).type))
    lines = [r[5 + len(extras)] for r in rows]
    columns.append(pa.array([None if j is None else "\n".join(item["text"] for item in json.loads(j)) for j in lines],
                            pa.string()))
    columns.append(pa.array(lines, pa.string()))
    return pa.Table.from_arrays(columns, schema=schema)

