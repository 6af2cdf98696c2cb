"""Render throughput on real Tabler icons: one worker vs all cores (printed, never asserted).

    .venv/bin/python benchmarks/render.py [--icons 2000] [--theme light] [--size 224]

Each run renders into a fresh temporary store, so nothing is served from the cache; the time
includes starting the worker pool. A second pass over the same store shows the cache.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from icon_pipeline.core.paths import get_paths
from icon_pipeline.library.sources.tabler import fetch_tabler, scan_tabler
from icon_pipeline.render.rasterize import RenderSettings, RenderStore, render_batch


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--icons", type=int, default=2000, help="how many Tabler icons (outline first)")
    parser.add_argument("--theme", choices=["light", "dark"], default="light")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="the 'all cores' run")
    args = parser.parse_args()

    package = fetch_tabler(get_paths().sources_dir / "tabler")
    scan = scan_tabler(package)
    records = sorted(scan.icons, key=lambda r: (r.style != "outline", r.icon_id))[: args.icons]
    settings = RenderSettings(size=args.size, theme=args.theme)
    print(f"{len(records)} Tabler icons, {settings.size}px {settings.theme}, {os.cpu_count()} CPU(s) visible")

    rates: dict[int, float] = {}
    for workers in sorted({1, args.workers}):
        with tempfile.TemporaryDirectory(prefix="render-bench-") as store_dir:
            store = RenderStore(Path(store_dir))
            result = render_batch(records, settings, store, workers=workers, show_progress_bar=False)
            rates[workers] = len(records) / result.seconds
            print(
                f"workers={workers:>3}: {result.rendered} rendered, {result.failed} failed in "
                f"{result.seconds:.2f}s -> {rates[workers]:.0f} icons/s"
            )
            again = render_batch(records, settings, store, workers=workers, show_progress_bar=False)
            print(
                f"{'':13}second pass: {again.rendered} rendered, {again.cached} cached, {again.seconds:.3f}s"
            )
            for failure in result.failures[:5]:
                print(f"{'':13}failed: {failure.icon_id}: {failure.reason}")
    if len(rates) > 1:
        print(f"scaling: {rates[args.workers] / rates[1]:.2f}x on {args.workers} workers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
