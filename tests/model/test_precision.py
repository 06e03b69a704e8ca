"""The reduced-precision rule (indexer/model/precision.py), shared by the GPU's fp16 autocast and --int8.

No GPU here: the same gate and comparison are exercised on the CPU with bfloat16 autocast, which the
image encoder takes as a parameter; failures are forced with a tighter bound or a perturbed encoder.
"""
from __future__ import annotations

import functools
import json
import signal
from pathlib import Path

import numpy as np
import pytest

from helpers.catalog import catalog_query
from helpers.cli import python, run
from helpers.images import make_photos
from indexer.model import device as device_module
from indexer.model import image_encoder
from indexer.model.image_encoder import ImageEncoder
from indexer.images.decode import decode_and_preprocess
from indexer.model.clip import ModelSpec, load_model
from indexer.model.precision import BOUND, MIN_PHOTOS, PrecisionGate, Verdict, judge


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# ---------------------------------------------------------------- the rule on planted embeddings

def test_judge_measures_worst_error_against_the_spread_between_photos():
    rng = np.random.default_rng(0)
    fp32 = unit(rng.normal(size=(8, 16)))
    reduced = fp32.copy()
    reduced[3] = unit(fp32[3:4] + 0.01 * rng.normal(size=(1, 16)))[0]
    verdict = judge(fp32, reduced)
    pairs = [1 - fp32[i] @ fp32[j] for i in range(8) for j in range(i + 1, 8)]
    assert verdict.photos == 8
    assert verdict.between == pytest.approx(np.mean(pairs), rel=1e-9)
    assert verdict.worst == pytest.approx(1 - fp32[3] @ reduced[3], rel=1e-6)
    assert verdict.ok == (verdict.worst <= BOUND * verdict.between)


def test_judge_passes_a_small_error_and_refuses_a_large_one():
    rng = np.random.default_rng(1)
    fp32 = unit(rng.normal(size=(16, 32)))  # between-photo 1-cos about 1
    assert judge(fp32, unit(fp32 + 1e-3 * rng.normal(size=fp32.shape))).ok
    bad = judge(fp32, unit(fp32 + 0.3 * rng.normal(size=fp32.shape)))
    assert not bad.ok and bad.ratio > BOUND and "bound is 1%" in bad.describe()


def test_too_few_distinct_photos_give_no_verdict():
    rng = np.random.default_rng(2)
    three = unit(rng.normal(size=(3, 16)))
    assert judge(three, three) is None
    duplicated = np.concatenate([three, three[:1]])  # four files, three pictures
    assert judge(duplicated, duplicated) is None
    four = np.concatenate([three, unit(rng.normal(size=(1, 16)))])
    assert judge(four, four).ok and judge(four, four).photos == MIN_PHOTOS


def test_nan_never_passes():
    rng = np.random.default_rng(3)
    fp32 = unit(rng.normal(size=(6, 8)))
    assert not Verdict(float("nan"), 0.5, 6).ok
    assert not judge(fp32, np.full_like(fp32, np.nan)).ok


# ---------------------------------------------------------------- the gate, with bfloat16 on the CPU

@pytest.fixture(scope="module")
def tiny(tiny_model_name):
    return load_model(ModelSpec.resolve(tiny_model_name, None))


@pytest.fixture(scope="module")
def pixels(tiny, tmp_path_factory) -> np.ndarray:
    folder = tmp_path_factory.mktemp("gate-photos")
    return np.stack([decode_and_preprocess(p.read_bytes(), tiny.preprocess_cfg) for p in make_photos(folder, 12)])


def test_bfloat16_passes_on_the_first_batch_then_encodes_in_bfloat16(tiny, pixels):
    notices: list[str] = []
    encoder = ImageEncoder(tiny.model.encode_image, "cpu", "bfloat16", notices.append)
    fp32 = np.concatenate([encoder.run(pixels[:8], None), encoder.run(pixels[8:], None)])
    first = encoder.encode(pixels[:8])
    assert np.array_equal(first, fp32[:8])  # the checked batch is stored in fp32
    assert encoder.precision == "bf16" and encoder.gate.verdict.ok and not notices
    later = encoder.encode(pixels[8:])
    assert not np.array_equal(later, fp32[8:])  # bfloat16 really ran...
    verdict = judge(fp32[8:], later, min_photos=2)
    assert verdict.ok  # ...within the bound
    assert later.dtype == np.float32 and np.allclose(np.linalg.norm(later, axis=1), 1, atol=1e-5)


