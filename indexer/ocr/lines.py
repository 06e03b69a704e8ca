"""A line of text read in a picture, as stored (JSON in the catalog) and shown (boxes drawn over the preview)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

Point = tuple[float, float]


@dataclass(frozen=True)
class TextLine:
    """One line: its text, the recogniser's confidence (0-1) and its box, four corners (clockwise from top left)
    as fractions of the upright image's width and height, so they fit any displayed size of it."""

    text: str
    score: float
    box: tuple[Point, Point, Point, Point]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "TextLine":
        box = tuple((float(x), float(y)) for x, y in data["box"])
        return cls(str(data["text"]), float(data["score"]), box)  # type: ignore[arg-type]


def joined(lines: list[TextLine]) -> str:
    """The full text, a line each, in reading order."""
    return "\n".join(line.text for line in lines)
