"""The web app and JSON API: a thin layer over `Library`, reached by catalog id only (no route takes a path).

The routes live by group in routes/ (search, images, status, pages); what they share is in backend.py.
"""
from __future__ import annotations

from fastapi import FastAPI

from searchengine.library.api import Library
from searchengine.server.backend import Backend, ServerConfig, WatchState
from searchengine.server.errors import AsciiJSONResponse, add_error_handlers
from searchengine.server.routes.images import add_image_routes
from searchengine.server.routes.pages import add_pages
from searchengine.server.routes.search import add_search_routes
from searchengine.server.routes.status import add_status_routes
from searchengine.server.security import AccessPolicy, Guard

__all__ = ["ServerConfig", "WatchState", "create_app"]


def create_app(library: Library, config: ServerConfig | None = None, watch: WatchState | None = None) -> Guard:
    """The ASGI app: FastAPI routes behind the Host/token guard and the safety headers."""
    config = config or ServerConfig()
    backend = Backend(library, watch or WatchState(), text_process=config.text_process)
    app = FastAPI(title="searchengine", version="1", docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None,
                  default_response_class=AsciiJSONResponse)
    add_error_handlers(app)
    add_status_routes(app, backend)
    add_search_routes(app, backend, config)
    add_image_routes(app, backend)
    add_pages(app)
    app.openapi = lambda: _honest_openapi(app)
    return Guard(app, AccessPolicy(config.loopback, config.token))


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
