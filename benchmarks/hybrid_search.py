"""How fast is search as a designer uses it? End-to-end latency of hybrid search and each channel.

Not a test: prints figures, asserts nothing. Reads what `make demo` leaves (the index, the fitted
fusion settings, the frozen benchmark queries) and times `SearchService` exactly as
`icon-pipeline search` and the search app call it: query checks, every encoder, the pgvector
searches and the merge, with the models already loaded (a warm process). Quality is the benchmark
report's job; this script is about time.

    .venv/bin/python benchmarks/hybrid_search.py [--queries 200] [-k 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from icon_pipeline.core.config import load_config  # noqa: E402
from icon_pipeline.core.frozen import read_frozen_jsonl  # noqa: E402
from icon_pipeline.core.storage import (  # noqa: E402
    QUERIES_NAME,
    frozen_file,
    resolved_rows,  # noqa: E402
)
from icon_pipeline.search.service import SearchService  # noqa: E402


def _timed(call, queries: list) -> np.ndarray:
    seconds = []
    for query in queries:
        started = time.perf_counter()
        call(query)
        seconds.append(time.perf_counter() - started)
    return np.asarray(seconds) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queries", type=int, default=200, help="queries per kind (text, image)")
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()

    config = load_config()
    path = frozen_file(QUERIES_NAME, config)
    rows = resolved_rows(read_frozen_jsonl(path))  # image paths are stored relative to the data root
    texts = [r["text"] for r in rows if r["text"]][: args.queries]
    images = [r["image_path"] for r in rows if r["task"] == "img2img"][: args.queries]
    service = SearchService.open()
    try:
        service.text(texts[0], k=args.k)  # load every model once: the app and a warm CLI have them
        if images:
            service.image(images[0], k=args.k)
        print(f"{len(texts)} text and {len(images)} image queries from {path.name}, k={args.k}, models warm")
        print(f"{'search':12} {'kind':6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for model in service.models():
            for kind, queries, call in (
                ("text", texts, lambda q, m=model: service.text(q, m, args.k)),
                ("image", images, lambda q, m=model: service.image(q, m, args.k)),
            ):
                try:
                    service.text(texts[0], model, 1) if kind == "text" else service.image(images[0], model, 1)
                except Exception:  # a channel that does not answer this kind (bm25 for images)
                    continue
                ms = _timed(call, queries)
                p50, p95 = np.percentile(ms, 50), np.percentile(ms, 95)
                print(f"{model:12} {kind:6} {p50:8.1f} {p95:8.1f} {ms.max():8.1f}")
    finally:
        service.close()


if __name__ == "__main__":
    main()
