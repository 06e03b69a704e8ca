"""The normal form of read text that the word index holds, and that word queries are put in before matching.

SQLite FTS5's unicode61 tokenizer splits on spaces and punctuation and folds case and accents; Chinese,
Japanese and Korean text has no spaces, so each of its characters is made a token of its own here, and a
query's run of such characters becomes a phrase of them: 发票 finds 增值税发票.

A recogniser sometimes drops the space between small words ("batterykeyboard"): tokens of GLUED_MIN letters
or more are also kept without spaces in a second, trigram index, where a word of 4 letters or more is found
inside them.
"""
from __future__ import annotations

import re
import unicodedata

# Han, Hiragana, Katakana, Hangul and the CJK punctuation and full-width forms between them.
CJK = "\u2e80-\u2fff\u3000-\u30ff\u3100-\u312f\u3190-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK_CHAR = re.compile(f"([{CJK}])")
_TOKEN = re.compile(r"\w+")
GLUED_MIN = 10  # longer tokens than most words: likely several run together
GLUED_QUERY_MIN = 4  # a shorter word would be found inside too many long ones


def normal(text: str) -> str:
    """Compatibility-folded (full-width letters and digits become plain ones), CJK characters spaced apart."""
    folded = unicodedata.normalize("NFKC", text)
    return re.sub(r"\s+", " ", _CJK_CHAR.sub(r" \1 ", folded)).strip()


def glued(text: str) -> str:
    """The long Latin-script tokens of `text`, lower-cased, one per line (the trigram index's column)."""
    folded = unicodedata.normalize("NFKC", text).lower()
    tokens = [t for t in _TOKEN.findall(_CJK_CHAR.sub(" ", folded)) if len(t) >= GLUED_MIN and not t.isdigit()]
    return "\n".join(tokens)


def is_cjk(char: str) -> bool:
    return bool(_CJK_CHAR.fullmatch(char))
