"""Image embeddings per model in PostgreSQL + pgvector: bulk load, HNSW index, atomic swap, search.

Layout: one table per model (`emb_<slug>_<hash8>`: a safe identifier whatever the model id is),
registered in `icon_index_models`. A write is always a full replace of that model's rows:

1. stage: a NEW table is created, filled with binary COPY, and its HNSW index (cosine) is built
   after the load (much faster than inserting into an indexed table); committed on its own, so
   the long part holds no lock that readers of the live table wait on. The rows keep float32
   `vector`s (exact search and scores use them); the HNSW index is over their `halfvec` cast:
   half the size, built faster, and about twice as fast to search at the same recall
   (benchmarks/index.py);
2. swap: one short transaction drops the live table, renames the staged one to the live name and
   updates the registry. A search sees the old rows or the new ones, never a half-built index.

A model's table holds one row per icon, or (`texts` given: the caption channel) one row per
distinct text (a name, tag or caption) with the icons that carry it; a search over such a table
scores each icon by its best-matching text. Distinct texts, not one row per icon and text: a tag
such as "arrow" on 300 icons would otherwise put 300 identical vectors in the HNSW graph, which
cut its recall@10 against exact search to 0.88.

Re-running is idempotent (same rows in, same table out). A model whose dimension changes is
replaced whole, with a warning in the log: one table never mixes dimensions, and a query vector
of the wrong dimension is refused with a clear error before it reaches SQL.

Exact search (sequential scan) is always available beside HNSW so that index error and model
error can be told apart (on 768-d vectors HNSW recall@10 can be far below 1).
psycopg 3 prepares a statement after 5 executions and would
reuse a plan made under other planner settings: every search runs with prepare=False. HNSW's
`ef_search` caps how many rows it returns and its recall: it is set per query, never below k.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

log = logging.getLogger(__name__)

REGISTRY_TABLE = "icon_index_models"
FUSION_TABLE = "icon_search_fusion"  # hybrid search's fitted settings, one row
# pgvector's HNSW indexes `halfvec` of at most 4,000 dimensions (`vector`: 2,000).
MAX_HNSW_DIM = 4000
# What the HNSW index is built over: tables written before halfvec indexes say "vector".
HNSW_PRECISION = "halfvec"
# Vectors up to this width are stored inline (a float32 row must fit an 8 KB page).
PLAIN_STORAGE_MAX_DIM = 1536
# pgvector accepts hnsw.ef_search in [1, 1000].
MAX_EF_SEARCH = 1000
# Text-row tables (the caption channel): nearest texts fetched per icon wanted (a text names one
# icon or many; 4 per icon keeps k icons for k up to 250).
TEXT_ROWS_PER_ICON = 4
# An icon of a text-row table scores by all its texts near the query, a soft maximum of their
# cosines: tau * ln(sum(exp(cosine / tau))). Its best text counts most, and an icon with several
# texts near the query ("hide", "layer off", "invisible layer") ranks above one that shares a
# single text with it (a tag many icons carry): the plain maximum leaves those tied. Chosen on the
# frozen eval set's queries (captions channel alone, R@1 words / sentences): max 0.880 / 0.560,
# tau 0.05 0.892 / 0.590, 0.1 0.909 / 0.600, 0.2 0.883 / 0.562. Cosines lie in [-1, 1], so
# exp(cosine / tau) stays within double precision for any tau above 0.0014.
TEXT_SOFTMAX_TEMPERATURE = 0.1
DEFAULT_EF_SEARCH = 40
NORM_TOLERANCE = 1e-3
# A writer waiting longer than this for readers of the live table gives up instead of queuing
# every later reader behind its exclusive lock.
SWAP_LOCK_TIMEOUT = "30s"
# An HNSW build that outgrows maintenance_work_mem slows down by an order of magnitude.
BUILD_MAINTENANCE_WORK_MEM = "1GB"


class EmbeddingIndexError(RuntimeError):
    """A vector index that cannot be written or searched; the message says which model and why."""


class UnknownModelError(EmbeddingIndexError):
    """No embeddings are stored for the model; the message lists the models that have some."""


class DimensionMismatchError(EmbeddingIndexError):
    """A query vector whose dimension differs from the model's stored embeddings."""


