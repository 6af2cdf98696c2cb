"""The fine-tuning job: validate inputs, build the Trainer, train (resuming if possible), export.

Every rank runs `run_training`; validation happens on every rank before any collective, so a
bad input stops all of them with the same clear message instead of leaving ranks waiting.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, TrainingArguments

from icon_pipeline.model.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    EncoderBundle,
    PatchBudgetError,
    load_checkpoint,
    save_checkpoint,
)
from icon_pipeline.model.training.collator import GroupDataset, PairCollator
from icon_pipeline.model.training.config import TrainConfig, TrainConfigError, relative_to_root
from icon_pipeline.model.training.data import (
    EvalData,
    TrainingData,
    load_eval_data,
    load_training_data,
    read_eval_set,
)
from icon_pipeline.model.training.heads import is_trunk_model, load_head_data, train_heads
from icon_pipeline.model.training.launch import DDP_BACKEND_ENV
from icon_pipeline.model.training.probe import fit_linear_probe, initial_logit_bias, wants_linear_probe
from icon_pipeline.model.training.reporting import Reporter, global_rank, world_size
from icon_pipeline.model.training.resume import ResumeChoice, choose_checkpoint
from icon_pipeline.model.training.trainer import (
    BaselineCallback,
    PipesCallback,
    RankChecksumCallback,
    RetrievalEvaluator,
    ScheduleCallback,
    SiglipTrainer,
)

FINAL_MODEL_DIR = "model"
REPORT_FILE = "training_report.json"
TENSORBOARD_DIR = "tensorboard"
LOSS_CURVE_POINTS = 200  # points kept in the Dagster metadata (the report file keeps them all)


def load_base(config: TrainConfig) -> EncoderBundle:
    """The base checkpoint at the configured patch budget, checked before anything trains."""
    try:
        return load_checkpoint(config.base_checkpoint, device="cpu", max_num_patches=config.max_num_patches)
    except PatchBudgetError as error:
        raise TrainConfigError(str(error)) from None


MAX_AUTO_DATALOADER_WORKERS = 8


def dataloader_workers(configured: int | None, use_cuda: bool, cpu_count: int, local_world_size: int) -> int:
    """Workers per rank. On a GPU one worker prepares ~440 pairs/s at 224 px, so the base model
    needs ~5 to keep up: take up to 8, leaving each rank a core of its own. On the CPU the
    workers would only compete with the training threads, so none."""
    if configured is not None:
        return configured
    if not use_cuda:
        return 0
    cores_per_rank = cpu_count // max(1, local_world_size)
    return max(0, min(MAX_AUTO_DATALOADER_WORKERS, cores_per_rank - 1))


EVAL_BATCH_GPU, EVAL_BATCH_CPU = 1024, 128


def eval_batch_size(config: TrainConfig, use_cuda: bool) -> int:
    if config.eval_batch_size is not None:
        return config.eval_batch_size
    return EVAL_BATCH_GPU if use_cuda else EVAL_BATCH_CPU


def training_arguments(config: TrainConfig, use_cuda: bool, drop_last: bool) -> TrainingArguments:
    bf16 = config.bf16 if config.bf16 is not None else (use_cuda and torch.cuda.is_bf16_supported())
    if config.on_cuda("tf32", use_cuda):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    pin_memory = config.on_cuda("pin_memory", use_cuda)
    backend = os.environ.get(DDP_BACKEND_ENV) or ("nccl" if use_cuda else "gloo")
    workers = dataloader_workers(
        config.dataloader_workers,
        use_cuda,
        cpu_count=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),  # set by torchrun
    )
    report_to = list(config.report_to)
    if "tensorboard" in report_to:
        from transformers.integrations import is_tensorboard_available

        if not is_tensorboard_available():
            report_to.remove("tensorboard")  # logged as a warning by the caller
    return TrainingArguments(
        output_dir=config.output_dir,
        per_device_train_batch_size=config.per_device_batch_size,
        max_steps=config.max_steps if config.max_steps > 0 else -1,
        num_train_epochs=config.num_epochs,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=config.save_every_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="no",  # evaluation is scheduled by ScheduleCallback (no eval_dataset needed)
        bf16=bf16,
        use_cpu=not use_cuda,
        ddp_backend=backend if world_size() > 1 else None,
        ddp_find_unused_parameters=False,
        dataloader_num_workers=workers,
        dataloader_persistent_workers=workers > 0,
        dataloader_pin_memory=pin_memory,
        accelerator_config={"non_blocking": pin_memory},  # only pinned memory copies asynchronously
        optim="adamw_torch_fused" if config.on_cuda("fused_adamw", use_cuda) else "adamw_torch",
        dataloader_drop_last=drop_last,
        remove_unused_columns=False,  # the collator needs group_index, the model never sees it
        report_to=report_to or "none",
        disable_tqdm=True,
        save_only_model=False,
    )


def _loss_curve(log_history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(int(e["step"]), float(e["loss"])) for e in log_history if "loss" in e and "step" in e]


def _thin(points: list[Any], limit: int) -> list[Any]:
    if len(points) <= limit:
        return points
    stride = math.ceil(len(points) / limit)
    return points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])


def _validate_inputs(config: TrainConfig) -> None:
    """Cheap existence checks first, so a typo fails in milliseconds, not after loading a model."""
    checkpoint = Path(config.base_checkpoint)
    looks_local = checkpoint.is_absolute() or config.base_checkpoint.startswith(".")
    if looks_local and not checkpoint.is_dir():
        raise CheckpointError(f"base checkpoint {checkpoint} does not exist")
    if not Path(config.pairs_path).is_file():
        raise TrainConfigError(f"training pairs file {config.pairs_path} does not exist")
    if config.eval_path and not Path(config.eval_path).is_file():
        raise TrainConfigError(f"eval set {config.eval_path} does not exist")
    if config.corpus_pairs_path and not Path(config.corpus_pairs_path).is_file():
        raise TrainConfigError(f"corpus pairs file {config.corpus_pairs_path} does not exist")
    if config.eval_images_path and not Path(config.eval_images_path).is_file():
        raise TrainConfigError(f"eval image map {config.eval_images_path} does not exist")
    if config.eval_path:
        read_eval_set(config.eval_path, config.eval_sha256)  # another eval version stops the run here


def run_training(config: TrainConfig, reporter: Reporter) -> dict[str, Any]:
    """Train as configured; returns the report (also written to output_dir/training_report.json)."""
    rank, ranks = global_rank(), world_size()
    output_dir = Path(config.output_dir)
    _validate_inputs(config)
    bundle = load_base(config)
    if is_trunk_model(bundle.model):
        return _run_heads(config, bundle, reporter) if rank == 0 else {}

    use_cuda = torch.cuda.is_available()
    # Creating the arguments sets up the process group (once per process, so it must be the final one).
    args = training_arguments(config, use_cuda, drop_last=False)
    # Eval before train data: a wrong eval version stops the run before the (long) image decode.
    # One process per node decodes; the others then open the finished cache.
    eval_data: EvalData | None = None
    if config.eval_path and config.eval_images_path:
        with args.main_process_first(desc="decode eval images"):
            eval_data = load_eval_data(
                config.eval_path,
                config.eval_images_path,
                config.eval_sha256,
                config.image_size,
                config.cache_path,
                images_root=config.images_root,
            )
    with args.main_process_first(desc="decode training images"):
        data: TrainingData = load_training_data(
            config.pairs_path,
            config.image_size,
            config.cache_path,
            images_root=config.images_root,
            corpus_pairs_path=config.corpus_pairs_path,
        )
    reporter.info(
        f"{len(data.groups)} training groups, {data.images.array.shape[0]} images "
        f"({len(data.image_failures)} unreadable, {len(data.dropped_groups)} groups dropped); "
        f"eval: {len(eval_data.rows) if eval_data else 0} captions over "
        f"{len(eval_data.icon_ids) if eval_data else 0} images; world size {ranks}"
    )
    for path, reason in list(data.image_failures.items())[:5]:
        reporter.warning(f"unreadable training image {path}: {reason}")

    global_batch = config.per_device_batch_size * ranks
    # Full batches keep every rank's batch the same size (required by the all-gather loss).
    args.dataloader_drop_last = len(data.groups) >= global_batch
    if "tensorboard" in config.report_to and "tensorboard" not in (args.report_to or []):
        reporter.warning("tensorboard is not installed: metrics go to the report and Dagster only")
    tensorboard_dir = output_dir / TENSORBOARD_DIR
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(tensorboard_dir))

    collator = PairCollator.for_bundle(data, bundle, config.augmentation, config.seed, rank)
    evaluator = (
        RetrievalEvaluator(eval_data, bundle, eval_batch_size(config, use_cuda)) if eval_data else None
    )
    schedule = ScheduleCallback(config.eval_every_steps, config.stop_after_steps)
    trainer = SiglipTrainer(
        model=bundle.model,
        args=args,
        train_dataset=GroupDataset(data.groups),
        data_collator=collator,
        callbacks=[schedule, PipesCallback(reporter), RankChecksumCallback(output_dir / "ranks", rank)],
        gather_negatives=config.gather_negatives,
        evaluator=evaluator,
        compile_forward=config.on_cuda("torch_compile", use_cuda),
        non_blocking=args.dataloader_pin_memory,
    )

    # Our PipesCallback logs each entry once, with the rank; the stock printer would repeat them.
    trainer.remove_callback(PrinterCallback)

    # A half-written latest checkpoint (a kill during its save) is skipped for the previous one.
    choice = choose_checkpoint(output_dir) if config.resume else ResumeChoice(checkpoint=None)
    if skipped := choice.describe():
        reporter.warning(skipped)
    resume_from = str(choice.checkpoint) if choice.checkpoint else None
    resumed_step = int(Path(resume_from).name.split("-")[-1]) if resume_from else 0
    probe: Probe | None = None
    if resume_from:
        reporter.info(f"resuming from {resume_from} (step {resumed_step})")
    else:
        probe = _before_first_step(config, bundle, data, trainer, reporter, global_batch)

    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.perf_counter() - started
    steps_run = trainer.state.global_step - resumed_step
    pairs_per_second = steps_run * global_batch / train_seconds if train_seconds > 0 else 0.0

    if schedule.stopped_early:
        reporter.info(
            f"stopped at step {trainer.state.global_step} as configured (stop_after_steps); checkpoint saved"
        )
        return {"stopped_at_step": trainer.state.global_step, "completed": False}

    final_metrics: dict[str, float] = {}
    if evaluator is not None and (
        not config.eval_every_steps or trainer.state.global_step % config.eval_every_steps
    ):
        final_metrics = trainer.evaluate()  # the final weights are always scored
    elif trainer.eval_history:
        final_metrics = {f"eval/{k}": v for k, v in trainer.eval_history[-1].items()}
    report: dict[str, Any] = {}
    if trainer.is_world_process_zero():
        exported = "final"
        if probe is not None and probe.better_than(final_metrics):
            trainer.model.load_state_dict(probe.state)
            exported = "linear_probe"
            reporter.info(
                f"exporting the linear probe's weights: on the eval set they score {probe.score:.4f}, "
                f"the final step's {selection_score(final_metrics):.4f} (training.export_best)"
            )
        report = _finish(
            config,
            bundle,
            trainer,
            eval_data,
            data,
            resumed_step,
            train_seconds,
            pairs_per_second,
            exported,
            probe,
        )
        metadata = _materialization_metadata(report)
        reporter.materialize(metadata)
        reporter.info(
            f"done: {report['steps']} steps, {pairs_per_second:.1f} pairs/s, "
            f"model at {report['checkpoint_path']}"
        )
    return report


def _run_heads(config: TrainConfig, bundle: EncoderBundle, reporter: Reporter) -> dict[str, Any]:
    """A frozen-trunk model (trunk_lit): its heads train on the trunk's features, computed once, in
    one process (heads.py); then the export and report every run makes."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bundle.model.to(device)
    data, eval_data, feature_seconds = load_head_data(config, bundle.model, reporter)
    reporter.info(
        f"{len(data.groups)} training groups (library and corpus), {data.features.shape[0]} images "
        f"({len(data.failures)} unreadable, {len(data.dropped_groups)} groups dropped); eval: "
        f"{len(eval_data.rows) if eval_data else 0} captions over "
        f"{len(eval_data.icon_ids) if eval_data else 0} images; trunk features in {feature_seconds:.0f} s; "
        f"the frozen trunk's heads train on them in one process ({device.type})"
    )
    output_dir = Path(config.output_dir)
    writer = _tensorboard_writer(config, output_dir / TENSORBOARD_DIR, reporter)
    try:
        result = train_heads(
            config,
            bundle.model,
            bundle.tokenizer,
            bundle.max_length,
            data,
            eval_data,
            reporter,
            log_scalar=writer.add_scalar if writer else None,
        )
    finally:
        if writer:
            writer.close()
    bundle.model.to("cpu")
    base_meta = bundle.meta
    meta = replace(
        base_meta,
        base=relative_to_root(config.base_checkpoint, config.images_root),
        trained=True,
        extra={
            "steps": result["steps"],
            "eval_sha256": eval_data.sha256 if eval_data else None,
            "exported": "final",
        },
    )
    final_dir = save_checkpoint(bundle.model, bundle.processor, meta, output_dir / FINAL_MODEL_DIR)
    losses = result["loss_curve"]
    report: dict[str, Any] = {
        "completed": True,
        "checkpoint_path": str(final_dir),
        "tensorboard_dir": str(output_dir / TENSORBOARD_DIR),
        "base_checkpoint": config.base_checkpoint,
        "resumed_from_step": 0,
        "epochs": None,
        "world_size": world_size(),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "bf16": device.type == "cuda",
        "first_loss": losses[0][1] if losses else None,
        "final_loss": losses[-1][1] if losses else None,
        "min_loss": min(loss for _, loss in losses) if losses else None,
        "final_metrics": result["eval_history"][-1] if result["eval_history"] else {},
        "exported": "final",
        "linear_probe": None,
        "eval_sha256": eval_data.sha256 if eval_data else None,
        "eval_missing_icons": eval_data.missing_icons if eval_data else [],
        "dropped_groups": data.dropped_groups,
        "unreadable_images": data.failures,
        "config": config.to_dict(),
        "feature_seconds": round(feature_seconds, 3),
        **result,
    }
    _write_report(output_dir, report, config.images_root)
    reporter.materialize(_materialization_metadata(report))
    reporter.info(
        f"done: {report['steps']} steps, {report['pairs_per_second']:.1f} pairs/s on cached features "
        f"(trunk features {report['feature_seconds']:.0f} s), model at {final_dir}"
    )
    return report


