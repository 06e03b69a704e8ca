"""Is a reduced precision (GPU fp16 autocast, int8) faithful enough on the user's own photos? One rule for all.

Given the fp32 and the reduced-precision embeddings of the same photos, the reduced precision is accepted
when the worst (1 - cos) between a photo's two embeddings is at most BOUND (1%) of the mean (1 - cos)
between distinct photos of that batch: an error that small cannot reorder photos that differ as much as
the user's own photos do. Random weights say nothing about how trained models quantise (activation
outliers), so the check runs on every new library (int8) or every GPU run (fp16), on its first photos.

Fewer than MIN_PHOTOS distinct photos have no meaningful spread to judge against: `judge` returns None,
and the callers stay in fp32 (GPU: check again on the next batch; int8: refused at creation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

BOUND = 0.01
MIN_PHOTOS = 4
SAME_PHOTO = 1e-6  # fp32 embeddings closer than this (1 - cos) are the same picture, not two photos

EncodeFn = Callable[[np.ndarray], np.ndarray]
NoticeFn = Callable[[str], None]


@dataclass(frozen=True)
class Verdict:
    """The comparison of one batch: worst error to fp32 against the spread between distinct photos."""

    worst: float  # worst (1 - cos) between a photo's reduced and fp32 embeddings
    between: float  # mean (1 - cos) over pairs of distinct photos, in fp32
    photos: int  # distinct photos the spread was measured over
    bound: float = BOUND

    @property
    def ok(self) -> bool:
        return bool(self.worst <= self.bound * self.between)  # NaN fails

    @property
    def ratio(self) -> float:
        return self.worst / self.between if self.between > 0 else float("inf")

    def describe(self) -> str:
        return (f"worst 1-cos to fp32 {self.worst:.2e} = {self.ratio:.2%} of the mean 1-cos between "
                f"{self.photos} photos ({self.between:.3g}); the bound is {self.bound:.0%}")


def judge(fp32: np.ndarray, reduced: np.ndarray, bound: float = BOUND, min_photos: int = MIN_PHOTOS) -> Verdict | None:
    """The verdict on these embeddings (rows: the same photos), or None with fewer than `min_photos` distinct photos."""
    full, low = _unit(fp32), _unit(reduced)
    if full.shape != low.shape or len(full) == 0:
        raise ValueError(f"fp32 and reduced embeddings differ in shape: {full.shape} vs {low.shape}")
    distinct = distinct_rows(full)
    if len(distinct) < min_photos:
        return None
    worst = float(np.max(1.0 - np.sum(full * low, axis=1)))
    kept = full[distinct]
    pairs = 1.0 - kept @ kept.T
    between = float(pairs[np.triu_indices(len(kept), k=1)].mean())
    return Verdict(worst, between, len(distinct), bound)


def distinct_rows(unit_rows: np.ndarray) -> list[int]:
    """Indices of the rows that are not the same picture as an earlier row (duplicate files, copies)."""
    sims = unit_rows @ unit_rows.T
    kept: list[int] = []
    for i in range(len(unit_rows)):
        if all(1.0 - sims[i, j] > SAME_PHOTO for j in kept):
            kept.append(i)
    return kept


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


class PrecisionGate:
    """Encodes in fp32 until the reduced precision has passed `judge` on the first photos, then in reduced.

    While undecided (too few distinct photos yet) every batch is encoded both ways and stored in fp32; a failed
    check, or a reduced precision the device cannot run, falls back to fp32 for the rest of the run with a notice.
    """

    def __init__(self, full: EncodeFn, reduced: EncodeFn, label: str, notice: NoticeFn,
                 bound: float = BOUND, min_photos: int = MIN_PHOTOS):
        self.full, self.reduced, self.label, self.notice = full, reduced, label, notice
        self.bound, self.min_photos = bound, min_photos
        self.state = "checking"  # then "reduced" or "fp32"
        self.verdict: Verdict | None = None
        self._seen: list[tuple[np.ndarray, np.ndarray]] = []

    @property
    def precision(self) -> str:
        """What the stored embeddings of this run come from once decided; fp32 while checking."""
        return self.label if self.state == "reduced" else "fp32"

    def encode(self, batch: np.ndarray) -> np.ndarray:
        if self.state == "reduced":
            return self.reduced(batch)
        full = self.full(batch)
        if self.state == "checking":
            self._check(batch, full)
        return full

    def _check(self, batch: np.ndarray, full: np.ndarray) -> None:
        try:
            low = self.reduced(batch)
        except RuntimeError as exc:  # e.g. autocast not supported for this dtype on this device
            self._fall_back(f"{self.label} cannot run here ({_first_line(exc)})")
            return
        self._seen.append((full, low))
        verdict = judge(np.concatenate([f for f, _ in self._seen]), np.concatenate([r for _, r in self._seen]),
                        self.bound, self.min_photos)
        if verdict is None:
            return
        self.verdict, self._seen = verdict, []
        if verdict.ok:
            self.state = "reduced"
        else:
            self._fall_back(f"{self.label} is not faithful enough on these photos: {verdict.describe()}")

    def _fall_back(self, why: str) -> None:
        self.state, self._seen = "fp32", []
        self.notice(f"{why}; encoding images in fp32 instead")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
