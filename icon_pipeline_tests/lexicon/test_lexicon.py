"""Lexicon mining: the spec's example name (SEED below, an Adobe Acrobat icon name), affixes found
by statistics, Tabler names, the CLI."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icon_pipeline.captions.routing import route_for_useful_tokens, vision_count
from icon_pipeline.core.config import CaptionsConfig
from icon_pipeline.core.paths import get_paths
from icon_pipeline.lexicon.mining import (
    REASON_STYLE,
    Lexicon,
    LexiconConfig,
    NameItem,
    affix_reason,
    lexicon_cli,
    mine_lexicon,
    normalised_base_name,
)
from icon_pipeline.library.records import IconRecord

SEED = "SDC_MarkForRedaction_18_N-SDC___Icons_Acrobat_Desktop_Web_Mobile"
SEED_TERMS = ["mark for redaction", "mark", "for", "redaction"]
ACTIONS = [
    "AddComment", "Save", "DeleteTrash", "ShareLink", "OpenFolder", "CloseWindow", "Print", "ZoomIn",
    "ZoomOut", "RotateLeft", "Highlight", "Stamp", "Sign", "Redact", "Compress", "Export", "Import",
    "Crop", "Undo", "Redo", "Search", "Bookmark", "Attach", "Lock", "Unlock", "Filter", "Sort", "Edit",
    "Copy", "Paste", "CutSelection", "FillAndSign", "RequestSignatures", "OrganizePages",
]  # fmt: skip
TABLER_ICONS_JSON = get_paths().sources_dir / "tabler" / "3.51.0" / "package" / "icons.json"


def seed_library() -> list[NameItem]:
    """34 SDC names sharing SEED's affixes, sizes 18 and 24, plus SEED itself."""
    rng = random.Random(7)
    names = [f"SDC_{a}_{rng.choice([18, 24])}_N-SDC___Icons_Acrobat_Desktop_Web_Mobile" for a in ACTIONS]
    return [NameItem(key=str(i), name=n) for i, n in enumerate([*names, SEED])]


def seed_key(items: list[NameItem]) -> str:
    return next(item.key for item in items if item.name == SEED)


# --- the spec's example name -----------------------------------------------------------------------------


def test_seed_example_in_its_library_is_exact() -> None:
    items = seed_library()
    lexicon = mine_lexicon(items)
    entry = lexicon.entries[seed_key(items)]
    assert entry.terms == SEED_TERMS
    assert entry.phrases == ["mark for redaction"]
    assert entry.tokens == ["mark", "for", "redaction"]
    assert entry.variant == {"size": "18", "code": "n"}
    assert entry.useful_token_count == 2  # "for" is a stopword: this icon goes to the VLM
    assert route_for_useful_tokens(entry.useful_token_count, CaptionsConfig().min_text_tokens) == "vision"
    assert entry.base_name == "mark-for-redaction"
    reasons = dict(entry.dropped)
    assert reasons["18"] == "size"
    # the affixes were found by the statistics, not by the hand lists
    for word in ("sdc", "n", "icons", "acrobat", "desktop", "web", "mobile"):
        assert reasons[word] == affix_reason(1.0) == "library-wide affix (in 100% of names)"
        assert lexicon.boilerplate[word] == 1.0


def test_seed_library_size_variants_share_a_base_name() -> None:
    items = [*seed_library(), NameItem(key="big", name=SEED.replace("_18_", "_24_"))]
    lexicon = mine_lexicon(items)
    small, big = lexicon.entries[seed_key(items)], lexicon.entries["big"]
    assert big.terms == SEED_TERMS and big.variant["size"] == "24"
    assert small.base_name == big.base_name
    # another name of the library: CamelCase split, affixes gone
    other = next(e for e in lexicon.entries.values() if e.name.startswith("SDC_RequestSignatures_"))
    assert other.terms == ["request signatures", "request", "signatures"]


def test_seed_name_alone_gives_the_same_terms_by_the_hand_lists() -> None:
    """Decision: alone (no statistics) the listed words in `_`-separated affix runs still go."""
    entry = mine_lexicon([NameItem(key="k", name=SEED)]).entries["k"]
    assert entry.terms == SEED_TERMS
    reasons = dict(entry.dropped)
    assert reasons == {
        "sdc": "product",
        "18": "size",
        "n": "variant code",
        "icons": "generic",
        "acrobat": "product",
        "desktop": "platform",
        "web": "platform",
        "mobile": "platform",
    }
    assert normalised_base_name(SEED) == "mark-for-redaction"


# --- statistics do real work ------------------------------------------------------------------------


