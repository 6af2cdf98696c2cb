"""Training a frozen-trunk model's heads (trunk_lit): on the trunk's features, computed once.

The trunk never changes, so each image file passes through it once (features.py keeps its pooled
features across runs, for the index too). Then, on those features alone:

1. the feature statistics the semantic head standardises with;
2. the visual head: a linear discriminant fitted in closed form, whose directions maximise the
   scatter between concepts over the scatter within one (drawings of a concept by several sets,
   or variants of a library icon, are one concept);
3. the semantic head and the text projection: the SigLIP loss against the locked sentence encoder
   (its vectors computed once too), AdamW with warmup and cosine decay, each step a batch of
   distinct groups with one random caption and one random drawing each.

Evaluation uses the same cached features, so it costs milliseconds, not a pass over the gallery.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from icon_pipeline.model.training.config import TrainConfig, TrainConfigError
from icon_pipeline.model.training.data import (
    EvalRow,
    TrainGroup,
    merge_groups,
    read_eval_set,
    read_icon_paths,
    read_pairs,
)
from icon_pipeline.model.training.evaluation import evaluate_embeddings
from icon_pipeline.model.training.features import FEATURE_BATCH, trunk_features
from icon_pipeline.model.training.reporting import Reporter
from icon_pipeline.model.trunk_lit import TrunkLiTModel, siglip_loss

SENTENCE_BATCH = 256


def is_trunk_model(model: torch.nn.Module) -> bool:
    return isinstance(model, TrunkLiTModel)


@torch.inference_mode()
def sentence_vectors(
    model: TrunkLiTModel, tokenizer: Any, texts: Sequence[str], max_length: int
) -> np.ndarray:
    """The locked sentence encoder's unit vectors for `texts` (lowercased, as search embeds them)."""
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(texts), SENTENCE_BATCH):
        batch = [t.lower() for t in texts[start : start + SENTENCE_BATCH]]
        encoded = tokenizer(
            batch, padding="longest", truncation=True, max_length=max_length, return_tensors="pt"
        )
        vectors = model.sentence_embeddings(
            encoded["input_ids"].to(device), encoded["attention_mask"].to(device)
        )
        chunks.append(vectors.float().cpu().numpy())
    return (
        np.concatenate(chunks) if chunks else np.zeros((0, model.config.text_config.hidden_size), np.float32)
    )


def fit_discriminant(
    features: np.ndarray, labels: np.ndarray, dim: int, ridge: float
) -> tuple[np.ndarray, np.ndarray]:
    """(weight (dim, d), bias (dim,)) of a linear discriminant: the `dim` directions that maximise
    between-class over within-class scatter, the within-class scatter regularised by `ridge` times
    its mean variance. Classes of one sample add between-class scatter only.

    Solved as a symmetric eigenproblem after whitening the within-class scatter with its Cholesky
    factor, computing only the top `dim` eigenvectors (about 12 s at 5,120 features on 2 cores)."""
    from scipy import linalg

    x = features.astype(np.float32)
    mean = x.mean(axis=0)
    centred = x - mean
    if len(x) < x.shape[1]:
        # Fewer drawings than features (a small library): every direction that separates them lies
        # in their span, so solve there (a few hundred dimensions, not 5,120) and map back.
        _, _, basis = np.linalg.svd(centred, full_matrices=False)
        weight, _ = fit_discriminant(centred @ basis.T, labels, dim, ridge)
        projection = weight @ basis  # (dim, d)
        return projection.astype(np.float32), (-(projection @ mean)).astype(np.float32)
    classes = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=classes).astype(np.float32)
    means = np.zeros((classes, x.shape[1]), dtype=np.float32)
    np.add.at(means, labels, centred)
    means /= np.maximum(counts, 1)[:, None]
    within = centred - means[labels]
    scatter_within = (within.T @ within / len(x)).astype(np.float64)
    scatter_between = (means * counts[:, None]).T @ means / len(x)
    # A library of single drawings per concept has no within-class scatter at all: the ridge is
    # then a share of the features' overall variance instead.
    scale = np.trace(scatter_within) / x.shape[1] or float(centred.var(axis=0).mean()) or 1.0
    scatter_within += ridge * scale * np.eye(x.shape[1])
    factor = np.linalg.cholesky(scatter_within)
    inverse = linalg.solve_triangular(factor, np.eye(x.shape[1]), lower=True).astype(np.float32)
    whitened = inverse @ scatter_between @ inverse.T
    top = min(dim, x.shape[1])
    _, vectors = linalg.eigh(whitened, subset_by_index=[x.shape[1] - top, x.shape[1] - 1], driver="evr")
    projection = inverse.T @ vectors[:, ::-1]  # (d, dim), best direction first
    if top < dim:  # fewer features than asked: pad with zero directions
        projection = np.pad(projection, ((0, 0), (0, dim - top)))
    return projection.T.astype(np.float32), (-(mean @ projection)).astype(np.float32)


