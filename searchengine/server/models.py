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
    text_encoder_note: str = ""
    device: str = "none"
    compute_precision: str = "none"


class Indexing(BaseModel):
    watching: bool
    running: bool
    done: int
    total: int
    last_error: Optional[str] = None
    last_summary: Optional[dict] = None


class ImageRecord(BaseModel):
    """What `searchengine show --json` says about the image, plus its URLs; metadata fields null when unknown."""

    model_config = ConfigDict(protected_namespaces=())

    id: int
    path: str
    size: int
    mtime: str
    indexed_at: str
    content_hash: str
    width: int
    height: int
    format: Optional[str] = None
    taken_at: Optional[str] = None
    taken_at_source: Optional[str] = None
    camera: Optional[str] = None
    make: Optional[str] = None
    model: Optional[str] = None
    lens: Optional[str] = None
    latitude: Optional[float] = None
    longitude: Optional[float] = None
    metadata_read: bool
    thumbnail: str
    preview: str
    file: str


def error_responses(*codes: int) -> dict:
    """OpenAPI entries for the 4xx answers a route can give, all `{"error": "..."}`."""
    why = {400: "Bad input", 401: "Token missing or wrong", 403: "Host not allowed", 404: "No such image",
           413: "Upload too large", 415: "Upload is not an image"}
    return {c: {"model": ErrorBody, "description": why[c]} for c in (400, 401, 403, *codes)}