def test_made_up_affixes_are_dropped_by_statistics() -> None:
    names = [f"ZQX_{action}_Foo_Bar" for action in ACTIONS]
    lexicon = mine_lexicon([NameItem(key=n, name=n) for n in names])
    entry = lexicon.entries["ZQX_DeleteTrash_Foo_Bar"]
    assert entry.terms == ["delete trash", "delete", "trash"]
    assert set(lexicon.boilerplate) == {"zqx", "foo", "bar"}
    assert dict(entry.dropped)["zqx"] == "library-wide affix (in 100% of names)"
    # No hand list knows these words: below the statistics' minimum library size they stay.
    few = mine_lexicon([NameItem(key=n, name=n) for n in names[:5]])
    # (CamelCase compounds: separators are field separators, so "foo" and "bar" stay apart)
    assert few.entries["ZQX_DeleteTrash_Foo_Bar"].terms == [
        "delete trash",
        "zqx",
        "delete",
        "trash",
        "foo",
        "bar",
    ]
    assert few.boilerplate == {}


def test_shared_trailing_segments_go_below_the_word_threshold() -> None:
    """A suffix on a quarter of the names: under the 30 % word share, over the 20 % segment share."""
    names = [f"{a}_Foo_Bar" if i % 4 == 0 else a for i, a in enumerate(ACTIONS)]
    lexicon = mine_lexicon([NameItem(key=n, name=n) for n in names])
    assert lexicon.entries["AddComment_Foo_Bar"].terms == ["add comment", "add", "comment"]
    assert 0.2 <= lexicon.boilerplate["foo"] < 0.3
    # a higher segment threshold keeps it
    strict = mine_lexicon([NameItem(key=n, name=n) for n in names], LexiconConfig(segment_share=0.5))
    assert "foo" in strict.entries["AddComment_Foo_Bar"].tokens


def test_frequent_meaningful_word_is_not_dropped_below_the_threshold() -> None:
    """Like Tabler's "brand" (7 %) and "off" (10 %): frequent but under 30 %, so kept."""
    names = [*[f"brand-{a.lower()}" for a in ACTIONS[:6]], *[a.lower() for a in ACTIONS]]
    lexicon = mine_lexicon([NameItem(key=n, name=n) for n in names])
    assert lexicon.entries["brand-save"].terms == ["brand save", "brand", "save"]
    assert lexicon.boilerplate == {}


@pytest.mark.parametrize(
    ("name", "terms", "variant"),
    [
        ("ic_fluent_arrow_left_24_regular", ["fluent arrow left", "fluent", "arrow", "left"], None),
        ("Home24Regular", ["home"], {"size": "24", "style": "regular"}),
        ("ic_home_24dp@2x", ["home"], {"size": "24", "scale": "2x"}),
        ("Icon/Arrow/Left/24px", ["arrow left", "arrow", "left"], {"size": "24"}),
        ("bell_off_hdpi", ["bell off", "bell", "off"], {"scale": "hdpi"}),
        ("icon-bell-16x16-web", ["icon bell", "icon", "bell"], {"size": "16x16"}),
        ("home-outline", ["home"], {"style": "outline"}),
        ("Bell/Size=24, Style=Outline", ["bell"], {"size": "24", "style": "outline"}),
        ("PDFFile", ["pdf file", "pdf", "file"], {}),
        ("iOSShare", ["ios share", "ios", "share"], {}),
        ("Navigation_ArrowLeft", ["arrow left", "navigation", "arrow", "left"], {}),
    ],
)
def test_sizes_dpi_platform_and_style_marks_in_single_names(
    name: str, terms: list[str], variant: dict[str, str] | None
) -> None:
    entry = mine_lexicon([NameItem(key="k", name=name)]).entries["k"]
    assert entry.terms == terms
    if variant is not None:
        assert entry.variant == variant


def test_platform_words_only_dropped_as_affixes() -> None:
    lexicon = mine_lexicon(
        [
            NameItem("a", "Share_Web"),  # set off by "_": an affix
            NameItem("b", "device-desktop"),  # one kebab name: the desktop device
            NameItem("c", "HomeIcon_24_Android"),  # beyond a size: an affix
            NameItem("d", "apple"),  # the only word: meaning
        ]
    )
    assert lexicon.entries["a"].terms == ["share"]
    assert lexicon.entries["b"].terms == ["device desktop", "device", "desktop"]
    assert lexicon.entries["c"].terms == ["home icon", "home", "icon"]
    assert ("android", "platform") in lexicon.entries["c"].dropped
    assert lexicon.entries["d"].terms == ["apple"]


# --- tags -------------------------------------------------------------------------------------------


