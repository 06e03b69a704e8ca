"""Query arithmetic (rclip's syntax): parsing, file-or-text resolution, weights, and the combination math."""
from __future__ import annotations

import json

import numpy as np
import pytest

from helpers.cli import python, run
from indexer.errors import QueryError
from searchengine.query.expression import ID, IMAGE, TEXT, Term, combine, parse_expression, split_weight
from searchengine.library.api import Library

# `indexed` (every test format, indexed) is tests/conftest.py's.


def embedding(*args) -> np.ndarray:
    return np.array(json.loads(run("embed", *args).stdout), dtype=np.float64)


def test_parse_rclip_examples(isolated):
    (isolated / "racing car.jpg").write_bytes(b"x")
    terms = parse_expression(["./racing car.jpg", "-", "2:sports car", "+", "2:snow"])
    assert terms == [Term(IMAGE, "./racing car.jpg", 1.0), Term(TEXT, "sports car", -2.0), Term(TEXT, "snow", 2.0)]
    terms = parse_expression(["2:golden retriever", "+", "0.5:./racing car.jpg"], add=["horse"], subtract=[".5:fruit"])
    assert terms == [Term(TEXT, "golden retriever", 2.0), Term(IMAGE, "./racing car.jpg", 0.5),
                     Term(TEXT, "horse", 1.0), Term(TEXT, "fruit", -0.5)]
    assert parse_expression(["-", "cat"]) == [Term(TEXT, "cat", -1.0)]


def test_a_term_naming_a_file_is_an_image_unless_text_is_forced(isolated):
    (isolated / "sunset").write_bytes(b"x")
    assert parse_expression(["sunset"]) == [Term(IMAGE, "sunset")]
    assert parse_expression(["sunset"], force_text=True) == [Term(TEXT, "sunset")]
    assert parse_expression(["sunset at sea"]) == [Term(TEXT, "sunset at sea")]
    assert parse_expression(["./missing.jpg"], force_text=True) == [Term(TEXT, "./missing.jpg")]
    with pytest.raises(QueryError, match="no such image file"):
        parse_expression(["./missing.jpg"])
    with pytest.raises(QueryError, match="folder"):
        parse_expression(["./"])


@pytest.mark.parametrize("raw", ["0:snow", "0.0:snow", "1.2.3:snow", "2:", "-2:snow", "9" * 400 + ":snow"])
def test_bad_weights_are_errors(raw):
    with pytest.raises(QueryError, match="bad weight"):
        split_weight(raw)


def test_weights_and_texts_that_only_look_like_weights():
    assert split_weight("2:snow") == (2.0, "snow")
    assert split_weight(".5:a:b") == (0.5, "a:b")
    assert split_weight("1:10:30 meeting") == (1.0, "10:30 meeting")
    assert split_weight("2021-06-14: party") == (1.0, "2021-06-14: party")
    assert split_weight("snow") == (1.0, "snow")
    with pytest.raises(QueryError):
        Term(TEXT, "x", 0.0)


@pytest.mark.parametrize("items, message", [
    (["a", "b"], r"expected \+ or -"), (["a", "+"], "at the end"), (["a", "+", "-", "b"], "followed by")])
def test_syntax_errors(items, message):
    with pytest.raises(QueryError, match=message):
        parse_expression(items)


def test_combine_is_the_normalised_weighted_sum():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3, 8)) * np.array([[1.0], [3.0], [0.2]])  # unequal norms: each is normalised first
    weights = [1.0, -2.0, 0.5]
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = (np.array(weights)[:, None] * unit).sum(0)
    assert np.allclose(combine(vectors, weights), expected / np.linalg.norm(expected), atol=1e-6)
    with pytest.raises(QueryError, match="cancel out"):
        combine(np.stack([vectors[0], vectors[0]]), [1.0, -1.0])


def test_embed_prints_the_hand_computed_combination(indexed):
    a, c = str(indexed["a.jpg"]), str(indexed["c.png"])
    parts = [embedding(a), embedding("sports car"), embedding("snow"), embedding(c), embedding("--text", a)]
    weights = [1.0, -2.0, 2.0, 0.5, -1.5]
    combined = embedding(a, "-", "2:sports car", "+", "2:snow", "+", f"0.5:{c}", "--subtract", f"1.5:{a}", "--text")
    # --text forces every term to text, so recompute with the image terms as texts
    as_texts = [embedding("--text", a), parts[1], parts[2], embedding("--text", f"{c}"), parts[4]]
    expected = sum(w * v / np.linalg.norm(v) for w, v in zip(weights, as_texts))
    assert np.allclose(combined, expected / np.linalg.norm(expected), atol=1e-5)
    combined = embedding(a, "-", "2:sports car", "+", "2:snow", "+", f"0.5:{c}")
    expected = sum(w * v / np.linalg.norm(v) for w, v in zip(weights[:4], parts[:4]))
    assert np.allclose(combined, expected / np.linalg.norm(expected), atol=1e-5)
    assert not np.allclose(parts[0], parts[4], atol=1e-2)  # the file and its name as text really differ


