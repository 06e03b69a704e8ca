"""The web app and JSON API: a thin layer over `Library`, reached by catalog id only (no route takes a path)."""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, Optional

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from indexer.catalog_images import ImageRow
from indexer.errors import ImageNotFoundError, QueryError, SearchEngineError
from searchengine.filters import SearchFilters
from searchengine.library import Library, SearchHit
from searchengine.server import media
from searchengine.server.models import ImageRecord, Indexing, Results, Status, error_responses
from searchengine.server.security import AccessPolicy, Guard
from searchengine.server.uploads import MAX_LIMIT, MAX_OFFSET, UPLOAD_SCHEMA, UploadError, check_image, read_upload

TEXT_VECTORS_KEPT = 256
LONG_CACHE = "private, max-age=31536000, immutable"
STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/static/app.js": ("app.js", "text/javascript"),
          "/static/style.css": ("style.css", "text/css"), "/static/icon.svg": ("icon.svg", "image/svg+xml")}


class AsciiJSONResponse(JSONResponse):
    """Paths that are not valid UTF-8 travel as \\udcXX escapes, exactly as `search --json` writes them."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("ascii")


@dataclass
class ServerConfig:
    max_upload_bytes: int = 20 << 20
    token: Optional[str] = None
    loopback: bool = True


@dataclass
class WatchState:
    """What `--watch` is doing, for the page's status line."""

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
    dims: media.Dimensions = field(default_factory=media.Dimensions)
    texts: "OrderedDict[str, object]" = field(default_factory=OrderedDict)

    def text_vector(self, text: str):
        """The query vector of a text; the page asks again for each further page of a search, so keep a few."""
        with self.encode_lock:
            vector = self.texts.get(text)
            if vector is None:
                vector = self.library.text_vector(text)
                self.texts[text] = vector
                if len(self.texts) > TEXT_VECTORS_KEPT:
                    self.texts.popitem(last=False)
            else:
                self.texts.move_to_end(text)
            return vector

    def row(self, image_id: int) -> ImageRow:
        with self.read_lock:
            row = self.library.image(image_id)
        if row is None:
            raise ImageNotFoundError(f"no image with id {image_id} in the library")
        return row

    def hits(self, found: list[SearchHit]) -> dict:
        with self.read_lock:
            rows = self.library.images([h.id for h in found])
        return {"results": [_hit(h, rows[h.id], self.dims) for h in found if rows.get(h.id) is not None]}

    def search_vector(self, vector, limit: int, offset: int, filters: SearchFilters | None = None) -> dict:
        with self.read_lock:
            found = self.library.search_vector(vector, limit + offset, filters=filters or None)[offset:]
        return self.hits(found)


def _urls(row: ImageRow) -> dict[str, str]:
    version = row.content_hash.hex()[:12]
    base = f"/api/images/{row.id}"
    return {"thumbnail": f"{base}/thumbnail?v={version}", "preview": f"{base}/preview?v={version}",
            "file": f"{base}/file"}


def _dims(row: ImageRow, dims: media.Dimensions) -> tuple[int, int]:
    """Catalog metadata when the row has it, else the file's header (libraries made before metadata)."""
    return dims.get(row.path, row.content_hash, (row.extra.get("width"), row.extra.get("height")))


def _hit(hit: SearchHit, row: ImageRow, dims: media.Dimensions) -> dict:
    width, height = dims.get(row.path, row.content_hash, (hit.width, hit.height))
    return {"id": hit.id, "path": hit.path, "score": round(hit.score, 6), "width": width, "height": height,
            **_urls(row)}


def create_app(library: Library, config: ServerConfig | None = None, watch: WatchState | None = None) -> Guard:
    """The ASGI app: FastAPI routes behind the Host/token guard and the safety headers."""
    config = config or ServerConfig()
    backend = Backend(library, watch or WatchState())
    app = FastAPI(title="searchengine", version="1", docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None,
                  default_response_class=AsciiJSONResponse)
    _errors(app)
    _api(app, backend, config)
    _media_routes(app, backend)
    _pages(app)
    app.openapi = lambda: _honest_openapi(app)
    return Guard(app, AccessPolicy(config.loopback, config.token))


