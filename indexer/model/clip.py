"""The CLIP model wrapper: load an open_clip model by name / tag / file / local-dir / hf-hub, preprocess, encode.

open_clip and torch are imported only inside functions: they cost seconds and most commands never need them.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from indexer.cpu import usable_cores
from indexer.errors import ModelError, WeightsUnavailableError
from indexer.images.decode import PreprocessConfig
from indexer.model.device import AUTO, CPU, REDUCED_DTYPE, device_kind, resolve_device
from indexer.model.image_encoder import ImageEncoder, NoticeFn, normalise

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
PRECISIONS = ("fp32", "int8")
LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"

WEIGHTS_HELP = (
    "to work offline, pass a checkpoint file (--pretrained /path/to/open_clip_pytorch_model.bin), "
    "a folder with open_clip_config.json and weights (--model local-dir:/path/to/folder), "
    "or copy the Hugging Face cache (~/.cache/huggingface/hub) from a machine that has downloaded them"
)


@dataclass(frozen=True)
class ModelSpec:
    """Which model a library uses: open_clip name (or hf-hub:/local-dir: form) and pretrained tag or file."""

    name: str
    pretrained: str

    @classmethod
    def resolve(cls, name: str | None, pretrained: str | None) -> "ModelSpec":
        """Fill defaults and make paths absolute, so the spec recorded in a catalog means the same from any folder."""
        name = name or DEFAULT_MODEL
        if name.startswith(LOCAL_DIR):
            folder = os.path.abspath(os.path.expanduser(name[len(LOCAL_DIR):]))
            return cls(LOCAL_DIR + folder, "")
        if name.startswith(HF_HUB):
            return cls(name, "")
        if pretrained is None:
            pretrained = DEFAULT_PRETRAINED if name == DEFAULT_MODEL else ""
        return cls(name, normalise_pretrained(pretrained))

    def describe(self) -> str:
        return f"{self.name} ({self.pretrained})" if self.pretrained else self.name


def normalise_pretrained(pretrained: str) -> str:
    """A checkpoint file becomes an absolute path; a tag stays as it is."""
    if pretrained and (os.sep in pretrained or os.path.exists(pretrained)):
        return os.path.abspath(os.path.expanduser(pretrained))
    return pretrained


class ClipModel:
    """A loaded open_clip model with its eval preprocessing, encoding to L2-normalised float32 numpy rows.

    The image tower runs on `device` (through `images`, an ImageEncoder); the text tower stays on the CPU.
    """

    def __init__(self, spec: ModelSpec, model: Any, tokenizer: Any, preprocess_cfg: PreprocessConfig, dim: int,
                 images: ImageEncoder | None = None, image_precision: str = "fp32"):
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.preprocess_cfg = preprocess_cfg
        self.dim = dim
        self.images = images or ImageEncoder(model.encode_image)
        self.image_precision = image_precision  # the library's: "fp32" or "int8"

    @property
    def device(self) -> str:
        return self.images.device

    @property
    def compute_precision(self) -> str:
        """What this run's image embeddings are computed in: "int8", the checked GPU precision, or "fp32"."""
        return "int8" if self.image_precision == "int8" else self.images.precision

    def encode_pixels(self, batch: np.ndarray) -> np.ndarray:
        """Encode preprocessed images (N, 3, H, W) float32."""
        return self.images.encode(batch)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            features = self.model.encode_text(self.tokenizer(list(texts)))
        return normalise(features.float().numpy())

    def use_int8_tower(self, tower: Any) -> None:
        """Swap in a (checked) int8 image tower; int8 runs on the CPU only."""
        self.model.visual = tower
        self.images = ImageEncoder(self.model.encode_image)
        self.image_precision = "int8"


def load_model(spec: ModelSpec, image_precision: str = "fp32", device: str | None = CPU,
               notice: NoticeFn | None = None, reduced: str | None = AUTO) -> ClipModel:
    """Load the model, or raise a ModelError whose message says what to do; never silently random weights.

    `device` (auto, cpu, cuda, cuda:N, mps) runs the image tower; `reduced` is the autocast dtype to try there
    (AUTO: the device's own, e.g. float16 on CUDA; None: fp32 only); int8 towers stay on the CPU.
    """
    if image_precision not in PRECISIONS:
        raise ModelError(f"unknown image precision {image_precision!r} (known: {', '.join(PRECISIONS)})")
    where = resolve_device(device, cpu_only=image_precision == "int8")
    _check_weights_available(spec)
    import open_clip  # noqa: F401  (slow import, kept off paths that do not encode)
    import torch

    torch.set_num_threads(usable_cores())
    model, preprocess = _create(spec)
    model.eval()
    if image_precision == "int8":
        model.visual = int8_tower(model.visual)
    tokenizer = open_clip.get_tokenizer(spec.name)
    dim = int(model.encode_text(tokenizer(["a"])).shape[-1])
    if where != CPU:
        model.visual.to(where)
    if reduced == AUTO:
        reduced = REDUCED_DTYPE.get(device_kind(where))
    images = ImageEncoder(model.encode_image, where, reduced, notice or _ignore)
    return ClipModel(spec, model, tokenizer, _preprocess_config(preprocess, model), dim, images, image_precision)


