"""`index --ocr` and `search --words` end to end (the CLI, a tiny random-weight CLIP, the real OCR models):
words in any order, phrases, prefixes, Chinese by characters, with a text query and filters, the fusion of a
plain text query with the words, `show`, `status`, `export`, and a library without OCR left as it was."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers.cli import index_json, run
from helpers.texts import background, text_picture

pytest.importorskip("rapidocr_onnxruntime", reason="the ocr extra: pip install 'searchengine[ocr]'")

PICTURES = {
    "pass.png": dict(lines=["BOARDING PASS", "Gate 12 Seat 4A"], seed=1),
    "fapiao.jpg": dict(lines=["增值税发票", "金额合计"], seed=2, cjk=True, dark=True),
    "invoice.png": dict(lines=["Invoice number 4471"], seed=3, text_px=28, angle=6),
}


def make_folder(folder: Path, plain: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, spec in PICTURES.items():
        text_picture(**spec).save(folder / name)
    for n in range(plain):
        background((640, 480), seed=100 + n).save(folder / f"plain{n}.jpg")
    return folder


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_model_name) -> Path:
    """One indexed library for the module's read-only tests (OCR of its pictures takes a few seconds)."""
    base = tmp_path_factory.mktemp("words")
    make_folder(base / "photos")
    summary = index_json(base / "photos", "--library", base / "lib", "--model", tiny_model_name, "--ocr")
    assert summary["added"] == 6 and summary["words_read"] == 6 and summary["words_with_text"] == 3
    return base


def found(library: Path, *args: str) -> list[str]:
    out = run("search", "--library", library / "lib", *args, "--json").stdout
    return [Path(hit["path"]).name for hit in json.loads(out)]


@pytest.mark.parametrize("words, expected", [
    ("boarding", ["pass.png"]),
    ("BOARDING", ["pass.png"]),
    ("pass boarding", ["pass.png"]),  # every word, in any order
    ('"boarding pass"', ["pass.png"]),  # a phrase: next to each other, in that order
    ('"pass boarding"', []),
    ("boarding invoice", []),
    ("invo*", ["invoice.png"]),
    ("invo", []),  # a word is a whole word; a prefix says so
    ("4471", ["invoice.png"]),
    ("发票", ["fapiao.jpg"]),  # Chinese by characters
    ("税发", ["fapiao.jpg"]),
    ("发 合计", ["fapiao.jpg"]),
    ("票发", []),
])
def test_words(library, words, expected):
    assert found(library, "--words", words) == expected


def test_words_with_a_text_query_are_ranked_by_clip(library):
    with_words = json.loads(run("search", "--library", library / "lib", "seat", "--words", "gate", "--json").stdout)
    assert [Path(h["path"]).name for h in with_words] == ["pass.png"]
    clip = {h["path"]: h["score"] for h in json.loads(run("search", "--library", library / "lib", "seat",
                                                          "--no-words", "--json").stdout)}
    assert with_words[0]["score"] == clip[with_words[0]["path"]]
    assert with_words[0]["words"][0]["text"].lower() == "gate 12 seat 4a"


def test_words_combine_with_filters(library):
    assert found(library, "--words", "boarding", "--format", "png") == ["pass.png"]
    assert found(library, "--words", "boarding", "--format", "jpeg") == []
    assert found(library, "--words", "boarding", "--kind", "video") == []


def test_words_alone_carry_the_matching_lines(library):
    hits = json.loads(run("search", "--library", library / "lib", "--words", "gate", "--json").stdout)
    assert [line["text"] for line in hits[0]["words"]] == ["Gate 12 Seat 4A"]
    assert hits[0]["score"] is None
    assert all(0 <= x <= 1 and 0 <= y <= 1 for x, y in hits[0]["words"][0]["box"])


def test_a_text_query_lifts_pictures_holding_its_words(library):
    """Reciprocal rank fusion: a picture whose text holds the query's words ranks above where CLIP put it; the
    scores stay CLIP's."""
    lifted = 0
    for query in ["invoice", "an invoice", "invoice paper", "old invoice", "invoice on a table"]:
        clip = json.loads(run("search", "--library", library / "lib", query, "--no-words", "--json").stdout)
        fused = json.loads(run("search", "--library", library / "lib", query, "--json").stdout)
        assert {h["path"]: h["score"] for h in fused} == {h["path"]: h["score"] for h in clip}
        assert "words" not in clip[0]
        names = [Path(h["path"]).name for h in fused]
        assert names[0] == "invoice.png" and fused[0]["words"][0]["text"] == "Invoice number 4471"
        assert all("words" not in h for h in fused[1:])
        lifted += [Path(h["path"]).name for h in clip].index("invoice.png") > 0
    assert lifted, "CLIP alone ranked the invoice first for every query: the test shows nothing"


