"""The page: its HTML, script, style and icon, served from the package (no build step)."""
from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import Response

STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/static/app.js": ("app.js", "text/javascript"),
          "/static/style.css": ("style.css", "text/css"), "/static/icon.svg": ("icon.svg", "image/svg+xml")}


def add_pages(app: FastAPI) -> None:
    files = resources.files("searchengine") / "static"
    for route, (name, kind) in STATIC.items():
        app.add_api_route(route, _static((files / name).read_bytes(), kind), methods=["GET"], include_in_schema=False)


def _static(body: bytes, kind: str):
    def page() -> Response:
        return Response(body, media_type=kind, headers={"Cache-Control": "no-cache"})

    return page
