"""Fine-tuning: loss and metrics units, the collator, torchrun with 2 CPU ranks (sync, resume,
reload), the Dagster Pipes launch through TorchrunResource, and clear errors on bad input.

All on CPU (gloo) with the tiny model and 40 real Tabler icons: each torchrun start costs a few
seconds of imports, so the slow parts share one set of inputs and one resumed run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from dagster import (
    DagsterEventType,
    DagsterInstance,
    Failure,
    PipesSubprocessClient,
    asset,
    materialize,
)

from icon_pipeline.core.config import load_config
from icon_pipeline.core.paths import REPO_ROOT
from icon_pipeline.dataset.augment import AugmentConfig
from icon_pipeline.defs.resources.gpu import TorchrunResource
from icon_pipeline.model.checkpoint import CheckpointError, build_base_checkpoint, load_checkpoint
from icon_pipeline.model.training.collator import GroupDataset, PairCollator
from icon_pipeline.model.training.config import TrainConfig, TrainConfigError, train_config_from_pipeline
from icon_pipeline.model.training.data import load_training_data
from icon_pipeline.model.training.evaluation import evaluate_embeddings, retrieval_metrics
from icon_pipeline.model.training.launch import torchrun_command
from icon_pipeline.model.training.loss import siglip_loss
from icon_pipeline.model.training.reporting import Reporter
from icon_pipeline.model.training.run import dataloader_workers, run_training
from icon_pipeline_tests.model.test_modeling import RenderedIcon, render_tabler_subset

EVAL_GROUPS = 12


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def inputs(project_tmp: Path, tabler_package: Path) -> dict[str, Any]:
    """pairs.parquet (one group per icon: outline + filled), a frozen eval JSONL, the icon map and
    a tiny base checkpoint trained on the tags."""
    root = project_tmp / "training-inputs"
    icons: list[RenderedIcon] = render_tabler_subset(tabler_package, root / "png")
    rows = [
        {
            "group_id": icon.name,
            "captions": list(icon.captions),
            # Relative paths resolve against the parquet's folder.
            "png_paths": [str(icon.outline_png.relative_to(root)), str(icon.filled_png)],
            "split": "train",
        }
        for icon in icons
    ]
    rows.append(
        {
            "group_id": "held",
            "captions": ["held out"],
            "png_paths": [str(icons[0].outline_png)],
            "split": "heldout",
        }
    )
    pq.write_table(pa.Table.from_pylist(rows), root / "pairs.parquet")
    eval_rows = [
        {
            "eval_id": f"{icon.name}:0",
            "group_id": icon.name,
            "caption": icon.name.replace("-", " "),
            "icon_ids": [f"outline:{icon.name}", f"filled:{icon.name}"],
            "representative_icon_id": f"outline:{icon.name}",
        }
        for icon in icons[:EVAL_GROUPS]
    ]
    eval_path = root / "eval.v1.jsonl"
    eval_path.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in eval_rows))
    icon_map = {
        f"{style}:{icon.name}": str(getattr(icon, f"{style}_png"))
        for icon in icons
        for style in ("outline", "filled")
    }
    (root / "icons.json").write_text(json.dumps(icon_map))
    checkpoint = build_base_checkpoint(
        root / "base", [c for icon in icons for c in icon.captions], size="tiny"
    )
    return {
        "root": root,
        "icons": icons,
        "pairs": root / "pairs.parquet",
        "eval": eval_path,
        "eval_sha256": _sha256(eval_path),
        "icon_map": root / "icons.json",
        "checkpoint": checkpoint,
    }


def make_config(inputs: dict[str, Any], output_dir: Path, **overrides: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "base_checkpoint": str(inputs["checkpoint"]),
        "pairs_path": str(inputs["pairs"]),
        "output_dir": str(output_dir),
        "eval_path": str(inputs["eval"]),
        "eval_images_path": str(inputs["icon_map"]),
        "eval_sha256": inputs["eval_sha256"],
        "max_steps": 8,
        "per_device_batch_size": 8,
        "learning_rate": 1e-3,
        "warmup_steps": 1,
        "logging_steps": 1,
        "eval_every_steps": 4,
        "save_every_steps": 4,
        "cache_dir": str(inputs["root"] / "cache"),
        "linear_probe": "off",  # these tests are about SGD, DDP and resuming (the probe: below)
    }
    values.update(overrides)
    return TrainConfig.from_dict(values)


def torchrun(config_path: Path, nproc: int, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    command = torchrun_command(config_path, nproc)
    env = {**os.environ, "ICON_PIPELINE_DDP_BACKEND": "gloo", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


# --- units ---------------------------------------------------------------------------------


def test_average_precision_matches_the_design_example() -> None:
    scores = np.array([[0.2, 0.3, 0.5]])
    metrics = retrieval_metrics(scores, [frozenset({0, 2})], ks=(1, 2), map_k=10)
    assert metrics["mAP@10"] == pytest.approx(0.8333, abs=1e-4)
    assert metrics["R@1"] == 1.0 and metrics["R@2"] == 1.0
    miss = retrieval_metrics(np.array([[0.9, 0.1, 0.5]]), [frozenset({1})], ks=(1, 2), map_k=10)
    assert miss["R@1"] == 0.0 and miss["R@2"] == 0.0 and miss["mAP@10"] == pytest.approx(1 / 3)


def test_vectorised_metrics_agree_with_the_project_metrics_module() -> None:
    """The training eval is vectorised numpy (it runs every N steps on a ~5k gallery); it must agree
    with icon_pipeline.benchmark.metrics, which the benchmark report uses."""
    from icon_pipeline.benchmark import metrics

    rng = np.random.default_rng(0)
    scores = rng.random((30, 60))
    relevant = [
        frozenset(rng.choice(60, size=int(rng.integers(1, 6)), replace=False).tolist()) for _ in range(30)
    ]
    ours = retrieval_metrics(scores, relevant)
    ranked = [metrics.rank_by_score(list(range(60)), list(row)) for row in scores]
    for k in (1, 5, 10):
        expected = np.mean([metrics.recall_at_k(r, rel, k) for r, rel in zip(ranked, relevant, strict=True)])
        assert ours[f"R@{k}"] == pytest.approx(expected)
    expected_map = np.mean(
        [metrics.average_precision_at_k(r, rel, 10) for r, rel in zip(ranked, relevant, strict=True)]
    )
    assert ours["mAP@10"] == pytest.approx(expected_map)


def test_eval_directions_use_the_group_as_relevant() -> None:
    # Two groups; captions 0-1 belong to g1 (icons a, b), caption 2 to g2 (icon c).
    text = np.eye(3, dtype=np.float32)[[0, 0, 2]]
    image = np.eye(3, dtype=np.float32)  # a, b, c
    metrics = evaluate_embeddings(
        text, image, [["a", "b"], ["a", "b"], ["c"]], ["g1", "g1", "g2"], ["a", "a", "c"], ["a", "b", "c"]
    )
    assert metrics["text2image/R@1"] == 1.0 and metrics["image2text/R@1"] == 1.0
    assert metrics["text2image/queries"] == 3 and metrics["image2text/queries"] == 2


def test_siglip_loss_matches_the_model_loss(inputs: dict[str, Any]) -> None:
    bundle = load_checkpoint(inputs["checkpoint"])
    from PIL import Image

    images = [Image.open(icon.outline_png) for icon in inputs["icons"][:4]]
    batch = {
        **bundle.text_inputs([icon.captions[0] for icon in inputs["icons"][:4]]),
        **bundle.image_inputs(images),
    }
    with torch.no_grad():
        out = bundle.model(**batch, return_loss=True)
        ours = siglip_loss(
            out.image_embeds, out.text_embeds, bundle.model.logit_scale, bundle.model.logit_bias
        )
    assert ours.item() == pytest.approx(out.loss.item(), rel=1e-5)


# Runs in two fresh interpreters (imports only torch and the loss module: fast, and no fork of a
# process whose thread pools are already running).
GATHER_CHECK = """
import json, math, sys
from pathlib import Path
import torch, torch.distributed as dist
from icon_pipeline.model.training.loss import global_siglip_loss, siglip_loss
rank, init_file, result_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
generator = torch.Generator().manual_seed(0)
images = torch.nn.functional.normalize(torch.randn(8, 16, generator=generator), dim=-1)
texts = torch.nn.functional.normalize(torch.randn(8, 16, generator=generator), dim=-1)
scale, bias = torch.tensor(math.log(10.0)), torch.tensor(-10.0)
part = slice(rank * 4, (rank + 1) * 4)
local_images = images[part].clone().requires_grad_(True)
local_texts = texts[part].clone().requires_grad_(True)
loss = global_siglip_loss(local_images, local_texts, scale, bias)
loss.backward()
full_images = images.clone().requires_grad_(True)
reference = siglip_loss(full_images, texts, scale, bias)
reference.backward()
ok = math.isclose(loss.item(), reference.item(), rel_tol=1e-6) and torch.allclose(
    local_images.grad, full_images.grad[part], atol=1e-7
)
Path(f"{result_file}.{rank}").write_text(json.dumps({"ok": ok, "loss": loss.item(), "ref": reference.item()}))
dist.destroy_process_group()
"""


def test_global_loss_over_two_ranks_equals_the_single_process_loss(tmp_path: Path) -> None:
    """All-gathered negatives: the same loss as one process over the whole batch, and each rank's
    gradient for its own features equals that slice of the single-process gradient."""
    args = [str(tmp_path / "init"), str(tmp_path / "result")]
    ranks = [subprocess.Popen([sys.executable, "-c", GATHER_CHECK, str(r), *args]) for r in range(2)]
    assert [process.wait(timeout=120) for process in ranks] == [0, 0]
    for rank in range(2):
        result = json.loads((tmp_path / f"result.{rank}").read_text())
        assert result["ok"], result


def test_collator_draws_one_caption_and_member_per_group(inputs: dict[str, Any], tmp_path: Path) -> None:
    bundle = load_checkpoint(inputs["checkpoint"])
    data = load_training_data(inputs["pairs"], 224, tmp_path / "cache")
    assert len(data.groups) == len(inputs["icons"])  # the heldout group is not trained on
    assert data.images.array.shape == (2 * len(inputs["icons"]), 224, 224, 3)
    assert bundle.max_num_patches == 196
    collator = PairCollator.for_bundle(data, bundle, AugmentConfig(), seed=3)
    items = [GroupDataset(data.groups)[i] for i in range(5)]
    collated = collator(items)
    assert collated["return_loss"] is True
    assert collated["input_ids"].shape == (5, bundle.max_length)
    # The collator hands over uint8 cache rows; the model's inputs are made where the batch lands.
    assert collated["images"].dtype == torch.uint8 and collated["images"].shape == (5, 224, 224, 3)
    batch = collator.model_inputs(collated)
    assert batch["pixel_values"].shape == (5, 196, 16 * 16 * 3)
    assert batch["spatial_shapes"].tolist() == [[14, 14]] * 5
    captions, rows = collator.pick([0, 1], random.Random(0))
    assert captions[0] in data.groups[0].captions and captions[1] in data.groups[1].captions
    assert rows[0] in data.groups[0].image_rows and rows[1] in data.groups[1].image_rows
    # Same seed, same call count: the same batch.
    again = PairCollator.for_bundle(data, bundle, AugmentConfig(), seed=3)
    assert torch.equal(again.model_inputs(again(items))["pixel_values"], batch["pixel_values"])


# --- bad input: clear errors before any training step ---------------------------------------


def test_missing_checkpoint_stops_before_training(inputs: dict[str, Any], tmp_path: Path) -> None:
    config = make_config(inputs, tmp_path / "out", base_checkpoint=str(tmp_path / "no-checkpoint"))
    with pytest.raises(CheckpointError, match="no-checkpoint does not exist"):
        run_training(config, Reporter(rank=0))
    assert not (tmp_path / "out").exists()


def test_eval_set_of_another_version_stops_before_training(inputs: dict[str, Any], tmp_path: Path) -> None:
    config = make_config(inputs, tmp_path / "out", eval_sha256="0" * 64)
    with pytest.raises(TrainConfigError, match=r"eval.v1.jsonl is another version.*expected 0000"):
        run_training(config, Reporter(rank=0))
    missing = replace(config, eval_path=str(tmp_path / "gone.jsonl"), eval_sha256=None)
    with pytest.raises(TrainConfigError, match="gone.jsonl does not exist"):
        run_training(missing, Reporter(rank=0))
    assert not (tmp_path / "out").exists()


def test_patch_budget_must_match_our_checkpoint(inputs: dict[str, Any], tmp_path: Path) -> None:
    config = make_config(inputs, tmp_path / "out", max_num_patches=256)
    with pytest.raises(TrainConfigError, match=r"max_num_patches 256 does not match checkpoint .*\[196\]"):
        run_training(config, Reporter(rank=0))


def test_dataloader_workers_follow_the_hardware_unless_configured() -> None:
    assert dataloader_workers(None, use_cuda=False, cpu_count=16, local_world_size=1) == 0
    assert dataloader_workers(None, use_cuda=True, cpu_count=16, local_world_size=1) == 8
    assert (
        dataloader_workers(None, use_cuda=True, cpu_count=16, local_world_size=4) == 3
    )  # a core per rank kept
    assert dataloader_workers(None, use_cuda=True, cpu_count=1, local_world_size=1) == 0
    assert dataloader_workers(2, use_cuda=True, cpu_count=64, local_world_size=1) == 2
    assert dataloader_workers(0, use_cuda=True, cpu_count=64, local_world_size=1) == 0


def test_config_file_errors_are_specific(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"base_checkpoint": "x", "pairs_path": "p", "output_dir": "o", "max_step": 3}))
    with pytest.raises(TrainConfigError, match="unknown training config keys: max_step"):
        TrainConfig.load(path)
    path.write_text(
        json.dumps(
            {"base_checkpoint": "x", "pairs_path": "p", "output_dir": "o", "augmentation": {"p_blur": 2}}
        )
    )
    with pytest.raises(TrainConfigError, match="p_blur must be a probability"):
        TrainConfig.load(path)
    with pytest.raises(TrainConfigError, match="does not exist"):
        TrainConfig.load(tmp_path / "none.json")


# --- torchrun, 2 ranks: interrupted, resumed, in sync, reloadable ----------------------------


@pytest.fixture(scope="module")
def resumed_run(inputs: dict[str, Any]) -> dict[str, Any]:
    output_dir = inputs["root"] / "run-2ranks"
    base = make_config(inputs, output_dir, gather_negatives=True, save_every_steps=100)
    # First launch stops after step 3 (saving a checkpoint), as if the job had been interrupted.
    first_config = base.write(inputs["root"] / "first.json")
    first_config.write_text(json.dumps({**base.to_dict(), "stop_after_steps": 3}))
    first = torchrun(first_config, nproc=2)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    after_first = sorted(p.name for p in output_dir.iterdir())
    second = torchrun(base.write(inputs["root"] / "second.json"), nproc=2)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    report = json.loads((output_dir / "training_report.json").read_text())
    return {
        "output_dir": output_dir,
        "after_first": after_first,
        "first": first,
        "second": second,
        "report": report,
    }


def test_interrupted_run_saved_a_checkpoint_and_no_final_model(resumed_run: dict[str, Any]) -> None:
    assert "checkpoint-3" in resumed_run["after_first"]
    assert (
        "model" not in resumed_run["after_first"] and "training_report.json" not in resumed_run["after_first"]
    )
    assert "stopped at step 3" in resumed_run["first"].stdout


def test_second_launch_resumes_from_the_saved_step(resumed_run: dict[str, Any]) -> None:
    report = resumed_run["report"]
    assert (
        "resuming from" in resumed_run["second"].stdout
        and "checkpoint-3 (step 3)" in resumed_run["second"].stdout
    )
    assert report["resumed_from_step"] == 3 and report["steps"] == 8 and report["completed"]
    assert [step for step, _ in report["loss_curve"]] == list(range(1, 9))  # history kept across the resume
    assert report["world_size"] == 2 and report["global_batch_size"] == 16
    assert report["pairs_per_second"] > 0


def test_loss_goes_down_and_eval_is_recorded(resumed_run: dict[str, Any]) -> None:
    report = resumed_run["report"]
    losses = [loss for _, loss in report["loss_curve"]]
    assert losses[-1] < losses[0], losses
    assert [entry["step"] for entry in report["eval_history"]] == [0, 4, 8]
    assert set(report["final_metrics"]) >= {"text2image/R@1", "text2image/mAP@10", "image2text/R@10"}
    assert report["eval_sha256"] == report["config"]["eval_sha256"]
    events = list((resumed_run["output_dir"] / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"


def test_ranks_finish_with_identical_weights(resumed_run: dict[str, Any]) -> None:
    records = [
        json.loads(p.read_text()) for p in sorted((resumed_run["output_dir"] / "ranks").glob("rank-*.json"))
    ]
    assert [r["rank"] for r in records] == [0, 1]
    assert records[0]["sha256"] == records[1]["sha256"] and records[0]["step"] == 8


def test_final_model_reloads_with_the_base_preprocessing(
    resumed_run: dict[str, Any], inputs: dict[str, Any]
) -> None:
    model_dir = Path(resumed_run["report"]["checkpoint_path"])
    tuned, base = load_checkpoint(model_dir), load_checkpoint(inputs["checkpoint"])
    assert tuned.meta.base == str(inputs["checkpoint"]) and tuned.meta.extra["steps"] == 8
    assert tuned.tokenizer.get_vocab() == base.tokenizer.get_vocab()
    assert (tuned.max_length, tuned.max_num_patches) == (base.max_length, base.max_num_patches)
    embeddings = tuned.embed_texts(["arrow left", "home"])
    assert embeddings.shape == (2, tuned.dim)
    assert not np.allclose(embeddings, base.embed_texts(["arrow left", "home"]))  # it did train


# --- a checkpoint half-written by a kill -----------------------------------------------------


@pytest.fixture
def training_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The training logger's records (it does not propagate to the root logger, so attach here)."""
    logger = logging.getLogger("icon_pipeline.model.training")
    caplog.set_level(logging.INFO, logger=logger.name)
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


