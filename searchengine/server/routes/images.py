"""Image routes, by catalog id only (no route takes a path): the record (`/api/images/{id}`), the cached
thumbnail and preview (ETag, long cache), and the original file."""
from __future__ import annotations

from dataclasses import asdict
from typing import Optional

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from indexer.errors import ImageNotFoundError
from searchengine.server import media
from searchengine.server.backend import Backend, displayed_size, urls
from searchengine.server.models import ImageRecord, error_responses

LONG_CACHE = "private, max-age=31536000, immutable"


def add_image_routes(app: FastAPI, backend: Backend) -> None:
    @app.get("/api/images/{image_id}", response_model=ImageRecord, responses=error_responses(404))
    def image(image_id: int) -> dict:
        row = backend.row(image_id)
        if not media.unchanged(row):
            raise ImageNotFoundError(f"image {image_id} is gone or changed since it was indexed")
        with backend.read_lock:
            details = asdict(backend.library.show(row.id))
        width, height = displayed_size(row, backend.dims)
        return {**details, "width": width, "height": height, **urls(row)}

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

    @app.get("/api/images/{image_id}/file", response_class=Response,
             responses={200: {"content": {"image/*": {}}, "description": "The original file"}, **error_responses(404)})
    def original(image_id: int) -> Response:
        data = media.original_bytes(backend.row(image_id))
        return Response(data, media_type=media.media_type(data),
                        headers={"Cache-Control": "private, no-cache", "Content-Disposition": "inline"})
