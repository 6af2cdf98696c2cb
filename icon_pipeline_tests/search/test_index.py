"""The pgvector index on the embedded PostgreSQL: load, exact vs HNSW, atomic swap, clear errors."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest

from icon_pipeline.core.database import DatabaseInfo
from icon_pipeline.search.index import (
    DimensionMismatchError,
    EmbeddingIndexError,
    UnknownModelError,
    drop_model,
    effective_ef_search,
    embedder_info,
    explain_search,
    get_model_index,
    list_models,
    read_fusion_settings,
    read_index_snapshot,
    search_vectors,
    table_name_for,
    write_embeddings,
    write_fusion_settings,
)


@pytest.fixture
def db_url(postgres: DatabaseInfo) -> Iterator[str]:
    """A database of its own per test, dropped afterwards."""
    name = f"idx_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.libpq_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield postgres.libpq_url.replace("/postgres?", f"/{name}?")
    with psycopg.connect(postgres.libpq_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url) as connection:
        yield connection


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    matrix = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def ids(n: int, prefix: str = "icon") -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


def test_table_name_is_safe_and_stable() -> None:
    name = table_name_for('google/siglip2-base-patch16-naflex"; DROP TABLE x; --')
    assert name == table_name_for('google/siglip2-base-patch16-naflex"; DROP TABLE x; --')
    assert name.startswith("emb_google_siglip2_base_patch16_") and len(name) <= 50
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789_")
    # Ids that slug alike still get their own table.
    assert table_name_for("model/a") != table_name_for("model_a")


def test_round_trip_exact_and_hnsw_agree(conn: psycopg.Connection) -> None:
    vectors = unit_vectors(300, 32)
    icon_ids = ids(300)
    group_ids = [f"g{i // 3}" for i in range(300)]
    stats = write_embeddings(conn, "tiny/model", icon_ids, group_ids, vectors, embedder_info={"size": "tiny"})
    assert (stats.rows, stats.dim, stats.replaced_rows, stats.replaced_dim) == (300, 32, 0, None)
    [model] = list_models(conn)
    assert (model.model_id, model.dim, model.rows, model.table_name) == (
        "tiny/model",
        32,
        300,
        stats.table_name,
    )

    assert model.hnsw_precision == "halfvec"

    # The planner really takes the two different paths.
    assert "hnsw" in explain_search(conn, "tiny/model", vectors[0], 10, exact=False).lower()
    assert "Seq Scan" in explain_search(conn, "tiny/model", vectors[0], 10, exact=True)

    agreement = []
    for row in range(0, 300, 15):
        exact = search_vectors(conn, model, vectors[row], 10, exact=True)
        approx = search_vectors(conn, model, vectors[row], 10, exact=False, ef_search=100)
        assert exact[0].icon_id == icon_ids[row] and exact[0].score == pytest.approx(1.0, abs=1e-5)
        assert exact[0].group_id == group_ids[row]
        # Scores are cosine similarities, best first, and match numpy.
        expected = np.sort(vectors @ vectors[row])[::-1][:10]
        assert [h.score for h in exact] == pytest.approx(expected.tolist(), abs=1e-5)
        agreement.append(len({h.icon_id for h in exact} & {h.icon_id for h in approx}) / 10)
        # The half-precision index ranks, but the scores are the float32 cosines, best first.
        approx_scores = [h.score for h in approx]
        assert approx_scores == sorted(approx_scores, reverse=True)
        assert approx_scores == pytest.approx(
            [float(vectors[icon_ids.index(h.icon_id)] @ vectors[row]) for h in approx]
        )
    assert np.mean(agreement) >= 0.98


def test_a_registry_from_before_halfvec_indexes_is_still_searched_by_its_index(
    conn: psycopg.Connection,
) -> None:
    vectors = unit_vectors(200, 16)
    stats = write_embeddings(conn, "old", ids(200), ids(200), vectors)
    # What an earlier version left: no hnsw_precision column, an HNSW index over the vector itself.
    conn.execute("ALTER TABLE icon_index_models DROP COLUMN hnsw_precision")
    conn.execute(f"DROP INDEX {stats.table_name}_hnsw")
    conn.execute(
        f"CREATE INDEX {stats.table_name}_hnsw ON {stats.table_name} USING hnsw (embedding vector_cosine_ops)"
    )
    conn.commit()

    [model] = list_models(conn)  # a reader does not migrate the schema, and still answers
    assert model.hnsw_precision == "vector"
    assert "hnsw" in explain_search(conn, model, vectors[3], 5, exact=False).lower()
    assert search_vectors(conn, model, vectors[3], 5, exact=False)[0].icon_id == ids(200)[3]

    write_embeddings(conn, "new", ids(200), ids(200), vectors)  # a writer adds the column
    assert {m.model_id: m.hnsw_precision for m in list_models(conn)} == {"new": "halfvec", "old": "vector"}


def test_api_leaves_an_idle_connection_idle(conn: psycopg.Connection) -> None:
    """No call leaves a transaction open: it would hold locks that block the next swap."""
    idle = psycopg.pq.TransactionStatus.IDLE
    vectors = unit_vectors(20, 8)
    for call in (
        lambda: write_embeddings(conn, "m", ids(20), ids(20), vectors),
        lambda: list_models(conn),
        lambda: search_vectors(conn, "m", vectors[0], 3, exact=True),
        lambda: search_vectors(conn, "m", vectors[0], 3, exact=False),
        lambda: drop_model(conn, "m"),
        lambda: drop_model(conn, "m"),
        lambda: write_embeddings(conn, "m", ids(20), ids(20), vectors),
    ):
        call()
        assert conn.info.transaction_status == idle
    with psycopg.connect(conn.info.dsn) as fresh:  # a new connection: the vector type is registered once
        search_vectors(fresh, "m", vectors[0], 3, exact=True)
        assert fresh.info.transaction_status == idle


def test_one_snapshot_reads_what_the_per_model_lookups_read(conn: psycopg.Connection) -> None:
    """A search reads the registry and the fusion settings once (read_index_snapshot), and sees
    exactly what list_models, embedder_info and read_fusion_settings would have told it."""
    empty = read_index_snapshot(conn)  # a database nothing was written to yet
    assert (empty.models, dict(empty.embedders), empty.fusion) == ((), {}, None)
    with pytest.raises(UnknownModelError, match="available models: none"):
        empty.model("m")
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE

    write_embeddings(
        conn, "m", ids(20), ids(20), unit_vectors(20, 8), embedder_info={"checkpoint": "models/m"}
    )
    write_embeddings(conn, "n", ids(20), ids(20), unit_vectors(20, 4))
    write_fusion_settings(conn, '{"weights": {"text": {"m": 1.0}}}')
    snapshot = read_index_snapshot(conn)
    assert snapshot.models == tuple(list_models(conn))
    assert snapshot.model("n") == get_model_index(conn, "n")
    assert snapshot.embedder("m") == embedder_info(conn, "m") == {"checkpoint": "models/m"}
    assert snapshot.fusion == read_fusion_settings(conn)
    with pytest.raises(UnknownModelError, match="'x'; available models: m, n"):
        snapshot.embedder("x")
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_hnsw_returns_k_rows_beyond_default_ef_search(conn: psycopg.Connection) -> None:
    vectors = unit_vectors(200, 16, seed=1)
    write_embeddings(conn, "m", ids(200), ids(200, "g"), vectors)
    # pgvector's default ef_search (40) would cap this at 40 rows.
    hits = search_vectors(conn, "m", vectors[0], 60, exact=False)
    assert len(hits) == 60
    assert effective_ef_search(10, None) == 40 and effective_ef_search(60, 20) == 60
    assert effective_ef_search(10, 5000) == 1000


def test_rewrite_is_idempotent_and_replaces_rows(conn: psycopg.Connection) -> None:
    vectors = unit_vectors(50, 8)
    first = write_embeddings(conn, "m", ids(50), ids(50, "g"), vectors)
    again = write_embeddings(conn, "m", ids(50), ids(50, "g"), vectors)
    assert again.table_name == first.table_name and again.replaced_rows == 50
    assert len(list_models(conn)) == 1
    smaller = write_embeddings(conn, "m", ids(20, "new"), ids(20, "g"), vectors[:20])
    assert smaller.replaced_rows == 50
    count = conn.execute(f"SELECT count(*), min(icon_id) FROM {first.table_name}").fetchone()
    conn.commit()
    assert count == (20, "new-0")
    # No staging table is left behind.
    tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {"icon_index_models", first.table_name}


def test_readers_see_old_rows_until_the_swap_commits(db_url: str) -> None:
    """A reader polling during a re-write sees the full old set or the full new set, never a mix."""
    old = unit_vectors(2000, 24, seed=2)
    new = unit_vectors(2000, 24, seed=3)
    with psycopg.connect(db_url) as writer:
        write_embeddings(writer, "m", ids(2000, "old"), ids(2000, "g"), old)

    seen: list[tuple[int, str]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def rewrite() -> None:
        try:
            with psycopg.connect(db_url) as writer:
                write_embeddings(writer, "m", ids(1500, "new"), ids(1500, "g"), new[:1500])
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)
        finally:
            done.set()

    with psycopg.connect(db_url, autocommit=True) as reader:
        table = get_model_index(reader, "m").table_name
        thread = threading.Thread(target=rewrite)
        thread.start()
        while not done.is_set():
            count, first = reader.execute(f"SELECT count(*), min(icon_id) FROM {table}").fetchone()
            seen.append((count, first[:3]))
            hits = search_vectors(reader, "m", old[0], 5, exact=False)
            assert len(hits) == 5
        thread.join()
        final = reader.execute(f"SELECT count(*), min(icon_id) FROM {table}").fetchone()
    assert not errors, errors
    assert set(seen) <= {(2000, "old"), (1500, "new")}
    assert (2000, "old") in seen  # the reader did run during the re-write
    assert final == (1500, "new-0")


def test_staged_table_is_invisible_until_swapped(db_url: str) -> None:
    """Hold the swap's lock from another transaction: the write waits, readers still see old rows."""
    old = unit_vectors(100, 8, seed=4)
    with psycopg.connect(db_url) as conn:
        stats = write_embeddings(conn, "m", ids(100, "old"), ids(100, "g"), old)
    result: list[object] = []
    with psycopg.connect(db_url) as blocker:
        # A long reader of the live table blocks the DROP in the swap.
        blocker.execute(f"SELECT count(*) FROM {stats.table_name}").fetchone()

        def rewrite() -> None:
            with psycopg.connect(db_url) as writer:
                try:
                    result.append(write_embeddings(writer, "m", ids(100, "new"), ids(100, "g"), old))
                except BaseException as exc:
                    result.append(exc)

        thread = threading.Thread(target=rewrite)
        thread.start()
        # Wait until the write is staged (committed) and waiting for the swap's lock.
        with psycopg.connect(db_url, autocommit=True) as reader:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                waiting = reader.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE 'DROP TABLE%'"
                ).fetchone()[0]
                if waiting:
                    break
                time.sleep(0.05)
            staged = reader.execute(
                "SELECT count(*) FROM pg_tables WHERE tablename = %s", (stats.table_name + "__new",)
            ).fetchone()
            assert waiting and staged == (1,)
        assert thread.is_alive()
        # Still inside the blocker's transaction: old rows.
        assert blocker.execute(f"SELECT min(icon_id) FROM {stats.table_name}").fetchone() == ("old-0",)
        blocker.commit()
        thread.join(timeout=30)
    assert not isinstance(result[0], BaseException), result
    with psycopg.connect(db_url) as conn:
        assert conn.execute(f"SELECT min(icon_id) FROM {stats.table_name}").fetchone() == ("new-0",)