@dataclass(frozen=True)
class ModelIndex:
    """One model's live table, as registered."""

    model_id: str
    table_name: str
    dim: int
    rows: int
    hnsw_m: int
    ef_construction: int
    hnsw_precision: str = "vector"  # "halfvec": the index is over embedding::halfvec(dim)
    # "icon": a row per icon; "text": a row per distinct text (or exemplar drawing), with its icons
    row_kind: str = "icon"
    version: str = ""  # when the live table was written (the registry's updated_at)


@dataclass(frozen=True)
class IndexStats:
    """What a write did, for asset metadata."""

    model_id: str
    table_name: str
    dim: int
    rows: int
    replaced_rows: int  # rows of the table it replaced (0 on the first write)
    replaced_dim: int | None  # dimension of the replaced table, if any
    copy_seconds: float
    index_seconds: float
    swap_seconds: float
    hnsw_m: int
    ef_construction: int

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.copy_seconds if self.copy_seconds > 0 else math.inf


@dataclass(frozen=True)
class VectorHit:
    icon_id: str
    group_id: str
    score: float  # cosine similarity, in [-1, 1]


def table_name_for(model_id: str) -> str:
    """A safe, stable identifier for a model id: `emb_<slug>_<hash8>`, at most 50 characters.

    The slug keeps it readable in psql; the hash keeps two ids that slug alike apart. Staging
    suffixes and index names stay under PostgreSQL's 63-byte identifier limit.
    """
    if not model_id or not model_id.strip():
        raise ValueError("model_id must be a non-empty string")
    slug = re.sub(r"[^a-z0-9]+", "_", model_id.lower()).strip("_")[:32] or "model"
    digest = hashlib.sha256(model_id.encode()).hexdigest()[:8]
    return f"emb_{slug}_{digest}"


def _staging_name(table: str) -> str:
    return f"{table}__new"


def _lock_key(model_id: str) -> int:
    # A signed 64-bit advisory lock key per model: two writers of one model queue up.
    return int.from_bytes(hashlib.sha256(b"icon_index:" + model_id.encode()).digest()[:8], "big", signed=True)


_REGISTRY_LOCK_KEY = _lock_key("\x00registry")


