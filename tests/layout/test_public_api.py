"""The public Python API is importable from the package itself, and importing it costs nothing heavy."""
from __future__ import annotations

import subprocess
import sys

import searchengine


def test_public_names_come_from_the_package():
    from searchengine import Library, SearchFilters, Term, parse_expression
    from searchengine.library.api import Library as LibraryClass
    from searchengine.query.expression import Term as TermClass

    assert Library is LibraryClass and Term is TermClass
    assert callable(parse_expression) and SearchFilters.parse(after="2023").after is not None
    assert set(searchengine.__all__) <= set(dir(searchengine))


def test_an_unknown_name_is_an_attribute_error():
    try:
        searchengine.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("an unknown name was found")


def test_importing_the_package_loads_no_heavy_module():
    code = ("import sys, searchengine; heavy = {'torch', 'open_clip', 'sqlalchemy', 'fastapi', 'faiss', 'numpy'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_cli_pins_blas_before_anything_loads_numpy():
    code = "import sys, searchengine.cli.main, indexer.cpu as cpu; print(cpu.BLAS_PINNED)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"
