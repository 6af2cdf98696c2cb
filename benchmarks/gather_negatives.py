"""The effect of taking SigLIP negatives from all ranks (`gather_negatives`), measured.

Not a test: prints figures, asserts nothing. Starts from the training config the last
`finetuned_checkpoint` run wrote (`data/models/finetuned.json` -> run_dir/train_config.json, so
run `make demo` first), then trains the same base on the same pairs under torchrun with N
processes, once with local negatives (each rank's loss sees only its own batch) and once with
negatives gathered from every rank, same seed and steps. Prints the frozen eval set's R@K at the
end of each run, the final loss and the throughput.

    .venv/bin/python benchmarks/gather_negatives.py --nproc 2 --steps 800 --batch 32
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from icon_pipeline.model.training.config import TrainConfig  # noqa: E402
from icon_pipeline.model.training.launch import torchrun_command  # noqa: E402

BENCH = REPO / ".bench_tmp" / "gather_negatives"
METRICS = ("text2image/R@1", "text2image/R@10", "image2text/R@1", "image2text/R@10", "image2text/mAP@10")


def demo_config() -> TrainConfig:
    pointer = REPO / "data" / "models" / "finetuned.json"
    if not pointer.exists():
        sys.exit(f"{pointer} not found: run `make demo` (or materialize finetuned_checkpoint) first")
    run_dir = Path(json.loads(pointer.read_text())["run_dir"])
    return TrainConfig.load(run_dir / "train_config.json")  # resolves its paths against its folder


def train(base: TrainConfig, gather: bool, nproc: int, steps: int, batch: int) -> dict:
    output_dir = BENCH / f"{'gather' if gather else 'local'}-{nproc}x{batch}-{steps}"
    shutil.rmtree(output_dir, ignore_errors=True)  # never resume: each arm starts at step 0
    config = TrainConfig.from_dict(
        {
            **base.to_dict(),
            "output_dir": str(output_dir),
            "max_steps": steps,
            "per_device_batch_size": batch,
            "gather_negatives": gather,
            "eval_every_steps": 0,  # baseline and final eval only
            "save_every_steps": 10**9,
            "report_to": [],
            "cache_dir": str(BENCH / "cache"),  # decoded images shared by both arms
        }
    )
    config_path = config.write(output_dir.with_suffix(".json"))
    subprocess.run(torchrun_command(config_path, nproc), check=True)  # NCCL with GPUs, else gloo
    return json.loads((output_dir / "training_report.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch", type=int, default=32, help="per-process batch size")
    args = parser.parse_args()
    base = demo_config()
    reports = {gather: train(base, gather, args.nproc, args.steps, args.batch) for gather in (False, True)}
    baseline = reports[False]["eval_history"][0]
    print(
        f"\n{args.nproc} processes x batch {args.batch}, {args.steps} steps, "
        f"{len(reports[False]['eval_history'])} evals; base model: {base.base_checkpoint}"
    )
    header = (
        f"{'negatives':<22}" + "".join(f"{m:>18}" for m in METRICS) + f"{'final loss':>12}{'pairs/s':>10}"
    )
    print(header)
    print(f"{'base (step 0)':<22}" + "".join(f"{baseline.get(m, float('nan')):>18.4f}" for m in METRICS))
    for gather, report in reports.items():
        label = f"all ranks ({args.batch * args.nproc - 1})" if gather else f"local ({args.batch - 1})"
        final = report["final_metrics"]
        print(
            f"{label:<22}"
            + "".join(f"{final.get(m, float('nan')):>18.4f}" for m in METRICS)
            + f"{report['final_loss']:>12.3f}{report['pairs_per_second']:>10.1f}"
        )


if __name__ == "__main__":
    main()
