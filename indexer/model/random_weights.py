"""Random-weight open_clip model folders, loadable as ``local-dir:PATH`` without any download.

For what needs a real model's shape but no trained weights: the offline demo, the tests (the tiny model) and
the benchmarks (speed does not depend on the weights, so pipeline figures are honest with random ones).
"""
from __future__ import annotations

import json
from pathlib import Path

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
PREPROCESS_CFG = {"mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic", "resize_mode": "shortest"}
TINY = "tiny"  # a 32-d CLIP with two-layer towers: builds in a second, encodes in milliseconds
TINY_MODEL_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def build_random_model(folder: Path, arch: str = "ViT-B-32", seed: int = 0) -> Path:
    """Write open_clip_config.json and open_clip_model.safetensors for a seeded random `arch` (an open_clip
    architecture name, or TINY) into `folder`, unless they are there already; returns `folder`."""
    folder = Path(folder)
    if (folder / "open_clip_model.safetensors").exists() and (folder / "open_clip_config.json").exists():
        return folder
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if arch == TINY:
        model_cfg, model = TINY_MODEL_CFG, open_clip.CLIP(**TINY_MODEL_CFG)
    else:
        model_cfg, model = open_clip.get_model_config(arch), open_clip.create_model(arch)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": PREPROCESS_CFG}))
    return folder
