"""Make docs/screenshot.png: scikit-image's bundled photos (as `make demo` writes them),
indexed with a small random-weight model, served, searched and shot in headless Chromium (rankings are
meaningless with random weights; the picture shows the page)."""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import benchlib
import demo

from indexer.model.random_weights import TINY, build_random_model


def main() -> None:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="searchengine-shot-"))
    demo.SAMPLE = work / "photos"
    demo.write_sample()
    model = build_random_model(work / "model", TINY)  # the page looks the same with any model
    library = work / "library"
    benchlib.cli("index", work / "photos", "--library", library, "--model", f"local-dir:{model}")
    server = benchlib.Server(library)
    url = server.url
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
        server.stop()
    img = Image.open(io.BytesIO(shot)).convert("RGB").resize((880, 512), Image.Resampling.LANCZOS)
    target = benchlib.ROOT / "docs" / "screenshot.png"
    target.parent.mkdir(exist_ok=True)
    img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
    print(target, target.stat().st_size)


if __name__ == "__main__":
    main()
