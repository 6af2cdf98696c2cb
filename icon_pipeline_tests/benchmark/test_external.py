"""The external benchmark's queries: name matching, the novel slice, merging, and sets that change."""

from __future__ import annotations

from icon_pipeline.benchmark.external import build_external_queries
from icon_pipeline.library.matching import NameIndex

LIBRARY = {
    "t:outline:home": "home",
    "t:filled:home": "home",
    "t:outline:settings": "settings",
    "t:outline:bell": "bell",
    "t:outline:bell-ringing": "bell-ringing",
    "t:outline:shopping-cart": "shopping-cart",
}
GROUPS = {
    "t:outline:home": "g-home",
    "t:filled:home": "g-home",
    "t:outline:settings": "g-settings",
    "t:outline:bell": "g-bell",
    "t:outline:bell-ringing": "g-bell-ringing",
    "t:outline:shopping-cart": "g-cart",
}
OWN_TEXTS = {
    "g-home": ["home", "house", "dashboard"],
    "g-settings": ["settings", "cog", "gear", "preferences"],
    "g-bell": ["bell", "notification", "alarm"],
    "g-bell-ringing": ["bell ringing", "ring"],
    "g-cart": ["shopping cart", "buy"],
}


def drawing(name: str, style: str = "regular", aliases=(), tags=()) -> dict:
    return {
        "name": name,
        "style": style,
        "aliases": list(aliases),
        "tags": list(tags),
        "png_path": f"/{name}-{style}.png",
    }


def test_names_match_by_words_plurals_and_aliases_but_never_by_near_names() -> None:
    index = NameIndex.build(LIBRARY)
    assert index.match("Shopping_Carts") == {"t:outline:shopping-cart"}  # case, separators, plural
    assert index.match("house", aliases=["home", "home-alt"]) == {"t:outline:home", "t:filled:home"}
    assert index.match("bell") == {"t:outline:bell"}, "bell-ringing is another concept"
    assert index.match("bells-ringing") == {"t:outline:bell-ringing"}
    assert index.match("gear") == frozenset(), "a tag is not a name"


def test_queries_per_slice_with_the_novel_words_judged_against_the_icons_own_texts() -> None:
    drawings = [
        drawing("house", aliases=["home"], tags=["abode", "house", "dwelling place"]),
        drawing("house", "fill", aliases=["home"], tags=["abode", "house", "dwelling place"]),
        drawing("gear", aliases=["settings"], tags=["sprocket", "preferences", "setup options"]),
        drawing("bell", tags=["alarm", "chime"]),
        drawing("rocket", tags=["launch"]),  # names nothing in the library
    ]
    result = build_external_queries(
        "someset", drawings, LIBRARY, GROUPS, OWN_TEXTS, {"g-bell"}, min_matches=2, max_queries=100
    )
    assert result.set_icons == 4 and result.matched_icons == 3 and result.skipped is None
    by_task: dict[str, dict] = {}
    for row in result.rows:
        by_task.setdefault(row["task"], {})[row.get("text") or row["image_path"]] = row
    assert set(by_task["tags-all"]) == {
        "abode",
        "house",
        "dwelling place",
        "sprocket",
        "preferences",
        "setup options",
        "alarm",
        "chime",
    }
    # "house" and "preferences" are the icons' own words; "setup options" shares none.
    assert set(by_task["tags-novel"]) == {"abode", "dwelling place", "sprocket", "setup options", "chime"}
    assert by_task["tags-all"]["abode"]["relevant_group_ids"] == ["g-home"]
    assert len(by_task["drawings"]) == 4, "every style of every matched icon; rocket none"
    assert by_task["drawings"]["/house-fill.png"]["relevant_group_ids"] == ["g-home"]
    assert by_task["tags-all"]["chime"]["heldout"] and not by_task["tags-all"]["abode"]["heldout"]
    assert all(row["exclude_source"] is False for row in result.rows)
    assert result.summary()["tags-novel_queries"] == 5


def test_a_text_written_for_two_icons_is_one_query_relevant_to_both() -> None:
    drawings = [drawing("house", aliases=["home"], tags=["place"]), drawing("bell", tags=["place", "ding"])]
    result = build_external_queries("s", drawings, LIBRARY, GROUPS, OWN_TEXTS, min_matches=1, max_queries=100)
    place = [r for r in result.rows if r["task"] == "tags-all" and r["text"] == "place"]
    assert len(place) == 1 and place[0]["relevant_group_ids"] == ["g-bell", "g-home"]


def test_a_set_with_too_few_matches_is_skipped_with_the_reason() -> None:
    result = build_external_queries(
        "tiny", [drawing("bell", tags=["x"])], LIBRARY, GROUPS, OWN_TEXTS, min_matches=5, max_queries=10
    )
    assert result.rows == [] and "only 1 of its 1 icons name a library icon" in result.skipped


def test_a_renamed_icon_in_a_new_version_is_a_changed_match_not_a_crash() -> None:
    old = [drawing("gear", aliases=["settings"], tags=["cog"]), drawing("bell", tags=["alarm"])]
    new = [drawing("cogwheel", tags=["cog"]), drawing("bell", tags=["alarm"])]  # renamed, alias dropped
    before = build_external_queries("s", old, LIBRARY, GROUPS, OWN_TEXTS, min_matches=1, max_queries=10)
    after = build_external_queries("s", new, LIBRARY, GROUPS, OWN_TEXTS, min_matches=1, max_queries=10)
    assert before.matched_icons == 2 and after.matched_icons == 1
    assert {r["text"] for r in after.rows if r["task"] == "tags-all"} == {"alarm"}


def test_each_slice_is_a_seeded_sample_of_at_most_max_queries() -> None:
    drawings = [drawing("bell", tags=[f"word{i}" for i in range(50)])]
    first = build_external_queries(
        "s", drawings, LIBRARY, GROUPS, OWN_TEXTS, min_matches=1, max_queries=7, seed=3
    )
    again = build_external_queries(
        "s", drawings, LIBRARY, GROUPS, OWN_TEXTS, min_matches=1, max_queries=7, seed=3
    )
    assert [r["text"] for r in first.rows if r["task"] == "tags-all"] == [
        r["text"] for r in again.rows if r["task"] == "tags-all"
    ]
    assert sum(r["task"] == "tags-all" for r in first.rows) == 7 and first.available["tags-all"] == 50
