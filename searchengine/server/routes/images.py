"""Image routes, by catalog id only (no route takes a path): the record (`/api/images/{id}`, with a video's
moments), the cached thumbnail and preview (ETag, long cache), and the original file (a video's streamed, with
HTTP Range requests so a player can seek)."""
from __future__ import annotations

import os
from dataclasses import asdict
from typing import Optional

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from indexer.catalog.images import ImageRecord as CatalogRecord
from indexer.errors import ImageNotFoundError
from searchengine.server import media
from searchengine.server.backend import Backend, displayed_size, moment_json, urls, video_mime
from searchengine.server.errors import error
from searchengine.server.models import ErrorBody, ImageRecord, error_responses
from searchengine.server.streaming import FileSpanResponse

LONG_CACHE = "private, max-age=31536000, immutable"


def add_image_routes(app: FastAPI, backend: Backend) -> None:
    @app.get("/api/images/{image_id}", response_model=ImageRecord, responses=error_responses(404))
    def image(image_id: int) -> dict:
        row = backend.row(image_id)
        if not media.unchanged(row):
            raise ImageNotFoundError(f"image {image_id} is gone or changed since it was indexed")
        with backend.read_lock:
            details = asdict(backend.library.show(row.id))
            moments = backend.library.moments(row.id) if row.kind == "video" else []
        width, height = displayed_size(row, backend.dims)
        return {**details, "width": width, "height": height, **urls(row), "mime": video_mime(row),
                "moments": [moment_json(row, *m) for m in moments]}

    image_responses = {200: {"content": {"image/jpeg": {}}, "description": "JPEG image"},
                       304: {"description": "Not modified (ETag matched)"}, **error_responses(404)}

    def cached(kind: str, image_id: int, request: Request) -> Response:
        row = backend.row(image_id)
        item = media.cached_render(backend.library.folder, row, kind)
        headers = {"ETag": item.etag, "Cache-Control": LONG_CACHE}
        if request.headers.get("if-none-match") == item.etag:
            return Response(status_code=304, headers=headers)
        return Response(item.path.read_bytes(), media_type="image/jpeg", headers=headers)

    @app.get("/api/images/{image_id}/thumbnail", responses=image_responses, response_class=Response)
    def thumbnail(image_id: int, request: Request,
                  v: Optional[str] = Query(None, max_length=64, description="cache buster")) -> Response:
        return cached("thumbnail", image_id, request)

    @app.get("/api/images/{image_id}/preview", responses=image_responses, response_class=Response)
    def preview(image_id: int, request: Request,
                v: Optional[str] = Query(None, max_length=64, description="cache buster")) -> Response:
        return cached("preview", image_id, request)

    file_responses = {
        200: {"content": {"image/*": {}, "video/*": {}}, "description": "The original file"},
        206: {"content": {"video/*": {}}, "description": "The requested bytes of a video (`Range: bytes=...`)"},
        304: {"description": "Not modified (a video's ETag matched)"},
        **error_responses(404),
        416: {"model": ErrorBody, "description": "The Range asks for no byte of the video"},
    }

    @app.get("/api/images/{image_id}/file", response_class=Response, responses=file_responses)
    def original(image_id: int, request: Request) -> Response:
        row = backend.row(image_id)
        if row.kind == "video":
            return video_file(row, request)
        data = media.original_bytes(row)
        return Response(data, media_type=media.media_type(data),
                        headers={"Cache-Control": "private, no-cache", "Content-Disposition": "inline"})


def video_file(row: CatalogRecord, request: Request) -> Response:
    """The video, whole (200) or the one byte range asked for (206; 416 when it asks for none), streamed.
    `If-None-Match` with its ETag is a 304; a `Range` under an `If-Range` that no longer holds is the whole file."""
    opened = media.open_video_file(row)
    try:
        response = _video_response(row, opened, request)
    except BaseException:
        os.close(opened.fd)
        raise
    if not isinstance(response, FileSpanResponse):  # a 304 or 416: no body from the file
        os.close(opened.fd)
    return response


def _video_response(row: CatalogRecord, opened: media.OpenVideo, request: Request) -> Response:
    headers = {"Accept-Ranges": "bytes", "ETag": opened.etag, "Last-Modified": opened.last_modified,
               "Cache-Control": "private, no-cache", "Content-Disposition": "inline"}
    if _etag_listed(request.headers.get("if-none-match"), opened.etag):
        return Response(status_code=304, headers=headers)
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if wanted and if_range is not None and if_range.strip() not in (opened.etag, opened.last_modified):
        wanted = None  # the client holds part of another version: it gets the whole file instead
    try:
        span = media.byte_range(wanted, opened.size)
    except media.Unsatisfiable:
        return error(416, f"the range {wanted[:100]!r} is outside the video ({opened.size} bytes)",
                     {**headers, "Content-Range": f"bytes */{opened.size}"})
    mime = media.video_type(row)
    if span is None:
        return FileSpanResponse(opened.fd, 0, opened.size, 200, headers, mime)
    first, last = span
    return FileSpanResponse(opened.fd, first, last - first + 1, 206,
                            {**headers, "Content-Range": f"bytes {first}-{last}/{opened.size}"}, mime)


def _etag_listed(header: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names `etag` (weak comparison, as RFC 9110 has it) or is `*`."""
    if not header:
        return False
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or any((t[2:] if t.startswith("W/") else t) == etag for t in tags)