def _run(config: TrainConfig) -> dict[str, Any]:
    with Reporter() as reporter:
        return run_training(config, reporter)


def test_a_truncated_latest_checkpoint_is_skipped_for_the_previous_one(
    inputs: dict[str, Any], training_log: pytest.LogCaptureFixture
) -> None:
    output_dir = inputs["root"] / "torn-checkpoint"
    config = make_config(inputs, output_dir, save_every_steps=2, eval_every_steps=0)
    assert _run(replace(config, stop_after_steps=4)) == {"stopped_at_step": 4, "completed": False}
    assert sorted(p.name for p in output_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    # The kill came while checkpoint-4's weights were being written.
    weights = output_dir / "checkpoint-4" / "model.safetensors"
    with weights.open("r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)

    report = _run(config)

    messages = [r.getMessage() for r in training_log.records]
    assert (
        "checkpoint-4 is incomplete (model.safetensors is unreadable: Error while deserializing header: "
        "incomplete metadata, file not fully covered); resuming from checkpoint-2"
    ) in messages
    assert f"resuming from {output_dir / 'checkpoint-2'} (step 2)" in messages
    assert report["completed"] and report["resumed_from_step"] == 2 and report["steps"] == 8
    assert [step for step, _ in report["loss_curve"]] == list(range(1, 9))

    # The finished run's checkpoints, damaged as other kills would leave them: the same choice.
    from icon_pipeline.model.training.resume import choose_checkpoint

    latest, previous = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[
        -1:-3:-1
    ]
    (latest / "trainer_state.json").unlink()
    optimizer = previous / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:-100])
    choice = choose_checkpoint(output_dir)
    assert choice.checkpoint is None and choice.describe() == (
        f"{latest.name} is incomplete (no trainer_state.json); {previous.name} is incomplete "
        "(optimizer.pt is truncated or not a torch.save file); no complete checkpoint left, starting fresh"
    )


