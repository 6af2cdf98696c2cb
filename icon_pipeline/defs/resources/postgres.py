from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import psycopg
from dagster import ConfigurableResource

from icon_pipeline.core.database import DatabaseInfo, ensure_database


class PostgresResource(ConfigurableResource):
    """The pipeline's PostgreSQL (pgvector index, caption overrides).

    Uses ICON_PIPELINE_DATABASE_URL when set, else starts or reuses the embedded server.
    """

    def info(self) -> DatabaseInfo:
        return ensure_database()

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.info().libpq_url, **kwargs)

    @contextmanager
    def connections(self, count: int | None = None) -> Iterator[list[psycopg.Connection]]:
        """`count` autocommit connections (default: one per core), so that thousands of searches
        (exact ones scan every row) run in parallel, as the benchmark and the fusion fit do."""
        with ExitStack() as stack:
            yield [
                stack.enter_context(self.connect(autocommit=True))
                for _ in range(count or os.cpu_count() or 1)
            ]
