"""A search server's own copy of the index's vectors: exact search by one matrix product.

The API and the search app answer many searches from one long-lived process. Asked of
PostgreSQL, one channel's search costs a transaction and an HNSW walk (the captions channel asks
for 400 texts, so ef_search 800: about 16 ms of the server's CPU over the demo's 18k texts, on
this project's 2-core machine). Over a copy of the table held in memory, the same search is one
matrix product: about 1.7 ms, and searches that arrive together share it (eight for about
4.5 ms; search/coalesce.py), and it is exact where HNSW is approximate. The results are
pgvector's exact search's (the same float32 cosines, the same soft maximum over a text table's
nearest texts), which the tests check against PostgreSQL.

A table is copied on its first search and copied again once icon_embeddings has replaced it (the
registry's `updated_at` moved on). Tables that do not fit the budget (`index.resident_mb`) stay
in PostgreSQL, searched through HNSW as before: a library of millions of texts still works, at
PostgreSQL's speed. One-off searches (the CLI) and the benchmark ask PostgreSQL: copying a table
costs more than one search.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from icon_pipeline.search.coalesce import CoalescedCalls
from icon_pipeline.search.index import (
    MAX_EF_SEARCH,
    TEXT_ROWS_PER_ICON,
    TEXT_SOFTMAX_TEMPERATURE,
    ModelIndex,
    UnknownModelError,
    VectorHit,
    query_vector,
)

log = logging.getLogger(__name__)

MEGABYTE = 1 << 20


@dataclass(frozen=True)
class ResidentTable:
    """One registered table in memory. Icon rows: row r is icon `owners[r]`. Text rows (captions,
    exemplars): row r carries the icons `owners[starts[r]:starts[r + 1]]`."""

    model: ModelIndex
    # (dim, rows) float32: each row scaled to length 1, stored transposed (queries @ this is a plain
    # matrix product: 1.4 ms for one query over 18k texts against 2.0 ms the other way round)
    unit_columns: np.ndarray
    owners: np.ndarray  # int32 positions in icon_ids / group_ids
    starts: np.ndarray | None  # text rows only: (rows + 1,) offsets into owners
    icon_ids: tuple[str, ...]
    group_ids: tuple[str, ...]

    @property
    def nbytes(self) -> int:
        return (
            self.unit_columns.nbytes + self.owners.nbytes + (0 if self.starts is None else self.starts.nbytes)
        )

    def search(self, vectors: Sequence[np.ndarray], ks: Sequence[int]) -> list[list[VectorHit]]:
        """The ks[i] best icons for vectors[i], as pgvector's exact search returns them: one matrix
        product for all of them."""
        import torch  # a server's forwards run on one thread each (apps/api.one_thread_per_forward)

        queries = np.stack([query_vector(self.model, v) for v in vectors])
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        with torch.inference_mode():
            scores = (torch.from_numpy(queries) @ torch.from_numpy(self.unit_columns)).numpy()
        return [self._best(row, k) for row, k in zip(scores, ks, strict=True)]

    def _best(self, cosines: np.ndarray, k: int) -> list[VectorHit]:
        if self.starts is None:
            chosen = _top(cosines, k)
            icons, scores = self.owners[chosen], cosines[chosen].astype(np.float64)
        else:
            # The nearest texts, then each icon's soft maximum over them (index.search_vectors' SQL).
            nearest = _top(cosines, min(MAX_EF_SEARCH, k * TEXT_ROWS_PER_ICON))
            lengths = self.starts[nearest + 1] - self.starts[nearest]
            # Positions in `owners` of every icon of those texts, without a loop over the texts.
            firsts = np.repeat(self.starts[nearest] - (np.cumsum(lengths) - lengths), lengths)
            members = self.owners[firsts + np.arange(int(lengths.sum()))]
            weights = np.repeat(
                np.exp(cosines[nearest].astype(np.float64) / TEXT_SOFTMAX_TEMPERATURE), lengths
            )
            icons, position = np.unique(members, return_inverse=True)
            scores = TEXT_SOFTMAX_TEMPERATURE * np.log(np.bincount(position, weights=weights))
        if len(icons) > k:  # only the k best (and any tied with the k-th) are put in order
            kth = np.partition(scores, len(icons) - k)[len(icons) - k]
            candidates = np.flatnonzero(scores >= kth)
        else:
            candidates = np.arange(len(icons))
        # Best first; ties by icon id, as the SQL orders them.
        order = sorted(candidates.tolist(), key=lambda i: (-scores[i], self.icon_ids[icons[i]]))[:k]
        return [VectorHit(self.icon_ids[icons[i]], self.group_ids[icons[i]], float(scores[i])) for i in order]


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the n highest scores (unordered)."""
    if n >= len(scores):
        return np.arange(len(scores))
    return np.argpartition(-scores, n - 1)[:n]


