"""Benchmark queries (three tasks, held-out marking, determinism) and the augmentations they use."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from icon_pipeline.benchmark.report import BenchmarkQuery
from icon_pipeline.dataset.augment import (
    DEGRADATION_KINDS,
    AugmentConfig,
    augment,
    degrade,
    downsample_upsample,
)
from icon_pipeline.dataset.evalset import OfflineParaphraser, build_eval_set
from icon_pipeline.dataset.grouping import Group, normalise_caption, split_groups
from icon_pipeline.dataset.queries import (
    IntentTemplates,
    build_benchmark_queries,
    fitting_queries,
    group_terms,
    summarize_queries,
    task_counts,
)

CONCEPTS = {
    "delete": ("delete file", "remove item", "trash"),
    "add": ("add user", "create account", "new member"),
    "settings": ("open settings", "preferences", "configure app"),
    "search": ("search", "find text", "look up"),
    "home": ("home page", "go home", "main screen"),
    "bell": ("notification", "alert", "bell ring"),
    "lock": ("lock screen", "secure", "password"),
    "share": ("share link", "send", "forward message"),
    "chart": ("bar chart", "statistics", "analytics"),
    "calendar": ("calendar", "schedule", "event date"),
    "upload": ("upload file", "cloud", "publish"),
    "edit": ("edit text", "pencil", "modify"),
}


def draw_icon(seed: int, filled: bool) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("RGB", (224, 224), "white")
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x, y = rng.randint(20, 120), rng.randint(20, 120)
        box = (x, y, x + rng.randint(40, 90), y + rng.randint(40, 90))
        draw.ellipse(box, fill="black" if filled else None, outline="black", width=8)
    return image


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Group], dict[str, str]]:
    out = tmp_path_factory.mktemp("icons")
    groups, images = [], {}
    for k, (name, captions) in enumerate(CONCEPTS.items()):
        members = [f"{name}:outline", f"{name}:filled"] if k % 3 else [f"{name}:outline"]
        for member in members:
            path = out / f"{member.replace(':', '-')}.png"
            draw_icon(k, member.endswith("filled")).save(path)
            images[member] = str(path)
        groups.append(Group(f"g-{name}", tuple(sorted(members)), (name,), captions, members[0]))
    return groups, images


def build(library, out_dir: Path, total: int = 24, seed: int = 0, **kwargs):
    groups, images = library
    split = split_groups(groups, heldout_share=0.25, seed=0)
    paraphraser = OfflineParaphraser.default()
    eval_rows, _ = build_eval_set(groups, split, paraphraser, n_groups=6, seed=seed)
    rows = build_benchmark_queries(
        groups, split, eval_rows, images, out_image_dir=out_dir, total=total, seed=seed,
        paraphraser=paraphraser, **kwargs,
    )  # fmt: skip
    return rows, split, eval_rows


def test_even_split_and_row_contract(library, tmp_path: Path) -> None:
    rows, split, eval_rows = build(library, tmp_path)
    assert task_counts(2968) == {"text2img": 990, "semantic2img": 989, "img2img": 989}
    assert summarize_queries(rows)["per_task"] == {"img2img": 8, "semantic2img": 8, "text2img": 8}
    assert len({r["query_id"] for r in rows}) == len(rows)
    groups = {g.group_id: g for g in library[0]}
    training = {c for g in groups.values() for c in g.captions}
    for row in rows:
        assert row["relevant_group_ids"]
        assert row["heldout"] == all(split[g] == "heldout" for g in row["relevant_group_ids"])
        if row["task"] == "text2img":
            assert 1 <= len(row["text"].split()) <= 4 and row["text"] not in training
            assert row["image_path"] is None and row["source_icon_id"] is None
        elif row["task"] == "semantic2img":
            assert len(row["text"].split()) >= 4
        else:
            group = groups[row["relevant_group_ids"][0]]
            assert row["source_icon_id"] in group.members
            assert row["source_icon_id"] not in row["relevant_icon_ids"]
            assert row["relevant_icon_ids"]  # only multi-member groups give img2img sources
            assert row["degradation"] in DEGRADATION_KINDS
            assert Path(row["image_path"]).parent == tmp_path and Path(row["image_path"]).is_file()
    eval_captions = {r["caption"] for r in eval_rows}
    train_text = [r for r in rows if r["task"] == "text2img" and not r["heldout"]]
    assert all(r["text"] in eval_captions for r in train_text)


def test_heldout_groups_are_included_and_marked(library, tmp_path: Path) -> None:
    rows, split, _ = build(library, tmp_path)
    heldout = summarize_queries(rows)["heldout_per_task"]
    assert all(heldout[task] >= 1 for task in ("text2img", "semantic2img", "img2img"))
    assert any(not r["heldout"] for r in rows)


def test_two_builds_are_identical_including_image_bytes(library, tmp_path: Path) -> None:
    first, _, _ = build(library, tmp_path / "a")
    second, _, _ = build(library, tmp_path / "b")

    def portable(rows):
        return [{**r, "image_path": r["image_path"] and Path(r["image_path"]).name} for r in rows]

    assert portable(first) == portable(second)
    for a, b in zip(first, second, strict=True):
        if a["image_path"]:
            assert Path(a["image_path"]).read_bytes() == Path(b["image_path"]).read_bytes()
    other, _, _ = build(library, tmp_path / "c", seed=1)
    assert portable(other) != portable(first)


def test_semantic_sentences_follow_the_templates() -> None:
    templates = IntentTemplates.load()
    rng = random.Random(0)
    verb_sentence = templates.sentence("hide layer", rng)
    assert "hide" in verb_sentence and "layer" in verb_sentence
    assert any(t.format(verb="hide", object="layer") == verb_sentence for t in templates.verb_object)
    noun_sentence = templates.sentence("external link", rng)
    assert any(t.format(phrase="external link") == noun_sentence for t in templates.noun)


def test_total_is_a_cap_and_each_task_says_its_shortfall(library, tmp_path: Path) -> None:
    rows, _, _ = build(library, tmp_path, total=300)
    assert 0 < len(rows) < 300
    summary = summarize_queries(rows, 300)
    assert (
        "text2img" in summary["shortfall"]
        and "of the 100 queries.total asks for" in summary["shortfall"]["text2img"]
    )
    with pytest.raises(ValueError, match="unknown or empty"):
        build(library, tmp_path, degradation_kinds=["sepia"])


# --- augmentations ----------------------------------------------------------------------------


def test_augment_without_crop_and_shift_is_the_prototypes_exact_two_steps() -> None:
    image = draw_icon(1, False)
    config = AugmentConfig(
        p_downsample=1.0, p_blur=1.0, min_scale=0.25, blur_radius=(0.5, 1.5), p_crop=0.0, p_shift=0.0
    )
    rng = random.Random(42)
    expected_rng = random.Random(42)
    expected_rng.random()
    scale = expected_rng.uniform(0.25, 1.0)
    expected = downsample_upsample(image, scale)
    expected_rng.random()
    expected = expected.filter(ImageFilter.GaussianBlur(expected_rng.uniform(0.5, 1.5)))
    assert augment(image, config, rng).tobytes() == expected.tobytes()
    nothing = AugmentConfig(p_downsample=0.0, p_blur=0.0, p_crop=0.0, p_shift=0.0)
    untouched = augment(image, nothing, random.Random(0))
    assert untouched.tobytes() == image.tobytes()


def test_augment_defaults_are_seeded_and_crop_shift_each_switchable() -> None:
    image = draw_icon(2, True)
    config = AugmentConfig()
    assert (config.p_downsample, config.min_scale, config.p_blur, config.p_crop) == (0.5, 0.25, 0.3, 0.3)
    a = [augment(image, config, random.Random(s)).tobytes() for s in range(6)]
    b = [augment(image, config, random.Random(s)).tobytes() for s in range(6)]
    assert a == b and len(set(a)) > 1
    shifted = augment(
        image, AugmentConfig(p_downsample=0, p_blur=0, p_crop=0, p_shift=1.0, max_shift=0.2), random.Random(5)
    )
    cropped = augment(image, AugmentConfig(p_downsample=0, p_blur=0, p_crop=1.0, p_shift=0), random.Random(5))
    assert shifted.size == cropped.size == image.size
    assert shifted.tobytes() != image.tobytes() and cropped.tobytes() != image.tobytes()
    with pytest.raises(ValueError, match="AugmentConfig.p_blur"):
        AugmentConfig(p_blur=1.5)


def test_every_degradation_kind() -> None:
    image = draw_icon(3, False)
    for kind in DEGRADATION_KINDS:
        out = degrade(image, kind, random.Random(0))
        assert out.mode == "RGB"
        assert out.tobytes() != image.tobytes(), kind
        assert degrade(image, kind, random.Random(0)).tobytes() == out.tobytes(), kind
    wide = degrade(image, "aspect", random.Random(0))
    assert wide.size != image.size and max(wide.size) / min(wide.size) >= 1.5
    dark = np.asarray(degrade(image, "dark", random.Random(0)))
    assert dark[0, 0].max() < 60 and dark.max() > 150  # light ink on a dark background
    with pytest.raises(ValueError, match="unknown degradation kind 'sepia'"):
        degrade(image, "sepia", random.Random(0))


def test_a_library_without_variants_still_gets_img2img_queries(library, tmp_path: Path) -> None:
    """One-off icons only: a screenshot's answer is the icon itself, which then is not excluded."""
    groups, images = library
    singles = [Group(g.group_id, g.members[:1], g.names, g.captions, g.members[0]) for g in groups]
    rows, _, _ = build((singles, images), tmp_path, total=24)
    img2img = [r for r in rows if r["task"] == "img2img"]
    assert len(img2img) == 8
    for row in img2img:
        assert row["exclude_source"] is False and row["relevant_icon_ids"] == [row["source_icon_id"]]
        assert not BenchmarkQuery.from_row(row).exclude
    assert summarize_queries(rows)["self_img2img_queries"] == 8


