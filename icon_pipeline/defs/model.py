"""base_checkpoint and finetuned_checkpoint: the SigLIP2 encoder before and after fine-tuning."""

import hashlib
import json
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    Failure,
    MaterializeResult,
    MetadataValue,
    PipesSubprocessClient,
    asset,
)

from icon_pipeline.core.config import PipelineConfig, load_config
from icon_pipeline.core.storage import (
    EVAL_NAME,
    asset_path,
    data_root,
    frozen_file,
    icon_images_path,
    pairs_path,
    read_checkpoint_pointer,
    read_records,
    to_relative,
    write_checkpoint_pointer,
)
from icon_pipeline.defs.frozen import check_frozen
from icon_pipeline.defs.metadata import OWNERS, asset_tags, line_plot_markdown, rounded
from icon_pipeline.defs.resources.gpu import TorchrunResource
from icon_pipeline.model.checkpoint import build_base_checkpoint, load_checkpoint, pretrained_reference
from icon_pipeline.model.training.config import TrainConfig, train_config_from_pipeline
from icon_pipeline.model.training.data import sha256_file
from icon_pipeline.search.channels import BASE_MODEL, FINETUNED_MODEL

PROBE_CAPTIONS = ["hide layer", "create new folder", "external link", "document properties"]


@asset(
    group_name="model",
    kinds={"pytorch"},
    deps=["training_pairs"],
    owners=OWNERS,
    tags=asset_tags("model", "train"),
)
def base_checkpoint(context: AssetExecutionContext) -> MaterializeResult:
    """A pretrained SigLIP2 (model.base_model, loaded offline) or, by default, an untrained one built
    from a config: a SigLIP2 vision tower against the locked packaged sentence encoder (LiT), or with
    `model.text_tower: own` a whole SigLIP2 with a tokenizer trained on the training captions."""
    config = load_config().model
    if config.base_model:
        # Recorded with the configured patch budget, so fine-tuning, the index and search agree.
        reference_dir = asset_path("pretrained_reference")
        path = str(pretrained_reference(reference_dir, config.base_model, config.max_num_patches))
        model_id = config.base_model
    else:
        captions = [c for row in read_records(pairs_path(), "training_pairs") for c in row["captions"]]
        out_dir = asset_path("base_checkpoint", size=config.size)
        path = str(
            build_base_checkpoint(
                out_dir,
                captions,
                size=config.size,
                seed=config.seed,
                vocab_size=config.vocab_size,
                max_num_patches=config.max_num_patches,
                text_tower=config.text_tower,
            )
        )
        model_id = f"base-{config.size}-{config.text_tower}"
    # Load it back as every later stage will: a broken or unloadable checkpoint stops here.
    bundle = load_checkpoint(path, max_num_patches=config.max_num_patches)
    tokenizer = bundle.tokenizer
    unknown = [c for c in PROBE_CAPTIONS if tokenizer.unk_token_id in tokenizer(c)["input_ids"]]
    parameters = sum(p.numel() for p in bundle.model.parameters())
    write_checkpoint_pointer(BASE_MODEL, path=path, model_id=model_id)
    return MaterializeResult(
        metadata={
            "model_id": model_id,
            "path": MetadataValue.path(path),
            "size": config.size if not config.base_model else "pretrained",
            "text_tower": config.text_tower if not config.base_model else "pretrained",
            "parameters": parameters,
            "embedding_dim": bundle.dim,
            "vocab_size": len(tokenizer),
            "max_num_patches": bundle.max_num_patches,
            "probe_captions_with_unknown_tokens": MetadataValue.json(unknown),
        }
    )


def _fingerprint(path: Path) -> list[tuple[str, str]]:
    """Content hashes (not mtimes): a rebuilt but identical base or pairs table is the same input."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [
        (str(f.relative_to(path) if path.is_dir() else f.name), sha256_file(f)) for f in files if f.exists()
    ]


# TrainConfig fields that hold paths: hashed in their persisted (data-root-relative) form.
TRAIN_PATH_FIELDS = (
    "base_checkpoint",
    "pairs_path",
    "corpus_pairs_path",
    "eval_path",
    "eval_images_path",
    "images_root",
    "cache_dir",
)


def _corpus_pairs() -> str | None:
    """The corpus's training groups, when corpus_pairs wrote any (corpus.sets may be empty)."""
    path = asset_path("corpus_pairs")
    if not path.exists() or not read_records(path, "corpus_pairs"):
        return None
    return str(path)


