"""The words read in pictures (index --ocr) through the JSON API, on one small library (real OCR, the tiny
random-weight CLIP): the `words` filter on every search route, words alone (newest first, score null), a text
query fused with the words exactly as the CLI's and the Python API's, `no_words`, paging, `words` on a hit only
when the query used words, the record's `text` and `text_lines`, and bad words as a 400."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.cli import run
from helpers.server import build_words_library, client
from searchengine.library.api import Library

pytest.importorskip("rapidocr_onnxruntime", reason="the ocr extra: pip install 'searchengine[ocr]'")

LINE_KEYS = {"text", "score", "box"}


@pytest.fixture(scope="module")
def lib(tmp_path_factory, tiny_model_name) -> dict:
    photos, library = build_words_library(tmp_path_factory.mktemp("serve-words"), tiny_model_name)
    return {"photos": photos, "library": library, "client": client(library), "api": Library.open(library)}


def get_ok(lib: dict, url: str, **params) -> dict:
    response = lib["client"].get(url, params=params)
    assert response.status_code == 200, (url, params, response.text)
    return response.json()


def results(lib: dict, url: str = "/api/search", **params) -> list[dict]:
    return get_ok(lib, url, **params)["results"]


def cli_json(lib: dict, *args: object) -> list[dict]:
    return json.loads(run("search", *args, "--json", "--library", lib["library"]).stdout)


def name(hit: dict) -> str:
    return Path(hit["path"]).name


def id_of(lib: dict, file_name: str) -> int:
    return next(h.id for h in lib["api"].search(text="x", limit=100, words=False) if Path(h.path).name == file_name)


def as_json(value):
    """A SearchHit's words as JSON has them (its boxes are tuples)."""
    return json.loads(json.dumps(value))


def same_hits(served: list[dict], cli: list[dict]) -> None:
    """Same images, order, scores and matching lines as `search --json` (which leaves `words` out where None)."""
    assert [(h["path"], h["score"], h.get("words")) for h in served] == \
           [(h["path"], h["score"], h.get("words")) for h in cli]


@pytest.mark.parametrize("words, expected", [
    ("gate", {"pass.png", "coffee.jpg"}),
    ('"boarding pass"', {"pass.png"}),
    ("invo*", {"invoice.png"}),
    ("GATE noon", {"coffee.jpg"}),
    ("platform", {"station.mp4"}),  # a video's moment: the text of its frame
    ("gate invoice", set()),
])
def test_words_alone_list_the_pictures_holding_them_like_the_cli(lib, words, expected):
    served = results(lib, words=words)
    assert {name(h) for h in served} == expected
    same_hits(served, cli_json(lib, "--words", words))
    for hit in served:
        assert hit["score"] is None and hit["words"], hit  # newest first: no score; the lines that matched
        assert all(set(line) == LINE_KEYS and len(line["box"]) == 4 for line in hit["words"])
        assert all(0 <= v <= 1 for line in hit["words"] for point in line["box"] for v in point)


def test_the_matching_lines_are_those_holding_the_words(lib):
    hit = next(h for h in results(lib, words="gate") if name(h) == "pass.png")
    assert [line["text"].lower() for line in hit["words"]] == ["gate 12 seat 4a"]  # not "BOARDING PASS"
    video = results(lib, words="platform", moments="true")
    assert [h["kind"] for h in video] == ["video"] and video[0]["start_s"] == 0
    assert video[0]["words"][0]["text"] == "PLATFORM 9"
    assert results(lib, words="platform", kind="image") == []


def test_words_with_a_text_query_are_ranked_by_clip_like_the_cli(lib):
    served = results(lib, q="seat", words="gate")
    assert {name(h) for h in served} == {"pass.png", "coffee.jpg"}
    same_hits(served, cli_json(lib, "seat", "--words", "gate"))
    assert served == sorted(served, key=lambda h: -h["score"])


@pytest.mark.parametrize("text", ["gate", "invoice number", "boarding pass", "a red bicycle"])
def test_a_text_query_is_fused_with_the_words_as_the_cli_and_python_api_fuse_it(lib, text):
    served = results(lib, q=text, limit=20)
    same_hits(served, cli_json(lib, text, "--limit", "20"))
    api = lib["api"].search(text=text, limit=20)
    assert [(h["id"], h.get("words")) for h in served] == [(h.id, as_json(h.words)) for h in api]
    matched = [h for h in served if "words" in h]
    assert all(h["words"] for h in matched)
    # a handful of pictures: holding a word of the query outranks any CLIP rank
    assert served[:len(matched)] == matched
    clip = results(lib, q=text, limit=20, no_words="true")
    same_hits(clip, cli_json(lib, text, "--limit", "20", "--no-words"))
    assert all("words" not in h for h in clip) and clip == sorted(clip, key=lambda h: -h["score"])
    assert sorted(h["id"] for h in clip) == sorted(h["id"] for h in served)


def test_words_of_a_text_query_rank_higher(lib):
    fused = [name(h) for h in results(lib, q="gate")]
    assert set(fused[:2]) == {"pass.png", "coffee.jpg"}
    assert "words" not in results(lib, q="a red bicycle")[0]  # no word of it in any picture: CLIP alone


@pytest.mark.parametrize("params", [{"q": "gate"}, {"q": "invoice platform"}, {"words": "gate"},
                                    {"q": "gate", "moments": "true"}])
