"""Generate small test videos with PyAV: scenes with cuts at known seconds, rotation (a display matrix), container
metadata, and bad files (empty, truncated, audio only, corrupt middle, huge dimensions, odd timestamps, no
duration). Each video is a few seconds of 160x120 so a whole test folder runs in seconds on two cores."""
from __future__ import annotations

import os
import struct
from fractions import Fraction
from pathlib import Path
from typing import Callable, Union

import av
import numpy as np

QUIET = {"libx265": {"x265-params": "log-level=none"}}
os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 reads it once: errors only, no banner
Picture = Callable[[float, tuple[int, int]], np.ndarray]  # (time in the scene, (w, h)) -> (h, w, 3) uint8
SceneSpec = tuple[Union[int, Picture], float]  # a seed (a distinct still scene) or a picture function, seconds


# Scene colours far apart: under their stripes, any two differ by >= 0.17 in segments.signature_distance (a cut
# is > 0.15), so each change of seed 1-8 is a pixel cut
PALETTE = [(200, 40, 40), (40, 170, 60), (50, 70, 200), (225, 205, 50), (180, 50, 150), (40, 205, 205),
           (245, 120, 10), (125, 125, 125)]


def scene_picture(seed: int, colour: tuple[int, int, int] | None = None) -> Picture:
    """A distinct scene per seed: a colour of its own (PALETTE, seeds 1-8 all different; `colour` overrides) under
    a stripe pattern of its own (frequency, angle), drifting 2 radians a second so no two frames are equal."""
    rng = np.random.default_rng(seed)
    base = np.array(colour if colour is not None else PALETTE[(seed - 1) % len(PALETTE)], np.float64)
    freq = rng.uniform(0.05, 0.3)
    angle = rng.uniform(0, np.pi)

    def draw(t: float, size: tuple[int, int]) -> np.ndarray:
        w, h = size
        y, x = np.mgrid[0:h, 0:w]
        phase = freq * (np.cos(angle) * x + np.sin(angle) * y) + 2.0 * t
        stripes = 30 * np.sin(phase)
        return np.clip(base[None, None, :] + stripes[..., None], 0, 255).astype(np.uint8)

    return draw


def pan_picture(seed: int, speed_px_s: float = 40.0) -> Picture:
    """A camera pan over one wide scene: a landscape-like picture (smooth colour fields, a horizon, fine detail)
    4x the frame's width, the view sliding right at `speed_px_s` and back (ping-pong)."""
    rng = np.random.default_rng(seed)
    sky, ground = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    waves = rng.uniform(0.004, 0.02, 3), rng.uniform(0, 2 * np.pi, 3)

    def draw(t: float, size: tuple[int, int]) -> np.ndarray:
        w, h = size
        span = 3 * w
        x0 = speed_px_s * t % (2 * span)
        x0 = x0 if x0 <= span else 2 * span - x0
        y, x = np.mgrid[0:h, 0:w].astype(np.float64)
        x += x0
        horizon = h * (0.5 + 0.15 * np.sin(0.01 * x + waves[1][0]))
        base = np.where((y < horizon)[..., None], sky, ground)
        field = 35 * np.sin(waves[0][None, None, :] * x[..., None] + waves[1][None, None, :])
        detail = 12 * np.sin(0.7 * x + 0.9 * y)[..., None]
        return np.clip(base + field + detail, 0, 255).astype(np.uint8)

    return draw


