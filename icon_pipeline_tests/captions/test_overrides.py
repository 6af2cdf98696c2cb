"""The caption override store on a real PostgreSQL: revisions, conflicts, validation, history, a
database that goes away, and how overrides are applied to generated captions."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from icon_pipeline.captions.overrides import (
    CaptionOverride,
    ConflictError,
    InvalidOverride,
    OverrideStore,
    PendingEdits,
    StoreUnavailable,
    apply_overrides,
    clean_phrases,
)
from icon_pipeline.core.database import DatabaseInfo, start_embedded, stop_embedded

BELL = ["notification", "alert", "reminder", "ring the bell", "new message"]
BELL_EDIT = ["notify me", "alarm", "reminder", "ring", "incoming alert"]


def _new_database(server: DatabaseInfo) -> str:
    name = f"ov_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server.libpq_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return server.libpq_url.replace("/postgres?", f"/{name}?")


@pytest.fixture
def store(postgres: DatabaseInfo) -> OverrideStore:
    return OverrideStore(_new_database(postgres))


def test_first_save_then_edits_bump_the_revision_and_keep_history(store: OverrideStore) -> None:
    first = store.save("tabler:bell", BELL, "approved", "ana", expected_revision=0)
    assert (first.revision, first.status, first.author, first.phrases) == (1, "approved", "ana", BELL)
    assert first.updated_at.tzinfo is not None
    second = store.save("tabler:bell", "\n".join(BELL_EDIT), "edited", "  bo  ", expected_revision=1)
    assert (second.revision, second.status, second.author) == (2, "edited", "bo")
    assert second.phrases == BELL_EDIT  # one phrase per line, normalised
    assert store.load_for(["tabler:bell", "tabler:unknown"]) == {"tabler:bell": second}
    assert store.load_all() == {"tabler:bell": second}
    assert [h.revision for h in store.history("tabler:bell")] == [1, 2]
    assert store.history("tabler:bell")[0].phrases == BELL  # the overwritten decision is kept
    assert store.load_for([]) == {}


def test_a_stale_revision_is_refused_and_names_who_changed_it(store: OverrideStore) -> None:
    store.save("tabler:bell", BELL, "approved", "ana", 0)
    # Ana and Bo both opened revision 1; Ana saves first.
    store.save("tabler:bell", BELL_EDIT, "edited", "ana", 1)
    with pytest.raises(ConflictError) as caught:
        store.save("tabler:bell", BELL, "rejected", "bo", 1)
    message = str(caught.value)
    assert "tabler:bell" in message and "edited by ana" in message and "revision 2" in message
    assert "notify me" in message and "you started from revision 1" in message
    assert caught.value.current.revision == 2 and caught.value.current.author == "ana"
    assert store.get("tabler:bell").status == "edited"  # nothing of Bo's was stored
    # Bo saw Ana's change and decides to overwrite it, knowingly.
    assert store.save("tabler:bell", BELL, "rejected", "bo", 2).revision == 3
    # Someone else creating the same icon's first override also conflicts.
    with pytest.raises(ConflictError):
        store.save("tabler:bell", BELL, "approved", "cy", 0)


def test_concurrent_saves_of_one_revision_let_exactly_one_through(store: OverrideStore) -> None:
    store.save("tabler:trash", BELL, "approved", "ana", 0)
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def reviewer(name: str) -> None:
        barrier.wait()
        try:
            store.save("tabler:trash", BELL_EDIT, "edited", name, 1)
            outcomes.append("saved")
        except ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=reviewer, args=(f"r{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict"] * 5 + ["saved"]
    assert store.get("tabler:trash").revision == 2


@pytest.mark.parametrize(
    ("phrases", "status", "author", "expected"),
    [
        (["one", "two"], "edited", "ana", "expected 5-8 phrases, got 2"),
        ([*BELL[:4], "bell icon"], "edited", "ana", "banned word 'icon'"),
        ([*BELL[:4], "far too many words here"], "edited", "ana", "has 5 words"),
        (BELL, "edited", "   ", "author is empty"),
        (BELL, "deleted", "ana", "unknown status 'deleted'"),
    ],
)
def test_unusable_overrides_are_refused_with_the_reason(
    store: OverrideStore, phrases: list[str], status: str, author: str, expected: str
) -> None:
    with pytest.raises(InvalidOverride, match="tabler:bell") as caught:
        store.save("tabler:bell", phrases, status, author, 0)
    assert expected in str(caught.value)
    assert store.get("tabler:bell") is None


def test_a_rejection_needs_no_phrases_and_phrases_are_normalised(store: OverrideStore) -> None:
    assert store.save("tabler:x", [], "rejected", "ana", 0).phrases == []
    assert clean_phrases("Hide Layer, hide layer\n  - Create New Folder\n\n") == [
        "hide layer",
        "create new folder",
    ]
    with pytest.raises(InvalidOverride, match="no icon selected"):
        store.save("", BELL, "edited", "ana", 0)


def test_apply_overrides_wins_over_generated_and_flags_rejections() -> None:
    now = datetime.now(UTC)
    rows = [
        {"icon_id": "a", "phrases": BELL, "error": ""},
        {"icon_id": "b", "phrases": [], "error": "model timed out"},
        {"icon_id": "c", "phrases": BELL, "error": ""},
        {"icon_id": "d", "phrases": BELL, "error": ""},
    ]
    overrides = {
        "a": CaptionOverride("a", BELL_EDIT, "edited", "ana", now, 2),
        "b": CaptionOverride("b", BELL_EDIT, "approved", "bo", now, 1),
        "c": CaptionOverride("c", [], "rejected", "cy", now, 1),
    }
    merged, counts = apply_overrides(rows, overrides)
    by_id = {r["icon_id"]: r for r in merged}
    assert by_id["a"]["phrases"] == BELL_EDIT and by_id["a"]["generated_phrases"] == BELL
    assert by_id["b"]["phrases"] == BELL_EDIT and by_id["b"]["error"] == ""  # a person fixed a failure
    assert by_id["c"]["rejected"] and by_id["c"]["phrases"] == BELL and by_id["c"]["override_author"] == "cy"
    assert by_id["d"]["override"] == "" and not by_id["d"]["rejected"] and by_id["d"]["phrases"] == BELL
    assert (counts.approved, counts.edited, counts.rejected, counts.total) == (1, 1, 1, 3)


@pytest.fixture
def own_server(project_tmp: Path) -> Iterator[tuple[Path, DatabaseInfo]]:
    """A server of the test's own, so it can be stopped without touching the session's."""
    pgdata = project_tmp / f"pg-ov-{uuid.uuid4().hex[:6]}"
    info = start_embedded(pgdata)
    yield pgdata, info
    stop_embedded(pgdata)


def test_a_database_that_went_away_loses_no_edit(
    own_server: tuple[Path, DatabaseInfo], tmp_path: Path
) -> None:
    pgdata, info = own_server
    store = OverrideStore(info.url)
    store.save("tabler:bell", BELL, "approved", "ana", 0)
    journal = PendingEdits(tmp_path / "pending.jsonl")
    assert stop_embedded(pgdata)

    with pytest.raises(StoreUnavailable, match="cannot reach PostgreSQL at host") as caught:
        store.save("tabler:bell", BELL_EDIT, "edited", "bo", 1)
    journal.add("tabler:bell", BELL_EDIT, "edited", "bo", 1, str(caught.value))
    journal.add("tabler:home", BELL, "approved", "bo", 0, str(caught.value))
    result = journal.replay(store)  # still down: everything stays queued
    assert not result.saved and "cannot reach PostgreSQL" in result.stopped and len(journal.all()) == 2

    restarted = start_embedded(pgdata)
    store = OverrideStore(restarted.url)  # the socket may move on restart
    store.save("tabler:home", BELL_EDIT, "edited", "cy", 0)  # someone got there first
    result = journal.replay(store)
    assert [s.icon_id for s in result.saved] == ["tabler:bell"] and store.get("tabler:bell").author == "bo"
    assert result.stopped is None
    ((edit, why),) = result.set_aside
    assert edit.icon_id == "tabler:home" and "edited by cy" in why
    assert journal.all() == []  # the conflicting edit is set aside, not dropped
    assert "tabler:home" in journal.set_aside_path.read_text()


def test_unreachable_database_errors_never_show_the_password() -> None:
    store = OverrideStore("postgresql://reviewer:s3cret-pw@127.0.0.1:1/icons", connect_timeout=2)
    with pytest.raises(StoreUnavailable) as caught:
        store.load_all()
    assert "s3cret-pw" not in str(caught.value)
    assert "host 127.0.0.1:1, database icons" in str(caught.value)