def _lr(step: int, config: TrainConfig, total: int) -> float:
    if config.warmup_steps and step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    if config.lr_scheduler == "constant_with_warmup":
        return config.learning_rate
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    if config.lr_scheduler == "linear":
        return config.learning_rate * max(0.0, 1 - progress)
    return config.learning_rate * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class HeadData:
    """Training groups whose image rows index `features` (the trunk's, one row per file)."""

    groups: list[TrainGroup]
    features: np.ndarray
    dropped_groups: list[str]  # groups whose every image was unreadable
    failures: dict[str, str]  # path -> reason


@dataclass
class EvalGallery:
    rows: list[EvalRow]
    sha256: str
    icon_ids: list[str]  # readable gallery icons
    features: np.ndarray  # their trunk features
    missing_icons: list[str]  # icons the eval set names without a readable image


def load_head_data(
    config: TrainConfig, model: TrunkLiTModel, reporter: Reporter
) -> tuple[HeadData, EvalGallery | None, float]:
    """The library's and the corpus's groups and the eval gallery, with the trunk's features of every
    image they name (each file once; the store keeps them across runs); and the seconds it took."""
    started = time.perf_counter()
    groups = read_pairs(config.pairs_path, config.images_root)
    if config.corpus_pairs_path:
        groups = merge_groups([*groups, *read_pairs(config.corpus_pairs_path, config.images_root)])
    eval_rows: list[EvalRow] = []
    gallery_paths: dict[str, str] = {}
    digest = ""
    if config.eval_path and config.eval_images_path:
        eval_rows, digest = read_eval_set(config.eval_path, config.eval_sha256)
        gallery_paths = read_icon_paths(config.eval_images_path, config.images_root)
    paths = sorted({p for _, _, pngs in groups for p in pngs} | set(gallery_paths.values()))

    def progress(done: int, total: int) -> None:
        if done == total or done % (FEATURE_BATCH * 40) == 0:
            reporter.info(f"trunk features: {done}/{total} images not seen before")

    features, failures = trunk_features(model, paths, config.cache_path, progress)
    row_of = {path: row for row, path in enumerate(paths)}
    train_groups, dropped = [], []
    for group_id, captions, pngs in groups:
        rows = tuple(row_of[p] for p in pngs if p not in failures)
        (train_groups.append(TrainGroup(group_id, captions, rows)) if rows else dropped.append(group_id))
    if len(train_groups) < 2:
        raise TrainConfigError(f"only {len(train_groups)} training group(s) have a readable image")
    gallery = None
    if eval_rows:
        readable = [i for i in sorted(gallery_paths) if gallery_paths[i] not in failures]
        wanted = {i for row in eval_rows for i in (*row.icon_ids, row.representative_icon_id)}
        gallery = EvalGallery(
            eval_rows,
            digest,
            readable,
            features[[row_of[gallery_paths[i]] for i in readable]],
            sorted(wanted - set(readable)),
        )
    return HeadData(train_groups, features, dropped, failures), gallery, time.perf_counter() - started


class HeadTrainer:
    """Everything `train_heads` needs between its steps: features, captions and the model."""

    def __init__(self, config: TrainConfig, model: TrunkLiTModel, tokenizer: Any, max_length: int):
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.device = next(model.parameters()).device

    def evaluate(self, eval_data: EvalGallery, caption_vectors: np.ndarray) -> dict[str, float]:
        """The frozen eval set's retrieval metrics from the gallery's trunk features (both directions)."""
        with torch.inference_mode():
            gallery = torch.from_numpy(eval_data.features).to(self.device)
            images = self.model.embed_pooled(gallery).float().cpu().numpy()
            texts = self.model.project_sentences(torch.from_numpy(caption_vectors).to(self.device))
            texts = torch.nn.functional.normalize(texts.float(), dim=-1).cpu().numpy()
        return evaluate_embeddings(
            texts,
            images,
            [row.icon_ids for row in eval_data.rows],
            [row.group_id for row in eval_data.rows],
            [row.representative_icon_id for row in eval_data.rows],
            eval_data.icon_ids,
        )


