"""Images/s end to end for indexing: decode PNG -> embed -> binary COPY + HNSW build in PostgreSQL.

Not a test: prints figures, asserts nothing. Uses the Tabler renders (rendered here once into
.bench_tmp/embed_png, not timed) and a from-scratch checkpoint of --size (built once into
.bench_tmp/ckpt_<size>); starts its own embedded PostgreSQL in .bench_tmp/pgdata and stops it.

    .venv/bin/python benchmarks/embed.py --n 1000
    .venv/bin/python benchmarks/embed.py --n 5000 --device cuda --size small
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import psycopg
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from icon_pipeline.core.database import start_embedded, stop_embedded  # noqa: E402
from icon_pipeline.model.checkpoint import build_base_checkpoint, load_checkpoint  # noqa: E402
from icon_pipeline.render.rasterize import render_icon  # noqa: E402
from icon_pipeline.search.index import drop_model, write_embeddings  # noqa: E402

TABLER = REPO / "data" / "sources" / "tabler" / "3.51.0" / "package"


def prepare_pngs(n: int, out: Path) -> tuple[list[Path], list[str]]:
    icons = json.loads((TABLER / "icons.json").read_text())
    names = sorted(name for name, v in icons.items() if "outline" in v["styles"])[:n]
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = out / f"{name}.png"
        if not path.exists():
            render_icon(TABLER / "icons" / "outline" / f"{name}.svg").save(path)
        paths.append(path)
    captions = [" ".join(str(t) for t in icons[name]["tags"]) or name for name in names]
    return paths, captions


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--pgdata", default=".bench_tmp/pgdata")
    args = parser.parse_args()
    if not (TABLER / "icons.json").exists():
        sys.exit(f"Tabler icons not found at {TABLER}: run `make data` first")

    work = REPO / ".bench_tmp"
    paths, captions = prepare_pngs(args.n, work / "embed_png")
    checkpoint = work / f"ckpt_{args.size}"
    if not (checkpoint / "config.json").exists():
        build_base_checkpoint(checkpoint, captions, size=args.size)
    bundle = load_checkpoint(checkpoint, device=args.device)
    bundle.embed_images([Image.new("RGB", (224, 224), "white")] * 2)  # warm-up, not timed

    pgdata = (REPO / args.pgdata).resolve()
    info = start_embedded(pgdata)
    try:
        started = time.perf_counter()
        decode_s = embed_s = 0.0
        chunks = []
        for start in range(0, len(paths), args.batch_size):
            t0 = time.perf_counter()
            images = []
            for path in paths[start : start + args.batch_size]:
                with Image.open(path) as image:
                    images.append(image.convert("RGB"))
            t1 = time.perf_counter()
            chunks.append(bundle.embed_images(images, batch_size=args.batch_size))
            t2 = time.perf_counter()
            decode_s, embed_s = decode_s + (t1 - t0), embed_s + (t2 - t1)
        embeddings = np.concatenate(chunks)
        icon_ids = [p.stem for p in paths]
        with psycopg.connect(info.libpq_url) as conn:
            stats = write_embeddings(conn, f"bench-embed-{args.size}", icon_ids, icon_ids, embeddings)
            total = time.perf_counter() - started
            drop_model(conn, f"bench-embed-{args.size}")
    finally:
        stop_embedded(pgdata)
    n = len(paths)
    print(
        f"{n} icons, model {args.size} (dim {bundle.dim}) on {args.device}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"  decode      {decode_s:6.2f} s  {n / decode_s:8.0f} img/s")
    print(f"  embed       {embed_s:6.2f} s  {n / embed_s:8.0f} img/s  (batch {args.batch_size})")
    print(f"  COPY        {stats.copy_seconds:6.2f} s  {stats.rows_per_second:8.0f} rows/s")
    print(f"  HNSW build  {stats.index_seconds:6.2f} s")
    print(f"  end to end  {total:6.2f} s  {n / total:8.0f} img/s")


if __name__ == "__main__":
    main()
