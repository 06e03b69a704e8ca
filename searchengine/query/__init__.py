"""What turns a question into ranked hits: query vectors (encode), term expressions and arithmetic,
filters and the filtered search, ranking and exact search, the relevance cutoff, duplicates, hit details.

May import: `indexer`. Never `library`, `cli` or `server`.
"""
