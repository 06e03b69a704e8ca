"""Query arithmetic, compatible with rclip's syntax: `"./racing car.jpg" - "2:sports car" + "2:snow"`.

A query is a list of weighted terms (text, image file or bytes, library image id). Its vector is the sum of
each term's unit embedding times its signed weight, normalised: `combine` is the one place that math lives.
Parsing follows rclip: `+` and `-` are separate command-line items between terms, and a term may start with
a positive number and a colon (`2:snow`, `0.5:./cat.jpg`) that weights it.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from indexer.errors import QueryError

TEXT, IMAGE, ID = "text", "image", "id"
KINDS = (TEXT, IMAGE, ID)
PLUS, MINUS = "+", "-"

# rclip's multiplier: 2, 2.5, .5 or 2. before the colon
_WEIGHT = re.compile(r"^(?P<weight>\d+(?:\.\d+)?|\.\d+|\d+\.):(?P<rest>.+)$", re.DOTALL)
# Looks like a weight but is not a valid one (0:, 1.2.3:, -2:, 2: with nothing after): an error, not text.
_BAD_WEIGHT = re.compile(r"^[-+]?[\d.]+:")
_PATH_PREFIXES = ("/", "./", "../", "~/", "~" + os.sep, "." + os.sep, ".." + os.sep)
_WINDOWS_ABSOLUTE = re.compile(r"^[A-Za-z]:[\\/]")
# Below this norm the weighted terms cancel out: there is no direction left to search in.
MIN_NORM = 1e-6


@dataclass(frozen=True)
class Term:
    """One query term. `value`: the text; an image file path or the image's bytes; a library image id.

    `weight` is signed: a negative weight subtracts the term (what `-` does on the command line).
    """

    kind: str
    value: str | bytes | int
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise QueryError(f"unknown query term kind {self.kind!r} (known: {', '.join(KINDS)})")
        if not isinstance(self.weight, (int, float)) or not math.isfinite(self.weight) or self.weight == 0:
            raise QueryError(f"bad weight {self.weight!r}: a weight is a finite non-zero number")

    def describe(self) -> dict:
        """JSON-friendly form: {"text": ...} / {"image": path} / {"id": n}, with the weight."""
        value = "<bytes>" if isinstance(self.value, bytes) else self.value
        if self.kind == IMAGE and isinstance(value, str):
            value = os.path.abspath(os.path.expanduser(value))
        return {self.kind: value, "weight": self.weight}


def split_weight(raw: str) -> tuple[float, str]:
    """`"2:snow"` -> (2.0, "snow"); no prefix -> (1.0, raw). A malformed or zero weight is a QueryError."""
    match = _WEIGHT.match(raw)
    if match:
        weight = float(match.group("weight"))
        if weight > 0 and math.isfinite(weight):
            return weight, match.group("rest")
    elif not _BAD_WEIGHT.match(raw):
        return 1.0, raw
    prefix = raw.split(":", 1)[0]
    raise QueryError(f"bad weight {prefix!r} in {raw!r}: a weight is a positive number before a colon, e.g. 2:snow "
                     "(write 1:TEXT for a text that itself starts with a number and a colon)")


def looks_like_path(value: str) -> bool:
    """Written as a path (rclip's rule: `/...`, `./...`, also `../`, `~/`, `file://`, `C:\\`)."""
    return value.startswith(_PATH_PREFIXES) or value.startswith("file://") or bool(_WINDOWS_ABSOLUTE.match(value))


def resolve_term(raw: str, sign: float = 1.0, force_text: bool = False,
                 is_file: Callable[[str], bool] = os.path.isfile) -> Term:
    """One command-line term: an existing file is an image (even if it could be a text), else a text."""
    weight, value = split_weight(raw)
    if force_text:
        return Term(TEXT, value, sign * weight)
    path = value[len("file://"):] if value.startswith("file://") else value
    expanded = os.path.expanduser(path)
    if is_file(expanded):
        return Term(IMAGE, expanded, sign * weight)
    from searchengine.query.moment import split_moment

    moment = split_moment(expanded)
    if moment is not None and is_file(moment.path):
        return Term(IMAGE, expanded, sign * weight)  # a video's moment: clip.mp4@12
    if looks_like_path(value):
        what = "is a folder, not an image file" if os.path.isdir(expanded) else "no such image file"
        raise QueryError(f"{what}: {path} (use --text to search for it as text)")
    return Term(TEXT, value, sign * weight)


def parse_expression(items: Sequence[str], add: Sequence[str] = (), subtract: Sequence[str] = (),
                     force_text: bool = False) -> list[Term]:
    """`["./car.jpg", "-", "2:sports car", "+", "2:snow"]` plus --add/--subtract terms -> terms in order."""
    terms: list[Term] = []
    operator: str | None = None  # an operator still waiting for its term
    for item in items:
        if item in (PLUS, MINUS):
            if operator is not None:
                raise QueryError(f"'{operator}' followed by '{item}': put a term between them")
            operator = item
            continue
        if terms and operator is None:
            raise QueryError(f"expected + or - between {terms[-1].value!r} and {item!r} "
                             "(quote a text that has spaces)")
        terms.append(resolve_term(item, -1.0 if operator == MINUS else 1.0, force_text))
        operator = None
    if operator is not None:
        raise QueryError(f"'{operator}' at the end of the query needs a term after it")
    terms += [resolve_term(t, 1.0, force_text) for t in add]
    terms += [resolve_term(t, -1.0, force_text) for t in subtract]
    return terms


def combine(vectors: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """The query vector: sum of weight * unit(vector) over the terms, normalised to unit length (float32)."""
    rows = np.asarray(vectors, dtype=np.float64)
    if rows.ndim != 2 or len(rows) != len(weights) or not len(rows):
        raise ValueError(f"need one vector per weight, got {rows.shape} for {len(weights)} weights")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if np.any(norms < MIN_NORM):
        raise QueryError("a query term has no embedding (a zero vector)")
    total = (np.asarray(weights, dtype=np.float64)[:, None] * (rows / norms)).sum(axis=0)
    norm = float(np.linalg.norm(total))
    if norm < MIN_NORM:
        raise QueryError("the query terms cancel out (their weighted sum is zero): nothing to search for")
    return (total / norm).astype(np.float32)