def test_tags_are_sanitised() -> None:
    entry = mine_lexicon(
        [
            NameItem(
                "k",
                "bell",
                tags=[" Notification ", "ALERT", "alert", "push-message", "2", "x", "", None, 7, "Icon"],
            )
        ]
    ).entries["k"]
    assert entry.tag_terms == ["push message", "notification", "alert", "push", "message"]
    dropped = dict(entry.dropped)
    assert dropped["2"] == "number" and dropped["7"] == "number"
    assert dropped["x"] == "single character" and dropped["icon"] == "generic"
    assert entry.useful_token_count == 5  # bell + notification, alert, push, message
    assert route_for_useful_tokens(entry.useful_token_count, CaptionsConfig().min_text_tokens) == "text"


def test_tags_given_as_one_comma_separated_string() -> None:
    entry = mine_lexicon([NameItem("k", "gear", tags="settings, cog wheel ,config")]).entries["k"]
    assert entry.tag_terms == ["cog wheel", "settings", "cog", "wheel", "config"]


# --- Tabler -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tabler() -> Lexicon:
    if not TABLER_ICONS_JSON.exists():
        pytest.skip(f"Tabler icons not fetched at {TABLER_ICONS_JSON} (run `make fetch-data`)")
    data = json.loads(TABLER_ICONS_JSON.read_text("utf-8"))
    items = []
    for name, meta in data.items():
        for style in meta["styles"]:
            # filled icons carry the style as a suffix (the way Tabler's SVG packages name them)
            shown = name if style == "outline" else f"{name}-{style}"
            items.append(NameItem(key=f"{name}:{style}", name=shown, tags=meta["tags"]))
    return mine_lexicon(items)


def test_tabler_keeps_its_meaningful_frequent_words(tabler: Lexicon) -> None:
    assert "brand" not in tabler.boilerplate and "off" not in tabler.boilerplate
    layers_off = tabler.entries["layers-off:outline"]
    assert layers_off.terms == ["layers off", "layers", "off"]
    assert layers_off.useful_token_count >= 3
    github = tabler.entries["brand-github:outline"]
    assert github.terms == ["brand github", "brand", "github"]
    assert "git" in github.tag_terms


def test_tabler_filled_variant_is_a_style(tabler: Lexicon) -> None:
    filled = tabler.entries["arrow-big-down-lines:filled"]
    outline = tabler.entries["arrow-big-down-lines:outline"]
    assert filled.variant["style"] == "filled"
    assert ("filled", REASON_STYLE) in filled.dropped
    assert filled.terms == outline.terms == ["arrow big down lines", "arrow", "big", "down", "lines"]
    assert filled.base_name == outline.base_name == "arrow-big-down-lines"


def test_tabler_names_that_look_like_marks_keep_their_meaning(tabler: Lexicon) -> None:
    expected = {
        "device-desktop:outline": ["device desktop", "device", "desktop"],
        "chart-line:outline": ["chart line", "chart", "line"],
        "scale-outline:outline": ["scale outline", "scale", "outline"],
        "bold:outline": ["bold"],
        "badge-3d:outline": ["badge 3d", "badge", "3d"],
        "a-b-2:outline": ["a b 2"],
        "clock-24:outline": ["clock 24", "clock"],
        "letter-a-small:outline": ["letter a small", "letter", "small"],
        "asset:filled": ["asset"],
    }
    for key, terms in expected.items():
        assert tabler.entries[key].terms == terms, key
    assert tabler.entries["a-b-2:outline"].base_name != tabler.entries["a-b:outline"].base_name
    assert tabler.entries["asset:filled"].variant == {"style": "filled"}


def test_tabler_routes_almost_everything_to_the_text_llm(tabler: Lexicon) -> None:
    min_text_tokens = CaptionsConfig().min_text_tokens  # the configured threshold's default
    to_vision = vision_count((e.useful_token_count for e in tabler.entries.values()), min_text_tokens)
    assert to_vision / len(tabler.entries) < 0.05  # ~10 designer tags each


def test_style_from_the_catalog_record() -> None:
    icon = IconRecord(
        icon_id="tabler:bell:filled",
        source="tabler",
        name="bell",
        raw_name="bell",
        file_path="/x/bell.svg",
        format="svg",
        content_hash="0" * 64,
        tags=("alarm", "ring"),
        style="filled",
    )
    entry = mine_lexicon([NameItem.from_icon(icon)]).entries["tabler:bell:filled"]
    assert entry.variant == {"style": "filled"} and entry.terms == ["bell"]
    assert entry.tag_terms == ["alarm", "ring"]


# --- base names -------------------------------------------------------------------------------------


def test_normalised_base_name_groups_variants_only() -> None:
    assert normalised_base_name("bell") == "bell"
    assert normalised_base_name("bell-outline") == "bell"
    assert normalised_base_name("bell_filled_24") == "bell"
    assert normalised_base_name("Bell@2x") == "bell"
    assert normalised_base_name("bell-off") == "bell-off"
    assert normalised_base_name("bell-off-filled") == "bell-off"
    assert normalised_base_name("clock-24") == "clock-24"


# --- robustness -------------------------------------------------------------------------------------


