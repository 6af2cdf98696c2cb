"""What the search index holds, counted in the database itself: rows per model table, which
icons, and whether each table's HNSW index exists. Used by the index completeness check and by
`icon-pipeline db status`; reads only, never alters the schema."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from icon_pipeline.search.index import list_models


@dataclass(frozen=True)
class TableInventory:
    model_id: str
    table_name: str
    row_kind: str  # "icon": a row per icon; "text": a row per distinct text or drawing (captions, exemplars)
    registered_rows: int  # what the registry says
    rows: int | None  # counted; None when the table is missing
    hnsw_indexes: tuple[str, ...]  # names of the table's HNSW indexes
    dim: int

    @property
    def table_present(self) -> bool:
        return self.rows is not None


def _table_exists(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,), prepare=False).fetchone()
    return bool(row and row[0])


def hnsw_indexes(conn: psycopg.Connection, table: str) -> tuple[str, ...]:
    rows = conn.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s "
        "AND indexdef ILIKE '%%USING hnsw%%' ORDER BY indexname",
        (table,),
        prepare=False,
    ).fetchall()
    return tuple(r[0] for r in rows)


def index_inventory(conn: psycopg.Connection) -> list[TableInventory]:
    """One entry per registered model, rows counted (exactly) in its live table."""
    out = []
    for model in list_models(conn):
        with conn.transaction():
            present = _table_exists(conn, model.table_name)
            rows = None
            if present:
                rows = conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(model.table_name)), prepare=False
                ).fetchone()[0]
            indexes = hnsw_indexes(conn, model.table_name) if present else ()
        out.append(
            TableInventory(
                model.model_id, model.table_name, model.row_kind, model.rows, rows, indexes, model.dim
            )
        )
    return out


def stored_icon_ids(conn: psycopg.Connection, table: str, row_kind: str = "icon") -> set[str]:
    """The icons a model table holds (a text table: every icon any of its texts names)."""
    query = (
        sql.SQL("SELECT icon_id FROM {}")
        if row_kind == "icon"
        else sql.SQL("SELECT DISTINCT unnest(icon_ids) FROM {}")
    )
    with conn.transaction():
        return {r[0] for r in conn.execute(query.format(sql.Identifier(table)), prepare=False).fetchall()}


def dagster_runs(conn: psycopg.Connection) -> dict[str, int] | None:
    """Dagster runs per status in this database (its run storage shares the server), or None when
    Dagster has not created its tables here."""
    with conn.transaction():
        if not _table_exists(conn, "runs"):
            return None
        rows = conn.execute(
            "SELECT status, count(*) FROM runs GROUP BY status ORDER BY status", prepare=False
        ).fetchall()
    return {str(status): int(count) for status, count in rows}
