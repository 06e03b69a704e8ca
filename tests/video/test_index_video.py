"""Videos through `index` and `search`: segments at the known cuts, results at their moment, filters, status,
renames, removal, re-cuts, bad inputs as skipped lines, a SIGKILL in the middle of a video, and a library of
photos that behaves as before. Real PyAV videos made by tests/helpers/videos.py; the tiny random-weight model."""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from helpers.catalog import catalog_query
from helpers.cli import cli, index_json, run, start
from helpers.faults import kill_group
from helpers.images import photo
from helpers.videos import (audio_only_mp4, corrupt_middle, huge_dimensions, make_video, truncated_mp4,
                            zero_length)

CUTS = (4.0, 8.0)  # three distinct 4 s scenes
INTERVAL = 1.0


@pytest.fixture
def folder(isolated) -> Path:
    root = isolated / "media"
    root.mkdir()
    make_video(root / "scenes.mp4", [(1, 4.0), (2, 4.0), (3, 4.0)], fps=10)
    for n in range(3):
        photo(n).save(root / f"p{n}.jpg")
    return root


def segments(library: Path, path: Path) -> list[tuple]:
    return catalog_query(library, "SELECT segment, start_s, end_s, frame_s FROM images WHERE path=? ORDER BY segment",
                         (os.fsencode(path),))


def search_json(*args: object) -> list[dict]:
    return json.loads(run("search", *args, "--json").stdout)


def test_a_video_is_cut_at_its_scene_changes(folder, tiny_model_name, isolated):
    summary = index_json(folder, "--model", tiny_model_name, "--video-interval", INTERVAL)
    assert (summary["added"], summary["videos"], summary["failed"]) == (4, 1, 0)
    found = segments(isolated / "library", folder / "scenes.mp4")
    assert len(found) == summary["segments"] >= 3
    starts = [start for _, start, _, _ in found]
    assert starts[0] == 0.0 and found[-1][2] == pytest.approx(12.0, abs=0.15)
    for cut in CUTS:  # each known cut starts a segment within one sampling interval
        assert min(abs(s - cut) for s in starts) <= INTERVAL, (cut, starts)
    for (_, start, end, frame), nxt in zip(found, found[1:] + [None]):
        assert start <= frame < end
        if nxt is not None:
            assert end == nxt[1]  # the moments tile the video
    status = json.loads(run("status", "--json").stdout)
    assert (status["images"], status["videos"], status["segments"]) == (3, 1, len(found))


def test_search_lists_a_video_once_at_its_best_moment_unless_moments(folder, tiny_model_name, isolated):
    index_json(folder, "--model", tiny_model_name, "--video-interval", INTERVAL)
    hits = search_json("a red car", "--limit", "50")
    videos = [h for h in hits if h["kind"] == "video"]
    assert len(videos) == 1 and len(hits) == 4
    video = videos[0]
    assert video["path"] == str(folder / "scenes.mp4")
    assert video["start_s"] <= video["frame_s"] < video["end_s"]
    assert all(h["kind"] == "image" and "start_s" not in h for h in hits if h is not video)
    moments = search_json("a red car", "--limit", "50", "--moments")
    assert len([h for h in moments if h["kind"] == "video"]) == len(segments(isolated / "library", folder / "scenes.mp4"))
    assert moments[0]["score"] >= moments[-1]["score"]
    assert max(h["score"] for h in moments if h["kind"] == "video") == pytest.approx(video["score"])
    plain = run("search", "a red car", "--limit", "50").stdout.splitlines()
    line = next(row for row in plain if row.split("\t")[1].endswith("scenes.mp4"))
    whole = int(video["start_s"])
    assert line.split("\t")[2] == f"@{whole // 60}:{whole % 60:02d}"
    assert all(len(row.split("\t")) == 2 for row in plain if row.endswith(".jpg"))