def test_with_no_complete_checkpoint_the_run_starts_fresh_and_says_so(
    inputs: dict[str, Any], training_log: pytest.LogCaptureFixture
) -> None:
    output_dir = inputs["root"] / "empty-checkpoint"
    (output_dir / "checkpoint-5").mkdir(parents=True)  # killed right after the folder was made
    report = _run(make_config(inputs, output_dir, max_steps=2, eval_every_steps=0, save_every_steps=2))
    messages = [r.getMessage() for r in training_log.records]
    assert (
        "checkpoint-5 is incomplete (no trainer_state.json); no complete checkpoint left, starting fresh"
    ) in messages
    assert report["completed"] and report["resumed_from_step"] == 0 and report["steps"] == 2
    assert (output_dir / "checkpoint-5").is_dir(), "nothing is deleted"


# --- what makes the CPU default learn -------------------------------------------------------


def _single_process_run(inputs: dict[str, Any], name: str, **overrides: Any) -> dict[str, Any]:
    """A one-process run (no torchrun) of the training job on the 40 icons; its report."""
    config = make_config(inputs, inputs["root"] / name, resume=False, **overrides)
    with Reporter() as reporter:
        return run_training(config, reporter)


def test_from_scratch_siglip_leaves_the_trivial_plateau(inputs: dict[str, Any]) -> None:
    """Left padding (the pooled position is the [EOS]), a bias of -ln(batch) and a warmup: the loss
    of a whole SigLIP2 trained from scratch drops well below ln(batch) + 1, where every pair scores
    alike (the run that collapsed sat there from step 40 on)."""
    captions = [c for icon in inputs["icons"] for c in icon.captions]
    base = build_base_checkpoint(inputs["root"] / "scratch", captions, size="tiny", max_num_patches=16)
    report = _single_process_run(
        inputs,
        "scratch-run",
        base_checkpoint=str(base),
        max_steps=300,
        learning_rate=2e-3,
        lr_scheduler="constant_with_warmup",
        warmup_steps=5,
        weight_decay=0.0,
        eval_every_steps=0,
        save_every_steps=1000,
        eval_path=None,
        eval_images_path=None,
        eval_sha256=None,
    )
    plateau = math.log(8) + 1  # per-device batch 8, one process
    tail = float(np.mean([loss for _, loss in report["loss_curve"][-10:]]))
    assert tail < plateau - 0.3, (tail, plateau)
    assert load_checkpoint(Path(report["checkpoint_path"])).tokenizer.padding_side == "left"


