"""Domain errors: each carries a one-line message meant for the user."""
from __future__ import annotations


class SearchEngineError(Exception):
    """Base of every error the CLI turns into a one-line message and a non-zero exit."""


class ModelError(SearchEngineError):
    """The model name or checkpoint cannot be used."""


class WeightsUnavailableError(ModelError):
    """Pretrained weights are neither cached nor downloadable."""


class ModelMismatchError(SearchEngineError):
    """The requested model differs from the one the library was built with."""


class CatalogError(SearchEngineError):
    """The catalog file cannot be opened safely (not SQLite, newer schema, read-only, disk full...)."""


class LibraryNotFoundError(SearchEngineError):
    """No library exists at the given location."""


class LibraryBusyError(SearchEngineError):
    """Another process holds the library's writer lock."""


class IndexFileError(SearchEngineError):
    """The derived vector index file is missing, truncated or corrupt (it is rebuilt from the catalog)."""


class QueryError(SearchEngineError):
    """The query cannot be answered (no text or image, unreadable query image, empty library...)."""


class ImageNotFoundError(SearchEngineError):
    """No indexed image has this id (or its file is gone or changed since indexing)."""


class DeviceError(SearchEngineError):
    """The asked-for torch device does not exist here (no CUDA, no MPS, no such index), or cannot hold one image."""


class PrecisionRefusedError(SearchEngineError):
    """A reduced precision (int8) was checked on the user's own photos and is not faithful enough to fp32."""


class OcrUnavailableError(SearchEngineError):
    """Text reading was asked for, but the OCR engine (the `ocr` extra) is not installed."""