def _tensorboard_writer(config: TrainConfig, directory: Path, reporter: Reporter) -> Any:
    if "tensorboard" not in config.report_to:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        reporter.warning("tensorboard is not installed: metrics go to the report and Dagster only")
        return None
    return SummaryWriter(log_dir=str(directory))


def selection_score(metrics: dict[str, float]) -> float:
    """What `export_best` compares: mean R@10 over both directions on the frozen eval set."""
    values = [v for k, v in metrics.items() if k.endswith("/R@10")]
    return float(sum(values) / len(values)) if values else float("nan")


class Probe:
    """The linear probe's weights and eval score, kept to export if fine-tuning does not beat them."""

    def __init__(self, summary: dict[str, Any], metrics: dict[str, float], state: dict[str, torch.Tensor]):
        self.summary = {**summary, "eval": {k.removeprefix("eval/"): v for k, v in metrics.items()}}
        self.score = selection_score(metrics)
        self.state = state

    def better_than(self, final_metrics: dict[str, float]) -> bool:
        final = selection_score(final_metrics)
        return bool(self.state) and math.isfinite(self.score) and math.isfinite(final) and self.score > final


def _before_first_step(
    config: TrainConfig,
    bundle: EncoderBundle,
    data: TrainingData,
    trainer: SiglipTrainer,
    reporter: Reporter,
    global_batch: int,
) -> Probe | None:
    """Logit bias, the base model's score, the linear probe and its score (a fresh run only)."""
    trained = bundle.meta.trained if bundle.meta else True  # a foreign checkpoint is pretrained
    bias = initial_logit_bias(config.logit_bias, trained, global_batch)
    if bias is not None:
        with torch.no_grad():
            bundle.model.logit_bias.fill_(bias)
        reporter.info(f"logit bias set to {bias:.3f} (global batch {global_batch}; training.logit_bias)")
    # The base model's score at step 0 (evaluate() logs it to TensorBoard and Dagster at once).
    entries = [trainer.evaluate()] if trainer.evaluator is not None else []
    probe = None
    if wants_linear_probe(config.linear_probe, trained):
        started = time.perf_counter()
        summary = fit_linear_probe(bundle, data, config.linear_probe_ridge, trainer.args.device)
        summary["seconds"] = round(time.perf_counter() - started, 2)
        reporter.info(
            f"linear probe: vision head fitted in closed form on {summary['images']} images of "
            f"{summary['groups']} groups in {summary['seconds']} s"
        )
        metrics = trainer.evaluate() if trainer.evaluator is not None else {}
        if metrics:
            entries.append({**metrics, "phase": "linear_probe"})
        state = (
            {k: v.detach().clone() for k, v in bundle.model.state_dict().items()}
            if config.export_best
            else {}
        )
        probe = Probe(summary, metrics, state)
    if entries:
        trainer.add_callback(BaselineCallback(entries))
    return probe


