"""Everything else follows videos: duplicates, export/import, --ray, serve --watch, a moved-from-elsewhere video,
a copy, remembered sampling, and the taken_at/camera/place of a phone video through the catalog."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from helpers.catalog import catalog_meta, catalog_query
from helpers.cli import cli, index_json, run, summary_of
from helpers.images import photo
from helpers.videos import make_video

PHONE_TAGS = {"com.apple.quicktime.creationdate": "2023-07-14T18:30:05+0200",
              "com.apple.quicktime.make": "Apple", "com.apple.quicktime.model": "iPhone 13",
              "com.apple.quicktime.location.ISO6709": "+48.8584+002.2945+035.000/"}


def moments(library: Path, path: Path) -> list[tuple]:
    return catalog_query(library, "SELECT segment, start_s, end_s, frame_s, embedding FROM images WHERE path=? "
                                  "ORDER BY segment", (os.fsencode(path),))


@pytest.fixture
def media(isolated) -> Path:
    root = isolated / "media"
    root.mkdir()
    make_video(root / "a.mp4", [(1, 3.0), (7, 3.0)], fps=10)
    photo(0).save(root / "p0.jpg")
    return root


def test_duplicates_groups_identical_videos_never_a_videos_own_moments(media, tiny_model_name):
    index_json(media, "--model", tiny_model_name, "--video-interval", "1")
    alone = json.loads(run("duplicates", "--json", "--threshold", "0.5").stdout)
    for group in alone:  # a video's own moments look alike (random weights): never a group of one video
        assert len({i["path"] for i in group["images"]}) == len(group["images"]) >= 2
    shutil.copy(media / "a.mp4", media / "copy.mp4")
    index_json(media)
    groups = json.loads(run("duplicates", "--json").stdout)
    identical = [g for g in groups if g["identical"]]
    assert len(identical) == 1
    assert sorted(i["path"] for i in identical[0]["images"]) == [str(media / "a.mp4"), str(media / "copy.mp4")]
    assert {i["kind"] for i in identical[0]["images"]} == {"video"}


def test_a_copy_reuses_the_segments_without_decoding(media, tiny_model_name, isolated):
    index_json(media, "--model", tiny_model_name, "--video-interval", "1")
    shutil.copy(media / "a.mp4", media / "copy.mp4")
    summary = index_json(media)
    assert (summary["added"], summary["encoded"], summary["reused"]) == (1, 0, 1)
    library = isolated / "library"
    original = [row[1:] for row in moments(library, media / "a.mp4")]
    assert [row[1:] for row in moments(library, media / "copy.mp4")] == original


def test_a_video_moved_out_of_the_indexed_folder_follows(media, tiny_model_name, isolated):
    library = isolated / "library"
    index_json(media, "--model", tiny_model_name, "--video-interval", "1")
    ids = [r[0] for r in catalog_query(library, "SELECT id FROM images WHERE start_s IS NOT NULL ORDER BY segment")]
    elsewhere = isolated / "elsewhere"
    elsewhere.mkdir()
    os.rename(media / "a.mp4", elsewhere / "a.mp4")
    summary = index_json(elsewhere)  # the old folder is not indexed again: its row is claimed as moved
    assert (summary["moved"], summary["encoded"]) == (1, 0)
    rows = catalog_query(library, "SELECT id, path FROM images WHERE start_s IS NOT NULL ORDER BY segment")
    assert [r[0] for r in rows] == ids and {r[1] for r in rows} == {os.fsencode(elsewhere / "a.mp4")}
    status = json.loads(run("status", "--json").stdout)
    assert (status["videos"], status["segments"]) == (1, len(ids))


def test_export_and_import_carry_the_segments(media, tiny_model_name, isolated):
    pytest.importorskip("pyarrow")
    index_json(media, "--model", tiny_model_name, "--video-interval", "1")
    summary_of(cli("export", isolated / "out", "--library", isolated / "library", "--json"))
    import pyarrow.parquet as pq

    table = pq.read_table(isolated / "out" / "images.parquet")
    assert {"segment", "start_s", "end_s", "frame_s", "duration_s", "fps", "codec"} <= set(table.column_names)
    second = isolated / "second"
    summary = summary_of(cli("import", isolated / "out", "--library", second, "--json"))
    assert summary["added"] == 2  # the photo and the video, whole
    before = [r[1:] for r in moments(isolated / "library", media / "a.mp4")]
    assert [r[1:] for r in moments(second, media / "a.mp4")] == before
    again = summary_of(cli("import", isolated / "out", "--library", second, "--json"))
    assert again["added"] == 0
    status = json.loads(run("status", "--json", "--library", second).stdout)
    assert (status["images"], status["videos"], status["segments"]) == (1, 1, len(before))


def test_sampling_options_are_remembered(media, tiny_model_name, isolated):
    library = isolated / "library"
    index_json(media, "--model", tiny_model_name, "--video-interval", "0.5", "--video-max-segments", "3")
    assert (catalog_meta(library)["video_interval_s"], catalog_meta(library)["video_max_segments"]) == ("0.5", "3")
    assert len(moments(library, media / "a.mp4")) <= 3
    make_video(media / "b.mp4", [(2, 3.0), (3, 3.0), (4, 3.0), (5, 3.0)], fps=10)
    index_json(media)  # no options: the library's own
    assert len(moments(library, media / "b.mp4")) <= 3


def test_phone_metadata_reaches_filters_and_show(isolated, tiny_model_name):
    root = isolated / "phone"
    root.mkdir()
    make_video(root / "IMG_0001.mov", [(1, 2.0)], rotation=90, size=(90, 160), metadata=PHONE_TAGS)
    index_json(root, "--model", tiny_model_name)
    shown = json.loads(run("show", root / "IMG_0001.mov", "--json").stdout)
    assert shown["taken_at"] == "2023-07-14T18:30:05+02:00" and shown["taken_at_source"] == "quicktime"
    assert (shown["make"], shown["model"], shown["camera"]) == ("Apple", "iPhone 13", "Apple iPhone 13")
    assert (shown["width"], shown["height"]) == (90, 160)  # as displayed: portrait
    assert shown["latitude"] == pytest.approx(48.8584) and shown["longitude"] == pytest.approx(2.2945)
    assert (shown["kind"], shown["codec"], shown["format"]) == ("video", "h264", "mov")
    assert shown["duration_s"] == pytest.approx(2.0, abs=0.15)
    for args in (("--camera", "iphone"), ("--near", "48.858,2.294,1"), ("--orientation", "portrait"),
                 ("--after", "2023-07-14", "--before", "2023-07-15")):
        hits = json.loads(run("search", "a tower", *args, "--json").stdout)
        assert [h["path"] for h in hits] == [str(root / "IMG_0001.mov")], args
    assert json.loads(run("search", "a tower", "--camera", "pixel", "--json").stdout) == []


def test_ray_indexes_videos_as_the_local_run_does(media, tiny_model_name, isolated):
    pytest.importorskip("ray")
    local = index_json(media, "--model", tiny_model_name, "--video-interval", "1", "--library", isolated / "local")
    result = cli("index", media, "--model", tiny_model_name, "--video-interval", "1", "--library",
                 isolated / "onray", "--ray", "auto", "--json", timeout=300)
    summary = summary_of(result)
    assert (summary["added"], summary["videos"], summary["segments"]) == (2, 1, local["segments"])
    on_ray = [row[:4] for row in moments(isolated / "onray", media / "a.mp4")]
    assert on_ray == [row[:4] for row in moments(isolated / "local", media / "a.mp4")]


def test_metadata_re_read_opens_a_video_once_for_all_its_segments(isolated, tiny_model_name, monkeypatch):
    from helpers.catalog import raw_sqlite
    from indexer.pipeline import metadata_fill

    root = isolated / "phone"
    root.mkdir()
    make_video(root / "IMG_0002.mov", [(1, 2.0), (2, 2.0), (3, 2.0)], metadata=PHONE_TAGS)
    index_json(root, "--model", tiny_model_name, "--video-interval", "1")
    library = isolated / "library"
    with raw_sqlite(library) as conn:  # as after an upgrade of the metadata reader
        conn.execute("UPDATE images SET meta_version=NULL, make=NULL, taken_at_source=NULL")
    calls = []
    real = metadata_fill.header_of
    monkeypatch.setattr(metadata_fill, "header_of", lambda *args: calls.append(args) or real(*args))
    summary = index_json(root)
    rows = catalog_query(library, "SELECT make, taken_at_source FROM images")
    assert summary["metadata_filled"] == len(rows) > 1 and len(calls) == 1
    assert set(rows) == {("Apple", "quicktime")}
