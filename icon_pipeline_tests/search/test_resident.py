"""A search server's in-memory copy of the index (search/resident.py) against PostgreSQL itself."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import numpy as np
import psycopg
import pytest

from icon_pipeline.search.index import (
    EmbeddingIndexError,
    UnknownModelError,
    get_model_index,
    index_version,
    search_vectors,
    write_embeddings,
    write_fusion_settings,
)
from icon_pipeline.search.resident import ResidentIndex, load_table
from icon_pipeline_tests.search.test_index import conn, db_url, ids, unit_vectors  # noqa: F401 (fixtures)


@pytest.fixture
def live(conn: psycopg.Connection) -> Iterator[psycopg.Connection]:  # noqa: F811
    conn.autocommit = True  # as the servers' connections are
    yield conn


def hits_match(resident: list, postgres: list) -> None:
    """The same scores in the same order and the same icons, but for icons tied with the last one
    (where the two may cut a tie differently)."""
    assert [h.score for h in resident] == pytest.approx([h.score for h in postgres], abs=2e-5)
    last = postgres[-1].score
    assert {h.icon_id for h in resident if h.score > last + 2e-5} == {
        h.icon_id for h in postgres if h.score > last + 2e-5
    }


def test_a_copy_answers_as_postgres_exact_search_does(live: psycopg.Connection) -> None:
    icon_vectors = unit_vectors(300, 24, seed=1)
    write_embeddings(live, "finetuned", ids(300), [f"g{i // 3}" for i in range(300)], icon_vectors)
    # A text table: 5 texts per icon, some texts shared by many icons (a tag such as "arrow").
    texts = [f"text-{i % 400}" if i % 7 else f"tag-{i % 5}" for i in range(1500)]
    text_vectors = {
        t: v for t, v in zip(sorted(set(texts)), unit_vectors(len(set(texts)), 16, seed=2), strict=True)
    }
    owners = [f"icon-{i // 5}" for i in range(1500)]
    write_embeddings(
        live,
        "captions",
        owners,
        [f"g{int(o.split('-')[1]) // 3}" for o in owners],
        np.stack([text_vectors[t] for t in texts]),
        texts=texts,
    )
    for model_id, dim in (("finetuned", 24), ("captions", 16)):
        table = get_model_index(live, model_id)
        copy = load_table(live, table)
        assert copy.unit_columns.shape == (dim, table.rows)
        queries = unit_vectors(6, dim, seed=5) + 0.1 * unit_vectors(6, dim, seed=6)
        for k in (1, 10, 60):
            answers = copy.search(list(queries), [k] * len(queries))
            for query, answer in zip(queries, answers, strict=True):
                hits_match(answer, search_vectors(live, table, query, k, exact=True))


def test_a_server_copies_each_table_once_and_again_after_a_rewrite(live: psycopg.Connection) -> None:
    write_embeddings(live, "finetuned", ids(50), ids(50, "g"), unit_vectors(50, 8, seed=1))
    write_fusion_settings(live, "{}")
    resident = ResidentIndex(budget_mb=16)
    table = get_model_index(live, "finetuned")
    query = unit_vectors(1, 8, seed=1)[0]  # icon-0's own vector

    # Searches that arrive together: the table is copied once and they share a product.
    search = resident.search_function(live, table)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: search(query, 3), range(32)))
    for answer in answers:  # (one product or another: the scores agree to float32's last digits)
        assert [h.icon_id for h in answer] == [h.icon_id for h in answers[0]] and answer[
            0
        ].icon_id == "icon-0"
        assert [h.score for h in answer] == pytest.approx([h.score for h in answers[0]], abs=1e-6)

    version = index_version(live)
    write_embeddings(live, "finetuned", ids(50, "new"), ids(50, "g"), unit_vectors(50, 8, seed=1))
    assert index_version(live) != version  # what a kept service notices
    rewritten = get_model_index(live, "finetuned")
    assert rewritten.version != table.version and rewritten.table_name == table.table_name
    assert resident.search_function(live, rewritten)(query, 1)[0].icon_id == "new-0"
    assert resident.held_bytes() < 2 * 50 * 8 * 4 + 1000  # the replaced copy was let go


def test_a_query_that_cannot_be_searched_fails_alone_among_concurrent_ones(
    live: psycopg.Connection,
) -> None:
    """A blank image's zero vector is refused for its own search; the searches it arrived with
    (and would have shared a matrix product with) are answered."""
    write_embeddings(live, "finetuned", ids(200), ids(200, "g"), unit_vectors(200, 16, seed=1))
    search = ResidentIndex(budget_mb=16).search_function(live, get_model_index(live, "finetuned"))
    queries = list(unit_vectors(31, 16, seed=1)) + [np.zeros(16, dtype=np.float32)]

    def ask(query: np.ndarray) -> object:
        try:
            return search(query, 1)[0].icon_id
        except EmbeddingIndexError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(ask, queries))
    assert answers[:31] == [f"icon-{i}" for i in range(31)]  # each its own nearest icon
    assert isinstance(answers[31], EmbeddingIndexError) and "zero or not finite" in str(answers[31])


def test_a_table_over_the_budget_stays_in_postgres(live: psycopg.Connection, caplog) -> None:
    write_embeddings(live, "finetuned", ids(2000), ids(2000, "g"), unit_vectors(2000, 256, seed=1))
    resident = ResidentIndex(budget_mb=1)  # 2000 x 256 float32 is 2 MB
    assert resident.search_function(live, get_model_index(live, "finetuned")) is None
    assert "do not fit the 1 MB that index.resident_mb allows" in caplog.text
    assert resident.held_bytes() == 0


def test_a_dropped_table_is_named_not_a_traceback(live: psycopg.Connection) -> None:
    write_embeddings(live, "finetuned", ids(10), ids(10, "g"), unit_vectors(10, 8))
    table = get_model_index(live, "finetuned")
    live.execute(f'DROP TABLE "{table.table_name}"')
    with pytest.raises(UnknownModelError, match="is gone"):
        load_table(live, table)


def test_the_index_version_moves_with_every_write_of_the_registry_or_the_fit(
    live: psycopg.Connection,
) -> None:
    assert index_version(live) is None  # nothing written yet: callers read everything each time
    write_embeddings(live, "finetuned", ids(10), ids(10, "g"), unit_vectors(10, 8))
    write_fusion_settings(live, '{"weights": {}}')
    versions = [index_version(live)]
    write_fusion_settings(live, '{"weights": {"words": {}}}')
    versions.append(index_version(live))
    write_embeddings(live, "base", ids(10), ids(10, "g"), unit_vectors(10, 8))
    versions.append(index_version(live))
    live.execute("DELETE FROM icon_index_models WHERE model_id = 'base'")  # as drop_model does
    versions.append(index_version(live))
    assert all(before != after for before, after in pairwise(versions))  # each write shows
    with live.transaction():  # inside a caller's transaction too, without breaking it
        assert index_version(live) == versions[-1]
        live.execute("SELECT 1")


def test_concurrent_first_searches_wait_for_one_copy(
    live: psycopg.Connection,
    db_url: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_embeddings(live, "finetuned", ids(400), ids(400, "g"), unit_vectors(400, 32))
    resident = ResidentIndex(budget_mb=16)
    table = get_model_index(live, "finetuned")
    connections = [psycopg.connect(db_url, autocommit=True) for _ in range(6)]
    try:
        with (
            caplog.at_level(logging.INFO, logger="icon_pipeline.search.resident"),
            ThreadPoolExecutor(max_workers=6) as pool,
        ):
            functions = list(pool.map(lambda c: resident.search_function(c, table), connections))
    finally:
        for c in connections:
            c.close()
    assert all(f is not None for f in functions)
    assert caplog.text.count("copied into the search server") == 1