def test_linear_probe_fits_the_vision_head_and_the_better_weights_are_exported(
    inputs: dict[str, Any],
) -> None:
    """The LiT default: the probe alone lifts retrieval far above the untrained base in one pass;
    with fine-tuning that cannot keep up (a learning rate far too high), its weights are exported."""
    lit = build_base_checkpoint(inputs["root"] / "lit-base", [], size="whole-icon-32", text_tower="minilm")
    report = _single_process_run(
        inputs,
        "lit-run",
        base_checkpoint=str(lit),
        linear_probe="auto",
        max_steps=4,
        learning_rate=0.5,
        eval_every_steps=0,
    )
    history = report["eval_history"]
    base, probe, final = history[0], history[1], history[-1]
    assert report["linear_probe"]["images"] == 2 * len(inputs["icons"])
    assert probe["text2image/R@10"] > base["text2image/R@10"] + 0.3, history
    assert report["exported"] == "linear_probe" and final["text2image/R@10"] < probe["text2image/R@10"]
    tuned = load_checkpoint(Path(report["checkpoint_path"]))
    assert tuned.meta.trained and tuned.meta.extra["exported"] == "linear_probe"
    assert report["final_metrics"]["text2image/R@10"] == probe["text2image/R@10"]


def test_the_gpu_recipe_runs_its_code_path_on_the_cpu(inputs: dict[str, Any]) -> None:
    """configs/gpu-small.yaml, the GPU recipe, through the same steps as on a GPU (its settings via
    train_config_from_pipeline, a LiT model, the batched augmentation, the eval cache, the probe),
    tiny: its vision tower at `tiny` size, 2 steps of 8. The GPU switches stay off on the CPU."""
    recipe = load_config(REPO_ROOT / "configs" / "gpu-small.yaml")
    assert (recipe.model.size, recipe.model.text_tower) == ("small", "minilm")
    tower = recipe.model.text_tower
    base = build_base_checkpoint(inputs["root"] / "recipe-base", [], size="tiny", text_tower=tower)
    config = train_config_from_pipeline(
        recipe,
        base_checkpoint=str(base),
        pairs_path=str(inputs["pairs"]),
        output_dir=str(inputs["root"] / "recipe-run"),
        eval_path=str(inputs["eval"]),
        eval_images_path=str(inputs["icon_map"]),
        eval_sha256=inputs["eval_sha256"],
        cache_dir=str(inputs["root"] / "cache"),
    )
    assert config.learning_rate == recipe.training.learning_rate and config.torch_compile is None
    config = replace(config, max_steps=2, per_device_batch_size=8, warmup_steps=1, report_to=())
    assert not any(config.on_cuda(name, use_cuda=False) for name in ("pin_memory", "torch_compile", "tf32"))
    with Reporter() as reporter:
        report = run_training(config, reporter)
    assert report["completed"] and report["steps"] == 2 and report["bf16"] is False
    assert report["linear_probe"]["images"] == 2 * len(inputs["icons"])
    assert [entry["step"] for entry in report["eval_history"]] == [0, 0, 2]  # base, probe, final
    assert load_checkpoint(Path(report["checkpoint_path"])).meta.architecture == "locked_text_siglip2"


