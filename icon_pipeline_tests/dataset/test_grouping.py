"""Grouping on real Tabler renders: variants join, different concepts stay apart, split is group-aware."""

from __future__ import annotations

import io
import random
from pathlib import Path

import cairosvg
import numpy as np
import pytest
from PIL import Image

from icon_pipeline.core.paths import REPO_ROOT
from icon_pipeline.dataset.grouping import (
    Group,
    IconImage,
    group_icons,
    group_size_histogram,
    grouping_metadata,
    hamming_pairs,
    largest_groups,
    pair_counts,
    simple_base_name,
    split_groups,
)

TABLER = REPO_ROOT / "data" / "sources" / "tabler" / "3.51.0" / "package" / "icons"
NAMES = {
    "outline": [
        "bell", "bell-off", "bell-plus", "bell-minus", "search", "zoom", "hexagon-plus", "hexagon-minus",
        "square-f6", "square-f8", "home", "user", "trash", "settings",
    ],
    "filled": ["bell", "bell-plus", "bell-minus", "home", "trash"],
}  # fmt: skip


def render_tabler(svg_path: Path, out: Path, size: int = 224) -> None:
    """Render like the pipeline does: currentColor -> black, composited on white, RGB PNG."""
    svg = svg_path.read_text(encoding="utf-8").replace("currentColor", "#000")
    png = cairosvg.svg2png(bytestring=svg.encode(), output_width=size, output_height=size)
    with Image.open(io.BytesIO(png)) as image:
        rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    Image.alpha_composite(white, rgba).convert("RGB").save(out)


@pytest.fixture(scope="module")
def tabler_icons(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    if not TABLER.is_dir():
        pytest.skip(f"Tabler icons not unpacked at {TABLER} (run `make data` / the Makefile fetch first)")
    out = tmp_path_factory.mktemp("renders")
    icons = []
    for style, names in NAMES.items():
        for name in names:
            png = out / f"{style}-{name}.png"
            render_tabler(TABLER / style / f"{name}.svg", png)
            icons.append(
                {"icon_id": f"tabler:{style}:{name}", "name": name, "style": style, "source": "tabler",
                 "png_path": str(png)}
            )  # fmt: skip
    return icons


def captions_for(icons: list[dict]) -> dict[str, list[str]]:
    return {
        i["icon_id"]: [i["name"].replace("-", " "), f"{i['style']} {i['name'].split('-')[0]}"] for i in icons
    }


@pytest.fixture(scope="module")
def grouping(tabler_icons: list[dict]):
    return group_icons(tabler_icons, captions_for(tabler_icons), simple_base_name)


def test_bell_outline_and_filled_are_one_group(grouping) -> None:
    assert grouping.icon_to_group["tabler:outline:bell"] == grouping.icon_to_group["tabler:filled:bell"]
    group = grouping.by_id()[grouping.icon_to_group["tabler:outline:bell"]]
    assert group.members == ("tabler:filled:bell", "tabler:outline:bell")
    assert [e.reason for e in group.edges] == ["name"]
    # Merged captions: deduplicated, representative's first.
    assert group.captions.count("bell") == 1
    assert set(group.captions) == {"bell", "outline bell", "filled bell"}


def test_bell_and_bell_off_stay_apart(grouping) -> None:
    g = grouping.icon_to_group
    assert g["tabler:outline:bell"] != g["tabler:outline:bell-off"]
    # pHash alone would join these (distance <= 4); the pixel check keeps them apart.
    assert g["tabler:outline:bell-plus"] != g["tabler:outline:bell-minus"]
    assert g["tabler:filled:bell-plus"] != g["tabler:filled:bell-minus"]
    assert g["tabler:outline:hexagon-plus"] != g["tabler:outline:hexagon-minus"]
    assert g["tabler:outline:square-f6"] != g["tabler:outline:square-f8"]


def test_different_concepts_stay_apart(grouping) -> None:
    g = grouping.icon_to_group
    concepts = ["home", "user", "trash", "settings", "bell", "search"]
    assert len({g[f"tabler:outline:{c}"] for c in concepts}) == len(concepts)
    assert max(group.size for group in grouping.groups) <= 2


def test_identical_drawings_under_two_names_join_by_image(grouping) -> None:
    # Tabler ships `search` and `zoom` as the same drawing.
    g = grouping.icon_to_group
    assert g["tabler:outline:search"] == g["tabler:outline:zoom"]
    group = grouping.by_id()[g["tabler:outline:search"]]
    assert [e.reason for e in group.edges] == ["image"]
    assert group.edges[0].detail.startswith("phash=")


def test_group_ids_are_stable_and_order_independent(tabler_icons: list[dict], grouping) -> None:
    shuffled = tabler_icons[:]
    random.Random(3).shuffle(shuffled)
    again = group_icons(shuffled, captions_for(tabler_icons), simple_base_name)
    assert [g.group_id for g in again.groups] == [g.group_id for g in grouping.groups]
    assert again.groups == grouping.groups
    assert Group.from_row(grouping.groups[0].to_row()) == grouping.groups[0]


def test_blank_and_unreadable_images_are_recorded_not_merged(tmp_path: Path) -> None:
    icons = []
    for k in range(3):
        blank = tmp_path / f"blank{k}.png"
        Image.new("RGB", (224, 224), "white").save(blank)
        icons.append({"icon_id": f"x:{k}", "name": f"thing{k}", "source": "x", "png_path": str(blank)})
    icons.append(
        {"icon_id": "x:broken", "name": "thing0", "source": "x", "png_path": str(tmp_path / "nope.png")}
    )
    result = group_icons(icons, {}, simple_base_name)
    assert sorted(result.image_report.near_empty) == ["x:0", "x:1", "x:2"]
    assert [i for i, _ in result.image_report.unreadable] == ["x:broken"]
    assert "nope.png" in result.image_report.unreadable[0][1]
    # Blank renders did not merge; the broken one still groups by name with thing0.
    assert result.icon_to_group["x:1"] != result.icon_to_group["x:2"]
    assert result.icon_to_group["x:broken"] == result.icon_to_group["x:0"]


def test_oversized_image_components_are_capped(tmp_path: Path) -> None:
    image = Image.new("RGB", (224, 224), "white")
    image.paste((0, 0, 0), (60, 60, 160, 160))
    icons = []
    for k in range(5):
        path = tmp_path / f"same{k}.png"
        image.save(path)
        icons.append({"icon_id": f"y:{k}", "name": f"name{k}", "source": "y", "png_path": str(path)})
    capped = group_icons(icons, {}, simple_base_name, max_image_component=4)
    assert len(capped.groups) == 5
    assert capped.image_report.capped_components == [[f"y:{k}" for k in range(5)]]
    merged = group_icons(icons, {}, simple_base_name, max_image_component=5)
    assert len(merged.groups) == 1


def test_bad_input_names_the_icon() -> None:
    with pytest.raises(ValueError, match="icon a: missing field.*png_path"):
        group_icons([{"icon_id": "a", "name": "bell", "source": "s"}], {})
    row = IconImage("a", "bell", "s", "/x.png")
    with pytest.raises(ValueError, match="icon a: listed twice"):
        group_icons([row, row], {})


def test_hamming_pairs_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, size=50, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, size=50).astype(np.uint64)
    words = np.concatenate([base, base ^ flips]).reshape(-1, 1)
    found = {(int(i), int(j)) for i, j, _ in hamming_pairs(words, 3, block_bytes=2048)}
    expected = {
        (i, j)
        for i in range(len(words))
        for j in range(i + 1, len(words))
        if bin(int(words[i, 0]) ^ int(words[j, 0])).count("1") <= 3
    }
    assert found == expected and len(found) >= 50


