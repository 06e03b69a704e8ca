"""A video's capture time, place and camera, from its container's tags (keys compared case-insensitively).

Every field is read on its own: an odd value leaves that field None, never fails the file.

`taken_at` sources:
* ``quicktime``: ``com.apple.quicktime.creationdate``, local wall-clock time with its offset (iPhones, many
  Androids), an exact instant;
* ``quicktime-local``: the same tag without an offset, a wall-clock time read in the indexing machine's zone;
* ``container``: ``creation_time`` (MP4 mvhd, Matroska DateUTC), UTC. 1904-01-01 and 1970-01-01 are clocks
  never set (QuickTime's and Unix's epochs) and are ignored.
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from typing import Callable, Mapping, TypeVar

from indexer.images.metadata import ImageMetadata

MIN_YEAR, MAX_YEAR = 1826, 2200  # as for photos: anything outside is a broken clock
MAX_TEXT = 200
UNSET_DATES = {(1904, 1, 1), (1970, 1, 1)}

QUICKTIME_DATE = "com.apple.quicktime.creationdate"
CREATION_TIME = "creation_time"
LOCATION_KEYS = ("com.apple.quicktime.location.iso6709", "location", "location-eng")
MAKE_KEYS = ("com.apple.quicktime.make", "com.android.manufacturer", "make")
MODEL_KEYS = ("com.apple.quicktime.model", "com.android.model", "model")

_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,]\d+)?\s*(Z|[+-]\d{2}:?\d{2})?$")
# ISO 6709 as phones write it: +DD.DDDD+DDD.DDDD[+AAA.AAA][CRS...]/ (also +DDMM.MM and +DDMMSS.S forms)
_ISO6709 = re.compile(r"^([+-]\d+(?:\.\d*)?)([+-]\d+(?:\.\d*)?)(?:[+-]\d+(?:\.\d*)?)?(?:CRS[^/]*)?/?$")

T = TypeVar("T")
When = tuple[float, str, "str | None", str]


def _safe(read: Callable[[], T]) -> T | None:
    try:
        return read()
    except Exception:
        return None


def merged_tags(*sources: Mapping[str, str]) -> dict[str, str]:
    """Tags with lower-case keys; an earlier source (the container) wins over a later one (the stream)."""
    tags: dict[str, str] = {}
    for source in sources:
        for key, value in dict(source or {}).items():
            if isinstance(key, str) and isinstance(value, str):
                tags.setdefault(key.lower(), value)
    return tags


def metadata_from_tags(tags: Mapping[str, str], width: int, height: int, format: str) -> ImageMetadata:
    """The catalog's metadata record for a video: `tags` from merged_tags, size as displayed."""
    when = _safe(lambda: _quicktime_date(tags.get(QUICKTIME_DATE))) or _safe(
        lambda: _creation_time(tags.get(CREATION_TIME)))
    place = next((p for p in (_safe(lambda k=k: _iso6709(tags.get(k))) for k in LOCATION_KEYS) if p), None)
    return ImageMetadata(
        *(when or (None, None, None, None)), width=width, height=height, format=format,
        make=_first_text(tags, MAKE_KEYS), model=_first_text(tags, MODEL_KEYS), lens=None,
        latitude=place[0] if place else None, longitude=place[1] if place else None)


def text(value: object) -> str | None:
    """A printable one-line value, or None for blank, only spaces/NULs, or not text."""
    if not isinstance(value, str):
        return None
    value = " ".join(value.replace("\x00", " ").split())
    return value[:MAX_TEXT] if value and value.isprintable() else None


def _first_text(tags: Mapping[str, str], keys: tuple[str, ...]) -> str | None:
    return next((v for v in (_safe(lambda k=k: text(tags.get(k))) for k in keys) if v), None)


def _parse(raw: object) -> tuple[datetime, timezone | None] | None:
    """ISO 8601 date-time with an optional offset (Z, +HH:MM, +HHMM): (wall-clock time, offset or None)."""
    value = text(raw)
    match = _DATE.match(value) if value else None
    if not match:
        return None
    local = datetime(*(int(v) for v in match.groups()[:6]))  # raises on month 13, day 0...
    if not MIN_YEAR <= local.year <= MAX_YEAR:
        return None
    return local, _offset(match.group(7))


def _offset(raw: str | None) -> timezone | None:
    if raw is None:
        return None
    if raw == "Z":
        return timezone.utc
    digits = raw[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:])
    if minutes >= 60 or timedelta(hours=hours, minutes=minutes) > timedelta(hours=14):
        return None
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if raw[0] == "-" else delta)


def _quicktime_date(raw: object) -> When | None:
    parsed = _parse(raw)
    if parsed is None:
        return None
    local, offset = parsed
    if offset is None:
        return local.timestamp(), local.isoformat(), None, "quicktime-local"
    return local.replace(tzinfo=offset).timestamp(), local.isoformat(), _format_offset(offset), "quicktime"


def _creation_time(raw: object) -> When | None:
    parsed = _parse(raw)
    if parsed is None or (parsed[0].year, parsed[0].month, parsed[0].day) in UNSET_DATES:
        return None
    local, offset = parsed  # written in UTC; a stated offset is honoured, none means UTC
    instant = local.replace(tzinfo=offset or timezone.utc)
    return instant.timestamp(), local.isoformat(), _format_offset(offset or timezone.utc), "container"


def _format_offset(zone: timezone) -> str:
    minutes = int(zone.utcoffset(None).total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _iso6709(raw: object) -> tuple[float, float] | None:
    """(latitude, longitude) from an ISO 6709 string; None for 0,0 (no fix) or out of range."""
    value = text(raw)
    match = _ISO6709.match(value) if value else None
    if not match:
        return None
    lat, lon = _angle(match.group(1), 2), _angle(match.group(2), 3)
    if lat is None or lon is None or abs(lat) > 90 or abs(lon) > 180 or (lat == 0 and lon == 0):
        return None
    return lat, lon


def _angle(raw: str, degree_digits: int) -> float | None:
    """Signed degrees from ±D.D, ±DM.M or ±DMS.S, told apart by the count of integer digits."""
    sign = -1.0 if raw[0] == "-" else 1.0
    whole, _, fraction = raw[1:].partition(".")
    fraction_part = float("0." + fraction) if fraction else 0.0
    parts = {degree_digits: 1, degree_digits + 2: 2, degree_digits + 4: 3}.get(len(whole))
    if parts is None:
        return None
    fields = [int(whole[:degree_digits])] + [int(whole[degree_digits + 2 * i:degree_digits + 2 * i + 2])
                                             for i in range(parts - 1)]
    fields[-1] += fraction_part
    if any(f >= 60 for f in fields[1:]):
        return None
    degrees = sum(f / 60 ** i for i, f in enumerate(fields))
    return sign * degrees if math.isfinite(degrees) else None
