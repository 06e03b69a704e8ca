"""A video as a query: `clip.mp4@SECONDS` (or @m:ss, @h:mm:ss) stands for the frame at that second.

An indexed, unchanged video answers from the stored embedding of the segment holding that second (no decode);
otherwise the frame is decoded and encoded as `index` encodes a video's samples. A video without a moment is
an error in one line, since a whole video is not one picture.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from indexer.errors import QueryError
from indexer.video.files import is_video_name

_MOMENT = re.compile(r"^(?P<path>.+)@(?P<time>\d+(?:\.\d+)?|\d+:[0-5]\d(?::[0-5]\d)?)$")


@dataclass(frozen=True)
class Moment:
    path: str
    seconds: float


def parse_seconds(text: str) -> float:
    """12, 12.5, 1:05 or 1:02:03 as seconds."""
    parts = text.split(":")
    if len(parts) == 1:
        return float(parts[0])
    value = 0.0
    for part in parts:
        value = value * 60 + int(part)
    return value


def split_moment(value: str) -> Moment | None:
    """`clip.mp4@12` as a Moment (the file need not exist here; callers check), else None."""
    if os.path.exists(value):
        return None  # a file whose name holds an @ is that file
    match = _MOMENT.match(value)
    if match is None or not is_video_name(os.fsencode(match["path"])):
        return None
    return Moment(match["path"], parse_seconds(match["time"]))


def refuse_whole_video(path: str) -> None:
    if is_video_name(os.fsencode(path)):
        raise QueryError(f"{path} is a video: search by one of its moments, e.g. {path}@12 or {path}@1:05")
