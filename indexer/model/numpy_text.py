"""Evaluate an exported CLIP text tower with numpy over memory-mapped weights (no torch on the query path)."""
from __future__ import annotations

import json
import mmap
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from indexer.cpu import usable_cores
from indexer.model.tokenizer import RANKS_FILE, ClipTokenizer

FORMAT = "searchengine-clip-text-numpy"
FORMAT_VERSION = 1
META_FILE = "meta.json"
MERGES_FILE = "bpe_merges.txt"
ACTIVATIONS = ("gelu", "gelu_tanh", "quick_gelu")
PROJECTIONS = ("matrix", "linear", "none")
# Per-layer arrays are stacked along a leading layer axis; matrices are stored (in, out).
LAYER_ARRAYS = (
    "ln_1_weight", "ln_1_bias", "in_proj_weight", "in_proj_bias", "out_proj_weight", "out_proj_bias",
    "ln_2_weight", "ln_2_bias", "fc_weight", "fc_bias", "proj_weight", "proj_bias",
)
LAYER_SCALE_ARRAYS = ("ls_1", "ls_2")
GLOBAL_ARRAYS = ("token_embedding", "positional_embedding", "ln_final_weight", "ln_final_bias")


@dataclass(frozen=True)
class TextTowerMeta:
    """Shape and behaviour of an exported text tower; stored as meta.json beside the weights."""

    width: int
    heads: int
    layers: int
    mlp_width: int
    output_dim: int
    context_length: int
    vocab_size: int
    activation: str
    ln_eps: float
    layer_scale: bool
    projection: str
    pool: str = "argmax"
    format: str = FORMAT
    version: int = FORMAT_VERSION

    def array_names(self) -> list[str]:
        """Names of the .npy files this export holds."""
        names = list(GLOBAL_ARRAYS) + list(LAYER_ARRAYS)
        if self.layer_scale:
            names += LAYER_SCALE_ARRAYS
        if self.projection != "none":
            names.append("text_projection")
        if self.projection == "linear":
            names.append("text_projection_bias")
        return names

    def write(self, folder: Path) -> None:
        (folder / META_FILE).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def read(cls, folder: Path) -> "TextTowerMeta | None":
        """The folder's meta, or None if absent, unreadable or of another format/version."""
        try:
            raw = json.loads((folder / META_FILE).read_text())
            meta = cls(**raw)
        except (OSError, ValueError, TypeError):
            return None
        supported = (
            meta.format == FORMAT and meta.version == FORMAT_VERSION and meta.pool == "argmax"
            and meta.activation in ACTIVATIONS and meta.projection in PROJECTIONS
        )
        return meta if supported else None


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis (biased variance, as torch)."""
    centred = x - x.mean(axis=-1, keepdims=True)
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    return centred / np.sqrt(var + np.float32(eps)) * weight + bias


def _erfc_nonneg(z: np.ndarray) -> np.ndarray:
    """erfc for z >= 0; Numerical Recipes' Chebyshev fit, relative error < 1.2e-7 everywhere."""
    # In-place Horner: this runs on (tokens, mlp_width) in every layer of every query.
    t = z * 0.5
    t += 1.0
    np.reciprocal(t, out=t)
    poly = t * 0.17087277
    for c in (-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196):
        poly += c
        poly *= t
    poly += 1.00002368
    poly *= t
    poly -= z * z
    poly -= 1.26551223
    np.exp(poly, out=poly)
    poly *= t
    return poly


GELU_CHUNK = 32768
"""Elements per step of the GELU: its ~20 passes then run over a block that stays in the L1/L2 cache (a batch's
activations do not: 8 texts' 96 x 2048 took 17 ns an element at once, 6 ns in blocks of 32k)."""


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU: x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt 2)), in place on x (a fresh product)."""
    flat = x.reshape(-1)
    for start in range(0, flat.size, GELU_CHUNK):
        part = flat[start:start + GELU_CHUNK]
        erf = _erfc_nonneg(np.abs(part) * np.float32(0.7071067811865476))
        np.subtract(np.float32(1.0), erf, out=erf)  # erf(|x| / sqrt 2), as torch's erf (the same cancellation)
        np.copysign(erf, part, out=erf)
        erf += np.float32(1.0)
        part *= erf
        part *= np.float32(0.5)
    return x


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(np.float32(0.7978845608028654) * (x + 0.044715 * x * x * x)))


def quick_gelu(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return x / (1.0 + np.exp(np.float32(-1.702) * x))


_ACTIVATION_FNS = {"gelu": gelu, "gelu_tanh": gelu_tanh, "quick_gelu": quick_gelu}


def softmax_causal(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of (..., L, L) scores, each query seeing only keys <= itself."""
    length = scores.shape[-1]
    scores = np.where(np.tri(length, dtype=bool), scores, np.float32(-np.inf))
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return scores / scores.sum(axis=-1, keepdims=True)