def test_each_page_is_the_clis_limit_plus_offset(lib, params):
    """A page answers as the CLI's `--limit LIMIT+OFFSET`, less its first OFFSET hits (the fusion ranks them
    together), so a page agrees with the CLI whatever its size."""
    text, words, moments = params.get("q"), params.get("words"), params.get("moments") == "true"
    from searchengine.query.filters import SearchFilters

    filters = SearchFilters.parse(words=words) if words else None
    for limit in (1, 2, 3):
        for offset in range(0, 8):
            page = results(lib, **params, limit=limit, offset=offset)
            api = lib["api"].search(text=text, limit=limit + offset, filters=filters, moments=moments)[offset:]
            assert [(h["id"], h.get("words")) for h in page] == [(h.id, as_json(h.words)) for h in api], (limit, offset)


def test_words_filter_the_similar_and_upload_searches_too(lib):
    target = id_of(lib, "pass.png")
    similar = results(lib, f"/api/images/{target}/similar", words="gate")
    assert [name(h) for h in similar][0] == "pass.png" and {name(h) for h in similar} == {"pass.png", "coffee.jpg"}
    assert all(h["words"] for h in similar)
    assert all("words" not in h for h in results(lib, f"/api/images/{target}/similar"))
    data = (lib["photos"] / "pass.png").read_bytes()
    response = lib["client"].post("/api/search", files={"image": ("q.png", data, "image/png")},
                                  data={"words": "gate", "limit": "5"})
    assert response.status_code == 200, response.text
    same_hits(response.json()["results"], cli_json(lib, "--image", lib["photos"] / "pass.png", "--words", "gate",
                                                    "--limit", "5"))
    plain = lib["client"].post("/api/search", files={"image": ("q.png", data, "image/png")}).json()["results"]
    assert all("words" not in h for h in plain)


def test_filters_alone_list_the_newest_like_the_cli(lib):
    served = results(lib, kind="image")
    same_hits(served, cli_json(lib, "--kind", "image"))
    assert len(served) == 5 and all(h["score"] is None and "words" not in h for h in served)


def test_record_carries_the_text_and_its_lines(lib):
    record = get_ok(lib, f"/api/images/{id_of(lib, 'pass.png')}")
    assert record["text"].lower() == "boarding pass\ngate 12 seat 4a"
    assert [line["text"] for line in record["text_lines"]] == record["text"].split("\n")
    assert all(set(line) == LINE_KEYS and 0.5 < line["score"] <= 1 for line in record["text_lines"])
    first, second = (line["box"] for line in record["text_lines"])
    assert max(y for _, y in first) <= min(y for _, y in second) + 0.01  # reading order, fractions of 640x480
    shown = json.loads(run("show", str(record["id"]), "--json", "--library", lib["library"]).stdout)
    assert {k: v for k, v in record.items() if k not in ("thumbnail", "preview", "file", "mime", "moments")} == shown
    plain = get_ok(lib, f"/api/images/{id_of(lib, 'plain0.jpg')}")
    assert plain["text"] == "" and plain["text_lines"] == []  # read, and no text in it


def test_a_library_not_read_has_null_text(tmp_path, tiny_model_name):
    from helpers.texts import text_picture

    (tmp_path / "photos").mkdir()
    text_picture(["Gate 12"], seed=1).save(tmp_path / "photos" / "gate.png")
    run("index", tmp_path / "photos", "--library", tmp_path / "lib", "--model", tiny_model_name)
    c = client(tmp_path / "lib")
    hits = c.get("/api/search", params={"q": "gate"}).json()["results"]
    assert len(hits) == 1 and "words" not in hits[0]
    record = c.get(f"/api/images/{hits[0]['id']}").json()
    assert record["text"] is None and record["text_lines"] is None
    assert c.get("/api/search", params={"words": "gate"}).json() == {"results": []}


@pytest.mark.parametrize("params", [{"words": "*"}, {"words": '""'}, {"words": ""}, {"words": "  "},
                                    {"q": "a", "words": "-"}, {"words": "x" * 1001}, {}, {"no_words": "true"},
                                    {"words": "gate", "no_words": "maybe"}])
def test_bad_words_are_a_400_with_a_one_line_error(lib, params):
    response = lib["client"].get("/api/search", params=params)
    assert response.status_code == 400 and set(response.json()) == {"error"}, response.text
    assert "\n" not in response.json()["error"]
    if params.get("words") == "*":
        assert response.json()["error"] == "--words '*' holds no word to look for"


@pytest.mark.parametrize("url", ["/api/images/{id}/similar?words=*", "/api/search"])
def test_bad_words_are_a_400_on_every_route(lib, url):
    url = url.format(id=id_of(lib, "pass.png"))
    if url == "/api/search":
        data = (lib["photos"] / "pass.png").read_bytes()
        response = lib["client"].post(url, files={"image": ("q.png", data, "image/png")}, data={"words": "*"})
    else:
        response = lib["client"].get(url)
    assert response.status_code == 400 and "holds no word" in response.json()["error"], response.text


def test_openapi_documents_the_words(lib):
    schema = get_ok(lib, "/openapi.json")
    search = {p["name"]: p for p in schema["paths"]["/api/search"]["get"]["parameters"]}
    assert {"words", "no_words"} <= set(search) and not search["q"].get("required", False)
    similar = {p["name"] for p in schema["paths"]["/api/images/{image_id}/similar"]["get"]["parameters"]}
    assert "words" in similar and "no_words" not in similar
    upload = schema["paths"]["/api/search"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert "words" in upload["properties"]
    hit = schema["components"]["schemas"]["Hit"]
    assert "words" not in hit["required"] and "score" in hit["required"]
    assert {"type": "null"} in hit["properties"]["score"]["anyOf"]
    line = schema["components"]["schemas"]["TextLine"]
    assert set(line["required"]) == LINE_KEYS
    record = schema["components"]["schemas"]["ImageRecord"]["properties"]
    assert "text" in record and "TextLine" in json.dumps(record["text_lines"])
