"""Opening a video and reading what it is: duration, frame rate, codec, displayed size and rotation, metadata.

probe refuses what cannot be indexed (VideoDecodeError, a one-line reason) before any costly decode: no video
stream, no decoder, a declared size above the photo bomb bound, nothing decodable. It decodes the first frame,
because PyAV 18 exposes the display matrix only on decoded frames (``frame.rotation``), not on the stream.
"""
from __future__ import annotations

import os
import re
import stat
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Iterator

import av
import av.logging

from indexer.images.metadata import ImageMetadata
from indexer.video.packets import (MEDIA_ERRORS, Budget, configure_decoder, decode_forward, keyframe_alone,
                                  packets_of)
from indexer.video.tags import merged_tags, metadata_from_tags

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

MAX_PIXELS = 178_956_970  # the photos' bound (PIL's MAX_IMAGE_PIXELS as set by indexer.images.decode)
FIRST_FRAME_S = 30.0  # longest wait for the first frame: a file that shows nothing by then is refused
DURATION_SCAN_S = 30.0  # longest demux-only pass to find the length of a video whose header does not say
FORMATS = {"matroska": "mkv", "webm": "webm", "avi": "avi", "mov": "mov", "mp4": "mp4"}
_BAD_SIZE = re.compile(r"Picture size (\d+)x(\d+) is invalid")


class VideoDecodeError(Exception):
    """The file cannot be indexed as a video; str(exc) is a one-line reason."""


@dataclass(frozen=True)
class VideoInfo:
    """What probe learnt; width/height are as displayed (after rotation and pixel aspect)."""

    duration_s: float
    fps: float | None
    codec: str | None
    width: int
    height: int
    rotation: int  # clockwise degrees (0, 90, 180, 270) a player turns the stored frames by
    format: str
    metadata: ImageMetadata


_LOG_LOCK = threading.Lock()
_log_users = 0
_log_level_before: int | None = None


@contextmanager
def ffmpeg_messages() -> Iterator[list[tuple[int, str, str]]]:
    """FFmpeg's error lines from this thread while inside (for reasons like "moov atom not found"), kept out of
    stderr.

    PyAV keeps FFmpeg's log off by default (it costs a Python call per line); it is switched on at error level
    while any thread is inside (a server probes in request threads) and put back as it was when the last leaves.
    """
    global _log_users, _log_level_before
    with _LOG_LOCK:
        if _log_users == 0:
            _log_level_before = av.logging.get_level()
            av.logging.set_level(av.logging.ERROR)
        _log_users += 1
    try:
        with av.logging.Capture(local=True) as logs:  # decoding runs in this thread (DECODE_THREADS = 1)
            yield logs
    finally:
        with _LOG_LOCK:
            _log_users -= 1
            if _log_users == 0:
                av.logging.set_level(_log_level_before)


def reason(exc: BaseException) -> str:
    """A short reason: FFmpeg's own last message when it gave one, else the error's text."""
    log = getattr(exc, "log", None)
    detail = log[2] if isinstance(log, tuple) and len(log) == 3 and log[2] else None
    detail = detail or getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(detail).split())[:200]


@contextmanager
def open_video(path: bytes) -> Iterator["InputContainer"]:
    """An open input container for `path`; every FFmpeg or OS error inside becomes a VideoDecodeError."""
    with ffmpeg_messages() as logs:
        try:
            # FFmpeg's open of a FIFO would wait for a writer forever; only a regular file is opened (a swap
            # between this check and the open is not covered)
            if not stat.S_ISREG(os.stat(path).st_mode):
                raise VideoDecodeError("not a regular file")
            container = av.open(os.fsdecode(path), metadata_errors="ignore")
        except MEDIA_ERRORS as exc:
            raise VideoDecodeError(f"cannot read video ({reason(exc)})") from None
        refused = next((m for m in (_BAD_SIZE.search(line[2]) for line in logs) if m), None)
    try:
        if refused:  # FFmpeg refused the declared size itself and reports 0x0: say what was declared
            raise VideoDecodeError(f"video too large ({refused[1]}x{refused[2]}), treated like a decompression bomb")
        yield container
    except MEDIA_ERRORS as exc:
        raise VideoDecodeError(f"cannot read video ({reason(exc)})") from None
    finally:
        container.close()