def test_metadata_helpers(tabler_icons: list[dict], grouping) -> None:
    captions = captions_for(tabler_icons)
    counts = pair_counts(grouping.groups, captions)
    assert counts["icons"] == len(tabler_icons)
    assert counts["pairs_before"] == 2 * len(tabler_icons)
    assert counts["pairs_after"] < counts["pairs_before"]
    histogram = group_size_histogram(grouping.groups)
    assert sum(size * n for size, n in histogram.items()) == len(tabler_icons)
    assert largest_groups(grouping.groups, k=1)[0]["size"] == max(histogram)
    metadata = grouping_metadata(grouping, captions)
    assert metadata["image_edges"] == 1 and metadata["image_confirmed_pairs"] == 1
    assert metadata["image_candidate_pairs"] > metadata["image_confirmed_pairs"]


def test_simple_base_name() -> None:
    assert simple_base_name("bell-filled") == "bell"
    assert simple_base_name("Bell_Outline_24px") == "bell"
    assert simple_base_name("number-1") != simple_base_name("number-2")
    assert simple_base_name("arrow-big-up-line") == "arrow-big-up-line"


def test_split_is_deterministic_and_group_aware(grouping) -> None:
    split = split_groups(grouping, heldout_share=0.25, seed=7)
    assert split == split_groups(list(reversed(grouping.groups)), heldout_share=0.25, seed=7)
    assert set(split) == {g.group_id for g in grouping.groups}
    assert sum(v == "heldout" for v in split.values()) == round(len(grouping.groups) * 0.25)
    # Every icon inherits its group's side: variants never straddle train and held-out.
    for group in grouping.groups:
        assert {split[grouping.icon_to_group[m]] for m in group.members} == {split[group.group_id]}
    ids = [f"g{k}" for k in range(200)]
    assert split_groups(ids, 0.1, 0) != split_groups(ids, 0.1, 1)
    assert split_groups(ids, 0.0, 0) == {i: "train" for i in ids}
    with pytest.raises(ValueError, match="heldout_share"):
        split_groups(ids, 1.0)


def test_icons_left_out_of_training_are_groups_of_their_own() -> None:
    from icon_pipeline.dataset.grouping import icon_groups

    rows = [{"group_id": "g1", "members": ["a", "b"]}]
    assert icon_groups(rows, ["a", "b", "c"]) == {"a": "g1", "b": "g1", "c": "solo:c"}