def test_a_tighter_bound_forces_the_fallback_to_fp32(tiny, pixels):
    notices: list[str] = []
    gate = functools.partial(PrecisionGate, bound=1e-9)
    encoder = ImageEncoder(tiny.model.encode_image, "cpu", "bfloat16", notices.append, gate=gate)
    fp32 = np.concatenate([encoder.run(pixels[:8], None), encoder.run(pixels[8:], None)])
    assert np.array_equal(encoder.encode(pixels[:8]), fp32[:8])
    assert encoder.precision == "fp32" and not encoder.gate.verdict.ok
    assert len(notices) == 1 and "bf16 is not faithful enough" in notices[0] and "fp32 instead" in notices[0]
    assert np.array_equal(encoder.encode(pixels[8:]), fp32[8:])  # the rest of the run stays fp32


def test_a_perturbed_reduced_encoder_is_refused(tiny, pixels):
    """A broken reduced path (here: noise added under autocast) must never reach the library."""
    def tower(x):
        import torch

        out = tiny.model.encode_image(x)
        if torch.is_autocast_enabled("cpu"):
            out = out + 0.5 * torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
        return out

    notices: list[str] = []
    encoder = ImageEncoder(tower, "cpu", "bfloat16", notices.append)
    fp32 = ImageEncoder(tiny.model.encode_image).run(pixels, None)
    assert np.array_equal(encoder.encode(pixels), fp32)
    assert encoder.precision == "fp32" and notices and "not faithful enough" in notices[0]


def test_with_one_photo_per_batch_the_check_waits_for_enough_photos(tiny, pixels):
    encoder = ImageEncoder(tiny.model.encode_image, "cpu", "bfloat16")
    for i in range(MIN_PHOTOS):
        assert encoder.gate.state == "checking" and encoder.precision == "fp32"
        one = pixels[i:i + 1]
        assert np.array_equal(encoder.encode(one), encoder.run(one, None))  # stored in fp32 while undecided
    assert encoder.gate.state == "reduced" and encoder.gate.verdict.photos == MIN_PHOTOS


def test_a_reduced_dtype_the_device_cannot_run_falls_back(tiny, pixels):
    def tower(x):
        import torch

        if torch.is_autocast_enabled("cpu"):
            raise RuntimeError("autocast: this dtype is not supported here")
        return tiny.model.encode_image(x)

    notices: list[str] = []
    encoder = ImageEncoder(tower, "cpu", "bfloat16", notices.append)
    assert np.array_equal(encoder.encode(pixels[:4]), encoder.run(pixels[:4], None))
    assert encoder.precision == "fp32" and "cannot run here" in notices[0]


# ---------------------------------------------------------------- through `index`: the device's dtype on the CPU

@pytest.fixture
def cpu_reduces_to_bfloat16(monkeypatch):
    """Make the CPU a "device" with a reduced precision, so the index run takes the GPU's code path."""
    monkeypatch.setitem(device_module.REDUCED_DTYPE, "cpu", "bfloat16")


def test_index_records_the_checked_precision(cpu_reduces_to_bfloat16, isolated, tiny_model_name):
    make_photos(isolated / "photos", 12)
    summary = json.loads(run("index", isolated / "photos", "--model", tiny_model_name, "--batch-size", "4",
                             "--device", "cpu", "--json").stdout)
    assert (summary["device"], summary["compute_precision"], summary["encoded"]) == ("cpu", "bf16", 12)
    status = json.loads(run("status", "--json").stdout)
    assert (status["device"], status["compute_precision"]) == ("cpu", "bf16")


