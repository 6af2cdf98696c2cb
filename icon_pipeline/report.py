"""The benchmark: every task x model x search mode x query subset, with baselines beside the models.

For each model (its image embeddings already in pgvector) the queries are embedded once and
searched twice, exactly (sequential scan) and through HNSW, so index error and model error stay
apart (DESIGN.md). Each cell: R@1/5/10/30, mAP@max(K), and the database query latency p50/p95.
Subsets: all queries, those whose groups the model trained on (`seen`) and the held-out ones.

Baselines, so a model that is worse than trivial is seen at once:
- img2img: raw pixels, 16x16 grayscale, each vector mean-centred (so the white background does
  not make every icon alike) and compared by cosine, in numpy;
- text tasks: BM25 over names, tags and captions (lexical.BM25Index), when one is given.

A query that cannot be used (an unreadable image) is recorded in `failures` and skipped for every
model alike; the run carries on.

Plain Python: no Dagster import.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from PIL import Image

from icon_pipeline.index import get_model_index, search_vectors
from icon_pipeline.lexical import BM25Index
from icon_pipeline.metrics import (
    DEFAULT_KS,
    QueryScore,
    aggregate,
    group_members,
    relevant_icons,
    score_query,
)
from icon_pipeline.search import KEYWORD_SEARCH, Embedder, QueryError, prepare_query_image

TASKS: tuple[str, ...] = ("text2img", "semantic2img", "img2img")
TEXT_TASKS = frozenset({"text2img", "semantic2img"})
SUBSETS: tuple[str, ...] = ("all", "seen", "heldout")
MODES: tuple[str, ...] = ("exact", "hnsw")
PIXEL_BASELINE = "raw-pixels-16x16"
BM25_BASELINE = KEYWORD_SEARCH  # the row keyword search answers for
PIXEL_SIDE = 16


@dataclass(frozen=True)
class BenchmarkQuery:
    query_id: str
    task: str
    text: str | None
    image_path: str | None
    relevant_group_ids: tuple[str, ...]
    source_icon_id: str | None
    heldout: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> BenchmarkQuery:
        task = row.get("task")
        query_id = str(row.get("query_id", "?"))
        if task not in TASKS:
            raise ValueError(f"query {query_id}: unknown task {task!r}; allowed: {', '.join(TASKS)}")
        text, image_path = row.get("text"), row.get("image_path")
        if task in TEXT_TASKS and not text:
            raise ValueError(f"query {query_id}: task {task} needs a text")
        if task == "img2img" and not image_path:
            raise ValueError(f"query {query_id}: task img2img needs an image_path")
        groups = row.get("relevant_group_ids")
        if groups is None or isinstance(groups, str) or not len(groups):
            raise ValueError(f"query {query_id}: relevant_group_ids must be a non-empty list")
        return cls(
            query_id=query_id,
            task=task,
            text=text,
            image_path=str(image_path) if image_path else None,
            relevant_group_ids=tuple(str(g) for g in groups),
            source_icon_id=row.get("source_icon_id") or None,
            heldout=bool(row.get("heldout", False)),
        )

    @property
    def exclude(self) -> frozenset[str]:
        # img2img: the icon the query was degraded from is neither relevant nor rankable.
        return (
            frozenset({self.source_icon_id})
            if self.task == "img2img" and self.source_icon_id
            else frozenset()
        )


@dataclass(frozen=True)
class ReportRow:
    task: str
    model: str
    mode: str  # exact | hnsw | numpy (pixel baseline) | lexical (BM25)
    subset: str  # all | seen | heldout
    n_queries: int
    recall: dict[int, float]
    mean_average_precision: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    ann_overlap_at_10: float | None = None  # hnsw rows: share of the exact top 10 that HNSW found

    def as_dict(self, map_k: int) -> dict[str, Any]:
        row: dict[str, Any] = {
            "task": self.task,
            "model": self.model,
            "mode": self.mode,
            "subset": self.subset,
            "n_queries": self.n_queries,
        }
        row.update({f"recall@{k}": _finite(v) for k, v in sorted(self.recall.items())})
        row[f"map@{map_k}"] = _finite(self.mean_average_precision)
        row["latency_p50_ms"] = _finite(self.latency_p50_ms)
        row["latency_p95_ms"] = _finite(self.latency_p95_ms)
        row["ann_overlap@10"] = _finite(self.ann_overlap_at_10)
        return row


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


@dataclass(frozen=True)
class QueryFailure:
    query_id: str
    task: str
    reason: str


@dataclass
class BenchmarkReport:
    ks: tuple[int, ...]
    models: list[str]
    rows: list[ReportRow] = field(default_factory=list)
    failures: list[QueryFailure] = field(default_factory=list)
    query_counts: dict[str, int] = field(default_factory=dict)

    @property
    def map_k(self) -> int:
        return max(self.ks)

    def row(self, task: str, model: str, mode: str, subset: str = "all") -> ReportRow:
        for row in self.rows:
            if (row.task, row.model, row.mode, row.subset) == (task, model, mode, subset):
                return row
        raise KeyError(f"no report row for task={task} model={model} mode={mode} subset={subset}")

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able data: rows (flat) and results[task][model][mode][subset][metric]."""
        results: dict[str, Any] = {}
        flat = []
        for row in self.rows:
            data = row.as_dict(self.map_k)
            flat.append(data)
            metrics = {k: v for k, v in data.items() if k not in ("task", "model", "mode", "subset")}
            results.setdefault(row.task, {}).setdefault(row.model, {}).setdefault(row.mode, {})[
                row.subset
            ] = metrics
        return {
            "ks": list(self.ks),
            "map_k": self.map_k,
            "tasks": [t for t in TASKS if t in results],
            "models": list(self.models),
            "query_counts": dict(self.query_counts),
            "results": results,
            "rows": flat,
            "failures": [vars(f) for f in self.failures],
        }

    def write_json(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        return path

    def to_markdown(self) -> str:
        """One table per task: every model/mode/subset with at least one query."""
        header = (
            ["model", "mode", "subset", "n"]
            + [f"R@{k}" for k in self.ks]
            + [f"mAP@{self.map_k}", "p50 ms", "p95 ms", "ANN∩exact@10"]
        )
        lines: list[str] = []
        for task in TASKS:
            rows = [r for r in self.rows if r.task == task and r.n_queries > 0]
            if not rows:
                continue
            lines += [f"### {task}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for r in rows:
                cells = [r.model, r.mode, r.subset, str(r.n_queries)]
                cells += [_fmt(r.recall.get(k)) for k in self.ks]
                cells += [
                    _fmt(r.mean_average_precision),
                    _fmt(r.latency_p50_ms, 2),
                    _fmt(r.latency_p95_ms, 2),
                    _fmt(r.ann_overlap_at_10),
                ]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        if self.failures:
            lines.append(
                f"{len(self.failures)} queries could not be used (first: {self.failures[0].reason})."
            )
        return "\n".join(lines)

    def plots(self, out_dir: Path) -> list[Path]:
        """R@K curves per task (subset `all`), one line per model/mode; PNG paths."""
        import matplotlib

        matplotlib.use("Agg")  # no display on servers and in tests
        import matplotlib.pyplot as plt

        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for task in TASKS:
            rows = [r for r in self.rows if r.task == task and r.subset == "all" and r.n_queries > 0]
            if not rows:
                continue
            figure, axes = plt.subplots(figsize=(6, 4))
            for r in rows:
                style = "--" if r.mode in ("exact", "numpy", "lexical") else "-"
                axes.plot(
                    self.ks, [r.recall[k] for k in self.ks], style, marker="o", label=f"{r.model} ({r.mode})"
                )
            axes.set(
                title=f"{task}: R@K ({rows[0].n_queries} queries)",
                xlabel="K",
                ylabel="R@K (hit rate)",
                ylim=(0, 1.02),
            )
            axes.set_xticks(list(self.ks))
            axes.grid(alpha=0.3)
            axes.legend(fontsize=7, loc="lower right")
            path = out_dir / f"recall_at_k_{task}.png"
            figure.tight_layout()
            figure.savefig(path, dpi=120)
            plt.close(figure)
            paths.append(path)
        return paths


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _percentile_ms(seconds: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(seconds) * 1000.0, q)) if seconds else None


def pixel_vector(image: Image.Image, side: int = PIXEL_SIDE) -> np.ndarray:
    """16x16 grayscale, mean-centred and L2-normalised (a flat image becomes the zero vector)."""
    small = image.convert("L").resize((side, side), Image.Resampling.BOX)
    vector = np.asarray(small, dtype=np.float32).ravel()
    vector = vector - vector.mean()
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 else vector


def _summarise(
    task: str,
    model: str,
    mode: str,
    queries: Sequence[BenchmarkQuery],
    scores: Mapping[str, QueryScore],
    latencies: Mapping[str, float],
    ks: Sequence[int],
    overlaps: Mapping[str, float] | None = None,
) -> list[ReportRow]:
    rows = []
    for subset in SUBSETS:
        chosen = [q for q in queries if subset == "all" or q.heldout == (subset == "heldout")]
        subset_scores = [scores[q.query_id] for q in chosen if q.query_id in scores]
        summary = aggregate(subset_scores, ks)
        times = [latencies[q.query_id] for q in chosen if q.query_id in latencies]
        overlap = [overlaps[q.query_id] for q in chosen if overlaps and q.query_id in overlaps]
        rows.append(
            ReportRow(
                task=task,
                model=model,
                mode=mode,
                subset=subset,
                n_queries=summary.n_queries,
                recall=summary.recall,
                mean_average_precision=summary.mean_average_precision,
                latency_p50_ms=_percentile_ms(times, 50),
                latency_p95_ms=_percentile_ms(times, 95),
                ann_overlap_at_10=float(np.mean(overlap)) if overlap else None,
            )
        )
    return rows


def _load_query_images(
    queries: Iterable[BenchmarkQuery], failures: list[QueryFailure]
) -> dict[str, Image.Image]:
    images = {}
    for query in queries:
        if query.task != "img2img":
            continue
        try:
            images[query.query_id] = prepare_query_image(
                query.image_path or "", label=f"query {query.query_id}"
            )
        except QueryError as exc:
            failures.append(QueryFailure(query.query_id, query.task, str(exc)))
    return images


def _pixel_matrix(
    icon_images: Mapping[str, str | Path], icon_ids: Sequence[str], failures: list[QueryFailure]
) -> tuple[list[str], np.ndarray]:
    kept, vectors = [], []
    for icon_id in icon_ids:
        path = icon_images.get(icon_id)
        if path is None:
            continue
        try:
            with Image.open(path) as image:
                vectors.append(pixel_vector(image))
        except (OSError, ValueError) as exc:
            # The icon drops out of the baseline's candidates only; recorded, the run goes on.
            failures.append(
                QueryFailure(f"icon {icon_id}", "img2img", f"pixel baseline: cannot read {path}: {exc}")
            )
            continue
        kept.append(icon_id)
    return kept, np.stack(vectors) if vectors else np.zeros((0, PIXEL_SIDE * PIXEL_SIDE), np.float32)


def run_benchmark(
    conn: psycopg.Connection,
    queries: Iterable[Mapping[str, Any]],
    models: Mapping[str, Embedder],
    icon_to_group: Mapping[str, str],
    lexical: BM25Index | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    icon_images: Mapping[str, str | Path] | None = None,
    ef_search: int | None = None,
    modes: Sequence[str] = MODES,
) -> BenchmarkReport:
    """Score every model (exact and HNSW), the pixel baseline (needs `icon_images`: icon_id -> PNG)
    and BM25 (needs `lexical`) on the queries.

    `models` maps a model id, as registered in the index, to its encoder; each model's stored
    dimension must match its encoder's. `icon_to_group` is the indexed icons' grouping: relevance
    is by group.
    """
    ks = tuple(sorted(set(ks)))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    unknown_modes = set(modes) - set(MODES)
    if unknown_modes:
        raise ValueError(f"unknown search modes {sorted(unknown_modes)}; allowed: {', '.join(MODES)}")
    parsed = [BenchmarkQuery.from_row(row) for row in queries]
    if len({q.query_id for q in parsed}) != len(parsed):
        raise ValueError("query ids must be unique")
    fetch = max(ks)
    members = group_members(icon_to_group)
    relevant = {q.query_id: relevant_icons(q.relevant_group_ids, members, q.exclude) for q in parsed}
    report = BenchmarkReport(ks=ks, models=list(models))
    images = _load_query_images(parsed, report.failures)
    usable = [q for q in parsed if q.task in TEXT_TASKS or q.query_id in images]
    by_task = {task: [q for q in usable if q.task == task] for task in TASKS}
    report.query_counts = {task: len(qs) for task, qs in by_task.items()}

    for model_id, bundle in models.items():
        model = get_model_index(conn, model_id)
        if bundle.dim != model.dim:
            raise ValueError(
                f"model {model_id!r}: encoder dimension {bundle.dim} differs from the stored embeddings' "
                f"{model.dim}; re-index the model before benchmarking it"
            )
        vectors: dict[str, np.ndarray] = {}
        text_queries = [q for q in usable if q.task in TEXT_TASKS]
        if text_queries:
            embedded = bundle.embed_texts([q.text or "" for q in text_queries])
            vectors.update(zip([q.query_id for q in text_queries], embedded, strict=True))
        image_queries = [q for q in usable if q.task == "img2img"]
        if image_queries:
            embedded = bundle.embed_images([images[q.query_id] for q in image_queries])
            vectors.update(zip([q.query_id for q in image_queries], embedded, strict=True))

        for task, task_queries in by_task.items():
            if not task_queries:
                continue
            exact_top10: dict[str, set[str]] = {}
            for mode in modes:
                scores, latencies, overlaps = {}, {}, {}
                for q in task_queries:
                    started = time.perf_counter()
                    hits = search_vectors(
                        conn,
                        model,
                        vectors[q.query_id],
                        fetch + len(q.exclude),
                        exact=mode == "exact",
                        ef_search=ef_search,
                    )
                    latencies[q.query_id] = time.perf_counter() - started
                    ranked = [h.icon_id for h in hits]
                    scores[q.query_id] = score_query(
                        q.query_id, ranked, relevant[q.query_id], ks, exclude=q.exclude
                    )
                    top10 = set([i for i in ranked if i not in q.exclude][:10])
                    if mode == "exact":
                        exact_top10[q.query_id] = top10
                    elif q.query_id in exact_top10 and exact_top10[q.query_id]:
                        overlaps[q.query_id] = len(top10 & exact_top10[q.query_id]) / len(
                            exact_top10[q.query_id]
                        )
                report.rows += _summarise(task, model_id, mode, task_queries, scores, latencies, ks, overlaps)

    if icon_images and by_task["img2img"]:
        icon_ids, matrix = _pixel_matrix(icon_images, sorted(icon_to_group), report.failures)
        scores, latencies = {}, {}
        for q in by_task["img2img"]:
            started = time.perf_counter()
            similarity = matrix @ pixel_vector(images[q.query_id])
            top = np.argsort(-similarity, kind="stable")[: fetch + len(q.exclude)]
            latencies[q.query_id] = time.perf_counter() - started
            ranked = [icon_ids[i] for i in top]
            scores[q.query_id] = score_query(q.query_id, ranked, relevant[q.query_id], ks, exclude=q.exclude)
        report.rows += _summarise(
            "img2img", PIXEL_BASELINE, "numpy", by_task["img2img"], scores, latencies, ks
        )

    if lexical is not None:
        for task in sorted(TEXT_TASKS):
            if not by_task[task]:
                continue
            scores, latencies = {}, {}
            for q in by_task[task]:
                started = time.perf_counter()
                ranked = lexical.ranked_ids(q.text or "", fetch)
                latencies[q.query_id] = time.perf_counter() - started
                scores[q.query_id] = score_query(q.query_id, ranked, relevant[q.query_id], ks)
            report.rows += _summarise(task, BM25_BASELINE, "lexical", by_task[task], scores, latencies, ks)
    return report
