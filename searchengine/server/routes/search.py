"""Search routes: text (`GET /api/search`), an uploaded image (`POST /api/search`), more like an image or a
video's moment (`GET /api/images/{id}/similar`), each with the CLI's filters and paging, and `moments` (every
matching moment of a video as a hit of its own, instead of each video once at its best moment).

`GET /api/search` is the CLI's `search`: a text `q` (CLIP, fused with the words read in the pictures unless
`no_words`), or filters alone (`words=...` among them: the pictures whose text holds those words), newest first
with a null score. A hit carries `words`, the lines that matched, whenever the query used words."""
from __future__ import annotations

from typing import Optional

from fastapi import Depends, FastAPI, Query, Request
from starlette.concurrency import run_in_threadpool

from indexer.errors import QueryError
from searchengine.query.filters import SearchFilters
from searchengine.server.backend import Backend, ServerConfig
from searchengine.server.models import Results, error_responses
from searchengine.server.uploads import (FILTER_LIMITS, MAX_LIMIT, MAX_OFFSET, UPLOAD_SCHEMA, UploadError, check_image,
                                         read_upload)


def filter_params(
        after: Optional[str] = Query(None, max_length=64, description="taken on or after (YYYY[-MM[-DD]])"),
        before: Optional[str] = Query(None, max_length=64, description="taken before (YYYY[-MM[-DD]])"),
        folder: Optional[str] = Query(None, alias="in", max_length=4096, description="under this folder"),
        camera: Optional[str] = Query(None, max_length=200, description="make or model contains this"),
        near: Optional[str] = Query(None, max_length=100, description="LAT,LON[,KM]"),
        format: Optional[str] = Query(None, max_length=16, description="jpeg, png, webp, gif, bmp, tiff, heic, avif; "
                                                                       "mp4, m4v, mov, 3gp, mkv, webm, avi"),
        orientation: Optional[str] = Query(None, max_length=16, description="landscape, portrait or square"),
        kind: Optional[str] = Query(None, max_length=16, description="image or video"),
        words: Optional[str] = Query(None, max_length=FILTER_LIMITS["words"],
                                     description='the text read in it (index --ocr) holds these words: all of '
                                                 'them, "a phrase", prefix*'),
) -> SearchFilters:
    """The CLI's search filters, parsed by the same code (a bad value is a 400 naming it)."""
    return SearchFilters.parse(after=after, before=before, folder=folder, camera=camera, near=near, format=format,
                               orientation=orientation, kind=kind, words=words)


LIMIT = Query(50, ge=1, le=MAX_LIMIT, description="results per page")
OFFSET = Query(0, ge=0, le=MAX_OFFSET, description="results to skip")
MOMENTS = Query(False, description="every matching moment of a video, not each video once at its best moment")
NO_WORDS = Query(False, description="rank a text query by CLIP alone, not also by the words read in the pictures")


def add_search_routes(app: FastAPI, backend: Backend, config: ServerConfig) -> None:
    @app.get("/api/search", response_model=Results, response_model_exclude_unset=True, responses=error_responses())
    def search_text(q: Optional[str] = Query(None, min_length=1, max_length=2000, pattern=r"\S",
                                             description="what to look for; without it, filters alone list the "
                                                         "newest matching images (score null)"),
                    limit: int = LIMIT, offset: int = OFFSET, moments: bool = MOMENTS, no_words: bool = NO_WORDS,
                    filters: SearchFilters = Depends(filter_params)) -> dict:
        if q is None:
            if not filters:
                raise QueryError("give a text to search for (q) or a filter (words, kind, after...)")
            return backend.listing(filters, limit, offset, moments)
        if not q.strip():
            raise QueryError("the query text is empty")
        return backend.search_text(q, limit, offset, filters, moments, words=not no_words)

    @app.post("/api/search", response_model=Results, response_model_exclude_unset=True,
              responses=error_responses(413, 415), openapi_extra=UPLOAD_SCHEMA)
    async def search_image(request: Request) -> dict:
        upload = await read_upload(request, config.max_upload_bytes)
        check_image(upload.data)

        def encode():
            with backend.encode_lock:
                try:
                    return backend.library.image_vector(upload.data)
                except QueryError as exc:
                    raise UploadError(415, str(exc)) from None

        vector = await run_in_threadpool(encode)
        return await run_in_threadpool(backend.search_vector, vector, upload.limit, upload.offset, upload.filters,
                                       upload.moments)

    @app.get("/api/images/{image_id}/similar", response_model=Results, response_model_exclude_unset=True,
             responses=error_responses(404))
    def similar(image_id: int, limit: int = LIMIT, offset: int = OFFSET, moments: bool = MOMENTS,
                filters: SearchFilters = Depends(filter_params)) -> dict:
        with backend.read_lock:
            found = backend.library.similar(image_id, limit, offset, filters=filters or None, moments=moments)
            found = backend.library.attach_words(found, filters)
        return backend.hits(found)