def test_index_falls_back_to_fp32_with_a_notice(cpu_reduces_to_bfloat16, monkeypatch, isolated, tiny_model_name):
    monkeypatch.setattr(image_encoder, "PrecisionGate", functools.partial(PrecisionGate, bound=1e-9))
    make_photos(isolated / "photos", 12)
    result = run("index", isolated / "photos", "--model", tiny_model_name, "--batch-size", "4", "--json")
    assert "not faithful enough" in result.stderr and "fp32 instead" in result.stderr
    assert json.loads(result.stdout)["compute_precision"] == "fp32"
    assert json.loads(run("status", "--json").stdout)["compute_precision"] == "fp32"
    # fp32 after the fallback means exactly the CPU's embeddings: the same as a plain fp32 library's
    monkeypatch.setitem(device_module.REDUCED_DTYPE, "cpu", None)
    run("index", isolated / "photos", "--library", isolated / "plain", "--model", tiny_model_name, "--batch-size", "4")
    assert _stored(isolated / "library") == _stored(isolated / "plain")


def _stored(library: Path) -> dict[bytes, bytes]:
    return dict(catalog_query(library, "SELECT path, embedding FROM images"))


# ---------------------------------------------------------------- --int8: checked before the library exists

def test_int8_refused_on_the_first_photos_leaves_no_library(monkeypatch, isolated, tiny_model_name):
    import indexer.pipeline.int8_check as int8_check

    monkeypatch.setattr(int8_check, "judge", functools.partial(judge, bound=1e-9))
    make_photos(isolated / "photos", 8)
    result = run("index", isolated / "photos", "--model", tiny_model_name, "--int8", ok=False)
    assert result.exit_code != 0 and "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert "\n" not in message and "--int8 refused, library not created" in message and "bound is 0%" in message
    assert not (isolated / "library").exists()


def test_int8_needs_enough_photos_to_be_checked(isolated, tiny_model_name):
    make_photos(isolated / "photos", MIN_PHOTOS - 1)
    result = run("index", isolated / "photos", "--model", tiny_model_name, "--int8", ok=False)
    assert result.exit_code != 0 and f"at least {MIN_PHOTOS} different photos" in result.stderr
    assert not (isolated / "library").exists()
    run("index", isolated / "photos", "--model", tiny_model_name)  # fp32 needs no check


def test_int8_accepted_records_int8_and_its_embeddings_stay_close(isolated, tiny_model_name):
    make_photos(isolated / "photos", 8)
    summary = json.loads(run("index", isolated / "photos", "--model", tiny_model_name, "--int8", "--json").stdout)
    assert (summary["device"], summary["compute_precision"]) == ("cpu", "int8")
    run("index", isolated / "photos", "--library", isolated / "plain", "--model", tiny_model_name)
    int8, fp32 = _stored(isolated / "library"), _stored(isolated / "plain")
    paths = sorted(fp32)
    rows = [np.frombuffer(int8[p], np.float32) for p in paths], [np.frombuffer(fp32[p], np.float32) for p in paths]
    verdict = judge(np.stack(rows[1]), np.stack(rows[0]))
    assert verdict.ok and verdict.worst > 0  # really int8, and within the rule


def test_a_kill_during_the_int8_check_leaves_no_library(isolated, tiny_model_name):
    """SIGKILL at the moment of the comparison: nothing may exist afterwards, and a re-run creates it whole."""
    make_photos(isolated / "photos", 8)
    library = isolated / "library"
    script = ("import os, signal, indexer.pipeline.int8_check as c\n"
              "c.judge = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
              "from searchengine.cli.main import main\n"
              f"main([\"index\", {str(isolated / 'photos')!r}, \"--model\", {tiny_model_name!r}, \"--int8\", "
              f"\"--library\", {str(library)!r}])\n")
    proc = python(script, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert not library.exists()
    summary = json.loads(run("index", isolated / "photos", "--library", library, "--model", tiny_model_name,
                             "--int8", "--json").stdout)
    assert summary["added"] == 8 and summary["compute_precision"] == "int8"


def test_a_device_without_autocast_stays_fp32_and_says_so(monkeypatch, tiny, pixels):
    import torch

    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda kind: False)
    notices: list[str] = []
    encoder = ImageEncoder(tiny.model.encode_image, "cpu", "bfloat16", notices.append)
    assert encoder.gate is None and encoder.precision == "fp32" and "not available on cpu" in notices[0]
    assert np.array_equal(encoder.encode(pixels[:4]), encoder.run(pixels[:4], None))
