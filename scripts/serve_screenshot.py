"""Make docs/screenshot.png: scikit-image's bundled photos (as `make demo` writes them),
indexed with a small random-weight model, served, searched and shot in headless Chromium (rankings are
meaningless with random weights; the picture shows the page)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def tiny_model(folder: Path) -> Path:
    """A small random-weight CLIP as a local-dir: model (the page looks the same with any model)."""
    import json

    import open_clip
    import torch
    from safetensors.torch import save_file

    from random_model import OPENAI_MEAN, OPENAI_STD

    cfg = {"embed_dim": 64, "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = open_clip.CLIP(**cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {
        "mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic", "resize_mode": "shortest"}}))
    return folder


def main() -> None:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    import demo

    work = Path(tempfile.mkdtemp(prefix="searchengine-shot-"))
    demo.SAMPLE = work / "photos"
    demo.write_sample()
    model = tiny_model(work / "model")
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    library = work / "library"
    subprocess.run([sys.executable, "-m", "searchengine", "index", str(work / "photos"), "--library", str(library),
                    "--model", f"local-dir:{model}"], check=True, env=env)
    server = subprocess.Popen([sys.executable, "-m", "searchengine", "serve", "--library", str(library), "--port", "0"],
                              stdout=subprocess.PIPE, text=True, env=env)
    url = server.stdout.readline().strip()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1100, "height": 640})
            page.goto(url + "?q=an%20astronaut")
            page.wait_for_function("() => [...document.querySelectorAll('#grid img')]"
                                   ".every((i) => i.complete && i.naturalWidth > 0)")
            page.hover("#grid .tile >> nth=1")
            page.wait_for_timeout(1000)  # decoded is not yet painted (decoding="async")
            shot = page.screenshot()
            browser.close()
    finally:
        server.send_signal(2)
        server.wait(30)
    img = Image.open(io.BytesIO(shot)).convert("RGB").resize((880, 512), Image.Resampling.LANCZOS)
    target = ROOT / "docs" / "screenshot.png"
    target.parent.mkdir(exist_ok=True)
    img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
    print(target, target.stat().st_size)


if __name__ == "__main__":
    main()