def _finish(
    config: TrainConfig,
    bundle: EncoderBundle,
    trainer: SiglipTrainer,
    eval_data: EvalData | None,
    data: TrainingData,
    resumed_step: int,
    train_seconds: float,
    pairs_per_second: float,
    exported: str = "final",
    probe: Probe | None = None,
) -> dict[str, Any]:
    """Rank 0: export the HF directory (`exported`: final or linear_probe weights) and write
    training_report.json."""
    output_dir = Path(config.output_dir)
    base_meta = bundle.meta
    meta = CheckpointMeta(
        size=base_meta.size if base_meta else "external",
        max_length=bundle.max_length,
        max_num_patches=bundle.max_num_patches,
        vocab_size=int(trainer.model.config.text_config.vocab_size),
        seed=config.seed,
        tokenizer_loader=base_meta.tokenizer_loader if base_meta else "auto",
        base=relative_to_root(config.base_checkpoint, config.images_root),
        extra={
            "steps": trainer.state.global_step,
            "eval_sha256": eval_data.sha256 if eval_data else None,
            "exported": exported,
        },
        architecture=base_meta.architecture if base_meta else "siglip2",
        padding_side=bundle.tokenizer.padding_side,
        trained=True,
    )
    final_dir = save_checkpoint(trainer.model, bundle.processor, meta, output_dir / FINAL_MODEL_DIR)
    history = trainer.state.log_history
    eval_history = [
        {"step": e["step"], **{k.removeprefix("eval/"): v for k, v in e.items() if k.startswith("eval/")}}
        for e in history
        if any(k.startswith("eval/") for k in e)
    ]
    losses = _loss_curve(history)
    report = {
        "completed": True,
        "checkpoint_path": str(final_dir),
        "tensorboard_dir": str(output_dir / TENSORBOARD_DIR),
        "base_checkpoint": config.base_checkpoint,
        "steps": trainer.state.global_step,
        "resumed_from_step": resumed_step,
        "epochs": trainer.state.epoch,
        "world_size": world_size(),
        "global_batch_size": config.per_device_batch_size * world_size(),
        "train_seconds": round(train_seconds, 3),
        "pairs_per_second": round(pairs_per_second, 2),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "bf16": bool(trainer.args.bf16),
        "loss_curve": losses,
        "first_loss": losses[0][1] if losses else None,
        "final_loss": losses[-1][1] if losses else None,
        "min_loss": min(loss for _, loss in losses) if losses else None,
        "eval_history": eval_history,
        "final_metrics": (
            {"step": 0, **probe.summary["eval"]}
            if exported == "linear_probe" and probe
            else (eval_history[-1] if eval_history else {})
        ),
        "exported": exported,
        "linear_probe": probe.summary if probe else None,
        "eval_sha256": eval_data.sha256 if eval_data else None,
        "eval_missing_icons": eval_data.missing_icons if eval_data else [],
        "training_groups": len(data.groups),
        "dropped_groups": data.dropped_groups,
        "unreadable_images": data.image_failures,
        "config": config.to_dict(),
    }
    _write_report(output_dir, report, config.images_root)
    return report


