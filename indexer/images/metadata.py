"""Photo metadata read from an already opened PIL image: capture time, displayed size, format, camera, GPS.

Runs in decode workers on the image they open anyway (no second read of the file). Every field is read on its
own and anything odd (wrong types, year 0, NaN GPS, truncated IFDs, zero denominators) leaves that field empty:
metadata never fails a file.

`taken_at` is UTC epoch seconds, sortable across sources. It comes from the first of these that holds a usable
date (an unreadable or absurd one falls through to the next), and `taken_at_source` says which:
* ``exif``: EXIF DateTimeOriginal with OffsetTimeOriginal, an exact instant;
  ``exif-local``: DateTimeOriginal without a (valid) offset, a wall-clock time read in the indexing machine's zone;
* ``xmp`` / ``xmp-local``: XMP ``exif:DateTimeOriginal``, else ``photoshop:DateCreated`` (what editors and some
  phones write instead of EXIF), ISO 8601 with or without an offset; a date alone is local midnight;
* ``exif-digitized`` / ``exif-digitized-local``: EXIF DateTimeDigitized with OffsetTimeDigitized;
* ``exif-datetime`` / ``exif-datetime-local``: EXIF IFD0 DateTime (last changed) with OffsetTime;
* (videos: the container's creation time, read elsewhere;)
* ``mtime``: none of the above, the file's modification time (`ImageMetadata.with_mtime_fallback`).
The ``-local`` variants carry no offset. Each EXIF date takes its SubSecTime* tag (SubSecTimeOriginal,
SubSecTimeDigitized, SubSecTime) and XMP its fractional second into `taken_at`; `taken_at_local` keeps the
wall-clock time as written in whole seconds (ISO, no zone, the fraction dropped) and `taken_at_offset` the offset
when known. XMP is read from the packet PIL leaves in ``img.info`` (JPEG APP1, PNG iTXt, WebP, TIFF, HEIF/AVIF),
its first 64 KB only, with regular expressions (no XML parser, no defusedxml).
A make or model that is empty or only spaces/NULs is unknown (None).
"""
from __future__ import annotations

import io
import math
import re
import warnings
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple, TypeVar

if TYPE_CHECKING:
    from PIL import Image

# stored per row; rows below it (or NULL) get a header-only pass on the next index run.
# 2: dates also from XMP, DateTimeDigitized and DateTime, sub-seconds; blank make/model as unknown.
METADATA_VERSION = 2

EXIF_IFD, GPS_IFD = 0x8769, 0x8825
ORIENTATION, MAKE, MODEL = 0x0112, 0x010F, 0x0110
DATETIME_ORIGINAL, OFFSET_TIME_ORIGINAL, LENS_MODEL = 0x9003, 0x9011, 0xA434
DATETIME_DIGITIZED, OFFSET_TIME_DIGITIZED = 0x9004, 0x9012
DATETIME, OFFSET_TIME = 0x0132, 0x9010  # IFD0 DateTime; its offset lives in the Exif IFD
SUBSEC_TIME, SUBSEC_TIME_ORIGINAL, SUBSEC_TIME_DIGITIZED = 0x9290, 0x9291, 0x9292
GPS_LAT_REF, GPS_LAT, GPS_LON_REF, GPS_LON = 1, 2, 3, 4
MIN_YEAR, MAX_YEAR = 1826, 2200  # the oldest surviving photograph; anything outside is a broken clock
MAX_TEXT = 200
MAX_XMP = 64 * 1024  # bytes of an XMP packet looked at; dates sit in the first rdf:Description
XMP_DATES = ("exif:DateTimeOriginal", "photoshop:DateCreated")  # in this order

FORMATS = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
           "TIFF": "tiff", "HEIF": "heic", "HEIC": "heic", "AVIF": "avif"}

