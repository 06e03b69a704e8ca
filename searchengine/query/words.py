"""Word search over the text read in pictures (OCR): `--words` parsing, its SQL condition, which lines matched,
and the words half of a plain text query's fusion with CLIP.

`--words` syntax: every term must be in the picture's text, in any order; a term is a word, a `"quoted
phrase"` (its words next to each other, in that order) or a prefix `invo*`. Case and accents do not matter.
Chinese, Japanese and Korean are matched by characters: 发票 finds 增值税发票. A word of four letters or more
is also found inside a long token where the reader ran words together ("batterykeyboard" holds "keyboard").
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

from indexer.errors import QueryError
from indexer.ocr.words import GLUED_MIN, GLUED_QUERY_MIN, is_cjk, normal

if TYPE_CHECKING:
    from indexer.catalog.store import Catalog
    from indexer.ocr.lines import TextLine

WORD, PREFIX, PHRASE = "word", "prefix", "phrase"
_TERM = re.compile(r'"([^"]*)"?|(\S+)')
_TOKEN = re.compile(r"\w+")
# Left out of a plain query's words (they are in most texts and say nothing of this one).
STOPWORDS = frozenset(
    "a an the of in on at to for from by with and or not is are was be this that these those it its as my your our "
    "photo photos picture pictures image images".split())
FUSION_DEPTH = 50  # the words list of a fusion: this many best-matching pictures (bm25)
RRF_K = 60  # reciprocal rank fusion's constant (Cormack et al. 2009)
IMAGE_KEY = "ifnull(CAST(round(i.frame_s * 1000) AS INTEGER), -1)"


@dataclass(frozen=True)
class WordTerm:
    kind: str  # word, prefix or phrase
    text: str  # in normal form, lower case

    def fts(self) -> str:
        quoted = '"' + self.text.replace('"', '""') + '"'
        return quoted + "*" if self.kind == PREFIX else quoted

    def glued(self) -> str | None:
        """The trigram query that finds this term run together inside a long token, if it is long enough."""
        joined = self.text.replace(" ", "")
        if len(joined) < GLUED_QUERY_MIN or any(is_cjk(c) for c in joined) or not joined.isalnum():
            return None
        return '"' + joined + '"'

    def in_line(self, line: str) -> bool:
        """Whether this term is in one line of read text (what `--json` shows as the matching lines)."""
        folded = normal(line).lower()
        tokens = _TOKEN.findall(folded)
        wanted = _TOKEN.findall(self.text)
        if not wanted:
            return False
        if self.kind == PREFIX and len(wanted) == 1:
            hit = any(t.startswith(wanted[0]) for t in tokens)
        else:
            n = len(wanted)
            hit = any(tokens[i:i + n] == wanted for i in range(len(tokens) - n + 1))
        if hit or self.glued() is None:
            return hit
        return any("".join(wanted) in token for token in tokens if len(token) >= GLUED_MIN)


@dataclass(frozen=True)
class WordQuery:
    terms: tuple[WordTerm, ...]
    any_term: bool = False  # a plain query's words: any of them (ranked by bm25), instead of all

    def condition(self) -> tuple[str, tuple]:
        """SQL over `images`: the picture's text holds every term (the ids of texts, then their images)."""
        texts, params = self.text_ids()
        return (f"id IN (SELECT i.id FROM texts t JOIN images i ON i.content_hash = t.content_hash "
                f"AND {IMAGE_KEY} = t.frame_ms WHERE t.id IN ({texts}))"), params

    def text_ids(self) -> tuple[str, tuple]:
        parts, params = [], []
        for term in self.terms:
            part = "SELECT rowid FROM text_words WHERE text_words MATCH ?"
            params.append(term.fts())
            if term.glued() is not None:
                part += " UNION SELECT rowid FROM text_glued WHERE text_glued MATCH ?"
                params.append(term.glued())
            parts.append(part)
        return " INTERSECT ".join(f"SELECT * FROM ({p})" for p in parts), tuple(params)

    def matching(self, lines: "list[TextLine]") -> "list[TextLine]":
        return [line for line in lines if any(term.in_line(line.text) for term in self.terms)]


def parse_words(text: str) -> WordQuery:
    """`--words` as the user typed it; a one-line error when it holds no word."""
    terms = []
    for quoted, bare in _TERM.findall(text):
        raw = quoted if quoted else bare
        prefix = not quoted and raw.endswith("*")
        cleaned = " ".join(_TOKEN.findall(normal(raw.rstrip("*")).lower()))
        if not cleaned:
            continue
        kind = PREFIX if prefix else PHRASE if quoted or " " in cleaned else WORD
        terms.append(WordTerm(kind, cleaned))
    if not terms:
        raise QueryError(f"--words {text!r} holds no word to look for")
    return WordQuery(tuple(terms))


def query_words(text: str) -> WordQuery | None:
    """The words of a plain text query, for fusion: each word not a stopword (any of them may match)."""
    words = [w for w in _TOKEN.findall(normal(unicodedata.normalize("NFKC", text)).lower()) if w not in STOPWORDS]
    if not words:
        return None
    return WordQuery(tuple(WordTerm(WORD, w) for w in dict.fromkeys(words)), any_term=True)


def ranked_by_words(catalog: "Catalog", query: WordQuery, depth: int = FUSION_DEPTH) -> list[int]:
    """Image ids whose text holds any of the query's words, best bm25 first."""
    match = " OR ".join(t.fts() for t in query.terms)
    with catalog.read() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT i.id FROM (SELECT rowid AS text_id, rank FROM text_words WHERE text_words MATCH ? "
            f"ORDER BY rank LIMIT ?) w JOIN texts t ON t.id = w.text_id JOIN images i ON i.content_hash = "
            f"t.content_hash AND {IMAGE_KEY} = t.frame_ms ORDER BY w.rank, i.id", (match, depth)).fetchall()
    return list(dict.fromkeys(int(r[0]) for r in rows))


def fused_order(clip_ids: list[int], clip_scores: dict[int, float], word_ids: list[int],
                depth: int = FUSION_DEPTH) -> list[int]:
    """Reciprocal rank fusion of CLIP's ranking (`clip_ids`, best first: at least its first `depth`) and the words
    ranking: an image scores 1 / (RRF_K + rank) on each list it is in, counting CLIP's first `depth` only. Those
    that score come first, best first (ties: CLIP's score); the rest follow in CLIP's order. So the order does
    not depend on how far down CLIP's list was fetched: a page is the start of every longer answer."""
    clip_rank = {image_id: n for n, image_id in enumerate(clip_ids[:depth], 1)}
    word_rank = {image_id: n for n, image_id in enumerate(word_ids, 1)}

    def fused(image_id: int) -> float:
        value = 1 / (RRF_K + clip_rank[image_id]) if image_id in clip_rank else 0.0
        return value + (1 / (RRF_K + word_rank[image_id]) if image_id in word_rank else 0.0)

    scored = sorted(set(clip_rank) | set(word_rank), key=lambda i: (-fused(i), -clip_scores[i], i))
    return scored + [i for i in clip_ids if i not in clip_rank and i not in word_rank]
