"""Would fusing keyword (BM25) and model rankings help the text tasks? Measured, not assumed.

Not a test: prints figures, asserts nothing. Reads what `make demo` leaves: the frozen benchmark
queries, the BM25 documents the report uses (names, tags, captions), and every model in the
pgvector index with the checkpoint recorded beside it. For each text task and model it prints
R@1 / R@10 of BM25 alone, the model alone (HNSW), and reciprocal rank fusion of the two
(score = sum of weight / (60 + rank)) at several weights for the model's ranking.

    .venv/bin/python benchmarks/hybrid_search.py [--weights 1 0.5 0.25] [--depth 100]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from icon_pipeline.assets.pairs import QUERIES_NAME  # noqa: E402
from icon_pipeline.config import load_config  # noqa: E402
from icon_pipeline.frozen import frozen_paths, read_frozen_jsonl  # noqa: E402
from icon_pipeline.index import get_model_index, search_vectors  # noqa: E402
from icon_pipeline.lexical import library_keywords  # noqa: E402
from icon_pipeline.metrics import group_members, relevant_icons, score_query  # noqa: E402
from icon_pipeline.report import TEXT_TASKS, BenchmarkQuery  # noqa: E402
from icon_pipeline.service import SearchService  # noqa: E402
from icon_pipeline.tables import eval_dir  # noqa: E402

RRF_K = 60  # the constant of Cormack et al.; ranks deeper than it count little


def fuse(rankings: Sequence[Sequence[str]], weights: Sequence[float], depth: int) -> list[str]:
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, icon_id in enumerate(ranking, start=1):
            scores[icon_id] = scores.get(icon_id, 0.0) + weight / (RRF_K + rank)
    return sorted(scores, key=lambda icon_id: -scores[icon_id])[:depth]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    parser.add_argument("--depth", type=int, default=100, help="how deep each ranking is read")
    args = parser.parse_args()

    path, _ = frozen_paths(eval_dir(), QUERIES_NAME, load_config().queries.version)
    queries = [BenchmarkQuery.from_row(row) for row in read_frozen_jsonl(path)]
    keywords = library_keywords()  # the BM25 index the report's row uses, and each icon's group
    members = group_members(keywords.groups)

    service = SearchService.open()
    try:
        header = ["BM25", "model", *[f"RRF w={w:g}" for w in args.weights]]
        print(f"{'model':<12}{'task':<14}{'queries':>8}" + "".join(f"{h:>16}" for h in header))
        for model_id in service.models():
            bundle, model = service.bundle(model_id), get_model_index(service.conn, model_id)
            for task in sorted(TEXT_TASKS):
                task_queries = [q for q in queries if q.task == task]
                vectors = bundle.embed_texts([q.text or "" for q in task_queries])
                recalls: list[list[tuple[float, float]]] = [[] for _ in header]
                for query, vector in zip(task_queries, vectors, strict=True):
                    relevant = relevant_icons(query.relevant_group_ids, members, query.exclude)
                    keyword = keywords.index.ranked_ids(query.text or "", args.depth)
                    hits = search_vectors(
                        service.conn, model, vector, args.depth, exact=False, ef_search=2 * args.depth
                    )
                    semantic = [hit.icon_id for hit in hits]
                    rankings = [
                        keyword,
                        semantic,
                        *[fuse([keyword, semantic], [1.0, w], 30) for w in args.weights],
                    ]
                    for column, ranked in zip(recalls, rankings, strict=True):
                        score = score_query(query.query_id, ranked, relevant, (1, 10))
                        column.append((score.recall[1], score.recall[10]))
                cells = [
                    f"{np.mean([r[0] for r in c]):.3f} / {np.mean([r[1] for r in c]):.3f}" for c in recalls
                ]
                print(f"{model_id:<12}{task:<14}{len(task_queries):>8}" + "".join(f"{c:>16}" for c in cells))
        print("cells: R@1 / R@10")
    finally:
        service.close()


if __name__ == "__main__":
    main()
