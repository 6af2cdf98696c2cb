"""pgvector HNSW vs exact search on random or clustered unit vectors: build time, recall@k, latency.

It goes through the project's own `write_embeddings` and `search_vectors`, so it measures what the
index asset builds: float32 rows with an HNSW index over their halfvec cast.

Not a test: prints figures, asserts nothing. Starts its own embedded PostgreSQL inside the
project (.bench_tmp/pgdata; embedded PostgreSQL opens its parents' permissions as root, so
never /tmp) and stops it at the end unless --keep-server.

    .venv/bin/python benchmarks/index.py                      # 10k and 100k at 768-d
    .venv/bin/python benchmarks/index.py --dim 64 --sizes 10000 100000
    .venv/bin/python benchmarks/index.py --sizes 100000 --m 16 24 --ef-search 40 100 200 400
    .venv/bin/python benchmarks/index.py --data clustered --sizes 100000 --ef-search 40 60 80

Random unit vectors in high dimension are the hardest case for HNSW (no low-dimensional
structure, near-equal distances): real embeddings do better at the same settings. Ground truth
is computed in numpy; the database's exact (sequential-scan) latency is measured beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from icon_pipeline.core.database import start_embedded, stop_embedded  # noqa: E402
from icon_pipeline.search.index import drop_model, get_model_index, search_vectors, write_embeddings  # noqa: E402


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    matrix = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def clustered_vectors(
    n: int, dim: int, seed: int, cluster_size: int = 20, spread: float = 0.75
) -> np.ndarray:
    """Points around n / cluster_size random centres (cosine to their centre ~0.8): closer to real
    embeddings, where an icon has a handful of near neighbours (its variants) and a long tail."""
    rng = np.random.default_rng(seed)
    centres = unit_vectors(max(1, n // cluster_size), dim, seed=seed + 100)
    noise = rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    points = centres[rng.integers(0, len(centres), n)] + spread * noise
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def make_data(kind: str, n: int, n_queries: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    if kind == "random":
        return unit_vectors(n, dim, seed=1), unit_vectors(n_queries, dim, seed=2)
    # Queries come from the same clusters as the corpus (drawn together, then split).
    both = clustered_vectors(n + n_queries, dim, seed=1)
    return both[:n], both[n:]


def ground_truth(corpus: np.ndarray, queries: np.ndarray, k: int) -> list[set[int]]:
    scores = queries @ corpus.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    return [set(row.tolist()) for row in top]


def timed_search(conn, model, queries, k, exact, ef_search=None):
    latencies, results = [], []
    for query in queries:
        started = time.perf_counter()
        hits = search_vectors(conn, model, query, k, exact=exact, ef_search=ef_search)
        latencies.append((time.perf_counter() - started) * 1000)
        results.append([int(h.icon_id) for h in hits])
    return np.asarray(latencies), results


def run(args: argparse.Namespace) -> list[dict]:
    pgdata = (REPO / args.pgdata).resolve()
    info = start_embedded(pgdata)
    figures = []
    try:
        with psycopg.connect(info.libpq_url) as conn:
            for n in args.sizes:
                corpus, queries = make_data(args.data, n, args.queries, args.dim)
                truth = ground_truth(corpus, queries, args.k)
                icon_ids = [str(i) for i in range(n)]
                for m in args.m:
                    ef_construction = max(args.ef_construction, 2 * m)
                    model_id = f"bench-{args.data}-{n}-{args.dim}-m{m}-efc{ef_construction}"
                    started = time.perf_counter()
                    stats = write_embeddings(
                        conn, model_id, icon_ids, icon_ids, corpus, hnsw_m=m, ef_construction=ef_construction
                    )
                    total = time.perf_counter() - started
                    print(
                        f"\n{args.data} n={n} dim={args.dim} m={m} ef_construction={ef_construction}: "
                        f"COPY {stats.copy_seconds:.1f}s ({stats.rows_per_second:,.0f} rows/s), "
                        f"HNSW build {stats.index_seconds:.1f}s, "
                        f"swap {stats.swap_seconds * 1000:.0f} ms, total {total:.1f}s",
                        flush=True,
                    )
                    model = get_model_index(conn, model_id)
                    exact_q = queries[: args.exact_queries]
                    lat, res = timed_search(conn, model, exact_q, args.k, exact=True)
                    exact_recall = np.mean(
                        [len(set(r) & t) / args.k for r, t in zip(res, truth, strict=False)]
                    )
                    p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
                    print(
                        f"  exact (seq scan)  recall@{args.k} {exact_recall:.4f}  p50 {p50:7.2f} ms  "
                        f"p99 {p99:7.2f} ms  ({len(exact_q)} queries)",
                        flush=True,
                    )
                    figures.append(
                        {
                            "data": args.data,
                            "n": n,
                            "dim": args.dim,
                            "m": m,
                            "ef_construction": ef_construction,
                            "mode": "exact",
                            "recall": float(exact_recall),
                            "p50_ms": float(p50),
                            "p99_ms": float(p99),
                            "build_s": stats.index_seconds,
                            "copy_s": stats.copy_seconds,
                        }
                    )
                    timed_search(
                        conn, model, queries[:20], args.k, exact=False, ef_search=args.ef_search[0]
                    )  # warm
                    for ef in args.ef_search:
                        lat, res = timed_search(conn, model, queries, args.k, exact=False, ef_search=ef)
                        recall = np.mean([len(set(r) & t) / args.k for r, t in zip(res, truth, strict=True)])
                        p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
                        goal = "  <- meets recall>=0.99 at p50<5ms" if recall >= 0.99 and p50 < 5 else ""
                        print(
                            f"  hnsw ef_search={ef:<4d} recall@{args.k} {recall:.4f}  p50 {p50:7.2f} ms  "
                            f"p99 {p99:7.2f} ms{goal}",
                            flush=True,
                        )
                        figures.append(
                            {
                                "data": args.data,
                                "n": n,
                                "dim": args.dim,
                                "m": m,
                                "ef_construction": ef_construction,
                                "mode": "hnsw",
                                "ef_search": ef,
                                "recall": float(recall),
                                "p50_ms": float(p50),
                                "p99_ms": float(p99),
                                "build_s": stats.index_seconds,
                                "copy_s": stats.copy_seconds,
                            }
                        )
                    if not args.keep_tables:
                        drop_model(conn, model_id)
    finally:
        if not args.keep_server:
            stop_embedded(pgdata)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--data", choices=["random", "clustered"], default="random")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--m", type=int, nargs="+", default=[16])
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[40, 100, 200, 400, 800])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--exact-queries", type=int, default=20)
    parser.add_argument("--pgdata", default=".bench_tmp/pgdata", help="relative to the repository")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep-server", action="store_true")
    parser.add_argument("--keep-tables", action="store_true")
    args = parser.parse_args()
    figures = run(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
