"""Search filters: parsing of user-given values (CLI, Python API, server) and their SQL over the catalog.

Dates without a zone are read in this machine's local time zone, as EXIF dates without an offset are when
indexed, so `--after 2023-06-14` means from local midnight. `after` is inclusive, `before` exclusive.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Mapping

from indexer.catalog.matching import DISTANCE_FUNCTION, EARTH_RADIUS_KM, cameras_matching
from indexer.errors import QueryError

if TYPE_CHECKING:
    from indexer.catalog.store import Catalog

PARAM_NAMES = {"after": "after", "before": "before", "in": "folder", "camera": "camera", "near": "near",
               "format": "format", "orientation": "orientation", "kind": "kind",
               "words": "words"}  # server parameter -> SearchFilters.parse argument
MAX_CAMERA_TERMS = 200  # more matching cameras than this: a LIKE on every row is simpler than a longer OR
BOX_MARGIN_DEG = 1e-9  # so rounding never leaves a point at exactly KM outside the box
DEFAULT_NEAR_KM = 1.0
FORMAT_ALIASES = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png", "webp": "webp", "gif": "gif", "bmp": "bmp",
                  "tif": "tiff", "tiff": "tiff", "heic": "heic", "heif": "heic", "avif": "avif",
                  # videos: the container, by the file's extension
                  "mp4": "mp4", "m4v": "m4v", "mov": "mov", "3gp": "3gp", "mkv": "mkv", "webm": "webm", "avi": "avi"}
KINDS = {"image": "start_s IS NULL", "photo": "start_s IS NULL", "video": "start_s IS NOT NULL"}
ORIENTATIONS = {"landscape": "width>height", "portrait": "height>width", "square": "width=height"}

_PARTIAL_DATE = re.compile(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?$")


class FilterError(QueryError):
    """A filter value that cannot be understood; the message names the option."""


@dataclass(frozen=True)
class Near:
    latitude: float
    longitude: float
    km: float = DEFAULT_NEAR_KM


@dataclass(frozen=True)
class SearchFilters:
    """Conditions an image must meet, combined with AND; None means no condition."""

    after: float | None = None  # UTC epoch seconds, inclusive
    before: float | None = None  # UTC epoch seconds, exclusive
    folder: bytes | None = None  # absolute; that folder and everything below it
    camera: str | None = None  # case-insensitive substring of make or model
    near: Near | None = None
    format: str | None = None  # normalised: jpeg, png, webp, gif, bmp, tiff, heic, avif
    orientation: str | None = None  # landscape, portrait or square
    kind: str | None = None  # image or video
    words: str | None = None  # the text read in it holds these words (searchengine/query/words.py's syntax)

    def __bool__(self) -> bool:
        return any(v is not None for v in vars(self).values())

    @classmethod
    def parse(cls, after: str | None = None, before: str | None = None, folder: str | None = None,
              camera: str | None = None, near: str | None = None, format: str | None = None,
              orientation: str | None = None, kind: str | None = None, words: str | None = None) -> "SearchFilters":
        """From the strings a user types (the CLI's and the server's parameters of the same names)."""
        return cls(after=None if after is None else parse_date(after, "--after"),
                   before=None if before is None else parse_date(before, "--before"),
                   folder=None if folder is None else parse_folder(folder),
                   camera=None if camera is None else parse_camera(camera),
                   near=None if near is None else parse_near(near),
                   format=None if format is None else parse_format(format),
                   orientation=None if orientation is None else parse_orientation(orientation),
                   kind=None if kind is None else parse_kind(kind),
                   words=None if words is None else parse_word_filter(words))

    @classmethod
    def from_params(cls, params: "Mapping[str, str]") -> "SearchFilters":
        """From query parameters named like the CLI options (after, before, in, camera, near, format, orientation,
        kind, words);
        others are ignored, empty ones mean no condition."""
        given = {key: value for key, value in params.items() if key in PARAM_NAMES and value not in (None, "")}
        return cls.parse(**{PARAM_NAMES[key]: value for key, value in given.items()})

    def sql(self, catalog: "Catalog | None" = None) -> tuple[str, tuple]:
        """An SQL condition over the catalog's `images` columns, with its parameters.

        Given the catalog, a camera filter becomes the list of its matching cameras (found in the catalog's small
        `cameras` table), which SQLite answers through an index instead of testing every image row.
        """
        terms: list[str] = []
        params: list = []
        if self.near is not None:  # first: the bounding box narrows what the distance function sees
            box, box_params = _bounding_box(self.near)
            terms += [box, f"{DISTANCE_FUNCTION}(latitude, longitude, ?, ?) <= ?"]
            params += [*box_params, self.near.latitude, self.near.longitude, self.near.km]
        if self.after is not None:
            terms.append("taken_at >= ?")
            params.append(self.after)
        if self.before is not None:
            terms.append("taken_at < ?")
            params.append(self.before)
        if self.format is not None:
            terms.append("format = ?")
            params.append(self.format)
        if self.orientation is not None:
            terms.append(ORIENTATIONS[self.orientation])
        if self.kind is not None:
            terms.append(KINDS[self.kind])
        if self.words is not None:
            from searchengine.query.words import parse_words

            term, term_params = parse_words(self.words).condition()
            terms.append(term)
            params += term_params
        if self.camera is not None:
            term, term_params = _camera_condition(self.camera, catalog)
            terms.append(term)
            params += term_params
        if self.folder is not None:
            base = self.folder.rstrip(b"/")
            terms.append("(folder = ? OR (folder >= ? AND folder < ?))")  # b"0" follows b"/" in byte order
            params += [base or b"/", base + b"/", base + b"0"]
        return (" AND ".join(terms) or "1"), tuple(params)


def _camera_condition(text: str, catalog: "Catalog | None") -> tuple[str, list]:
    pattern = "%" + re.sub(r"([\\%_])", r"\\\1", text) + "%"
    cameras = cameras_matching(catalog, pattern) if catalog is not None else None
    if cameras is None or len(cameras) > MAX_CAMERA_TERMS:
        return "(make LIKE ? ESCAPE '\\' OR model LIKE ? ESCAPE '\\')", [pattern, pattern]
    if not cameras:
        return "0", []
    return "(" + " OR ".join(["(make IS ? AND model IS ?)"] * len(cameras)) + ")", [v for c in cameras for v in c]


def parse_date(text: str, option: str) -> float:
    """UTC epoch seconds of the start of `text`: 2023, 2023-06, 2023-06-14, or a full ISO timestamp."""
    value = text.strip()
    try:
        partial = _PARTIAL_DATE.match(value)
        if partial:
            year, month, day = (int(v) if v else 1 for v in partial.groups())
            return datetime(year, month, day).timestamp()
        if value.endswith(("Z", "z")):
            value = value[:-1] + "+00:00"
        return datetime.fromisoformat(value).timestamp()
    except (ValueError, OverflowError, OSError):
        raise FilterError(f"{option}: expected a date like 2023, 2023-06, 2023-06-14 or 2023-06-14T10:30:00"
                          f"[+02:00], got {text!r}") from None


def parse_word_filter(text: str) -> str:
    from searchengine.query.words import parse_words

    try:
        parse_words(text)
    except QueryError as exc:
        raise FilterError(str(exc)) from None
    return text


def parse_folder(text: str) -> bytes:
    if not text.strip():
        raise FilterError("--in: expected a folder, got an empty value")
    path = os.path.abspath(os.fsencode(os.path.expanduser(text)))
    return path.rstrip(b"/") or b"/"


def parse_camera(text: str) -> str:
    value = " ".join(text.split())
    if not value:
        raise FilterError("--camera: expected part of a camera make or model, got an empty value")
    return value


def parse_near(text: str) -> Near:
    """LAT,LON[,KM] in signed decimal degrees and kilometres."""
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        lat, lon = float(parts[0]), float(parts[1])
        km = float(parts[2]) if len(parts) == 3 else DEFAULT_NEAR_KM
    except ValueError:
        raise FilterError(f"--near: expected LAT,LON[,KM] in decimal degrees and kilometres, got {text!r}") from None
    if not (math.isfinite(lat) and -90 <= lat <= 90 and math.isfinite(lon) and -180 <= lon <= 180):
        raise FilterError(f"--near: latitude must lie in [-90, 90] and longitude in [-180, 180], got {text!r}")
    if not (math.isfinite(km) and km > 0):
        raise FilterError(f"--near: the distance must be a positive number of kilometres, got {text!r}")
    return Near(lat, lon, km)


def parse_format(text: str) -> str:
    value = text.strip().lower().lstrip(".")
    if value not in FORMAT_ALIASES:
        raise FilterError(f"--format: expected one of {', '.join(sorted(FORMAT_ALIASES))}, got {text!r}")
    return FORMAT_ALIASES[value]


def parse_kind(text: str) -> str:
    value = text.strip().lower()
    if value not in KINDS:
        raise FilterError(f"--kind: expected image or video, got {text!r}")
    return "image" if value == "photo" else value


def parse_orientation(text: str) -> str:
    value = text.strip().lower()
    if value not in ORIENTATIONS:
        raise FilterError(f"--orientation: expected landscape, portrait or square, got {text!r}")
    return value


WRAPPED_BOX = "latitude BETWEEN ? AND ? AND (longitude >= ? OR longitude <= ?)"  # across the 180th meridian


def _bounding_box(near: Near) -> tuple[str, list]:
    """A latitude/longitude box holding every point within `near.km` (served by the catalog's place index)."""
    dlat = math.degrees(near.km / EARTH_RADIUS_KM) + BOX_MARGIN_DEG
    lat_low, lat_high = near.latitude - dlat, near.latitude + dlat
    if lat_low <= -90 or lat_high >= 90:  # the circle holds a pole: every longitude
        return "latitude BETWEEN ? AND ? AND longitude IS NOT NULL", [max(lat_low, -90.0), min(lat_high, 90.0)]
    # the widest longitude span of the circle, at the latitude where it touches its meridians
    ratio = math.sin(near.km / EARTH_RADIUS_KM) / math.cos(math.radians(near.latitude))
    if ratio >= 1:
        return "latitude BETWEEN ? AND ? AND longitude IS NOT NULL", [lat_low, lat_high]
    dlon = math.degrees(math.asin(ratio)) + BOX_MARGIN_DEG
    lon_low, lon_high = near.longitude - dlon, near.longitude + dlon
    if lon_low < -180:
        return WRAPPED_BOX, [lat_low, lat_high, lon_low + 360, lon_high]
    if lon_high > 180:
        return WRAPPED_BOX, [lat_low, lat_high, lon_low, lon_high - 360]
    return "latitude BETWEEN ? AND ? AND longitude BETWEEN ? AND ?", [lat_low, lat_high, lon_low, lon_high]
