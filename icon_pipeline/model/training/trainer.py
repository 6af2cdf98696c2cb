"""The HF Trainer subclass (global-batch loss, retrieval eval) and its callbacks."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from icon_pipeline.model.checkpoint import EncoderBundle
from icon_pipeline.model.pixels import PatchGeometry
from icon_pipeline.model.training.collator import IMAGES_KEY, PairCollator
from icon_pipeline.model.training.data import EvalData
from icon_pipeline.model.training.evaluation import evaluate_embeddings
from icon_pipeline.model.training.loss import global_siglip_loss
from icon_pipeline.model.training.reporting import Reporter, logger


class EvalCache:
    """The eval set made ready for the model once per run: the gallery's uint8 rows as one tensor on
    the job's device and the captions' tokens; every evaluation reuses them (`preparations` counts
    how often they were built: once per run, unless the eval data or device changes)."""

    def __init__(self, data: EvalData, bundle: EncoderBundle):
        self.data = data
        self.bundle = bundle
        self.geometry = PatchGeometry.of(bundle.image_processor, bundle.max_num_patches)
        self.preparations = 0
        self._key: tuple[Any, ...] | None = None
        self.gallery: torch.Tensor | None = None
        self.texts: dict[str, torch.Tensor] = {}

    def ready(self, device: torch.device) -> EvalCache:
        key = (self.data.images.key, tuple(self.data.image_rows), self.data.sha256, str(device))
        if key != self._key:
            rows = np.asarray(self.data.image_rows)
            # On a GPU the gallery lives in its memory (~150 KB an image at 224 px: 1 GB for 6.3k
            # icons); on the CPU the batches are read from the memory-mapped cache as they are needed.
            self.gallery = (
                torch.from_numpy(np.ascontiguousarray(self.data.images.array[rows])).to(device)
                if device.type != "cpu"
                else None
            )
            texts = self.bundle.text_inputs([row.caption for row in self.data.rows])
            self.texts = {name: value.to(device) for name, value in texts.items()}
            self._key = key
            self.preparations += 1
        return self

    def __len__(self) -> int:
        return len(self.data.image_rows)

    def images(self, start: int, stop: int) -> torch.Tensor:
        """Gallery images start..stop as (B, S, S, 3) uint8 on the prepared device."""
        if self.gallery is not None:
            return self.gallery[start:stop]
        rows = np.asarray(self.data.image_rows[start:stop])
        return torch.from_numpy(np.ascontiguousarray(self.data.images.array[rows]))


class RetrievalEvaluator:
    """Embeds the frozen eval set with the current weights and scores both directions: the eval
    cache's pixels patched in torch on the model's device, `batch_size` images per forward, under
    inference mode (bf16 on a GPU)."""

    def __init__(
        self, data: EvalData, bundle: EncoderBundle, batch_size: int = 128, text_batch_size: int = 1024
    ):
        self.cache = EvalCache(data, bundle)
        self.batch_size = batch_size
        self.text_batch_size = text_batch_size

    @torch.inference_mode()
    def embed(self, model: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
        """(text embeddings, gallery image embeddings), L2-normalised float32."""
        device = next(model.parameters()).device
        cache = self.cache.ready(device)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
        images, texts = [], []
        with autocast:
            for start in range(0, len(cache), self.batch_size):
                inputs = cache.geometry.patchify(cache.images(start, start + self.batch_size))
                images.append(model.get_image_features(**inputs).pooler_output.float())
            count = len(next(iter(cache.texts.values())))
            for start in range(0, count, self.text_batch_size):
                inputs = {k: v[start : start + self.text_batch_size] for k, v in cache.texts.items()}
                texts.append(model.get_text_features(**inputs).pooler_output.float())
        normalize = torch.nn.functional.normalize
        return (
            normalize(torch.cat(texts), dim=-1).cpu().numpy(),
            normalize(torch.cat(images), dim=-1).cpu().numpy(),
        )

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            text_embeds, image_embeds = self.embed(model)
        finally:
            model.train(was_training)
        data = self.cache.data
        return evaluate_embeddings(
            text_embeds,
            image_embeds,
            [row.icon_ids for row in data.rows],
            [row.group_id for row in data.rows],
            [row.representative_icon_id for row in data.rows],
            data.icon_ids,
        )


class SiglipTrainer(Trainer):
    """Trainer with an optional global-batch SigLIP loss and retrieval metrics as its evaluation."""

    def __init__(
        self,
        *args: Any,
        gather_negatives: bool = False,
        evaluator: Callable[[torch.nn.Module], dict[str, float]] | None = None,
        compile_forward: bool = False,
        non_blocking: bool = False,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.gather_negatives = gather_negatives
        self.evaluator = evaluator
        self.eval_history: list[dict[str, Any]] = []
        self.compile_forward = compile_forward
        self.non_blocking = non_blocking
        self._compiled: Any = None

    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The batch on the job's device (a non-blocking copy from pinned memory on a GPU), its uint8
        images augmented and patched there (PairCollator.model_inputs)."""
        device = self.args.device
        inputs = {
            key: value.to(device, non_blocking=self.non_blocking)
            if isinstance(value, torch.Tensor)
            else value
            for key, value in inputs.items()
        }
        if IMAGES_KEY in inputs and isinstance(self.data_collator, PairCollator):
            with torch.no_grad():
                inputs = self.data_collator.model_inputs(inputs)
        return inputs

    def _forward(self, model: torch.nn.Module, inputs: dict[str, Any]) -> Any:
        """The model's forward, compiled when asked; the first failure to compile falls back to eager
        for the rest of the run (with a warning), so a compiler problem never stops training."""
        if self.compile_forward and self._compiled is None:
            import torch._dynamo

            torch._dynamo.config.suppress_errors = True  # a graph that fails to compile runs eagerly
            self._compiled = torch.compile(model)
        if self.compile_forward:
            try:
                return self._compiled(**inputs)
            except Exception as error:  # any compiler error: train on, uncompiled
                logger.warning("torch.compile failed (%s: %s); training eagerly", type(error).__name__, error)
                self.compile_forward, self._compiled = False, None
        return model(**inputs)

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        if self.gather_negatives and self.args.world_size > 1:
            outputs = self._forward(model, {**inputs, "return_loss": False})
            core = self.accelerator.unwrap_model(model)
            loss = global_siglip_loss(
                outputs.image_embeds.float(), outputs.text_embeds.float(), core.logit_scale, core.logit_bias
            )
        else:
            outputs = self._forward(model, {**inputs, "return_loss": True})
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
        seconds = metrics.get("eval/seconds")
        took = f" ({seconds:.2f} s)" if isinstance(seconds, int | float) else ""
        self.reporter.info(f"eval at step {state.global_step}{took}: {summary}")
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
