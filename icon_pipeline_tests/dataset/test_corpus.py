"""The training corpus: concepts across sets, joined to library groups, held out for fitting, and the
leak guard that keeps the external benchmark's sets (and Lucide and Feather) out of training."""

from __future__ import annotations

import hashlib
from pathlib import Path

from icon_pipeline.dataset.corpus import CORPUS_GROUP_PREFIX, build_corpus, drawing_texts
from icon_pipeline.dataset.leaks import training_leaks
from icon_pipeline_tests.icon_set_packages import shape_svg, write_phosphor

NAMES = {"t:home": "home", "t:bell": "bell", "t:lock": "lock", "t:star": "star"}
GROUP_OF = {"t:home": "g-home", "t:bell": "g-bell", "t:lock": "g-lock", "t:star": "g-star"}
SPLIT = {"g-home": "train", "g-bell": "train", "g-lock": "heldout", "g-star": "train"}


def row(set_name: str, name: str, style: str = "regular", aliases=(), tags=()) -> dict:
    return {
        "set": set_name,
        "name": name,
        "style": style,
        "aliases": list(aliases),
        "tags": list(tags),
        "png_path": f"/{set_name}/{style}/{name}.png",
        "drawing_id": f"{set_name}:{style}:{name}",
    }


def test_drawing_texts_are_its_names_aliases_and_tags_as_words() -> None:
    assert drawing_texts(row("mdi", "cog-outline", aliases=["settings", "Gear"], tags=["Settings"])) == [
        "cog outline",
        "setting",
        "gear",
    ]


def test_concepts_join_library_groups_across_sets_and_held_out_groups_stay_unseen() -> None:
    drawings = [
        row("mdi", "house", aliases=["home"]),
        row("iconoir", "home"),
        row("iconoir", "home", "solid"),
        row("mdi", "rocket"),
        row("remixicon", "rocket", "line"),
        row("iconoir", "lock"),  # the library's lock is held out: never trained on
    ]
    build = build_corpus(drawings, NAMES, GROUP_OF, SPLIT, fit_share=0.0)
    groups = {p["group_id"]: p for p in build.pairs}
    assert set(groups) == {"g-home", CORPUS_GROUP_PREFIX + "rocket"}
    assert sorted(groups["g-home"]["sets"]) == ["iconoir", "mdi"] and groups["g-home"]["linked"]
    assert len(groups["g-home"]["png_paths"]) == 3 and "house" in groups["g-home"]["captions"]
    assert (
        sorted(groups["corpus:rocket"]["sets"]) == ["mdi", "remixicon"]
        and not groups["corpus:rocket"]["linked"]
    )
    assert build.heldout_drawings == 1 and build.fitting == []
    # Every trained drawing of a library concept is an exemplar of it (rocket names none; lock is held out).
    assert sorted((e["set"], e["group_ids"][0]) for e in build.exemplars) == [
        ("iconoir", "g-home"),
        ("iconoir", "g-home"),
        ("mdi", "g-home"),
    ]


def test_a_share_of_linked_groups_becomes_fitting_queries_instead_of_training() -> None:
    drawings = [row("mdi", name, aliases=[f"{name} alias"]) for name in ("home", "bell", "star")] + [
        row("iconoir", name) for name in ("home", "bell", "star")
    ]
    everything = build_corpus(drawings, NAMES, GROUP_OF, SPLIT, fit_share=1.0)
    assert everything.pairs == [], "every linked group held out"
    images = [f for f in everything.fitting if f["kind"] == "image"]
    texts = {(f["set"], f["text"]): f["relevant_groups"] for f in everything.fitting if f["kind"] == "text"}
    assert texts[("mdi", "bell alias")] == ["g-bell"] and texts[("iconoir", "home")] == ["g-home"]
    # Each fit group's drawings by one set are its fitting queries; the other set's are exemplars, so
    # a query meets its concept drawn in every style but its own, as an unseen set's query does.
    assert len(images) == 3 and len(everything.exemplars) == 3
    for query in images:
        others = [e for e in everything.exemplars if e["group_ids"] == query["relevant_groups"]]
        assert len(others) == 1 and others[0]["set"] != query["set"]
        assert others[0]["png_path"] != query["image_path"]
    half = build_corpus(drawings, NAMES, GROUP_OF, SPLIT, fit_share=0.5, seed=1)
    trained = {p["group_id"] for p in half.pairs}
    fitted = {g for f in half.fitting for g in f["relevant_groups"]}
    assert trained.isdisjoint(fitted) and trained | fitted == {"g-home", "g-bell", "g-star"}


def test_the_leak_guard_finds_a_benchmark_drawing_and_a_banned_or_benchmark_set(tmp_path: Path) -> None:
    write_phosphor(tmp_path, {"bell": ["alarm"]})
    copied = (tmp_path / "phosphor" / "2.1.1" / "package" / "assets" / "fill" / "bell-fill.svg").read_bytes()
    clean = {hashlib.sha256(shape_svg(1).encode() + b"x").hexdigest(): "mdi:filled:x"}
    assert training_leaks(clean, ["mdi", "iconoir"], tmp_path) == []
    leaked = {**clean, hashlib.sha256(copied).hexdigest(): "local:outline:my-bell"}
    problems = training_leaks(leaked, ["mdi"], tmp_path)
    assert problems == ["local:outline:my-bell is a copy of the benchmark drawing phosphor:fill:bell"]
    sets = training_leaks(clean, ["mdi", "phosphor", "lucide"], tmp_path)
    assert any("lucide" in p and "never used" in p for p in sets)
    assert any("phosphor is a benchmark set" in p for p in sets)
