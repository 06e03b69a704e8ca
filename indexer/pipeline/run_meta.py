"""Catalog meta checked and written by an index run about its model: its weights' fingerprint (refused if it
changed, recorded if an older library lacks it), and which device and precision encoded the run's images."""
from __future__ import annotations

from typing import TYPE_CHECKING

from indexer.model.identity import PREPROCESS_KEY, preprocess_meta, verify_weights

if TYPE_CHECKING:
    from indexer.catalog.store import Catalog
    from indexer.model.clip import ClipModel, ModelSpec
    from indexer.pipeline.local import IndexSummary

DEVICE_KEY = "device"
PRECISION_KEY = "compute_precision"


def verify_weights_for_run(catalog: "Catalog", spec: "ModelSpec", library: str) -> None:
    """Before an index run writes anything: refuse other weights than the recorded ones; record the fingerprint
    of a library made before fingerprints (it trusts what the files hold now), or their new stat signature."""
    updates = verify_weights(catalog.meta(), spec, library)
    if updates:
        catalog.set_meta(updates)


def record_run(catalog: "Catalog", summary: "IndexSummary", model: "ClipModel | None") -> None:
    """Fill the summary's device and precision and keep them in the catalog, when the run encoded images."""
    if not summary.encoded or (model is None and summary.device is None):
        return
    if model is not None:
        from indexer.model.device import device_label

        summary.device, summary.compute_precision = device_label(model.device), model.compute_precision
    meta = {DEVICE_KEY: summary.device, PRECISION_KEY: summary.compute_precision}  # a Ray run's: its actors'
    if model is not None and PREPROCESS_KEY not in catalog.meta():
        meta |= preprocess_meta(model.preprocess_cfg)
    catalog.set_meta(meta)