def _assert_clean(lexicon: Lexicon) -> None:
    for entry in lexicon.entries.values():
        for term in [*entry.terms, *entry.phrases, *entry.tokens, *entry.tag_terms]:
            assert term and term == term.strip() and "  " not in term, (entry.name, term)
            assert not term.replace(" ", "").isnumeric(), (entry.name, term)
        for token, reason in entry.dropped:
            assert token and reason
        assert entry.useful_token_count >= 0
        assert entry.terms == list(dict.fromkeys(entry.terms))


name_text = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"[A-Za-z0-9_\-. /@=]{0,40}", fullmatch=True),
    st.sampled_from(["", "___", "--", "123", "0", "24px", "@2x", "½²", "ǅemo", "İstanbul", "a"]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=st.lists(name_text, max_size=30),
    tags=st.lists(st.one_of(st.text(max_size=15), st.none(), st.integers())),
)
def test_mining_never_crashes_nor_emits_empty_or_numeric_terms(names: list[str], tags: list[object]) -> None:
    items = [NameItem(key=str(i), name=name, tags=tags) for i, name in enumerate(names)]
    lexicon = mine_lexicon(items)
    assert set(lexicon.entries) == {item.key for item in items}
    _assert_clean(lexicon)
    for name in names[:3]:
        assert isinstance(normalised_base_name(name), str)


def test_bad_items_are_recorded_and_the_batch_goes_on() -> None:
    lexicon = mine_lexicon([NameItem("a", "bell"), NameItem("a", "bell-off"), NameItem("b", None)])  # type: ignore[arg-type]
    assert list(lexicon.entries) == ["a"]
    assert any("duplicate key 'a'" in reason for reason in lexicon.failures.values())
    assert "not text" in lexicon.failures["b"]


# --- versions and storage ---------------------------------------------------------------------------


def test_version_is_deterministic_and_tracks_entries() -> None:
    items = seed_library()
    first, again = mine_lexicon(items), mine_lexicon(list(reversed(items)))
    assert first.version() == again.version()
    assert len(first.version()) == 16
    changed = mine_lexicon([*items[:-1], NameItem(items[-1].key, SEED, tags=["redact"])])
    assert changed.version() != first.version()


def test_records_round_trip_through_parquet(tmp_path: Path) -> None:
    items = [*seed_library(), NameItem("t", "bell-off-filled", tags=["mute", "silent"])]
    lexicon = mine_lexicon(items)
    path = tmp_path / "lexicon.parquet"
    pd.DataFrame(lexicon.to_records()).to_parquet(path)
    restored = Lexicon.from_records(pd.read_parquet(path).to_dict("records"), lexicon.boilerplate)
    assert restored.version() == lexicon.version()
    assert restored.entries["t"] == lexicon.entries["t"]
    assert restored.vocabulary == lexicon.vocabulary
    assert json.loads(json.dumps(lexicon.to_records())) == lexicon.to_records()


# --- CLI --------------------------------------------------------------------------------------------


def test_lexicon_cli_prints_one_json_line_per_name(tmp_path: Path) -> None:
    rng = random.Random(3)
    lines = [f"SDC_{a}_{rng.choice([18, 24])}_N-SDC___Icons_Acrobat_Desktop_Web_Mobile" for a in ACTIONS]
    body = "\n".join([*lines, "", SEED + "\tRedact, hide text ,2", "   "]).encode()
    bad = b"caf\xe9_Menu\tfood\n"  # Latin-1, not UTF-8
    names_file = tmp_path / "names.txt"
    names_file.write_bytes(body + b"\n" + bad)
    out, err = io.StringIO(), io.StringIO()
    assert lexicon_cli(names_file, out, err) == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == len(ACTIONS) + 2
    seed_row = next(r for r in rows if r["name"] == SEED)
    assert seed_row["terms"] == SEED_TERMS
    assert seed_row["tags"] == ["hide text", "redact", "hide", "text"]
    assert seed_row["useful_token_count"] == 5
    assert seed_row["variant"] == {"size": "18", "code": "n"}
    assert ["18", "size"] in seed_row["dropped"]
    assert set(seed_row) == {
        "name",
        "terms",
        "phrases",
        "tokens",
        "tags",
        "useful_token_count",
        "variant",
        "dropped",
    }
    assert f"{names_file}: line {len(ACTIONS) + 4}: not valid UTF-8" in err.getvalue()
    bad_row = rows[-1]
    assert bad_row["name"] == "caf\ufffd_Menu" and bad_row["tags"] == ["food"]


def test_lexicon_cli_missing_file(tmp_path: Path) -> None:
    err = io.StringIO()
    assert lexicon_cli(tmp_path / "nope.txt", io.StringIO(), err) == 2
    assert "nope.txt" in err.getvalue()
