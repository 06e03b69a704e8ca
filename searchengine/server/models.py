"""The JSON API's shapes (they make /openapi.json say exactly what each route answers)."""
from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal, Optional, get_args, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

from searchengine.library.api import LibraryStatus
from searchengine.query.details import ImageDetails
from searchengine.server.backend import WatchState


class ErrorBody(BaseModel):
    error: str


Point = Annotated[list[float], Field(min_length=2, max_length=2)]


class TextLine(BaseModel):
    """A line of text read in the picture (index --ocr): its text, the reader's confidence, and its box."""

    text: str
    score: float = Field(description="the reader's confidence, 0 to 1")
    box: list[Point] = Field(min_length=4, max_length=4,
                             description="four corners [x, y], clockwise from top left, as fractions (0 to 1) of "
                                         "the upright picture's width and height (a video moment: of its frame)")


class Hit(BaseModel):
    """A photo, or a video at one moment (its frame's thumbnail and preview; `file` is the whole video)."""

    id: int
    path: str
    score: Optional[float] = Field(description="cosine similarity; null when filters alone list the newest")
    width: int
    height: int
    thumbnail: str
    preview: str
    file: str
    kind: Literal["image", "video"]
    start_s: Optional[float] = Field(description="a video moment's start, seconds; null for a photo")
    end_s: Optional[float] = Field(description="its end")
    frame_s: Optional[float] = Field(description="the second of the frame its thumbnail shows")
    duration_s: Optional[float] = Field(description="the whole video's length")
    codec: Optional[str] = Field(description="the video's codec as FFmpeg names it (h264, hevc, vp9, av1...)")
    mime: Optional[str] = Field(description="the Content-Type of the video's `file`")
    words: Optional[list[TextLine]] = Field(
        None, description="only when the query used words (a `words` filter, or a text query's words fused with "
                          "CLIP): the lines of the picture's text that hold them")


class Moment(BaseModel):
    """One moment (catalog row) of a video: its span, its frame, and that frame's images."""

    id: int
    start_s: float
    end_s: float
    frame_s: float
    thumbnail: str
    preview: str


class Results(BaseModel):
    results: list[Hit]


def _model_of(cls: type, name: str, doc: str | None = None, override: dict[str, Any] | None = None,
              extra: dict[str, Any] | None = None, defaults: bool = True) -> type[BaseModel]:
    """The pydantic shape of dataclass `cls` (field for field, in order; `override` retypes some, `extra` adds
    some at the end), so a record the API answers with is typed once, where it is made. Optional fields
    default to None; other dataclass defaults become the schema's unless `defaults` is False (a route that
    always sends every field)."""
    hints = get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        kind = (override or {}).get(f.name, hints[f.name])
        if defaults and f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = None if type(None) in get_args(kind) else ...
        fields[f.name] = (kind, default)
    for key, kind in (extra or {}).items():
        fields[key] = (kind, ...)
    return create_model(name, __doc__=doc, __config__=ConfigDict(protected_namespaces=()), **fields)


Status = _model_of(LibraryStatus, "Status")
Indexing = _model_of(WatchState, "Indexing", defaults=False)
ImageRecord = _model_of(
    ImageDetails, "ImageRecord",
    "What `searchengine show --json` says about the image, plus its URLs; metadata fields null when unknown, "
    "`text` and `text_lines` null when its text was not read (index --ocr), `text` empty when it has none.",
    override={"width": int, "height": int, "text_lines": Optional[list[TextLine]]},
    extra={"thumbnail": str, "preview": str, "file": str, "mime": Optional[str], "moments": list[Moment]})


def error_responses(*codes: int) -> dict:
    """OpenAPI entries for the 4xx answers a route can give, all `{"error": "..."}`."""
    why = {400: "Bad input", 401: "Token missing or wrong", 403: "Host not allowed", 404: "No such image",
           413: "Upload too large", 415: "Upload is not an image"}
    return {c: {"model": ErrorBody, "description": why[c]} for c in (400, 401, 403, *codes)}
