"""The web API for videos, on a small library of photos and videos indexed with the tiny model: a video hit's
fields, `moments` and `kind`, a video's record and its moments, the file streamed with HTTP Range requests
(206 bodies are exactly the bytes asked for), served only while unchanged, and each moment's thumbnail and
preview showing that moment's frame (decoded again when missing from the cache)."""
from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.images import photo
from helpers.server import client
from helpers.videos import make_video, split_picture
from searchengine.library.api import Library
from searchengine.query.filters import SearchFilters

COLOURS = [(220, 40, 40), (40, 190, 60), (40, 60, 220), (230, 220, 50)]
SCENE_S = 4.0
FPS = 10
RED, BLUE = (220, 30, 30), (30, 40, 220)
TYPES = {"colours.mp4": "video/mp4", "stripes.webm": "video/webm", "old.avi": "video/x-msvideo",
         "turned.mov": "video/quicktime", "scenes.mkv": "video/x-matroska"}


def solid(rgb: tuple[int, int, int]):
    return lambda t, size: np.full((size[1], size[0], 3), rgb, np.uint8)


def make_media(folder: Path) -> Path:
    """Three photos and five videos: solid colour scenes (H.264 MP4), VP9 WebM, MPEG-4 Part 2 AVI, a portrait
    MOV recorded turned (a display matrix), H.264 MKV."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(3):
        photo(3000 + k, (320, 240)).save(folder / f"photo{k}.jpg", quality=90)
    make_video(folder / "colours.mp4", [(solid(c), SCENE_S) for c in COLOURS], fps=FPS)
    make_video(folder / "stripes.webm", [(1, 2.0), (2, 2.0)], codec="libvpx-vp9")
    make_video(folder / "old.avi", [(3, 2.0), (4, 2.0)], codec="mpeg4")
    make_video(folder / "turned.mov", [(split_picture(RED, BLUE), 2.0)], size=(120, 160), rotation=90)
    make_video(folder / "scenes.mkv", [(5, 2.0), (6, 2.0)])
    return folder


@pytest.fixture(scope="module")
def lib(tmp_path_factory, tiny_model_name) -> dict:
    base = tmp_path_factory.mktemp("serve-video")
    media = make_media(base / "media")
    library = base / "library"
    Library.open(library).index([str(media)], model=tiny_model_name)
    return {"media": media, "library": library, "client": client(library), "api": Library.open(library)}


def get_ok(c, url: str, **kw):
    response = c.get(url, **kw)
    assert response.status_code == 200, (url, response.status_code, response.text)
    return response


def moment_ids(lib: dict, name: str) -> list[tuple[int, float, float, float]]:
    """(id, start_s, end_s, frame_s) of every moment of the video `name`, in time order."""
    hits = lib["api"].search(text="x", limit=1000, moments=True, filters=SearchFilters(kind="video"))
    first = next(h.id for h in hits if os.path.basename(h.path) == name)
    return lib["api"].moments(first)


def row(lib: dict, image_id: int):
    return lib["api"].image(image_id)


def nearest(rgb, colours) -> int:
    return int(np.argmin([sum((a - b) ** 2 for a, b in zip(rgb, c)) for c in colours]))


def mean_colour(data: bytes, box=None) -> tuple[float, ...]:
    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG"
    img = img.convert("RGB")
    if box is not None:
        img = img.crop(box)
    return tuple(np.asarray(img, np.float64).reshape(-1, 3).mean(axis=0))


# --- hits ------------------------------------------------------------------------------------------------------
def test_a_video_is_one_hit_at_its_best_moment_with_its_fields(lib):
    c = lib["client"]
    results = get_ok(c, "/api/search", params={"q": "a red scene", "limit": 100}).json()["results"]
    api = lib["api"].search(text="a red scene", limit=100)
    assert [(h["id"], h["score"]) for h in results] == [(h.id, pytest.approx(h.score, abs=1e-6)) for h in api]
    videos = [h for h in results if h["kind"] == "video"]
    assert sorted(os.path.basename(h["path"]) for h in videos) == sorted(TYPES)  # each video once
    assert sum(h["kind"] == "image" for h in results) == 3
    for h in videos:
        record = row(lib, h["id"])
        assert (h["start_s"], h["end_s"], h["frame_s"]) == (record.start_s, record.end_s, record.frame_s)
        assert h["start_s"] <= h["frame_s"] <= h["end_s"] and h["end_s"] > h["start_s"]
        assert h["duration_s"] == pytest.approx(record.duration_s) and h["duration_s"] > 0
        assert h["mime"] == TYPES[os.path.basename(h["path"])]
        assert h["file"] == f"/api/images/{h['id']}/file"
        assert h["thumbnail"].startswith(f"/api/images/{h['id']}/thumbnail?v=")
    by_name = {os.path.basename(h["path"]): h for h in videos}
    assert by_name["colours.mp4"]["codec"] == "h264" and by_name["stripes.webm"]["codec"] == "vp9"
    assert by_name["old.avi"]["codec"] == "mpeg4"
    assert (by_name["turned.mov"]["width"], by_name["turned.mov"]["height"]) == (120, 160)
    for h in results:
        if h["kind"] == "image":
            assert h["start_s"] is h["end_s"] is h["frame_s"] is h["codec"] is h["mime"] is None


def test_moments_lists_every_matching_moment_and_kind_filters(lib):
    c = lib["client"]
    every = get_ok(c, "/api/search", params={"q": "colour", "limit": 1000, "moments": "true",
                                             "kind": "video"}).json()["results"]
    api = lib["api"].search(text="colour", limit=1000, moments=True, filters=SearchFilters(kind="video"))
    assert [h["id"] for h in every] == [h.id for h in api]
    assert all(h["kind"] == "video" for h in every)
    colours = [h for h in every if h["path"].endswith("colours.mp4")]
    assert sorted(h["id"] for h in colours) == [m[0] for m in moment_ids(lib, "colours.mp4")]
    assert len(colours) >= 2  # four scenes of solid colour: more than one moment
    once = get_ok(c, "/api/search", params={"q": "colour", "kind": "video"}).json()["results"]
    assert len(once) == len(TYPES) < len(every)
    photos = get_ok(c, "/api/search", params={"q": "colour", "kind": "image"}).json()["results"]
    assert len(photos) == 3 and all(h["kind"] == "image" for h in photos)
    assert get_ok(c, "/api/search", params={"q": "x", "format": "webm"}).json()["results"][0]["mime"] == "video/webm"
    bad = c.get("/api/search", params={"q": "x", "kind": "audio"})
    assert bad.status_code == 400 and "kind" in bad.json()["error"]
    assert c.get("/api/search", params={"q": "x", "moments": "perhaps"}).status_code == 400


def test_paging_moments_follows_one_order(lib):
    c = lib["client"]
    everything = get_ok(c, "/api/search", params={"q": "x", "moments": "true", "limit": 1000}).json()["results"]
    pages = [get_ok(c, "/api/search", params={"q": "x", "moments": "true", "limit": 4, "offset": o}).json()["results"]
             for o in range(0, len(everything), 4)]
    assert [h["id"] for page in pages for h in page] == [h["id"] for h in everything]


def test_upload_search_takes_moments_and_kind(lib):
    data = (lib["media"] / "photo1.jpg").read_bytes()
    answer = lib["client"].post("/api/search", files={"image": ("q.jpg", data, "image/jpeg")},
                                data={"limit": "1000", "moments": "true", "kind": "video"})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert results and all(h["kind"] == "video" for h in results)
    assert len(results) == sum(len(moment_ids(lib, n)) for n in TYPES)
    bad = lib["client"].post("/api/search", files={"image": ("q.jpg", data, "image/jpeg")}, data={"moments": "x"})
    assert bad.status_code == 400


def test_similar_from_a_moment_leaves_out_its_own_video_unless_moments(lib):
    c = lib["client"]
    moments = moment_ids(lib, "colours.mp4")
    target = moments[-1][0]
    results = get_ok(c, f"/api/images/{target}/similar", params={"limit": 100}).json()["results"]
    assert results and not any(h["path"].endswith("colours.mp4") for h in results)
    api = lib["api"].similar(target, limit=100)
    assert [h["id"] for h in results] == [h.id for h in api]
    every = get_ok(c, f"/api/images/{target}/similar", params={"limit": 100, "moments": "true"}).json()["results"]
    assert every[0]["id"] == target and every[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert {m[0] for m in moments} <= {h["id"] for h in every}
    videos = get_ok(c, f"/api/images/{target}/similar", params={"kind": "video"}).json()["results"]
    assert videos and all(h["kind"] == "video" for h in videos)


# --- the record --------------------------------------------------------------------------------------------------
def test_record_of_a_moment_lists_the_videos_moments(lib):
    c = lib["client"]
    moments = moment_ids(lib, "colours.mp4")
    target = moments[1][0]
    record = get_ok(c, f"/api/images/{target}").json()
    assert record["kind"] == "video" and record["codec"] == "h264" and record["mime"] == "video/mp4"
    assert record["id"] == target and record["segments"] == len(moments)
    assert (record["start_s"], record["end_s"], record["frame_s"]) == moments[1][1:]
    assert record["duration_s"] == pytest.approx(len(COLOURS) * SCENE_S, abs=0.2)
    assert record["fps"] == pytest.approx(FPS)
    assert [(m["id"], m["start_s"], m["end_s"], m["frame_s"]) for m in record["moments"]] == moments
    for m in record["moments"]:
        assert m["thumbnail"].startswith(f"/api/images/{m['id']}/thumbnail?v=")
        assert m["preview"].startswith(f"/api/images/{m['id']}/preview?v=")
    assert len({m["thumbnail"].split("?v=")[1] for m in record["moments"]}) == len(moments)  # a version per frame
    assert record["file"] == f"/api/images/{target}/file"


# --- the file: streamed, with Range requests ------------------------------------------------------------------------
def video_id(lib: dict, name: str) -> int:
    return moment_ids(lib, name)[0][0]


@pytest.mark.parametrize("name", sorted(TYPES))
def test_whole_video_with_its_type_and_accept_ranges(lib, name):
    response = get_ok(lib["client"], f"/api/images/{video_id(lib, name)}/file")
    assert response.content == (lib["media"] / name).read_bytes()
    assert response.headers["content-type"] == TYPES[name]
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-length"] == str(len(response.content))
    assert response.headers["etag"] and response.headers["last-modified"]


def test_every_container_has_its_type(lib):
    from searchengine.server.media import video_type

    rec = row(lib, video_id(lib, "colours.mp4"))
    for name, expected in {"a.mp4": "video/mp4", "a.M4V": "video/mp4", "a.mov": "video/quicktime",
                           "a.3gp": "video/3gpp", "a.mkv": "video/x-matroska", "a.webm": "video/webm",
                           "a.AVI": "video/x-msvideo"}.items():
        assert video_type(dataclasses.replace(rec, path=name.encode())) == expected, name


@pytest.mark.parametrize("header, first, last", [
    ("bytes=0-99", 0, 99), ("bytes=100-", 100, None), ("bytes=-500", -500, None), ("bytes=10-10", 10, 10),
    ("bytes=7-999999999", 7, None), ("bytes=-999999999", 0, None), ("BYTES = 3 - 40", 3, 40)])
def test_range_is_exactly_the_bytes_asked_for(lib, header, first, last):
    data = (lib["media"] / "colours.mp4").read_bytes()
    size = len(data)
    start = first if first >= 0 else size + first
    start = max(0, start)
    end = size - 1 if last is None else last
    response = lib["client"].get(f"/api/images/{video_id(lib, 'colours.mp4')}/file", headers={"Range": header})
    assert response.status_code == 206, response.text
    assert response.content == data[start:end + 1]
    assert response.headers["content-range"] == f"bytes {start}-{end}/{size}"
    assert response.headers["content-length"] == str(end + 1 - start)
    assert response.headers["content-type"] == "video/mp4" and response.headers["accept-ranges"] == "bytes"


def test_a_range_larger_than_a_chunk_comes_whole(lib, monkeypatch):
    from searchengine.server import streaming

    monkeypatch.setattr(streaming, "CHUNK_BYTES", 256)
    data = (lib["media"] / "stripes.webm").read_bytes()
    assert len(data) > 2000
    url = f"/api/images/{video_id(lib, 'stripes.webm')}/file"
    end = len(data) - 100
    part = lib["client"].get(url, headers={"Range": f"bytes=123-{end}"})
    assert part.status_code == 206 and part.content == data[123:end + 1]
    assert get_ok(lib["client"], url).content == data


@pytest.mark.parametrize("header", ["bytes=-0", "bytes={size}-", "bytes={size}-{size}", "bytes=99999999-"])
def test_unsatisfiable_range_is_416(lib, header):
    size = (lib["media"] / "colours.mp4").stat().st_size
    response = lib["client"].get(f"/api/images/{video_id(lib, 'colours.mp4')}/file",
                                 headers={"Range": header.format(size=size)})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{size}"
    assert "error" in response.json()


@pytest.mark.parametrize("header", ["bytes=9-2", "items=0-10", "bytes=0-1,5-6", "bytes=abc", "bytes=-", "bytes=+1-2"])
def test_a_range_this_server_ignores_gets_the_whole_file(lib, header):
    data = (lib["media"] / "colours.mp4").read_bytes()
    response = lib["client"].get(f"/api/images/{video_id(lib, 'colours.mp4')}/file", headers={"Range": header})
    assert response.status_code == 200 and response.content == data


def test_if_range_and_if_none_match(lib):
    c = lib["client"]
    url = f"/api/images/{video_id(lib, 'colours.mp4')}/file"
    data = (lib["media"] / "colours.mp4").read_bytes()
    whole = get_ok(c, url)
    etag, modified = whole.headers["etag"], whole.headers["last-modified"]
    for validator in (etag, modified):
        same = c.get(url, headers={"Range": "bytes=5-9", "If-Range": validator})
        assert same.status_code == 206 and same.content == data[5:10]
    other = c.get(url, headers={"Range": "bytes=5-9", "If-Range": '"v-something-else"'})
    assert other.status_code == 200 and other.content == data
    assert c.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert c.get(url, headers={"If-None-Match": f'"x", W/{etag}'}).status_code == 304
    assert c.get(url, headers={"If-None-Match": '"x"'}).status_code == 200
    photo_id = next(h.id for h in lib["api"].search(text="x", limit=100) if h.kind == "image")
    photo_file = get_ok(c, f"/api/images/{photo_id}/file")  # photos as before: whole, typed from their bytes
    assert photo_file.headers["content-type"] == "image/jpeg" and "accept-ranges" not in photo_file.headers


def test_byte_range_parser():
    from searchengine.server.media import Unsatisfiable, byte_range

    assert byte_range(None, 10) is None and byte_range("", 10) is None
    assert byte_range("bytes=0-", 10) == (0, 9)
    assert byte_range("bytes=2-4", 10) == (2, 4)
    assert byte_range("bytes=-3", 10) == (7, 9)
    assert byte_range("bytes=-30", 10) == (0, 9)
    assert byte_range("bytes=9-100", 10) == (9, 9)
    for ignored in ("bytes=4-2", "bytes=1-2,4-5", "pages=1-2", "bytes=x-", "bytes=", "bytes=1", "bytes=١-٢",
                    "bytes=" + "9" * 40 + "-"):
        assert byte_range(ignored, 10) is None, ignored
    for bad in ("bytes=10-", "bytes=-0", "bytes=10-20"):
        with pytest.raises(Unsatisfiable):
            byte_range(bad, 10)


# --- thumbnails and previews of a moment's frame ------------------------------------------------------------------
def test_thumbnails_of_each_moment_are_made_at_index_and_show_its_frame(lib):
    from indexer.images.thumbnails import cache_path, frame_cache_key

    c = lib["client"]
    seen = set()
    for moment_id, start_s, end_s, frame_s in moment_ids(lib, "colours.mp4"):
        rec = row(lib, moment_id)
        cached = cache_path(lib["library"], "thumbnail", frame_cache_key(rec.content_hash, frame_s))
        assert cached.stat().st_size > 0  # made by `index`, before any request
        response = get_ok(c, f"/api/images/{moment_id}/thumbnail")
        assert response.content == cached.read_bytes()
        scene = int((frame_s + 1e-6) // SCENE_S)
        assert nearest(mean_colour(response.content), COLOURS) == scene, (frame_s, mean_colour(response.content))
        assert Image.open(io.BytesIO(response.content)).size == (160, 120)  # fits 320: never enlarged
        again = c.get(f"/api/images/{moment_id}/thumbnail", headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304
        seen.add(scene)
    assert len(seen) >= 2, "the four scenes should not all be one moment"


def test_missing_thumbnail_and_preview_are_decoded_from_the_video(lib):
    from indexer.images.thumbnails import cache_path, frame_cache_key

    c = lib["client"]
    etags = set()
    for moment_id, _, _, frame_s in moment_ids(lib, "colours.mp4"):
        rec = row(lib, moment_id)
        for kind in ("thumbnail", "preview"):
            cached = cache_path(lib["library"], kind, frame_cache_key(rec.content_hash, frame_s))
            cached.unlink(missing_ok=True)
            response = get_ok(c, f"/api/images/{moment_id}/{kind}")
            assert response.headers["content-type"] == "image/jpeg" and "max-age" in response.headers["cache-control"]
            assert nearest(mean_colour(response.content), COLOURS) == int((frame_s + 1e-6) // SCENE_S)
            assert Image.open(io.BytesIO(response.content)).size == (160, 120)
            assert cached.read_bytes() == response.content  # cached for the next request
            etags.add(response.headers["etag"])
    assert len(etags) == 2 * len(moment_ids(lib, "colours.mp4"))


def test_preview_of_a_turned_recording_is_upright(lib):
    from indexer.images.thumbnails import cache_path, frame_cache_key

    c = lib["client"]
    moment_id, _, _, frame_s = moment_ids(lib, "turned.mov")[0]
    rec = row(lib, moment_id)
    for kind in ("thumbnail", "preview"):
        cache_path(lib["library"], kind, frame_cache_key(rec.content_hash, frame_s)).unlink(missing_ok=True)
        data = get_ok(c, f"/api/images/{moment_id}/{kind}").content
        assert Image.open(io.BytesIO(data)).size == (120, 160)
        assert nearest(mean_colour(data, (0, 0, 120, 70)), [RED, BLUE]) == 0
        assert nearest(mean_colour(data, (0, 90, 120, 160)), [RED, BLUE]) == 1


# --- a changed file -----------------------------------------------------------------------------------------------
def test_a_changed_video_is_404_and_served_again_once_restored(tmp_path, tiny_model_name):
    from indexer.images.thumbnails import cache_path, frame_cache_key

    media = tmp_path / "media"
    media.mkdir()
    video = make_video(media / "clip.mp4", [(solid(COLOURS[0]), 2.0), (solid(COLOURS[2]), 2.0)])
    library = tmp_path / "library"
    Library.open(library).index([str(media)], model=tiny_model_name)
    api = Library.open(library)
    target = api.search(text="x", limit=10)[0].id
    c = client(library)
    url = f"/api/images/{target}/file"
    original = video.read_bytes()
    info = video.stat()
    assert get_ok(c, url).content == original  # the identity is now checked and remembered for this version

    changed = bytearray(original)
    changed[len(changed) // 2] ^= 0xFF  # same size, different bytes, the same mtime put back
    video.write_bytes(bytes(changed))
    os.utime(video, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert c.get(url).status_code == 404
    assert c.get(url, headers={"Range": "bytes=0-10"}).status_code == 404
    rec = api.image(target)
    cache_path(library, "preview", frame_cache_key(rec.content_hash, rec.frame_s)).unlink(missing_ok=True)
    assert c.get(f"/api/images/{target}/preview").status_code == 404  # never a frame of other content

    video.write_bytes(original)
    os.utime(video, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert get_ok(c, url).content == original

    with open(video, "ab") as fh:
        fh.write(b"\0")
    for route in ("file", "thumbnail", "preview", ""):
        assert c.get(f"/api/images/{target}/{route}".rstrip("/")).status_code == 404, route
    video.unlink()
    assert c.get(url).status_code == 404


def test_openapi_documents_ranges_and_moments(lib):
    schema = get_ok(lib["client"], "/openapi.json").json()
    file_route = schema["paths"]["/api/images/{image_id}/file"]["get"]["responses"]
    assert {"200", "206", "304", "404", "416"} <= set(file_route)
    for path in ("/api/search", "/api/images/{image_id}/similar"):
        names = {p["name"] for p in schema["paths"][path]["get"]["parameters"]}
        assert {"moments", "kind"} <= names
    hit = schema["components"]["schemas"]["Hit"]["properties"]
    assert {"kind", "start_s", "end_s", "frame_s", "codec", "mime"} <= set(hit)
    record = schema["components"]["schemas"]["ImageRecord"]["properties"]
    assert {"moments", "mime", "kind", "codec", "duration_s"} <= set(record)