def _error(status: int, message: str, headers: dict | None = None) -> AsciiJSONResponse:
    return AsciiJSONResponse({"error": message}, status_code=status, headers=headers)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return _error(400, f"bad {where}: {first.get('msg', 'invalid value')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # Starlette names only the first route's methods; a path may have several
            headers = {"Allow": ", ".join(sorted(_methods_for(request)))}
        return _error(exc.status_code, str(exc.detail), headers)

    @app.exception_handler(ImageNotFoundError)
    async def not_found(_request: Request, exc: ImageNotFoundError) -> Response:
        return _error(404, str(exc))

    @app.exception_handler(UploadError)
    async def bad_upload(_request: Request, exc: UploadError) -> Response:
        return _error(exc.status, exc.message)

    @app.exception_handler(QueryError)
    async def bad_query(_request: Request, exc: QueryError) -> Response:
        return _error(400, str(exc))

    @app.exception_handler(SearchEngineError)
    async def unavailable(_request: Request, exc: SearchEngineError) -> Response:
        return _error(503, f"library unavailable: {exc}")


def _methods_for(request: Request) -> set[str]:
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE and getattr(route, "methods", None):
            methods |= set(route.methods)
    return methods


def filter_params(
        after: Optional[str] = Query(None, max_length=64, description="taken on or after (YYYY[-MM[-DD]])"),
        before: Optional[str] = Query(None, max_length=64, description="taken before (YYYY[-MM[-DD]])"),
        folder: Optional[str] = Query(None, alias="in", max_length=4096, description="under this folder"),
        camera: Optional[str] = Query(None, max_length=200, description="make or model contains this"),
        near: Optional[str] = Query(None, max_length=100, description="LAT,LON[,KM]"),
        format: Optional[str] = Query(None, max_length=16, description="jpeg, png, webp, gif, bmp, tiff, heic, avif"),
        orientation: Optional[str] = Query(None, max_length=16, description="landscape, portrait or square"),
) -> SearchFilters:
    """The CLI's search filters, parsed by the same code (a bad value is a 400 naming it)."""
    return SearchFilters.parse(after=after, before=before, folder=folder, camera=camera, near=near, format=format,
                               orientation=orientation)


LIMIT = Query(50, ge=1, le=MAX_LIMIT, description="results per page")
OFFSET = Query(0, ge=0, le=MAX_OFFSET, description="results to skip")


def _api(app: FastAPI, backend: Backend, config: ServerConfig) -> None:
    @app.get("/api/status", response_model=Status, responses=error_responses())
    def status() -> dict:
        with backend.read_lock:
            return asdict(backend.library.status())

    @app.get("/api/indexing", response_model=Indexing, responses=error_responses())
    def indexing() -> dict:
        return asdict(backend.watch)

    @app.get("/api/search", response_model=Results, responses=error_responses())
    def search_text(q: str = Query(min_length=1, max_length=2000, pattern=r"\S", description="what to look for"),
                    limit: int = LIMIT, offset: int = OFFSET,
                    filters: SearchFilters = Depends(filter_params)) -> dict:
        if not q.strip():
            raise QueryError("the query text is empty")
        return backend.search_vector(backend.text_vector(q), limit, offset, filters)

    @app.post("/api/search", response_model=Results, responses=error_responses(413, 415),
              openapi_extra=UPLOAD_SCHEMA)
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
        return await run_in_threadpool(backend.search_vector, vector, upload.limit, upload.offset, upload.filters)

    @app.get("/api/images/{image_id}/similar", response_model=Results, responses=error_responses(404))
    def similar(image_id: int, limit: int = LIMIT, offset: int = OFFSET,
                filters: SearchFilters = Depends(filter_params)) -> dict:
        with backend.read_lock:
            found = backend.library.similar(image_id, limit, offset, filters=filters or None)
        return backend.hits(found)

    @app.get("/api/images/{image_id}", response_model=ImageRecord, responses=error_responses(404))
    def image(image_id: int) -> dict:
        row = backend.row(image_id)
        if not media.unchanged(row):
            raise ImageNotFoundError(f"image {image_id} is gone or changed since it was indexed")
        with backend.read_lock:
            details = asdict(backend.library.show(row.id))
        width, height = _dims(row, backend.dims)
        return {**details, "width": width, "height": height, **_urls(row)}


def _media_routes(app: FastAPI, backend: Backend) -> None:
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


def _pages(app: FastAPI) -> None:
    files = resources.files("searchengine") / "static"
    for route, (name, kind) in STATIC.items():
        app.add_api_route(route, _static((files / name).read_bytes(), kind), methods=["GET"], include_in_schema=False)


def _static(body: bytes, kind: str):
    def page() -> Response:
        return Response(body, media_type=kind, headers={"Cache-Control": "no-cache"})

    return page


def _honest_openapi(app: FastAPI) -> dict:
    """FastAPI's schema, less the 422 it documents by default: validation errors here are 400 `{"error"}`."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema
