"""Catalog meta written by an index run about its model: the fingerprint an older library lacks, and which
device and precision encoded the run's images (shown by the summary and `status`)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from indexer.model_identity import FINGERPRINT_KEY, PREPROCESS_KEY, preprocess_meta, weights_meta

if TYPE_CHECKING:
    from indexer.catalog import Catalog
    from indexer.model import ClipModel, ModelSpec
    from indexer.pipeline import IndexSummary

DEVICE_KEY = "device"
PRECISION_KEY = "compute_precision"


def record_fingerprint_if_missing(catalog: "Catalog", spec: "ModelSpec") -> None:
    """A library made before fingerprints were recorded gets its model's now (see indexer/model_identity.py)."""
    if FINGERPRINT_KEY not in catalog.meta():
        found = weights_meta(spec)
        if found:
            catalog.set_meta(found)


def record_run(catalog: "Catalog", summary: "IndexSummary", model: "ClipModel | None") -> None:
    """Fill the summary's device and precision and keep them in the catalog, when the run encoded images."""
    if not summary.encoded or model is None:
        return
    from indexer.device import device_label

    summary.device, summary.compute_precision = device_label(model.device), model.compute_precision
    meta = {DEVICE_KEY: summary.device, PRECISION_KEY: summary.compute_precision}
    if PREPROCESS_KEY not in catalog.meta():
        meta |= preprocess_meta(model.preprocess_cfg)
    catalog.set_meta(meta)
