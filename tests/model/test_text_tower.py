"""Torch-free text path: tokenizer parity with open_clip, numpy text tower export and parity with torch."""
from __future__ import annotations

import copy
import json
import random

import numpy as np
import pytest

from helpers import REPO
from helpers.cli import python
from indexer.model import text_tower
from indexer.model.numpy_text import META_FILE, NumpyTextEncoder
from indexer.model.random_weights import TINY, TINY_MODEL_CFG, build_random_model
from indexer.model.text_tower import export_text_tower
from indexer.model.tokenizer import ClipTokenizer

TEXTS = [
    "", " ", "a photo of a dog", "A Photo Of A DOG!", "sunset, beach; waves... (2019)", "café crème brûlée",
    "naïve résumé", "日本語のテキスト", "中文字符", "한국어", "emoji 🐶🐱👍🏽 test", "ﬁﬂ ligatures",
    "ＦＵＬＬ width", "&amp; &lt;tag&gt; &quot;quoted&quot;", "&amp;amp;amp;", "<b>bold</b> &nbsp;x",
    "tabs\tand\nnewlines\r\n", "it's they're we've I'm you'll he'd", "<start_of_text> <end_of_text> inside",
    "\x1b[31mred\x1b[0m", "mojibake: Ã©tÃ©", "numbers 1234567890 3.14", "“curly” ‘quotes’ — dash…",
    "x" * 300, "word " * 120, "🐶" * 80, "Ωmega ∑um √x ∞", "  leading and trailing  ", "MiXeD CaSe WoRdS",
]


def _fuzz_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    alphabet = [chr(c) for c in range(32, 127)]
    alphabet += list("\t\n\xa0\u200béüß€–“”’…😀🐶日本語한Ωﬁ")
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 90))) for _ in range(count)]


