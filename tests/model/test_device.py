"""--device: selection with torch's availability checks patched, errors that write nothing, the device in the
summary and `status`, out-of-memory halving, queries kept on the CPU. Tests marked `gpu` need real CUDA."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.catalog import catalog_query, read_catalog
from helpers.cli import run
from helpers.images import make_photos
from indexer.model.device import check_device, parse_device, resolve_device
from indexer.errors import DeviceError
from indexer.model.image_encoder import ImageEncoder
from indexer.model.precision import judge

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device; torch sees none on this machine")


def machine(monkeypatch, cuda: int = 0, mps: bool = False) -> None:
    """Pretend torch sees `cuda` CUDA devices and (or not) Apple MPS."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


# ---------------------------------------------------------------- selection

@pytest.mark.parametrize("cuda, mps, expected", [(2, True, "cuda:0"), (1, False, "cuda:0"), (0, True, "mps"),
                                                 (0, False, "cpu")])
def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    machine(monkeypatch, cuda, mps)
    assert resolve_device(None) == resolve_device("auto") == resolve_device(" AUTO ") == expected


def test_explicit_devices_present(monkeypatch):
    machine(monkeypatch, cuda=2, mps=True)
    assert [resolve_device(d) for d in ("cpu", "cuda", "cuda:1", "mps")] == ["cpu", "cuda:0", "cuda:1", "mps"]


@pytest.mark.parametrize("asked, cuda, mps, words", [
    ("cuda", 0, True, "no CUDA device"), ("cuda:0", 0, False, "no CUDA device"),
    ("cuda:2", 2, False, "cuda:0 to cuda:1"), ("mps", 1, False, "MPS is not available"),
])
def test_an_absent_device_is_an_error(monkeypatch, asked, cuda, mps, words):
    machine(monkeypatch, cuda, mps)
    with pytest.raises(DeviceError, match=words):
        resolve_device(asked)
    with pytest.raises(DeviceError):
        check_device(asked)


@pytest.mark.parametrize("asked", ["gpu", "cuda:", "cuda:x", "tpu", "cpu:0", ""])
def test_unknown_spellings_are_refused_without_torch(asked):
    with pytest.raises(DeviceError, match="unknown device"):
        parse_device(asked or "?")


def test_int8_stays_on_the_cpu(monkeypatch):
    machine(monkeypatch, cuda=1, mps=True)
    assert resolve_device("auto", cpu_only=True) == "cpu"
    with pytest.raises(DeviceError, match="int8 image encoding runs on the CPU only"):
        resolve_device("cuda", cpu_only=True)


def test_auto_and_cpu_never_ask_torch_up_front(monkeypatch):
    def no(*_a):
        raise AssertionError("asked torch about a GPU")

    monkeypatch.setattr(torch.cuda, "is_available", no)
    check_device("auto")
    check_device("cpu")
    assert resolve_device("cpu") == "cpu"


# ---------------------------------------------------------------- the CLI: errors write nothing

@pytest.mark.parametrize("asked", ["cuda", "cuda:1", "mps"])
def test_index_on_an_absent_device_creates_no_library(monkeypatch, isolated, tiny_model_name, asked):
    machine(monkeypatch, cuda=0, mps=False)
    make_photos(isolated / "photos", 4)
    result = run("index", isolated / "photos", "--model", tiny_model_name, "--device", asked, ok=False)
    assert result.exit_code != 0 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and f"--device {asked}" in result.stderr
    assert not (isolated / "library").exists()


def test_index_on_an_absent_device_leaves_a_library_as_it_was(monkeypatch, isolated, tiny_model_name):
    photos = make_photos(isolated / "photos", 4)
    run("index", isolated / "photos", "--model", tiny_model_name)
    before = _catalog_state(isolated / "library")
    photos[0].unlink()
    make_photos(isolated / "photos", 2, first_seed=2000)
    machine(monkeypatch, cuda=0, mps=False)
    result = run("index", isolated / "photos", "--device", "cuda", ok=False)
    assert result.exit_code != 0 and "no CUDA device" in result.stderr
    assert _catalog_state(isolated / "library") == before


def test_unknown_device_is_a_one_line_error(isolated, tiny_model_name):
    make_photos(isolated / "photos", 4)
    for command in (["index", isolated / "photos", "--model", tiny_model_name], ["embed", "a cat"]):
        result = run(*command, "--device", "gpu", ok=False)
        assert result.exit_code != 0 and result.stderr.count("\n") == 1 and "unknown device 'gpu'" in result.stderr
    assert not (isolated / "library").exists()


def test_embed_on_an_absent_device_is_an_error(monkeypatch, isolated, tiny_model_name):
    machine(monkeypatch, cuda=0, mps=False)
    result = run("embed", "a cat", "--model", tiny_model_name, "--device", "cuda", ok=False)
    assert result.exit_code != 0 and "no CUDA device" in result.stderr


def _catalog_state(library: Path) -> tuple:
    with read_catalog(library) as conn:
        return (sorted(conn.exec_driver_sql("SELECT key, value FROM meta")),
                sorted(conn.exec_driver_sql("SELECT path, size, mtime_ns, embedding FROM images")))


# ---------------------------------------------------------------- which device indexed the library

