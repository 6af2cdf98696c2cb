"""The HF Trainer subclass (global-batch loss, retrieval eval) and its callbacks."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from icon_pipeline.model.checkpoint import EncoderBundle
from icon_pipeline.model.training.data import EvalData
from icon_pipeline.model.training.evaluation import evaluate_embeddings
from icon_pipeline.model.training.loss import global_siglip_loss
from icon_pipeline.model.training.reporting import Reporter


class RetrievalEvaluator:
    """Embeds the frozen eval set with the current weights and scores both directions."""

    def __init__(self, data: EvalData, bundle: EncoderBundle, batch_size: int = 128, chunk: int = 512):
        self.data = data
        self.bundle = bundle
        self.batch_size = batch_size
        self.chunk = chunk  # images turned into PIL at once: bounds memory on a 5k-icon gallery

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        was_training = model.training
        bundle = replace(self.bundle, model=model)  # the weights being trained, the same preprocessing
        try:
            rows = self.data.image_rows
            image_chunks = [
                bundle.embed_images(
                    [self.data.images.image(r) for r in rows[s : s + self.chunk]], self.batch_size
                )
                for s in range(0, len(rows), self.chunk)
            ]
            image_embeds = np.concatenate(image_chunks)
            text_embeds = bundle.embed_texts([row.caption for row in self.data.rows], batch_size=256)
        finally:
            model.train(was_training)
        return evaluate_embeddings(
            text_embeds,
            image_embeds,
            [row.icon_ids for row in self.data.rows],
            [row.group_id for row in self.data.rows],
            [row.representative_icon_id for row in self.data.rows],
            self.data.icon_ids,
        )


class SiglipTrainer(Trainer):
    """Trainer with an optional global-batch SigLIP loss and retrieval metrics as its evaluation."""

    def __init__(
        self,
        *args: Any,
        gather_negatives: bool = False,
        evaluator: Callable[[torch.nn.Module], dict[str, float]] | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.gather_negatives = gather_negatives
        self.evaluator = evaluator
        self.eval_history: list[dict[str, Any]] = []

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        if self.gather_negatives and self.args.world_size > 1:
            outputs = model(**{**inputs, "return_loss": False})
            core = self.accelerator.unwrap_model(model)
            loss = global_siglip_loss(
                outputs.image_embeds.float(), outputs.text_embeds.float(), core.logit_scale, core.logit_bias
            )
        else:
            outputs = model(**{**inputs, "return_loss": True})
            loss = outputs.loss
        return (loss, outputs) if return_outputs else loss

    def evaluate(
        self,
        eval_dataset: Any = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """Retrieval metrics on rank 0 only (other ranks wait at their next collective)."""
        metrics: dict[str, float] = {}
        if self.evaluator is not None and self.is_world_process_zero():
            started = time.perf_counter()
            raw = self.evaluator(self.model)
            metrics = {f"{metric_key_prefix}/{name}": value for name, value in raw.items()}
            metrics[f"{metric_key_prefix}/seconds"] = round(time.perf_counter() - started, 3)
            self.eval_history.append({"step": self.state.global_step, **raw})
            self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


class ScheduleCallback(TrainerCallback):
    """Evaluate every N steps; optionally stop (after saving) at a step, as an interruption would."""

    def __init__(self, eval_every_steps: int, stop_after_steps: int | None):
        self.eval_every_steps = eval_every_steps
        self.stop_after_steps = stop_after_steps
        self.stopped_early = False

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        if self.eval_every_steps and state.global_step % self.eval_every_steps == 0:
            control.should_evaluate = True
        if self.stop_after_steps is not None and state.global_step >= self.stop_after_steps:
            if state.global_step < state.max_steps:
                self.stopped_early = True
            control.should_save = True
            control.should_training_stop = True
        return control


class BaselineCallback(TrainerCallback):
    """Puts the step-0 evaluations (the base model, then the linear probe; run before train(), which
    resets the state) into the log history, so the report, the checkpoints and a resumed run keep them."""

    def __init__(self, entries: list[dict[str, Any]]):
        self.entries = [e for e in entries if e]

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.entries and state.global_step == 0 and not state.log_history:
            state.log_history.extend({**entry, "step": 0} for entry in self.entries)


class PipesCallback(TrainerCallback):
    """Forwards training logs and eval metrics to Dagster (a no-op without Pipes)."""

    def __init__(self, reporter: Reporter):
        self.reporter = reporter

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs:
            self.reporter.info(
                f"step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f} "
                f"lr {logs.get('learning_rate', 0.0):.2e} grad_norm {logs.get('grad_norm', float('nan')):.3f}"
            )

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not metrics:
            return
        summary = ", ".join(f"{k.removeprefix('eval/')} {v:.3f}" for k, v in metrics.items() if "@" in k)
        self.reporter.info(f"eval at step {state.global_step}: {summary}")
        self.reporter.custom({"kind": "eval", "step": state.global_step, "metrics": metrics})


def parameter_checksum(model: torch.nn.Module) -> dict[str, Any]:
    """A bitwise fingerprint of the weights: equal on every rank if DDP kept them in sync."""
    digest = hashlib.sha256()
    total = 0.0
    for name, parameter in sorted(model.named_parameters()):
        data = parameter.detach().float().cpu().contiguous()
        digest.update(name.encode())
        digest.update(data.numpy().tobytes())
        total += float(data.double().abs().sum())
    return {"sha256": digest.hexdigest(), "abs_sum": total}


class RankChecksumCallback(TrainerCallback):
    """Each rank writes ranks/rank-<r>.json with its parameter checksum at the end of training."""

    def __init__(self, directory: Path, rank: int):
        self.directory = directory
        self.rank = rank

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        model = kwargs.get("model")
        if model is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        record = {"rank": self.rank, "step": state.global_step, **parameter_checksum(model)}
        (self.directory / f"rank-{self.rank}.json").write_text(json.dumps(record))
