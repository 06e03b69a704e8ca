"""Relevance cutoff on planted embeddings, where the relevant set is known by construction."""
from __future__ import annotations

import numpy as np
import pytest

from helpers.synthetic import planted_library, unit
from searchengine.library.api import Library
from searchengine.query.cutoff import GAP, background, keep_count
from searchengine.query.expression import ID, Term

DIM = 256


def clip_like_background(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit vectors around a shared direction, as CLIP image embeddings are (cosine between two ~0.5)."""
    mean = unit(rng.normal(size=DIM))
    return unit(mean + rng.normal(size=(n, DIM)) / np.sqrt(DIM))


def mix(rng: np.random.Generator, query: np.ndarray, others: np.ndarray, low: float, high: float) -> np.ndarray:
    alpha = rng.uniform(low, high, size=(len(others), 1))
    return unit(alpha * query + (1 - alpha) * others)


@pytest.fixture
def planted(isolated):
    """5000 ordinary images, a query image, 30 variants of it (relevant) and 60 loosely related ones (not)."""
    rng = np.random.default_rng(7)
    ordinary = clip_like_background(rng, 5090)
    query = ordinary[0]
    relevant = mix(rng, query, ordinary[1:31], 0.55, 0.9)
    loose = mix(rng, query, ordinary[31:91], 0.1, 0.2)
    vectors = np.concatenate([query[None], relevant, loose, ordinary[91:]])
    ids = planted_library(isolated / "planted", vectors)
    return Library.open(isolated / "planted", notice=lambda m: None), ids, set(ids[:31])


def test_auto_cutoff_finds_the_planted_set(planted):
    library, ids, relevant = planted
    everything = library.search(terms=[Term(ID, ids[0])], limit=200)
    assert len(everything) == 200
    kept = library.search(terms=[Term(ID, ids[0])], limit=200, cutoff="auto")
    found = {h.id for h in kept}
    precision, recall = len(found & relevant) / max(len(found), 1), len(found & relevant) / len(relevant)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall, len(found))
    assert [h.id for h in kept] == [h.id for h in everything[:len(kept)]]  # a prefix of the ranking
    # the loosely related ones do rank next: a fixed top-k would have let them in
    assert {h.id for h in everything[31:60]} <= set(ids[31:91]) | relevant


def test_min_score_and_limit_compose_with_the_cutoff(planted):
    library, ids, _ = planted
    hits = library.search(terms=[Term(ID, ids[0])], limit=50, min_score=0.9)
    assert hits and all(h.score >= 0.9 for h in hits)
    assert len(library.search(terms=[Term(ID, ids[0])], limit=5, cutoff="auto")) == 5


@pytest.mark.parametrize("size", [2000, 20000])
def test_a_library_with_nothing_standing_out_gives_few_or_none(size):
    total = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        library = clip_like_background(rng, size)
        query = unit(rng.normal(size=DIM) + 3 * library.mean(0))  # unrelated to every image in particular
        scores = np.sort(library @ query)[::-1]
        sample = library[rng.choice(size, min(size, 2000), replace=False)] @ query
        total += keep_count(scores[:100].tolist(), background(sample, size))
    assert total <= 10  # about TAIL (0.5) per query by construction of the threshold


def test_the_gap_rule_cuts_the_tail_off_the_standouts():
    bg = background(np.random.default_rng(0).normal(0.2, 0.02, 5000), 5000)
    standouts = [bg.threshold + 10 * bg.spread - n * 0.1 * bg.spread for n in range(5)]
    tail = [bg.threshold + 0.5 * bg.spread, bg.threshold + 0.2 * bg.spread]
    assert keep_count(standouts + tail, bg) == 5
    # steps narrower than GAP near the threshold: no empty band, all kept
    close = [bg.threshold + (GAP + 0.5) * bg.spread, bg.threshold + 1.5 * bg.spread, bg.threshold + 0.2 * bg.spread]
    assert keep_count(standouts[-1:] + close, bg) == 4
    assert keep_count([bg.threshold - 1e-6], bg) == 0


def test_the_median_is_numpys_to_the_last_bit():
    """cutoff's own median (numpy's imports numpy.ma for its NaN check) gives np.median's very values."""
    from searchengine.query.cutoff import _median

    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 10, 11, 200, 201, 1000, 1001):
        for dtype in (np.float32, np.float64):
            values = rng.standard_normal(n).astype(dtype)
            assert _median(values) == float(np.median(values))