def ensure_schema(conn: psycopg.Connection) -> None:
    """Create the pgvector extension and the registry table if missing, and register the type."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_REGISTRY_LOCK_KEY,))
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(
            sql.SQL(
                """CREATE TABLE IF NOT EXISTS {} (
                    model_id text PRIMARY KEY,
                    table_name text NOT NULL UNIQUE,
                    dim integer NOT NULL,
                    rows bigint NOT NULL,
                    hnsw_m integer NOT NULL,
                    ef_construction integer NOT NULL,
                    embedder jsonb NOT NULL DEFAULT '{{}}'::jsonb,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    updated_at timestamptz NOT NULL DEFAULT now()
                )"""
            ).format(sql.Identifier(REGISTRY_TABLE))
        )
        # Registries from before halfvec indexes: their tables are indexed over `vector`.
        conn.execute(
            sql.SQL(
                "ALTER TABLE {} ADD COLUMN IF NOT EXISTS hnsw_precision text NOT NULL DEFAULT 'vector'"
            ).format(sql.Identifier(REGISTRY_TABLE))
        )
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS row_kind text NOT NULL DEFAULT 'icon'").format(
                sql.Identifier(REGISTRY_TABLE)
            )
        )
        register_vector(conn)


def _registry_exists(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (REGISTRY_TABLE,), prepare=False).fetchone()
    return bool(row and row[0])


def list_models(conn: psycopg.Connection) -> list[ModelIndex]:
    """Every model with stored embeddings, by model id (a connection that was idle stays idle)."""
    return list(read_index_snapshot(conn).models)


def get_model_index(conn: psycopg.Connection, model_id: str) -> ModelIndex:
    """The registered table of `model_id`; UnknownModelError (listing what exists) if none."""
    return read_index_snapshot(conn).model(model_id)


def _validate_rows(
    model_id: str,
    icon_ids: Sequence[str],
    group_ids: Sequence[str],
    embeddings: np.ndarray,
    texts: Sequence[str] | None = None,
) -> np.ndarray:
    matrix = np.asarray(embeddings)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise EmbeddingIndexError(
            f"model {model_id!r}: embeddings must be a non-empty (n, d) matrix, got shape {matrix.shape}"
        )
    n, dim = matrix.shape
    if len(icon_ids) != n or len(group_ids) != n:
        raise EmbeddingIndexError(
            f"model {model_id!r}: {n} embeddings but {len(icon_ids)} icon ids and {len(group_ids)} group ids"
        )
    if dim > MAX_HNSW_DIM:
        raise EmbeddingIndexError(
            f"model {model_id!r}: dimension {dim} exceeds pgvector's HNSW limit of {MAX_HNSW_DIM}"
        )
    keys = list(icon_ids) if texts is None else list(zip(icon_ids, texts, strict=True))
    if len(set(keys)) != n:
        duplicate = next(i for i, count in Counter(keys).items() if count > 1)
        what = f"icon id {duplicate!r}" if texts is None else f"icon id and text {duplicate!r}"
        raise EmbeddingIndexError(f"model {model_id!r}: {what} appears more than once")
    matrix = matrix.astype(np.float32, copy=False)
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        bad = icon_ids[int(np.argmin(finite))]
        raise EmbeddingIndexError(f"model {model_id!r}: embedding of icon {bad!r} has NaN or infinite values")
    norms = np.linalg.norm(matrix, axis=1)
    off = np.abs(norms - 1.0) > NORM_TOLERANCE
    if off.any():
        bad_row = int(np.argmax(off))
        raise EmbeddingIndexError(
            f"model {model_id!r}: embeddings must be L2-normalised; icon {icon_ids[bad_row]!r} has norm "
            f"{norms[bad_row]:.4f}"
        )
    return np.ascontiguousarray(matrix)


def _rows_per_text(
    icon_ids: Sequence[str], group_ids: Sequence[str], matrix: np.ndarray, texts: Sequence[str]
) -> list[tuple[str, list[str], list[str], np.ndarray]]:
    """(text, its icons, their groups, the text's vector): one row per distinct text."""
    by_text: dict[str, tuple[list[str], list[str], np.ndarray]] = {}
    for icon_id, group_id, vector, text in zip(icon_ids, group_ids, matrix, texts, strict=True):
        entry = by_text.setdefault(str(text), ([], [], vector))
        entry[0].append(str(icon_id))
        entry[1].append(str(group_id))
    return [(text, icons, groups, vector) for text, (icons, groups, vector) in by_text.items()]


def _stage(
    conn: psycopg.Connection,
    staging: str,
    matrix: np.ndarray,
    icon_ids: Sequence[str],
    group_ids: Sequence[str],
    texts: Sequence[str] | None,
) -> tuple[int, float]:
    """Phase 1a: the rows COPYed into a fresh staging table (one left by a crashed writer is dropped
    first); the table's row count and the seconds the COPY took."""
    dim = matrix.shape[1]
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(staging)))
    if texts is None:
        columns = sql.SQL("icon_id text PRIMARY KEY, group_id text NOT NULL, embedding vector({})")
    else:
        columns = sql.SQL(
            "text text PRIMARY KEY, icon_ids text[] NOT NULL, group_ids text[] NOT NULL, "
            "embedding vector({}) NOT NULL"
        )
    conn.execute(
        sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(staging), columns.format(sql.Literal(dim)))
    )
    if dim <= PLAIN_STORAGE_MAX_DIM:
        # Vectors over ~2 KB (500 dimensions) are otherwise TOASTed: exact search then
        # detoasts every row, 10x slower (640 dimensions: 40 ms a query against 4 ms).
        conn.execute(
            sql.SQL("ALTER TABLE {} ALTER COLUMN embedding SET STORAGE PLAIN").format(sql.Identifier(staging))
        )
    started = time.perf_counter()
    if texts is None:
        names, types = ["icon_id", "group_id", "embedding"], ["text", "text", "vector"]
        records = [(str(i), str(g), v) for i, g, v in zip(icon_ids, group_ids, matrix, strict=True)]
    else:
        names = ["text", "icon_ids", "group_ids", "embedding"]
        types = ["text", "text[]", "text[]", "vector"]
        records = _rows_per_text(icon_ids, group_ids, matrix, texts)
    with (
        conn.cursor() as cur,
        cur.copy(
            sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT BINARY)").format(
                sql.Identifier(staging), sql.SQL(", ").join(map(sql.Identifier, names))
            )
        ) as copy,
    ):
        copy.set_types(types)
        for values in records:
            copy.write_row(values)
    # The table's rows (a text table has fewer than the rows given).
    return len(records), time.perf_counter() - started


