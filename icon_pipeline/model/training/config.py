"""The training job's configuration: one JSON file, written by the Dagster asset (or by hand).

Only the standard library here: the job must run where only torch, transformers, pillow,
pyarrow and dagster-pipes are installed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icon_pipeline.dataset.augment import AugmentConfig

if TYPE_CHECKING:  # the job itself never imports the pipeline config (pydantic, yaml)
    from icon_pipeline.core.config import PipelineConfig


class TrainConfigError(ValueError):
    """A configuration or input that makes training impossible; raised before any step runs."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything one fine-tuning run needs. Paths may be relative to the config file."""

    base_checkpoint: str  # our checkpoint dir, any HF Siglip2 dir, or a cached Hub id
    pairs_path: str  # parquet: group_id, captions list<str>, png_paths list<str>, split
    output_dir: str
    eval_path: str | None = (
        None  # frozen eval JSONL: eval_id, group_id, caption, icon_ids, representative_icon_id
    )
    eval_images_path: str | None = None  # icon_id -> png: parquet (icon_id, png_path) or JSON object
    eval_sha256: str | None = None  # the eval set version this run must evaluate on
    # The open icon corpus's groups (dataset/corpus.py): same columns; a group id that is also a
    # library group's joins it (its other sets' drawings become that group's positives).
    corpus_pairs_path: str | None = None
    # Where relative PNG paths in the pairs and eval image tables start (the pipeline's data root);
    # None: each table's own directory.
    images_root: str | None = None
    max_steps: int = -1  # > 0 wins over num_epochs
    num_epochs: float = 1.0
    per_device_batch_size: int = 64
    learning_rate: float = 5e-4
    warmup_steps: int = 0
    weight_decay: float = 0.1
    lr_scheduler: str = "cosine"
    max_grad_norm: float = 1.0
    seed: int = 0
    logging_steps: int = 10
    eval_every_steps: int = 0  # 0: evaluate only before and after training
    eval_batch_size: int | None = (
        None  # images per forward when evaluating; None: 1024 on a GPU, 128 on the CPU
    )
    save_every_steps: int = 500
    save_total_limit: int = 2
    max_num_patches: int | None = None  # None: the checkpoint's own; ours must match it exactly
    image_size: int = 224  # images are decoded once to this square size
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    gather_negatives: bool = False  # SigLIP loss over the global batch (all-gather) instead of the local one
    # The logit bias at step 0: "auto" sets -ln(global batch) on an untrained checkpoint (the SigLIP
    # recipe's -10 is -ln(32k), its own batch) and keeps a trained one's; a number always sets it;
    # "keep" never touches it.
    logit_bias: str | float = "auto"
    # Fit the vision head's last linear layer in closed form (ridge regression onto each group's
    # caption embeddings) before the first step: "auto" does it for an untrained checkpoint only.
    linear_probe: str = "auto"  # auto | on | off
    linear_probe_ridge: float = 0.1
    # Export the better, on the frozen eval set, of the linear probe's weights and the final ones.
    export_best: bool = True
    # Models with a frozen pretrained trunk (trunk_lit) train their heads on the trunk's features,
    # computed once: the visual head is a discriminant fitted in closed form with this ridge (a
    # share of the within-concept scatter's mean variance).
    discriminant_ridge: float = 0.01
    dataloader_workers: int | None = None  # None: 0 on the CPU, up to 8 per GPU (run.dataloader_workers)
    bf16: bool | None = None  # None: on when CUDA is available
    # GPU speed switches. None: on with CUDA, off on the CPU (where they would do nothing or cost).
    pin_memory: bool | None = None  # page-locked batches, copied to the GPU without blocking
    torch_compile: bool | None = None  # torch.compile the training forward; eager if compiling fails
    fused_adamw: bool | None = None  # AdamW's fused CUDA kernel (one launch for every parameter)
    tf32: bool | None = None  # TF32 tensor cores for what still runs in float32 (bf16 covers the rest)
    report_to: tuple[str, ...] = ("tensorboard",)
    resume: bool = True  # continue from the latest checkpoint-* in output_dir
    stop_after_steps: int | None = None  # stop (after saving) at this step, as an interruption would
    cache_dir: str | None = None  # decoded-image cache; default output_dir/cache

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base_dir: Path | None = None) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise TrainConfigError(
                f"unknown training config keys: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        missing = [name for name in ("base_checkpoint", "pairs_path", "output_dir") if not raw.get(name)]
        if missing:
            raise TrainConfigError(f"training config is missing {', '.join(missing)}")
        values = dict(raw)
        augmentation = values.get("augmentation") or {}
        if isinstance(augmentation, dict):
            try:
                values["augmentation"] = AugmentConfig.from_dict(augmentation)
            except ValueError as error:
                raise TrainConfigError(f"invalid training config: {error}") from None
        elif not isinstance(augmentation, AugmentConfig):
            raise TrainConfigError(f"augmentation must be an object, got {type(augmentation).__name__}")
        if "report_to" in values:
            report_to = values["report_to"]
            values["report_to"] = (report_to,) if isinstance(report_to, str) else tuple(report_to)
        if base_dir is not None:
            for key in (name for name in PATH_FIELDS if name != "base_checkpoint"):
                if values.get(key):
                    values[key] = str((base_dir / values[key]).resolve())
            # A relative base checkpoint is a local directory; "owner/name" stays a Hub id.
            checkpoint = str(values["base_checkpoint"])
            if checkpoint.startswith(".") or (base_dir / checkpoint).is_dir():
                values["base_checkpoint"] = str((base_dir / checkpoint).resolve())
        config = cls(**values)
        config.check()
        return config

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise TrainConfigError(f"training config {path} does not exist") from None
        except (OSError, ValueError) as error:
            raise TrainConfigError(f"training config {path} is not valid JSON: {error}") from error
        if not isinstance(raw, dict):
            raise TrainConfigError(f"training config {path} must hold a JSON object")
        return cls.from_dict(raw, base_dir=path.resolve().parent)

    def check(self) -> None:
        """Value checks that need no file access."""
        problems = []
        if self.per_device_batch_size < 2:
            problems.append(
                f"per_device_batch_size must be >= 2 (contrastive loss), got {self.per_device_batch_size}"
            )
        if self.max_steps <= 0 and self.num_epochs <= 0:
            problems.append("set max_steps > 0 or num_epochs > 0")
        if self.learning_rate <= 0:
            problems.append(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.max_num_patches is not None and self.max_num_patches < 1:
            problems.append(f"max_num_patches must be >= 1, got {self.max_num_patches}")
        if self.save_every_steps < 1 or self.logging_steps < 1 or self.eval_every_steps < 0:
            problems.append("save_every_steps and logging_steps must be >= 1, eval_every_steps >= 0")
        if bool(self.eval_path) != bool(self.eval_images_path):
            problems.append("eval_path and eval_images_path go together: set both or neither")
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            problems.append(f"eval_batch_size must be >= 1, got {self.eval_batch_size}")
        if self.image_size < 16:
            problems.append(f"image_size must be >= 16, got {self.image_size}")
        if self.linear_probe not in ("auto", "on", "off"):
            problems.append(f"linear_probe must be auto, on or off, got {self.linear_probe!r}")
        if self.discriminant_ridge <= 0:
            problems.append(f"discriminant_ridge must be > 0, got {self.discriminant_ridge}")
        if self.linear_probe_ridge <= 0:
            problems.append(f"linear_probe_ridge must be > 0, got {self.linear_probe_ridge}")
        if isinstance(self.logit_bias, str) and self.logit_bias not in ("auto", "keep"):
            try:
                float(self.logit_bias)
            except ValueError:
                problems.append(f"logit_bias must be auto, keep or a number, got {self.logit_bias!r}")
        if problems:
            raise TrainConfigError("invalid training config: " + "; ".join(problems))

    def on_cuda(self, name: str, use_cuda: bool) -> bool:
        """A GPU speed switch's value: as configured, or (None) on exactly when CUDA is used."""
        value = getattr(self, name)
        return use_cuda if value is None else bool(value) and use_cuda

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else Path(self.output_dir) / "cache"

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["report_to"] = list(self.report_to)
        return raw

    def write(self, path: str | Path) -> Path:
        """The config as JSON; written inside the data root (`images_root`), its paths there are stored
        relative to the file's folder (`load` resolves them), so a moved data root still reads."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = self.to_dict()
        root = self.images_root
        if root and _inside(path.parent, Path(root)):
            for name in PATH_FIELDS:
                if raw.get(name) and _inside(Path(raw[name]), Path(root)):
                    raw[name] = Path(os.path.relpath(raw[name], path.parent)).as_posix()
        path.write_text(json.dumps(raw, indent=2, sort_keys=True))
        return path


# The fields that name files or folders (the base checkpoint may be a Hub id instead).
PATH_FIELDS = (
    "base_checkpoint",
    "pairs_path",
    "corpus_pairs_path",
    "output_dir",
    "eval_path",
    "eval_images_path",
    "images_root",
    "cache_dir",
)


def _inside(path: Path, root: Path) -> bool:
    return path.is_absolute() and Path(os.path.abspath(path)).is_relative_to(os.path.abspath(root))


def relative_to_root(value: Any, root: str | Path | None) -> Any:
    """`value` with every absolute path inside `root` (the data root) made relative to it, through
    lists and dicts: what the run's records store, so that they name no old root once it moves."""
    if not root:
        return value
    if isinstance(value, dict):
        return {key: relative_to_root(item, root) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [relative_to_root(item, root) for item in value]
    if isinstance(value, str) and _inside(Path(value), Path(root)):
        return Path(os.path.relpath(value, root)).as_posix()
    return value


def train_config_from_pipeline(
    pipeline: PipelineConfig,
    *,
    base_checkpoint: str,
    pairs_path: str,
    output_dir: str,
    eval_path: str | None = None,
    eval_images_path: str | None = None,
    eval_sha256: str | None = None,
    images_root: str | None = None,
    corpus_pairs_path: str | None = None,
    cache_dir: str | None = None,
) -> TrainConfig:
    """The training job's config from icon_pipeline.yaml: every `training:` setting under its own
    name (augmentation whole), the patch budget from `model:`, and the inputs and output given."""
    settings = pipeline.training
    carried = {name: getattr(settings, name) for name in type(settings).model_fields}
    return TrainConfig(
        **carried,
        max_num_patches=pipeline.model.max_num_patches,
        base_checkpoint=base_checkpoint,
        pairs_path=pairs_path,
        output_dir=output_dir,
        eval_path=eval_path,
        eval_images_path=eval_images_path,
        eval_sha256=eval_sha256,
        images_root=images_root,
        corpus_pairs_path=corpus_pairs_path,
        cache_dir=cache_dir,
    )