def test_kind_and_format_filters(folder, tiny_model_name):
    index_json(folder, "--model", tiny_model_name, "--video-interval", INTERVAL)
    assert {h["kind"] for h in search_json("a dog", "--kind", "video")} == {"video"}
    assert {h["kind"] for h in search_json("a dog", "--kind", "image")} == {"image"}
    assert [h["path"] for h in search_json("a dog", "--format", "mp4")] == [str(folder / "scenes.mp4")]
    assert search_json("a dog", "--format", "mov") == []
    alone = search_json("--kind", "video")  # filters alone: newest first, score null
    assert [h["path"] for h in alone] == [str(folder / "scenes.mp4")] and alone[0]["score"] is None
    bad = run("search", "a dog", "--kind", "film", ok=False)
    assert bad.exit_code == 2 and "--kind" in bad.stderr


def test_a_video_as_a_query_is_one_of_its_moments(folder, tiny_model_name, isolated):
    index_json(folder, "--model", tiny_model_name, "--video-interval", INTERVAL)
    whole = run("search", "--image", folder / "scenes.mp4", ok=False)
    assert whole.exit_code != 0 and "@" in whole.stderr and len(whole.stderr.strip().splitlines()) == 1
    library = isolated / "library"
    for second in (1, 6, 10):
        hits = search_json("--image", f"{folder / 'scenes.mp4'}@{second}", "--moments", "--kind", "video")
        best = hits[0]  # its own segment's stored embedding: that moment first, scoring 1
        assert best["start_s"] <= second < best["end_s"] and best["score"] == pytest.approx(1.0, abs=1e-5)
    # a video not in the library: the frame is decoded and encoded as index does
    other = isolated / "other.mp4"
    shutil.copy(folder / "scenes.mp4", other)
    os.utime(other, ns=(1, 1))
    hits = search_json("--image", f"{other}@0:06", "--moments", "--kind", "video")
    assert hits[0]["start_s"] <= 6 < hits[0]["end_s"]
    assert hits[0]["score"] > 0.99
    assert segments(library, other) == []
    late = run("search", "--image", f"{other}@1:00", ok=False)
    assert late.exit_code != 0 and "12.0 s" in late.stderr


def test_unchanged_video_is_not_opened_and_rename_keeps_segments(folder, tiny_model_name, isolated):
    library = isolated / "library"
    index_json(folder, "--model", tiny_model_name, "--video-interval", INTERVAL)
    before = catalog_query(library, "SELECT id, segment, start_s, end_s, frame_s, embedding FROM images "
                                    "WHERE start_s IS NOT NULL ORDER BY segment")
    again = index_json(folder)
    assert (again["unchanged"], again["encoded"], again["videos"]) == (4, 0, 0)
    (folder / "trip").mkdir()
    os.rename(folder / "scenes.mp4", folder / "trip" / "renamed.mp4")
    moved = index_json(folder)
    assert (moved["moved"], moved["encoded"], moved["removed"]) == (1, 0, 1)
    after = catalog_query(library, "SELECT id, segment, start_s, end_s, frame_s, embedding FROM images "
                                   "WHERE start_s IS NOT NULL ORDER BY segment")
    assert after == before  # the same ids, spans and embeddings: nothing decoded again
    paths = {p for (p,) in catalog_query(library, "SELECT DISTINCT path FROM images WHERE start_s IS NOT NULL")}
    assert paths == {os.fsencode(folder / "trip" / "renamed.mp4")}
    status = json.loads(run("status", "--json").stdout)
    assert (status["videos"], status["segments"]) == (1, len(before))


def test_changed_video_is_recut_and_removed_video_leaves_nothing(folder, tiny_model_name, isolated):
    library = isolated / "library"
    index_json(folder, "--model", tiny_model_name, "--video-interval", INTERVAL)
    old = segments(library, folder / "scenes.mp4")
    make_video(folder / "scenes.mp4", [(5, 3.0), (6, 3.0)], fps=10)
    changed = index_json(folder)
    assert changed["updated"] == 1 and changed["encoded"] > 0
    new = segments(library, folder / "scenes.mp4")
    assert new != old and new[-1][2] == pytest.approx(6.0, abs=0.15)
    (folder / "scenes.mp4").unlink()
    gone = index_json(folder)
    assert gone["removed"] == 1
    assert segments(library, folder / "scenes.mp4") == []
    assert catalog_query(library, "SELECT count(*) FROM images WHERE start_s IS NOT NULL") == [(0,)]
    assert json.loads(run("status", "--json").stdout)["segments"] == 0
    assert all(h["kind"] == "image" for h in search_json("a dog", "--moments"))


