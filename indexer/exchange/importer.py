"""`searchengine import`: embeddings computed elsewhere, brought into a library through the catalog's write path.

Sources: our own export (a Parquet file, or a folder of them, carrying the model in its metadata) and
clip-retrieval's output (`img_emb/img_emb_N.npy` + `metadata/metadata_N.parquet` with `image_path`), whose model
the caller names. Rows are read in chunks (bounded memory), normalised, and committed a batch per transaction;
a path the library already holds is left as it is, so importing a source twice adds nothing.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from indexer.catalog.exchange import held_paths
from indexer.catalog.moves import StoredSegment
from indexer.catalog.records import StoredVideo, VideoFacts
from indexer.catalog.store import BatchWrite, Catalog, StoredImage
from indexer.errors import ModelMismatchError, SearchEngineError
from indexer.exchange.export import META_PREFIX, import_pyarrow
from indexer.images.files import read_file

if TYPE_CHECKING:
    from indexer.model.clip import ModelSpec

CHUNK = 2000  # rows per read and per committed transaction
VIDEO_COLUMNS = ["segment", "start_s", "end_s", "frame_s", "duration_s", "fps", "codec"]
MIN_NORM = 1e-6


class ImportSourceError(SearchEngineError):
    """A source that is not an export nor a clip-retrieval folder, or whose model or dims do not fit."""


@dataclass
class ImportSummary:
    added: int = 0
    already: int = 0  # paths the library held already (left as they were)
    without_file: int = 0  # imported rows whose file is not on this machine (searchable by path)
    refused: int = 0  # rows left out: no file here and --require-files, or an unusable vector
    seconds: float = 0.0


@dataclass
class _Rows:
    """A chunk read from a source: exported rows carry size, mtime and hash; clip-retrieval rows do not."""

    paths: list[bytes]
    vectors: np.ndarray
    sizes: list[int] | None = None
    mtimes: list[int] | None = None
    hashes: list[bytes] | None = None
    moments: list[tuple] | None = None  # per row: (segment, start_s, end_s, frame_s, duration_s, fps, codec)


@dataclass
class Source:
    path: Path
    kind: str  # "searchengine" or "clip-retrieval"
    dim: int
    model: str | None = None
    pretrained: str | None = None
    parts: list[tuple[Path, Path | None]] = field(default_factory=list)  # (embeddings, metadata) per part

    def chunks(self) -> Iterator[_Rows]:
        return _export_chunks(self) if self.kind == "searchengine" else _clip_retrieval_chunks(self)


def open_source(path: Path) -> Source:
    """Recognise a source's layout and read its dims (and model, for our exports) without reading its rows."""
    pa = import_pyarrow()
    import pyarrow.parquet as pq

    path = Path(path).expanduser().absolute()
    if path.is_dir() and (path / "img_emb").is_dir():
        return _clip_retrieval(path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path] if path.is_file() else []
    if not files:
        raise ImportSourceError(f"{path}: neither a searchengine export (*.parquet) nor a clip-retrieval folder "
                                "(img_emb/, metadata/)")
    infos = []
    for file in files:
        try:
            schema = pq.read_schema(file)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ImportSourceError(f"{file}: not a readable Parquet file ({exc})") from None
        meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
        if f"{META_PREFIX}dim" not in meta:
            raise ImportSourceError(f"{file}: not a searchengine export (no {META_PREFIX}* metadata)")
        infos.append((meta[f"{META_PREFIX}model"], meta[f"{META_PREFIX}pretrained"], int(meta[f"{META_PREFIX}dim"])))
    if len(set(infos)) > 1:
        raise ImportSourceError(f"{path}: its files come from different models")
    model, pretrained, dim = infos[0]
    return Source(path, "searchengine", dim, model, pretrained, [(f, None) for f in files])


def spec_of_sources(sources: list[Source], model: str | None, pretrained: str | None) -> "ModelSpec":
    """The one model every source comes from: named by the caller, or read from our exports' metadata."""
    from indexer.model.clip import ModelSpec

    named = ModelSpec.resolve(model, pretrained) if model or pretrained else None
    specs = {named} if named else set()
    for source in sources:
        if source.model is None:
            if named is None:
                raise ImportSourceError(f"{source.path} does not say which model made its embeddings; "
                                        "name it with --model (and --pretrained)")
            continue
        carried = ModelSpec(source.model, source.pretrained or "")
        if named is not None and carried != named:
            raise ModelMismatchError(f"{source.path} was made with {carried.describe()}, not {named.describe()}")
        specs.add(carried)
    if len(specs) != 1:
        raise ModelMismatchError("the sources come from different models: " +
                                 ", ".join(sorted(s.describe() for s in specs)))
    return specs.pop()


def _clip_retrieval(folder: Path) -> Source:
    parts = []
    for emb in sorted((folder / "img_emb").glob("img_emb_*.npy"), key=_part_number):
        meta = folder / "metadata" / f"metadata_{_part_number(emb)}.parquet"
        if not meta.is_file():
            raise ImportSourceError(f"{folder}: {emb.name} has no {meta.relative_to(folder)}")
        parts.append((emb, meta))
    if not parts:
        raise ImportSourceError(f"{folder}: no img_emb/img_emb_N.npy files")
    dims = {int(np.load(e, mmap_mode="r").shape[1]) for e, _ in parts}
    if len(dims) != 1:
        raise ImportSourceError(f"{folder}: embedding files of different widths {sorted(dims)}")
    return Source(folder, "clip-retrieval", dims.pop(), parts=parts)


def _part_number(path: Path) -> int:
    found = re.search(r"_(\d+)\.", path.name)
    return int(found.group(1)) if found else -1


