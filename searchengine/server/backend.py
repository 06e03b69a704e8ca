"""What the routes share: the library, the locks its shared read connection and encoders need under
concurrent requests, the `--watch` state, the recent text vectors, the searches (each answered like the CLI's
`search --json --limit LIMIT+OFFSET`, less its first OFFSET hits), and how a hit or a record becomes JSON."""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from indexer.catalog.images import ImageRecord
from indexer.errors import ImageNotFoundError
from searchengine.library.api import Library, SearchHit
from searchengine.query.filters import SearchFilters
from searchengine.server import media
from searchengine.server.batching import TextBatcher

if TYPE_CHECKING:
    from searchengine.server.encoder import EncoderProcess

TEXT_VECTORS_KEPT = 256


@dataclass
class ServerConfig:
    max_upload_bytes: int = 20 << 20
    token: Optional[str] = None
    loopback: bool = True
    text_process: bool = False  # encode texts in a child process (searchengine.server.encoder); `serve` does


@dataclass
class WatchState:
    """What `--watch` is doing, for the page's status line (also the shape of `/api/indexing`)."""

    watching: bool = False
    running: bool = False
    done: int = 0
    total: int = 0
    last_error: Optional[str] = None
    last_summary: Optional[dict] = None


@dataclass
class Backend:
    """The library plus the locks its shared read connection and encoders need under concurrent requests."""

    library: Library
    watch: WatchState = field(default_factory=WatchState)
    read_lock: threading.Lock = field(default_factory=threading.Lock)
    encode_lock: threading.Lock = field(default_factory=threading.Lock)
    cache_lock: threading.Lock = field(default_factory=threading.Lock)
    dims: media.Dimensions = field(default_factory=media.Dimensions)
    texts: "OrderedDict[str, object]" = field(default_factory=OrderedDict)
    text_process: bool = False
    encoder: "EncoderProcess | None" = None

    def __post_init__(self) -> None:
        self.batcher = TextBatcher(self._encode_texts)
        # Loads the text tower and checks that stacked texts keep their lone bits, off the first request's path.
        threading.Thread(target=self._prepare_texts, name="text-stacking", daemon=True).start()

    def _prepare_texts(self) -> None:
        try:
            with self.encode_lock:
                self.library.stack_texts()
            if self.text_process and self.library.texts_on_numpy():  # a child with torch would cost ~1 GB
                from searchengine.server.encoder import READY_TIMEOUT_S, EncoderProcess

                encoder = EncoderProcess(self.library.folder)
                if encoder.wait_ready(READY_TIMEOUT_S):
                    self.encoder = encoder
                else:
                    encoder.close()
        except Exception:  # noqa: BLE001 - a warm-up: the first query meets and reports any real problem
            pass

    def close(self) -> None:
        if self.encoder is not None:
            self.encoder.close()

    def text_vector(self, text: str):
        """The query vector of a text; the page asks again for each further page of a search, so keep a few.
        Texts not kept are encoded together with whatever other texts are waiting (TextBatcher)."""
        with self.cache_lock:
            vector = self.texts.get(text)
            if vector is not None:
                self.texts.move_to_end(text)
                return vector
        vector = self.batcher.vector(text)
        with self.cache_lock:
            self.texts[text] = vector
            if len(self.texts) > TEXT_VECTORS_KEPT:
                self.texts.popitem(last=False)
        return vector

    def _encode_texts(self, texts: list[str]) -> list:
        if self.encoder is not None:
            rows = self.encoder.encode(texts)
            if rows is not None:
                return rows
        with self.encode_lock:  # the model and the query encoder serve one caller at a time
            return self.library.text_vectors(texts)

    def row(self, image_id: int) -> ImageRecord:
        with self.read_lock:
            row = self.library.image(image_id)
        if row is None:
            raise ImageNotFoundError(f"no image with id {image_id} in the library")
        return row

    def hits(self, found: list[SearchHit]) -> dict:
        with self.read_lock:
            rows = self.library.images([h.id for h in found])
        return {"results": [hit_json(h, rows[h.id], self.dims) for h in found if rows.get(h.id) is not None]}

    def search_vector(self, vector, limit: int, offset: int, filters: SearchFilters | None = None,
                      moments: bool = False) -> dict:
        """By an image's vector (an upload, "more like this"): CLIP order; with a words filter, each hit carries
        the lines that hold them."""
        with self.read_lock:
            found = self.library.search_vector(vector, limit + offset, filters=filters or None, moments=moments)
            found = self.library.attach_words(found[offset:], filters)
        return self.hits(found)

    def search_text(self, text: str, limit: int, offset: int, filters: SearchFilters | None = None,
                    moments: bool = False, words: bool = True) -> dict:
        """`Library.search(text=...)`'s order: CLIP, fused with the pictures whose text holds the query's words
        unless `words` is False or a words filter already says which words (then CLIP order among those); a
        page is the CLI's `--limit LIMIT+OFFSET` less its first OFFSET hits."""
        vector = self.text_vector(text)
        with self.read_lock:
            found = self.library.search_text_vector(text, vector, limit + offset, filters=filters or None,
                                                    moments=moments, words=words)
        return self.hits(found[offset:])

    def listing(self, filters: SearchFilters, limit: int, offset: int, moments: bool = False) -> dict:
        """Filters alone (words among them or not): the newest matching images, score null, as the CLI's."""
        with self.read_lock:
            found = self.library.search(filters=filters, limit=limit + offset, moments=moments)
        return self.hits(found[offset:])


