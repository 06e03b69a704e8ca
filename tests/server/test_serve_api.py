"""The web app's JSON API contract, on a small library built with the tiny model.

Results must agree with the CLI and the Python API (same ids, scores, order); images are reached by id only.
"""
from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from helpers.cli import run
from helpers.server import build_library, client
from searchengine.library.api import Library

HIT_KEYS = {"id", "path", "score", "width", "height", "thumbnail", "preview", "file",
            "kind", "start_s", "end_s", "frame_s", "duration_s", "codec", "mime"}  # a video's moment: test_serve_video


@pytest.fixture(scope="module")
def lib(tmp_path_factory, tiny_model_name) -> dict:
    base = tmp_path_factory.mktemp("serve-api")
    photos, library = build_library(base, tiny_model_name)
    return {"photos": photos, "library": library, "client": client(library)}


def cli_json(*args: str):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def get_ok(c, url: str, **kw):
    response = c.get(url, **kw)
    assert response.status_code == 200, (url, response.text)
    return response


def test_status_has_the_fields_of_status_json(lib):
    assert get_ok(lib["client"], "/api/status").json() == cli_json("status", "--json", "--library", lib["library"])


@pytest.mark.parametrize("text", ["a red bicycle", "dog on a beach", "été 照片"])
def test_text_search_agrees_with_cli_and_python_api(lib, text):
    results = get_ok(lib["client"], "/api/search", params={"q": text, "limit": 20}).json()["results"]
    cli = cli_json("search", text, "--json", "--limit", "20", "--library", lib["library"])
    assert [(h["path"], h["score"]) for h in results] == [(h["path"], h["score"]) for h in cli]
    api = Library.open(lib["library"]).search(text=text, limit=20)
    assert [h["id"] for h in results] == [h.id for h in api]
    assert all(set(h) == HIT_KEYS for h in results)
    assert all(h["kind"] == "image" and h["start_s"] is None and h["mime"] is None for h in results)
    assert results == sorted(results, key=lambda h: -h["score"])


def test_default_limit_is_50_and_pages_follow_one_order(lib):
    c = lib["client"]
    everything = get_ok(c, "/api/search", params={"q": "photo"}).json()["results"]
    total = len(Library.open(lib["library"]).search(text="photo", limit=1000))
    assert len(everything) == min(50, total)
    pages = [get_ok(c, "/api/search", params={"q": "photo", "limit": 7, "offset": o}).json()["results"]
             for o in range(0, total, 7)]
    assert [h["id"] for page in pages for h in page] == [h["id"] for h in everything][:total]
    assert get_ok(c, "/api/search", params={"q": "photo", "offset": 100000}).json() == {"results": []}


def test_hit_urls_fetch_the_right_image(lib):
    c = lib["client"]
    hit = next(h for h in get_ok(c, "/api/search", params={"q": "x", "limit": 50}).json()["results"]
               if h["path"].endswith("extra03.jpg"))
    original = Path(hit["path"]).read_bytes()
    response = get_ok(c, hit["file"])
    assert response.content == original and response.headers["content-type"] == "image/jpeg"
    assert (hit["width"], hit["height"]) == (640, 480)
    thumb = Image.open(io.BytesIO(get_ok(c, hit["thumbnail"]).content))
    assert thumb.format in ("JPEG", "WEBP") and thumb.size == (320, 240)
    preview = Image.open(io.BytesIO(get_ok(c, hit["preview"]).content))
    assert preview.format == "JPEG" and preview.size == (640, 480)  # fits 1600: never enlarged