def _materialization_metadata(report: dict[str, Any]) -> dict[str, Any]:
    """Flat, typed values Dagster shows well; lists and the config go as JSON."""
    metadata: dict[str, Any] = {
        key: report[key]
        for key in (
            "checkpoint_path",
            "tensorboard_dir",
            "steps",
            "resumed_from_step",
            "world_size",
            "global_batch_size",
            "train_seconds",
            "pairs_per_second",
            "device",
            "first_loss",
            "final_loss",
            "min_loss",
        )
        if report.get(key) is not None
    }
    metadata["loss_curve"] = {"raw_value": _thin(report["loss_curve"], LOSS_CURVE_POINTS), "type": "json"}
    metadata["eval_history"] = {"raw_value": report["eval_history"], "type": "json"}
    metadata["config"] = {"raw_value": report["config"], "type": "json"}
    for name, value in report["final_metrics"].items():
        if name != "step" and isinstance(value, int | float):
            metadata[f"eval/{name}"] = float(value)
    if report.get("eval_sha256"):
        metadata["eval_sha256"] = report["eval_sha256"]
    return metadata


def _write_report(output_dir: Path, report: dict[str, Any], data_root: str | None) -> None:
    """training_report.json, its paths inside the data root relative to it (the report returned
    and sent through Pipes keeps them absolute: they are where this run wrote)."""
    stored = relative_to_root(report, data_root)
    (output_dir / REPORT_FILE).write_text(json.dumps(stored, indent=2, sort_keys=True))