def test_summary_and_status_name_the_device(monkeypatch, isolated, tiny_model_name):
    machine(monkeypatch, cuda=0, mps=False)  # auto on a machine without a GPU: the CPU, as before
    make_photos(isolated / "photos", 6)
    assert json.loads(run("status", "--json", ok=False).stdout or "{}") == {}
    first = json.loads(run("index", isolated / "photos", "--model", tiny_model_name, "--json").stdout)
    assert (first["device"], first["compute_precision"], first["encoded"]) == ("cpu", "fp32", 6)
    status = json.loads(run("status", "--json").stdout)
    assert (status["device"], status["compute_precision"]) == ("cpu", "fp32")
    again = json.loads(run("index", isolated / "photos", "--json").stdout)
    assert again["encoded"] == 0 and again["device"] is None  # nothing encoded: no device to name
    assert json.loads(run("status", "--json").stdout)["device"] == "cpu"  # the last run that encoded
    plain = run("index", isolated / "photos", "--device", "cpu").stderr
    assert " on " not in plain
    make_photos(isolated / "photos", 1, first_seed=3000)
    assert "on cpu in fp32" in run("index", isolated / "photos", "--device", "cpu").stderr


def test_queries_never_start_a_gpu(monkeypatch, isolated, tiny_model_name):
    """A query that needs the model (image not in the library, or no numpy text tower) loads it on the CPU."""
    make_photos(isolated / "photos", 4)
    outside = make_photos(isolated / "outside", 1, first_seed=4000)[0]
    run("index", isolated / "photos", "--model", tiny_model_name, "--device", "cpu")

    def no(*_a):
        raise AssertionError("a query asked torch about a GPU")

    monkeypatch.setattr(torch.cuda, "is_available", no)
    monkeypatch.setattr(torch.backends.mps, "is_available", no)
    assert json.loads(run("search", "--image", outside, "--json").stdout)
    assert json.loads(run("search", "a cat", "--json").stdout)


# ---------------------------------------------------------------- out of memory: halve the batch and go on

def rowwise(x):
    """A stand-in tower whose rows depend only on their own image, so chunking cannot change them."""
    return x.flatten(1)[:, :16] * 2.0 + 1.0


def test_out_of_memory_halves_the_batch_and_goes_on():
    calls: list[int] = []

    def tower(x):
        calls.append(len(x))
        if len(x) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return rowwise(x)

    notices: list[str] = []
    pixels = np.random.default_rng(0).normal(size=(10, 3, 8, 8)).astype(np.float32)
    out = ImageEncoder(tower, notice=notices.append).run(pixels, None)
    expected = ImageEncoder(rowwise).run(pixels, None)
    assert np.array_equal(out, expected)
    assert calls[:3] == [10, 5, 2] and max(calls[3:]) <= 2
    assert [n.split(" with ", 1)[1] for n in notices] == ["10 images at once: going on with 5",
                                                          "5 images at once: going on with 2"]


def test_mps_style_out_of_memory_is_handled_too():
    def tower(x):
        if len(x) > 1:
            raise RuntimeError("MPS backend out of memory (MPS allocated: 8.00 GB)")
        return rowwise(x)

    pixels = np.ones((4, 3, 8, 8), np.float32)
    encoder = ImageEncoder(tower)
    assert np.array_equal(encoder.run(pixels, None), ImageEncoder(rowwise).run(pixels, None))
    assert encoder.chunk == 1


def test_one_image_that_does_not_fit_is_an_error_and_other_errors_pass_through():
    def full(x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(DeviceError, match="even for one image"):
        ImageEncoder(full).run(np.ones((4, 3, 8, 8), np.float32), None)

    def broken(x):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        ImageEncoder(broken).run(np.ones((4, 3, 8, 8), np.float32), None)


# ---------------------------------------------------------------- real GPU (skipped without CUDA)

@pytest.mark.gpu
@needs_cuda
def test_cuda_index_matches_the_cpu_within_the_bound(isolated, tiny_model_name):
    make_photos(isolated / "photos", 40)
    on_gpu = json.loads(run("index", isolated / "photos", "--model", tiny_model_name, "--device", "cuda",
                            "--batch-size", "8", "--json").stdout)
    assert on_gpu["device"].startswith("cuda:") and on_gpu["compute_precision"] in ("fp16", "fp32")
    run("index", isolated / "photos", "--library", isolated / "cpu", "--model", tiny_model_name, "--device", "cpu")
    gpu_rows, cpu_rows = _embeddings(isolated / "library"), _embeddings(isolated / "cpu")
    verdict = judge(cpu_rows, gpu_rows)
    assert verdict.ok, verdict.describe()
    assert np.allclose(np.linalg.norm(gpu_rows, axis=1), 1, atol=1e-5)
    assert json.loads(run("status", "--json").stdout)["device"].startswith("cuda:")


@pytest.mark.gpu
@needs_cuda
def test_cuda_encoder_pins_and_copies(tiny_model_name):
    from indexer.model.clip import ModelSpec, load_model

    model = load_model(ModelSpec.resolve(tiny_model_name, None), device="cuda", reduced=None)
    pixels = np.random.default_rng(0).normal(size=(6, 3, 224, 224)).astype(np.float32)
    out = model.encode_pixels(pixels)
    assert model.images._pinned is not None and model.images._pinned.is_pinned()
    reference = load_model(ModelSpec.resolve(tiny_model_name, None)).encode_pixels(pixels)
    assert np.max(1 - np.sum(out * reference, axis=1)) < 1e-5


def _embeddings(library: Path) -> np.ndarray:
    rows = catalog_query(library, "SELECT path, embedding FROM images ORDER BY path")
    return np.stack([np.frombuffer(blob, np.float32) for _, blob in rows])


def test_ray_with_a_gpu_device_is_refused_before_anything_is_written(isolated, tiny_model_name):
    make_photos(isolated / "photos", 4)
    result = run("index", isolated / "photos", "--model", tiny_model_name, "--ray", "auto", "--device", "cuda",
                 ok=False)
    assert result.exit_code != 0 and "best device" in result.stderr
    assert not (isolated / "library").exists()
