"""Pairs/s of the project's own fine-tuning loop (HF Trainer + collator + augmentation + dataloader).

Not a test: prints figures, asserts nothing. Uses Tabler renders (rendered once into
.bench_tmp/train_png, not timed) grouped one icon per group (outline + filled when present, tags
as captions), and a from-scratch checkpoint per --size (built once into .bench_tmp/train_ckpt_<size>).

Two figures per size:
- data: the input path alone, one process: the collator (caption/image draw, uint8 cache rows) and
  the batched torch augmentation + patches it hands over (what the trainer runs on the device);
- train: `run_training` end to end for --steps steps, data loading included (warm-up included,
  so use enough steps for a steady figure), from training_report.json.

    .venv/bin/python benchmarks/train_throughput.py --sizes tiny --steps 10 --batch 16
    .venv/bin/python benchmarks/train_throughput.py --sizes small base --steps 200 --batch 256 --workers 8
    .venv/bin/python benchmarks/train_throughput.py --sizes base --nproc 8 ...   # torchrun, N GPUs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from icon_pipeline.dataset.augment import AugmentConfig  # noqa: E402
from icon_pipeline.model.checkpoint import build_base_checkpoint, load_checkpoint  # noqa: E402
from icon_pipeline.model.training.collator import GroupDataset, PairCollator  # noqa: E402
from icon_pipeline.model.training.config import TrainConfig  # noqa: E402
from icon_pipeline.model.training.data import load_training_data  # noqa: E402
from icon_pipeline.model.training.launch import torchrun_command  # noqa: E402
from icon_pipeline.model.training.reporting import Reporter  # noqa: E402
from icon_pipeline.model.training.run import run_training  # noqa: E402
from icon_pipeline.render.rasterize import render_icon  # noqa: E402

TABLER = REPO / "data" / "sources" / "tabler" / "3.51.0" / "package"
BENCH = REPO / ".bench_tmp"


def prepare_pairs(n: int) -> tuple[Path, list[str]]:
    """pairs.parquet over the first n Tabler icons (renders cached on disk)."""
    icons = json.loads((TABLER / "icons.json").read_text())
    names = sorted(name for name, v in icons.items() if "outline" in v["styles"])[:n]
    out = BENCH / "train_png"
    out.mkdir(parents=True, exist_ok=True)
    rows, captions = [], []
    for name in names:
        pngs = []
        for style in ("outline", "filled"):
            if style not in icons[name]["styles"]:
                continue
            path = out / f"{style}-{name}.png"
            if not path.exists():
                render_icon(TABLER / "icons" / style / f"{name}.svg").save(path)
            pngs.append(str(path))
        tags = [str(t).replace("-", " ") for t in icons[name]["tags"]]
        group_captions = [name.replace("-", " "), *tags]
        captions += group_captions
        rows.append({"group_id": name, "captions": group_captions, "png_paths": pngs, "split": "train"})
    path = BENCH / f"train_pairs_{n}.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path, captions


def checkpoint_for(size: str, captions: list[str]) -> Path:
    path = BENCH / f"train_ckpt_{size}"
    if not (path / "icon_pipeline.json").exists():
        build_base_checkpoint(path, captions, size=size, seed=0)
    return path


def data_throughput(checkpoint: Path, pairs: Path, batch: int, batches: int) -> float:
    bundle = load_checkpoint(checkpoint)
    data = load_training_data(pairs, 224, BENCH / "train_cache")
    collator = PairCollator.for_bundle(data, bundle, AugmentConfig(), seed=0)
    dataset = GroupDataset(data.groups)
    items = [dataset[i % len(dataset)] for i in range(batch)]
    collator.model_inputs(collator(items))  # warm-up
    started = time.perf_counter()
    for _ in range(batches):
        collator.model_inputs(collator(items))
    return batch * batches / (time.perf_counter() - started)


def train_throughput(
    size: str, checkpoint: Path, pairs: Path, steps: int, batch: int, workers: int, nproc: int
) -> dict:
    output_dir = BENCH / f"train_run_{size}"
    shutil.rmtree(output_dir, ignore_errors=True)  # never resume: each run starts at step 0
    config = TrainConfig.from_dict(
        {
            "base_checkpoint": str(checkpoint),
            "pairs_path": str(pairs),
            "output_dir": str(output_dir),
            "max_steps": steps,
            "per_device_batch_size": batch,
            "learning_rate": 5e-4,
            "warmup_steps": max(1, steps // 10),
            "logging_steps": max(1, steps // 10),
            "save_every_steps": 10**9,  # no checkpoint writes inside the timed loop
            "dataloader_workers": workers,
            "report_to": [],
            "cache_dir": str(BENCH / "train_cache"),
        }
    )
    if nproc == 1:
        run_training(config, Reporter(rank=0))
    else:
        config_path = config.write(output_dir.with_suffix(".json"))
        command = torchrun_command(config_path, nproc)
        subprocess.run(command, check=True, env={**os.environ})
    return json.loads((output_dir / "training_report.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["tiny"], choices=["tiny", "small", "base"])
    parser.add_argument("--icons", type=int, default=200, help="Tabler icons (groups) to train on")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16, help="per-device batch size")
    parser.add_argument("--workers", type=int, default=0, help="dataloader workers")
    parser.add_argument("--nproc", type=int, default=1, help=">1: launch torchrun with N processes")
    parser.add_argument("--data-batches", type=int, default=5, help="collator-only batches to time")
    args = parser.parse_args()
    if not (TABLER / "icons.json").exists():
        sys.exit(f"Tabler icons not found at {TABLER}: run `make data`")

    pairs, captions = prepare_pairs(args.icons)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    print(f"device: {device}; torch threads {torch.get_num_threads()}; {args.icons} groups")
    for size in args.sizes:
        checkpoint = checkpoint_for(size, captions)
        data_rate = data_throughput(checkpoint, pairs, args.batch, args.data_batches)
        report = train_throughput(size, checkpoint, pairs, args.steps, args.batch, args.workers, args.nproc)
        print(
            f"{size:>5}: data pipeline {data_rate:8.1f} pairs/s (1 process) | train loop "
            f"{report['pairs_per_second']:8.1f} pairs/s ({report['steps']} steps x global batch "
            f"{report['global_batch_size']}, {report['train_seconds']:.1f} s, bf16={report['bf16']}, "
            f"loss {report['first_loss']:.3f} -> {report['final_loss']:.3f})"
        )


if __name__ == "__main__":
    main()