def test_version_2_counts_every_group_carrying_the_source_term(library, tmp_path: Path) -> None:
    """A text query is relevant to each group whose name, tags or captions carry its source term."""
    groups, images = library
    extra = Group("g-cog", ("cog:outline",), ("cog",), ("settings", "gear"), "cog:outline")
    terms = group_terms([*groups, extra], {"cog:outline": ["preferences"]})
    assert terms["g-cog"] == {"cog", "settings", "gear", "preferences"}
    rows, _, _ = build(
        ([*groups, extra], {**images, "cog:outline": images["lock:outline"]}), tmp_path, total=60, terms=terms
    )
    carried = {
        phrase: {gid for gid, phrases in terms.items() if phrase in phrases} for phrase in ("preferences",)
    }
    for row in rows:
        if row["task"] == "text2img" and row["text"] == "preferences":
            assert carried["preferences"] <= set(row["relevant_group_ids"]) and row["source_terms"] == [
                "preferences"
            ]
        if row["task"] in ("text2img", "semantic2img"):
            for term in row["source_terms"]:
                assert {gid for gid, phrases in terms.items() if term in phrases} <= set(
                    row["relevant_group_ids"]
                ) | {"g-cog"}
    version_1, _, _ = build(library, tmp_path / "v1", total=60)
    assert all("source_terms" not in row for row in version_1)