@pytest.fixture(scope="module")
def reference_tokenizer():
    import open_clip

    return open_clip.get_tokenizer("ViT-B-32")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny open_clip model (indexer.model.random_weights, TINY), its tokenizer and a verified export."""
    import open_clip

    root = tmp_path_factory.mktemp("text-tower")
    name = "local-dir:" + str(build_random_model(root / "model", arch=TINY))
    model, _, _ = open_clip.create_model_and_transforms(name)
    tokenizer = open_clip.get_tokenizer(name)
    assert export_text_tower(model, tokenizer, root / "export")
    return model.eval(), tokenizer, root / "export"


def _torch_encode(model, tokenizer, texts: list[str]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model.encode_text(tokenizer(texts), normalize=True).numpy()


def test_tokenizer_matches_open_clip(reference_tokenizer):
    ours = ClipTokenizer()
    texts = TEXTS + _fuzz_texts(1500)
    np.testing.assert_array_equal(ours(texts), reference_tokenizer(texts).numpy())
    assert ours.encoder == reference_tokenizer.encoder


def test_an_exports_rank_table_tokenizes_as_open_clip(reference_tokenizer, tiny):
    """The export's hashed rank table (no 49k-entry dict to build per process) gives open_clip's tokens."""
    from indexer.model.tokenizer import RANKS_FILE, _RankTable

    export = tiny[2]
    assert (export / RANKS_FILE).exists()
    mine = NumpyTextEncoder.load(export).tokenizer
    assert isinstance(mine.bpe_ranks, _RankTable)
    texts = TEXTS + _fuzz_texts(400, seed=3)
    assert np.array_equal(mine(texts), reference_tokenizer(texts).numpy())


def test_a_rank_table_that_does_not_fit_its_merges_is_not_used(tiny, tmp_path):
    import shutil

    from indexer.model.tokenizer import RANKS_FILE

    shutil.copy(tiny[2] / "bpe_merges.txt", tmp_path / "bpe_merges.txt")
    np.save(tmp_path / RANKS_FILE, np.zeros(1000, np.int32))  # not a power of two: not a table of ours
    tokenizer = ClipTokenizer(tmp_path / "bpe_merges.txt", 77, tmp_path / RANKS_FILE)
    assert isinstance(tokenizer.bpe_ranks, dict)
    assert tokenizer.token_ids("a photo of a dog") == ClipTokenizer(tmp_path / "bpe_merges.txt", 77).token_ids(
        "a photo of a dog")


def test_ascii_pattern_splits_as_open_clip_does(reference_tokenizer):
    rng = random.Random(2)
    every_ascii = [chr(c) for c in range(128)] + ["'s", "'ll", "<end_of_text>", "&amp;", "   "]
    texts = ["".join(rng.choice(every_ascii) for _ in range(rng.randint(0, 60))) for _ in range(3000)]
    ours = ClipTokenizer()
    np.testing.assert_array_equal(ours(texts), reference_tokenizer(texts).numpy())
    code = ("import sys; from indexer.model.tokenizer import ClipTokenizer\n"
            "ClipTokenizer()('a dog running on a beach at sunset, 2019!')\n"
            "assert 'regex' not in sys.modules\n")
    python(code, cwd=REPO, check=True)


def test_plain_ascii_shortcut_is_what_ftfy_does():
    import ftfy

    rng = random.Random(1)
    printable = [chr(c) for c in range(32, 127) if chr(c) != "&"]
    for _ in range(3000):
        text = "".join(rng.choice(printable) for _ in range(rng.randint(0, 40)))
        assert ftfy.fix_text(text) == text


def test_truncation_keeps_eot_last():
    ids = ClipTokenizer().token_ids("word " * 200)
    assert len(ids) == 77 and ids[0] == 49406 and ids[-1] == 49407


def test_numpy_encoder_matches_torch(tiny):
    model, tokenizer, folder = tiny
    encoder = NumpyTextEncoder.load(folder)
    got = encoder.encode(TEXTS)
    expected = _torch_encode(model, tokenizer, TEXTS)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(got * expected, axis=1)) >= 0.9999


def test_truncated_sequence_is_exact(tiny):
    _, _, folder = tiny
    encoder = NumpyTextEncoder.load(folder)
    ids = [encoder.tokenizer.token_ids(text) for text in TEXTS]
    full = encoder.encode_ids(ids, truncate=False)
    np.testing.assert_allclose(encoder.encode_ids(ids), full, atol=2e-6)
    one_by_one = np.concatenate([encoder.encode_ids([row]) for row in ids])
    np.testing.assert_allclose(one_by_one, full, atol=2e-6)
    assert encoder.encode([]).shape == (0, encoder.dim)


def test_batches_encoded_together_are_bit_identical_to_each_alone(tiny):
    """A query and the export's probe share each weight's trip through memory, yet each gets exactly the bits
    it would get alone: a text scores the same in a fresh CLI (probe beside it) and in a warm server."""
    _, _, folder = tiny
    encoder = NumpyTextEncoder.load(folder)
    groups = [TEXTS[:3], ["a photo of a dog"], [], TEXTS[3:]]
    together = encoder.encode_separately(groups)
    for group, got in zip(groups, together):
        alone = encoder.encode(group)
        assert got.shape == alone.shape and np.array_equal(got, alone)


def test_a_text_gets_its_lone_bits_in_any_company(tiny):
    """Every text is padded to whole row blocks and computed on its own rows: a group's rows are each text's
    alone, whatever the others' lengths (1 to 7 row blocks here)."""
    _, _, folder = tiny
    encoder = NumpyTextEncoder.load(folder)
    alone = np.concatenate([encoder.encode([text]) for text in TEXTS])
    assert np.array_equal(encoder.encode(TEXTS), alone)
    assert np.array_equal(encoder.encode(TEXTS[::-1]), alone[::-1])


def test_stacked_texts_get_their_lone_bits_from_one_product_per_weight(tiny, monkeypatch):
    from indexer.model import numpy_text

    _, _, folder = tiny
    encoder = NumpyTextEncoder.load(folder)
    alone = np.concatenate([encoder.encode([text]) for text in TEXTS])
    assert encoder.enable_stacking()  # this machine's OpenBLAS computes a row by its place in 12-row panels
    products: list[int] = []
    real = numpy_text._matmuls
    monkeypatch.setattr(numpy_text, "_matmuls", lambda xs, w: products.append(len(xs)) or real(xs, w))
    together = encoder.encode(TEXTS)
    assert np.array_equal(together, alone)
    assert products == [1] * 4 * encoder.meta.layers  # every text in one product per weight


