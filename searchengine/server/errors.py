"""Every error the app answers is `{"error": "..."}` with a fitting status: validation 400, unknown route or
image 404, bad upload 413/415, bad query 400, a library that cannot be read 503."""
from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from indexer.errors import ImageNotFoundError, QueryError, SearchEngineError
from searchengine.server.uploads import UploadError


class AsciiJSONResponse(JSONResponse):
    """Paths that are not valid UTF-8 travel as \\udcXX escapes, exactly as `search --json` writes them."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("ascii")


def error(status: int, message: str, headers: dict | None = None) -> AsciiJSONResponse:
    return AsciiJSONResponse({"error": message}, status_code=status, headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return error(400, f"bad {where}: {first.get('msg', 'invalid value')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # Starlette names only the first route's methods; a path may have several
            headers = {"Allow": ", ".join(sorted(_methods_for(request)))}
        return error(exc.status_code, str(exc.detail), headers)

    @app.exception_handler(ImageNotFoundError)
    async def not_found(_request: Request, exc: ImageNotFoundError) -> Response:
        return error(404, str(exc))

    @app.exception_handler(UploadError)
    async def bad_upload(_request: Request, exc: UploadError) -> Response:
        return error(exc.status, exc.message)

    @app.exception_handler(QueryError)
    async def bad_query(_request: Request, exc: QueryError) -> Response:
        return error(400, str(exc))

    @app.exception_handler(SearchEngineError)
    async def unavailable(_request: Request, exc: SearchEngineError) -> Response:
        return error(503, f"library unavailable: {exc}")


def _methods_for(request: Request) -> set[str]:
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE and getattr(route, "methods", None):
            methods |= set(route.methods)
    return methods
