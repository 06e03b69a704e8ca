"""`make demo`: index scikit-image's bundled photos into ./demo-library, then run a text and an image query.

Uses the default model (ViT-B-32, laion2b_s34b_b79k), downloaded on first use. Where the weights cannot be had
(no network, no cache), it says so and falls back to a random-weight ViT-B-32 built locally: the pipeline then
runs for real, but the rankings mean nothing.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample"
LIBRARY = ROOT / "demo-library"
FALLBACK_MODEL = ROOT / ".bench" / "random-vit-b-32"
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "hubble_deep_field", "immunohistochemistry",
          "retina", "camera", "page", "moon", "horse", "text", "brick", "grass", "gravel", "rough_wall"]


def write_sample() -> None:
    from PIL import Image
    from skimage import data

    SAMPLE.mkdir(exist_ok=True)
    for name in PHOTOS:
        target = SAMPLE / f"{name}.jpg"
        if target.exists() or not hasattr(data, name):
            continue
        try:
            pixels = getattr(data, name)()
        except Exception as exc:  # some skimage datasets need a download; the bundled ones suffice
            print(f"(skipping {name}: {type(exc).__name__})")
            continue
        img = Image.fromarray(pixels if pixels.dtype.name == "uint8" else (pixels * 255).astype("uint8"))
        img.convert("RGB").save(target, quality=92)
    print(f"sample folder: {SAMPLE} ({len(list(SAMPLE.glob('*.jpg')))} photos)")


def searchengine(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "searchengine", *args, "--library", str(LIBRARY)]
    print("$ searchengine " + " ".join(args))
    return subprocess.run(cmd, check=check, text=True, capture_output=True)


def random_model() -> str:
    from indexer.model.random_weights import build_random_model

    return "local-dir:" + str(build_random_model(FALLBACK_MODEL, "ViT-B-32"))


def main() -> None:
    write_sample()
    first = searchengine("index", str(SAMPLE), check=False)
    if first.returncode != 0:
        print(first.stderr.strip())
        if "weights" not in first.stderr:
            sys.exit(first.returncode)
        print("\n*** Pretrained weights are not reachable here: the demo goes on with a RANDOM-weight ViT-B-32, ***\n"
              "*** so the pipeline is real but the rankings below are meaningless. See README: offline weights. ***\n")
        first = searchengine("index", str(SAMPLE), "--model", random_model())
    print(first.stderr.strip())
    for query in (["search", "a cat", "--limit", "5"], ["search", "--image", str(SAMPLE / "coffee.jpg"), "--limit", "5"]):
        print(searchengine(*query).stdout)
    print(json.dumps(json.loads(searchengine("status", "--json").stdout), indent=2))


if __name__ == "__main__":
    main()
