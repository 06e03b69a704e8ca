"""The answering half of `Library`: searches of every kind, "more like this", image records, duplicates."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Sequence

import numpy as np

from indexer.catalog.images import ImageRecord, embedding_of, metadata_for, moments_of, record, records
from indexer.catalog.matching import newest
from indexer.catalog.store import Catalog
from indexer.catalog.reads import has_texts
from indexer.errors import ImageNotFoundError, QueryError
from indexer.pipeline.scan import absolute
from searchengine.query.details import ImageDetails, camera_text, taken_at_text
from searchengine.query.filtered import filtered_search
from searchengine.query.filters import SearchFilters
from searchengine.query.ranking import rank
from searchengine.query.steps import step

if TYPE_CHECKING:
    from indexer.ocr.lines import TextLine
    from searchengine.library.host import LibraryHost as _Host
    from searchengine.query.words import WordQuery
    from searchengine.query.duplicates import DuplicateGroup
    from searchengine.query.expression import Term
else:
    _Host = object

# A search that has passed over this many vanished files stops looking further down the ranking (a whole
# drive unmounted would otherwise cost a stat of every file per query) and answers with what it found.
MISSING_LIMIT = 10_000


@dataclass
class SearchHit:
    """One result; `score` is None for a filter-only search (newest first). Metadata fields: None when unknown."""

    path: str
    score: float | None
    id: int
    taken_at: str | None = None
    width: int | None = None
    height: int | None = None
    camera: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    kind: str = "image"  # or "video": then the moment below, in seconds from the video's start
    start_s: float | None = None
    end_s: float | None = None
    frame_s: float | None = None  # the frame shown for the moment (its thumbnail), within [start_s, end_s)
    words: list[dict] | None = None  # when the query used words: the lines of its text that hold them (TextLine)


class LibrarySearch(_Host):
    """Mixed into `Library`, which provides the catalog, query encoder and index plumbing these methods use."""

    def search(self, text: str | None = None, image: str | None = None, limit: int = 20,
               exact: bool = False, *, terms: "Sequence[Term] | None" = None, min_score: float | None = None,
               cutoff: str | None = None, filters: SearchFilters | None = None, moments: bool = False,
               words: bool = True) -> list[SearchHit]:
        """By a text, an image file, or weighted `terms` (query arithmetic, see searchengine.query.expression), among
        the images passing `filters`; filters alone give the newest matching images (score None).

        `min_score` drops hits scoring below it; `cutoff="auto"` keeps only hits that stand out from the
        library's scores for this query (searchengine.query.cutoff). A video is one hit at its best moment;
        `moments=True` lists each of its matching moments as a hit of its own.

        A text query also looks at the text read in the pictures (OCR): those whose words match rise, by
        reciprocal rank fusion (searchengine.query.words); `words=False` leaves the CLIP order as it is. Scores
        stay CLIP's cosine similarities either way.
        """
        given = sum(q is not None for q in (text, image, terms))
        if given > 1 or (given == 0 and not filters):
            raise QueryError("give either a text, an image or query terms to search for (or filters alone)")
        if limit < 1:
            raise QueryError("--limit must be at least 1")
        if cutoff not in (None, "off", "auto"):
            raise QueryError(f"unknown cutoff {cutoff!r} (known: off, auto)")
        with step("library open"):
            catalog = self._readable_catalog()
            empty = catalog.image_count() == 0
        if empty:
            raise QueryError(f"library {self.folder} has no images yet; run `searchengine index FOLDER` first")
        if given == 0:
            return self.attach_words(self._newest(catalog, filters, limit, moments), filters)
        if (text is not None or terms is not None) and not exact:
            # A cold page cache: the text tower's weights are read while faiss is imported and the index opened.
            self._query_encoder().prefetch()
            with step("index load"):
                self._readable_index()
        if terms is not None:
            query = self.query_vector(terms)[None, :]
        else:
            query = self._query_encoder().texts([text]) if text is not None else \
                self._query_encoder().image_file(image, catalog)
        if text is not None:
            hits = self.search_text_vector(text, query[0], limit, exact, filters, moments, words)
        else:
            hits = self.attach_words(self.search_vector(query[0], limit, exact, filters, moments), filters)
        if min_score is None and cutoff in (None, "off"):
            return hits
        from searchengine.query.cutoff import cut

        return cut(hits, query[0], catalog, min_score, cutoff)

    def similar(self, image_id: int, limit: int = 20, offset: int = 0, exact: bool = False,
                filters: SearchFilters | None = None, moments: bool = False) -> list[SearchHit]:
        """Images like the indexed image (or video moment) `image_id`, from its stored embedding ("more like
        this"); a moment's own video is not among the results (with `moments`, its other moments are)."""
        catalog = self._readable_catalog()
        vector = embedding_of(catalog, image_id)
        if vector is None:
            raise ImageNotFoundError(f"no image with id {image_id} in the library")
        own = catalog.hit_rows([image_id]).get(image_id)
        skip = os.fsdecode(own[0]) if own and own[1] is not None else None
        hits = self.search_vector(vector, limit + offset + (1 if skip else 0), exact, filters, moments)
        if skip is not None and not moments:  # a moment's own video (its best moment is itself) is no news
            hits = [h for h in hits if h.path != skip]
        return hits[offset:offset + limit]

    def image_vector(self, data: bytes) -> np.ndarray:
        """The query vector of an image's bytes: the stored embedding for known content, else encoded."""
        return self._query_encoder().image_bytes(data, self._readable_catalog())[0]

    def text_vector(self, text: str) -> np.ndarray:
        return self._query_encoder().texts([text])[0]

    def text_vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        """The query vector of each text, each exactly as `text_vector` gives it alone, computed together (one
        pass over the text tower's weights for all: what a server does with queries that arrive at once)."""
        return [rows[0] for rows in self._query_encoder().text_groups([[t] for t in texts])]

    def stack_texts(self) -> bool:
        """Let `text_vectors` stack its texts into one product per weight (the same bits each, about half the cost
        each under load) where this machine's BLAS allows it; what a server calls once at start."""
        return self._query_encoder().stack_texts()

    def texts_on_numpy(self) -> bool:
        """Whether text queries are answered by the numpy export (checked), not torch, in this process so far."""
        return self._query_encoder().on_numpy

    def image(self, image_id: int) -> ImageRecord | None:
        """The catalog's record of one image (path, size, mtime, hash, indexed-at and its metadata)."""
        return record(self._readable_catalog(), image_id=image_id)

    def images(self, ids: list[int]) -> dict[int, ImageRecord]:
        """Records of several images at once, by id (ids no longer indexed are left out)."""
        return records(self._readable_catalog(), ids)

    def query_vector(self, terms: "Sequence[Term]", reuse_stored: bool = True) -> np.ndarray:
        """The unit query vector of weighted terms (indexed, unchanged image files use their stored embedding)."""
        from searchengine.query.expression import combine

        if not terms:
            raise QueryError("no query terms given")
        catalog = self._readable_catalog() if self.exists() else None
        vectors = self._query_encoder().terms(terms, catalog, reuse_stored)
        return combine(vectors, [t.weight for t in terms])

    def search_vector(self, vector: np.ndarray, limit: int = 20, exact: bool = False,
                      filters: SearchFilters | None = None, moments: bool = False) -> list[SearchHit]:
        """The best `limit` images and videos (among those passing `filters`) whose files still exist, best first;
        a video once, at its best moment, unless `moments`."""
        catalog = self._readable_catalog()
        dim = int(catalog.meta()["dim"])
        query = np.asarray(vector, dtype=np.float32).reshape(1, dim)
        index = None if exact or filters else self._readable_index()
        total = catalog.image_count()
        want, fetch = min(limit, total), min(limit, total)
        while True:
            if filters:
                scores, ids = filtered_search(catalog, self._readable_index, query[0], fetch, filters, dim, exact)
                scores, ids = scores[None, :], ids[None, :]
            else:
                with step("index search"):
                    scores, ids = rank(catalog, index, query, fetch, dim)
            with step("stat of hits"):
                hits, missing = _existing_hits(catalog, scores, ids, moments)
            if len(hits) >= want or fetch >= total or (filters and ids.shape[1] < fetch) or missing >= MISSING_LIMIT:
                break
            fetch = min(total, 2 * fetch + missing)
        self._notice_missing(missing)
        with step("metadata"):
            return _with_metadata(catalog, hits[:limit])

    def _newest(self, catalog: Catalog, filters: SearchFilters, limit: int, moments: bool = False) -> list[SearchHit]:
        """Filters alone: the newest matching images (by taken_at) whose files still exist."""
        where, params = filters.sql(catalog)
        fetch = limit
        while True:
            ids = np.array(newest(catalog, where, params, fetch), np.int64).reshape(1, -1)
            hits, missing = _existing_hits(catalog, np.zeros(ids.shape, np.float32), ids, moments)
            if len(hits) >= limit or ids.shape[1] < fetch or missing >= MISSING_LIMIT:
                break
            fetch = 2 * fetch + missing
        self._notice_missing(missing)
        return [replace(hit, score=None) for hit in _with_metadata(catalog, hits[:limit])]

    def attach_words(self, hits: list[SearchHit], filters: SearchFilters | None) -> list[SearchHit]:
        """With a words filter: each hit with the lines of its text that hold the words (`SearchHit.words`)."""
        if not filters or not filters.words or not hits:
            return hits
        catalog = self._readable_catalog()
        from indexer.catalog.texts import lines_for
        from searchengine.query.words import parse_words

        query = parse_words(filters.words)
        lines = lines_for(catalog, [h.id for h in hits])
        return [replace(h, words=[line.to_json() for line in query.matching(lines.get(h.id, []))]) for h in hits]

    def search_text_vector(self, text: str, vector: np.ndarray, limit: int = 20, exact: bool = False,
                           filters: SearchFilters | None = None, moments: bool = False,
                           words: bool = True) -> list[SearchHit]:
        """The answer to the text query `text` whose query vector is `vector` (`search(text=...)` less the
        encoding and the cutoff): CLIP's best, fused with the pictures whose text holds the query's words unless
        `words` is False or `filters` name the words (then CLIP's order among those, each hit with its lines)."""
        if words and not (filters and filters.words):
            with step("words"):
                fusing = has_texts(self._readable_catalog())
                if fusing:  # imported only here: most libraries hold no read text
                    from searchengine.query.words import FUSION_DEPTH, query_words

                    fusing = query_words(text) is not None
            if fusing:  # CLIP's first FUSION_DEPTH, whatever the limit: the order is then the same for any limit
                hits = self.search_vector(vector, max(limit, FUSION_DEPTH), exact, filters, moments)
                return self.fuse_words(text, vector, hits, limit, filters, moments)
        return self.attach_words(self.search_vector(vector, limit, exact, filters, moments), filters)

    def fuse_words(self, text: str, vector: np.ndarray, hits: list[SearchHit], limit: int,
                   filters: SearchFilters | None = None, moments: bool = False) -> list[SearchHit]:
        """The best `limit` of the CLIP `hits` of `text` (query `vector`; give at least CLIP's first FUSION_DEPTH)
        fused with the pictures whose text holds the query's words (reciprocal rank fusion; see
        searchengine.query.words); each of those carries the lines that matched. Without read text in the
        library: `hits` unchanged."""
        from searchengine.query.words import fused_order, query_words

        catalog = self._readable_catalog()
        with step("words"):
            query = query_words(text)
            if query is None or not has_texts(catalog):
                return hits[:limit]
            word_ids, pool = _word_matches(catalog, query, vector, hits, filters)
            if not word_ids:
                return hits[:limit]
            order = fused_order([h.id for h in hits], {i: h.score for i, h in pool.items()}, word_ids)
            chosen, videos = [], set()
            for image_id in order:
                hit = pool[image_id]
                if hit.kind == "video" and not moments:
                    if hit.path in videos:
                        continue
                    videos.add(hit.path)
                chosen.append(hit)
                if len(chosen) == limit:
                    break
            return _with_lines(catalog, query, chosen, set(word_ids))

    def _notice_missing(self, missing: int) -> None:
        if missing:
            count = f"at least {missing}" if missing >= MISSING_LIMIT else str(missing)
            self.notice(f"{count} result(s) skipped: their files no longer exist (a folder moved, or a drive "
                        "not mounted?); `searchengine index` on their folder will remove them")

    def show(self, path_or_id: str | int) -> ImageDetails:
        """One image's record, by path (as indexed) or by id."""
        catalog = self._readable_catalog()
        rec = None
        if isinstance(path_or_id, str):
            rec = record(catalog, path=absolute(path_or_id))
        if rec is None and str(path_or_id).strip().isdigit():
            rec = record(catalog, image_id=int(path_or_id))
        if rec is None:
            raise QueryError(f"{path_or_id} is not in library {self.folder} (neither an indexed path nor an image id)")
        segments = len(moments_of(catalog, rec.path)) if rec.kind == "video" else None
        details = ImageDetails.from_record(rec, segments)
        lines = self.text_lines(rec.id)
        if lines is not None:
            details.text, details.text_lines = "\n".join(line.text for line in lines), [l.to_json() for l in lines]
        return details

    def text_lines(self, image_id: int) -> "list[TextLine] | None":
        """The lines read in an image or a video moment's frame (index --ocr), in reading order; None: not read."""
        from indexer.catalog.texts import lines_for

        return lines_for(self._readable_catalog(), [image_id]).get(image_id)

    def moments(self, image_id: int) -> list[tuple[int, float, float, float]]:
        """(id, start_s, end_s, frame_s) of every moment of the video that `image_id` is a moment of."""
        catalog = self._readable_catalog()
        rec = record(catalog, image_id=image_id)
        if rec is None:
            raise ImageNotFoundError(f"no image with id {image_id} in the library")
        return moments_of(catalog, rec.path) if rec.kind == "video" else []

    def duplicates(self, threshold: float | None = None) -> list["DuplicateGroup"]:
        """Groups of identical files and near-identical images (cosine >= threshold), most images first."""
        from searchengine.query.duplicates import DEFAULT_THRESHOLD, find_duplicates

        catalog = self._readable_catalog()
        if catalog.image_count() == 0:
            return []
        index = self._readable_index()
        if index is None:  # a large library whose index file is unusable: a reader builds one for this run only
            from indexer.vectors.index import VectorIndex

            self.notice("building a vector index in memory for this run (`searchengine repair` saves one)")
            changes = catalog.changes(int(catalog.meta()["dim"]))
            index = VectorIndex.build(int(catalog.meta()["dim"]), changes.ids, changes.vectors, seq=changes.seq)
        return find_duplicates(catalog, index, DEFAULT_THRESHOLD if threshold is None else threshold)


def _word_matches(catalog: Catalog, query: "WordQuery", vector: np.ndarray, hits: list[SearchHit],
                  filters: SearchFilters | None) -> tuple[list[int], dict[int, SearchHit]]:
    """The words ranking (ids passing `filters`, whose files exist) and every hit by id: `hits` and the
    words' matches outside them, scored exactly by CLIP."""
    from indexer.catalog.matching import embeddings_for, which_match
    from searchengine.query.words import ranked_by_words

    word_ids = ranked_by_words(catalog, query)
    if filters and word_ids:
        where, params = filters.sql(catalog)
        passing = set(which_match(catalog, np.array(word_ids, np.int64), where, params).tolist())
        word_ids = [i for i in word_ids if i in passing]
    known = {h.id for h in hits}
    extra = np.array([i for i in word_ids if i not in known], np.int64)
    found, vectors = embeddings_for(catalog, extra, len(vector))
    scores = (vectors @ np.asarray(vector, np.float32)).astype(np.float32)
    more, _ = _existing_hits(catalog, scores[None, :], found[None, :], moments=True)
    pool = {h.id: h for h in hits} | {h.id: h for h in _with_metadata(catalog, more)}
    return [i for i in word_ids if i in pool], pool  # a vanished file is no answer


def _with_lines(catalog: Catalog, query: "WordQuery", hits: list[SearchHit], matched: set[int]) -> list[SearchHit]:
    """Each hit whose text matched, with the lines that hold the query's words."""
    from indexer.catalog.texts import lines_for

    lines = lines_for(catalog, [h.id for h in hits if h.id in matched])
    return [replace(h, words=[line.to_json() for line in query.matching(lines[h.id])]) if h.id in lines else h
            for h in hits]


def _with_metadata(catalog: Catalog, hits: list[SearchHit]) -> list[SearchHit]:
    """The hits with the metadata their JSON carries (taken_at, size, camera, place), read in one query."""
    metadata = metadata_for(catalog, [h.id for h in hits])
    out = []
    for hit in hits:
        meta = metadata.get(hit.id)
        out.append(hit if meta is None else replace(
            hit, taken_at=taken_at_text(meta), width=meta.width, height=meta.height, camera=camera_text(meta),
            latitude=meta.latitude, longitude=meta.longitude))
    return out


def _existing_hits(catalog: Catalog, scores: np.ndarray, ids: np.ndarray, moments: bool = False
                   ) -> tuple[list[SearchHit], int]:
    """Hits whose files exist now (a stat each), and how many were skipped because theirs are gone; a video's
    later (lower-ranked) moments are left out unless `moments`."""
    rows = catalog.hit_rows([int(i) for i in ids[0] if i >= 0])
    paths = {i: r[0] for i, r in rows.items()}
    present = {p: os.path.exists(p) for p in set(paths.values())}  # a video's moments share one stat
    absent = {i for i, p in paths.items() if not present[p]}
    if absent:  # imported from elsewhere without a local file: searchable by path all the same
        from indexer.catalog.exchange import imported_without_file

        absent -= imported_without_file(catalog, sorted(absent))
    hits, missing, videos = [], 0, set()
    for score, image_id in zip(scores[0], ids[0]):
        row = rows.get(int(image_id))
        if row is None:
            continue
        if int(image_id) in absent:
            missing += 1
            continue
        path, start_s, end_s, frame_s = row
        if start_s is None:
            hits.append(SearchHit(os.fsdecode(path), float(score), int(image_id)))
        elif moments or path not in videos:
            videos.add(path)
            hits.append(SearchHit(os.fsdecode(path), float(score), int(image_id), kind="video", start_s=start_s,
                                  end_s=end_s, frame_s=frame_s))
    return hits, missing

