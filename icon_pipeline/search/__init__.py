"""Stage 7, search: the pgvector index, every retrieval channel, hybrid search, the service."""