def test_dimension_change_replaces_whole_model_and_query_mismatch_is_clear(
    conn: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    write_embeddings(conn, "m", ids(10), ids(10, "g"), unit_vectors(10, 8))
    with caplog.at_level(logging.WARNING, logger="icon_pipeline.search.index"):
        stats = write_embeddings(conn, "m", ids(12), ids(12, "g"), unit_vectors(12, 16))
    assert (stats.dim, stats.replaced_dim, stats.replaced_rows) == (16, 8, 10)
    assert "dimension changed from 8 to 16" in caplog.text
    dims = conn.execute(f"SELECT DISTINCT vector_dims(embedding) FROM {stats.table_name}").fetchall()
    assert dims == [(16,)]
    with pytest.raises(
        DimensionMismatchError, match="dimension 8 but the stored embeddings have dimension 16"
    ):
        search_vectors(conn, "m", unit_vectors(1, 8)[0], 5, exact=True)
    assert len(search_vectors(conn, "m", unit_vectors(1, 16)[0], 5, exact=True)) == 5


def test_unknown_model_lists_available(conn: psycopg.Connection) -> None:
    with pytest.raises(UnknownModelError, match="available models: none"):
        search_vectors(conn, "nope", np.ones(4, dtype=np.float32), 3, exact=True)
    write_embeddings(conn, "alpha", ids(5), ids(5), unit_vectors(5, 4))
    write_embeddings(conn, "beta", ids(5), ids(5), unit_vectors(5, 4))
    with pytest.raises(UnknownModelError, match="'nope'; available models: alpha, beta"):
        search_vectors(conn, "nope", np.ones(4, dtype=np.float32), 3, exact=False)


@pytest.mark.parametrize(
    ("icon_ids", "vectors", "match"),
    [
        (ids(3), np.full((3, 4), np.nan, dtype=np.float32), "NaN or infinite"),
        (ids(3), np.ones((3, 4), dtype=np.float32), "L2-normalised; icon 'icon-0' has norm 2.0000"),
        (["a", "b", "a"], unit_vectors(3, 4), "icon id 'a' appears more than once"),
        (ids(2), unit_vectors(3, 4), "3 embeddings but 2 icon ids"),
        (ids(3), unit_vectors(3, 4001), "exceeds pgvector's HNSW limit"),
    ],
)
def test_bad_rows_fail_clearly_and_keep_old_data(
    conn: psycopg.Connection, icon_ids: list[str], vectors: np.ndarray, match: str
) -> None:
    write_embeddings(conn, "m", ids(7, "keep"), ids(7), unit_vectors(7, 4))
    with pytest.raises(EmbeddingIndexError, match=match):
        write_embeddings(conn, "m", icon_ids, ids(len(icon_ids), "g"), vectors)
    model = get_model_index(conn, "m")
    assert (model.rows, model.dim) == (7, 4)
    assert len(search_vectors(conn, model, unit_vectors(1, 4)[0], 10, exact=True)) == 7


def test_exemplars_find_every_icon_of_a_concept_through_another_sets_drawing(
    conn: psycopg.Connection,
) -> None:
    """search/exemplars.py's rows as exemplar_embeddings writes them: one row per corpus drawing,
    carrying the icons of its concepts; a query near one drawing finds the icons of its concept, and
    a concept with two drawings near the query outranks one with a single drawing as near."""
    from icon_pipeline.search.channels import EXEMPLARS
    from icon_pipeline.search.exemplars import exemplar_rows, library_drawings

    members = {"g-bell": ["t:outline:bell", "t:filled:bell"], "g-home": ["t:outline:home"]}
    exemplars = [
        {"png_path": "mdi/bell.png", "group_ids": ["g-bell"], "set": "mdi"},
        {"png_path": "iconoir/bell.png", "group_ids": ["g-bell"], "set": "iconoir"},
        {"png_path": "mdi/home.png", "group_ids": ["g-home"], "set": "mdi"},
        {"png_path": "mdi/rocket.png", "group_ids": ["g-rocket"], "set": "mdi"},  # no library concept
    ]
    drawings = library_drawings(exemplars, members)
    assert [d["png_path"] for d in drawings] == ["mdi/bell.png", "iconoir/bell.png", "mdi/home.png"]
    query = unit_vectors(1, 16, seed=3)[0]
    near = query + 0.05 * unit_vectors(3, 16, seed=4)
    embeddings = near / np.linalg.norm(near, axis=1, keepdims=True)
    rows = exemplar_rows(drawings, embeddings, members, [d["png_path"] for d in drawings])
    assert rows.icon_ids == ["t:outline:bell", "t:filled:bell"] * 2 + ["t:outline:home"]
    conn.commit()
    conn.autocommit = True
    write_embeddings(conn, EXEMPLARS, rows.icon_ids, rows.group_ids, rows.vectors, texts=rows.keys)
    table = get_model_index(conn, EXEMPLARS)
    assert table.row_kind == "text" and table.rows == 3  # a row per drawing, not per icon
    hits = search_vectors(conn, table, query, 3, exact=True)
    assert {h.icon_id for h in hits[:2]} == {"t:outline:bell", "t:filled:bell"}  # two drawings near
    assert hits[2].icon_id == "t:outline:home"
