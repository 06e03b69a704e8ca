"""Status routes: the library's status (`/api/status`, as `status --json`) and what `--watch` is doing
(`/api/indexing`)."""
from __future__ import annotations

from dataclasses import asdict

from fastapi import FastAPI

from searchengine.server.backend import Backend
from searchengine.server.models import Indexing, Status, error_responses


def add_status_routes(app: FastAPI, backend: Backend) -> None:
    @app.get("/api/status", response_model=Status, responses=error_responses())
    def status() -> dict:
        with backend.read_lock:
            return asdict(backend.library.status())

    @app.get("/api/indexing", response_model=Indexing, responses=error_responses())
    def indexing() -> dict:
        return asdict(backend.watch)
