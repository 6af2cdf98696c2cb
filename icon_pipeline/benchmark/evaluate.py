"""`icon-pipeline evaluate`: a team's own queries (from their search logs, say) scored for hybrid
search and every channel, with the benchmark's metric code, in one process.

The file has one JSON object a line: `{"text": "..."}` or `{"image": "path"}` (relative to the
file), plus `"relevant"`: the icons a good answer contains, by icon id or by name (`bell` names
every variant called bell; `bell (filled)` one style). Blank lines are skipped; a line that cannot
be used is reported with its number and the reason, and the others are still scored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from icon_pipeline.benchmark.metrics import AggregateScore, aggregate, score_query
from icon_pipeline.library.catalog import read_catalog
from icon_pipeline.search.channels import HYBRID, query_kind
from icon_pipeline.search.query import QueryError, prepare_query_image, validate_text_query


@dataclass(frozen=True)
class LineProblem:
    line: int
    reason: str


@dataclass(frozen=True)
class UserQuery:
    line: int
    query: str | Image.Image
    relevant: frozenset[str]
    label: str


@dataclass
class Evaluation:
    file: Path | str  # the queries file, or where the judged queries came from
    ks: tuple[int, ...]
    queries: list[UserQuery] = field(default_factory=list)
    skipped: list[LineProblem] = field(default_factory=list)
    scores: dict[tuple[str, str], AggregateScore] = field(default_factory=dict)  # (channel, kind) -> score

    @property
    def scored(self) -> int:
        return len(self.queries)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": str(self.file),
            "queries": self.scored,
            "skipped": [{"line": p.line, "reason": p.reason} for p in self.skipped],
            "results": [
                {"channel": channel, "kind": kind, **score.as_dict(max(self.ks))}
                for (channel, kind), score in self.scores.items()
            ],
        }


def icon_lookup() -> dict[str, frozenset[str]]:
    """Every way a user may name an icon (lowercase): its id, its name, `name (style)`."""
    lookup: dict[str, set[str]] = {}
    for icon in read_catalog():
        keys = {icon.icon_id.lower(), icon.name.lower()}
        if icon.style:
            keys.add(f"{icon.name} ({icon.style})".lower())
        for key in keys:
            lookup.setdefault(key, set()).add(icon.icon_id)
    return {key: frozenset(ids) for key, ids in lookup.items()}


def _parse(line_number: int, text: str, base: Path, lookup: Mapping[str, frozenset[str]]) -> UserQuery:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a JSON object ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    has_text, has_image = bool(raw.get("text")), bool(raw.get("image"))
    if has_text == has_image:
        raise ValueError('needs exactly one of "text" or "image"')
    relevant = raw.get("relevant")
    if not isinstance(relevant, list) or not relevant or not all(isinstance(r, str) for r in relevant):
        raise ValueError('"relevant" must be a non-empty list of icon ids or names')
    unknown = [r for r in relevant if r.strip().lower() not in lookup]
    if unknown:
        raise ValueError(f'unknown icon(s) in "relevant": {", ".join(map(repr, unknown[:5]))}')
    icons = frozenset().union(*(lookup[r.strip().lower()] for r in relevant))
    if has_text:
        query: str | Image.Image = validate_text_query(str(raw["text"]))
        label = query
    else:
        path = Path(str(raw["image"]))
        path = path if path.is_absolute() else base / path
        query = prepare_query_image(path, label=f"image {raw['image']!r}")
        label = str(raw["image"])
    return UserQuery(line_number, query, icons, label)


def read_queries(
    path: Path, lookup: Mapping[str, frozenset[str]]
) -> tuple[list[UserQuery], list[LineProblem]]:
    queries, problems = [], []
    text = path.read_text(encoding="utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            queries.append(_parse(number, line, path.parent, lookup))
        except (ValueError, QueryError) as exc:
            problems.append(LineProblem(number, str(exc)))
    return queries, problems


def evaluate_file(path: Path, service: Any, k: int = 30) -> Evaluation:
    """Score every usable line for hybrid search and each channel (`service`: a SearchService)."""
    if k < 10:
        raise QueryError(f"-k must be at least 10 (R@10 is reported), got {k}")
    ks = tuple(sorted({1, 5, 10, k}))
    queries, problems = read_queries(path, icon_lookup())
    return _score(Evaluation(Path(path), ks, queries, problems), service, k)


def evaluate_judgements(service: Any, k: int = 30) -> Evaluation:
    """Score the queries designers judged in the search app (search/judgements.py): an icon is
    relevant when its thumbs up outnumber its thumbs down; queries with none are listed as skipped."""
    from icon_pipeline.search.judgements import JUDGEMENTS_TABLE, judged_queries

    if k < 10:
        raise QueryError(f"-k must be at least 10 (R@10 is reported), got {k}")
    ks = tuple(sorted({1, 5, 10, k}))
    judged, without = judged_queries(service.conn)
    queries = [
        UserQuery(number, q.text if q.text is not None else q.image, q.relevant, q.label)  # type: ignore[arg-type]
        for number, q in enumerate(judged, start=1)
    ]
    skipped = [LineProblem(0, f"{without} judged quer(ies) with no icon marked relevant")] if without else []
    return _score(
        Evaluation(f"judgements in PostgreSQL ({JUDGEMENTS_TABLE})", ks, queries, skipped), service, k
    )


def _score(result: Evaluation, service: Any, k: int) -> Evaluation:
    """Every channel's scores over result.queries, by query kind, with the benchmark's metric code."""
    queries, ks = result.queries, result.ks
    if not queries:
        return result
    for channel in service.models():
        rankings = service.batch([q.query for q in queries], channel, k)
        for kind in ("text", "image"):
            scores = [
                score_query(str(q.line), ranked, q.relevant, ks)
                for q, ranked in zip(queries, rankings, strict=True)
                if query_kind(q.query) == kind and _answers(service, channel, kind)
            ]
            if scores:
                result.scores[(channel, kind)] = aggregate(scores, ks)
    return result


def _answers(service: Any, channel: str, kind: str) -> bool:
    return channel == HYBRID or kind in service.channel_set.channel(channel).kinds


def format_table(result: Evaluation) -> str:
    k = max(result.ks)
    header = f"{'channel':18} {'kind':6} {'n':>5} " + " ".join(f"{'R@' + str(x):>6}" for x in result.ks)
    lines = [f"{result.scored} queries scored from {result.file}", header + f" {'mAP@' + str(k):>7}"]
    for (channel, kind), score in result.scores.items():
        recalls = " ".join(f"{score.recall[x]:6.3f}" for x in result.ks)
        lines.append(
            f"{channel:18} {kind:6} {score.n_queries:5d} {recalls} {score.mean_average_precision:7.3f}"
        )
    if result.skipped:
        lines.append(f"{len(result.skipped)} line(s) skipped (see above)")
    return "\n".join(lines)
