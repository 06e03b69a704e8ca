"""Text queries that arrive together are encoded together: a worker takes every text waiting (up to
MAX_BATCH) and encodes them in one pass over the text tower's weights, each exactly as it would be alone
(Library.text_vectors), so an answer's scores do not depend on what else was asked at the time.

There is no gathering window: a lone query is encoded at once, and the texts that arrive while a batch is
being encoded form the next one. Under load the batches grow by themselves, where a fixed window would only
add its length to every answer.
"""
from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from typing import Callable, Sequence

import numpy as np

MAX_BATCH = 32
RECENT_BATCHES = 256

EncodeFn = Callable[[Sequence[str]], list[np.ndarray]]


class TextBatcher:
    def __init__(self, encode: EncodeFn, max_batch: int = MAX_BATCH):
        self._encode = encode
        self._max = max_batch
        self._lock = threading.Lock()
        self._pending: list[tuple[str, Future]] = []
        self._draining = False
        # The sizes of the latest batches (for tests and benchmarks); bounded, as a server runs for weeks.
        self.batches: deque[int] = deque(maxlen=RECENT_BATCHES)

    def vector(self, text: str) -> np.ndarray:
        """The text's query vector (blocks until its batch is encoded; the encoder's error is raised here)."""
        future: Future = Future()
        with self._lock:
            self._pending.append((text, future))
            start = not self._draining
            self._draining = True
        if start:
            threading.Thread(target=self._drain, name="text-batcher", daemon=True).start()
        return future.result()

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch, self._pending = self._pending[:self._max], self._pending[self._max:]
                if not batch:
                    self._draining = False
                    return
            self._run(batch)

    def _run(self, batch: list[tuple[str, Future]]) -> None:
        texts = list(dict.fromkeys(text for text, _ in batch))  # the same text asked twice is encoded once
        self.batches.append(len(texts))
        try:
            vectors = dict(zip(texts, self._encode(texts)))
        except BaseException as exc:  # noqa: BLE001 - every waiter gets the encoder's error
            for _, future in batch:
                future.set_exception(exc)
            return
        for text, future in batch:
            future.set_result(vectors[text])
