"""Retrieval metrics against hand-computed cases."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icon_pipeline.benchmark.metrics import (
    aggregate,
    average_precision_at_k,
    exclude_from_ranking,
    group_members,
    rank_by_score,
    recall_at_k,
    relevant_icons,
    score_query,
)


def test_design_unit_check_ap() -> None:
    # The definition's own unit check (benchmark/metrics.py): scores [0.2, 0.3, 0.5] with
    # relevance [1, 0, 1] give AP 0.8333.
    ids = ["a", "b", "c"]
    ranked = rank_by_score(ids, [0.2, 0.3, 0.5])
    assert ranked == ["c", "b", "a"]
    assert average_precision_at_k(ranked, {"a", "c"}, 3) == pytest.approx(0.8333, abs=1e-4)
    assert average_precision_at_k(ranked, {"a", "c"}, 10) == pytest.approx(0.8333, abs=1e-4)


def test_ap_divides_by_min_relevant_and_k() -> None:
    # 5 relevant, K = 2, both top results relevant: (1 + 1) / min(5, 2) = 1.
    assert average_precision_at_k(["r1", "r2", "x"], {"r1", "r2", "r3", "r4", "r5"}, 2) == 1.0
    # One relevant at rank 3 of K = 3: (1/3) / 1.
    assert average_precision_at_k(["x", "y", "r"], {"r"}, 3) == pytest.approx(1 / 3)
    # Relevant beyond K does not count; 2 relevant, one found at rank 2 of K = 2: (1/2) / 2.
    assert average_precision_at_k(["x", "r1", "r2"], {"r1", "r2"}, 2) == pytest.approx(0.25)
    assert average_precision_at_k(["x"], set(), 5) == 0.0
    assert average_precision_at_k([], {"r"}, 5) == 0.0


def test_recall_is_a_hit_rate() -> None:
    ranked = ["x", "y", "r1", "r2"]
    assert [recall_at_k(ranked, {"r1", "r2"}, k) for k in (1, 2, 3, 4, 30)] == [0.0, 0.0, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="K must be >= 1"):
        recall_at_k(ranked, {"r1"}, 0)


def test_rank_by_score_is_stable_on_ties() -> None:
    assert rank_by_score(["a", "b", "c"], [0.5, 0.9, 0.5]) == ["b", "a", "c"]
    with pytest.raises(ValueError, match="3 ids but 2 scores"):
        rank_by_score(["a", "b", "c"], [1.0, 2.0])


def test_img2img_excludes_the_source_icon() -> None:
    icon_to_group = {"src": "g1", "sibling": "g1", "other": "g2", "far": "g3"}
    members = group_members(icon_to_group)
    relevant = relevant_icons(["g1"], members, exclude={"src"})
    assert relevant == {"sibling"}
    # The source comes back first (it is the undegraded original): it must not count as a hit,
    # nor take a place in the top K.
    ranked = ["src", "other", "sibling", "far"]
    assert exclude_from_ranking(ranked, {"src"}, 2) == ["other", "sibling"]
    score = score_query("q", ranked, relevant, ks=(1, 2), exclude={"src"})
    assert score.recall == {1: 0.0, 2: 1.0}
    assert score.average_precision == pytest.approx(0.5)  # sibling at rank 2 of the cut ranking
    assert score.n_relevant == 1
    # Without the exclusion the source would have been a free hit at rank 1.
    naive = score_query("q", ranked, relevant_icons(["g1"], members), ks=(1, 2))
    assert naive.recall[1] == 1.0


def test_aggregate_means_and_empty() -> None:
    scores = [
        score_query("a", ["r"], {"r"}, ks=(1, 5)),
        score_query("b", ["x", "r"], {"r"}, ks=(1, 5)),
        score_query("c", ["x"], {"r"}, ks=(1, 5)),
    ]
    summary = aggregate(scores, ks=(1, 5))
    assert summary.n_queries == 3
    assert summary.recall == {1: pytest.approx(1 / 3), 5: pytest.approx(2 / 3)}
    assert summary.mean_average_precision == pytest.approx((1 + 0.5 + 0) / 3)
    assert summary.as_dict(5)["map@5"] == pytest.approx(0.5)
    empty = aggregate([], ks=(1, 5))
    assert empty.n_queries == 0 and math.isnan(empty.recall[1]) and math.isnan(empty.mean_average_precision)


@given(
    ranked=st.lists(st.integers(0, 30), unique=True, max_size=40),
    relevant=st.sets(st.integers(0, 30), max_size=10),
    k=st.integers(1, 40),
)
def test_metric_bounds(ranked: list[int], relevant: set[int], k: int) -> None:
    ap = average_precision_at_k(ranked, relevant, k)
    assert 0.0 <= ap <= 1.0 + 1e-12
    hit = recall_at_k(ranked, relevant, k)
    assert hit == (1.0 if set(ranked[:k]) & relevant else 0.0)
    # A perfect ranking scores 1.
    perfect = sorted(relevant) + [i for i in ranked if i not in relevant]
    if relevant:
        assert average_precision_at_k(perfect, relevant, k) == pytest.approx(1.0)