def _build_hnsw(conn: psycopg.Connection, staging: str, dim: int, hnsw_m: int, ef_construction: int) -> float:
    """Phase 1b: the staging table's HNSW index (cosine, over halfvec) and statistics; its seconds."""
    started = time.perf_counter()
    conn.execute(
        sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(BUILD_MAINTENANCE_WORK_MEM))
    )
    conn.execute(
        sql.SQL(
            "CREATE INDEX {} ON {} USING hnsw (({}) halfvec_cosine_ops) WITH (m = {}, ef_construction = {})"
        ).format(
            sql.Identifier(f"{staging}_hnsw"),
            sql.Identifier(staging),
            _as_halfvec(sql.Identifier("embedding"), dim),
            sql.Literal(hnsw_m),
            sql.Literal(ef_construction),
        )
    )
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(staging)))
    return time.perf_counter() - started


def _swap_in(
    conn: psycopg.Connection,
    model_id: str,
    table: str,
    staging: str,
    registry_row: tuple[int, int, int, int, str, str, str],
) -> tuple[int | None, int]:
    """Phase 2: the staging table renamed over the live one and registered, in the caller's short
    transaction; the replaced table's (dim, rows), (None, 0) for a first write.
    `registry_row`: dim, rows, hnsw_m, ef_construction, embedder JSON, hnsw precision, row kind."""
    dim, n, hnsw_m, ef_construction, info_json, precision, row_kind = registry_row
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(SWAP_LOCK_TIMEOUT)))
    previous = conn.execute(
        sql.SQL("SELECT dim, rows, table_name FROM {} WHERE model_id = %s FOR UPDATE").format(
            sql.Identifier(REGISTRY_TABLE)
        ),
        (model_id,),
    ).fetchone()
    replaced_dim, replaced_rows = (previous[0], previous[1]) if previous else (None, 0)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
    conn.execute(
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(staging), sql.Identifier(table))
    )
    conn.execute(
        sql.SQL("ALTER INDEX {} RENAME TO {}").format(
            sql.Identifier(f"{staging}_hnsw"), sql.Identifier(f"{table}_hnsw")
        )
    )
    conn.execute(
        sql.SQL("ALTER INDEX {} RENAME TO {}").format(
            sql.Identifier(f"{staging}_pkey"), sql.Identifier(f"{table}_pkey")
        )
    )
    conn.execute(
        sql.SQL(
            """INSERT INTO {} (model_id, table_name, dim, rows, hnsw_m, ef_construction, embedder,
                hnsw_precision, row_kind)
            VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s)
            ON CONFLICT (model_id) DO UPDATE SET table_name = EXCLUDED.table_name, dim = EXCLUDED.dim,
                rows = EXCLUDED.rows, hnsw_m = EXCLUDED.hnsw_m,
                ef_construction = EXCLUDED.ef_construction, embedder = EXCLUDED.embedder,
                hnsw_precision = EXCLUDED.hnsw_precision, row_kind = EXCLUDED.row_kind,
                updated_at = now()"""
        ).format(sql.Identifier(REGISTRY_TABLE)),
        (model_id, table, dim, n, hnsw_m, ef_construction, info_json, precision, row_kind),
    )
    return replaced_dim, replaced_rows