_DATE = re.compile(r"^\s*(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"^\s*(?:([+-])(\d{2}):?(\d{2})|Z)\s*$")
_SUBSEC = re.compile(r"^\s*(\d{1,9})")
# XMP dates: ISO 8601 "YYYY-MM-DD[THH:MM[:SS[.fff]][Z|+HH:MM]]" (":" date separators and a space tolerated)
_ISO = re.compile(r"^\s*(\d{4})[-:](\d{2})[-:](\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
                  r"\s*(Z|[+-]\d{2}:?\d{2})?)?\s*$")
_XMP_PATTERNS = tuple(
    (re.compile(rf"(?<![\w:.-]){re.escape(name)}\s*=\s*([\"'])([^\"'<>]{{0,100}})\1"),  # attribute form
     re.compile(rf"<{re.escape(name)}(?:\s[^<>]{{0,500}})?>\s*([^<>]{{0,100}}?)\s*</{re.escape(name)}\s*>"))  # element
    for name in XMP_DATES)

Taken = Tuple[float, str, Optional[str], str]  # (UTC epoch seconds, local ISO, offset or None, source)

T = TypeVar("T")


@dataclass(frozen=True)
class ImageMetadata:
    """What the catalog stores per image besides path, size and embedding; None = unknown."""

    taken_at: float | None = None
    taken_at_local: str | None = None
    taken_at_offset: str | None = None
    taken_at_source: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    make: str | None = None
    model: str | None = None
    lens: str | None = None
    latitude: float | None = None
    longitude: float | None = None

    def with_mtime_fallback(self, mtime_ns: int) -> "ImageMetadata":
        """The file's mtime as `taken_at` when EXIF gave no usable date."""
        if self.taken_at is not None:
            return self
        when = datetime.fromtimestamp(mtime_ns / 1e9).astimezone()
        local = when.replace(tzinfo=None, microsecond=0).isoformat()
        return replace(self, taken_at=mtime_ns / 1e9, taken_at_local=local,
                       taken_at_offset=_format_offset(when.utcoffset()), taken_at_source="mtime")


def safe(read: Callable[[], T]) -> T | None:
    """One field's reader; any failure on odd input leaves the field empty."""
    try:
        return read()
    except Exception:
        return None


def read_metadata(img: "Image.Image", exif: Any = None) -> ImageMetadata:
    """Metadata of a freshly opened image (call before draft/load changes its size); `exif` if already read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL warns about every odd tag; odd tags are simply left out
        return _read(img, exif)


def _read(img: "Image.Image", exif: Any) -> ImageMetadata:
    if exif is None:
        exif = safe(lambda: _header_exif(img)) or {}
    sub = safe(lambda: exif.get_ifd(EXIF_IFD)) or {}
    gps = safe(lambda: exif.get_ifd(GPS_IFD)) or {}
    size = safe(lambda: _displayed_size(img.size, exif.get(ORIENTATION))) or (None, None)
    when = _capture_time(img, exif, sub)
    place = safe(lambda: _gps(gps)) or (None, None)
    return ImageMetadata(
        *(when or (None, None, None, None)), width=size[0], height=size[1],
        format=safe(lambda: FORMATS.get(img.format or "", (img.format or "").lower() or None)),
        make=safe(lambda: tag_text(exif.get(MAKE))), model=safe(lambda: tag_text(exif.get(MODEL))),
        lens=safe(lambda: tag_text(sub.get(LENS_MODEL) or exif.get(LENS_MODEL))),
        latitude=place[0], longitude=place[1])


def header_metadata(data: bytes) -> ImageMetadata:
    """Metadata from a file's bytes reading headers only (no pixel decode); empty when PIL cannot open it."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return read_metadata(img)
    except Exception:
        return ImageMetadata()


def _header_exif(img: "Image.Image") -> Any:
    # PNG's getexif decodes the whole image when the eXIf chunk follows the pixels: not worth a full decode
    if img.format == "PNG" and "exif" not in img.info:
        return {}
    return img.getexif()


def _displayed_size(size: tuple[int, int], orientation: Any) -> tuple[int, int]:
    w, h = int(size[0]), int(size[1])
    return (h, w) if isinstance(orientation, int) and orientation in (5, 6, 7, 8) else (w, h)


def tag_text(value: Any) -> str | None:
    """A tag's printable one-line text (bytes as UTF-8), at most MAX_TEXT long; None when blank or only
    spaces/NULs (no camera), or not text."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = " ".join(value.replace("\x00", " ").split())
    return value[:MAX_TEXT] if value and value.isprintable() else None


def _capture_time(img: "Image.Image", exif: Any, sub: Any) -> Taken | None:
    """The first usable date in priority order (see the module docstring); each source read on its own."""
    def tag(number: int, first: Any = sub, then: Any = exif) -> Any:
        return first.get(number) or then.get(number)  # some writers put Exif-IFD tags in IFD0 and back

    readers: tuple[Callable[[], Taken | None], ...] = (
        lambda: _taken_at(tag(DATETIME_ORIGINAL), tag(OFFSET_TIME_ORIGINAL), tag(SUBSEC_TIME_ORIGINAL), "exif"),
        lambda: _xmp_taken_at(_xmp_packet(img)),
        lambda: _taken_at(tag(DATETIME_DIGITIZED), tag(OFFSET_TIME_DIGITIZED), tag(SUBSEC_TIME_DIGITIZED),
                          "exif-digitized"),
        lambda: _taken_at(tag(DATETIME, exif, sub), tag(OFFSET_TIME), tag(SUBSEC_TIME), "exif-datetime"),
    )
    for read in readers:
        if (when := safe(read)) is not None:
            return when
    return None


def _taken_at(raw: Any, raw_offset: Any, raw_subsec: Any = None, source: str = "exif") -> Taken | None:
    """(UTC epoch seconds, local ISO, offset or None, source) from EXIF's 'YYYY:MM:DD HH:MM:SS', offset, sub-second.

    Without a valid offset the source gets "-local" and the time is read in this machine's zone."""
    text = tag_text(raw)
    match = _DATE.match(text) if text else None
    if not match:
        return None
    return _dated(tuple(int(v) for v in match.groups()), _subsec(tag_text(raw_subsec)), tag_text(raw_offset), source)


def _dated(parts: tuple[int, ...], fraction: float, offset_text: str | None, source: str,
           assume: timezone | None = None) -> Taken | None:
    local = datetime(*parts)  # raises on month 13, day 0, year 0...
    if not MIN_YEAR <= local.year <= MAX_YEAR:
        return None
    offset = _parse_offset(offset_text) or assume
    if offset is None:
        return local.timestamp() + fraction, local.isoformat(), None, f"{source}-local"
    return (local.replace(tzinfo=offset).timestamp() + fraction, local.isoformat(),
            _format_offset(offset.utcoffset(None)), source)


def _subsec(text: str | None) -> float:
    """SubSecTime*'s digits as the fraction of a second they write ("345" = 0.345, "05" = 0.05); 0 when odd."""
    match = _SUBSEC.match(text) if text else None
    return int(match.group(1)) / 10 ** len(match.group(1)) if match else 0.0


def _xmp_packet(img: "Image.Image") -> str | None:
    """The image's XMP packet as text, its first MAX_XMP bytes; None when it has none."""
    info = getattr(img, "info", None) or {}
    raw = info.get("xmp") or info.get("XML:com.adobe.xmp")
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw[:MAX_XMP]).decode("utf-8", "replace")
    return raw[:MAX_XMP] if isinstance(raw, str) else None