def _version(row: ImageRecord, frame_s: float | None = None) -> str:
    """The cache buster of a row's thumbnail and preview URLs: its content, and for a moment its frame."""
    version = row.content_hash.hex()[:12]
    return version if frame_s is None else f"{version}-{round(frame_s * 1000)}"


def urls(row: ImageRecord) -> dict[str, str]:
    version = _version(row, row.frame_s if row.kind == "video" else None)
    base = f"/api/images/{row.id}"
    return {"thumbnail": f"{base}/thumbnail?v={version}", "preview": f"{base}/preview?v={version}",
            "file": f"{base}/file"}


def video_mime(row: ImageRecord) -> str | None:
    """The Content-Type `/file` sends for a video (the page asks the browser whether it can play it)."""
    return media.video_type(row) if row.kind == "video" else None


def moment_json(row: ImageRecord, moment_id: int, start_s: float, end_s: float, frame_s: float) -> dict:
    """One moment of the video `row` is a moment of (the moments share its file and content hash)."""
    base, version = f"/api/images/{moment_id}", _version(row, frame_s)
    return {"id": moment_id, "start_s": start_s, "end_s": end_s, "frame_s": frame_s,
            "thumbnail": f"{base}/thumbnail?v={version}", "preview": f"{base}/preview?v={version}"}


def displayed_size(row: ImageRecord, dims: media.Dimensions) -> tuple[int, int]:
    """Catalog metadata when the row has it, else the file's header (libraries made before metadata)."""
    return dims.get(row.path, row.content_hash, (row.metadata.width, row.metadata.height))


def hit_json(hit: SearchHit, row: ImageRecord, dims: media.Dimensions) -> dict:
    """A hit as the API sends it; `words` only when the query used words (as `search --json` has it)."""
    width, height = dims.get(row.path, row.content_hash, (hit.width, hit.height))
    score = None if hit.score is None else round(hit.score, 6)  # None: filters alone, newest first
    found = {"id": hit.id, "path": hit.path, "score": score, "width": width, "height": height,
             **urls(row), "kind": row.kind, "start_s": row.start_s, "end_s": row.end_s, "frame_s": row.frame_s,
             "duration_s": row.duration_s, "codec": row.codec, "mime": video_mime(row)}  # all None for a photo
    if hit.words is not None:
        found["words"] = hit.words
    return found
