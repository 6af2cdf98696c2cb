"""The external benchmark's report: per set and pooled, every channel, as JSON, markdown and a plot.

Pooled figures are the query-weighted means of the sets' figures (R@K and mAP are means over
queries, so this is exactly the figure over all the sets' queries together).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from icon_pipeline.benchmark.report import BM25_BASELINE, PIXEL_BASELINE, BenchmarkReport
from icon_pipeline.library.sources.icon_sets import IconSet
from icon_pipeline.search.channels import HYBRID

POOLED = "pooled"
TASK_TITLES = {
    "tags-all": "human tags, all",
    "tags-novel": "human tags sharing no word with the icon's own name, tags or captions",
    "drawings": "drawings of the concept by another set (every style)",
}
# Shown beside the figures (report text and Dagster metadata).
READING_NOTES = (
    "Figures are pooled over the sets (query-weighted); each set's own are in the report.",
    "The fine-tuned model's R@10 on `drawings` is lower than on the internal benchmark's img2img: "
    "there the queries are degraded copies of the library's own icons, here they are other designers' "
    "drawings of the same concept, which the model never saw.",
    "`tags-novel` keeps only the human tags that share no word with the icon's name, tags or captions: "
    "keyword search (bm25) cannot answer them, so they show what the learnt channels add.",
)
# The rows people compare first; the other channels follow alphabetically.
LEADING = (HYBRID, BM25_BASELINE, PIXEL_BASELINE)


@dataclass
class ExternalReport:
    tasks: dict[str, str]
    sets: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> summary, licence, skipped
    rows: list[dict[str, Any]] = field(default_factory=list)  # set, task, model, n, R@k..., mAP

    def skip(self, name: str, reason: str, summary: dict[str, Any] | None = None) -> None:
        self.sets[name] = {**(summary or {"set": name}), "skipped": reason}

    def add(self, name: str, spec: IconSet, summary: dict[str, Any], report: BenchmarkReport) -> None:
        self.sets[name] = {
            **summary,
            "package": f"{spec.package}@{spec.version}",
            "licence": spec.licence,
            "credit": spec.credit,
        }
        for row in report.rows:
            if row.subset != "all" or row.n_queries == 0:
                continue
            self.rows.append(
                {
                    "set": name,
                    "task": row.task,
                    "model": row.model,
                    "n": row.n_queries,
                    **{f"R@{k}": v for k, v in row.recall.items()},
                    "mAP": row.mean_average_precision,
                }
            )

    def _pooled(self) -> list[dict[str, Any]]:
        totals: dict[tuple[str, str], dict[str, float]] = {}
        for row in self.rows:
            entry = totals.setdefault((row["task"], row["model"]), {"n": 0})
            entry["n"] += row["n"]
            for key, value in row.items():
                if key.startswith("R@") or key == "mAP":
                    entry[key] = entry.get(key, 0.0) + value * row["n"]
        return [
            {
                "set": POOLED,
                "task": task,
                "model": model,
                "n": int(v["n"]),
                **{k: value / v["n"] for k, value in v.items() if k != "n"},
            }
            for (task, model), v in totals.items()
        ]

    def headline(self) -> list[dict[str, Any]]:
        """Pooled rows first, then each set's; per task, hybrid and the baselines lead."""
        order = {name: i for i, name in enumerate(LEADING)}
        task_order = {task: i for i, task in enumerate(self.tasks)}
        every = self._pooled() + self.rows
        set_order = {POOLED: 0, **{name: i + 1 for i, name in enumerate(self.sets)}}
        return sorted(
            every,
            key=lambda r: (
                set_order.get(r["set"], 99),
                task_order.get(r["task"], 99),
                order.get(r["model"], 9),
                r["model"],
            ),
        )

    def figure(self, set_name: str, task: str, model: str, metric: str) -> float | None:
        for row in self.headline():
            if (row["set"], row["task"], row["model"]) == (set_name, task, model):
                value = row.get(metric)
                return float(value) if value is not None and math.isfinite(value) else None
        return None

    def task_table(self, task: str) -> list[dict[str, Any]]:
        """One task's pooled figures per search, hybrid and the baselines first: a narrow table."""
        return [
            {"search": r["model"], "R@1": r["R@1"], "R@10": r["R@10"], "n": r["n"]}
            for r in self.headline()
            if r["set"] == POOLED and r["task"] == task
        ]

    def set_rows(self) -> list[dict[str, Any]]:
        return [
            {"set": name, **{k: v for k, v in info.items() if k != "set"}} for name, info in self.sets.items()
        ]

    def to_json(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "sets": self.sets, "rows": self.headline()}

    def to_markdown(self) -> str:
        """One table per task: each channel's R@1 / R@10, pooled and per set."""
        lines = [
            "## External benchmark: queries nobody on the project wrote",
            "",
            "Other open icon sets' icons matched to the library's by name and alias; their human tags and "
            "drawings as queries, the matched icon's group as the answer (HNSW, R@1 / R@10). These sets "
            "are never trained on, fitted on or used as vocabulary.",
            "",
            *[f"- {note}" for note in READING_NOTES],
            "",
        ]
        measured = [name for name, info in self.sets.items() if not info.get("skipped")]
        for task, title in TASK_TITLES.items():
            rows = [r for r in self.headline() if r["task"] == task]
            if not rows:
                continue
            columns = [POOLED, *measured]
            lines += [
                f"### {task}: {title}",
                "",
                "| channel | " + " | ".join(columns) + " |",
                "|---|" + "---|" * len(columns),
            ]
            models = list(dict.fromkeys(r["model"] for r in rows))
            for model in models:
                cells = []
                for column in columns:
                    row = next((r for r in rows if r["model"] == model and r["set"] == column), None)
                    cells.append(f"{row['R@1']:.3f} / {row['R@10']:.3f} (n={row['n']})" if row else "")
                lines.append(f"| {model} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += [
            "### Sets",
            "",
            "| set | package | licence | icons | matched | queries (all / novel / drawings) | note |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, info in self.sets.items():
            queries = " / ".join(str(info.get(f"{task}_queries", 0)) for task in self.tasks)
            lines.append(
                f"| {name} | {info.get('package', '')} | {info.get('licence', '')} | "
                f"{info.get('set_icons', '')} | {info.get('matched_icons', '')} | {queries} | "
                f"{info.get('skipped') or ''} |"
            )
        credits = [info["credit"] for info in self.sets.values() if info.get("credit")]
        if credits:
            lines += ["", "Credits: " + "; ".join(credits) + "."]
        return "\n".join(lines) + "\n"

    def plot(self, out_dir: Path) -> Path | None:
        """R@1 and R@10 of hybrid search and each channel, pooled, one panel per task."""
        pooled = [r for r in self._pooled()]
        if not pooled:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        tasks = [t for t in self.tasks if any(r["task"] == t for r in pooled)]
        figure, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
        for axis, task in zip(axes[0], tasks, strict=True):
            rows = sorted((r for r in pooled if r["task"] == task), key=lambda r: -r["R@10"])
            labels = [r["model"] for r in rows]
            positions = range(len(rows))
            axis.barh([p + 0.2 for p in positions], [r["R@10"] for r in rows], height=0.4, label="R@10")
            axis.barh([p - 0.2 for p in positions], [r["R@1"] for r in rows], height=0.4, label="R@1")
            axis.set_yticks(list(positions), labels, fontsize=8)
            axis.invert_yaxis()
            axis.set_xlim(0, 1)
            axis.set_title(f"{task} (n={rows[0]['n']})", fontsize=10)
            axis.grid(axis="x", alpha=0.3)
        axes[0][0].legend(fontsize=8, loc="lower right")
        figure.tight_layout()
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "external_benchmark.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return path


def combined_markdown(internal: str, external_markdown: Path) -> str:
    """benchmark.md: the external benchmark first, then the internal one, each labelled."""
    parts = []
    if external_markdown.exists():
        parts.append(external_markdown.read_text(encoding="utf-8"))
    parts.append(
        "## Internal benchmark: generated from the project's own vocabulary\n\n"
        "text2img queries are eval captions, semantic2img intents are built from them with the "
        "project's templates and synonyms file, img2img queries are degraded copies of indexed icons "
        "(`hybrid-concept`: the copied icon neither ranked nor folded into its variants, so the concept "
        "must be found by the other variants' own scores).\n\n" + internal
    )
    return "\n".join(parts)


# What each column of ExternalReport.task_table means (shown in Dagster).
EXTERNAL_COLUMNS = {
    "search": "hybrid search, or one of its channels alone (bm25 and raw-pixels-16x16 are baselines)",
    "R@1": "share of queries whose icon is first (pooled over the sets, HNSW)",
    "R@10": "share of queries whose icon is in the top 10",
    "n": "queries, pooled over the sets",
}
