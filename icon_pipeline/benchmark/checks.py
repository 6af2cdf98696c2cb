"""What the benchmark's asset checks judge, from a report's figures: defs/benchmark.py turns each
verdict into a Dagster check with the action it asks for."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from icon_pipeline.benchmark.report import BM25_BASELINE, PIXEL_BASELINE
from icon_pipeline.search.channels import BASE_MODEL, FINETUNED_MODEL, HYBRID

# Hybrid search may trail its best single channel by this much R@10 (query noise) before the check fails.
FUSION_TOLERANCE = 0.02
# A headline figure may drop this much since the previous report before the regression check warns.
REGRESSION_TOLERANCE = 0.02
HEADLINE_SEARCHES = (HYBRID, BM25_BASELINE, PIXEL_BASELINE, FINETUNED_MODEL, BASE_MODEL)


def recall_at_10(report: Any, task: str, model: str) -> float | None:
    """R@10 of `model` on `task` as search serves it (HNSW; BM25 and raw pixels have one mode)."""
    for row in report.rows:
        if (
            (row.task, row.model, row.subset) == (task, model, "all")
            and row.mode != "exact"
            and row.n_queries
        ):
            return row.recall.get(10)
    return None


def headline_figures(report: Any, places: int) -> dict[str, float]:
    """Numeric headline figures ("hybrid/text2img/R@10"): the UI plots each across materializations."""
    figures = {}
    for row in report.headline():
        if row["model"] in HEADLINE_SEARCHES:
            for metric in ("R@1", "R@10"):
                if row[metric] is not None and math.isfinite(row[metric]):
                    figures[f"{row['model']}/{row['task']}/{metric}"] = round(float(row[metric]), places)
    return figures


def fusion_shortfalls(report: Any) -> tuple[list[str], dict[str, str]]:
    """(each task where hybrid search trails one of its own channels, every task's figures)."""
    shortfalls, figures = [], {}
    for task in report.tasks:
        hybrid = recall_at_10(report, task, HYBRID)
        channels = {
            model: recall_at_10(report, task, model)
            for model in report.models
            if model != HYBRID and not model.startswith(f"{HYBRID}-")
        }
        channels = {model: value for model, value in channels.items() if value is not None}
        if hybrid is None or not channels:
            continue
        best = max(channels, key=channels.__getitem__)
        figures[task] = f"hybrid {hybrid:.3f}, best channel {best} {channels[best]:.3f}"
        if hybrid < channels[best] - FUSION_TOLERANCE:
            shortfalls.append(
                f"{task}: hybrid search R@10 {hybrid:.3f} trails the {best} channel alone "
                f"({channels[best]:.3f})"
            )
    return shortfalls, figures


def fine_tuning_shortfalls(report: Any) -> tuple[list[str], dict[str, str]]:
    """(each task where the fine-tuned model does not beat its base, every task's figures)."""
    shortfalls, figures = [], {}
    for task in report.tasks:
        tuned, base = recall_at_10(report, task, FINETUNED_MODEL), recall_at_10(report, task, BASE_MODEL)
        if tuned is None or base is None:
            continue
        figures[task] = f"fine-tuned {tuned:.3f}, base {base:.3f}"
        if not tuned > base:
            shortfalls.append(f"{task}: fine-tuned R@10 {tuned:.3f}, its base {base:.3f}")
    return shortfalls, figures


def regression_drops(
    before: Mapping[str, float], current: Mapping[str, float]
) -> tuple[list[str], list[dict[str, Any]]]:
    """(the headline figures that dropped beyond REGRESSION_TOLERANCE, every figure compared)."""
    drops, compared = [], []
    for key in sorted(set(current) & set(before)):
        model, task, metric = key.split("/")
        compared.append(
            {"task": task, "search": model, "metric": metric, "previous": before[key], "now": current[key]}
        )
        if current[key] - before[key] < -REGRESSION_TOLERANCE:
            drops.append(f"{task} {model} {metric} {before[key]:.3f} -> {current[key]:.3f}")
    return drops, compared