def load_table(conn: psycopg.Connection, model: ModelIndex) -> ResidentTable:
    """Every row of `model`'s live table, read in one binary query."""
    if conn.adapters.types.get("vector") is None:
        with conn.transaction():
            register_vector(conn)
    text_rows = model.row_kind == "text"
    columns = "icon_ids, group_ids, embedding" if text_rows else "icon_id, group_id, embedding"
    statement = sql.SQL("SELECT {} FROM {}").format(sql.SQL(columns), sql.Identifier(model.table_name))
    try:
        with conn.cursor(binary=True) as cursor:
            rows = cursor.execute(statement, prepare=False).fetchall()
    except psycopg.errors.UndefinedTable:
        raise UnknownModelError(
            f"model {model.model_id!r}: its table {model.table_name} is gone (replaced or dropped); "
            "look the model up again"
        ) from None
    position: dict[tuple[str, str], int] = {}
    owners: list[int] = []
    starts = [0]
    for icons, groups, _ in rows:
        for icon_id, group_id in zip(*((icons, groups) if text_rows else ((icons,), (groups,))), strict=True):
            owners.append(position.setdefault((icon_id, group_id), len(position)))
        starts.append(len(owners))
    # pgvector's binary loader gives Vector objects (its text loader, numpy arrays).
    vectors = [
        np.asarray(getattr(row[2], "to_numpy", lambda v=row[2]: v)(), dtype=np.float32) for row in rows
    ]
    matrix = np.stack(vectors) if vectors else np.zeros((0, model.dim), dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    keys = list(position)
    return ResidentTable(
        model=model,
        unit_columns=np.ascontiguousarray((matrix / np.where(norms > 0, norms, 1.0)).T, dtype=np.float32),
        owners=np.asarray(owners, dtype=np.int32),
        starts=np.asarray(starts, dtype=np.int64) if text_rows else None,
        icon_ids=tuple(icon for icon, _ in keys),
        group_ids=tuple(group for _, group in keys),
    )


def _table_key(conn: psycopg.Connection, model: ModelIndex) -> tuple:
    """What a copy is a copy of: the database, the table and the write that filled it."""
    info = conn.info
    return (info.host, info.port, info.dbname, model.model_id, model.table_name, model.version, model.rows)


class ResidentIndex:
    """The copies one server process holds, within `budget_mb` in all; each table is read once per
    write of it, however many searches ask for it at once, and searched through a CoalescedCalls
    so that concurrent searches of one table share a matrix product."""

    def __init__(self, budget_mb: int) -> None:
        self.budget = budget_mb * MEGABYTE
        self._lock = threading.Lock()
        self._loading: dict[tuple, threading.Lock] = {}
        self._tables: dict[str, tuple[tuple, ResidentTable, CoalescedCalls]] = {}  # by model id
        self._too_large: set[tuple] = set()

    def held_bytes(self, except_model: str = "") -> int:
        return sum(t.nbytes for m, (_, t, _) in self._tables.items() if m != except_model)

    def search_function(self, conn: psycopg.Connection, model: ModelIndex):
        """search(vector, k) -> hits over the copy of `model`'s table (copied now if need be), or
        None when the table does not fit the budget (search it in PostgreSQL)."""
        key = _table_key(conn, model)
        entry = self._entry(conn, model, key)
        if entry is None:
            return None
        table, calls = entry

        def batch(items: list[tuple[np.ndarray, int]]) -> list[list[VectorHit]]:
            return table.search([vector for vector, _ in items], [k for _, k in items])

        def search(vector: np.ndarray, k: int) -> list[VectorHit]:
            # Checked before it joins a batch: a query that cannot be searched (a blank image's
            # zero vector) fails its own search, not the others' it would have been batched with.
            return calls(batch, [(query_vector(table.model, vector), k)])[0]

        return search

    def _entry(
        self, conn: psycopg.Connection, model: ModelIndex, key: tuple
    ) -> tuple[ResidentTable, CoalescedCalls] | None:
        with self._lock:
            held = self._tables.get(model.model_id)
            if held is not None and held[0] == key:
                return held[1], held[2]
            if key in self._too_large:
                return None
            estimate = model.rows * model.dim * 4
            if self.held_bytes(except_model=model.model_id) + estimate > self.budget:
                self._too_large.add(key)
                log.warning(
                    "model %r: its %d vectors (%.0f MB) do not fit the %d MB that index.resident_mb "
                    "allows a search server; searched in PostgreSQL (HNSW) instead",
                    model.model_id,
                    model.rows,
                    estimate / MEGABYTE,
                    self.budget // MEGABYTE,
                )
                return None
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one thread copies; the others wait for its copy
            with self._lock:
                held = self._tables.get(model.model_id)
                if held is not None and held[0] == key:
                    return held[1], held[2]
            started = time.perf_counter()
            table = load_table(conn, model)
            calls = CoalescedCalls()
            with self._lock:
                self._tables[model.model_id] = (key, table, calls)  # the replaced copy is let go
                self._loading.pop(key, None)
            log.info(
                "model %r: %d rows (%.1f MB) copied into the search server in %.2f s",
                model.model_id,
                model.rows,
                table.nbytes / MEGABYTE,
                time.perf_counter() - started,
            )
            return table, calls


_server_index: list[ResidentIndex] = []
_server_lock = threading.Lock()


def server_index() -> ResidentIndex:
    """This process's ResidentIndex, for the search servers (the API, the search app): one per
    process, its budget read from the configuration (index.resident_mb) on first use."""
    with _server_lock:
        if not _server_index:
            from icon_pipeline.core.config import ConfigError, IndexConfig, load_config

            try:
                budget = load_config().index.resident_mb
            except ConfigError as exc:  # search itself says what is wrong where it matters
                budget = IndexConfig().resident_mb
                log.warning("index.resident_mb: the default %d MB (%s)", budget, exc)
            _server_index.append(ResidentIndex(budget))
        return _server_index[0]