def test_fitting_queries_come_from_the_eval_set_only(library, tmp_path: Path) -> None:
    groups, images = library
    split = split_groups(groups, heldout_share=0.25, seed=0)
    eval_rows, _ = build_eval_set(groups, split, OfflineParaphraser.default(), n_groups=6)
    rows = fitting_queries(eval_rows, groups, images, terms=group_terms(groups))
    eval_groups = {r["group_id"] for r in eval_rows}
    texts = [r["text"] for r in rows if r["kind"] == "text"]
    assert len(texts) == len(set(texts))  # one query per distinct text
    assert {normalise_caption(r["caption"]) for r in eval_rows} <= set(texts)
    assert len(texts) <= len(eval_rows) + len(eval_groups)  # each caption, one intent per group
    # Two groups writing the same caption: one query, relevant to both (as in the benchmark).
    shared = eval_rows[0]["caption"]
    other = next(g.group_id for g in groups if g.group_id != eval_rows[0]["group_id"])
    doubled = fitting_queries([*eval_rows, {"group_id": other, "caption": shared}], groups, images)
    matching = [r for r in doubled if r.get("text") == normalise_caption(shared)]
    assert len(matching) == 1 and {eval_rows[0]["group_id"], other} <= set(matching[0]["relevant_groups"])
    assert all(
        set(r["relevant_groups"]) >= {g for g in r["relevant_groups"] if g in eval_groups} for r in rows
    )
    images_rows = [r for r in rows if r["kind"] == "image"]
    assert images_rows and all(isinstance(r["image"], Image.Image) for r in images_rows)
    assert {g for r in images_rows for g in r["relevant_groups"]} <= eval_groups
    again = fitting_queries(eval_rows, groups, images, terms=group_terms(groups))
    assert [r.get("text") for r in again] == [r.get("text") for r in rows]  # deterministic