# --- Dagster: TorchrunResource + Pipes into a real event log --------------------------------


def test_training_through_dagster_pipes_reaches_the_event_log(inputs: dict[str, Any]) -> None:
    output_dir = inputs["root"] / "run-dagster"
    config_path = make_config(inputs, output_dir, max_steps=2, eval_every_steps=0, save_every_steps=2).write(
        inputs["root"] / "dagster.json"
    )

    @asset
    # `context` stays unannotated: with postponed annotations Dagster sees a string and rejects it.
    def finetuned_checkpoint_test(context, torchrun: TorchrunResource):
        invocation = torchrun.run(context, config_path, PipesSubprocessClient())
        context.log.info(f"custom messages: {len(invocation.get_custom_messages())}")
        return invocation.get_materialize_result()

    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [finetuned_checkpoint_test],
            resources={
                "torchrun": TorchrunResource(
                    nproc_per_node=1, rdzv_endpoint=None, log_dir=str(output_dir / "torchrun")
                )
            },
            instance=instance,
        )
        assert result.success
        materializations = result.asset_materializations_for_node("finetuned_checkpoint_test")
        assert len(materializations) == 1
        metadata = materializations[0].metadata
        assert metadata["checkpoint_path"].value == str(output_dir / "model")
        assert metadata["steps"].value == 2
        assert "eval/text2image/R@1" in metadata and "loss_curve" in metadata and "config" in metadata
        logs = [e.user_message for e in instance.all_logs(result.run_id)]
        assert any("step 2/2 loss" in message for message in logs)  # rank 0's Pipes log lines
        assert any("eval at step 2" in message for message in logs)
        assert any("custom messages: 2" in message for message in logs)  # baseline + final eval
        assert not any(
            e.dagster_event_type == DagsterEventType.STEP_FAILURE
            for e in instance.all_logs(result.run_id)
            if e.is_dagster_event
        )
    assert load_checkpoint(output_dir / "model").meta.extra["steps"] == 2