def test_show_status_and_export_carry_the_text(library):
    shown = run("show", "--library", library / "lib", library / "photos" / "pass.png").stdout
    assert "text:\n  BOARDING PASS\n  Gate 12 Seat 4A\n" in shown
    details = json.loads(run("show", "--library", library / "lib", library / "photos" / "plain0.jpg",
                             "--json").stdout)
    assert details["text"] == "" and details["text_lines"] == []
    status = json.loads(run("status", "--library", library / "lib", "--json").stdout)
    assert (status["ocr"], status["texts_read"], status["texts_with_text"], status["texts_pending"]) == ("on", 6, 3, 0)
    pyarrow = pytest.importorskip("pyarrow.parquet")
    run("export", library / "export", "--library", library / "lib")
    table = pyarrow.read_table(library / "export" / "images.parquet").to_pylist()
    texts = {Path(row["path"]).name: row["text"] for row in table}
    assert texts["pass.png"] == "BOARDING PASS\nGate 12 Seat 4A" and texts["plain0.jpg"] == ""
    assert json.loads(next(r for r in table if r["path"].endswith("fapiao.jpg"))["text_lines"])[0]["text"] == "增值税发票"


def test_bad_words_are_a_one_line_error(library):
    result = run("search", "--library", library / "lib", "--words", '"" *', ok=False)
    assert result.exit_code == 2 and "holds no word" in result.stderr and len(result.stderr.splitlines()) == 1


def test_renamed_and_copied_pictures_keep_their_text_unread(tmp_path, tiny_model_name):
    folder = make_folder(tmp_path / "photos", plain=1)
    index_json(folder, "--model", tiny_model_name, "--ocr")
    (folder / "pass.png").rename(folder / "moved.png")
    shutil.copy(folder / "invoice.png", folder / "copy.png")
    summary = index_json(folder)
    assert summary["words_read"] == 0  # the same content: its text is kept, not read again
    assert sorted(found(tmp_path, "--words", "boarding", "--library", tmp_path / "library")) == ["moved.png"]
    assert sorted(found(tmp_path, "--words", "4471", "--library", tmp_path / "library")) == ["copy.png",
                                                                                             "invoice.png"]


def test_no_ocr_turns_it_off_and_a_library_without_it_is_unchanged(tmp_path, tiny_model_name):
    folder = make_folder(tmp_path / "photos", plain=1)
    summary = index_json(folder, "--model", tiny_model_name)
    assert summary["words_read"] == 0
    status = json.loads(run("status", "--json").stdout)
    assert (status["ocr"], status["texts_read"], status["texts_pending"]) == ("off", 0, 4)
    assert run("search", "invoice").stdout == run("search", "invoice", "--no-words").stdout
    assert found(tmp_path, "--words", "boarding", "--library", tmp_path / "library") == []
    assert index_json(folder, "--ocr")["words_read"] == 4  # turned on later: what is there is read
    text_picture(["Departure hall"], seed=20).save(folder / "hall.png")
    assert index_json(folder, "--no-ocr")["words_read"] == 0
    status = json.loads(run("status", "--json").stdout)
    assert (status["ocr"], status["texts_pending"]) == ("off", 1)
    assert found(tmp_path, "--words", "boarding", "--library", tmp_path / "library") == ["pass.png"]
    assert index_json(folder)["words_read"] == 0  # off is remembered


def test_ocr_without_the_extra_is_a_one_line_error_and_writes_nothing(tmp_path, tiny_model_name, monkeypatch):
    from indexer.ocr import engine

    monkeypatch.setattr(engine, "PACKAGE", "no_such_ocr_package")
    folder = make_folder(tmp_path / "photos", plain=0)
    result = run("index", folder, "--model", tiny_model_name, "--ocr", ok=False)
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: text reading (--ocr) needs the ocr extra: pip install 'searchengine[ocr]'"
    assert not (tmp_path / "library").exists()


def test_a_picture_the_engine_cannot_read_is_a_recorded_failure(tmp_path, tiny_model_name, monkeypatch):
    from indexer.ocr.engine import OcrEngine

    folder = make_folder(tmp_path / "photos", plain=0)
    real = OcrEngine.read

    def failing(self, image):
        if image.getpixel((0, 0))[0] < 100:  # the dark one
            raise RuntimeError("engine broke")
        return real(self, image)

    monkeypatch.setattr(OcrEngine, "read", failing)
    summary = index_json(folder, "--model", tiny_model_name, "--ocr", "--workers", "0")
    assert summary["added"] == 3 and summary["words_read"] == 3 and summary["words_failed"] == 1
    status = json.loads(run("status", "--json").stdout)
    assert (status["texts_failed"], status["texts_pending"], status["images"]) == (1, 0, 3)
    assert found(tmp_path, "--words", "发票", "--library", tmp_path / "library") == []
    assert "fapiao.jpg" in found(tmp_path, "invoice", "--library", tmp_path / "library")  # its embedding is there


@pytest.mark.parametrize("query", ["invoice platform", "coffee gate", "boarding pass 发票", "number seat"])
def test_a_fused_answer_is_the_start_of_every_longer_one(library, query):
    """So pages (the server's limit and offset) neither repeat nor skip a hit."""
    longest = found(library, query, "--limit", "6")
    for limit in range(1, 6):
        assert found(library, query, "--limit", str(limit)) == longest[:limit]