def write_embeddings(
    conn: psycopg.Connection,
    model_id: str,
    icon_ids: Sequence[str],
    group_ids: Sequence[str],
    embeddings: np.ndarray,
    *,
    hnsw_m: int = 16,
    ef_construction: int = 64,
    embedder_info: Mapping[str, Any] | None = None,
    texts: Sequence[str] | None = None,
) -> IndexStats:
    """Replace `model_id`'s embeddings: COPY into a new table, build HNSW, swap it in atomically.

    `texts` (one per row, a row per icon and text; for exemplars, the drawing's path): stored as one
    row per distinct text with the icons carrying it (equal texts have equal embeddings), searched
    per icon by a soft maximum over its texts (TEXT_SOFTMAX_TEMPERATURE).
    `conn` must not be inside a transaction (each phase commits on its own). If
    anything fails before the swap commits, the live table is left exactly as it was.
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise EmbeddingIndexError(
            f"model {model_id!r}: write_embeddings commits as it goes, so it needs a connection outside a "
            "transaction: commit first, or connect with autocommit=True"
        )
    if hnsw_m < 2 or ef_construction < 2 * hnsw_m:
        raise EmbeddingIndexError(
            f"model {model_id!r}: need hnsw_m >= 2 and ef_construction >= 2 * hnsw_m, got m={hnsw_m}, "
            f"ef_construction={ef_construction}"
        )
    matrix = _validate_rows(model_id, icon_ids, group_ids, embeddings, texts)
    n, dim = matrix.shape
    row_kind = "icon" if texts is None else "text"
    ensure_schema(conn)
    table = table_name_for(model_id)
    staging = _staging_name(table)
    info_json = json.dumps(dict(embedder_info or {}), sort_keys=True, default=str)

    conn.execute("SELECT pg_advisory_lock(%s)", (_lock_key(model_id),))
    conn.commit()
    try:
        # Phase 1: stage, then index, in one transaction.
        with conn.transaction():
            n, copy_seconds = _stage(conn, staging, matrix, icon_ids, group_ids, texts)
            index_seconds = _build_hnsw(conn, staging, dim, hnsw_m, ef_construction)

        # Phase 2: swap, in one short transaction.
        started = time.perf_counter()
        with conn.transaction():
            replaced_dim, replaced_rows = _swap_in(
                conn,
                model_id,
                table,
                staging,
                (dim, n, hnsw_m, ef_construction, info_json, HNSW_PRECISION, row_kind),
            )
        swap_seconds = time.perf_counter() - started
    except psycopg.Error as exc:
        raise EmbeddingIndexError(
            f"model {model_id!r}: writing {n} embeddings failed ({type(exc).__name__}: {exc}); "
            "the previously stored embeddings, if any, are unchanged"
        ) from exc
    finally:
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            conn.rollback()
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_lock_key(model_id),))
            conn.commit()
    if replaced_dim is not None and replaced_dim != dim:
        # Logged once the swap has committed: the replacement really happened.
        log.warning(
            "model %r: embedding dimension changed from %d to %d; all %d stored rows were replaced "
            "by %d new ones (dimensions are never mixed)",
            model_id,
            replaced_dim,
            dim,
            replaced_rows,
            n,
        )
    log.info("model %r: %d embeddings of dim %d live in %s", model_id, n, dim, table)
    return IndexStats(
        model_id=model_id,
        table_name=table,
        dim=dim,
        rows=n,
        replaced_rows=replaced_rows,
        replaced_dim=replaced_dim,
        copy_seconds=copy_seconds,
        index_seconds=index_seconds,
        swap_seconds=swap_seconds,
        hnsw_m=hnsw_m,
        ef_construction=ef_construction,
    )


def query_vector(model: ModelIndex, query: np.ndarray) -> np.ndarray:
    vector = np.asarray(query, dtype=np.float32)
    if vector.ndim == 2 and vector.shape[0] == 1:
        vector = vector[0]
    if vector.ndim != 1:
        raise DimensionMismatchError(
            f"model {model.model_id!r}: query must be one vector, got shape {vector.shape}"
        )
    if vector.shape[0] != model.dim:
        raise DimensionMismatchError(
            f"model {model.model_id!r}: query vector has dimension {vector.shape[0]} but the stored "
            f"embeddings have dimension {model.dim}; embed the query with the same model"
        )
    if not np.isfinite(vector).all() or not np.any(vector):
        raise EmbeddingIndexError(f"model {model.model_id!r}: query vector is zero or not finite")
    return vector


def effective_ef_search(k: int, ef_search: int | None) -> int:
    """HNSW returns at most ef_search rows: never below k; when not given, max(2k, 40) (pgvector's
    default, never lowered); capped at pgvector's 1000."""
    wanted = ef_search if ef_search is not None else max(2 * k, DEFAULT_EF_SEARCH)
    return min(MAX_EF_SEARCH, max(k, wanted))