def test_a_failing_rank_fails_the_dagster_run_with_its_error(inputs: dict[str, Any]) -> None:
    from dagster import (
        DagsterInstance,
        PipesSubprocessClient,
        asset,
        materialize,
    )

    from icon_pipeline.defs.resources.gpu import TorchrunResource

    output_dir = inputs["root"] / "run-dagster-bad"
    config_path = make_config(inputs, output_dir, eval_sha256="f" * 64).write(inputs["root"] / "bad.json")

    @asset
    def finetuned_checkpoint_bad(context, torchrun: TorchrunResource):
        return torchrun.run(context, config_path, PipesSubprocessClient()).get_materialize_result()

    with DagsterInstance.ephemeral() as instance, pytest.raises(Failure) as failure:
        materialize(
            [finetuned_checkpoint_bad],
            resources={
                "torchrun": TorchrunResource(
                    nproc_per_node=2, rdzv_endpoint=None, log_dir=str(output_dir / "torchrun")
                )
            },
            instance=instance,
        )
    description = failure.value.description
    assert "training rank" in description and "failed" in description
    assert "another version than the config expects" in description and "ffff" in description
    assert not (output_dir / "checkpoint-1").exists()


# --- The failure's headline: what happened, never the warning a rank printed last -----------------

# What torchrun 2.13 printed when a rank that had warned was killed (SIGKILL), as the launcher's
# stderr; then that rank's own stderr.log, whose last line the old headline took.
TORCHRUN_KILLED = """\
[default0]:/tmp/tr/die.py:2: FutureWarning: torch.cuda.amp.autocast is deprecated
[default0]:  warnings.warn("torch.cuda.amp.autocast is deprecated", FutureWarning)
E1206 11:14:24.725000 27631 torch/distributed/elastic/multiprocessing/api.py:1002] failed (exitcode: -9) \
local_rank: 0 (pid: 27823) of binary: /work/main/.venv/bin/python
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File ".venv/lib/python3.11/site-packages/torch/distributed/launcher/api.py", line 383, in launch_agent
    raise ChildFailedError(
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
======================================================
die.py FAILED
------------------------------------------------------
Failures:
  <NO_OTHER_FAILURES>
------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-06_11:14:24
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : -9 (pid: 27823)  (SIGKILL)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 27823
======================================================
"""
RANK_WARNED_THEN_RAISED = """\
/work/main/.venv/lib/python3.11/site-packages/torch/utils/data/dataloader.py:665: UserWarning: \
'pin_memory' argument is set as true but no accelerator is found, then device pinned memory won't be used.
  warnings.warn(warn_msg)
Traceback (most recent call last):
  File "/work/wt/icon_pipeline/model/training/run.py", line 88, in load
    raise KeyError("pixel_values")
KeyError: 'pixel_values'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/work/wt/icon_pipeline/model/training/__main__.py", line 5, in <module>
    main()
RuntimeError: the batch has no images
  (from the collator)
/usr/lib/python3.11/warnings.py:109: UserWarning: resource_tracker: leaked semaphore objects
  warnings.warn(
"""