def _xmp_taken_at(packet: str | None) -> Taken | None:
    """The capture time from XMP exif:DateTimeOriginal, else photoshop:DateCreated (attribute or element form)."""
    if not packet:
        return None
    for attribute, element in _XMP_PATTERNS:
        for match in (attribute.search(packet), element.search(packet)):
            if match and (when := safe(lambda: iso_taken_at(match.groups()[-1], "xmp"))) is not None:
                return when
    return None


def iso_taken_at(text: str, source: str, assume: timezone | None = None) -> Taken | None:
    """From ISO 8601 "2021-05-01T10:11:12.345+02:00" (offset, seconds and time optional); a date alone is midnight.
    Without an offset the time is in `assume` when given (a container's UTC clock), else local ("-local")."""
    match = _ISO.match(text)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    parts = tuple(int(v or 0) for v in (year, month, day, hour, minute, second))
    seconds = int(fraction[:9]) / 10 ** len(fraction[:9]) if fraction else 0.0
    return _dated(parts, seconds, offset if hour is not None else None, source, assume)


def _parse_offset(text: str | None) -> timezone | None:
    match = _OFFSET.match(text) if text else None
    if not match:
        return None
    sign, hours, minutes = match.groups()
    if sign is None:
        return timezone.utc
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    if delta > timedelta(hours=14) or int(minutes) >= 60:
        return None
    return timezone(-delta if sign == "-" else delta)


def _format_offset(delta: timedelta | None) -> str | None:
    if delta is None:
        return None
    minutes = int(delta.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _gps(gps: dict) -> tuple[float, float] | None:
    lat = _degrees(gps.get(GPS_LAT), gps.get(GPS_LAT_REF), "SN", 90.0)
    lon = _degrees(gps.get(GPS_LON), gps.get(GPS_LON_REF), "WE", 180.0)
    if lat is None or lon is None or (lat == 0.0 and lon == 0.0):  # 0,0: a phone without a fix, not a place
        return None
    return lat, lon


def _degrees(value: Any, ref: Any, signs: str, bound: float) -> float | None:
    """Signed decimal degrees from EXIF's (degrees, minutes, seconds) rationals and N/S or E/W reference."""
    parts = value if isinstance(value, (tuple, list)) else (value,)
    if not 1 <= len(parts) <= 3:
        return None
    numbers = [float(p) for p in parts]  # IFDRational with a zero denominator gives NaN, caught below
    degrees = sum(n / 60 ** i for i, n in enumerate(numbers))
    if not math.isfinite(degrees) or any(n < 0 for n in numbers) or degrees > bound:
        return None
    ref_text = tag_text(ref)
    if ref_text and ref_text[0].upper() == signs[0]:
        return -degrees
    return degrees if not ref_text or ref_text[0].upper() == signs[1] else None
