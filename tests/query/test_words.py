"""Word queries without the OCR engine: parsing (words, phrases, prefixes, CJK), which lines matched, words the
reader ran together, the reciprocal rank fusion's order, and FTS syntax typed by a user taken as plain words."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.cli import index_json, run
from helpers.images import make_photos
from indexer.catalog.store import Catalog
from indexer.catalog.texts import ReadResult, store_texts
from indexer.ocr.lines import TextLine
from indexer.ocr.words import glued, normal
from searchengine.query.words import PHRASE, PREFIX, WORD, WordTerm, fused_order, parse_words, query_words

BOX = ((0.1, 0.1), (0.9, 0.1), (0.9, 0.2), (0.1, 0.2))


def test_parse_words():
    assert parse_words('Boarding "GATE 12" invo* 发票').terms == (
        WordTerm(WORD, "boarding"), WordTerm(PHRASE, "gate 12"), WordTerm(PREFIX, "invo"), WordTerm(PHRASE, "发 票"))
    assert parse_words("e-mail").terms == (WordTerm(PHRASE, "e mail"),)
    assert parse_words("ＡＢＣ１２").terms == (WordTerm(WORD, "abc12"),)  # full-width forms folded
    assert query_words("a photo of the boarding pass").terms == (WordTerm(WORD, "boarding"), WordTerm(WORD, "pass"))
    assert query_words("a photo of") is None


def test_normal_form_spaces_out_cjk_and_keeps_long_tokens_for_the_trigram_index():
    assert normal("增值税发票 No.12") == "增 值 税 发 票 No.12"
    assert glued("ticket batterykeyboard 增值税 12345678901") == "batterykeyboard"


def test_matching_lines():
    lines = [TextLine("BOARDING PASS", 0.9, BOX), TextLine("Gate 12", 0.9, BOX), TextLine("增值税发票", 0.9, BOX)]
    assert [l.text for l in parse_words("gate").matching(lines)] == ["Gate 12"]
    assert [l.text for l in parse_words('"boarding pass" 发票').matching(lines)] == ["BOARDING PASS", "增值税发票"]
    assert parse_words("pass*").matching(lines)[0].text == "BOARDING PASS"
    assert parse_words("boar").matching(lines) == []


def test_fused_order_lifts_a_word_match_and_keeps_clip_order_otherwise():
    scores = {1: 0.9, 2: 0.8, 3: 0.7, 4: 0.1, 5: 0.05}
    assert fused_order([1, 2, 3], scores, []) == [1, 2, 3]
    assert fused_order([1, 2, 3], scores, [3]) == [3, 1, 2]  # on both lists: above CLIP's first
    assert fused_order([1, 2, 3], scores, [4]) == [1, 4, 2, 3]  # outside CLIP's list: up beside its first
    assert fused_order([1, 2, 3], scores, [2, 3])[:2] == [2, 3]  # both lifted; 2 leads on both lists
    # Past CLIP's first `depth`, CLIP's rank adds nothing: the order is the same however deep CLIP was read.
    assert fused_order([1, 2, 3, 5], scores, [4], depth=2) == [1, 4, 2, 3, 5]
    assert fused_order([1, 2, 3, 5], scores, [5], depth=2)[:3] == [1, 5, 2]
    longer = fused_order([1, 2, 3, 5], scores, [3, 4], depth=2)
    assert fused_order([1, 2, 3], scores, [3, 4], depth=2) == [i for i in longer if i != 5]


@pytest.fixture
def library_with_texts(tmp_path, tiny_model_name) -> Path:
    """Three indexed photos whose texts are stored directly (as a reader that ran words together would)."""
    paths = make_photos(tmp_path / "photos", 3)
    index_json(tmp_path / "photos", "--model", tiny_model_name)
    catalog = Catalog.open(tmp_path / "library" / "catalog.sqlite", writable=True)
    with catalog.read() as conn:
        hashes = dict(conn.exec_driver_sql("SELECT path, content_hash FROM images").fetchall())
    texts = ["ticketmarketsilverwindow", "the keyboard", 'NEAR "quoted" OR NOT * AND (x)']
    store_texts(catalog, [ReadResult(bytes(hashes[bytes(str(p), "utf-8")]), -1, [TextLine(t, 0.9, BOX)], "test")
                          for p, t in zip(paths, texts)])
    catalog.close()
    return tmp_path


def names(folder: Path, words: str) -> list[str]:
    return [Path(h["path"]).name for h in json.loads(run("search", "--words", words, "--json").stdout)]


def test_words_run_together_are_found_inside_long_tokens(library_with_texts):
    first = names(library_with_texts, "market")
    assert len(first) == 1 and names(library_with_texts, "silver window") == first
    assert names(library_with_texts, "win") == []  # too short to look inside a long token
    assert names(library_with_texts, "keyboard") != first  # "the keyboard": a word of its own
    assert names(library_with_texts, "board") == []  # and not found inside an ordinary word


def test_fts_syntax_in_words_is_plain_words(library_with_texts):
    assert len(names(library_with_texts, 'NOT "quoted"')) == 1
    assert names(library_with_texts, "AND OR") == names(library_with_texts, "near")
    assert names(library_with_texts, '(x) *') == names(library_with_texts, "near")