def test_thumbnail_applies_exif_orientation_and_is_cacheable(lib):
    c = lib["client"]
    rotated = id_of(lib, "rotated.jpg")
    record = get_ok(c, f"/api/images/{rotated}").json()
    assert (record["width"], record["height"]) == (64, 96)  # stored 96x64 with orientation 6
    response = get_ok(c, f"/api/images/{rotated}/thumbnail")
    assert Image.open(io.BytesIO(response.content)).size == (64, 96)
    assert "max-age=31536000" in response.headers["cache-control"] and response.headers["etag"]
    again = c.get(f"/api/images/{rotated}/thumbnail", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and not again.content


def id_of(lib: dict, name: str) -> int:
    for hit in Library.open(lib["library"]).search(text="x", limit=1000):
        if os.path.basename(hit.path) == name:
            return hit.id
    raise AssertionError(f"{name} not indexed")


def test_similar_is_led_by_the_image_and_agrees_with_image_search(lib):
    c = lib["client"]
    target = id_of(lib, "extra05.jpg")
    results = get_ok(c, f"/api/images/{target}/similar", params={"limit": 10}).json()["results"]
    assert results[0]["id"] == target and results[0]["score"] == pytest.approx(1.0, abs=1e-5)
    cli = cli_json("search", "--image", lib["photos"] / "extra05.jpg", "--json", "--limit", "10",
                   "--library", lib["library"])
    assert [(h["path"], h["score"]) for h in results] == [(h["path"], h["score"]) for h in cli]


def test_upload_search_matches_cli_image_search(lib):
    c = lib["client"]
    data = (lib["photos"] / "extra07.jpg").read_bytes()
    results = c.post("/api/search", files={"image": ("q.jpg", data, "image/jpeg")}, data={"limit": "5"}).json()
    cli = cli_json("search", "--image", lib["photos"] / "extra07.jpg", "--json", "--limit", "5",
                   "--library", lib["library"])
    assert [(h["path"], h["score"]) for h in results["results"]] == [(h["path"], h["score"]) for h in cli]


def test_upload_of_a_new_image_is_encoded_like_the_cli(lib, tmp_path):
    c = lib["client"]
    outside = tmp_path / "new.png"
    Image.new("RGB", (200, 150), (20, 160, 90)).save(outside)
    results = c.post("/api/search", files={"image": ("new.png", outside.read_bytes(), "image/png")},
                     data={"limit": "5", "offset": "1"}).json()["results"]
    cli = cli_json("search", "--image", outside, "--json", "--limit", "6", "--library", lib["library"])[1:]
    assert [h["path"] for h in results] == [h["path"] for h in cli]
    assert [h["score"] for h in results] == pytest.approx([h["score"] for h in cli], abs=2e-6)


def test_record_holds_catalog_fields(lib):
    c = lib["client"]
    target = id_of(lib, "extra01.jpg")
    record = get_ok(c, f"/api/images/{target}").json()
    path = lib["photos"] / "extra01.jpg"
    assert record["id"] == target and record["path"] == str(path) and record["size"] == path.stat().st_size
    assert (record["width"], record["height"]) == (640, 480)
    shown = cli_json("show", str(target), "--json", "--library", lib["library"])
    assert {k: v for k, v in record.items() if k not in ("thumbnail", "preview", "file", "mime", "moments")} == shown
    assert record["mime"] is None and record["moments"] == []


@pytest.mark.parametrize("filters", [{"format": "png"}, {"orientation": "portrait"}, {"in": "sub"},
                                     {"format": "jpg", "orientation": "landscape"}, {"after": "2000-01-01"}])
def test_filters_are_the_clis(lib, filters):
    params = dict(filters)
    if "in" in params:
        params["in"] = str(lib["photos"] / params["in"])
    results = get_ok(lib["client"], "/api/search", params={"q": "a photo", "limit": 50, **params}).json()["results"]
    args = [a for k, v in params.items() for a in (f"--{k}", v)]
    cli = cli_json("search", "a photo", "--json", "--limit", "50", *args, "--library", lib["library"])
    assert [(h["path"], h["score"]) for h in results] == [(h["path"], h["score"]) for h in cli] and results
    target = results[0]["id"]
    similar = get_ok(lib["client"], f"/api/images/{target}/similar", params=params).json()["results"]
    assert similar[0]["id"] == target and {h["path"] for h in similar} <= {h["path"] for h in cli_json(
        "search", "a photo", "--json", "--limit", "1000", *args, "--library", lib["library"])}


@pytest.mark.parametrize("bad", [{"after": "yesterday"}, {"near": "1,2,3,4"}, {"format": "exe"},
                                 {"orientation": "diagonal"}, {"before": "2020-13-01"}])
def test_bad_filters_are_400(lib, bad):
    response = lib["client"].get("/api/search", params={"q": "a", **bad})
    assert response.status_code == 400 and set(response.json()) == {"error"}, response.text


def test_non_utf8_paths_match_the_cli(lib):
    c = lib["client"]
    results = get_ok(c, "/api/search", params={"q": "cafe", "limit": 1000}).json()["results"]
    weird = [h for h in results if "\udce9" in h["path"]]
    assert len(weird) == 1
    assert get_ok(c, weird[0]["file"]).content[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("url", ["/api/images/999999/thumbnail", "/api/images/999999", "/api/images/999999/file",
                                 "/api/images/999999/similar", "/api/images/999999/preview",
                                 "/api/images/-3/file", f"/api/images/{2**64}/file", f"/api/images/{10**40}"])
def test_unknown_ids_are_404_with_an_error(lib, url):
    response = lib["client"].get(url)
    assert response.status_code == 404 and set(response.json()) == {"error"}


@pytest.mark.parametrize("url", ["/api/search", "/api/search?q=", "/api/search?q=%20%20", "/api/search?q=a&limit=0",
                                 "/api/search?q=a&limit=abc", "/api/search?q=a&limit=100000",
                                 "/api/search?q=a&offset=-1", "/api/images/abc", "/api/images/1.5/file",
                                 "/api/images/1/similar?limit=-2"])
def test_bad_input_is_400_with_an_error(lib, url):
    response = lib["client"].get(url)
    assert response.status_code == 400 and set(response.json()) == {"error"}, response.text


def test_gone_or_changed_files_are_404(lib, tmp_path):
    c = lib["client"]
    target = id_of(lib, "extra09.jpg")
    path = lib["photos"] / "extra09.jpg"
    saved = tmp_path / "saved.jpg"
    shutil.copy2(path, saved)
    urls = [f"/api/images/{target}{tail}" for tail in ("", "/file", "/thumbnail", "/preview")]
    try:
        path.unlink()
        assert [c.get(u).status_code for u in urls] == [404] * 4
        data = bytearray(saved.read_bytes())
        data[-3] ^= 0xFF  # same size, same mtime, other content: only the hash tells
        path.write_bytes(bytes(data))
        info = saved.stat()
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
        assert c.get(f"/api/images/{target}/file").status_code == 404
        path.write_bytes(saved.read_bytes() + b"x")
        assert [c.get(u).status_code for u in urls] == [404] * 4
    finally:
        shutil.copy2(saved, path)
    assert [c.get(u).status_code for u in urls] == [200] * 4


def test_safety_headers_and_no_cors(lib):
    c = lib["client"]
    for url in ("/", "/api/status", "/api/search?q=a", "/api/images/1/thumbnail", "/nowhere"):
        response = c.get(url, headers={"Origin": "http://evil.example"})
        assert response.headers["content-security-policy"].startswith("default-src 'self'")
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert not any(h.lower().startswith("access-control-") for h in response.headers)
    preflight = c.options("/api/search", headers={"Origin": "http://evil.example",
                                                  "Access-Control-Request-Method": "POST"})
    assert preflight.status_code >= 400 and "access-control-allow-origin" not in preflight.headers


def test_page_and_its_files_are_served_from_the_package(lib):
    c = lib["client"]
    page = get_ok(c, "/").text
    assert "/static/app.js" in page and "http" not in page.replace("http-equiv", "")
    for asset in ("/static/app.js", "/static/style.css"):
        body = get_ok(c, asset).text
        assert "http://" not in body and "https://" not in body  # no CDN, no external fonts


def test_openapi_documents_errors_not_422(lib):
    schema = get_ok(lib["client"], "/openapi.json").json()
    paths = schema["paths"]
    assert set(paths) >= {"/api/status", "/api/search", "/api/images/{image_id}", "/api/images/{image_id}/similar",
                          "/api/images/{image_id}/thumbnail", "/api/images/{image_id}/preview",
                          "/api/images/{image_id}/file"}
    for methods in paths.values():
        for operation in methods.values():
            assert "422" not in operation["responses"] and "400" in operation["responses"]
    assert "multipart/form-data" in paths["/api/search"]["post"]["requestBody"]["content"]
