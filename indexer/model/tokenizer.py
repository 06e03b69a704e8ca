"""Torch-free port of open_clip's default ``SimpleTokenizer`` (CLIP byte-level BPE, 'lower' cleaning)."""
from __future__ import annotations

import gzip
import importlib.util
import re
import zlib
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
RANKS_FILE = "bpe_ranks.npy"  # beside an export's plain merges: see write_rank_table
DEFAULT_CONTEXT_LENGTH = 77
SOT = "<start_of_text>"
EOT = "<end_of_text>"
# Same slice as open_clip: a header line, then the merges that fit a 49408-token vocab.
MERGE_LINES = 49152 - 256 - 2 + 1
BYTE_TOKENS = 256
_PATTERN = SOT + "|" + EOT + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# The same pattern for ASCII text, in the stdlib `re`: on ASCII, \p{L} is [a-z] (the text is lower-cased), \p{N}
# is [0-9] and Unicode White_Space is \t\n\v\f\r and space. Importing `regex` costs a cold query ~20-60 ms.
_ASCII_PATTERN = re.compile(
    re.escape(SOT) + "|" + re.escape(EOT) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\t\n\x0b\x0c\r a-z0-9]+""",
    re.IGNORECASE)


def default_vocab_path() -> Path | None:
    """The BPE merges shipped with open_clip, located without importing open_clip (or torch)."""
    # find_spec on a top-level name only locates it; it does not execute the package.
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / VOCAB_FILE
        if path.is_file():
            return path
    return None


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Reversible map from utf-8 bytes to printable unicode characters (as in CLIP)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _is_plain_ascii(text: str) -> bool:
    # ftfy.fix_text is the identity on printable ASCII without '&': its fixes target
    # mojibake, HTML entities, control characters and terminal escapes. Skipping it saves
    # the ~60 ms ftfy import on the cold query path; tests check parity.
    return text.isascii() and text.isprintable() and "&" not in text


def clean_text(text: str) -> str:
    """open_clip's 'lower' cleaning: ftfy, double html unescape, collapse whitespace, lower case."""
    if not _is_plain_ascii(text):
        import html  # only here: plain ASCII text (most queries) needs neither

        import ftfy

        text = ftfy.fix_text(text)
        text = html.unescape(html.unescape(text))
    return " ".join(text.strip().split()).lower()


def _merge(word: list[str], ids: list[int], merge: str, new_id: int) -> tuple[list[str], list[int]]:
    """Replace each adjacent (first, second) of merge, left to right, by the merged token."""
    first, second = merge.split(" ")
    out_word: list[str] = []
    out_ids: list[int] = []
    i = 0
    while i < len(word):
        if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
            out_word.append(first + second)
            out_ids.append(new_id)
            i += 2
        else:
            out_word.append(word[i])
            out_ids.append(ids[i])
            i += 1
    return out_word, out_ids


def read_merges(path: Path) -> list[str]:
    """The BPE merge lines ("first second") open_clip uses, from the .gz vocab or a plain copy."""
    data = Path(path).read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    # maxsplit: the vocab file holds far more lines than the merges used
    merges = data.decode("utf-8").split("\n", MERGE_LINES)[1:MERGE_LINES]
    if len(merges) != MERGE_LINES - 1:
        raise ValueError(f"{path}: expected {MERGE_LINES - 1} BPE merges, found {len(merges)}")
    return merges


def write_merges(source: Path, dest: Path) -> None:
    """Write the used part of the vocab uncompressed: cheaper to read on the cold query path."""
    data = gzip.decompress(source.read_bytes()) if source.suffix == ".gz" else source.read_bytes()
    lines = data.decode("utf-8").split("\n", MERGE_LINES)[:MERGE_LINES]
    dest.write_text("\n".join(lines), encoding="utf-8")


def write_rank_table(merges_path: Path, dest: Path) -> None:
    """A hash table of the merges in `merges_path` (written by write_merges), saved as .npy: slot
    crc32(line) & (size - 1), probed linearly, holds the line's rank + 1 (0: empty).

    A new process then looks up the few pairs its query needs instead of building a 49k-entry dict of the
    merges (~10 ms of every cold query); each hit is confirmed against the line itself, so a lookup finds
    exactly what the dict would."""
    merges = read_merges(Path(merges_path))
    size = 1 << (2 * len(merges)).bit_length()  # load factor under 1/2: short probe runs
    table = np.zeros(size, dtype=np.int32)
    for rank, line in enumerate(merges):
        slot = zlib.crc32(line.encode("utf-8")) & (size - 1)
        while table[slot]:
            slot = (slot + 1) & (size - 1)
        table[slot] = rank + 1
    np.save(dest, table)


class _RankTable:
    """Merge ranks looked up in write_rank_table's table over the merges text (no per-merge objects)."""

    def __init__(self, text: bytes, table: np.ndarray):
        self._text = text
        self._slots = memoryview(np.ascontiguousarray(table, dtype=np.int32)).cast("B").cast("i")
        self._mask = len(table) - 1
        # Line r of the merges (after the header line) spans text[starts[r]:starts[r + 1] - 1].
        newlines = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == 10)
        self._starts = memoryview(np.concatenate([newlines + 1, [len(text) + 1]]).astype(np.int64)).cast("B").cast("q")
        self._found: dict[str, int | None] = {}

    def __len__(self) -> int:
        return len(self._starts) - 1

    def line(self, rank: int) -> str:
        return self._text[self._starts[rank]:self._starts[rank + 1] - 1].decode("utf-8")

    def get(self, pair: str) -> int | None:
        if pair in self._found:
            return self._found[pair]
        key = pair.encode("utf-8")
        slot = zlib.crc32(key) & self._mask
        rank = None
        while (entry := self._slots[slot]) != 0:
            if self._text[self._starts[entry - 1]:self._starts[entry] - 1] == key:
                rank = entry - 1
                break
            slot = (slot + 1) & self._mask
        self._found[pair] = rank
        return rank