def finetune_train_config(
    config: PipelineConfig, base_checkpoint: str, eval_path: Path, eval_sha256: str
) -> TrainConfig:
    """The training job's config for this pipeline config, without its output dir (see
    finetune_run_key). Paths are absolute under the current data root; the pairs' and eval image
    table's relative PNG paths resolve against `images_root`, the data root."""
    return train_config_from_pipeline(
        config,
        base_checkpoint=base_checkpoint,
        pairs_path=str(pairs_path()),
        output_dir="",  # set once the inputs' fingerprint is known
        eval_path=str(eval_path),
        eval_images_path=str(icon_images_path()),
        images_root=str(data_root()),
        eval_sha256=eval_sha256,
        corpus_pairs_path=_corpus_pairs(),
        cache_dir=str(asset_path("training_cache")),  # decoded images and trunk features, across runs
    )


def finetune_run_key(train: TrainConfig, world_size: int) -> str:
    """Same inputs, settings and world size: same key (so a killed run resumes from its last
    checkpoint); anything changed (another base, data set, or global batch): a fresh key. Paths
    enter relative to the data root, so moving the data root keeps the key."""
    settings = train.to_dict()
    settings.pop("output_dir", None)
    for name in TRAIN_PATH_FIELDS:
        if settings.get(name):
            settings[name] = to_relative(settings[name])
    inputs = json.dumps(
        [
            settings,
            _fingerprint(Path(train.base_checkpoint)),
            _fingerprint(Path(train.pairs_path)),
            _fingerprint(Path(train.corpus_pairs_path)) if train.corpus_pairs_path else None,
            {"world_size": world_size},
        ],
        default=str,
    )
    return hashlib.sha256(inputs.encode()).hexdigest()[:12]


@asset(
    owners=OWNERS,
    tags=asset_tags("model", "train"),
    group_name="model",
    kinds={"pytorch"},
    deps=[base_checkpoint, "training_pairs", "eval_set", "corpus_pairs"],
    op_tags={"icon_pipeline/gpu": "1"},  # the queued run coordinator runs one GPU job at a time
)
def finetuned_checkpoint(context: AssetExecutionContext, torchrun: TorchrunResource) -> MaterializeResult:
    """The image-text model fine-tuned on the grouped pairs and the open icon corpus (corpus_pairs) by a
    torchrun job launched through Dagster Pipes. Scale out by changing only the `torchrun` resource
    config (processes, nodes, GPUs)."""
    config = load_config()
    base = read_checkpoint_pointer(BASE_MODEL, "base_checkpoint")
    eval_path = frozen_file(EVAL_NAME, config)
    ok, message = check_frozen(context.instance, "eval_set", eval_path)
    if not ok:
        raise Failure(description=f"eval set not usable for training: {message}")
    eval_sha256 = sha256_file(eval_path)  # equal to the frozen hash: check_frozen just checked it
    train = finetune_train_config(config, base["path"], eval_path, eval_sha256)
    run_key = finetune_run_key(train, torchrun.world_size)
    output_dir = asset_path("finetune_run", run_key=run_key)
    train = TrainConfig.from_dict({**train.to_dict(), "output_dir": str(output_dir)})
    config_path = train.write(output_dir / "train_config.json")
    context.log.info(
        f"training in {output_dir} ({torchrun.nproc_per_node} process(es) x {torchrun.nnodes} node(s), "
        f"global batch {train.per_device_batch_size * torchrun.world_size})"
    )
    result = torchrun.run(context, config_path, PipesSubprocessClient()).get_materialize_result()
    result = _readable_training_metadata(result, output_dir)
    write_checkpoint_pointer(
        FINETUNED_MODEL,
        path=str(output_dir / "model"),
        model_id=f"finetuned-{run_key}",
        run_dir=str(output_dir),
    )
    return result


def _readable_training_metadata(result: MaterializeResult, output_dir: Path) -> MaterializeResult:
    """What rank 0 reported through Pipes, floats rounded, plus the loss curve drawn as a plot and
    where its TensorBoard logs are (and the command that opens them)."""
    metadata = rounded(dict(result.metadata or {}))
    curve = metadata.get("loss_curve")
    points = [(float(step), float(loss)) for step, loss in (getattr(curve, "value", curve) or [])]
    plot = line_plot_markdown(points, "training loss", "loss")
    if plot is not None:
        metadata["loss_plot"] = plot
    # The directory rank 0 reported (transformers' TensorBoard callback writes there).
    reported = metadata.get("tensorboard_dir")
    logs = Path(str(getattr(reported, "value", reported) or output_dir / "tensorboard"))
    metadata["tensorboard_dir"] = MetadataValue.path(str(logs))
    metadata["tensorboard_command"] = MetadataValue.md(
        f"`tensorboard --logdir {logs.parent.parent}` (every fine-tuning run; this one: `{logs}`), "
        "then open http://localhost:6006"
    )
    return MaterializeResult(
        metadata=metadata,
        check_results=result.check_results,
        data_version=result.data_version,
        tags=result.tags,
    )