def test_stacking_is_refused_where_the_blas_gives_rows_other_bits_in_company(tiny, monkeypatch):
    """A BLAS whose result for a row depends on how many rows share the product: stacking would change a text's
    bits by its company, so the probe turns it down and each text keeps a product of its own."""
    from indexer.model import numpy_text

    _, _, folder = tiny
    encoder = NumpyTextEncoder.load(folder)
    real = numpy_text._matmuls

    def by_row_count(xs, w):
        return [out + np.float32(1e-7) * (len(x) // numpy_text.ROW_BLOCK) for out, x in zip(real(xs, w), xs)]

    monkeypatch.setattr(numpy_text, "_matmuls", by_row_count)
    alone = np.concatenate([encoder.encode([text]) for text in TEXTS])
    assert not encoder.enable_stacking()
    assert np.array_equal(encoder.encode(TEXTS), alone)


@pytest.mark.parametrize("variant", [
    {"quick_gelu": True, "text_cfg": {"ls_init_value": 0.5}},
    {"text_cfg": {"act_kwargs": {"approximate": "tanh"}, "proj_bias": True, "heads": 4}},
])
def test_export_variants_match_torch(variant, tmp_path, reference_tokenizer):
    import open_clip
    import torch

    cfg = copy.deepcopy(TINY_MODEL_CFG)
    cfg["text_cfg"].update(variant.get("text_cfg", {}))
    torch.manual_seed(3)
    model = open_clip.CLIP(**cfg, quick_gelu=variant.get("quick_gelu", False)).eval()
    assert export_text_tower(model, reference_tokenizer, tmp_path / "export")
    got = NumpyTextEncoder.load(tmp_path / "export").encode(TEXTS)
    assert np.min(np.sum(got * _torch_encode(model, reference_tokenizer, TEXTS), axis=1)) >= 0.9999


def test_load_returns_none_for_missing_or_incompatible(tiny, tmp_path):
    import shutil

    _, _, folder = tiny
    assert NumpyTextEncoder.load(tmp_path / "absent") is None
    copy_dir = tmp_path / "copy"
    shutil.copytree(folder, copy_dir)
    meta = json.loads((copy_dir / META_FILE).read_text())
    (copy_dir / META_FILE).write_text(json.dumps({**meta, "version": 999}))
    assert NumpyTextEncoder.load(copy_dir) is None
    (copy_dir / META_FILE).write_text(json.dumps(meta))
    (copy_dir / "fc_weight.npy").unlink()
    assert NumpyTextEncoder.load(copy_dir) is None


def test_export_refuses_unsupported_models(tiny, tmp_path, monkeypatch):
    import torch

    model, tokenizer, _ = tiny
    assert not export_text_tower(torch.nn.Linear(2, 2), tokenizer, tmp_path / "a")
    monkeypatch.setattr(model, "text_pool_type", "last")
    assert not export_text_tower(model, tokenizer, tmp_path / "b")
    monkeypatch.undo()
    monkeypatch.setattr(tokenizer, "context_length", 32)
    assert not export_text_tower(model, tokenizer, tmp_path / "c")
    assert not any(tmp_path.iterdir())


def test_failed_verification_leaves_no_export(tiny, tmp_path, monkeypatch):
    model, tokenizer, _ = tiny
    monkeypatch.setattr(text_tower, "verify_export", lambda *args: 0.5)
    assert not export_text_tower(model, tokenizer, tmp_path / "export")
    assert not any(tmp_path.iterdir())


def test_export_replaces_previous_export(tiny, tmp_path):
    model, tokenizer, _ = tiny
    dest = tmp_path / "export"
    assert export_text_tower(model, tokenizer, dest)
    assert export_text_tower(model, tokenizer, dest)
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
    assert NumpyTextEncoder.load(dest) is not None


def test_query_path_imports_neither_torch_nor_open_clip(tiny):
    _, _, folder = tiny
    code = (
        "import sys; from indexer.model.numpy_text import NumpyTextEncoder\n"
        f"assert NumpyTextEncoder.load({str(folder)!r}).encode(['café 🐶', 'a dog']).shape[0] == 2\n"
        "bad = {'torch', 'open_clip', 'sqlalchemy'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    python(code, cwd=REPO, check=True)


def test_a_cli_process_pins_blas_before_numpy_and_skips_the_per_call_limit(tiny):
    """The CLI pins BLAS to one thread before numpy loads; its queries then need no threadpoolctl. Where numpy
    came first (a library user's process) the per-call limit stays, and the embeddings are the same bits."""
    _, _, folder = tiny
    code = ("import sys, json\n"
            "{first}\n"
            "import numpy as np\n"
            "from indexer import cpu\n"
            "from indexer.model.numpy_text import NumpyTextEncoder\n"
            f"rows = NumpyTextEncoder.load({str(folder)!r}).encode(['a dog', 'a red car'])\n"
            "print(json.dumps([cpu.BLAS_PINNED, 'threadpoolctl' in sys.modules, rows.tobytes().hex()]))\n")
    runs = {}
    for name, first in (("pinned", "from indexer.cpu import pin_blas_to_one_thread; pin_blas_to_one_thread()"),
                        ("numpy first", "import numpy; from indexer.cpu import pin_blas_to_one_thread; "
                                        "pin_blas_to_one_thread()")):
        done = python(code.format(first=first), capture_output=True, text=True, check=True)
        runs[name] = json.loads(done.stdout)
    assert runs["pinned"][:2] == [True, False]
    assert runs["numpy first"][:2] == [False, True]
    assert runs["pinned"][2] == runs["numpy first"][2]