def _apply_plan_settings(conn: psycopg.Connection, *, exact: bool, ef_search: int) -> None:
    """Planner settings for one search, every one set explicitly so nothing depends on what ran before."""
    index_paths = "off" if exact else "on"
    settings = {
        # Exact: rule out every index path, the planner must scan and sort all rows. ANN: forbid
        # the scan, or a small table would be scanned and HNSW never measured.
        "enable_indexscan": index_paths,
        "enable_indexonlyscan": index_paths,
        "enable_bitmapscan": index_paths,
        "enable_seqscan": "on" if exact else "off",
        "hnsw.ef_search": str(ef_search),
    }
    # One round trip for all of them: search latency is measured.
    calls = sql.SQL(", ").join(sql.SQL("set_config(%s, %s, true)") for _ in settings)
    params = [item for pair in settings.items() for item in pair]
    conn.execute(sql.SQL("SELECT {}").format(calls), params, prepare=False)


def _ensure_vector_type(conn: psycopg.Connection) -> None:
    # register_vector queries the catalog: do it once per connection, not once per search, and in a
    # transaction block of its own so an idle connection is not left inside a transaction.
    if conn.adapters.types.get("vector") is None:
        with conn.transaction():
            register_vector(conn)


def _as_halfvec(value: sql.Composable, dim: int) -> sql.Composable:
    return sql.SQL("{}::halfvec({})").format(value, sql.Literal(dim))


def _order_by(model: ModelIndex, exact: bool) -> sql.Composable:
    """Exact: the float32 distance (a scan). HNSW: the expression the index was built over, or
    the planner would not use it."""
    if exact or model.hnsw_precision == "vector":
        return sql.SQL("embedding <=> %(q)s")
    return sql.SQL("{} <=> {}").format(
        _as_halfvec(sql.Identifier("embedding"), model.dim), _as_halfvec(sql.Placeholder("q"), model.dim)
    )


