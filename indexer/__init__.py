"""The lower floor: everything that builds a library. Nothing here imports `searchengine`.

Subpackages, each importing only those listed below it (checked by tests/test_layout.py):

    index_run          one index run, start to finish (the recipe `Library.index` calls)
    ray/               Ray beside the local pipeline: session, watchdog, the distributed run
    exchange/          export and import of embeddings (Parquet, clip-retrieval layout)
    pipeline/          scan, plan, prepare (decode workers), the local pipeline, its commits and run meta
    vectors/           the FAISS index kinds, the index file, the store that keeps it in step with the catalog
    catalog/           the SQLite catalog: schema and migrations, reads, writes, bulk paths, metadata, moves
    model/             open_clip loading and identity, devices, image encoder, precision, the text tower
    images/            decoding, photo metadata, thumbnails
    errors, durable, cpu, lock   small shared helpers at the bottom
"""