def test_the_failure_headline_is_the_exception_or_the_signal_never_a_warning() -> None:
    from icon_pipeline.defs.resources.gpu import failure_headline

    assert failure_headline(TORCHRUN_KILLED) == "rank 0 was killed (signal 9, SIGKILL)"
    assert failure_headline(RANK_WARNED_THEN_RAISED) == "RuntimeError: the batch has no images"
    warned_only = RANK_WARNED_THEN_RAISED.split("Traceback")[0]
    assert failure_headline(warned_only) == ""  # nothing but a warning: no headline, not `warnings.warn(`
    assert failure_headline(warned_only + "Segmentation fault (core dumped)\n  warnings.warn(\n") == (
        "Segmentation fault (core dumped)"
    )


def test_a_rank_killed_by_a_signal_fails_the_run_with_the_signal_not_its_last_warning(tmp_path: Path) -> None:
    """Real torchrun, whose rank (torchrun's documented PYTHON_EXEC override) warns, then SIGKILLs itself."""
    rank = tmp_path / "rank.py"
    rank.write_text(
        "import os, signal, warnings\n"
        "warnings.warn(\n    'dataloader workers are slow', UserWarning\n)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    fake_python = tmp_path / "python-rank"
    fake_python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{rank}"\n')  # torchrun's arguments unused
    fake_python.chmod(0o755)
    config_path = tmp_path / "train.json"
    config_path.write_text("{}")
    log_dir = tmp_path / "torchrun"

    @asset
    def finetuned_checkpoint_killed(context, torchrun: TorchrunResource):
        return torchrun.run(context, config_path, PipesSubprocessClient()).get_materialize_result()

    resource = TorchrunResource(
        nproc_per_node=2, log_dir=str(log_dir), extra_env={"PYTHON_EXEC": str(fake_python)}
    )
    with DagsterInstance.ephemeral() as instance, pytest.raises(Failure) as failure:
        materialize([finetuned_checkpoint_killed], resources={"torchrun": resource}, instance=instance)
    description = failure.value.description
    assert description.startswith("training rank 0 was killed (signal 9, SIGKILL)\n"), description
    assert failure.value.metadata["error"].value == "rank 0 was killed (signal 9, SIGKILL)"
    assert failure.value.metadata["failed_ranks"].value == 2
    # The rank's own stderr still follows the headline, warning and all.
    assert "UserWarning: dataloader workers are slow" in description
    assert f"(per-rank logs in {log_dir})" in description