def noise_picture(seed: int, amount: float = 40.0) -> Picture:
    """One scene (a base colour and a soft gradient) under fresh random noise every frame, like a dark scene's
    sensor noise: every frame differs, the picture does not change."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(60, 195, 3)

    def draw(t: float, size: tuple[int, int]) -> np.ndarray:
        w, h = size
        gradient = np.linspace(-30, 30, w)[None, :, None]
        noise = np.random.default_rng(int(t * 1000)).normal(0, amount, (h, w, 1))
        return np.clip(base[None, None, :] + gradient + noise, 0, 255).astype(np.uint8)

    return draw


def split_picture(top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Picture:
    """Top half one colour, bottom half another, as displayed: checks that rotation comes out upright."""
    def draw(t: float, size: tuple[int, int]) -> np.ndarray:
        w, h = size
        img = np.empty((h, w, 3), np.uint8)
        img[: h // 2] = top
        img[h // 2:] = bottom
        return img

    return draw


def make_video(path: Path, scenes: list[SceneSpec], fps: int = 10, size: tuple[int, int] = (160, 120),
               codec: str = "libx264", rotation: int = 0, metadata: dict[str, str] | None = None,
               gop: int | None = None, movflags: str | None = None,
               codec_options: dict[str, str] | None = None) -> Path:
    """Write `scenes` back to back (cuts at their cumulative seconds) at `fps`; `size` is the DISPLAYED size.

    `rotation` is the clockwise turn a player applies (what probe reports): frames are stored turned the other way
    and the stream gets a display matrix (PyAV 18's set_display_rotation takes counter-clockwise degrees, so it is
    given -rotation; for 90 the MP4 tkhd matrix is (0, 1, -1, 0), an iPhone's portrait recording).
    `metadata` goes into the container; MP4/MOV get movflags=use_metadata_tags so any key is written (mdta keys).
    `gop` is the keyframe interval in frames (the encoder's default otherwise); `movflags` more MP4 muxer flags;
    `codec_options` the encoder's own (x265 and SVT-AV1 are told to keep quiet).
    """
    w, h = size
    mov = path.suffix.lower() in (".mp4", ".mov", ".m4v", ".3gp")
    flags = [f for f in ("use_metadata_tags" if mov and metadata else None, movflags) if f]
    with av.open(str(path), "w", options={"movflags": "+".join(flags)} if flags else {}) as container:
        for key, value in (metadata or {}).items():
            container.metadata[key] = value
        stream = container.add_stream(codec, rate=fps, options={**QUIET.get(codec, {}), **(codec_options or {})})
        stream.width, stream.height = (h, w) if rotation % 180 == 90 else (w, h)
        stream.pix_fmt = "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        if rotation:
            stream.set_display_rotation(-rotation)
        for index, upright in enumerate(_pictures(scenes, fps, size)):
            pixels = np.ascontiguousarray(np.rot90(upright, k=rotation // 90))  # quarter turns counter-clockwise
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _pictures(scenes: list[SceneSpec], fps: int, size: tuple[int, int]):
    """Every frame's upright picture, scene after scene (each scene's clock starts at 0)."""
    for spec, seconds in scenes:
        draw = scene_picture(spec) if isinstance(spec, int) else spec
        for i in range(round(seconds * fps)):
            yield draw(i / fps, size)


def tkhd_matrix(path: Path) -> tuple[int, ...]:
    """The (a, b, c, d) of the first track's tkhd display matrix, in 16.16 fixed point (an MP4/MOV)."""
    data = path.read_bytes()
    at = data.find(b"tkhd") + 4
    version = data[at]
    # version/flags(4), times and track id (20 or 32), reserved(8), layer, group, volume, reserved (2 each)
    matrix = at + 4 + (32 if version == 1 else 20) + 8 + 8
    a, b, _, c, d = struct.unpack(">5i", data[matrix:matrix + 20])
    return a, b, c, d


def make_timed_video(path: Path, times: list[float], size: tuple[int, int] = (160, 120)) -> Path:
    """An MKV whose frames carry exactly `times` (ms precision) as timestamps, in file order: variable frame rate,
    jumps, or times going backwards. Frame i shows scene i % 3 so frames can be told apart.

    Encoders and muxers refuse timestamps that go back, so the frames are written 40 ms apart (MPEG-4 Part 2:
    intra-only here, no reordering) and then each block's 16-bit cluster-relative timecode is patched.
    """
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = 1
        for i in range(len(times)):
            frame = av.VideoFrame.from_ndarray(scene_picture(i % 3)(0.0, size), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, 25)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = bytearray(path.read_bytes())
    at = data.find(b"\x44\x89\x88")  # the Segment's Duration: an 8-byte float in ms (TimecodeScale 1 ms)
    data[at + 3:at + 11] = struct.pack(">d", (max(times) + 0.04) * 1000)
    blocks = list(_mkv_blocks(data, 0, len(data), 0))
    assert len(blocks) == len(times), (len(blocks), len(times))
    for (at, cluster_ms), t in zip(blocks, times):
        data[at:at + 2] = struct.pack(">h", round(t * 1000) - cluster_ms)
    path.write_bytes(bytes(data))
    return path


_SEGMENT, _CLUSTER, _TIMECODE, _SIMPLE_BLOCK, _BLOCK_GROUP, _BLOCK = (
    0x18538067, 0x1F43B675, 0xE7, 0xA3, 0xA0, 0xA1)


def _vint(data: bytearray, at: int, keep_marker: bool) -> tuple[int, int]:
    """An EBML variable-length integer at `at`: (value, length)."""
    length = 9 - data[at].bit_length()
    value = int.from_bytes(data[at:at + length], "big")
    return (value if keep_marker else value & ((1 << (7 * length)) - 1)), length


def _mkv_blocks(data: bytearray, start: int, end: int, cluster_ms: int):
    """(offset of the 16-bit timecode, cluster timecode in ms) of every block, in file order."""
    at = start
    while at < end:
        element, id_len = _vint(data, at, keep_marker=True)
        size, size_len = _vint(data, at + id_len, keep_marker=False)
        body = at + id_len + size_len
        if element == _TIMECODE:
            cluster_ms = int.from_bytes(data[body:body + size], "big")
        elif element in (_SEGMENT, _CLUSTER, _BLOCK_GROUP):
            yield from _mkv_blocks(data, body, min(body + size, end), cluster_ms)
        elif element in (_SIMPLE_BLOCK, _BLOCK):
            track_len = _vint(data, body, keep_marker=False)[1]
            yield body + track_len, cluster_ms
        at = body + size


# --- bad files -------------------------------------------------------------------------------------------------
def zero_length(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def truncated_mp4(path: Path, faststart: bool = False) -> Path:
    """A valid 4 s MP4 (a keyframe a second) cut in half. Without faststart the moov, written last, is lost: nothing
    says where the samples are. With faststart the moov comes first and survives; the later samples are gone."""
    make_video(path, [(1, 2.0), (2, 2.0)], gop=10, movflags="faststart" if faststart else None)
    data = path.read_bytes()
    assert (data.find(b"moov") < data.find(b"mdat")) == faststart
    path.write_bytes(data[: len(data) // 2])
    return path


def header_only_mp4(path: Path) -> Path:
    """A faststart MP4 cut right after its mdat header: the moov promises 2 s of frames, not one byte is there."""
    make_video(path, [(1, 2.0)], movflags="faststart")
    data = path.read_bytes()
    path.write_bytes(data[: data.find(b"mdat") + 4])
    return path


def audio_only_mp4(path: Path, seconds: float = 1.0) -> Path:
    """A sine tone in AAC, in an .mp4: a video file name with no picture."""
    rate = 44100
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        total = int(seconds * rate)
        for start in range(0, total, 1024):
            n = min(1024, total - start)
            tone = (0.3 * np.sin(2 * np.pi * 440 * (start + np.arange(n)) / rate)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(tone[None, :], format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def corrupt_middle(path: Path, seconds: float = 6.0, fps: int = 10, gop: int = 10) -> tuple[Path, float, float]:
    """An MP4 of three 2 s scenes (seeds 1, 2, 4) whose packets from about 40 % to 60 % of the mdat are overwritten
    with garbage.

    Returns (path, first damaged second, last damaged second), read from the packets the damage hit, so a test
    can check that frames from before and after it still come out.
    """
    make_video(path, [(1, seconds / 3), (2, seconds / 3), (4, seconds / 3)], fps=fps, gop=gop)
    hit: list[float] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [(p.pos, p.size, float(p.pts * stream.time_base)) for p in container.demux(stream) if p.size]
    data = bytearray(path.read_bytes())
    start, end = data.find(b"mdat"), len(data)
    lo, hi = start + int(0.4 * (end - start)), start + int(0.6 * (end - start))
    lo = max(lo, min(pos for pos, _, _ in packets if pos >= lo))
    hi = min(hi, max(pos + size for pos, size, _ in packets if pos + size <= hi))
    rng = np.random.default_rng(7)
    data[lo:hi] = rng.integers(0, 256, hi - lo, dtype=np.uint8).tobytes()
    hit = [t for pos, size, t in packets if pos < hi and pos + size > lo]
    path.write_bytes(bytes(data))
    return path, min(hit), max(hit)


def huge_dimensions(path: Path, width: int = 16384, height: int = 16384) -> Path:
    """A MOV of one raw 16x16 RGB frame whose sample description declares `width` x `height`.

    Raw video takes its size from the container alone (no bitstream header to override it), so patching the
    stsd entry's 16-bit width and height fields is enough for FFmpeg to report that size. FFmpeg itself refuses
    sizes whose (w + 128) * (h + 128) reach INT_MAX / 8 (16384x16384 does) and then reports 0x0; smaller ones
    such as 15000x12000 (180 MP) pass FFmpeg and must be refused by the probe's own bound.
    """
    with av.open(str(path), "w", format="mov") as container:
        stream = container.add_stream("rawvideo", rate=1)
        stream.width = stream.height = 16
        stream.pix_fmt = "rgb24"
        frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 200, np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    data = bytearray(path.read_bytes())
    stsd = data.find(b"stsd")
    # after "stsd": version/flags(4) count(4), then the entry: size(4) format(4) reserved(6) ref(2) version(2)
    # revision(2) vendor(4) temporal(4) spatial(4), then width(2) height(2)
    field = stsd + 4 + 4 + 4 + 4 + 4 + 6 + 2 + 2 + 2 + 4 + 4 + 4  # "stsd" itself, then the fields above
    assert struct.unpack(">HH", data[field:field + 4]) == (16, 16)
    data[field:field + 4] = struct.pack(">HH", width, height)
    path.write_bytes(bytes(data))
    return path


def unknown_duration(path: Path, seconds: float = 3.0, fps: int = 10) -> Path:
    """An MKV that does not say how long it is, as a recording never finalised: the Segment's Duration element
    (ID 0x4489) is renamed to an ID no reader knows (0x4488, skipped), and FFmpeg's per-track DURATION tag to
    XURATION. Its frames still decode, so the length must come from the packets."""
    make_video(path, [(1, seconds / 2), (2, seconds / 2)], fps=fps)
    data = path.read_bytes()
    at = data.find(b"\x44\x89")
    tag = data.find(b"DURATION")
    assert at > 0 and tag > 0
    data = data[:at] + b"\x44\x88" + data[at + 2:]
    path.write_bytes(data[:tag] + b"X" + data[tag + 1:])
    return path


def undecodable_codec(path: Path) -> Path:
    """An MKV whose track's CodecID is renamed to one FFmpeg has no decoder for (same length)."""
    make_video(path, [(1, 1.0)])
    data = path.read_bytes()
    at = data.find(b"V_MPEG4/ISO/AVC")
    assert at > 0
    path.write_bytes(data[:at] + b"V_XXXXX/ISO/XYZ" + data[at + 15:])
    return path