def pool_positions(ids: list[list[int]]) -> np.ndarray:
    """Index of the first maximal token id per text (the EOT token), as open_clip's 'argmax' pooling."""
    return np.array([int(np.argmax(row)) for row in ids], dtype=np.int64)


def pad_truncated(ids: list[list[int]], length: int) -> np.ndarray:
    """(n, length) zero-padded ids, cut after `length` tokens."""
    tokens = np.zeros((len(ids), length), dtype=np.int64)
    for row, seq in enumerate(ids):
        seq = seq[:length]
        tokens[row, : len(seq)] = seq
    return tokens


ROW_BLOCK = 12
"""Every text's token rows are padded to a multiple of this many (zero tokens after its EOT, which the causal mask
hides from every row it keeps). OpenBLAS's single-precision kernel here computes a row's bits according to where
the row falls in its 12-row panels, not from the other rows: texts padded so are computed alike alone or stacked
one after another in one product, the basis of stacking (enable_stacking). A lone short text costs about the same
(12 rows fill the panel that 8-10 rows use less well)."""


@dataclass
class _Text:
    """One text on its way through the tower: its rows' offset in its product, padded length and pooled row."""

    offset: int
    length: int
    pool: int


class NumpyTextEncoder:
    """CLIP text tower in float32 numpy.

    Only the tokens up to the pooled EOT (padded to ROW_BLOCK) are evaluated: under the causal mask later positions
    cannot affect it, so this is exact and far cheaper than all 77 positions. Every text is computed exactly as it
    is alone, whatever else it is encoded with: stacked into one product per weight once `enable_stacking` has
    shown that this machine's BLAS gives stacked rows their lone bits, else as a product of its own.
    """

    def __init__(self, meta: TextTowerMeta, arrays: dict[str, np.ndarray], tokenizer: ClipTokenizer):
        self.meta = meta
        self.tokenizer = tokenizer
        self._arrays = arrays
        # Per-layer views of the stacked memory maps, sliced once.
        names = LAYER_ARRAYS + (LAYER_SCALE_ARRAYS if meta.layer_scale else ())
        self._layers = [{name: arrays[name][i] for name in names} for i in range(meta.layers)]
        self._act = _ACTIVATION_FNS[meta.activation]
        self.stacking = False

    @classmethod
    def load(cls, folder: Path) -> "NumpyTextEncoder | None":
        """Map the export in folder, or None if it is absent, incomplete or of an unknown format."""
        folder = Path(folder)
        meta = TextTowerMeta.read(folder)
        if meta is None:
            return None
        try:
            arrays = {name: _map(folder / f"{name}.npy", name == "token_embedding") for name in meta.array_names()}
            ranks = folder / RANKS_FILE  # exports before it have none: the tokenizer builds its dict
            tokenizer = ClipTokenizer(folder / MERGES_FILE, meta.context_length, ranks if ranks.exists() else None)
        except (OSError, ValueError):
            return None
        if not _shapes_match(meta, arrays):
            return None
        return cls(meta, arrays, tokenizer)

    @property
    def dim(self) -> int:
        return self.meta.output_dim

    def encode(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32 L2-normalised text embeddings, each row exactly what the text gets alone."""
        with _one_blas_thread():
            return self._run([self.tokenizer.token_ids(text) for text in texts], True)

    def encode_separately(self, batches: list[list[str]]) -> list[np.ndarray]:
        """Each batch's embeddings, as `encode(batch)` gives them (every text's bits its own), in one pass."""
        rows = self.encode([text for texts in batches for text in texts])
        bounds = np.cumsum([0] + [len(texts) for texts in batches])
        return [rows[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def enable_stacking(self) -> bool:
        """Stack texts encoded together into one product per weight if, on this machine, that gives each the very
        bits it gets alone (checked once here on texts of one and two row blocks: ~0.1 s). Worth it where many texts
        come together (a server under load): measured here, 8 texts stacked cost about what 3 cost one by one."""
        if not self.stacking:
            probes = ["a photo", "a dog jumping into a lake", "a busy street market at night " * 3, "a photo of a cat"]
            alone = [self.encode([text]) for text in probes]
            self.stacking = True
            together = self.encode(probes)
            self.stacking = all(np.array_equal(a[0], b) for a, b in zip(alone, together))
        return self.stacking

    def encode_ids(self, ids: list[list[int]], truncate: bool = True) -> np.ndarray:
        """Embeddings of tokenised texts ([sot] ... [eot], unpadded or zero-padded).

        truncate=False evaluates all context_length positions, as torch does (a reference for tests).
        """
        return self._run(ids, truncate)

    def _run(self, ids: list[list[int]], truncate: bool) -> np.ndarray:
        if not ids:
            return np.zeros((0, self.dim), dtype=np.float32)
        # A product is one text's rows, or every text's stacked (by length, so equal lengths share attention calls).
        pools = pool_positions(ids)
        stacked = self.stacking and truncate  # all 77 positions are not whole row blocks: no stacking for them
        order = sorted(range(len(ids)), key=lambda n: pools[n]) if stacked else list(range(len(ids)))
        units = [order] if stacked else [[n] for n in order]
        xs, plans = zip(*(self._start([(ids[n], int(pools[n])) for n in unit], truncate) for unit in units))
        xs = list(xs)
        for weights in self._layers:
            xs = self._blocks(xs, weights, plans)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for unit, x, plan in zip(units, xs, plans):
            for n, text in zip(unit, plan):
                out[n] = self._head(x[text.offset + text.pool])
        return out

    def _start(self, texts: list[tuple[list[int], int]], truncate: bool) -> tuple[np.ndarray, list[_Text]]:
        """(token + position embeddings of the texts' padded rows, one after another: (rows, width), their plan);
        `texts`: (token ids, pooled position) each."""
        plan, pieces, offset = [], [], 0
        positions = self._arrays["positional_embedding"]
        for seq, pool in texts:
            length = -(-(pool + 1) // ROW_BLOCK) * ROW_BLOCK if truncate else self.meta.context_length
            tokens = pad_truncated([seq], min(length, self.meta.context_length))[0]
            rows = self._arrays["token_embedding"][tokens] + positions[:len(tokens)]
            if len(tokens) < length:  # past the context: rows no kept row attends to
                rows = np.concatenate([rows, np.zeros((length - len(tokens), rows.shape[1]), rows.dtype)])
            pieces.append(rows.astype(np.float32, copy=False))
            plan.append(_Text(offset, length, pool))
            offset += length
        return (pieces[0] if len(pieces) == 1 else np.concatenate(pieces)), plan

    def _head(self, pooled: np.ndarray) -> np.ndarray:
        """Final norm (per token, so applying it after pooling is exact), projection, L2 norm of one pooled row."""
        a = self._arrays
        x = layer_norm(pooled, a["ln_final_weight"], a["ln_final_bias"], self.meta.ln_eps)
        if self.meta.projection != "none":
            x = x @ a["text_projection"]
        if self.meta.projection == "linear":
            x = x + a["text_projection_bias"]
        norm = np.linalg.norm(x)
        return (x / np.maximum(norm, np.float32(1e-12))).astype(np.float32, copy=False)

    def _blocks(self, xs: list[np.ndarray], w: dict[str, np.ndarray], plans) -> list[np.ndarray]:
        """One pre-norm residual attention block on each product's (rows, width) activations."""
        eps, scaled = self.meta.ln_eps, self.meta.layer_scale
        hs = self._attention([layer_norm(x, w["ln_1_weight"], w["ln_1_bias"], eps) for x in xs], w, plans)
        xs = [x + (h * w["ls_1"] if scaled else h) for x, h in zip(xs, hs)]
        hs = [layer_norm(x, w["ln_2_weight"], w["ln_2_bias"], eps) for x in xs]
        hs = [self._act(h + w["fc_bias"]) for h in _matmuls(hs, w["fc_weight"])]
        hs = [h + w["proj_bias"] for h in _matmuls(hs, w["proj_weight"])]
        return [x + (h * w["ls_2"] if scaled else h) for x, h in zip(xs, hs)]

    def _attention(self, hs: list[np.ndarray], w: dict[str, np.ndarray], plans) -> list[np.ndarray]:
        """Causal multi-head self-attention, as torch's nn.MultiheadAttention with packed in_proj, each text's rows
        attending among themselves (texts of one length in one call)."""
        outs = []
        for qkv, plan in zip(_matmuls(hs, w["in_proj_weight"]), plans):
            qkv = qkv + w["in_proj_bias"]
            out = np.empty((qkv.shape[0], qkv.shape[1] // 3), dtype=np.float32)
            for start, stop, length in _runs_of_equal_length(plan):
                out[start:stop] = self._heads(qkv[start:stop], (stop - start) // length, length)
            outs.append(out)
        return [h + w["out_proj_bias"] for h in _matmuls(outs, w["out_proj_weight"])]

    def _heads(self, qkv: np.ndarray, n: int, length: int) -> np.ndarray:
        width = qkv.shape[1] // 3
        heads = self.meta.heads
        head_dim = width // heads
        q, k, v = qkv.reshape(n, length, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
        scores = (q * np.float32(head_dim ** -0.5)) @ k.swapaxes(-1, -2)
        out = softmax_causal(scores) @ v
        return out.transpose(0, 2, 1, 3).reshape(n * length, width)


def _runs_of_equal_length(plan: list[_Text]):
    """(first row, end row, length) of each run of consecutive texts of one padded length."""
    start = 0
    while start < len(plan):
        stop = start
        while stop < len(plan) and plan[stop].length == plan[start].length:
            stop += 1
        yield plan[start].offset, plan[stop - 1].offset + plan[stop - 1].length, plan[start].length
        start = stop


_blas_controller = None
_helper = None


def _matmuls(xs: list[np.ndarray], weight: np.ndarray) -> list[np.ndarray]:
    """[x @ weight for x in xs], each with the weight's columns split over two threads (numpy releases the GIL
    in BLAS), one batch after the other on the same weight while it is in the cache.

    A query's product reads the whole weight for a few rows: it is bound by memory bandwidth, which one
    core cannot use up. Measured here, quiet 2-core machine: 30 -> 20 ms for the ViT-B-32 text tower's
    matrices; OpenBLAS's own threads did worse (25 ms quiet, 380 ms p50 when the cores are busy).
    """
    global _helper
    if _THREADS < 2 or weight.shape[1] < 256:
        return [x @ weight for x in xs]
    if _helper is None:
        from concurrent.futures import ThreadPoolExecutor

        _helper = ThreadPoolExecutor(1, thread_name_prefix="text-tower")
    half = weight.shape[1] // 2
    others = [_helper.submit(np.matmul, x, weight[:, half:]) for x in xs]
    return [np.concatenate([x @ weight[:, :half], other.result()], axis=1) for x, other in zip(xs, others)]


_THREADS = usable_cores()


def _one_blas_thread():
    """A query's matrices are a few rows by thousands: BLAS threads cost more than they give.

    Measured here with other work on the cores: 46 ms a query single-threaded, 380 ms p50 (1 s p95) with
    OpenBLAS's default threads. threadpoolctl sets it per call, so the caller's own numpy keeps its threads.
    """
    global _blas_controller
    from indexer import cpu

    if cpu.BLAS_PINNED:  # the CLI pinned every BLAS to one thread before any was loaded
        import contextlib

        return contextlib.nullcontext()
    if _blas_controller is None:
        from threadpoolctl import ThreadpoolController

        _blas_controller = ThreadpoolController()
    return _blas_controller.limit(limits=1, user_api="blas")


def _map(path: Path, random_access: bool = False) -> np.ndarray:
    """A plain ndarray view of the memory map (slicing np.memmap objects costs more per call).

    `random_access`: a query reads a few rows of it (the token embedding: ~8 rows of 49,408); without the
    advice the kernel's read-ahead pulls ~20 MB around them from a cold disk."""
    mapped = np.load(path, mmap_mode="r")
    if random_access and hasattr(mmap, "MADV_RANDOM"):
        mapped._mmap.madvise(mmap.MADV_RANDOM)
    return np.asarray(mapped)


def _shapes_match(meta: TextTowerMeta, arrays: dict[str, np.ndarray]) -> bool:
    """Cheap guard against a truncated or mismatched export."""
    expected = {
        "token_embedding": (meta.vocab_size, meta.width),
        "positional_embedding": (meta.context_length, meta.width),
        "in_proj_weight": (meta.layers, meta.width, 3 * meta.width),
        "fc_weight": (meta.layers, meta.width, meta.mlp_width),
        "proj_weight": (meta.layers, meta.mlp_width, meta.width),
    }
    if meta.projection != "none":
        expected["text_projection"] = (meta.width, meta.output_dim)
    shapes_ok = all(arrays[name].shape == shape for name, shape in expected.items())
    return shapes_ok and all(a.dtype == np.float32 for a in arrays.values()) and meta.width % meta.heads == 0
