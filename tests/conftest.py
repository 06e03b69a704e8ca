"""Fixtures for every folder: offline, a tmp working folder and library for every test, a tiny random-weight model,
and the indexed folder of every test format that the CLI and query tests share. Helpers are in tests/helpers/."""
from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from helpers.cli import index_json  # noqa: E402
from helpers.images import GOOD, make_library_folder  # noqa: E402
from indexer.model.random_weights import TINY, build_random_model  # noqa: E402


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Each test runs in its own folder, with its own default library and no network."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SEARCHENGINE_LIBRARY", str(tmp_path / "library"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    yield tmp_path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny random-weight CLIP (seed 0), built once per session by indexer.model.random_weights."""
    return build_random_model(tmp_path_factory.mktemp("tiny-model"), arch=TINY)


@pytest.fixture(scope="session")
def tiny_model_name(tiny_model_dir) -> str:
    return f"local-dir:{tiny_model_dir}"


# --- an indexed folder of every format (tests/cli, tests/query); some modules define their own `photos` or
# `indexed`, which then take precedence there --------------------------------------------------------------------
@pytest.fixture
def photos(isolated) -> dict[str, Path]:
    """Every GOOD image and the BAD files in ./photos; name -> path of the good ones."""
    return make_library_folder(isolated / "photos")


@pytest.fixture
def indexed(photos, tiny_model_name) -> dict[str, Path]:
    """`photos`, indexed into the default library with the tiny model."""
    summary = index_json(photos[GOOD[0]].parent, "--model", tiny_model_name)
    assert summary["added"] == len(GOOD)
    return photos
