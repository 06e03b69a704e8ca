"""The lower floor of searchengine: everything that builds a library (model, catalog, vector index, scan, pipeline)."""
