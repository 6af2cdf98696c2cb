"""Typing an icon's name finds that icon first: name tiers (search/names.py) in hybrid search over real
channels (BM25 and the packaged sentence encoder in a real PostgreSQL) on a small real Tabler library,
and the `names` benchmark query set (benchmark/names.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from icon_pipeline.benchmark.names import NAMES_TASK, build_name_queries, name_relevance
from icon_pipeline.core.database import DatabaseInfo
from icon_pipeline.model.sentence_encoder import load_sentence_encoder
from icon_pipeline.search.channels import CAPTIONS, KEYWORDS, KeywordChannel, caption_channel
from icon_pipeline.search.fusion import FusionSettings
from icon_pipeline.search.hybrid import HybridSearch, LibraryIndex
from icon_pipeline.search.index import write_embeddings
from icon_pipeline.search.keywords import BM25Index
from icon_pipeline.search.names import EXACT, NEAR, NameMatcher, plain_name, spelled_name

# Families a designer meets first, and every Tabler icon whose first tag is "delete" (trash's rivals).
FAMILIES = ("settings", "star", "shopping-cart", "copy", "refresh", "trash", "adjustments")


@pytest.fixture(scope="module")
def tabler_icons(tabler_package: Path) -> dict[str, dict]:
    return json.loads((tabler_package / "icons.json").read_text())


@pytest.fixture(scope="module")
def library(tabler_icons: dict[str, dict]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """icon_id -> name and icon_id -> tags: outline icons of the families, and the "delete" ones;
    filled twins where Tabler has them (same name, another style)."""
    chosen = sorted(
        name
        for name, meta in tabler_icons.items()
        if name.split("-")[0] in FAMILIES
        or name.startswith("shopping-cart")
        or (meta["tags"] and str(meta["tags"][0]) == "delete")
    )
    names, tags = {}, {}
    for name in chosen:
        for style in ("outline", "filled"):
            if style in tabler_icons[name]["styles"]:
                icon_id = f"tabler:{style}:{name}"
                names[icon_id], tags[icon_id] = name, [str(t) for t in tabler_icons[name]["tags"] or []]
    return names, tags


@pytest.fixture(scope="module")
def db_url(postgres: DatabaseInfo, library: tuple[dict[str, str], dict[str, list[str]]]) -> Iterator[str]:
    """The captions channel's table: every icon's name and tags embedded by the packaged encoder."""
    names, tags = library
    database = f"names_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.libpq_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    url = postgres.libpq_url.replace("/postgres?", f"/{database}?")
    rows = [(i, t) for i in names for t in dict.fromkeys([names[i].replace("-", " "), *tags[i]])]
    with psycopg.connect(url, autocommit=True) as conn:
        write_embeddings(
            conn,
            CAPTIONS,
            [i for i, _ in rows],
            [_group(names[i]) for i, _ in rows],
            load_sentence_encoder().embed([t for _, t in rows]),
            texts=[t for _, t in rows],
        )
    yield url
    with psycopg.connect(postgres.libpq_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _group(name: str) -> str:
    return f"group:{name}"  # outline and filled of one name: one group, as training_pairs does


def _search(conn: psycopg.Connection, library, weights: dict[str, float], fold: bool) -> HybridSearch:
    names, tags = library
    keywords = BM25Index.build({i: [names[i], *tags[i]] for i in names})
    channels = {KEYWORDS: KeywordChannel(keywords), CAPTIONS: caption_channel(conn, load_sentence_encoder())}
    settings = FusionSettings(
        weights={"words": weights, "sentence": weights, "image": {}}, name_boost=0.0, fold_variants=fold
    )
    groups = {i: _group(n) for i, n in names.items()}
    return HybridSearch(channels, settings, LibraryIndex.build(groups, names, tags, ["outline", "filled"]))


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize(
    "weights",
    [{KEYWORDS: 0.2, CAPTIONS: 0.8}, {KEYWORDS: 0.0, CAPTIONS: 1.0}],  # the demo's fit; meaning alone
)
def test_an_icons_name_finds_it_first_whatever_the_channels_weigh(
    db_url: str, library, weights: dict[str, float], fold: bool
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        search = _search(conn, library, weights, fold)
        names = library[0]

        def ranked(query: str, k: int = 10) -> list[str]:
            return [names[h.icon_id] for h in search.search(query, k)]

        for query, icon in [
            ("settings", "settings"),
            ("star", "star"),
            ("shopping cart", "shopping-cart"),
            ("Shopping carts", "shopping-cart"),
            ("copy", "copy"),
            ("refresh", "refresh"),
            ("settings off", "settings-off"),  # a negation when the query says it
            ("copy x", "copy-x"),
        ]:
            assert ranked(query, 1) == [icon], (query, ranked(query))
        # Negations never lead a plain query: every icon that holds "shopping cart" without negating it first.
        cart = ranked("shopping cart", 40)
        assert cart.index("shopping-cart-off") > cart.index("shopping-cart-plus")
        assert cart.index("shopping-cart-x") > cart.index("shopping-cart-plus")
        # "delete": trash (its first tag) among the first three concepts (outline and filled: one).
        concepts = list(dict.fromkeys(ranked("delete", 12)))
        assert "trash" in concepts[:3], concepts


def test_name_levels_drop_styles_and_negations(library) -> None:
    names, tags = library
    matcher = NameMatcher.build(names, tags, ["outline", "filled"])
    by_name = {n: i for i, n in names.items()}
    levels = {names[i]: level for i, level in matcher.levels("settings").items()}
    assert levels["settings"] == EXACT and "settings-2" not in levels  # one word: its exact name only
    cart = {names[i]: level for i, level in matcher.levels("shopping cart").items()}
    assert cart["shopping-cart"] == EXACT and cart["shopping-cart-plus"] == NEAR
    assert "shopping-cart-off" not in cart and "shopping-cart-x" not in cart  # negations
    assert "adjustments" in levels  # Tabler's adjustments lists "settings" as its first tag
    assert matcher.levels("settings off")[by_name["settings-off"]] == EXACT
    assert matcher.levels("I want the trash icon")[by_name["trash"]] == EXACT  # stop and noise words
    # A library that writes the style into the name: "settings-filled" is settings.
    styled = NameMatcher.build({"a": "settings-filled", "b": "Settings (Outline)", "c": "settings-off"})
    assert styled.levels("settings") == {"a": EXACT, "b": EXACT}
    assert plain_name("outline") == "outline"  # a name that is only a style word keeps it


def test_names_query_set_counts_the_exact_icon_and_only_unambiguous_synonyms() -> None:
    names = {
        "o:settings": "settings",
        "f:settings": "settings",
        "o:settings-2": "settings-2",
        "o:trash": "trash",
        "o:stars": "stars",
        "o:star": "star",
    }
    set_icons = [
        ("phosphor", "gear", ("settings",), ("preferences", "cog", "trash")),  # alias -> settings
        ("fontawesome", "gear", ("settings",), ("cog", "setup")),
        ("phosphor", "trash", (), ("garbage", "delete", "cog")),  # "cog" now means two icons
        ("fontawesome", "star", (), ("stars",)),  # a library name: that name's own query
        ("phosphor", "planet", (), ("orbit",)),  # names no library icon
    ]
    rows = build_name_queries(names, set_icons, ["outline", "filled"], heldout_icons={"o:trash"})
    by_text = {r["text"]: r for r in rows}
    assert {r["text"] for r in rows if r["source"] == "name"} == {
        "settings",
        "settings 2",
        "trash",
        "stars",
        "star",
    }
    assert by_text["preferences"]["relevant_group_ids"] == ["name:settings"]
    assert by_text["setup"]["source"] == "synonym:fontawesome"
    assert by_text["garbage"]["relevant_group_ids"] == ["name:trash"] and by_text["garbage"]["heldout"]
    assert "cog" not in by_text and "orbit" not in by_text  # ambiguous, or no library icon
    assert by_text["stars"]["source"] == "name" and by_text["stars"]["relevant_group_ids"] == ["name:stars"]
    assert all(r["task"] == NAMES_TASK for r in rows) and len({r["query_id"] for r in rows}) == len(rows)
    relevance = name_relevance(names, ["outline", "filled"])
    assert relevance["o:settings"] == relevance["f:settings"] != relevance["o:settings-2"]
    assert relevance["o:star"] != relevance["o:stars"]  # the exact icon, not its plural
    assert spelled_name("Settings-Filled") == "settings"
