"""Fusion: how hybrid search weighs, normalises, boosts and folds its channels, and how the
weights are fitted."""

from __future__ import annotations

import random

from PIL import Image

from icon_pipeline.search.channels import (
    ChannelHit,
)
from icon_pipeline.search.fusion import FittingQuery, FusionSettings, fit_fusion, fuse, fusion_kind, minmax


def _hits(*pairs: tuple[str, float]) -> list[ChannelHit]:
    return [ChannelHit(i, s) for i, s in pairs]


def test_fuse_normalises_weighs_boosts_and_folds_variants() -> None:
    assert minmax(_hits(("a", 3.0), ("b", 2.0), ("c", 1.0))) == {"a": 1.0, "b": 0.5, "c": 0.0}
    assert minmax(_hits(("a", 0.3))) == {"a": 1.0}
    hits = {"x": _hits(("a", 10.0), ("b", 5.0), ("c", 0.0)), "y": _hits(("c", 0.9), ("b", 0.8), ("a", 0.1))}
    groups = {"a": "A", "b": "B", "c": "C", "c-filled": "C"}
    members = {"A": ["a"], "B": ["b"], "C": ["c", "c-filled"]}
    common = {"group_of": groups, "members": members}
    plain = fuse(hits, {"x": 0.5, "y": 0.5}, 4, fold_variants=False, **common)
    assert [h.icon_id for h in plain] == ["b", "a", "c"]  # b: 0.25 + 0.5 * 7/8 beats a: 0.5 + 0
    assert plain[0].channel_scores == {"x": 5.0, "y": 0.8}
    only_y = fuse(hits, {"y": 1.0}, 4, fold_variants=False, **common)
    assert [h.icon_id for h in only_y] == ["c", "b", "a"]  # a channel of weight 0 changes nothing
    # ... not even the order of a tie (that is the icon ids'); it only ranks what the others left out.
    tie = {"y": _hits(("b", 0.5), ("c", 0.5)), "x": _hits(("c", 9.0), ("a", 5.0), ("b", 1.0))}
    assert [h.icon_id for h in fuse(tie, {"y": 1.0}, 4, fold_variants=False, **common)] == ["b", "c", "a"]
    boosted = fuse(
        hits, {"x": 0.5, "y": 0.5}, 4, fold_variants=False, name_matches={"c"}, name_boost=1.0, **common
    )
    assert boosted[0].icon_id == "c" and boosted[0].name_match
    folded = fuse(hits, {"y": 1.0}, 4, fold_variants=True, **common)
    # The variant no channel returned comes with its concept, right after the one that scored.
    assert [h.icon_id for h in folded][:2] == ["c", "c-filled"] and folded[1].score == folded[0].score
    assert "c" not in [h.icon_id for h in fuse(hits, {"y": 1.0}, 4, exclude={"c"}, **common)]


def test_fit_gives_a_useless_channel_no_weight_and_keeps_kinds_apart() -> None:
    """A channel that ranks at random gets weight 0; words and images are fitted separately."""
    rng = random.Random(0)
    icons = [f"i{n}" for n in range(40)]
    groups = {i: i for i in icons}
    queries = []
    for target in icons:
        noise = rng.sample(icons, 10)
        good = _hits((target, 1.0), *((i, 0.5) for i in icons[:5] if i != target))
        queries.append(
            FittingQuery(
                "words",
                {"good": good, "noise": _hits(*((i, 1.0 - n / 10) for n, i in enumerate(noise)))},
                frozenset({target}),
            )
        )
        queries.append(FittingQuery("image", {"pixels": good}, frozenset({target})))
    settings = fit_fusion(queries, {"words": ["good", "noise"], "image": ["pixels"]}, groups)
    assert settings.weights["words"] == {"good": 1.0, "noise": 0.0}
    assert settings.weights["image"] == {"pixels": 1.0}
    assert settings.fitted["single_channels"]["words"]["good"]["r1"] == 1.0
    assert settings.fitted["per_kind"]["words"]["r1"] == 1.0
    assert FusionSettings.from_json(settings.to_json()) == settings
    assert (
        fusion_kind("hide layer"),
        fusion_kind("i want to hide this layer"),
        fusion_kind(Image.new("RGB", (2, 2))),
    ) == (
        "words",
        "sentence",
        "image",
    )


def test_fit_counts_ties_as_a_random_order_would() -> None:
    """`tags` gives the right icon and three others one score (icons sharing a tag); `model` always
    puts an unrelated icon first, then the right one before those three. Search breaks ties by icon
    id, which knows nothing of relevance: `tags` alone finds a quarter of them first (counting ties
    in the right icon's favour said all, and the fit kept `tags` alone), and `model` breaks its ties."""
    groups, queries = {}, []
    for n in range(30):
        target, others, unrelated = f"t{n}", [f"o{n}-{k}" for k in range(3)], f"u{n}"
        groups |= {i: i for i in (target, *others, unrelated)}
        tags = _hits((target, 1.0), *((o, 1.0) for o in others), (unrelated, 0.2))
        model = _hits(*((i, 1.0 - k / 10) for k, i in enumerate([unrelated, target, *others])))
        queries.append(FittingQuery("words", {"tags": tags, "model": model}, frozenset({target})))
    settings = fit_fusion(queries, {"words": ["tags", "model"]}, groups)
    assert settings.fitted["single_channels"]["words"]["tags"] == {"r1": 0.25, "r10": 1.0}
    assert settings.fitted["single_channels"]["words"]["model"] == {"r1": 0.0, "r10": 1.0}
    weights = settings.weights["words"]
    assert weights["tags"] > 0 and weights["model"] > 0
    assert settings.fitted["per_kind"]["words"]["r1"] == 1.0


def test_fit_chooses_image_weights_under_folding() -> None:
    """A screenshot of one variant: `source` finds the icon itself first (folding then brings its
    variant, the relevant one); `variant` ranks the variant itself second. Unfolded, `variant` looks
    better; folded, `source` wins outright, so the weights are chosen with folding on."""
    groups, queries = {}, []
    for n in range(30):
        outline, filled, other = f"o{n}", f"f{n}", f"x{n}"
        groups |= {outline: f"g{n}", filled: f"g{n}", other: f"h{n}"}
        source = _hits((outline, 1.0), (other, 0.6))
        variant = _hits((other, 1.0), (filled, 0.9)) if n % 3 else _hits((other, 1.0))
        queries.append(
            FittingQuery(
                "image",
                {"source": source, "variant": variant},
                frozenset({f"g{n}"}),
                exclude=frozenset({outline}),
            )
        )
    settings = fit_fusion(queries, {"image": ["source", "variant"]}, groups)
    assert settings.fold_variants and settings.weights["image"] == {"source": 1.0, "variant": 0.0}
    assert settings.fitted["per_kind"]["image"]["r1"] == 1.0
