"""The demo's training stage, timed: the training job run in this process from a train_config.json
(default: the demo's latest fine-tuning run) with its output and feature cache in a scratch folder.

Not a test: prints figures, asserts nothing. Reads the data root (ICON_PIPELINE_DATA, default
data/) and never writes into it: the feature cache is copied to the scratch folder once, so the
frozen trunk's features are not recomputed and the figure is the training stage itself (for
effnet-lite0: the visual head's discriminant, the semantic head's steps, the evaluations, the export).
Run it with PYTHONPATH at another checkout to time that checkout's code on the same inputs:

    PYTHONPATH=. .venv/bin/python benchmarks/train_stage.py --repeat 2
    PYTHONPATH=/path/to/other/checkout .venv/bin/python benchmarks/train_stage.py --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from icon_pipeline.model.training.config import TrainConfig
from icon_pipeline.model.training.reporting import Reporter
from icon_pipeline.model.training.run import run_training


def demo_config(data_root: Path) -> Path:
    run = json.loads((data_root / "models" / "finetuned.json").read_text())["run_dir"]
    return data_root / run / "train_config.json"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, help="a train_config.json (default: the demo's latest run)")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/train_stage"))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--max-steps", type=int, help="fewer steps than the config's (a quicker figure)")
    args = parser.parse_args()
    data_root = Path(os.environ.get("ICON_PIPELINE_DATA", "data")).resolve()
    config_path = args.config or demo_config(data_root)
    raw = json.loads(config_path.read_text())
    cache = args.scratch / "cache"
    if raw.get("cache_dir") and not cache.exists():
        shutil.copytree(raw["cache_dir"], cache)
    import icon_pipeline

    print(f"code: {icon_pipeline.__path__[0]}; config: {config_path}")
    for attempt in range(1, args.repeat + 1):
        out = args.scratch / f"run-{attempt}"
        shutil.rmtree(out, ignore_errors=True)
        known = {name for name in TrainConfig.__dataclass_fields__}
        values = {k: v for k, v in raw.items() if k in known}  # a newer config's keys an older checkout lacks
        values.update(output_dir=str(out), cache_dir=str(cache), report_to=[], resume=False)
        if args.max_steps:
            values["max_steps"] = args.max_steps
        config = TrainConfig.from_dict(values)
        started = time.perf_counter()
        with Reporter(rank=0) as reporter:
            report = run_training(config, reporter)
        wall = time.perf_counter() - started
        metrics = report.get("final_metrics", {})
        print(
            f"run {attempt}: stage {wall:.1f} s wall | steps {report.get('steps')} in "
            f"{report.get('train_seconds')} s = {report.get('pairs_per_second')} pairs/s | "
            f"text2image R@10 {metrics.get('text2image/R@10', float('nan')):.4f}"
        )


if __name__ == "__main__":
    main()
