"""probe: duration, codec, displayed size, rotation, container metadata, and every bad input refused with a
one-line reason (before any costly decode)."""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from helpers import videos
from indexer.video.probe import VideoDecodeError, VideoInfo, open_video, probe
from indexer.video.tags import merged_tags, metadata_from_tags


def probed(path: Path) -> VideoInfo:
    with open_video(os.fsencode(path)) as container:
        return probe(container)


def refused(path: Path) -> str:
    with pytest.raises(VideoDecodeError) as caught:
        probed(path)
    message = str(caught.value)
    assert message and "\n" not in message and len(message) < 200
    return message


@pytest.mark.parametrize("name, codec, expected", [
    ("a.mp4", "libx264", "h264"), ("b.m4v", "libx264", "h264"), ("c.mov", "libx265", "hevc"),
    ("d.webm", "libvpx-vp9", "vp9"), ("e.mkv", "libsvtav1", "av1"), ("f.avi", "mpeg4", "mpeg4"),
])
def test_duration_codec_size_and_format(tmp_path, name, codec, expected):
    info = probed(videos.make_video(tmp_path / name, [(1, 1.0), (2, 1.0)], fps=10, size=(160, 120), codec=codec))
    assert info.duration_s == pytest.approx(2.0, abs=0.11)
    assert info.fps == pytest.approx(10.0)
    assert info.codec == expected
    assert (info.width, info.height, info.rotation) == (160, 120, 0)
    assert info.format == name.rsplit(".", 1)[1]  # m4v stays m4v
    assert (info.metadata.width, info.metadata.height, info.metadata.format) == (160, 120, info.format)
    assert info.metadata.lens is None and info.metadata.taken_at is None  # nothing written, nothing invented


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_from_the_display_matrix(tmp_path, rotation):
    info = probed(videos.make_video(tmp_path / "r.mp4", [(1, 0.5)], size=(120, 160), rotation=rotation))
    assert info.rotation == rotation
    assert (info.width, info.height) == (120, 160)  # portrait as displayed, though stored 160x120 for 90/270


def test_rotation_90_is_an_iphone_portrait_matrix(tmp_path):
    # Anchors the sign to real files: an iPhone held upright stores landscape frames with the tkhd matrix
    # (a, b, c, d) = (0, 1, -1, 0), which players show turned 90 degrees clockwise.
    path = videos.make_video(tmp_path / "IMG_0002.MOV", [(1, 0.5)], size=(120, 160), rotation=90)
    assert videos.tkhd_matrix(path) == (0, 1 << 16, -(1 << 16), 0)
    assert probed(path).rotation == 90


ISO_TAGS = {
    "com.apple.quicktime.creationdate": "2023-07-14T18:30:05+0200",
    "creation_time": "2023-07-14T16:30:05.000000Z",
    "com.apple.quicktime.location.ISO6709": "+48.8584+002.2945+035.000/",
    "com.apple.quicktime.make": "Apple",
    "com.apple.quicktime.model": "iPhone 15 Pro",
}


def test_iphone_metadata_from_a_mov(tmp_path):
    meta = probed(videos.make_video(tmp_path / "IMG_0001.MOV", [(1, 0.5)], metadata=ISO_TAGS)).metadata
    assert meta.taken_at == datetime(2023, 7, 14, 16, 30, 5, tzinfo=timezone.utc).timestamp()
    assert (meta.taken_at_local, meta.taken_at_offset, meta.taken_at_source) == (
        "2023-07-14T18:30:05", "+02:00", "quicktime")
    assert (meta.latitude, meta.longitude) == (pytest.approx(48.8584), pytest.approx(2.2945))
    assert (meta.make, meta.model, meta.format) == ("Apple", "iPhone 15 Pro", "mov")


def test_android_metadata_and_creation_time(tmp_path):
    tags = {"creation_time": "2021-02-03T04:05:06.000000Z", "location": "-33.8688+151.2093/",
            "com.android.manufacturer": "Google", "com.android.model": "Pixel 7"}
    meta = probed(videos.make_video(tmp_path / "PXL.mp4", [(1, 0.5)], metadata=tags)).metadata
    assert meta.taken_at == datetime(2021, 2, 3, 4, 5, 6, tzinfo=timezone.utc).timestamp()
    assert (meta.taken_at_local, meta.taken_at_offset, meta.taken_at_source) == (
        "2021-02-03T04:05:06", "+00:00", "container")
    assert (meta.latitude, meta.longitude) == (pytest.approx(-33.8688), pytest.approx(151.2093))
    assert (meta.make, meta.model) == ("Google", "Pixel 7")


def test_matroska_creation_time(tmp_path):
    meta = probed(videos.make_video(tmp_path / "a.mkv", [(1, 0.5)],
                                    metadata={"creation_time": "2020-05-06T07:08:09.000000Z"})).metadata
    assert meta.taken_at_source == "container" and meta.taken_at_local == "2020-05-06T07:08:09"