def search_vectors(
    conn: psycopg.Connection,
    model: str | ModelIndex,
    query: np.ndarray,
    k: int,
    *,
    exact: bool,
    ef_search: int | None = None,
) -> list[VectorHit]:
    """The k nearest icons by cosine similarity: exact (sequential scan) or approximate (HNSW).

    `model` is a model id or a ModelIndex from get_model_index (saves a registry lookup when
    searching many times). Runs in its own transaction so the planner settings stay local.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not exact and k > MAX_EF_SEARCH:
        raise ValueError(
            f"HNSW search returns at most {MAX_EF_SEARCH} rows (pgvector's ef_search cap); got k={k}"
        )
    model_index = model if isinstance(model, ModelIndex) else get_model_index(conn, model)
    vector = query_vector(model_index, query)
    _ensure_vector_type(conn)
    # The score is always the float32 cosine; HNSW ranks by the indexed halfvec distance.
    nearest = sql.SQL(
        "SELECT icon_id, group_id, 1 - (embedding <=> %(q)s) AS score FROM {} ORDER BY {} LIMIT %(n)s"
    ).format(sql.Identifier(model_index.table_name), _order_by(model_index, exact))
    rows_wanted = k
    if model_index.row_kind == "text":
        # A row per text: the nearest texts, their icons, each icon's soft maximum over them.
        rows_wanted = min(MAX_EF_SEARCH, k * TEXT_ROWS_PER_ICON)
        nearest_texts = sql.SQL(
            "SELECT icon_ids, group_ids, 1 - (embedding <=> %(q)s) AS score FROM {} ORDER BY {} LIMIT %(n)s"
        ).format(sql.Identifier(model_index.table_name), _order_by(model_index, exact))
        statement = sql.SQL(
            "SELECT icon.icon_id, icon.group_id, %(tau)s * ln(sum(exp(nearest.score / %(tau)s))) AS score "
            "FROM ({}) AS nearest, unnest(nearest.icon_ids, nearest.group_ids) AS icon(icon_id, group_id) "
            "GROUP BY icon.icon_id, icon.group_id ORDER BY score DESC, icon.icon_id LIMIT %(k)s"
        ).format(nearest_texts)
    else:
        statement = nearest
    # force_rollback: the search only reads, and rolling back undoes the SET LOCALs even when the
    # caller's connection is already inside a transaction (a savepoint would otherwise leak them).
    with conn.transaction(force_rollback=True):
        _apply_plan_settings(conn, exact=exact, ef_search=effective_ef_search(rows_wanted, ef_search))
        try:
            parameters = {"q": vector, "k": k, "n": rows_wanted, "tau": TEXT_SOFTMAX_TEMPERATURE}
            rows = conn.execute(statement, parameters, prepare=False).fetchall()
        except psycopg.errors.UndefinedTable:
            raise UnknownModelError(
                f"model {model_index.model_id!r}: its table {model_index.table_name} is gone "
                "(replaced or dropped); look the model up again"
            ) from None
    hits = [VectorHit(icon_id, group_id, float(score)) for icon_id, group_id, score in rows]
    # Half-precision ties can put two rows out of float32 order: list them by their scores.
    return sorted(hits, key=lambda hit: -hit.score)


def explain_search(
    conn: psycopg.Connection, model: str | ModelIndex, query: np.ndarray, k: int, *, exact: bool
) -> str:
    """The plan a search would use (to check that HNSW is, or is not, used)."""
    model_index = model if isinstance(model, ModelIndex) else get_model_index(conn, model)
    vector = query_vector(model_index, query)
    _ensure_vector_type(conn)
    statement = sql.SQL("EXPLAIN SELECT icon_id FROM {} ORDER BY {} LIMIT %(k)s").format(
        sql.Identifier(model_index.table_name), _order_by(model_index, exact)
    )
    with conn.transaction(force_rollback=True):
        _apply_plan_settings(conn, exact=exact, ef_search=effective_ef_search(k, None))
        rows = conn.execute(statement, {"q": vector, "k": k}, prepare=False).fetchall()
    return "\n".join(row[0] for row in rows)


def drop_model(conn: psycopg.Connection, model_id: str) -> bool:
    """Remove a model's table and registry row; False if it had none."""
    with conn.transaction():
        if not _registry_exists(conn):
            return False
        row = conn.execute(
            sql.SQL("DELETE FROM {} WHERE model_id = %s RETURNING table_name").format(
                sql.Identifier(REGISTRY_TABLE)
            ),
            (model_id,),
        ).fetchone()
        if row is None:
            return False
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(row[0])))
    return True


@dataclass(frozen=True)
class IndexSnapshot:
    """The registry and the fusion settings as one search reads them: one transaction, three
    statements, instead of a registry lookup per channel (a search with every channel made 18)."""

    models: tuple[ModelIndex, ...]
    embedders: Mapping[str, Mapping[str, Any]]  # model id -> what write_embeddings recorded
    fusion: Mapping[str, Any] | None  # the stored hybrid settings; None before the first fit

    def model(self, model_id: str) -> ModelIndex:
        """As get_model_index: UnknownModelError listing the models that exist."""
        for model in self.models:
            if model.model_id == model_id:
                return model
        available = ", ".join(m.model_id for m in self.models) or "none (no embeddings written yet)"
        raise UnknownModelError(f"no embeddings stored for model {model_id!r}; available models: {available}")

    def embedder(self, model_id: str) -> dict[str, Any]:
        self.model(model_id)
        return dict(self.embedders.get(model_id) or {})