def test_embed_json_lists_the_terms(indexed):
    out = json.loads(run("embed", "2:snow", "-", str(indexed["a.jpg"]), "--json").stdout)
    assert out[0]["terms"] == [{"text": "snow", "weight": 2.0}, {"image": str(indexed["a.jpg"]), "weight": -1.0}]
    assert abs(np.linalg.norm(out[0]["embedding"]) - 1) < 1e-5


def test_search_expression_equals_search_by_the_combined_vector(indexed):
    a = str(indexed["a.jpg"])
    hits = json.loads(run("search", a, "-", "2:sports car", "+", "snow", "--json", "--limit", "8").stdout)
    same = json.loads(run("search", a, "--subtract", "2:sports car", "--add", "snow", "--json", "--limit", "8").stdout)
    assert hits == same
    rclip_style = json.loads(run("search", a, "-s", "2:sports car", "-a", "snow", "--json", "--limit", "8").stdout)
    assert rclip_style == hits == json.loads(run("search", a, "--sub", "2:sports car", "+", "snow", "--json",
                                                 "--limit", "8").stdout)
    library = Library.open()
    vector = library.query_vector([Term(IMAGE, a), Term(TEXT, "sports car", -2), Term(TEXT, "snow")])
    expected = library.search_vector(vector, limit=8)
    assert [h["path"] for h in hits] == [h.path for h in expected]
    assert np.allclose([h["score"] for h in hits], [h.score for h in expected], atol=1e-5)
    # a lone existing file is an image query; --text makes it a text query
    assert json.loads(run("search", a, "--json", "--limit", "1").stdout)[0]["path"] == a
    as_text = json.loads(run("search", a, "--text", "--json", "--limit", "3").stdout)
    assert as_text == json.loads(run("search", "--text", "--json", "--limit", "3", "--", a).stdout)


def test_library_ids_are_terms(indexed):
    library = Library.open()
    first = library.search(image=str(indexed["a.jpg"]), limit=1)[0]
    by_id = library.search(terms=[Term(ID, first.id)], limit=3)
    assert by_id[0].path == first.path and by_id[0].score > 0.999
    mixed = library.search(terms=[Term(ID, first.id, 2.0), Term(TEXT, "a red car", -1.0)], limit=3)
    assert len(mixed) == 3
    with pytest.raises(QueryError, match="no image with id"):
        library.search(terms=[Term(ID, 10 ** 9)])
    with pytest.raises(QueryError):
        library.search(terms=[])
    data = indexed["a.jpg"].read_bytes()
    uploaded = library.query_vector([Term(IMAGE, data)])
    assert float(uploaded @ library.query_vector([Term(ID, first.id)])) > 0.999


@pytest.mark.parametrize("args, message", [
    (["search", "0:snow"], "bad weight"),
    (["search", "cat", "dog"], "expected + or -"),
    (["search", "cat", "+"], "at the end"),
    (["search", "./nothing-here.jpg"], "no such image file"),
    (["search", "cat", "-", "cat"], "cancel out"),
    (["embed", "snow", "-", "1..2:cat"], "bad weight"),
])
def test_query_errors_are_one_line(indexed, args, message):
    result = run(*args, ok=False)
    assert result.exit_code != 0 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_text_arithmetic_stays_off_torch_pil_and_sqlalchemy(indexed, isolated):
    """Nor the modules only an index run needs (catalog moves and videos), the texts' module of a library without
    read texts, or numpy.ma (np.unique imports it). The command runs through click's main, not `entry`, whose quick
    exit would end the process before the check."""
    code = (
        "import sys\n"
        "from searchengine.cli.main import main\n"
        "main(['search', '2:a dog', '-', 'a cat', '--cutoff', 'auto', '--json'], standalone_mode=False)\n"
        "bad = {'torch', 'open_clip', 'sqlalchemy', 'PIL', 'numpy.ma', 'indexer.catalog.moves',\n"
        "       'indexer.catalog.videos', 'indexer.catalog.texts'} & set(sys.modules)\n"
        "assert not bad, bad\n"
        "print('checked', file=sys.stderr)\n"
    )
    result = python(code, cwd=isolated, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("[") and result.stderr.strip().endswith("checked")
