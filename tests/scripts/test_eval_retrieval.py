"""scripts/eval_retrieval.py: its ranking and recall on planted data, and end to end in both caption formats."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO
from helpers.images import photo

SCRIPT = REPO / "scripts" / "eval_retrieval.py"
spec = importlib.util.spec_from_file_location("eval_retrieval", SCRIPT)
ev = importlib.util.module_from_spec(spec)
sys.modules["eval_retrieval"] = ev
spec.loader.exec_module(ev)

CAPTIONS = [["a red square", "something red"], ["a blue sky", "blue"], ["green grass", "a lawn"],
            ["a dark night", "black"]]


def test_recall_counts_a_hit_in_the_first_k_only():
    rankings = [[3, 1, 2], [0, 2, 1], [2, 0, 1], [1, 2, 0]]
    relevant = [{1}, {0}, {1, 9}, {0}]
    assert ev.recall_at(rankings, relevant, (1, 2, 3)) == {1: 25.0, 2: 50.0, 3: 100.0}


def test_top_k_ranks_planted_vectors():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((16, 16)))[0]
    images = basis[:6]
    owner = [0, 0, 1, 2, 3, 4, 5, 5]
    captions = 0.8 * images[owner] + 0.2 * images[[1, 2, 3, 4, 5, 0, 1, 2]]
    captions[7] = 0.3 * images[5] + 0.7 * images[2]  # planted miss: closer to image 2
    ranked = ev.top_k(captions, images, 3)
    assert [r[0] for r in ranked] == [0, 0, 1, 2, 3, 4, 5, 2]
    t2i = ev.recall_at(ranked, [{i} for i in owner], (1, 2))
    assert t2i == {1: 87.5, 2: 100.0}
    i2t = ev.top_k(images, captions, 1)
    per_image = [{c for c, i in enumerate(owner) if i == image} for image in range(6)]
    assert ev.recall_at(i2t, per_image, (1,)) == {1: 100.0}


def _write_images(folder: Path) -> list[str]:
    names = [f"img{i}.jpg" for i in range(len(CAPTIONS) + 1)]
    (folder / "sub").mkdir(parents=True)
    for i, name in enumerate(names):
        photo(i, (120, 90)).save(folder / "sub" / name, quality=92)
    return names


def _karpathy(path: Path, names: list[str]) -> None:
    entries = [{"filepath": "sub", "filename": n, "split": "test", "sentences": [{"raw": c} for c in caps]}
               for n, caps in zip(names, CAPTIONS)]
    entries.insert(2, {"filepath": "sub", "filename": names[-1], "split": "train", "sentences": [{"raw": "not me"}]})
    path.write_text(json.dumps({"images": entries, "dataset": "flickr30k"}))


def _coco(path: Path, names: list[str]) -> None:
    images = [{"id": 100 + i, "file_name": f"sub/{n}"} for i, n in enumerate(names[:-1])]
    notes = [{"id": j, "image_id": 100 + i, "caption": c} for j, (i, c) in
             enumerate((i, c) for i, caps in enumerate(CAPTIONS) for c in caps)]
    path.write_text(json.dumps({"images": images, "annotations": notes[::-1]}))


def _expected(names: list[str], folder: Path, model: str) -> dict:
    """The figures computed here independently: the model's embeddings, ranked by plain numpy."""
    from searchengine.library.api import Library

    texts = [c for caps in CAPTIONS for c in caps]
    owner = [i for i, caps in enumerate(CAPTIONS) for _ in caps]
    lib = Library.open(folder / "reference")
    vectors = lib.embed(texts=texts, images=[str(folder / "sub" / n) for n in names[:-1]], model=model)
    text, image = np.stack(vectors[:len(texts)]), np.stack(vectors[len(texts):])
    out = {}
    for k in (1, 5, 10):
        t2i = np.argsort(-(text @ image.T), axis=1)[:, :k]
        i2t = np.argsort(-(image @ text.T), axis=1)[:, :k]
        out[f"t2i_r{k}"] = round(100 * np.mean([owner[c] in t2i[c] for c in range(len(texts))]), 2)
        out[f"i2t_r{k}"] = round(100 * np.mean([any(owner[c] == i for c in i2t[i]) for i in range(len(image))]), 2)
    return out


@pytest.mark.parametrize("kind", ["karpathy", "coco"])
def test_end_to_end_in_both_formats(kind, isolated, tiny_model_name, capsys):
    names = _write_images(isolated / "data")
    captions = isolated / "captions.json"
    (_karpathy if kind == "karpathy" else _coco)(captions, names)
    args = ["--images", str(isolated / "data"), "--captions", str(captions), "--model", tiny_model_name]
    if kind == "coco":
        args[1] = str(isolated / "data")
    ev.main(args + ["--library", str(isolated / "work")])
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (figures["images"], figures["captions"], figures["indexed"], figures["failed"]) == (4, 8, 4, 0)
    # Four images: every caption's image is in its top 5; eight captions: every image's are in its top 10.
    assert figures["t2i_r5"] == figures["t2i_r10"] == figures["i2t_r10"] == 100.0
    expected = _expected(names, isolated / "data", tiny_model_name)
    assert {k: figures[k] for k in expected} == expected


def test_unreadable_captions_file_is_one_line_error(isolated):
    (isolated / "bad.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        ev.main(["--images", str(isolated), "--captions", str(isolated / "bad.json")])
    assert "neither a Karpathy" in str(exit_info.value.code)