def train_heads(
    config: TrainConfig,
    model: TrunkLiTModel,
    tokenizer: Any,
    max_length: int,
    data: HeadData,
    eval_data: EvalGallery | None,
    reporter: Reporter,
    log_scalar: Callable[[str, float, int], None] | None = None,
) -> dict[str, Any]:
    """Fit the visual head, train the semantic head; returns what the report needs (loss curve,
    eval history, seconds, pairs/s). The model is changed in place."""
    trainer = HeadTrainer(config, model, tokenizer, max_length)
    features = data.features

    # Every (image row, group) pair; a drawing shared by two groups counts for both.
    pairs = [(row, index) for index, group in enumerate(data.groups) for row in group.image_rows]
    labels = np.array([index for _, index in pairs])
    train_features = features[[row for row, _ in pairs]]
    with torch.no_grad():
        model.feature_mean.copy_(torch.from_numpy(train_features.mean(axis=0)))
        model.feature_std.copy_(torch.from_numpy(train_features.std(axis=0) + 1e-3))
    fit_started = time.perf_counter()
    weight, bias = fit_discriminant(
        train_features, labels, model.config.visual_dim, config.discriminant_ridge
    )
    with torch.no_grad():
        model.visual_projection.weight.copy_(torch.from_numpy(weight))
        model.visual_projection.bias.copy_(torch.from_numpy(bias))
    reporter.info(
        f"visual head: discriminant over {len(data.groups)} concepts, {len(pairs)} drawings, "
        f"in {time.perf_counter() - fit_started:.1f} s"
    )

    captions = sorted({c for group in data.groups for c in group.captions})
    caption_row = {caption: i for i, caption in enumerate(captions)}
    eval_captions = [row.caption for row in eval_data.rows] if eval_data else []
    vectors = sentence_vectors(model, tokenizer, captions + eval_captions, max_length)
    train_vectors = torch.from_numpy(vectors[: len(captions)]).to(trainer.device)
    eval_vectors = vectors[len(captions) :]
    group_captions = [[caption_row[c] for c in group.captions] for group in data.groups]
    group_images = [list(group.image_rows) for group in data.groups]
    feature_tensor = torch.from_numpy(features).to(trainer.device)

    history: list[dict[str, Any]] = []
    if eval_data is not None:
        history.append({"step": 0, "phase": "visual_head", **trainer.evaluate(eval_data, eval_vectors)})
        reporter.info(
            "eval at step 0 (visual head fitted, semantic head untrained): " + _summary(history[-1])
        )

    steps = config.max_steps if config.max_steps > 0 else max(1, int(config.num_epochs * len(data.groups)))
    batch = min(config.per_device_batch_size, len(data.groups))
    bias_value = -math.log(batch) if config.logit_bias == "auto" else None
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        if bias_value is not None:
            model.logit_bias.fill_(bias_value)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    losses: list[tuple[int, float]] = []
    model.train()
    train_started = time.perf_counter()
    for step in range(1, steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = _lr(step - 1, config, steps)
        chosen = rng.sample(range(len(data.groups)), batch)
        image_rows = [rng.choice(group_images[i]) for i in chosen]
        text_rows = [rng.choice(group_captions[i]) for i in chosen]
        images = torch.nn.functional.normalize(model.semantic_embeddings(feature_tensor[image_rows]), dim=-1)
        texts = torch.nn.functional.normalize(model.text_projection(train_vectors[text_rows]), dim=-1)
        loss = siglip_loss(texts @ images.t() * model.logit_scale.exp() + model.logit_bias)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        if step == 1 or step % config.logging_steps == 0 or step == steps:
            losses.append((step, loss.item()))
            if log_scalar:
                log_scalar("train/loss", losses[-1][1], step)
            if step == 1 or step % (config.logging_steps * 10) == 0 or step == steps:
                reporter.info(
                    f"step {step}/{steps} loss {losses[-1][1]:.4f} lr {optimizer.param_groups[0]['lr']:.2e}"
                )
        if eval_data is not None and (
            (config.eval_every_steps and step % config.eval_every_steps == 0) or step == steps
        ):
            model.eval()
            history.append({"step": step, **trainer.evaluate(eval_data, eval_vectors)})
            model.train()
            reporter.info(f"eval at step {step}: " + _summary(history[-1]))
            if log_scalar:
                for name, value in history[-1].items():
                    if "@" in name:
                        log_scalar(f"eval/{name}", float(value), step)
    model.eval()
    train_seconds = time.perf_counter() - train_started
    return {
        "steps": steps,
        "global_batch_size": batch,
        "loss_curve": losses,
        "eval_history": history,
        "train_seconds": round(train_seconds, 3),
        "pairs_per_second": round(steps * batch / train_seconds, 2) if train_seconds > 0 else 0.0,
        "training_images": int(features.shape[0]),
        "training_groups": len(data.groups),
    }


def _summary(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if "@" in k)
