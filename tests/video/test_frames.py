"""sample_times' arithmetic, and sample_frames on real encoded videos: the frames' times and pictures, upright
rotation, downscaling, seeking instead of decoding everything, damaged and odd streams, and the time bound."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import videos
from indexer.video.frames import SampledFrame, sample_frames, sample_times
from indexer.video.packets import Budget
from indexer.video.probe import VideoDecodeError, open_video, probe

RED, BLUE = (255, 0, 0), (0, 0, 255)


def sampled(path: Path, interval_s: float = 0.5, **options) -> list[SampledFrame]:
    with open_video(os.fsencode(path)) as container:
        info = probe(container)
        return list(sample_frames(container, info, sample_times(info.duration_s, interval_s, 1000), **options))


def scene_of(frame: SampledFrame, seeds: list[int]) -> int:
    """The seed whose scene's mean colour the frame's is closest to (the stripes drift, the colour stays)."""
    colour = np.asarray(frame.image, np.float32).mean(axis=(0, 1))
    size = frame.image.size
    return min(seeds, key=lambda s: np.abs(colour - videos.scene_picture(s)(0.0, size).mean(axis=(0, 1))).sum())


# --- sample_times ------------------------------------------------------------------------------------------------
def test_sample_times_are_mid_step():
    assert sample_times(10.0, 2.0, 100) == [1.0, 3.0, 5.0, 7.0, 9.0]
    assert sample_times(5.0, 2.0, 100) == [1.0, 3.0]  # a third at 5.0 would be past the end
    assert sample_times(0.5, 2.0, 10) == [0.25]  # one sample for any positive duration
    assert sample_times(0.001, 2.0, 10) == [0.0005]


def test_sample_times_cap_spreads_over_the_whole_video():
    times = sample_times(3600.0, 2.0, 100)
    assert len(times) == 100
    assert times[0] == pytest.approx(18.0) and times[-1] == pytest.approx(3582.0)  # step 36 s, not 2 s


@pytest.mark.parametrize("duration", [0.0, -1.0, math.nan, math.inf])
def test_sample_times_of_no_duration(duration):
    assert sample_times(duration, 2.0, 100) == []


def test_sample_times_never_exceed_the_cap_or_the_end():
    rng = np.random.default_rng(1)
    for duration, interval, cap in zip(rng.uniform(0.01, 5000, 300), rng.uniform(0.1, 30, 300),
                                       rng.integers(1, 400, 300)):
        times = sample_times(float(duration), float(interval), int(cap))
        step = max(interval, duration / cap)
        assert 1 <= len(times) <= cap
        assert all(0 < t < duration for t in times)
        assert all(b - a >= interval - 1e-9 for a, b in zip(times, times[1:]))
        assert len(times) >= math.floor(duration / step)  # no step left without its sample


# --- frames ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def three_scenes(tmp_path_factory) -> Path:
    """Scenes 1, 2, 4 (distinct colours) for 2 s each, 10 fps, a keyframe a second."""
    return videos.make_video(tmp_path_factory.mktemp("v") / "three.mp4", [(1, 2.0), (2, 2.0), (4, 2.0)], gop=10)


def test_exact_frames_at_their_targets(three_scenes):
    frames = sampled(three_scenes, 1.0, slack=0)
    assert [round(f.time_s, 3) for f in frames] == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]  # pts on a 0.1 s grid
    assert [scene_of(f, [1, 2, 4]) for f in frames] == [1, 1, 2, 2, 4, 4]
    assert all(f.image.mode == "RGB" and f.image.size == (160, 120) for f in frames)


def test_a_keyframe_in_the_first_half_step_is_taken_with_one_decode(tmp_path):
    path = videos.make_video(tmp_path / "one.mp4", [(1, 6.0)], gop=15)  # one scene: keyframes 0, 1.5, 3, 4.5 s
    with open_video(os.fsencode(path)) as container:
        stream = container.streams.video[0]
        keyframes = [round(float(p.pts * stream.time_base), 2) for p in container.demux(stream) if p.is_keyframe]
    assert keyframes == [0.0, 1.5, 3.0, 4.5]
    exact, budget = Budget(60, 30), Budget(60, 30)
    assert [round(f.time_s, 3) for f in sampled(path, 2.0, slack=0, budget=exact)] == [1.0, 3.0, 5.0]
    # targets 1, 3, 5 s; windows [0.5, 1], [2, 3], [4, 5]: the keyframe at 4.5 stands in for 5.0
    assert [round(f.time_s, 3) for f in sampled(path, 2.0, budget=budget)] == [1.0, 3.0, 4.5]
    assert budget.decoded == exact.decoded - 5  # 4.5 -> 5.0 was not decoded


@pytest.mark.parametrize("name, codec", [("a.avi", "mpeg4"), ("b.webm", "libvpx-vp9"), ("c.mkv", "libsvtav1"),
                                         ("d.mov", "libx265")])
def test_other_containers_and_codecs(tmp_path, name, codec):
    path = videos.make_video(tmp_path / name, [(1, 1.0), (3, 1.0)], codec=codec)
    frames = sampled(path, 0.5, slack=0)
    assert [round(f.time_s, 3) for f in frames] == [0.3, 0.8, 1.3, 1.8]  # (AVI: times are frame counts)
    assert [scene_of(f, [1, 3]) for f in frames] == [1, 1, 3, 3]


def test_frames_are_scaled_by_the_long_side(tmp_path):
    path = videos.make_video(tmp_path / "big.mp4", [(3, 0.5)], size=(320, 240))
    assert {f.image.size for f in sampled(path, max_side=100)} == {(100, 75)}
    assert {f.image.size for f in sampled(path, max_side=1000)} == {(320, 240)}  # never enlarged


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_rotated_frames_come_out_upright(tmp_path, rotation):
    picture = videos.split_picture(RED, BLUE)  # as displayed: red on top, blue below
    path = videos.make_video(tmp_path / "portrait.mp4", [(picture, 0.5)], size=(120, 160), rotation=rotation)
    (frame, *_) = sampled(path)
    pixels = np.asarray(frame.image, np.int32)
    assert frame.image.size == (120, 160)
    assert np.abs(pixels[10, 60] - RED).max() < 40 and np.abs(pixels[-10, 60] - BLUE).max() < 40


def test_a_long_interval_seeks_instead_of_decoding_everything(tmp_path):
    # 60 s at 10 fps = 600 frames, a keyframe a second; a sample every 10 s
    path = videos.make_video(tmp_path / "long.mp4", [(s, 10.0) for s in range(1, 7)], gop=10)
    for slack, most in ((0.5, 6), (0.0, 6 * 11)):
        budget = Budget(total_s=60, first_s=30)
        frames = sampled(path, 10.0, budget=budget, slack=slack)
        assert len(frames) == 6
        assert budget.decoded <= most  # a GOP at most per sample, against 600 for decoding it all
        assert [scene_of(f, list(range(1, 9))) for f in frames] == [1, 2, 3, 4, 5, 6]


def test_corrupt_middle_gives_frames_from_both_sides(tmp_path):
    path, damage_from, damage_to = videos.corrupt_middle(tmp_path / "bad.mp4")  # three 2 s scenes
    frames = sampled(path, 0.5)
    times = [f.time_s for f in frames]
    before = [f for f in frames if f.time_s < damage_from]
    after = [f for f in frames if f.time_s > damage_to]
    assert before and after, times
    assert scene_of(before[0], [1, 2, 4]) == 1 and scene_of(after[-1], [1, 2, 4]) == 4  # clean pictures
    assert times == sorted(set(times))
    assert min(b - a for a, b in zip(times, times[1:])) > 0.15  # no cluster of samples right after the damage


def test_a_truncated_faststart_mp4_gives_its_first_part(tmp_path):
    frames = sampled(videos.truncated_mp4(tmp_path / "cut.mp4", faststart=True), 0.5)
    assert frames and max(f.time_s for f in frames) < 2.5  # half the bytes, about the first second or two
    assert all(scene_of(f, [1, 2]) == 1 for f in frames if f.time_s < 2.0)


def test_backwards_timestamps_and_jumps(tmp_path):
    stamps = [0, 0.1, 0.15, 0.9, 1.0, 0.5, 0.6, 2.0, 3.0]
    frames = sampled(videos.make_timed_video(tmp_path / "vfr.mkv", stamps), 0.5)
    times = [round(f.time_s, 3) for f in frames]
    assert times and times == sorted(set(times))  # strictly increasing, none taken twice
    assert set(times) <= set(stamps)  # each sample is a real frame, at its own time
    assert 3.0 in times  # the jump to the end is followed


def test_unknown_duration_is_sampled_to_its_end(tmp_path):
    frames = sampled(videos.unknown_duration(tmp_path / "live.mkv", seconds=3.0), 1.0, slack=0)
    assert [round(f.time_s, 3) for f in frames] == [0.5, 1.5, 2.5]


def test_no_times_no_frames(three_scenes):
    with open_video(os.fsencode(three_scenes)) as container:
        assert list(sample_frames(container, probe(container), [])) == []


# --- the time bound ----------------------------------------------------------------------------------------------
def test_no_first_frame_within_the_bound_is_an_error(three_scenes):
    late = Budget(total_s=120, first_s=0.5, started=time.monotonic() - 1.0)  # as if 1 s had gone already
    start = time.monotonic()
    with pytest.raises(VideoDecodeError, match=r"^no frame decoded within 0.5 s$"):
        sampled(three_scenes, budget=late)
    assert time.monotonic() - start < 1.0


class CountingBudget(Budget):
    """Runs out after `frames` decoded frames: a slow file, without waiting for one."""

    def __init__(self, frames: int):
        super().__init__(total_s=1e9, first_s=1e9)
        self.frames = frames

    def expired(self) -> bool:
        return self.decoded >= self.frames


def test_running_out_of_time_keeps_what_came_out(three_scenes):
    frames = sampled(three_scenes, 0.5, slack=0, budget=CountingBudget(15))
    assert 1 <= len(frames) < 12  # 12 targets; the samples stop, without an error
    assert max(f.time_s for f in frames) < 2.0


def test_a_tiny_real_time_budget_stops_promptly(tmp_path):
    path = videos.make_video(tmp_path / "a.mp4", [(1, 3.0), (2, 3.0)], fps=25, size=(320, 240))
    start = time.monotonic()
    try:
        frames = sampled(path, 0.04, slack=0, time_budget_s=0.001, first_frame_s=10)
    except VideoDecodeError as exc:  # out of time before even one frame: fine too, said so
        assert str(exc) == "no frame decoded within 0.001 s"
    else:
        assert len(frames) < 150 // 2
    assert time.monotonic() - start < 1.0
