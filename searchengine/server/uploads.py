"""Search-by-image uploads: capped while they stream in, checked to be an image before any model work.

Nothing is written to the library; the parser's spool (memory, or a temp file past 1 MB) is closed with
the request.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import AsyncIterator

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

# each filter field and its longest value (as the query parameters of the same names; `in` within a part's 1 KiB)
FILTER_LIMITS = {"after": 64, "before": 64, "in": 1000, "camera": 200, "near": 100, "format": 16, "orientation": 16,
                 "kind": 16, "words": 1000}
FILTER_FIELDS = tuple(FILTER_LIMITS)
MAX_LIMIT = 1000
MAX_OFFSET = 100_000
ENVELOPE_BYTES = 64 * 1024  # multipart boundaries, headers and the small fields around the image

UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["image"],
            "additionalProperties": False,
            "properties": {
                "image": {"type": "string", "format": "binary", "description": "any image file"},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50},
                "offset": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
                "moments": {"type": "boolean", "default": False,
                            "description": "every matching moment of a video, not each video once"},
                **{name: {"type": "string", "maxLength": limit} for name, limit in FILTER_LIMITS.items()},
            },
        }}},
    }
}


class UploadError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Upload:
    data: bytes
    limit: int
    offset: int
    filters: object = None  # SearchFilters
    moments: bool = False


async def read_upload(request: Request, max_bytes: int) -> Upload:
    """Parse the multipart body, refusing it as soon as it is known to exceed `max_bytes`."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "multipart/form-data":
        raise UploadError(400, "send the image as multipart/form-data, in a field named `image`")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes + ENVELOPE_BYTES):
        raise UploadError(413, f"upload too large (limit {max_bytes // (1 << 20)} MB)")
    parser = MultiPartParser(request.headers, _capped(request.stream(), max_bytes + ENVELOPE_BYTES),
                             max_files=1, max_fields=3 + len(FILTER_FIELDS), max_part_size=1024)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise UploadError(400, f"bad multipart body: {exc.message}") from None
    try:
        unknown = sorted(set(form.keys()) - {"image", "limit", "offset", "moments", *FILTER_FIELDS})
        if unknown:
            raise UploadError(400, f"unknown form field {unknown[0][:40]!r} (expected image, limit, offset, "
                                   "moments, or a filter)")
        image = form.get("image")
        if not isinstance(image, UploadFile):
            raise UploadError(400, "no file in the `image` field")
        data = await image.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise UploadError(413, f"upload too large (limit {max_bytes // (1 << 20)} MB)")
        return Upload(data, _int_field(form.get("limit"), "limit", 50, 1, MAX_LIMIT),
                      _int_field(form.get("offset"), "offset", 0, 0, MAX_OFFSET), _filters(form),
                      _bool_field(form.get("moments"), "moments"))
    finally:
        await form.close()


async def _capped(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > limit:
            raise UploadError(413, f"upload too large (limit {limit // (1 << 20)} MB)")
        yield chunk


def _filters(form) -> object:
    from searchengine.query.filters import FilterError, SearchFilters

    values = {}
    for name in FILTER_FIELDS:
        value, limit = form.get(name), FILTER_LIMITS[name]
        if value is not None and not isinstance(value, str) or isinstance(value, str) and len(value) > limit:
            raise UploadError(400, f"`{name}` must be a text of at most {limit} characters")
        values["folder" if name == "in" else name] = value or None
    try:
        return SearchFilters.parse(**values)
    except FilterError as exc:
        raise UploadError(400, str(exc)) from None


def _int_field(value: object, name: str, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    if not isinstance(value, str) or not value.strip().lstrip("-").isdigit() or len(value) > 12:
        raise UploadError(400, f"`{name}` must be an integer")
    number = int(value)
    if not low <= number <= high:
        raise UploadError(400, f"`{name}` must be between {low} and {high}")
    return number


def _bool_field(value: object, name: str) -> bool:
    """`true` or `false`, as the schema's boolean is written in a form; absent: false."""
    if value is None:
        return False
    if value in ("true", "false"):
        return value == "true"
    raise UploadError(400, f"`{name}` must be true or false")


def check_image(data: bytes) -> None:
    """Refuse non-images and decompression bombs from the header, before any pixel or model work."""
    from PIL import Image

    from indexer.images import decode as imaging  # noqa: F401 - sets Image.MAX_IMAGE_PIXELS

    if not data:
        raise UploadError(400, "the uploaded file is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Image.DecompressionBombError:
        raise UploadError(413, "image too large (decompression bomb)") from None
    except Exception:  # noqa: BLE001 - whatever PIL raises, it is not an image we can read
        raise UploadError(415, "not an image (or a format that cannot be read)") from None
    if width * height > (Image.MAX_IMAGE_PIXELS or 0):
        raise UploadError(413, f"image too large ({width}x{height} pixels, decompression bomb)")
