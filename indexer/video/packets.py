"""The decode loop that probe and frames share: packets of one stream to frames, past damage, within a deadline.

Damaged data is skipped, not fatal: a packet the decoder rejects is dropped and decoding goes on with the next
(the decoder resynchronises at the next keyframe), frames the decoder flags as corrupt (concealed, usually grey
or smeared blocks) are dropped, and a demux error (a truncated file, a broken index) ends the stream as if it
were the end. A video is then indexed from what decodes cleanly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

import av

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.packet import Packet
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

# Decoder threads: one. Measured on this 2-core box, 60 s of 1080p30 H.264 (16 Mbit/s, a keyframe a second),
# a sample every 2 s: alone, 3.2 s wall with one thread against 2.4 s with AUTO (frame + slice threads, 3.4 s of
# CPU); but with two workers sampling at once, as the indexer runs them, 3.4 s for both with one thread each
# against 4.3 s with AUTO: the threads only fight over the cores, and frame threads decode ahead after each seek.
# (Decoding all 1800 frames: 19.0 s with one thread, 15.0 s with AUTO alone.)
DECODE_THREAD_TYPE = "SLICE"
DECODE_THREADS = 1

# Errors FFmpeg and the file system raise for bad input; anything else is a bug and propagates.
MEDIA_ERRORS = (av.FFmpegError, OSError, EOFError)


def configure_decoder(stream: "VideoStream") -> None:
    """Decoder threading; FFmpeg only takes it before the first decode opens the decoder."""
    context = stream.codec_context
    if context is not None and not context.is_open:
        context.thread_type = DECODE_THREAD_TYPE
        context.thread_count = DECODE_THREADS


@dataclass
class Budget:
    """Wall-clock bounds on decoding one file: `first_s` until a first frame is taken, `total_s` in all."""

    total_s: float
    first_s: float
    started: float = field(default_factory=time.monotonic)
    got_frame: bool = False  # set by the caller once it has taken a frame
    decoded: int = 0  # frames that came out of the decoder, taken or not

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def expired(self) -> bool:
        elapsed = self.elapsed()
        return elapsed > self.total_s or (not self.got_frame and elapsed > self.first_s)


def packets_of(container: "InputContainer", stream: "VideoStream") -> Iterator["Packet"]:
    """The stream's packets from the container's current position; a demux error (a truncated or damaged
    container) ends them, as if the file ended there."""
    demuxed = container.demux(stream)
    while True:
        try:
            packet = next(demuxed)
        except (StopIteration, *MEDIA_ERRORS):
            return
        if packet.size:  # the empty packet demux ends with (a flush request) is not data
            yield packet


def keyframe_alone(stream: "VideoStream", packet: "Packet", budget: Budget) -> Iterator["VideoFrame"]:
    """The frame of one keyframe packet, decoded and drained at once; the decoder is then reset (as a seek
    does), so decoding can go on."""
    try:
        frames = list(stream.decode(packet))
    except MEDIA_ERRORS:
        frames = []
    frames += list(_drain(stream))
    try:
        stream.codec_context.flush_buffers()
    except MEDIA_ERRORS:
        pass
    budget.decoded += len(frames)
    yield from (f for f in frames if not f.is_corrupt)


def decode_forward(container: "InputContainer", stream: "VideoStream", budget: Budget,
                   packets: Iterator["Packet"] | None = None, first: "Packet | None" = None
                   ) -> Iterator["VideoFrame"]:
    """Clean frames from the container's current position (or `first`, then `packets`) to the end of the
    stream, in decode output order.

    Stops quietly when `budget` expires, checked between packets: one packet's decode is never interrupted,
    so the bound holds to about one frame's decode time (a read that blocks forever is not covered).
    """
    packets = packets if packets is not None else packets_of(container, stream)
    pending = [first] if first is not None else []
    while not budget.expired():
        packet = pending.pop() if pending else next(packets, None)
        if packet is None:  # the end, or a truncated or damaged container: what the decoder holds is all there is
            yield from _drain(stream)
            return
        try:
            frames = stream.decode(packet)
        except MEDIA_ERRORS:  # a damaged packet: skip it, the next keyframe resynchronises the decoder
            continue
        budget.decoded += len(frames)
        for frame in frames:
            if not frame.is_corrupt:
                yield frame


def _drain(stream: "VideoStream") -> Iterator["VideoFrame"]:
    """The frames the decoder still holds (reordering, frame threads) when the packets end early."""
    try:
        frames = stream.decode(None)
    except MEDIA_ERRORS:
        return
    for frame in frames:
        if frame.time_base is None:  # drained frames come without one (PyAV 18): their time would be NaN
            frame.time_base = stream.time_base
        if not frame.is_corrupt:
            yield frame
