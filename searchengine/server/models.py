"""The JSON API's shapes (they make /openapi.json say exactly what each route answers)."""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict


class ErrorBody(BaseModel):
    error: str


class Hit(BaseModel):
    id: int
    path: str
    score: float
    width: int
    height: int
    thumbnail: str
    preview: str
    file: str


class Results(BaseModel):
    results: list[Hit]


class Status(BaseModel):
    library: str
    images: int
    failed: int
    model: str
    pretrained: str
    dim: int
    index: str
    text_encoder: str
    image_precision: str


class Indexing(BaseModel):
    watching: bool
    running: bool
    done: int
    total: int
    last_error: Optional[str] = None
    last_summary: Optional[dict] = None


class ImageRecord(BaseModel):
    """Core fields, then whatever metadata columns the catalog holds (taken_at, make, model...)."""

    model_config = ConfigDict(extra="allow")

    id: int
    path: str
    size: int
    width: int
    height: int
    modified_at: float
    indexed_at: float
    thumbnail: str
    preview: str
    file: str


def error_responses(*codes: int) -> dict:
    """OpenAPI entries for the 4xx answers a route can give, all `{"error": "..."}`."""
    why = {400: "Bad input", 401: "Token missing or wrong", 403: "Host not allowed", 404: "No such image",
           413: "Upload too large", 415: "Upload is not an image"}
    return {c: {"model": ErrorBody, "description": why[c]} for c in (400, 401, 403, *codes)}
