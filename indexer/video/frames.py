"""Frames of a video at chosen times, reached by keyframe seeks, scaled by FFmpeg and turned upright.

Which frame a target gets: the first frame shown at or after it, except that when a seek lands on a keyframe a
little before the target, no more than `slack` (default 0.5) of the gap to the previous target (for the first
target, of its distance from the start), that keyframe is taken. For sample_times' targets, at the middle of each
step, that is a keyframe in the first half of the step: one decode gives the sample, instead of decoding on
through the GOP to the exact middle. Measured on 60 s of 1080p30 H.264 with a keyframe a second, a sample every
2 s: 30 frames decoded instead of 280, 3.1 s of CPU instead of 5.3 s (all 1800 frames: 18.9 s). slack=0 always
takes the first frame at or after the target. Either rule depends only on the file (the same file always gives
the same samples), and each sample carries its own time, so a thumbnail and a moment's time show exactly what
was embedded.

The decoder is placed by a seek to the keyframe at or before the target, unless decoding on from where it is
costs less: when the stream's index says that keyframe lies at most SEEK_GAIN_S past the last decoded frame
(without an index: when the target is less than NO_INDEX_SEEK_S ahead). So a sample costs at most about one GOP
of decoding, and a long interval never decodes the whole file. (skip_frame=NONKEY would be cheaper still but
takes frames at the wrong times whenever keyframes are far apart; skipping non-reference frames before the target
saved only 5-12 % of CPU on x264 streams and was left out.)

Odd streams: frames without a timestamp get the previous one's plus a frame; a frame whose time is not after the
last sample taken (timestamps that go back) is not taken twice, so sample times strictly increase; targets that
the last frame taken already lies past (a gap in the stream, from damage or a jump in time) get no sample of
their own, rather than a cluster of samples right after the gap. Damage is skipped (see packets.py). Time is bounded by a Budget: no frame within
`first_frame_s` is an error; running out of `time_budget_s` after some frames ends the samples there (the
video is indexed from what came out).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from PIL import Image

from indexer.video.packets import (MEDIA_ERRORS, Budget, configure_decoder, decode_forward, keyframe_alone,
                                  packets_of)
from indexer.video.probe import VideoDecodeError, VideoInfo, start_seconds, video_stream

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.packet import Packet
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

TIME_BUDGET_S = 120.0  # one file's sampling; a 1080p phone video costs about 0.1 s a sample (see above)
FIRST_FRAME_S = 30.0
SEEK_GAIN_S = 0.5  # seek only when it skips more than this much decoding (a seek costs a keyframe and a flush)
NO_INDEX_SEEK_S = 3.0  # without an index the keyframe is unknown; about a phone GOP or two
KEYFRAME_SLACK = 0.5  # how early a frame may be, as a fraction of the gap to the previous target (see above)
MATCH_SLACK_S = 1e-3  # timestamps rounded to the container's clock still count as "at the target"

# Clockwise display turn -> PIL transpose (PIL's ROTATE_90 is counter-clockwise), as EXIF orientation 6/3/8
_TURN = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_90}


@dataclass
class SampledFrame:
    """One sample: the frame's own time (seconds from the stream's start) and its upright RGB picture."""

    time_s: float
    image: Image.Image


def sample_times(duration_s: float, interval_s: float, max_samples: int) -> list[float]:
    """Times at the middle of steps of max(interval_s, duration_s / max_samples): at most one per interval,
    spread over the whole of a long video, never more than max_samples, and one for any positive duration."""
    if not (duration_s > 0 and math.isfinite(duration_s)) or max_samples < 1 or not interval_s > 0:
        return []
    step = max(interval_s, duration_s / max_samples)
    count = min(max_samples, math.ceil(duration_s / step - 0.5))  # (i + 0.5) * step < duration_s
    return [(i + 0.5) * step for i in range(count)] or [duration_s / 2]


def sample_frames(container: "InputContainer", info: VideoInfo, times: list[float], max_side: int = 640,
                  time_budget_s: float = TIME_BUDGET_S, first_frame_s: float = FIRST_FRAME_S,
                  budget: Budget | None = None, slack: float = KEYFRAME_SLACK) -> Iterator[SampledFrame]:
    """Upright frames for `times` (seconds, sorted here), at most `max_side` pixels on the long side.

    `budget`, when given, replaces the two bounds and shows afterwards how many frames were decoded.
    """
    if not times:
        return
    stream = video_stream(container)
    configure_decoder(stream)
    budget = budget or Budget(total_s=time_budget_s, first_s=first_frame_s)
    cursor = _Cursor(container, stream, budget, info.fps)
    size = _stored_size(info, max_side)
    last_taken = -math.inf
    for earliest, target in _windows(sorted(times), slack):
        if cursor.position is not None and target <= cursor.position:
            continue  # the last frame taken already stands for this target (a gap in the stream: damage, a jump)
        frame_time = cursor.frame_at(earliest, target)
        if frame_time is None:
            break
        frame, at = frame_time
        if at <= last_taken:
            continue
        try:
            picture = _picture(frame, size, info.rotation)
        except MEDIA_ERRORS:  # a frame swscale cannot convert (an odd pixel format mid-stream): the next target
            continue
        last_taken = at
        budget.got_frame = True
        yield SampledFrame(at, picture)
    if not budget.got_frame:
        if budget.expired():
            raise VideoDecodeError(f"no frame decoded within {min(budget.first_s, budget.total_s):g} s")
        raise VideoDecodeError("no frame could be decoded")


def _windows(times: list[float], slack: float) -> list[tuple[float, float]]:
    """(earliest time a keyframe landed on may have, target) per target."""
    gaps = [times[0], *(b - a for a, b in zip(times, times[1:]))] if times else []
    return [(t - slack * gap - MATCH_SLACK_S, t) for t, gap in zip(times, gaps)]


class _Cursor:
    """Where the decoder is, and how to get it to a target time: seek or decode on."""

    def __init__(self, container: "InputContainer", stream: "VideoStream", budget: Budget, fps: float | None):
        self.container, self.stream, self.budget = container, stream, budget
        self.start = start_seconds(stream)
        self.frame_s = 1.0 / fps if fps else 0.04
        self.frames: Iterator["VideoFrame"] | None = None
        self.packets: Iterator["Packet"] = iter(())
        self.position: float | None = None  # time of the last decoded frame
        self.seekable = True

    def frame_at(self, earliest: float, target: float) -> tuple["VideoFrame", float] | None:
        """The first frame at or after `target`, or the keyframe a seek lands on when it is at or after `earliest`;
        with its time. None at the end of the stream or of the budget."""
        landing = self.frames is None or self._worth_seeking(target)
        if landing and self._seek(target):
            lone = self._lone_keyframe(earliest)
            if lone is not None:
                return lone
            if self.frames is None:  # the keyframe alone gave no clean frame (damage): decode on after a new seek
                self._seek(target)
                self.frames = decode_forward(self.container, self.stream, self.budget, self.packets)
        for frame in self.frames:
            at = frame.time - self.start if frame.time is not None else None
            at = at if at is not None else (self.position + self.frame_s if self.position is not None else 0.0)
            self.position = at
            if at >= target - MATCH_SLACK_S or (landing and at >= earliest):
                return frame, at
            landing = False
        return None

    def _lone_keyframe(self, earliest: float) -> tuple["VideoFrame", float] | None:
        """The keyframe the seek landed on, decoded alone, when it is the frame wanted (at or after `earliest`).

        A decoder holds each frame back until later packets arrive (B-frame reordering: two more packets with
        x264's defaults); draining it right after the keyframe's packet gives that frame from one decode: 30
        decodes instead of 93 for 60 s of 1080p at 16 Mbit/s sampled every 2 s. Draining ends the decoder's
        stream, so the next sample seeks (which resets it). Otherwise decoding goes on from that packet."""
        packet = next(self.packets, None)
        seconds = None if packet is None or packet.pts is None else float(packet.pts * packet.time_base) - self.start
        if packet is None or not packet.is_keyframe or seconds is None or seconds < earliest:
            self.frames = decode_forward(self.container, self.stream, self.budget, self.packets, packet)
            return None
        frame = next(keyframe_alone(self.stream, packet, self.budget), None)
        self.frames = None  # drained: a seek comes next
        if frame is None:
            return None
        at = float(frame.pts * self.stream.time_base) - self.start if frame.pts is not None else seconds
        self.position = at
        return frame, at

    def _worth_seeking(self, target: float) -> bool:
        if not self.seekable or self.position is None:
            return self.seekable
        if target <= self.position:  # already there: the next frame is the one
            return False
        keyframe = self._keyframe_before(target)
        if keyframe is None:
            return target - self.position > NO_INDEX_SEEK_S
        return keyframe - self.position > SEEK_GAIN_S

    def _keyframe_before(self, target: float) -> float | None:
        """Time of the last indexed keyframe at or before `target` (MP4: every sample; MKV: the cues)."""
        entries, base = self.stream.index_entries, self.stream.time_base
        if base is None or len(entries) == 0:
            return None
        found = entries.search_timestamp(self._stamp(target), backward=True)
        return float(entries[found].timestamp * base) - self.start if found >= 0 else None

    def _stamp(self, seconds: float) -> int:
        return int(math.floor((self.start + seconds) / self.stream.time_base))

    def _seek(self, target: float) -> bool:
        """Place the decoder at the keyframe at or before `target`; False when the file cannot seek (then it
        decodes on from where it is, or from the start)."""
        try:
            self.container.seek(self._stamp(target), backward=True, any_frame=False, stream=self.stream)
        except MEDIA_ERRORS:  # unseekable (a broken index): decode on from wherever the decoder is
            self.seekable = False
            if self.frames is None:
                self.packets = packets_of(self.container, self.stream)
                self.frames = decode_forward(self.container, self.stream, self.budget, self.packets)
            return False
        self.packets = packets_of(self.container, self.stream)
        self.frames = None
        self.position = None
        return True


def _stored_size(info: VideoInfo, max_side: int) -> tuple[int, int]:
    """Output size before the turn: the displayed size brought within max_side (never enlarged)."""
    scale = min(1.0, max_side / max(info.width, info.height))
    width, height = max(1, round(info.width * scale)), max(1, round(info.height * scale))
    return (height, width) if info.rotation in (90, 270) else (width, height)


def _picture(frame: "VideoFrame", size: tuple[int, int], rotation: int) -> Image.Image:
    # FFmpeg scales (swscale, from the YUV planes) so a 4K frame never becomes a full-size PIL image
    image = frame.reformat(width=size[0], height=size[1], format="rgb24").to_image()
    turn = _TURN.get(rotation)
    return image.transpose(turn) if turn is not None else image
