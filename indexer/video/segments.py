"""Cutting a video's samples into segments (its moments): a new segment at each picture cut or when the content
drifts away from what the segment shows so far. Pure numpy: the samples' signatures and embeddings are given.

Two tests, each doing what the other cannot:
* a pixel cut (is_cut): the colours of the picture changed between neighbouring samples. The signature is the
  picture's colour distribution per channel (cumulative histograms), which ignores where things are: a camera
  pan or people moving over one scene is not a cut, while a jump to another shot moves the colours at once.
  The mean absolute difference of two cumulative histograms is the earth mover's distance between the colour
  distributions (as a share of the 0-255 range): a uniform shift of every pixel by d levels gives d / 256,
  so small exposure drifts stay small, unlike plain histogram bins that flip whole areas at a bin edge;
* an embedding drift: a sample whose embedding is not close to the segment's mean so far (MERGE_COSINE) starts
  a new segment, which catches a slow change (a pan to another subject, a fade) and a cut between shots of
  alike colours, neither of which the histogram sees.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

SIGNATURE_SIDE = 32  # pixels the picture is shrunk to (box filter) before counting colours: sensor noise averages out
LEVELS = 64  # histogram bins per channel
# Earth mover's distance between neighbouring samples' colours above which they are a cut. Measured on generated
# scenes (tests/helpers/videos.py, H.264 160x120, samples 2 s apart): within one scene, drifting stripes and
# per-frame noise <= 0.025, pans at 40 px/s (half the frame's width between samples) <= 0.10, a pan at 120 px/s
# (a wholly new view each sample) <= 0.20; between random distinct scenes the median is 0.22 (some pairs of alike
# colours are as low as 0.06: the embedding test splits those). 0.15 keeps ordinary pans whole.
CUT_THRESHOLD = 0.15
# Cosine between a sample's embedding and its segment's mean, below which it starts a new segment. Not measured
# here (tests run a random-weight model, no real weights offline): with CLIP ViT-B/32, frames of one shot
# (people moving, small camera motion) commonly stay above ~0.93 to their mean, a new subject falls below ~0.9;
# 0.92 keeps a shot whole and splits a change of subject. To be checked on real footage with real weights.
MERGE_COSINE = 0.92


@dataclass
class Segment:
    """A moment of a video: [start_s, end_s), shown by the sample at index `sample`, taken at `frame_s`."""

    start_s: float
    end_s: float
    frame_s: float
    sample: int


def pixel_signature(image: Image.Image) -> np.ndarray:
    """The picture's colours: per channel (R, G, B) the cumulative histogram (64 bins, ending at 1) of a 32x32
    shrink, concatenated (float32, 192 values)."""
    small = np.asarray(image.convert("RGB").resize((SIGNATURE_SIDE, SIGNATURE_SIDE), Image.Resampling.BOX))
    bins = (small.astype(np.uint16) * LEVELS) // 256
    cumulative = [np.cumsum(np.bincount(bins[..., c].ravel(), minlength=LEVELS)) for c in range(3)]
    return (np.concatenate(cumulative) / float(SIGNATURE_SIDE * SIGNATURE_SIDE)).astype(np.float32)


def signature_distance(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Mean absolute difference of two signatures: the earth mover's distance between their colours, 0 to 1."""
    return float(np.abs(np.asarray(sig_a, np.float32) - np.asarray(sig_b, np.float32)).mean())


def is_cut(sig_a: np.ndarray, sig_b: np.ndarray) -> bool:
    """Whether the picture changed between two samples (a shot boundary), not just moved."""
    return signature_distance(sig_a, sig_b) > CUT_THRESHOLD


def cut_segments(times: list[float], embeddings: np.ndarray, signatures: list[np.ndarray], duration_s: float,
                 merge_cosine: float = MERGE_COSINE) -> list[Segment]:
    """Segments in time order covering [0, duration_s] from samples at `times` (increasing) with L2-normalised
    `embeddings` (n, d) and pixel `signatures`.

    Consecutive samples stay in one segment while no cut lies between neighbours and each one's cosine to the
    segment's running mean embedding (normalised) is at least `merge_cosine`. A segment starts at its own first
    sample (the first at 0.0): the cut lies between the two samples, and a player started at `start_s` shows the
    new shot at once, never the end of the last one. Each segment is shown by its most representative
    frame: the sample closest to its mean embedding, so the thumbnail shows exactly what was embedded.
    """
    vectors = np.asarray(embeddings, dtype=np.float32)
    if len(times) == 0:
        return []
    if not len(times) == len(vectors) == len(signatures):
        raise ValueError(f"{len(times)} times, {len(vectors)} embeddings, {len(signatures)} signatures")
    groups = _groups(vectors, signatures, merge_cosine)
    segments = []
    for number, (first, last) in enumerate(groups):
        start = 0.0 if number == 0 else times[first]
        end = duration_s if number == len(groups) - 1 else times[last + 1]
        best = first + _most_representative(vectors[first:last + 1])
        segments.append(Segment(start, max(end, start), times[best], best))
    return segments


def _groups(vectors: np.ndarray, signatures: list[np.ndarray], merge_cosine: float) -> list[tuple[int, int]]:
    """(first, last) sample index of each segment."""
    groups, first = [], 0
    total = vectors[0].astype(np.float64)
    for i in range(1, len(vectors)):
        mean = total / (np.linalg.norm(total) or 1.0)
        if is_cut(signatures[i - 1], signatures[i]) or float(vectors[i] @ mean) < merge_cosine:
            groups.append((first, i - 1))
            first, total = i, vectors[i].astype(np.float64)
        else:
            total = total + vectors[i]
    groups.append((first, len(vectors) - 1))
    return groups


def _most_representative(vectors: np.ndarray) -> int:
    mean = vectors.astype(np.float64).sum(axis=0)
    return int(np.argmax(vectors @ (mean / (np.linalg.norm(mean) or 1.0))))
