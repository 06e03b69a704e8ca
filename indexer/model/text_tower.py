"""Export a library's open_clip text tower to numpy weights, verified against torch (index-time side)."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from indexer.model.numpy_text import MERGES_FILE, NumpyTextEncoder, TextTowerMeta
from indexer.model.tokenizer import RANKS_FILE, ClipTokenizer, default_vocab_path, write_merges, write_rank_table
from indexer.model.tower_manifest import PROBE_TEXT, write_manifest

log = logging.getLogger(__name__)

MIN_COSINE = 0.999
SAMPLE_TEXTS = [
    "", "a photo of a dog", "A PHOTO OF A CAT!!!", "sunset over the sea", "red car parked on a street",
    "two people hiking in the mountains, with snow", "café au lait & croissant", "日本の桜", "🐶🐱 pets",
    "it's a bird... it's a plane", "&amp; html &lt;entities&gt;", "   lots   of\twhitespace\n ",
    "a diagram of the 1990s network topology", "Ünïcödé ñ ß ø", "<end_of_text> inside text",
    "word " * 100, "x" * 400, "screenshot of code: def f(x): return x**2", "the", "blurry night-time city lights",
]


def export_text_tower(model: Any, tokenizer: Any, dest: Path) -> bool:
    """Write model's text tower as numpy weights into dest; True only if verified against torch."""
    reason = unsupported_reason(model) or tokenizer_mismatch(tokenizer, model.context_length)
    if reason:
        log.info("text tower not exported: %s", reason)
        return False
    dest = Path(dest)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    for stale in dest.parent.glob(f".{dest.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)  # a killed export's; the caller holds the writer lock
    tmp.mkdir(parents=True)
    try:
        meta = _write_export(model, tmp)
        cosine = verify_export(model, tokenizer, tmp)
        if not cosine >= MIN_COSINE:  # written this way so NaN also fails
            log.warning("text tower export rejected: min cosine %.6f < %s", cosine, MIN_COSINE)
            return False
        write_manifest(tmp, cosine, NumpyTextEncoder.load(tmp).encode([PROBE_TEXT])[0])
        _replace_dir(tmp, dest)
        log.info("text tower exported to %s (%d layers, min cosine %.6f)", dest, meta.layers, cosine)
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def unsupported_reason(model: Any) -> str | None:
    """Why this model's text tower cannot be exported, or None if it is the standard CLIP tower."""
    import open_clip
    from open_clip.transformer import ResidualAttentionBlock

    if not isinstance(model, open_clip.CLIP) or type(model).encode_text is not open_clip.CLIP.encode_text:
        return f"{type(model).__name__} is not a plain open_clip.CLIP"
    if getattr(model, "text_pool_type", None) != "argmax":
        return f"text pool type {getattr(model, 'text_pool_type', None)!r}"
    if not _is_causal_mask(getattr(model, "attn_mask", None), model.context_length):
        return "text attention mask is not causal"
    blocks = list(model.transformer.resblocks)
    if not blocks or any(type(block) is not ResidualAttentionBlock for block in blocks):
        return "non-default residual blocks"
    kinds = {_block_kind(block) for block in blocks}
    if len(kinds) != 1 or None in kinds:
        return f"unsupported block layout {kinds}"
    norms = [model.ln_final] + [n for b in blocks for n in (b.ln_1, b.ln_2)]
    eps = {_norm_eps(n, model.transformer.width) for n in norms}
    if None in eps or len(eps) != 1:
        return f"unsupported layer norms (eps {eps})"
    if _projection_kind(model.text_projection) is None:
        return f"text projection {type(model.text_projection).__name__}"
    return None


def _is_causal_mask(mask: Any, context_length: int) -> bool:
    import torch

    if mask is None or tuple(mask.shape) != (context_length, context_length):
        return False
    expected = torch.full((context_length, context_length), float("-inf")).triu(1)
    return bool(torch.equal(mask.detach().float().cpu(), expected))


def _block_kind(block: Any) -> tuple[str, bool] | None:
    """(activation, has layer scale) for a supported ResidualAttentionBlock, else None."""
    from torch import nn

    attn = block.attn
    plain_attn = (
        isinstance(attn, nn.MultiheadAttention) and attn._qkv_same_embed_dim and attn.in_proj_bias is not None
        and attn.out_proj.bias is not None and attn.bias_k is None and not attn.add_zero_attn
        and not hasattr(block, "ln_1_kv")
    )
    mlp = block.mlp
    plain_mlp = list(mlp._modules) == ["c_fc", "gelu", "c_proj"] and mlp.c_fc.bias is not None
    plain_mlp = plain_mlp and mlp.c_proj.bias is not None
    scales = {type(block.ls_1).__name__, type(block.ls_2).__name__}
    activation = _activation_name(mlp.gelu) if plain_mlp else None
    if not plain_attn or activation is None or len(scales) != 1 or scales - {"Identity", "LayerScale"}:
        return None
    return activation, scales == {"LayerScale"}


def _activation_name(module: Any) -> str | None:
    from open_clip.transformer import QuickGELU
    from torch import nn

    if type(module) is QuickGELU:
        return "quick_gelu"
    if type(module) is nn.GELU:
        return {"none": "gelu", "tanh": "gelu_tanh"}.get(module.approximate)
    return None


def _norm_eps(norm: Any, width: int) -> float | None:
    """eps of an affine LayerNorm over width, else None."""
    from torch import nn

    affine = isinstance(norm, nn.LayerNorm) and norm.weight is not None and norm.bias is not None
    if not affine or tuple(norm.normalized_shape) != (width,):
        return None
    return float(norm.eps)


def _projection_kind(projection: Any) -> str | None:
    from torch import nn

    if projection is None:
        return "none"
    if isinstance(projection, nn.Linear):
        return "linear"
    if isinstance(projection, nn.Parameter) and projection.ndim == 2:
        return "matrix"
    return None


def tokenizer_mismatch(tokenizer: Any, context_length: int) -> str | None:
    """Why tokenizer differs from open_clip's default SimpleTokenizer (which ClipTokenizer ports), or None."""
    from open_clip.tokenizer import SimpleTokenizer

    if type(tokenizer) is not SimpleTokenizer:
        return f"tokenizer {type(tokenizer).__name__} is not SimpleTokenizer"
    if tokenizer.reduction_fn is not None or getattr(tokenizer.clean_fn, "__name__", "") != "_clean_lower":
        return "tokenizer uses non-default cleaning or reduction"
    if tokenizer.context_length != context_length:
        return f"tokenizer context length {tokenizer.context_length} != model's {context_length}"
    vocab = default_vocab_path()
    if vocab is None:
        return "open_clip BPE vocab file not found"
    ours = ClipTokenizer(vocab, context_length)
    ranks = {" ".join(pair): rank for pair, rank in tokenizer.bpe_ranks.items()}
    same = tokenizer.encoder == ours.encoder and ranks == ours.bpe_ranks
    if not same or tokenizer.pat.pattern != ours.pattern.pattern:
        return "tokenizer vocabulary differs from the default CLIP BPE"
    return None


def describe(model: Any) -> TextTowerMeta:
    """Meta for a model that passed unsupported_reason()."""
    blocks = list(model.transformer.resblocks)
    activation, layer_scale = _block_kind(blocks[0])
    width = model.transformer.width
    projection = _projection_kind(model.text_projection)
    output_dim = width
    if projection == "matrix":
        output_dim = model.text_projection.shape[1]
    elif projection == "linear":
        output_dim = model.text_projection.out_features
    return TextTowerMeta(
        width=width, heads=blocks[0].attn.num_heads, layers=len(blocks),
        mlp_width=blocks[0].mlp.c_fc.out_features, output_dim=output_dim,
        context_length=model.context_length, vocab_size=model.token_embedding.num_embeddings,
        activation=activation, ln_eps=float(model.ln_final.eps), layer_scale=layer_scale, projection=projection,
    )


def _layer_tensors(block: Any, layer_scale: bool) -> dict[str, Any]:
    """One block's weights under numpy_text's names; linear weights transposed to (in, out)."""
    attn, mlp = block.attn, block.mlp
    tensors = {
        "ln_1_weight": block.ln_1.weight, "ln_1_bias": block.ln_1.bias,
        "in_proj_weight": attn.in_proj_weight.T, "in_proj_bias": attn.in_proj_bias,
        "out_proj_weight": attn.out_proj.weight.T, "out_proj_bias": attn.out_proj.bias,
        "ln_2_weight": block.ln_2.weight, "ln_2_bias": block.ln_2.bias,
        "fc_weight": mlp.c_fc.weight.T, "fc_bias": mlp.c_fc.bias,
        "proj_weight": mlp.c_proj.weight.T, "proj_bias": mlp.c_proj.bias,
    }
    if layer_scale:
        tensors.update(ls_1=block.ls_1.gamma, ls_2=block.ls_2.gamma)
    return tensors


def _global_tensors(model: Any, projection: str) -> dict[str, Any]:
    import torch

    tensors = {
        "token_embedding": model.token_embedding.weight, "positional_embedding": model.positional_embedding,
        "ln_final_weight": model.ln_final.weight, "ln_final_bias": model.ln_final.bias,
    }
    if projection == "matrix":
        tensors["text_projection"] = model.text_projection
    elif projection == "linear":
        linear = model.text_projection
        tensors["text_projection"] = linear.weight.T
        bias = linear.bias if linear.bias is not None else torch.zeros(linear.out_features)
        tensors["text_projection_bias"] = bias
    return tensors


def _save(folder: Path, name: str, tensor: Any) -> None:
    array = np.ascontiguousarray(tensor.detach().float().cpu().numpy(), dtype=np.float32)
    np.save(folder / f"{name}.npy", array)


def _write_export(model: Any, folder: Path) -> TextTowerMeta:
    """Write weights, the BPE merges and meta.json into folder."""
    import torch

    meta = describe(model)
    for name, tensor in _global_tensors(model, meta.projection).items():
        _save(folder, name, tensor)
    per_layer = [_layer_tensors(block, meta.layer_scale) for block in model.transformer.resblocks]
    for name in per_layer[0]:
        _save(folder, name, torch.stack([layer[name].detach() for layer in per_layer]))
    write_merges(default_vocab_path(), folder / MERGES_FILE)
    write_rank_table(folder / MERGES_FILE, folder / RANKS_FILE)
    meta.write(folder)
    return meta


def verify_export(model: Any, tokenizer: Any, folder: Path, texts: list[str] = SAMPLE_TEXTS) -> float:
    """Lowest cosine between numpy and torch embeddings of texts; -1 if tokens differ or loading fails."""
    import torch

    encoder = NumpyTextEncoder.load(folder)
    if encoder is None:
        return -1.0
    tokens = tokenizer(texts)
    if not np.array_equal(tokens.numpy(), encoder.tokenizer(texts)):
        return -1.0
    with torch.no_grad():
        device = model.positional_embedding.device
        expected = model.encode_text(tokens.to(device), normalize=True).float().cpu().numpy()
    got = encoder.encode(texts)
    return float(np.min(np.sum(expected * got, axis=1)))


def _replace_dir(src: Path, dest: Path) -> None:
    """Move src to dest, replacing any previous export with two renames."""
    old = dest.parent / f".{dest.name}.old-{os.getpid()}"
    if dest.exists():
        os.replace(dest, old)
    os.replace(src, dest)
    shutil.rmtree(old, ignore_errors=True)
