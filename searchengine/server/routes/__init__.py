"""The app's routes by group: search, images (records and media), status, the static page."""
