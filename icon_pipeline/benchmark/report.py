"""The benchmark: every task x channel x search mode x query subset, hybrid search first.

Each channel that answers a task is a row of its own, beside hybrid search (what designers get), so
each channel's contribution is visible: keywords (`bm25`), the sentence encoder over captions
(`captions`), every image-text model (`base`, `finetuned`), normalised pixels (`pixels`), and the
trivial baseline `raw-pixels-16x16` (16x16 grayscale, mean-centred, cosine, in numpy): a model that
is worse than that is seen at once. With folded variants, `hybrid-unfolded` shows hybrid search
without folding, so folding's share of the gain is visible too.

Every vector channel is searched twice, exactly (sequential scan) and through HNSW, so index error
and model error stay apart. Each cell: R@1/5/10/30, mAP@max(K), and the search latency p50/p95
(the database query; hybrid: its channels' queries plus the merge). Subsets: all queries, those
whose groups the models trained on (`seen`) and the held-out ones.

Comparisons that matter (hybrid vs its baseline, fine-tuned vs base) come with a paired
randomisation test on per-query R@10, so a difference within noise is said to be one.

A query that cannot be used (an unreadable image) is recorded in `failures` and skipped for every
channel alike; the run carries on.
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
from PIL import Image
from scipy import stats

from icon_pipeline.benchmark.metrics import (
    DEFAULT_KS,
    QueryScore,
    aggregate,
    group_members,
    relevant_icons,
    score_query,
)
from icon_pipeline.search.channels import BASE_MODEL, CAPTIONS, FINETUNED_MODEL, HYBRID, KEYWORDS, PIXELS
from icon_pipeline.search.fusion import FusionSettings, fusion_kind
from icon_pipeline.search.hybrid import HybridSearch
from icon_pipeline.search.query import QueryError, prepare_query_image

# The internal benchmark's tasks and the kind of query each takes; the external benchmark
# (benchmark/external.py) passes its own.
INTERNAL_TASKS: dict[str, str] = {"text2img": "text", "semantic2img": "text", "img2img": "image"}
TASKS: tuple[str, ...] = tuple(INTERNAL_TASKS)
TEXT_TASKS = frozenset(t for t, kind in INTERNAL_TASKS.items() if kind == "text")
SUBSETS: tuple[str, ...] = ("all", "seen", "heldout")
MODES: tuple[str, ...] = ("exact", "hnsw")
PIXEL_BASELINE = "raw-pixels-16x16"
BM25_BASELINE = KEYWORDS  # the row keyword search answers for
HYBRID_UNFOLDED = "hybrid-unfolded"
# Image queries made from an indexed icon: hybrid search with that icon neither ranked nor folded
# into its variants, so finding the concept is measured, not recognising the same pixels.
HYBRID_CONCEPT = "hybrid-concept"
PIXEL_SIDE = 16
# Fewer queries than this in a task: its figures are flagged as not meaningful (one query is
# then worth 2 points of R@K or more).
MIN_MEANINGFUL_QUERIES = 50
SIGNIFICANCE_RESAMPLES = 9999


@dataclass(frozen=True)
class BenchmarkQuery:
    query_id: str
    task: str
    text: str | None
    image_path: str | None
    relevant_group_ids: tuple[str, ...]
    source_icon_id: str | None
    heldout: bool
    exclude_source: bool = True  # img2img: False when the icon has no variant and is its own answer

    @classmethod
    def from_row(cls, row: Mapping[str, Any], tasks: Mapping[str, str] = INTERNAL_TASKS) -> BenchmarkQuery:
        task = row.get("task")
        query_id = str(row.get("query_id", "?"))
        if task not in tasks:
            raise ValueError(f"query {query_id}: unknown task {task!r}; allowed: {', '.join(tasks)}")
        text, image_path = row.get("text"), row.get("image_path")
        if tasks[task] == "text" and not text:
            raise ValueError(f"query {query_id}: task {task} needs a text")
        if tasks[task] == "image" and not image_path:
            raise ValueError(f"query {query_id}: task {task} needs an image_path")
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
            exclude_source=bool(row.get("exclude_source", True)),
        )

    @property
    def exclude(self) -> frozenset[str]:
        # An image made from an indexed icon (img2img): that icon is neither relevant nor rankable.
        return (
            frozenset({self.source_icon_id})
            if self.image_path and self.source_icon_id and self.exclude_source
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


@dataclass(frozen=True)
class Comparison:
    """A paired test of one channel against another on the same queries (per-query R@10)."""

    task: str
    model: str
    baseline: str
    n_queries: int
    recall_at_10: float
    baseline_recall_at_10: float
    p_value: float  # two-sided, paired randomisation (sign-flip) test

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "model": self.model,
            "baseline": self.baseline,
            "n_queries": self.n_queries,
            "recall@10": round(self.recall_at_10, 6),
            "baseline_recall@10": round(self.baseline_recall_at_10, 6),
            "difference": round(self.recall_at_10 - self.baseline_recall_at_10, 6),
            "p_value": round(self.p_value, 6),
            "significant": self.significant,
        }


@dataclass
class BenchmarkReport:
    ks: tuple[int, ...]
    models: list[str]
    rows: list[ReportRow] = field(default_factory=list)
    failures: list[QueryFailure] = field(default_factory=list)
    query_counts: dict[str, int] = field(default_factory=dict)
    comparisons: list[Comparison] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. a task with too few queries to mean anything
    fusion: dict[str, Any] = field(default_factory=dict)  # the hybrid settings the run used
    tasks: dict[str, str] = field(default_factory=lambda: dict(INTERNAL_TASKS))  # task -> text | image

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
            "tasks": [t for t in self.tasks if t in results],
            "models": list(self.models),
            "query_counts": dict(self.query_counts),
            "results": results,
            "rows": flat,
            "comparisons": [c.as_dict() for c in self.comparisons],
            "warnings": list(self.warnings),
            "fusion": self.fusion,
            "failures": [vars(f) for f in self.failures],
        }

    def write_json(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        return path

    def headline(self) -> list[dict[str, Any]]:
        """Per task: hybrid search against its baseline and every channel (HNSW, all queries)."""
        out = []
        for task in self.tasks:
            rows = [
                r
                for r in self.rows
                if r.task == task and r.subset == "all" and r.mode != "exact" and r.n_queries
            ]
            order = {HYBRID: 0, BM25_BASELINE: 1, PIXEL_BASELINE: 1}
            for r in sorted(rows, key=lambda r: (order.get(r.model, 2), r.model)):
                out.append(
                    {
                        "task": task,
                        "model": r.model,
                        "n": r.n_queries,
                        "R@1": r.recall.get(1),
                        "R@10": r.recall.get(10),
                        f"mAP@{self.map_k}": r.mean_average_precision,
                    }
                )
        return out

    def _plotted(self, task: str, subset: str = "all") -> list[ReportRow]:
        """A task's rows as search serves them (HNSW; BM25 and the pixel baseline have one mode),
        hybrid and the baselines first: the exact scans are in the tables, not the plots."""
        order = {HYBRID: 0, BM25_BASELINE: 1, PIXEL_BASELINE: 1}
        rows = [
            r
            for r in self.rows
            if r.task == task and r.subset == subset and r.mode != "exact" and r.n_queries > 0
        ]
        return sorted(rows, key=lambda r: (order.get(r.model, 2), r.model))

    def task_table(self, task: str) -> list[dict[str, Any]]:
        """Per search: R@1 and R@10 as served (HNSW), and R@10 of the exact scan beside it (vector
        channels only): a narrow table, one per task."""
        table = []
        for r in self._plotted(task):
            try:
                exact = self.row(task, r.model, "exact").recall.get(10) if r.mode == "hnsw" else None
            except KeyError:
                exact = None
            table.append(
                {"search": r.model, "R@1": r.recall.get(1), "R@10": r.recall.get(10), "exact": exact}
            )
        return table

    def seen_heldout_table(self, task: str) -> list[dict[str, Any]]:
        """Per search: R@10 on icons whose groups the models trained on (seen) and on held-out
        ones: how much of a figure is memory (the counts: `subset_counts`)."""
        table = []
        for r in self._plotted(task):
            figures: dict[str, Any] = {"search": r.model}
            for subset, label in (("seen", "seen"), ("heldout", "held-out")):
                try:
                    figures[label] = self.row(task, r.model, r.mode, subset).recall.get(10)
                except KeyError:
                    figures[label] = None
            table.append(figures)
        return table

    def subset_counts(self, task: str) -> dict[str, int]:
        """Queries per subset of `task` (all, seen, heldout)."""
        counts: dict[str, int] = {}
        for r in self.rows:
            if r.task == task and r.n_queries:
                counts[r.subset] = max(counts.get(r.subset, 0), r.n_queries)
        return counts

    def to_markdown(self) -> str:
        """The headline (hybrid vs baselines), how to read it, the comparisons, then per task a
        recall table and a latency table (two narrow tables rather than one wide one)."""
        lines = [
            "### headline (HNSW, all queries)",
            "",
            "| task | model | n | R@1 | R@10 | mAP |",
            "|---|---|---|---|---|---|",
        ]
        for h in self.headline():
            lines.append(
                f"| {h['task']} | {h['model']} | {h['n']} | {_fmt(h['R@1'])} | {_fmt(h['R@10'])} | "
                f"{_fmt(h[f'mAP@{self.map_k}'])} |"
            )
        lines += ["", "### how to read these figures", "", *[f"- {note}" for note in READING_NOTES], ""]
        if self.comparisons:
            lines += [
                "### comparisons (paired randomisation test on per-query R@10)",
                "",
                "| task | model | baseline | n | R@10 | baseline R@10 | p | significant |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for c in self.comparisons:
                verdict = "yes" if c.significant else "no"
                lines.append(
                    f"| {c.task} | {c.model} | {c.baseline} | {c.n_queries} | {_fmt(c.recall_at_10)} | "
                    f"{_fmt(c.baseline_recall_at_10)} | {c.p_value:.4f} | {verdict} |"
                )
            lines.append("")
        for warning in self.warnings:
            lines.append(f"**Warning:** {warning}")
        if self.warnings:
            lines.append("")
        recall_header = ["model", "mode", "subset", "n"] + [f"R@{k}" for k in self.ks] + [f"mAP@{self.map_k}"]
        latency_header = ["model", "mode", "p50 ms", "p95 ms", "ANN∩exact@10"]
        for task in self.tasks:
            rows = [r for r in self.rows if r.task == task and r.n_queries > 0]
            if not rows:
                continue
            lines += [
                f"### {task}",
                "",
                "| " + " | ".join(recall_header) + " |",
                "|" + "---|" * len(recall_header),
            ]
            for r in rows:
                cells = [r.model, r.mode, r.subset, str(r.n_queries)]
                cells += [_fmt(r.recall.get(k)) for k in self.ks] + [_fmt(r.mean_average_precision)]
                lines.append("| " + " | ".join(cells) + " |")
            lines += [
                "",
                f"{task}, latency (all queries) and HNSW's agreement with the exact scan:",
                "",
                "| " + " | ".join(latency_header) + " |",
                "|" + "---|" * len(latency_header),
            ]
            for r in rows:
                if r.subset != "all":
                    continue
                cells = [r.model, r.mode, _fmt(r.latency_p50_ms, 2), _fmt(r.latency_p95_ms, 2)]
                lines.append("| " + " | ".join([*cells, _fmt(r.ann_overlap_at_10)]) + " |")
            lines.append("")
        if self.failures:
            lines.append(
                f"{len(self.failures)} queries could not be used (first: {self.failures[0].reason})."
            )
        return "\n".join(lines)

    def plots(self, out_dir: Path) -> list[Path]:
        """R@K as small multiples: one panel per task, one line per search as served (HNSW; the
        baselines dashed), each search one colour in every panel, one legend below the panels."""
        import matplotlib

        matplotlib.use("Agg")  # no display on servers and in tests
        import matplotlib.pyplot as plt

        tasks = [task for task in self.tasks if self._plotted(task)]
        if not tasks:
            return []
        out_dir.mkdir(parents=True, exist_ok=True)
        figure, axes = plt.subplots(
            1, len(tasks), figsize=(3.4 * len(tasks) + 0.6, 3.6), sharey=True, squeeze=False
        )
        positions = list(range(len(self.ks)))  # K = 1, 5, 10, 30 evenly spaced
        for axis, task in zip(axes[0], tasks, strict=True):
            rows = self._plotted(task)
            for r in rows:
                axis.plot(
                    positions,
                    [r.recall[k] for k in self.ks],
                    "--" if r.model in (BM25_BASELINE, PIXEL_BASELINE) else "-",
                    marker="o",
                    markersize=3,
                    linewidth=2.2 if r.model == HYBRID else 1.3,
                    zorder=3 if r.model == HYBRID else 2,  # drawn over a channel it equals
                    color=channel_colour(r.model),
                    label=r.model,
                )
            axis.set_title(f"{task} ({rows[0].n_queries} queries)", fontsize=9)
            axis.set_xticks(positions, [str(k) for k in self.ks])
            axis.set(xlabel="K", ylim=(0, 1.02))
            axis.grid(alpha=0.3)
        axes[0][0].set_ylabel("R@K (hit rate)")
        labels: dict[str, Any] = {}
        for axis in axes[0]:
            for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
                labels.setdefault(label, handle)
        figure.legend(
            list(labels.values()),
            list(labels),
            loc="lower center",
            ncol=min(len(labels), 5),
            fontsize=8,
            frameon=False,
        )
        rows_of_legend = math.ceil(len(labels) / 5)
        figure.tight_layout(rect=(0, 0.07 * rows_of_legend + 0.02, 1, 1))
        path = out_dir / "recall_at_k.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return [path]


# Every search keeps its colour in every panel and plot (tab10: ten distinct colours).
PLOT_ORDER = (
    HYBRID,
    BM25_BASELINE,
    PIXEL_BASELINE,
    CAPTIONS,
    FINETUNED_MODEL,
    BASE_MODEL,
    PIXELS,
    HYBRID_UNFOLDED,
    HYBRID_CONCEPT,
)
_TAB10 = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def channel_colour(name: str) -> str:
    """The colour of search `name` in every plot; an unknown channel gets the tenth colour."""
    return _TAB10[PLOT_ORDER.index(name)] if name in PLOT_ORDER else _TAB10[-1]


# Shown beside the figures (report text and Dagster metadata): what two figures for one search mean.
READING_NOTES = (
    "Each vector channel (finetuned, base, captions, pixels) has two figures: `exact` scans every "
    "icon, `hnsw` goes through the index search uses. So the fine-tuned model has two R@10 values "
    "per task: their difference is index error, not model error; the headline and the plots show "
    "HNSW, what designers get.",
    "img2img queries are degraded copies of indexed icons. `hybrid` folds an icon's variants into "
    "one card, so the card of the copied icon itself counts: its high R@1 says a designer finds "
    "the icon a screenshot was taken of. `hybrid-unfolded` and `hybrid-concept` leave the copied "
    "icon out and must rank another variant of it (another style or size): their much lower R@1 is "
    "that harder question, the one the external benchmark's drawings ask too.",
    "`seen` queries are about icons whose groups the models trained on, `heldout` about groups kept "
    "out of training: the gap between them is what the models memorised.",
)


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
        if not query.image_path:
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
                QueryFailure(f"icon {icon_id}", "image", f"pixel baseline: cannot read {path}: {exc}")
            )
            continue
        kept.append(icon_id)
    return kept, np.stack(vectors) if vectors else np.zeros((0, PIXEL_SIDE * PIXEL_SIDE), np.float32)


def paired_p_value(a: Sequence[float], b: Sequence[float], seed: int = 0) -> float:
    """Two-sided p of a paired randomisation (sign-flip) test that a and b have the same mean."""
    differences = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if not differences.any():
        return 1.0
    result = stats.permutation_test(
        (differences,),
        np.mean,
        permutation_type="samples",
        n_resamples=SIGNIFICANCE_RESAMPLES,
        alternative="two-sided",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return float(result.pvalue)


def _compare(
    report: BenchmarkReport,
    per_query: Mapping[tuple[str, str, str], Mapping[str, QueryScore]],
    task: str,
    model: str,
    baseline: str,
) -> None:
    mine = next((v for (t, m, _), v in per_query.items() if t == task and m == model), None)
    theirs = next((v for (t, m, _), v in per_query.items() if t == task and m == baseline), None)
    if not mine or not theirs:
        return
    common = sorted(set(mine) & set(theirs))
    if not common:
        return
    a = [mine[q].recall[10] for q in common]
    b = [theirs[q].recall[10] for q in common]
    report.comparisons.append(
        Comparison(
            task, model, baseline, len(common), float(np.mean(a)), float(np.mean(b)), paired_p_value(a, b)
        )
    )


def run_benchmark(
    queries: Iterable[Mapping[str, Any]],
    search: HybridSearch,
    icon_to_group: Mapping[str, str],
    ks: Sequence[int] = DEFAULT_KS,
    *,
    icon_images: Mapping[str, str | Path] | None = None,
    modes: Sequence[str] = MODES,
    connections: Sequence[Any] = (),
    tasks: Mapping[str, str] = INTERNAL_TASKS,
) -> BenchmarkReport:
    """Score hybrid search and every channel of `search` (vector channels exact and HNSW, BM25 once),
    plus the 16x16 pixel baseline (needs `icon_images`: icon_id -> PNG), on the queries.

    `icon_to_group` is the indexed icons' grouping: relevance is by group. `connections`: extra
    database connections to search on in parallel (HybridSearch.gather). `tasks`: task -> the kind
    of query it takes (text or image); the internal benchmark's by default.
    """
    ks = tuple(sorted(set(ks)))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    unknown_modes = set(modes) - set(MODES)
    if unknown_modes:
        raise ValueError(f"unknown search modes {sorted(unknown_modes)}; allowed: {', '.join(MODES)}")
    parsed = [BenchmarkQuery.from_row(row, tasks) for row in queries]
    if len({q.query_id for q in parsed}) != len(parsed):
        raise ValueError("query ids must be unique")
    fetch = max(ks)
    members = group_members(icon_to_group)
    relevant = {q.query_id: relevant_icons(q.relevant_group_ids, members, q.exclude) for q in parsed}
    channels = list(search.channels)
    report = BenchmarkReport(
        ks=ks, models=[HYBRID, *channels], fusion=json.loads(search.settings.to_json()), tasks=dict(tasks)
    )
    images = _load_query_images(parsed, report.failures)
    usable = [q for q in parsed if tasks[q.task] == "text" or q.query_id in images]
    by_task = {task: [q for q in usable if q.task == task] for task in tasks}
    report.query_counts = {task: len(qs) for task, qs in by_task.items()}
    for task, count in report.query_counts.items():
        if 0 < count < MIN_MEANINGFUL_QUERIES:
            report.warnings.append(
                f"{task}: only {count} queries (fewer than {MIN_MEANINGFUL_QUERIES}): its figures are not "
                "meaningful; a larger library, or queries.total, gives more"
            )
    objects = [q.text if tasks[q.task] == "text" else images[q.query_id] for q in usable]
    per_query: dict[tuple[str, str, str], dict[str, QueryScore]] = {}

    def score(
        task: str,
        name: str,
        mode: str,
        rankings: Mapping[str, list[str]],
        times: Mapping[str, float],
        overlaps: Mapping[str, float] | None = None,
    ) -> None:
        task_queries = [q for q in by_task[task] if q.query_id in rankings]
        if not task_queries:
            return
        scores = {
            q.query_id: score_query(
                q.query_id, rankings[q.query_id], relevant[q.query_id], ks, exclude=q.exclude
            )
            for q in task_queries
        }
        per_query[(task, name, mode)] = scores
        report.rows.extend(_summarise(task, name, mode, task_queries, scores, times, ks, overlaps))

    settings = search.settings
    unfolded = FusionSettings(settings.weights, settings.name_boost, False, settings.fitted)
    encoded: dict[str, list] = {}
    exact_top10: dict[tuple[str, str], set[str]] = {}
    for mode in modes:
        results = search.gather(
            objects,
            channels,
            k=max(search.depth, fetch + 1),
            exact=mode == "exact",
            encoded=encoded,
            connections=connections,
        )
        for name in channels:
            if name == KEYWORDS and mode != modes[0]:
                continue  # keyword search has no index mode: scored once
            label = "lexical" if name == KEYWORDS else mode
            for task in tasks:
                rankings, times, overlaps = {}, {}, {}
                for q, r in zip(usable, results, strict=True):
                    if q.task != task or name not in r.hits:
                        continue
                    ranked = [h.icon_id for h in r.hits[name]]
                    rankings[q.query_id] = ranked
                    times[q.query_id] = r.seconds[name]
                    top10 = set([i for i in ranked if i not in q.exclude][:10])
                    if mode == "exact":
                        exact_top10[(name, q.query_id)] = top10
                    elif exact_top10.get((name, q.query_id)):
                        expected = exact_top10[(name, q.query_id)]
                        overlaps[q.query_id] = len(top10 & expected) / len(expected)
                score(task, name, label, rankings, times, overlaps)
        variants = [(HYBRID, settings)] + ([(HYBRID_UNFOLDED, unfolded)] if settings.fold_variants else [])
        if settings.fold_variants and any(q.exclude for q in usable):
            variants.append((HYBRID_CONCEPT, settings))
        for name, chosen in variants:
            for task in tasks:
                rankings, times = {}, {}
                for q, obj, r in zip(usable, objects, results, strict=True):
                    if q.task != task or (name == HYBRID_CONCEPT and not q.exclude):
                        continue
                    started = time.perf_counter()
                    fused = search.fuse(
                        obj,
                        r,
                        fetch + len(q.exclude),
                        settings=chosen,
                        exclude=q.exclude if name == HYBRID_CONCEPT else (),
                    )
                    merge = time.perf_counter() - started
                    rankings[q.query_id] = [h.icon_id for h in fused]
                    active = chosen.channels(fusion_kind(obj))
                    times[q.query_id] = merge + sum(r.seconds.get(c, 0.0) for c in active)
                score(task, name, mode, rankings, times)

    image_tasks = [task for task, kind in tasks.items() if kind == "image" and by_task[task]]
    if icon_images and image_tasks:
        icon_ids, matrix = _pixel_matrix(icon_images, sorted(icon_to_group), report.failures)
        for task in image_tasks:
            rankings, times = {}, {}
            for q in by_task[task]:
                started = time.perf_counter()
                similarity = matrix @ pixel_vector(images[q.query_id])
                top = np.argsort(-similarity, kind="stable")[: fetch + len(q.exclude)]
                times[q.query_id] = time.perf_counter() - started
                rankings[q.query_id] = [icon_ids[i] for i in top]
            score(task, PIXEL_BASELINE, "numpy", rankings, times)

    for task, kind in tasks.items():
        baseline = PIXEL_BASELINE if kind == "image" else BM25_BASELINE
        _compare(report, _in_mode(per_query, "hnsw"), task, HYBRID, baseline)
        _compare(report, _in_mode(per_query, "hnsw"), task, FINETUNED_MODEL, BASE_MODEL)
        if kind == "image":
            _compare(report, _in_mode(per_query, "hnsw"), task, FINETUNED_MODEL, PIXEL_BASELINE)
        else:
            _compare(report, _in_mode(per_query, "hnsw"), task, HYBRID, CAPTIONS)
    return report


def _in_mode(
    per_query: Mapping[tuple[str, str, str], Mapping[str, QueryScore]], mode: str
) -> dict[tuple[str, str, str], Mapping[str, QueryScore]]:
    """Rows of one search mode, plus the rows that have no mode (BM25, the pixel baseline)."""
    return {key: value for key, value in per_query.items() if key[2] in (mode, "lexical", "numpy")}


# What each column of task_table, seen_heldout_table and the comparisons means (shown in Dagster).
RESULT_COLUMNS = {
    "search": "hybrid search, or one of its channels alone (bm25 and raw-pixels-16x16 are baselines)",
    "R@1": "share of queries whose answer is first (HNSW, as search serves it)",
    "R@10": "share of queries whose answer is in the top 10 (HNSW)",
    "exact": "R@10 of the same channel by an exact scan of every icon: the gap to R@10 is index error",
}
SEEN_HELDOUT_COLUMNS = {
    "seen": "R@10 on queries about icon groups the models trained on (HNSW)",
    "held-out": "R@10 on queries about icon groups kept out of training: what the models learnt, not "
    "memorised (subset_queries has the counts; under 50, read it as a rough figure)",
}
COMPARISON_COLUMNS = {
    "search": "the search compared",
    "vs": "the one it should beat, on the same queries",
    "gain": "R@10 of the search minus R@10 of the other (HNSW; each is in results/<task>)",
    "p": "paired randomisation test on per-query R@10: below 0.05, the gain is not noise",
}
