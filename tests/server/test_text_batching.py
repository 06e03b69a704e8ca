"""Concurrent text queries are encoded together (one pass over the text tower for all), and each still gets
exactly the vector it gets alone: the same answer whether it arrived alone or with fifteen others."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from helpers.server import build_library, client
from searchengine.library.api import Library
from searchengine.server.batching import TextBatcher

TEXTS = [f"a photo of {thing}" for thing in ("a dog", "a cat", "a red car", "snow", "a beach", "a bicycle",
                                             "a city at night", "a forest", "a bowl of soup", "a castle")]


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_model_name):
    return build_library(tmp_path_factory.mktemp("batching"), tiny_model_name)[1]


def test_waiting_texts_form_one_batch_and_each_gets_its_own_vector():
    release, first_started = threading.Event(), threading.Event()
    calls: list[list[str]] = []

    def encode(texts):
        calls.append(list(texts))
        first_started.set()
        release.wait(10)
        return [np.full(3, len(t), np.float32) for t in texts]

    batcher = TextBatcher(encode)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(batcher.vector, "x")
        first_started.wait(10)  # the worker is busy with "x": what arrives now waits for the next batch
        rest = [pool.submit(batcher.vector, text) for text in ["aa", "bbb", "aa", "cccc"]]
        while sum(len(item) for item in batcher._pending) < 4:
            threading.Event().wait(0.01)
        release.set()
        assert first.result().tolist() == [1, 1, 1]
        assert [f.result()[0] for f in rest] == [2, 3, 2, 4]
    assert calls == [["x"], ["aa", "bbb", "cccc"]]  # one batch for the four waiting, "aa" encoded once
    assert list(batcher.batches) == [1, 3]


def test_an_encoder_error_reaches_every_waiter():
    def encode(texts):
        raise RuntimeError("the model is gone")

    batcher = TextBatcher(encode)
    with pytest.raises(RuntimeError, match="model is gone"):
        batcher.vector("a dog")


def test_texts_encoded_together_are_bit_identical_to_each_alone(library):
    lib = Library.open(library)
    alone = [lib.text_vector(t) for t in TEXTS]
    together = Library.open(library).text_vectors(TEXTS)  # a fresh process's first call: the probe beside them
    assert all(np.array_equal(a, b) for a, b in zip(alone, together))


def test_sixteen_clients_at_once_get_the_answers_each_gets_alone(library):
    alone = {t: client(library).get("/api/search", params={"q": t, "limit": 10}).json() for t in TEXTS}
    app = client(library)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda t: (t, app.get("/api/search", params={"q": t, "limit": 10}).json()),
                                TEXTS * 2))
    assert all(answer == alone[text] for text, answer in answers)


def test_a_server_stacks_the_texts_that_arrive_together(library, monkeypatch):
    """At start the server checks that stacked texts keep their lone bits here and from then on encodes a batch in
    one product per weight; the answers are the ones each text gets alone."""
    from indexer.model import numpy_text
    from searchengine.server.app import create_app

    alone = [Library.open(library).text_vector(t) for t in TEXTS]
    lib = Library.open(library)
    create_app(lib)
    deadline = time.monotonic() + 60
    while not lib._query_encoder().stacking and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lib._query_encoder().stacking
    products: list[int] = []
    real = numpy_text._matmuls
    monkeypatch.setattr(numpy_text, "_matmuls", lambda xs, w: products.append(len(xs)) or real(xs, w))
    together = lib.text_vectors(TEXTS)
    assert all(np.array_equal(a, b) for a, b in zip(alone, together))
    assert set(products) == {1} and len(products) == 4 * lib._query_encoder()._numpy_text[0].meta.layers