def _ignore(_message: str) -> None: ...


def int8_tower(tower: Any) -> Any:
    """Dynamic int8 quantisation of the image tower's Linear layers (opt-in: ~1.6x faster on CPUs with VNNI,
    embeddings within ~2e-4 of fp32 in 1 - cosine); the text tower stays fp32."""
    import warnings

    import torch

    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(tower, {torch.nn.Linear}, dtype=torch.qint8)


def _create(spec: ModelSpec) -> tuple[Any, Any]:
    import open_clip

    # open_clip logs its failures at ERROR level; ours is the one-line message below.
    logging.disable(logging.CRITICAL)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(spec.name, pretrained=spec.pretrained or None)
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "download" in message.lower() or "offline" in message.lower() or "connect" in message.lower():
            raise WeightsUnavailableError(
                f"cannot download weights for {spec.describe()} (no network?); {WEIGHTS_HELP}") from None
        raise ModelError(f"cannot load model {spec.describe()}: {message}") from None
    finally:
        logging.disable(logging.NOTSET)
    return model, preprocess


def _check_weights_available(spec: ModelSpec) -> None:
    """Refuse up front what open_clip would accept with random weights (missing local checkpoint, unknown names)."""
    if spec.name.startswith(LOCAL_DIR):
        _check_local_dir(Path(spec.name[len(LOCAL_DIR):]))
        return
    if spec.name.startswith(HF_HUB):
        _check_hf_hub(spec.name[len(HF_HUB):])
        return
    import open_clip

    if spec.name.replace("/", "-") not in open_clip.list_models():
        raise ModelError(f"unknown model {spec.name!r}; see `python -c \"import open_clip; print(open_clip.list_models())\"`")
    if not spec.pretrained:
        raise ModelError(f"model {spec.name} needs --pretrained: a tag (see open_clip.list_pretrained()) or a checkpoint file")
    if os.path.isabs(spec.pretrained):
        if not os.path.isfile(spec.pretrained):
            raise ModelError(f"checkpoint file not found: {spec.pretrained}")
        return
    if not open_clip.get_pretrained_cfg(spec.name, spec.pretrained):
        tags = ", ".join(t for m, t in open_clip.list_pretrained() if m == spec.name) or "none"
        raise ModelError(f"unknown pretrained tag {spec.pretrained!r} for {spec.name} (known: {tags}), nor a file")


def _check_local_dir(folder: Path) -> None:
    if not (folder / "open_clip_config.json").is_file():
        raise ModelError(f"no open_clip_config.json in {folder} (a local-dir: model needs it plus its weights)")
    weights = [p for ext in ("*.safetensors", "*.bin", "*.pth") for p in folder.glob(ext)]
    if not weights:
        raise WeightsUnavailableError(f"no weights (*.safetensors, *.bin, *.pth) in {folder}; {WEIGHTS_HELP}")


def _check_hf_hub(repo: str) -> None:
    from huggingface_hub import hf_hub_download
    from open_clip.pretrained import download_pretrained_from_hf

    try:
        hf_hub_download(repo, "open_clip_config.json")
        download_pretrained_from_hf(repo)
    except Exception:
        raise WeightsUnavailableError(f"cannot fetch {HF_HUB}{repo} from the Hugging Face hub; {WEIGHTS_HELP}") from None


def _preprocess_config(preprocess: Any, model: Any) -> PreprocessConfig:
    """Read open_clip's eval settings from the model's preprocess_cfg (what its transform was built from)."""
    cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    size = cfg.get("size", model.visual.image_size)
    if isinstance(size, (tuple, list)):
        if size[0] != size[1]:
            raise ModelError(f"non-square input size {tuple(size)} is not supported")
        size = size[0]
    return PreprocessConfig(
        image_size=int(size),
        mean=tuple(float(x) for x in cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
        std=tuple(float(x) for x in cfg.get("std", (0.26862954, 0.26130258, 0.27577711))),
        interpolation=str(cfg.get("interpolation", "bicubic")),
        resize_mode=str(cfg.get("resize_mode", "shortest")),
        fill_color=int(cfg.get("fill_color", 0)),
    )
