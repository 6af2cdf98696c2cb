from __future__ import annotations

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
