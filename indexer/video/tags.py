"""A video's capture time, place and camera, from its container's tags (keys compared case-insensitively).

Every field is read on its own: an odd value leaves that field None, never fails the file.

`taken_at` sources:
* ``quicktime``: ``com.apple.quicktime.creationdate``, local wall-clock time with its offset (iPhones, many
  Androids), an exact instant;
* ``quicktime-local``: the same tag without an offset, a wall-clock time read in the indexing machine's zone;
* ``container``: ``creation_time`` (MP4 mvhd, Matroska DateUTC), UTC. 1904-01-01 and 1970-01-01 are clocks
  never set (QuickTime's and Unix's epochs) and are ignored.
Dates are read with photos' ISO 8601 reader and text with their tag reader (indexer/images/metadata.py), so
offsets, the 1826-2200 range and blank values mean the same for both.
"""
from __future__ import annotations

import math
import re
from datetime import timezone
from typing import Mapping

from indexer.images.metadata import ImageMetadata, Taken, iso_taken_at, safe, tag_text

UNSET_DATES = ("1904-01-01", "1970-01-01")  # QuickTime's and Unix's epochs: a clock never set

QUICKTIME_DATE = "com.apple.quicktime.creationdate"
CREATION_TIME = "creation_time"
LOCATION_KEYS = ("com.apple.quicktime.location.iso6709", "location", "location-eng")
MAKE_KEYS = ("com.apple.quicktime.make", "com.android.manufacturer", "make")
MODEL_KEYS = ("com.apple.quicktime.model", "com.android.model", "model")

# ISO 6709 as phones write it: +DD.DDDD+DDD.DDDD[+AAA.AAA][CRS...]/ (also +DDMM.MM and +DDMMSS.S forms)
_ISO6709 = re.compile(r"^([+-]\d+(?:\.\d*)?)([+-]\d+(?:\.\d*)?)(?:[+-]\d+(?:\.\d*)?)?(?:CRS[^/]*)?/?$")


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
    when = safe(lambda: _quicktime_date(tags.get(QUICKTIME_DATE))) or safe(
        lambda: _creation_time(tags.get(CREATION_TIME)))
    place = next((p for p in (safe(lambda k=k: _iso6709(tags.get(k))) for k in LOCATION_KEYS) if p), None)
    return ImageMetadata(
        *(when or (None, None, None, None)), width=width, height=height, format=format,
        make=_first_text(tags, MAKE_KEYS), model=_first_text(tags, MODEL_KEYS), lens=None,
        latitude=place[0] if place else None, longitude=place[1] if place else None)


def _first_text(tags: Mapping[str, str], keys: tuple[str, ...]) -> str | None:
    return next((v for v in (safe(lambda k=k: tag_text(tags.get(k))) for k in keys) if v), None)


def _quicktime_date(raw: object) -> Taken | None:
    """Apple's creation date, parsed as photos' XMP dates are (ISO 8601; "-local" without an offset)."""
    value = tag_text(raw)
    return iso_taken_at(value, "quicktime") if value else None


def _creation_time(raw: object) -> Taken | None:
    """The container's creation time: written in UTC (a stated offset is honoured); an unset clock is None."""
    value = tag_text(raw)
    when = iso_taken_at(value, "container", assume=timezone.utc) if value else None
    return None if when is None or when[1].startswith(UNSET_DATES) else when


def _iso6709(raw: object) -> tuple[float, float] | None:
    """(latitude, longitude) from an ISO 6709 string; None for 0,0 (no fix) or out of range."""
    value = tag_text(raw)
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
