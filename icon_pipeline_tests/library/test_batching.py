"""Batching: existing icons never change batch, new icons open new batches, deterministically."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icon_pipeline.library.batching import assign_batches
from icon_pipeline.library.records import IconRecord


def icon(icon_id: str, source: str = "tabler", style: str = "outline", collection: str = "") -> IconRecord:
    return IconRecord(
        icon_id=icon_id,
        source=source,
        name=icon_id,
        raw_name=icon_id,
        file_path=f"/x/{icon_id}.svg",
        format="svg",
        content_hash="0" * 64,
        style=style,
        collection=collection,
    )


def keys(records: list[IconRecord]) -> dict[str, str]:
    return {r.icon_id: r.batch_key for r in records}


def test_new_icons_are_packed_sorted_into_numbered_batches() -> None:
    icons = [icon(f"tabler:outline:{n}") for n in ("e", "a", "d", "c", "b")]
    result, new_keys = assign_batches(icons, {}, icons_per_batch=2)
    assert new_keys == ["tabler-outline-0001", "tabler-outline-0002", "tabler-outline-0003"]
    assert [r.icon_id for r in result] == [i.icon_id for i in icons], "input order kept"
    assert keys(result) == {
        "tabler:outline:a": "tabler-outline-0001",
        "tabler:outline:b": "tabler-outline-0001",
        "tabler:outline:c": "tabler-outline-0002",
        "tabler:outline:d": "tabler-outline-0002",
        "tabler:outline:e": "tabler-outline-0003",
    }


def test_existing_icons_keep_their_batch_and_new_ones_get_new_batches() -> None:
    existing = {"tabler:outline:a": "tabler-outline-0001", "tabler:outline:b": "tabler-outline-0007"}
    icons = [
        icon("tabler:outline:a"),
        icon("tabler:outline:b"),
        icon("tabler:outline:c"),
        icon("tabler:outline:0"),
    ]
    result, new_keys = assign_batches(icons, existing, icons_per_batch=10)
    assert new_keys == ["tabler-outline-0008"], "numbering continues after the highest existing batch"
    assert keys(result) == {
        **existing,
        "tabler:outline:c": "tabler-outline-0008",
        "tabler:outline:0": "tabler-outline-0008",
    }


def test_existing_keys_are_never_rekeyed_even_when_the_icon_changed_group() -> None:
    existing = {"a": "legacy-batch"}
    result, new_keys = assign_batches(
        [icon("a", source="other", style="filled")], existing, icons_per_batch=1
    )
    assert keys(result) == {"a": "legacy-batch"} and new_keys == []


def test_sources_styles_and_collections_never_share_a_batch() -> None:
    icons = [
        icon("t1"),
        icon("t2", style="filled"),
        icon("l1", source="my-folder", style=""),
        icon("f1", source="figma", style="", collection="Page 1"),
        icon("f2", source="figma", style="", collection="Page 2"),
    ]
    result, new_keys = assign_batches(icons, {}, icons_per_batch=100)
    assert keys(result) == {
        "t1": "tabler-outline-0001",
        "t2": "tabler-filled-0001",
        "l1": "my-folder-all-0001",
        "f1": "figma-page-1-0001",  # a Figma page is the collection: batched per page
        "f2": "figma-page-2-0001",
    }
    assert sorted(new_keys) == sorted(set(keys(result).values()))


def test_group_key_replaces_the_prefix_and_is_made_key_safe() -> None:
    icons = [icon("f1", source="figma"), icon("f2", source="figma"), icon("f3", source="figma")]
    existing = {"f0": "figma-Icons/Arrows-0003"}  # a key that was never slugged is not counted
    result, new_keys = assign_batches(
        icons, existing, icons_per_batch=2, group_key=lambda i: f"{i.source}:Icons / Arrows"
    )
    assert new_keys == ["figma-Icons-Arrows-0001", "figma-Icons-Arrows-0002"]
    assert keys(result)["f3"] == "figma-Icons-Arrows-0002"


def test_assignment_is_deterministic_whatever_the_input_order() -> None:
    icons = [icon(f"tabler:outline:{i:03d}") for i in range(50)]
    shuffled = icons[:]
    random.Random(7).shuffle(shuffled)
    assert keys(assign_batches(icons, {}, 7)[0]) == keys(assign_batches(shuffled, {}, 7)[0])


def test_bad_arguments_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="icons_per_batch"):
        assign_batches([icon("a")], {}, 0)
    with pytest.raises(ValueError, match="duplicate icon_id 'a'"):
        assign_batches([icon("a"), icon("a")], {}, 5)


@settings(max_examples=60, deadline=None)
@given(
    ids=st.sets(st.text("abcdefgh", min_size=1, max_size=4), min_size=1, max_size=40),
    known_share=st.floats(0, 1),
    per_batch=st.integers(1, 6),
)
def test_growth_never_moves_an_icon(ids: set[str], known_share: float, per_batch: int) -> None:
    ordered = sorted(ids)
    first_round = ordered[: int(len(ordered) * known_share)]
    before, _ = assign_batches([icon(i) for i in first_round], {}, per_batch)
    existing = keys(before)
    after, new_keys = assign_batches([icon(i) for i in ordered], existing, per_batch)
    result = keys(after)
    assert all(result[i] == existing[i] for i in existing), "no existing icon moved"
    assert not set(new_keys) & set(existing.values()), "new batches are new keys"
    for key in new_keys:
        members = [i for i, k in result.items() if k == key]
        assert 1 <= len(members) <= per_batch
