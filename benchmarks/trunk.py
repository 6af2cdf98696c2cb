"""The pretrained trunk's costs on this machine: what the CPU default can afford, and what not.

Prints, for the default model (model.size effnet-lite0: EfficientNet-Lite0 from its wheel):
- trunk features, images/s (inference, ink framing included) at each --sizes;
- fine-tuning the trunk end to end: pairs/s through forward and backward (the option left to GPUs);
- the heads' training on cached features: pairs/s of the SigLIP steps.

Run: .venv/bin/python benchmarks/trunk.py [--sizes 96 128] [--batch 64] [--seconds 20]
Figures only; nothing is asserted. Inputs are random images (the cost does not depend on content).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from icon_pipeline.model.checkpoint import build_base_checkpoint, load_checkpoint
from icon_pipeline.model.trunk_lit import siglip_loss


def timed(step, seconds: float) -> tuple[int, float]:
    step()  # warm-up
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        count += 1
    return count, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 128])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        model = load_checkpoint(build_base_checkpoint(Path(tmp) / "base", [], size="effnet-lite0")).model
    images = torch.rand(args.batch, 3, 224, 224) * 2 - 1
    for size in args.sizes:
        model.config.trunk_image_size = size
        with torch.inference_mode():
            count, seconds = timed(lambda: model.pooled_features(images), args.seconds)
        print(f"trunk features at {size} px: {count * args.batch / seconds:8.1f} images/s")

    model.config.trunk_image_size = args.sizes[0]
    model.trunk.requires_grad_(True)
    model.train()
    model.trunk.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    texts = torch.nn.functional.normalize(torch.randn(args.batch, model.config.semantic_dim), dim=-1)

    def finetune_step() -> None:
        pooled = model.pooled_features(images)
        embedded = torch.nn.functional.normalize(model.semantic_embeddings(pooled), dim=-1)
        loss = siglip_loss(texts @ embedded.t() * 10 - 4)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    count, seconds = timed(finetune_step, args.seconds)
    print(f"trunk fine-tuned end to end at {args.sizes[0]} px: {count * args.batch / seconds:8.1f} pairs/s")

    model.trunk.requires_grad_(False)
    features = torch.randn(512, model.config.pooled_dim)
    texts = torch.nn.functional.normalize(torch.randn(512, model.config.semantic_dim), dim=-1)
    head_optimizer = torch.optim.AdamW(model.semantic_head.parameters(), lr=1e-3)

    def head_step() -> None:
        embedded = torch.nn.functional.normalize(model.semantic_embeddings(features), dim=-1)
        loss = siglip_loss(texts @ embedded.t() * 10 - 6)
        head_optimizer.zero_grad()
        loss.backward()
        head_optimizer.step()

    count, seconds = timed(head_step, args.seconds)
    print(f"heads on cached features, batch 512: {count * 512 / seconds:8.1f} pairs/s")


if __name__ == "__main__":
    main()