def test_odd_values_leave_their_field_empty_only(tmp_path):
    tags = {"com.apple.quicktime.creationdate": "yesterday", "creation_time": "1904-01-01T00:00:00.000000Z",
            "location": "+00.0000+000.0000/", "com.apple.quicktime.make": "   ", "make": "Sony",
            "com.apple.quicktime.model": "ILCE-7M4"}
    meta = probed(videos.make_video(tmp_path / "odd.mov", [(1, 0.5)], metadata=tags)).metadata
    assert meta.taken_at is None and meta.taken_at_source is None  # no date, and 1904 is an unset clock
    assert meta.latitude is None and meta.longitude is None  # 0,0 is no fix
    assert (meta.make, meta.model) == ("Sony", "ILCE-7M4")  # the blank QuickTime make falls through to `make`


@pytest.mark.parametrize("tags, field, expected", [
    ({"creation_time": "1970-01-01T00:00:00Z"}, "taken_at", None),
    ({"creation_time": "1800-06-01T00:00:00Z"}, "taken_at", None),
    ({"creation_time": "2500-06-01T00:00:00Z"}, "taken_at", None),
    ({"creation_time": "2023-13-01T00:00:00Z"}, "taken_at", None),
    ({"com.apple.quicktime.creationdate": "2023-07-14T18:30:05+2500"}, "taken_at_source", "quicktime-local"),
    ({"com.apple.quicktime.creationdate": "2023-07-14T18:30:05-05:00"}, "taken_at_offset", "-05:00"),
    ({"COM.APPLE.QUICKTIME.CREATIONDATE": "2023-07-14T18:30:05Z"}, "taken_at_source", "quicktime"),
    ({"location": "+91.0000+010.0000/"}, "latitude", None),
    ({"location": "+48.8584+190.0000/"}, "longitude", None),
    ({"location": "+4851.50+00217.70/"}, "latitude", pytest.approx(48 + 51.5 / 60)),  # degrees and minutes
    ({"location": "garbage"}, "latitude", None),
    ({"make": "\x00\x00  \x00"}, "make", None),
    ({"make": " Canon\x00 "}, "make", "Canon"),
    ({"model": 42}, "model", None),
])
def test_each_tag_is_read_on_its_own(tags, field, expected):
    meta = metadata_from_tags(merged_tags(tags), 10, 10, "mp4")
    assert getattr(meta, field) == expected


def test_the_container_tag_wins_over_the_stream_tag():
    assert merged_tags({"Make": "A"}, {"make": "B", "model": "M"}) == {"make": "A", "model": "M"}


# --- bad inputs --------------------------------------------------------------------------------------------------
def test_an_empty_file(tmp_path):
    assert refused(videos.zero_length(tmp_path / "empty.mp4")).startswith("cannot read video (")


def test_a_missing_file(tmp_path):
    assert "No such file" in refused(tmp_path / "gone.mp4")


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    os.mkfifo(tmp_path / "pipe.mp4")
    assert refused(tmp_path / "pipe.mp4") == "not a regular file"


def test_a_text_file_named_mp4(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video at all\n" * 50)
    assert refused(tmp_path / "notes.mp4").startswith("cannot read video (")


def test_a_truncated_mp4_without_its_moov(tmp_path):
    assert refused(videos.truncated_mp4(tmp_path / "cut.mp4")) == "cannot read video (moov atom not found)"


def test_a_truncated_faststart_mp4_is_readable(tmp_path):
    info = probed(videos.truncated_mp4(tmp_path / "cut.mp4", faststart=True))
    assert info.duration_s == pytest.approx(4.0, abs=0.11)  # the moov says 4 s; frames tell the rest (test_frames)


def test_a_header_without_frames(tmp_path):
    assert refused(videos.header_only_mp4(tmp_path / "empty.mp4")) == "no frame could be decoded"


def test_audio_only(tmp_path):
    assert refused(videos.audio_only_mp4(tmp_path / "song.mp4")) == "no video stream (audio only?)"


def test_a_codec_without_decoder(tmp_path):
    assert "cannot be decoded" in refused(videos.undecodable_codec(tmp_path / "x.mkv"))


@pytest.mark.parametrize("width, height", [(16384, 16384), (15000, 12000)])
def test_huge_dimensions_are_refused_before_decoding(tmp_path, width, height):
    # 16384x16384 FFmpeg itself refuses (it reports 0x0, the declared size is read from its log); 15000x12000
    # passes FFmpeg and is refused by the bound. Decoding either would fail differently ("no frame ...").
    message = refused(videos.huge_dimensions(tmp_path / "bomb.mov", width, height))
    assert message == f"video too large ({width}x{height}), treated like a decompression bomb"


def test_unknown_duration_comes_from_the_packets(tmp_path):
    path = videos.unknown_duration(tmp_path / "live.mkv", seconds=3.0)
    import av

    with av.open(str(path)) as raw:
        assert raw.duration is None  # the header really says nothing
    assert probed(path).duration_s == pytest.approx(3.0, abs=0.11)


def test_backwards_timestamps_probe_fine(tmp_path):
    info = probed(videos.make_timed_video(tmp_path / "vfr.mkv", [0, 0.1, 0.15, 0.9, 1.0, 0.5, 0.6, 2.0, 3.0]))
    assert info.duration_s == pytest.approx(3.04, abs=0.01) and info.codec == "mpeg4"