def video_stream(container: "InputContainer") -> "VideoStream":
    """The first real video stream (cover art, an attached picture, is not one)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    raise VideoDecodeError("no video stream (audio only?)")


def probe(container: "InputContainer", first_frame_s: float = FIRST_FRAME_S) -> VideoInfo:
    """What `container` holds, after the refusals above; decodes its first frame (see the module docstring)."""
    try:
        return _probe(container, first_frame_s)
    except MEDIA_ERRORS as exc:
        raise VideoDecodeError(f"cannot read video ({reason(exc)})") from None


def _probe(container: "InputContainer", first_frame_s: float) -> VideoInfo:
    with ffmpeg_messages():
        stream = video_stream(container)
        codec = _decodable(stream)
        stored = _declared_size(stream)
        configure_decoder(stream)
        first = first_frame(container, stream, first_frame_s)
        rotation = _rotation(first, stream)
        width, height = _displayed_size(stored, stream.sample_aspect_ratio, rotation)
        duration = _duration(container, stream, first)
    fmt = _format(container)
    tags = merged_tags(container.metadata, stream.metadata)
    return VideoInfo(duration, _fps(stream), codec, width, height, rotation, fmt,
                     metadata_from_tags(tags, width, height, fmt))


def _decodable(stream: "VideoStream") -> str:
    context = stream.codec_context
    if context is None:  # PyAV gives no context when this FFmpeg build has no decoder for the codec
        raise VideoDecodeError("video codec cannot be decoded (no decoder in this FFmpeg build)")
    name = context.codec.canonical_name or context.name
    if not context.codec.is_decoder:
        raise VideoDecodeError(f"video codec {name} cannot be decoded")
    return name


def _declared_size(stream: "VideoStream") -> tuple[int, int]:
    width, height = stream.codec_context.width, stream.codec_context.height
    if width <= 0 or height <= 0:
        raise VideoDecodeError("video has no picture size")
    if width * height > MAX_PIXELS:
        raise VideoDecodeError(f"video too large ({width}x{height}), treated like a decompression bomb")
    return width, height


def first_frame(container: "InputContainer", stream: "VideoStream", within_s: float) -> "VideoFrame":
    """The first clean frame from the container's current position, or VideoDecodeError."""
    budget = Budget(total_s=within_s, first_s=within_s)
    packets = packets_of(container, stream)
    first = next(packets, None)
    if first is not None and first.is_keyframe:  # decoded and drained alone: one decode, not three (reordering)
        frame = next(keyframe_alone(stream, first, budget), None)
        if frame is not None:
            return frame
        first = None  # damaged: decode on from the next packet
    for frame in decode_forward(container, stream, budget, packets, first):
        return frame
    if budget.expired():
        raise VideoDecodeError(f"no frame decoded within {within_s:g} s")
    raise VideoDecodeError("no frame could be decoded")


def start_seconds(stream: "VideoStream") -> float:
    """The stream's first timestamp in seconds (frame times are counted from it; MPEG-TS and edits start late)."""
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _duration(container: "InputContainer", stream: "VideoStream", first: "VideoFrame") -> float:
    """Seconds from the header; else from the packets' timestamps (a demux pass, no decode); else the first
    frame's own length: a file that shows something is indexed even when its length is unknown."""
    for read in (_declared_duration, _scanned_duration):
        seconds = read(container, stream)
        if seconds and seconds > 0:
            return seconds
    frame_s = 1.0 / (_fps(stream) or 25.0)
    return max((first.time or 0.0) - start_seconds(stream), 0.0) + frame_s


def _declared_duration(container: "InputContainer", stream: "VideoStream") -> float | None:
    if stream.duration and stream.time_base and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration and container.duration > 0:
        return container.duration / av.time_base
    match = re.match(r"^(\d+):(\d{2}):(\d{2}(?:\.\d+)?)$", stream.metadata.get("DURATION", "").strip())
    if match:  # Matroska's per-track tag, written by FFmpeg's muxer when the segment's is missing
        hours, minutes, seconds = match.groups()
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return None


def _scanned_duration(container: "InputContainer", stream: "VideoStream") -> float | None:
    """End of the last packet, from the current position to the end (or DURATION_SCAN_S: then a lower bound)."""
    deadline, end = time.monotonic() + DURATION_SCAN_S, None
    try:
        for packet in container.demux(stream):
            stamp = packet.pts if packet.pts is not None else packet.dts
            if stamp is not None:
                end = max(end or stamp, stamp + (packet.duration or 0))
            if time.monotonic() > deadline:
                break
    except MEDIA_ERRORS:
        pass
    if end is None or stream.time_base is None:
        return None
    return float(end * stream.time_base) - start_seconds(stream)


def _rotation(frame: "VideoFrame", stream: "VideoStream") -> int:
    """Clockwise turn for display, snapped to a quarter: FFmpeg's angle is counter-clockwise, so it is negated
    (an iPhone's portrait recording has the matrix (0, 1, -1, 0): -90 counter-clockwise, 90 clockwise).
    Mirroring in the matrix is ignored. Old FFmpeg builds gave it as the stream tag ``rotate`` (clockwise)."""
    try:
        ccw = float(frame.rotation)
    except (AttributeError, TypeError, ValueError):
        ccw = 0.0
    if ccw == 0.0:
        try:
            ccw = -float(stream.metadata.get("rotate", 0))
        except (TypeError, ValueError):
            ccw = 0.0
    return int(round(-ccw / 90.0)) % 4 * 90


def _displayed_size(stored: tuple[int, int], sar: Fraction | None, rotation: int) -> tuple[int, int]:
    width, height = stored
    if sar and 0.1 < sar < 10 and sar != 1:  # anamorphic pixels (DV, some broadcasts): widen or narrow
        width = max(1, round(width * float(sar)))
    return (height, width) if rotation in (90, 270) else (width, height)


def _fps(stream: "VideoStream") -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate and 0 < float(rate) < 1000:
            return float(rate)
    return None


def _format(container: "InputContainer") -> str:
    ext = os.path.splitext(str(container.name or ""))[1].lower().lstrip(".")
    if ext and ext.isalnum() and len(ext) <= 5:
        return ext
    family = (container.format.name or "").split(",")[0]
    return FORMATS.get(family, family or "video")