def test_bad_videos_are_skipped_lines_and_recorded(isolated, tiny_model_name):
    root = isolated / "bad"
    root.mkdir()
    photo(0).save(root / "fine.jpg")
    zero_length(root / "empty.mp4")
    truncated_mp4(root / "cut.mp4")
    audio_only_mp4(root / "song.mp4")
    huge_dimensions(root / "huge.mov")
    result = cli("index", root, "--model", tiny_model_name, "--json")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    summary = json.loads(result.stdout)
    assert (summary["added"], summary["failed"]) == (1, 4)
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 4
    reasons = dict(line.split(": ", 1) for line in skipped)
    assert "empty" in reasons[f"skipped {root / 'empty.mp4'}"]
    assert "video stream" in reasons[f"skipped {root / 'song.mp4'}"]
    assert "too large" in reasons[f"skipped {root / 'huge.mov'}"]
    again = index_json(root)
    assert (again["failed"], again["encoded"]) == (4, 0)  # recorded: not retried while unchanged


def test_corrupt_middle_keeps_what_decodes(isolated, tiny_model_name):
    root = isolated / "damaged"
    root.mkdir()
    path, damage_from, damage_to = corrupt_middle(root / "hurt.mp4")
    summary = index_json(root, "--model", tiny_model_name, "--video-interval", "0.5")
    assert (summary["added"], summary["failed"]) == (1, 0)
    found = segments(isolated / "library", path)
    frames = [frame for _, _, _, frame in found]
    assert found and found[-1][2] > damage_to  # the moments reach past the damage


def _holds_open(pid: int, path: Path) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def test_sigkill_in_the_middle_of_a_video_leaves_no_half_video(isolated, tiny_model_name):
    root = isolated / "long"
    root.mkdir()
    photo(0).save(root / "a.jpg")
    video = make_video(root / "long.mp4", [(n, 2.0) for n in range(20)], fps=5)
    library = isolated / "library"
    # --workers 0: the video is decoded in the process itself, which holds it open until its samples are taken;
    # a video is committed only after that (encode, cut, commit), so a kill while it is open is mid-video.
    proc = start("index", root, "--library", library, "--model", tiny_model_name, "--workers", "0",
                 "--video-interval", "0.2", "--batch-size", "1", log=isolated / "run")
    try:
        deadline = time.monotonic() + 120
        while not _holds_open(proc.pid, video) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        kill_group(proc)
    assert catalog_query(library, "SELECT count(*) FROM images WHERE start_s IS NOT NULL") == [(0,)], \
        "a half video was committed"
    summary = index_json(root, "--library", library)
    assert (summary["videos"], summary["failed"]) == (1, 0)
    total = catalog_query(library, "SELECT count(*), count(DISTINCT segment) FROM images WHERE start_s IS NOT NULL")
    assert total[0][0] == total[0][1] == summary["segments"] > 1  # every segment, each once
    assert catalog_query(library, "SELECT count(*) FROM images WHERE path=?", (os.fsencode(root / "a.jpg"),)) == [(1,)]


def test_a_library_of_photos_only_is_as_before(isolated, tiny_model_name):
    root = isolated / "photos"
    root.mkdir()
    for n in range(4):
        photo(n).save(root / f"p{n}.jpg")
    summary = index_json(root, "--model", tiny_model_name)
    assert (summary["added"], summary["videos"], summary["segments"]) == (4, 0, 0)
    status = json.loads(run("status", "--json").stdout)
    assert (status["images"], status["videos"], status["segments"]) == (4, 0, 0)
    plain = run("search", "a dog").stdout.splitlines()
    assert len(plain) == 4 and all(len(line.split("\t")) == 2 for line in plain)
    assert {h["kind"] for h in search_json("a dog")} == {"image"}
