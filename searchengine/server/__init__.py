"""`searchengine serve`: the local web app and JSON API."""
