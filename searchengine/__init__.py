"""The upper floor of searchengine: everything that answers (Library API, queries, CLI)."""
