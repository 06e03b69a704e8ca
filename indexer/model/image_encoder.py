"""Runs an image tower on one device: CPU as before; on a GPU, pinned host memory, non-blocking copies, a
batch halved on out-of-memory, and reduced-precision autocast once it is checked against fp32.

Embeddings always come back as float32, L2-normalised numpy rows, whatever ran on the device.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import numpy as np

from indexer.errors import DeviceError
from indexer.model.device import CPU, device_kind
from indexer.model.precision import PrecisionGate

NoticeFn = Callable[[str], None]
_SHORT = {"float16": "fp16", "bfloat16": "bf16"}


def _ignore(_message: str) -> None: ...


class ImageEncoder:
    """`encode(pixels)` for (N, 3, H, W) float32 batches. `reduced` ("float16", "bfloat16" or None) is the
    autocast dtype to try; it is used only after passing the precision check on the first photos."""

    def __init__(self, tower: Any, device: str = CPU, reduced: str | None = None, notice: NoticeFn = _ignore,
                 gate: Callable[..., PrecisionGate] | None = None):
        self.tower, self.device, self.notice = tower, device, notice
        self.chunk: int | None = None  # most images per forward pass; set (and halved) on out-of-memory
        self._pinned: Any = None
        self.gate = None
        if reduced is not None and not autocast_available(device):
            notice(f"{_SHORT.get(reduced, reduced)} autocast is not available on {device} with this torch: fp32")
            reduced = None
        if reduced is not None:
            self.gate = (gate or PrecisionGate)(lambda b: self.run(b, None), lambda b: self.run(b, reduced),
                                                _SHORT.get(reduced, reduced), notice)

    @property
    def precision(self) -> str:
        """The precision this run's embeddings are computed in: "fp32", or the checked reduced one."""
        return self.gate.precision if self.gate is not None else "fp32"

    def encode(self, batch: np.ndarray) -> np.ndarray:
        return self.gate.encode(batch) if self.gate is not None else self.run(batch, None)

    def run(self, batch: np.ndarray, dtype: str | None) -> np.ndarray:
        """Encode in `dtype` autocast (None: fp32), in chunks that fit the device."""
        rows, start = [], 0
        while start < len(batch):
            size = self.chunk or len(batch)
            try:
                rows.append(self._forward(batch[start:start + size], dtype))
            except Exception as exc:  # noqa: BLE001  (only out-of-memory is handled; the rest re-raised)
                if not is_out_of_memory(exc):
                    raise
                self._shrink(min(size, len(batch) - start))
                continue
            start += size
        return np.concatenate(rows) if len(rows) > 1 else rows[0]

    def _shrink(self, failed: int) -> None:
        """Halve the batch after an out-of-memory; one image that does not fit is an error."""
        _empty_cache(self.device)
        if failed <= 1:
            raise DeviceError(f"out of memory on {self.device} even for one image; use --device cpu")
        self.chunk = failed // 2
        self._pinned = None
        self.notice(f"out of memory on {self.device} with {failed} images at once: going on with {self.chunk}")

    def _forward(self, chunk: np.ndarray, dtype: str | None) -> np.ndarray:
        import torch

        x = self._to_device(np.ascontiguousarray(chunk, dtype=np.float32))
        with torch.inference_mode(), _autocast(self.device, dtype):
            features = self.tower(x)
        return normalise(features.float().cpu().numpy())

    def _to_device(self, chunk: np.ndarray) -> Any:
        import torch

        tensor = torch.from_numpy(chunk)
        if self.device == CPU:
            return tensor
        if device_kind(self.device) != "cuda":
            return tensor.to(self.device)
        # One pinned buffer reused for every batch: page-locked memory lets the copy run by DMA without blocking.
        # Reuse is safe because each batch's result is read back (a synchronisation) before the next copy.
        if self._pinned is None or self._pinned.shape[0] < len(chunk) or self._pinned.shape[1:] != tensor.shape[1:]:
            self._pinned = torch.empty(tensor.shape, dtype=tensor.dtype).pin_memory()
        staged = self._pinned[:len(chunk)]
        staged.copy_(tensor)
        return staged.to(self.device, non_blocking=True)


def _autocast(device: str, dtype: str | None) -> Any:
    if dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=device_kind(device), dtype=getattr(torch, dtype))


def autocast_available(device: str) -> bool:
    """Whether torch.autocast works on this kind of device (where it does not, torch silently runs fp32)."""
    import torch

    check = getattr(torch.amp, "is_autocast_available", None)
    return bool(check(device_kind(device))) if check is not None else device_kind(device) in ("cuda", "cpu")


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA raises torch.cuda.OutOfMemoryError; MPS a RuntimeError saying "out of memory"."""
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _empty_cache(device: str) -> None:
    import torch

    kind = device_kind(device)
    if kind == "cuda":
        torch.cuda.empty_cache()
    elif kind == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def normalise(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)
