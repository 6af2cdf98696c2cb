"""Keyword search (BM25) over names, tags and captions: no model needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from icon_pipeline.search.channels import (
    KeywordChannel,
)
from icon_pipeline.search.keywords import BM25Index, tokenize
from icon_pipeline.search.query import (
    validate_text_query,
)


def test_keyword_search_ranks_by_shared_words_and_pads_with_nothing() -> None:
    channel = KeywordChannel(
        BM25Index.build(
            {
                "eye-off": ["eye off", "hide", "hide layer", "invisible"],
                "eye": ["eye", "show", "visible"],
                "layers": ["layers", "stack", "layer order"],
            }
        )
    )
    hits = channel.search(validate_text_query("  Hide   layers "), 10)
    assert [h.icon_id for h in hits] == ["eye-off", "layers"]  # no guess for "eye"
    assert hits[0].score > hits[1].score > 0
    assert channel.search("teapot", 10) == []


def test_bm25_ranks_the_obvious_match_first() -> None:
    documents = {
        "trash": ["trash", "delete", "bin", "remove", "garbage"],
        "folder-plus": ["folderPlus", "create new folder", "add directory"],
        "arrow-left": ["arrow-left", "back", "previous", "direction"],
        "file": ["file", "document", "paper"],
        "empty": ["the", "of"],
    }
    index = BM25Index.build(documents)
    assert index.ranked_ids("delete the garbage", 3)[0] == "trash"
    assert index.ranked_ids("paper files", 3)[0] == "file"  # plural folded
    assert index.ranked_ids("create a new folder", 3)[0] == "folder-plus"
    assert index.ranked_ids("go back", 3) == ["arrow-left"]  # only matching icons are returned
    assert index.search("zebra unicorn", 5) == []
    assert tokenize("folderPlus_Icon files") == ["folder", "plus", "file"]
    assert tokenize("news, don't") == ["news", "don"]  # not "new"; the clitic is no word ("t")
    with pytest.raises(ValueError, match="at least one document"):
        BM25Index.build({})


@pytest.fixture(scope="module")
def tabler_keywords(tabler_package: Path) -> tuple[BM25Index, list[str]]:
    """BM25 over the real Tabler library's names and tags (no captions), and its icon names."""
    icons = json.loads((tabler_package / "icons.json").read_text())
    documents = {
        name: [name, *(str(t) for t in meta["tags"] if t is not None)] for name, meta in icons.items()
    }
    return BM25Index.build(documents), list(icons)


def test_stop_words_never_match_letter_icons(tabler_keywords: tuple[BM25Index, list[str]]) -> None:
    index, _ = tabler_keywords
    assert index.query_terms("I want to hide the layer") == ["hide", "layer"]
    top = index.ranked_ids("I want to hide the layer", 10)
    assert top and not [name for name in top if "letter" in name], top
    assert top[0] in {"layers-off", "eye-off", "keyboard-hide"}, top
    assert not [name for name in index.ranked_ids("I don't want the trash", 10) if "letter" in name]
    # A query of nothing but a letter keeps it: "i" finds the letter i icons, "x" the x.
    assert all("letter-i" in name or "info" in name for name in index.ranked_ids("i", 5))
    assert index.ranked_ids("x", 1) == ["x"]
    assert index.ranked_ids("letter a", 1) == ["letter-a"]


def test_singular_and_plural_find_each_other(tabler_keywords: tuple[BM25Index, list[str]]) -> None:
    index, _ = tabler_keywords
    assert index.ranked_ids("folders", 2) == ["folders", "folder"]
    assert index.ranked_ids("folder", 2) == ["folder", "folders"]
    # plurals beyond a plain "s", folded to the singular the library uses
    assert index.ranked_ids("boxes", 1) == index.ranked_ids("box", 1) == ["box"]
    assert index.ranked_ids("batteries", 1) == ["battery"]
    assert index.query_terms("news") == ["news"]  # not a plural of "new"


def test_exact_matches_rank_first(tabler_keywords: tuple[BM25Index, list[str]]) -> None:
    index, names = tabler_keywords
    # trash lists "delete" as its first tag; plain BM25 put it 60th behind names that merely contain it
    assert "trash" in index.ranked_ids("delete", 3)
    shopping = index.ranked_ids("shopping cart", 50)
    assert shopping[0] == "shopping-cart" and shopping.index("shopping-cart") < shopping.index(
        "shopping-cart-off"
    )
    assert index.ranked_ids("shopping cart off", 1) == ["shopping-cart-off"]
    assert index.ranked_ids("I don't want the trash", 1) == index.ranked_ids("trash icon", 1) == ["trash"]
    # every icon's whole name, as a designer would type it, ranks that icon first
    not_first = [(name, index.ranked_ids(name, 3)) for name in names if index.ranked_ids(name, 1) != [name]]
    assert not not_first, not_first[:10]
    assert not [n for n in names[:300] if index.ranked_ids(n.replace("-", " ").title(), 1) != [n]]
