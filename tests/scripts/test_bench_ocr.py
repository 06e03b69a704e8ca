"""scripts/bench_ocr.py --quick end to end (tiny model, scratch cache): its last line is JSON with every figure,
each in its range, and a verdict on every goal."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from helpers import REPO
from helpers.texts import CJK_FONT, LATIN_FONT, PACKAGES

SCRIPT = REPO / "scripts" / "bench_ocr.py"
GOALS = {"en_ge16_recall", "en_ge16_precision", "zh_recall", "no_text_share_end_to_end", "no_text_to_embed_camera",
         "no_text_to_embed_test_set", "throughput_ratio"}


def _needs() -> None:
    for path in (LATIN_FONT, CJK_FONT):
        if not path.exists():
            pytest.skip(f"font {path} missing (apt-get install {PACKAGES[path]})")
    for module, extra in (("rapidocr_onnxruntime", "pip install 'searchengine[ocr]'"),
                          ("skimage", "pip install scikit-image")):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} missing ({extra})")


def _share(value) -> bool:
    return isinstance(value, (int, float)) and 0.0 <= value <= 1.0


def test_quick_run_reports_every_figure(isolated, tiny_model_dir):
    _needs()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--model", str(tiny_model_dir),
                           "--cache", str(isolated / "cache")],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])

    assert figures["pictures"] == {"en": 12, "zh": 6, "none": 6}
    for key in ("en_recall", "en_ge16_recall", "zh_recall", "zh_word_recall"):
        assert _share(figures[key]), (key, figures[key])
    for key in ("en_precision", "en_ge16_precision", "zh_precision", "precision"):  # None: no search returned any
        assert figures[key] is None or _share(figures[key]), (key, figures[key])
    for key in ("en_cer", "en_ge16_cer", "zh_cer"):
        assert isinstance(figures[key], (int, float)) and figures[key] >= 0, (key, figures[key])
    # every word rendered is searched once, every Chinese phrase also as its two two-character words
    assert figures["accuracy"]["en"]["searched"] == 12 * 3
    assert figures["accuracy"]["zh"]["searched"] == 6 * 2
    assert figures["accuracy"]["zhword"]["searched"] == 6 * 2 * 2
    assert figures["index_test_set"]["added"] == figures["index_test_set"]["words_read"] == 24

    for where in ("test_set", "camera"):
        timing = figures["timing"][where]
        assert timing["with_text_s"] > 0 and timing["no_text_s"] > 0 and timing["embed_s_per_picture"] > 0
        assert timing["no_text_to_embed"] > 0 and _share(timing["no_text_gate_fired_share"])
    assert figures["timing"]["camera"]["with_text_pictures"] == 1  # 1 photo in 10

    no_text = figures["no_text_end_to_end"]
    assert (no_text["photos"], len(no_text["rounds"])) == (9, 1)
    assert isinstance(no_text["share_median"], (int, float)) and no_text["embed_s_per_photo"] > 0
    throughput = figures["throughput"]
    assert (throughput["photos"], figures["camera_text_photos"], len(throughput["rounds"])) == (10, 1, 1)
    assert throughput["ratio_median"] > 0 and throughput["ips_without_median"] > 0
    assert _share(throughput["text_photo_word_recall"])

    assert set(figures["goals"]) == GOALS
    for goal in figures["goals"].values():
        assert goal["met"] is None if goal["value"] is None else isinstance(goal["met"], bool)
    assert len(figures["loadavg_before"]) == len(figures["loadavg_after"]) == 3
    assert not list((isolated / "cache" / "ocr").glob("run-*")), "the scratch folder is left behind"
