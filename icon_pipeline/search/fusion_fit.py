"""What hybrid search's weights are fitted on, and the fit: the frozen eval set's captions (less any
the benchmark reuses as text2img queries) and the corpus's held-out names and drawings
(corpus_pairs), each source counting equally within a query kind. Never the benchmark queries."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icon_pipeline.core.config import PipelineConfig
from icon_pipeline.core.frozen import read_frozen_jsonl
from icon_pipeline.core.storage import EVAL_NAME, QUERIES_NAME, asset_path, frozen_file, read_records
from icon_pipeline.dataset.grouping import load_groups
from icon_pipeline.dataset.queries import fitting_queries, group_terms
from icon_pipeline.library.catalog import read_catalog
from icon_pipeline.search.confidence import no_answer_queries, query_traits
from icon_pipeline.search.fusion import (
    KINDS,
    FittingQuery,
    FusionSettings,
    channel_kind,
    fit_fusion,
    fusion_kind,
)
from icon_pipeline.search.hybrid import HybridSearch
from icon_pipeline.search.query import prepare_query_image


@dataclass(frozen=True)
class FittingSpecs:
    specs: list[dict]  # each with its kind, text or image, relevant groups, exclude and source
    held_back: int  # eval captions left out because the benchmark reuses them as queries
    eval_path: Path


def fitting_specs(config: PipelineConfig) -> FittingSpecs:
    """The eval set's fitting queries (less the benchmark's texts) and the corpus's."""
    eval_path = frozen_file(EVAL_NAME, config)
    groups, _, images = load_groups()
    terms = (
        group_terms(groups, {i.icon_id: i.tags for i in read_catalog()})
        if config.queries.version >= 2
        else None
    )
    specs = fitting_queries(read_frozen_jsonl(eval_path), groups, images, seed=config.eval.seed, terms=terms)
    queries_path = frozen_file(QUERIES_NAME, config)
    benchmark_texts = {row["text"] for row in read_frozen_jsonl(queries_path) if row.get("text")}
    held_back = sum(1 for spec in specs if spec.get("text") in benchmark_texts)
    specs = [{**spec, "source": "eval_set"} for spec in specs if spec.get("text") not in benchmark_texts]
    specs += corpus_fitting_specs()
    # Queries with no answer (random letters, noise, gradients): the confidence model learns what
    # "nothing matches" looks like from them; they never move the fusion weights.
    specs += [
        {
            "kind": "text" if isinstance(query, str) else "image",
            **({"text": query} if isinstance(query, str) else {"image": query}),
            "relevant_groups": [],
            "exclude": [],
            "source": "no_answer",
        }
        for query in no_answer_queries(config.eval.seed)
    ]
    return FittingSpecs(specs, held_back, eval_path)


@dataclass(frozen=True)
class FusionFit:
    settings: FusionSettings
    by_kind: dict[str, list[str]]  # fusion kind -> the channels that take it
    kinds: list[str]  # each spec's fusion kind


def fit_channels(
    search: HybridSearch,
    available: list[str],
    specs: list[dict],
    connections: Any,
    log: Callable[[str], None],
) -> FusionFit:
    """Every spec searched on every available channel, and the fusion fitted on the results."""
    objects = [
        spec["text"] if spec["kind"] == "text" else prepare_query_image(spec["image"]) for spec in specs
    ]
    log(f"fitting on {len(objects)} eval-set and corpus queries over channels {', '.join(available)}")
    results = search.gather(objects, available, connections=connections)
    kinds = [fusion_kind(query) for query in objects]
    shares = source_shares([(kind, spec["source"]) for kind, spec in zip(kinds, specs, strict=True)])
    fitting = [
        FittingQuery(
            kind,
            result.hits,
            frozenset(spec["relevant_groups"]),
            frozenset(spec["exclude"]),
            search.library.name_matches(query),
            weight=shares[(kind, spec["source"])],
            protected=spec["source"] == "eval_set",
            match_levels=search.library.match_levels(query),
            traits=query_traits(query),
        )
        for kind, spec, query, result in zip(kinds, specs, objects, results, strict=True)
    ]
    by_kind = {
        kind: [n for n in available if channel_kind(kind) in search.channels[n].kinds] for kind in KINDS
    }
    return FusionFit(fit_fusion(fitting, by_kind, search.library.group_of), by_kind, kinds)


def weight_rows(settings: FusionSettings, by_kind: dict[str, list[str]], places: int) -> list[dict]:
    """Per kind and channel: its fitted weight and what it finds alone (R@1, R@10)."""
    rows = []
    for kind in KINDS:
        alone = settings.fitted["single_channels"].get(kind, {})
        for channel in by_kind.get(kind, []):
            weight = settings.weights.get(kind, {}).get(channel, 0.0)
            rows.append(
                {
                    "kind": kind,
                    "channel": channel,
                    "weight": weight,
                    "alone_R@1": round(alone.get(channel, {}).get("r1", math.nan), places),
                    "alone_R@10": round(alone.get(channel, {}).get("r10", math.nan), places),
                    "note": "does not help: weight 0" if weight == 0 else "",
                }
            )
    return rows


def corpus_fitting_specs() -> list[dict]:
    """The corpus's held-out names and drawings (corpus_pairs) as fitting queries: how people other
    than the project name and draw the library's concepts. Empty without a corpus."""
    path = asset_path("corpus_fitting")
    if not path.exists():
        return []
    return [
        {
            "kind": row["kind"],
            **({"text": row["text"]} if row["kind"] == "text" else {"image": row["image_path"]}),
            "relevant_groups": list(row["relevant_groups"]),
            "exclude": [],
            "source": "corpus",
        }
        for row in read_records(path, "corpus fitting queries")
    ]


def source_shares(keys: list[tuple[str, str]]) -> dict[tuple[str, str], float]:
    """(fusion kind, source) -> each query's weight, so that every source of a kind counts equally
    in the fit however many queries it has (the eval set's captions and the corpus's names)."""
    counts: dict[tuple[str, str], int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    sources_per_kind: dict[str, int] = {}
    for kind, _ in counts:
        sources_per_kind[kind] = sources_per_kind.get(kind, 0) + 1
    totals = {kind: sum(n for (k, _), n in counts.items() if k == kind) for kind in sources_per_kind}
    return {
        (kind, source): totals[kind] / (sources_per_kind[kind] * n) for (kind, source), n in counts.items()
    }
