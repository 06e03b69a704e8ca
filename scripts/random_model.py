"""Build a random-weight open_clip model folder of any architecture (for benchmarks and the offline demo).

Speed does not depend on the weights, so benchmarks of the pipeline are honest with random ones.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


def build_random_model(folder: Path, arch: str = "ViT-B-32", seed: int = 0) -> Path:
    """Write open_clip_config.json + open_clip_model.safetensors for `arch`, unless already there."""
    folder = Path(folder)
    if (folder / "open_clip_model.safetensors").exists():
        return folder
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model_cfg = open_clip.get_model_config(arch)
    model = open_clip.create_model(arch)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    preprocess_cfg = {"mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic", "resize_mode": "shortest"}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}))
    return folder


if __name__ == "__main__":
    print(build_random_model(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "ViT-B-32"))