def read_index_snapshot(conn: psycopg.Connection) -> IndexSnapshot:
    """The registry (list_models and embedder_info of every model) and read_fusion_settings, read
    together; a connection that was idle stays idle."""
    with conn.transaction():
        exists = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
            (REGISTRY_TABLE, FUSION_TABLE),
            prepare=False,
        ).fetchone()
        registry_exists, fusion_exists = bool(exists and exists[0]), bool(exists and exists[1])
        rows = []
        if registry_exists:
            # As list_models: through to_jsonb, so a registry no writer has migrated yet still answers.
            rows = conn.execute(
                sql.SQL(
                    "SELECT model_id, table_name, dim, rows, hnsw_m, ef_construction, "
                    "coalesce(to_jsonb(r) ->> 'hnsw_precision', 'vector'), "
                    "coalesce(to_jsonb(r) ->> 'row_kind', 'icon'), "
                    "coalesce(to_jsonb(r) ->> 'updated_at', ''), "
                    "embedder FROM {} AS r ORDER BY model_id"
                ).format(sql.Identifier(REGISTRY_TABLE)),
                prepare=False,
            ).fetchall()
        fusion = None
        if fusion_exists:
            row = conn.execute(
                sql.SQL("SELECT settings FROM {} WHERE id = 1").format(sql.Identifier(FUSION_TABLE)),
                prepare=False,
            ).fetchone()
            fusion = dict(row[0]) if row else None
    return IndexSnapshot(
        models=tuple(ModelIndex(*row[:9]) for row in rows),
        embedders={row[0]: dict(row[9] or {}) for row in rows},
        fusion=fusion,
    )


def index_version(conn: psycopg.Connection) -> tuple[Any, ...] | None:
    """What changes whenever the registry or the fusion settings do (a model written, replaced or
    dropped; a new fit), in one small statement: a server re-reads the snapshot only then. None
    before both tables exist (every caller then reads the snapshot each time). On an autocommit
    connection, or in a transaction block of its own."""
    statement = sql.SQL(
        "SELECT (SELECT count(*) FROM {registry}), (SELECT max(updated_at) FROM {registry}), "
        "(SELECT max(updated_at) FROM {fusion})"
    ).format(registry=sql.Identifier(REGISTRY_TABLE), fusion=sql.Identifier(FUSION_TABLE))
    # A failing statement aborts an open transaction: there, it runs in a savepoint of its own.
    idle = conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    try:
        with contextlib.nullcontext() if idle else conn.transaction():
            row = conn.execute(statement, prepare=False).fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return tuple(row) if row else None


def embedder_info(conn: psycopg.Connection, model_id: str) -> dict[str, Any]:
    """What `write_embeddings` recorded about the encoder of `model_id` (e.g. its checkpoint)."""
    return read_index_snapshot(conn).embedder(model_id)


def write_fusion_settings(conn: psycopg.Connection, settings_json: str) -> None:
    """Store hybrid search's fitted settings beside the index (one row, replaced atomically)."""
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id integer PRIMARY KEY CHECK (id = 1), "
                "settings jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
            ).format(sql.Identifier(FUSION_TABLE))
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (id, settings) VALUES (1, %s::jsonb) "
                "ON CONFLICT (id) DO UPDATE SET settings = EXCLUDED.settings, updated_at = now()"
            ).format(sql.Identifier(FUSION_TABLE)),
            (settings_json,),
        )


def read_fusion_settings(conn: psycopg.Connection) -> dict[str, Any] | None:
    """The stored hybrid search settings, or None before the first fit."""
    fusion = read_index_snapshot(conn).fusion
    return dict(fusion) if fusion else None
