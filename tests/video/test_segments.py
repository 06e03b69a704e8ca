"""Cutting samples into segments: pixel cuts on real decoded frames (scene changes yes, pans and noise no), the
embedding test (a fake CLIP: one direction per scene, the scene recognised from the frame's colour), boundaries,
and the representative frame."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import videos
from indexer.video.frames import SampledFrame, sample_frames, sample_times
from indexer.video.probe import open_video, probe
from indexer.video.segments import (CUT_THRESHOLD, MERGE_COSINE, Segment, cut_segments, is_cut, pixel_signature,
                                    signature_distance)

DIM = 32


def sampled(path: Path, interval_s: float) -> tuple[list[SampledFrame], float]:
    with open_video(os.fsencode(path)) as container:
        info = probe(container)
        times = sample_times(info.duration_s, interval_s, 1000)
        return list(sample_frames(container, info, times, slack=0)), info.duration_s


def scene_of(frame: SampledFrame, seeds: list[int]) -> int:
    colour = np.asarray(frame.image, np.float32).mean(axis=(0, 1))
    size = frame.image.size
    return min(seeds, key=lambda s: np.abs(colour - videos.scene_picture(s)(0.0, size).mean(axis=(0, 1))).sum())


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def fake_embeddings(scenes: list[int], noise: float = 0.1, seed: int = 0) -> np.ndarray:
    """One random direction per scene, plus a little noise per sample (CLIP-like: cos to the mean ~0.99)."""
    rng = np.random.default_rng(seed)
    directions = {s: rng.normal(size=DIM) for s in sorted(set(scenes))}
    return unit(np.stack([unit(directions[s]) + noise * rng.normal(size=DIM) / np.sqrt(DIM) for s in scenes]))


@pytest.fixture(scope="module")
def three_scenes(tmp_path_factory) -> Path:
    """Scene 1 for 3 s, scene 2 for 4 s, scene 4 for 3 s: cuts at 3.0 and 7.0."""
    return videos.make_video(tmp_path_factory.mktemp("v") / "three.mp4", [(1, 3.0), (2, 4.0), (4, 3.0)], gop=10)


def test_three_scenes_cut_at_their_seconds(three_scenes):
    frames, duration = sampled(three_scenes, 0.5)
    times = [f.time_s for f in frames]
    scenes = [scene_of(f, [1, 2, 4]) for f in frames]
    segments = cut_segments(times, fake_embeddings(scenes), [pixel_signature(f.image) for f in frames], duration)
    assert len(segments) == 3
    assert segments[0].start_s == 0.0 and segments[-1].end_s == duration == pytest.approx(10.0)
    for segment, cut in zip(segments, (3.0, 7.0)):
        assert abs(segment.end_s - cut) <= 0.5  # within one sampling interval
    for before, after in zip(segments, segments[1:]):
        assert before.end_s == after.start_s  # contiguous
        assert after.start_s in times  # a segment starts at its first sample: in the new shot, never before it
    for segment, scene in zip(segments, (1, 2, 4)):
        assert segment.start_s <= segment.frame_s <= segment.end_s
        assert segment.frame_s == times[segment.sample] and scenes[segment.sample] == scene


def test_a_pixel_cut_splits_even_with_equal_embeddings(three_scenes):
    frames, duration = sampled(three_scenes, 0.5)
    same = fake_embeddings([0] * len(frames), noise=0.0)
    segments = cut_segments([f.time_s for f in frames], same, [pixel_signature(f.image) for f in frames], duration)
    assert [round(s.end_s, 2) for s in segments][:2] == [3.3, 7.3]  # samples at 2.8 | 3.3 and 6.8 | 7.3


def test_the_embedding_splits_scenes_of_alike_colours(tmp_path):
    # two blue scenes with different stripes: no pixel cut between them, but different content
    blues = [(videos.scene_picture(11, colour=(50, 70, 200)), 3.0),
             (videos.scene_picture(12, colour=(60, 80, 190)), 3.0)]
    frames, duration = sampled(videos.make_video(tmp_path / "blue.mp4", blues), 0.5)
    signatures = [pixel_signature(f.image) for f in frames]
    assert not any(is_cut(a, b) for a, b in zip(signatures, signatures[1:]))
    scenes = [2 if f.time_s < 3.0 else 3 for f in frames]
    segments = cut_segments([f.time_s for f in frames], fake_embeddings(scenes), signatures, duration)
    assert len(segments) == 2 and abs(segments[0].end_s - 3.0) <= 0.5


def test_a_pan_over_one_scene_is_one_segment(tmp_path):
    path = videos.make_video(tmp_path / "pan.mp4", [(videos.pan_picture(3, speed_px_s=40), 8.0)])
    frames, duration = sampled(path, 1.0)
    signatures = [pixel_signature(f.image) for f in frames]
    shifts = [signature_distance(a, b) for a, b in zip(signatures, signatures[1:])]
    assert max(shifts) > 0.01  # the picture really moves
    assert not any(is_cut(a, b) for a, b in zip(signatures, signatures[1:]))
    segments = cut_segments([f.time_s for f in frames], fake_embeddings([0] * len(frames)), signatures, duration)
    assert [(s.start_s, s.end_s) for s in segments] == [(0.0, duration)]


@pytest.mark.parametrize("picture", [videos.noise_picture(1), videos.scene_picture(5)], ids=["noise", "stripes"])
def test_moving_pixels_of_one_scene_are_no_cut(picture):
    a, b = (pixel_signature(Image.fromarray(picture(t, (160, 120)))) for t in (0.0, 2.0))
    assert not is_cut(a, b)


def test_distinct_scenes_are_cuts():
    signatures = [pixel_signature(Image.fromarray(videos.scene_picture(s)(0.0, (160, 120)))) for s in (1, 2, 4)]
    assert all(is_cut(a, b) for a, b in zip(signatures, signatures[1:]))
    assert signature_distance(signatures[0], signatures[0]) == 0.0
    black, white = (pixel_signature(Image.new("RGB", (64, 48), c)) for c in ("black", "white"))
    assert signature_distance(black, white) == pytest.approx(1.0, abs=0.02) and CUT_THRESHOLD < 1.0


def test_a_slow_drift_splits_on_the_running_mean():
    angles = np.radians(np.arange(30) * 4.0)  # 4 degrees a sample: every neighbour has cos 0.998
    vectors = np.zeros((30, DIM))
    vectors[:, 0], vectors[:, 1] = np.cos(angles), np.sin(angles)
    flat = [np.zeros(4, np.float32)] * 30  # no pixel cut anywhere
    segments = cut_segments([float(i) for i in range(30)], vectors, flat, 30.0)
    assert len(segments) > 1
    for segment in segments:
        members = vectors[[i for i in range(30) if segment.start_s <= i < segment.end_s]]
        mean = unit(members.sum(axis=0))
        assert (members @ mean).min() >= MERGE_COSINE - 0.03


def test_the_most_representative_sample_shows_the_segment():
    vectors = unit(np.array([[1.0, 0.3, 0.0], [1.0, 0.0, 0.0], [1.0, -0.25, 0.0]]))
    (segment,) = cut_segments([1.0, 2.0, 3.0], vectors, [np.zeros(3)] * 3, 4.0, merge_cosine=0.9)
    assert segment == Segment(0.0, 4.0, 2.0, 1)


def test_one_sample_and_none():
    assert cut_segments([0.25], unit(np.ones((1, 4))), [np.zeros(3)], 0.5) == [Segment(0.0, 0.5, 0.25, 0)]
    assert cut_segments([], np.zeros((0, 4)), [], 3.0) == []
    with pytest.raises(ValueError):
        cut_segments([1.0, 2.0], unit(np.ones((1, 4))), [np.zeros(3)], 3.0)
