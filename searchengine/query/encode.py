"""Turning a query (text, or an image file) into a vector, as cheaply as it can be done faithfully.

Text goes through the library's numpy export of its text tower when there is one (no torch import: a cold
query stays well under a second), else through open_clip. An indexed, unchanged image file reuses its stored
embedding; any other image is decoded and encoded exactly as `index` does.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from indexer.catalog.store import Catalog
from indexer.errors import QueryError
from indexer.pipeline.scan import absolute
from searchengine.query.steps import step

if TYPE_CHECKING:
    from indexer.model.clip import ClipModel
    from searchengine.query.expression import Term

ModelFn = Callable[[], "ClipModel"]


class QueryEncoder:
    """`text_tower_dir`: the library's numpy export, expected to be usable; None where torch is expected."""

    def __init__(self, text_tower_dir: Path | None, model: ModelFn, notice: Callable[[str], None] | None = None):
        self.text_tower_dir = text_tower_dir
        self.model = model
        self.notice = notice or (lambda message: None)
        self._numpy_text = None
        self._probed = False
        self.fallback_reason: str | None = None

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.text_groups([list(texts)])[0]

    def text_groups(self, groups: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Each group's embeddings, exactly as `texts(group)` alone would give them; on the numpy path the groups
        share each pass over the weights (a server encodes concurrent queries together this way)."""
        if self.text_tower_dir is not None and self.fallback_reason is None:
            rows = self._numpy_texts([list(g) for g in groups])
            if rows is not None:
                return rows
        return [self.model().encode_texts(list(group)) for group in groups]

    @property
    def stacking(self) -> bool:
        """Whether texts encoded together now share one product per weight (stack_texts)."""
        return self._numpy_text is not None and self._numpy_text[0].stacking

    @property
    def on_numpy(self) -> bool:
        """Whether the numpy export is loaded, checked and in use (no fallback to torch)."""
        return self._numpy_text is not None and self.fallback_reason is None

    def stack_texts(self) -> bool:
        """From now on, texts encoded together share one product per weight where that gives each its lone bits
        here (NumpyTextEncoder.enable_stacking: a server's concurrent queries then cost about half as much each).
        Loads and checks the export (a warm-up too); False on the torch path or where stacking is not exact."""
        if self.text_tower_dir is None or self.fallback_reason is not None:
            return False
        if self._numpy_texts([[]]) is None or self._numpy_text is None:
            return False
        return self._numpy_text[0].enable_stacking()

    def prefetch(self) -> None:
        """Start reading the export's weights from disk while the caller does other work."""
        if self.text_tower_dir is not None and self._numpy_text is None:
            from indexer.model.tower_manifest import prefetch

            prefetch(self.text_tower_dir)

    def _numpy_texts(self, groups: list[list[str]]) -> list[np.ndarray] | None:
        """The export's embeddings of each group, or None (announced once) if it cannot be trusted."""
        from indexer.model.tower_manifest import load_text_tower, probe_reason

        if self._numpy_text is None:
            with step("text tower load (manifest check)"):
                encoder, manifest, reason = load_text_tower(self.text_tower_dir)
            if encoder is None:
                self._fall_back(reason or "unusable")
                return None
            self._numpy_text = (encoder, manifest)
            self._probed = manifest.unchanged  # the very files the export verified: no probe needed
        encoder, manifest = self._numpy_text
        if self._probed:
            with step("text encoding"):
                return encoder.encode_separately(groups)
        # The export's probe text is checked once per process, before any answer: weights damaged since the
        # export are caught. It is evaluated beside the query but as its own batch, so the query gets exactly the
        # bits it gets alone (the same in a fresh CLI and in a server that has answered before), while each
        # weight is read from memory once for both.
        with step("text encoding (with the probe)"):
            *rows, probe = encoder.encode_separately([*groups, [manifest.probe_text]])
        reason = probe_reason(manifest, probe[0])
        if reason is not None:
            self._fall_back(reason)
            return None
        self._probed = True
        return rows

    def _fall_back(self, reason: str) -> None:
        self.fallback_reason = reason
        self.notice(f"text queries use torch (slower): the numpy text tower cannot be used: {reason}; "
                    "the next `searchengine index` run re-exports it")

    def image_file(self, path: str, catalog: Catalog | None) -> np.ndarray:
        """The stored embedding when `path` is indexed and unchanged, else a fresh encoding (`clip.mp4@12`: the
        video's frame at that second)."""
        from searchengine.query.moment import refuse_whole_video, split_moment

        moment = split_moment(path)
        if moment is not None:
            return self.video_moment(moment.path, moment.seconds, catalog)
        refuse_whole_video(path)
        raw = absolute(path)
        if catalog is not None:
            stored = catalog.image_by_path(raw)
            if stored is not None and _unchanged(raw, stored[1], stored[2]):
                return stored[0][None, :]
        return self.image_files([path])

    def video_moment(self, path: str, seconds: float, catalog: Catalog | None) -> np.ndarray:
        """The embedding of a video's frame at `seconds`: its stored segment's when indexed and unchanged."""
        from indexer.catalog.images import moments_of, record

        raw = absolute(path)
        rec = record(catalog, path=raw) if catalog is not None else None
        if rec is not None and rec.kind == "video" and _unchanged(raw, rec.size, rec.mtime_ns):
            spans = moments_of(catalog, raw)
            chosen = next((m for m in spans if m[1] <= seconds < m[2]), spans[-1])
            return catalog.vectors_for(np.array([chosen[0]]), int(catalog.meta()["dim"]))
        return self._decoded_moment(path, raw, seconds)

    def _decoded_moment(self, path: str, raw: bytes, seconds: float) -> np.ndarray:
        from indexer.images.decode import crop_for_model, normalise_crops
        from indexer.video.frames import sample_frames
        from indexer.video.probe import VideoDecodeError, open_video, probe

        model = self.model()
        try:
            with open_video(raw) as container:
                info = probe(container)
                if seconds > info.duration_s:
                    raise QueryError(f"{path} lasts {info.duration_s:.1f} s: no moment at {seconds:g} s")
                frame = next(iter(sample_frames(container, info, [seconds], slack=0.0)), None)
        except VideoDecodeError as exc:
            raise QueryError(f"cannot use video {path}: {exc}") from None
        if frame is None:
            raise QueryError(f"cannot use video {path}: no frame decoded at {seconds:g} s")
        crops = crop_for_model(frame.image, model.preprocess_cfg)[None]
        return model.encode_pixels(normalise_crops(crops, model.preprocess_cfg))

    def image_bytes(self, data: bytes, catalog: Catalog | None) -> np.ndarray:
        """An image given as bytes (an upload): the stored embedding when its content is indexed, else encoded."""
        import hashlib

        if catalog is not None:
            stored = catalog.reusable(hashlib.blake2b(data, digest_size=16).digest())
            if stored is not None:
                return np.asarray(stored.embedding, dtype=np.float32)[None, :]
        return self.image_data(data)

    def image_files(self, paths: Sequence[str]) -> np.ndarray:
        model = self.model()
        pixels = [_pixels(p, model) for p in paths]
        return model.encode_pixels(np.stack(pixels))

    def image_data(self, data: bytes) -> np.ndarray:
        """An image given as its bytes (an upload), decoded and encoded exactly as `index` does."""
        from indexer.images.decode import ImageDecodeError, decode_and_preprocess

        model = self.model()
        try:
            pixels = decode_and_preprocess(data, model.preprocess_cfg)
        except ImageDecodeError as exc:
            raise QueryError(f"cannot use the image given: {exc}") from None
        return model.encode_pixels(pixels[None])

    def terms(self, terms: Sequence["Term"], catalog: Catalog | None, reuse_stored: bool = True) -> np.ndarray:
        """One embedding per query term, in order (texts in one batch; ids and, if `reuse_stored`, indexed files
        from the catalog)."""
        from searchengine.query.expression import ID, IMAGE, TEXT

        out: list[np.ndarray | None] = [None] * len(terms)
        texts = [n for n, t in enumerate(terms) if t.kind == TEXT]
        if texts:
            for n, vector in zip(texts, self.texts([str(terms[n].value) for n in texts])):
                out[n] = vector
        for n, term in enumerate(terms):
            if term.kind == IMAGE:
                out[n] = (self.image_data(term.value) if isinstance(term.value, bytes) else
                          self.image_file(str(term.value), catalog if reuse_stored else None))[0]
            elif term.kind == ID:
                out[n] = _stored_by_id(term.value, catalog)
        return np.stack(out)


def _stored_by_id(image_id: object, catalog: Catalog | None) -> np.ndarray:
    if catalog is None:
        raise QueryError("a library image id is a query term only with a library")
    try:
        wanted = int(image_id)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise QueryError(f"bad image id {image_id!r}") from None
    if wanted not in catalog.paths_for([wanted]):
        raise QueryError(f"no image with id {wanted} in the library")
    return catalog.vectors_for(np.array([wanted]), int(catalog.meta()["dim"]))[0]


def _unchanged(path: bytes, size: int, mtime_ns: int) -> bool:
    try:
        info = os.stat(path)
    except OSError:
        return True  # gone since indexing: its stored embedding is all there is
    return (info.st_size, info.st_mtime_ns) == (size, mtime_ns)


def _pixels(path: str, model: "ClipModel") -> np.ndarray:
    from indexer.images.decode import ImageDecodeError, decode_and_preprocess
    from indexer.images.files import read_file

    try:
        data, _, _ = read_file(absolute(path))
    except (OSError, ValueError) as exc:
        raise QueryError(f"cannot read image {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return decode_and_preprocess(data, model.preprocess_cfg)
    except ImageDecodeError as exc:
        raise QueryError(f"cannot use image {path}: {exc}") from None