def _rank_table(merges_path: Path, ranks_path: Path) -> "_RankTable | None":
    """The rank table of an export's plain merges file, or None when it is absent or does not fit them."""
    try:
        table = np.load(ranks_path)
        text = merges_path.read_bytes()
    except (OSError, ValueError):
        return None
    if table.dtype != np.int32 or table.ndim != 1 or len(table) & (len(table) - 1):
        return None
    ranks = _RankTable(text, table)
    return ranks if len(ranks) == MERGE_LINES - 1 else None


class ClipTokenizer:
    """Gives the same ids as ``open_clip.get_tokenizer('ViT-B-32')``; returns numpy arrays."""

    def __init__(self, vocab_path: Path | None = None, context_length: int = DEFAULT_CONTEXT_LENGTH,
                 ranks_path: Path | None = None):
        """`ranks_path`: write_rank_table's table for the plain merges file `vocab_path` (used when it fits)."""
        vocab_path = vocab_path or default_vocab_path()
        if vocab_path is None:
            raise FileNotFoundError(f"{VOCAB_FILE} not found")
        table = _rank_table(Path(vocab_path), Path(ranks_path)) if ranks_path is not None else None
        self._vocab_path = Path(vocab_path)
        # Ranks keyed by the raw "first second" lines (no per-line split), from the table or a dict of them all.
        self.bpe_ranks: dict[str, int] | _RankTable = table if table is not None else self._ranks_dict()
        self.byte_encoder = bytes_to_unicode()
        self._char_ids = {c: i for i, c in enumerate(self.byte_encoder.values())}
        self.sot_token_id = 2 * BYTE_TOKENS + MERGE_LINES - 1
        self.eot_token_id = self.sot_token_id + 1
        self.cache: dict[str, list[int]] = {SOT: [self.sot_token_id], EOT: [self.eot_token_id]}
        self.context_length = context_length

    @cached_property
    def merges(self) -> list[str]:
        """The merge lines, in rank order."""
        return read_merges(self._vocab_path)

    def _ranks_dict(self) -> dict[str, int]:
        return dict(zip(self.merges, range(len(self.merges))))

    def _merge_line(self, rank: int) -> str:
        ranks = self.bpe_ranks
        return ranks.line(rank) if isinstance(ranks, _RankTable) else self.merges[rank]

    @cached_property
    def pattern(self):
        """open_clip's pre-tokenising pattern (the `regex` module: it needs Unicode properties)."""
        import regex

        return regex.compile(_PATTERN, regex.IGNORECASE)

    @cached_property
    def encoder(self) -> dict[str, int]:
        """Token string -> id, built as open_clip builds it (only needed for checks)."""
        base = list(self.byte_encoder.values())
        merged = [m.replace(" ", "") for m in self.merges]
        vocab = base + [v + "</w>" for v in base] + merged + [SOT, EOT]
        return {token: i for i, token in enumerate(vocab)}

    def bpe(self, token: str) -> list[int]:
        """Ids of the BPE pieces of one pre-tokenised, byte-encoded word."""
        cached = self.cache.get(token)
        if cached is not None:
            return cached
        word = list(token[:-1]) + [token[-1] + "</w>"]
        ids = [self._char_ids[c] for c in token[:-1]] + [self._char_ids[token[-1]] + BYTE_TOKENS]
        while len(word) > 1:
            rank = self._best_rank(word)
            if rank is None:
                break
            word, ids = _merge(word, ids, self._merge_line(rank), 2 * BYTE_TOKENS + rank)
        self.cache[token] = ids
        return ids

    def _best_rank(self, word: list[str]) -> int | None:
        """Rank of the highest-priority merge among word's adjacent pairs, if any."""
        ranks = self.bpe_ranks
        found = [ranks.get(a + " " + b) for a, b in zip(word[:-1], word[1:])]
        found = [r for r in found if r is not None]
        return min(found) if found else None

    def encode(self, text: str) -> list[int]:
        """Token ids of text, without start/end tokens or truncation."""
        ids: list[int] = []
        cleaned = clean_text(text)
        pattern = _ASCII_PATTERN if cleaned.isascii() else self.pattern
        for piece in pattern.findall(cleaned):
            ids.extend(self.bpe("".join(self.byte_encoder[b] for b in piece.encode("utf-8"))))
        return ids

    def token_ids(self, text: str, context_length: int | None = None) -> list[int]:
        """[sot] + ids + [eot], truncated to context_length keeping eot last (unpadded)."""
        limit = context_length or self.context_length
        ids = [self.sot_token_id] + self.encode(text) + [self.eot_token_id]
        if len(ids) > limit:
            ids = ids[:limit]
            ids[-1] = self.eot_token_id
        return ids

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> np.ndarray:
        """(n, context_length) int64 ids, zero padded, like open_clip's tokenizer output."""
        if isinstance(texts, str):
            texts = [texts]
        limit = context_length or self.context_length
        result = np.zeros((len(texts), limit), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = self.token_ids(text, limit)
            result[row, : len(ids)] = ids
        return result