def _export_chunks(source: Source) -> Iterator[_Rows]:
    import pyarrow.parquet as pq

    for file, _ in source.parts:
        reader = pq.ParquetFile(file)
        videos = set(VIDEO_COLUMNS) <= set(reader.schema_arrow.names)  # exports from before videos have none
        columns = ["path_bytes", "size", "mtime_ns", "content_hash", "embedding"] + (VIDEO_COLUMNS if videos else [])
        for batch in reader.iter_batches(batch_size=CHUNK, columns=columns):
            flat = batch.column("embedding").flatten().to_numpy(zero_copy_only=False)
            moments = list(zip(*(batch.column(c).to_pylist() for c in VIDEO_COLUMNS))) if videos else None
            yield _Rows(batch.column("path_bytes").to_pylist(), flat.reshape(-1, source.dim).astype(np.float32),
                        batch.column("size").to_pylist(), batch.column("mtime_ns").to_pylist(),
                        batch.column("content_hash").to_pylist(), moments)


def _clip_retrieval_chunks(source: Source) -> Iterator[_Rows]:
    import pyarrow.parquet as pq

    for emb_file, meta_file in source.parts:
        vectors = np.load(emb_file, mmap_mode="r")
        done = 0
        for batch in pq.ParquetFile(meta_file).iter_batches(batch_size=CHUNK, columns=["image_path"]):
            paths = [os.fsencode(os.path.abspath(os.path.expanduser(p))) for p in batch.column(0).to_pylist()]
            yield _Rows(paths, np.asarray(vectors[done:done + len(paths)], dtype=np.float32))
            done += len(paths)
        if done != len(vectors):
            raise ImportSourceError(f"{meta_file} lists {done} images, {emb_file} holds {len(vectors)} embeddings")


def import_source(catalog: Catalog, source: Source, require_files: bool,
                  after_commit: Callable[[], None], summary: ImportSummary) -> None:
    """Commit the source's new rows a chunk per transaction (the caller holds the writer lock)."""
    videos: dict[bytes, StoredVideo] = {}  # a video's segments may span chunks: stored whole at the end
    for rows in source.chunks():
        if rows.vectors.shape != (len(rows.paths), source.dim):
            raise ImportSourceError(f"{source.path}: embeddings of shape {rows.vectors.shape}, expected "
                                    f"({len(rows.paths)}, {source.dim})")
        held = held_paths(catalog, rows.paths)
        batch = BatchWrite(stored=list(_stored(rows, held, require_files, summary, videos)))
        if batch.stored:
            catalog.apply(batch)
            summary.added += len(batch.stored)
            after_commit()
    whole = list(videos.values())
    for video in whole:
        video.segments.sort(key=lambda s: s.segment)
    for start in range(0, len(whole), 50):
        catalog.apply(BatchWrite(videos=whole[start:start + 50]))
        summary.added += len(whole[start:start + 50])
        after_commit()


def _stored(rows: _Rows, held: set[bytes], require_files: bool, summary: ImportSummary,
            videos: dict[bytes, StoredVideo]) -> Iterator[StoredImage]:
    """The chunk's new photos; its video segments are gathered into `videos` (stored once all are read)."""
    norms = np.linalg.norm(rows.vectors, axis=1)
    # Rows already of unit length are kept bit for bit (an export re-imported is the same library).
    scale = np.where(np.abs(norms - 1) > 1e-6, norms, 1.0)
    seen: set[bytes] = set()
    for n, path in enumerate(rows.paths):
        if path in videos and rows.moments is not None and rows.moments[n][1] is not None:
            _add_segment(videos[path], rows.moments[n], (rows.vectors[n] / scale[n]).astype(np.float32))
            continue
        if path in held or path in seen:
            summary.already += 1
            continue
        if not np.isfinite(norms[n]) or norms[n] < MIN_NORM:
            summary.refused += 1
            continue
        present = os.path.isfile(path)
        if not present and require_files:
            summary.refused += 1
            continue
        summary.without_file += not present
        seen.add(path)
        size, mtime_ns, digest = _identity(rows, n, path, present)
        vector = (rows.vectors[n] / scale[n]).astype(np.float32)
        if rows.moments is not None and rows.moments[n][1] is not None:
            segment, start_s, end_s, frame_s, duration_s, fps, codec = rows.moments[n]
            videos[path] = StoredVideo(path, size, mtime_ns, digest, VideoFacts(duration_s, fps, codec), [])
            _add_segment(videos[path], rows.moments[n], vector)
            continue
        yield StoredImage(path, size, mtime_ns, digest, vector)


def _add_segment(video: StoredVideo, moment: tuple, vector: np.ndarray) -> None:
    segment, start_s, end_s, frame_s = moment[:4]
    if any(s.segment == segment for s in video.segments):
        return  # the same row twice in the source
    video.segments.append(StoredSegment(int(segment), start_s, end_s, frame_s, vector))  # sorted once all are in


def _identity(rows: _Rows, n: int, path: bytes, present: bool) -> tuple[int, int, bytes]:
    """(size, mtime_ns, content hash): the export's, with size and mtime 0 when the file is not here (see
    catalog_exchange); else the local file's; else a hash no file can have."""
    if rows.hashes is not None:
        if not present:
            return 0, 0, bytes(rows.hashes[n])
        return int(rows.sizes[n]), int(rows.mtimes[n]), bytes(rows.hashes[n])
    if present:
        try:
            data, size, mtime_ns = read_file(path)
            return size, mtime_ns, hashlib.blake2b(data, digest_size=16).digest()
        except (OSError, ValueError):
            pass
    # size and mtime 0: a file that appears there later is seen as changed and embedded by the next index run
    return 0, 0, hashlib.blake2b(b"searchengine-import:" + path, digest_size=16).digest()
