"""One item per group per epoch; the collator draws a caption and a member image for each.

Drawing at collate time means every epoch sees a different caption/image of each group, while a
group is still only once in a batch, so size/style variants are never each other's negatives.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, get_worker_info
from transformers import PreTrainedTokenizerBase, Siglip2ImageProcessorPil

from icon_pipeline.dataset.augment import AugmentConfig, augment
from icon_pipeline.model.checkpoint import EncoderBundle, encode_images, encode_texts
from icon_pipeline.model.training.data import DecodedImages, TrainGroup, TrainingData


class GroupDataset(Dataset):
    """Index -> group index; the sampler (seeded, sharded per rank by the Trainer) does the rest."""

    def __init__(self, groups: Sequence[TrainGroup]):
        self.groups = list(groups)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> dict[str, int]:
        return {"group_index": index}


class PairCollator:
    """Builds a SigLIP batch: one random caption + one augmented member image per group."""

    def __init__(
        self,
        groups: Sequence[TrainGroup],
        images: DecodedImages,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Siglip2ImageProcessorPil,
        max_length: int,
        max_num_patches: int,
        augmentation: AugmentConfig,
        seed: int,
        rank: int = 0,
        text_padding: str = "max_length",
    ):
        self.groups = list(groups)
        self.images = images
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.max_length = max_length
        self.max_num_patches = max_num_patches
        self.augmentation = augmentation
        self.seed = seed
        self.rank = rank
        self.text_padding = text_padding
        self.calls = 0  # per process (each dataloader worker has its own copy)

    @classmethod
    def for_bundle(
        cls, data: TrainingData, bundle: EncoderBundle, augmentation: AugmentConfig, seed: int, rank: int = 0
    ) -> PairCollator:
        """Batches for `bundle`'s model, with the tokenizer and image processing it was saved with."""
        return cls(
            data.groups,
            data.images,
            bundle.tokenizer,
            bundle.image_processor,
            bundle.max_length,
            bundle.max_num_patches,
            augmentation,
            seed=seed,
            rank=rank,
            text_padding=bundle.text_padding,
        )

    def _rng(self) -> random.Random:
        worker = get_worker_info()
        worker_id = worker.id if worker is not None else -1
        self.calls += 1
        # A string seed is hashed deterministically (sha512) by random.Random.
        return random.Random(f"{self.seed}:{self.rank}:{worker_id}:{self.calls}")

    def pick(self, group_indices: Sequence[int], rng: random.Random) -> tuple[list[str], list[Any]]:
        captions, images = [], []
        for index in group_indices:
            group = self.groups[index]
            captions.append(rng.choice(group.captions))
            image = self.images.image(rng.choice(group.image_rows))
            images.append(augment(image, self.augmentation, rng))
        return captions, images

    def __call__(self, items: Sequence[dict[str, int]]) -> dict[str, Any]:
        rng = self._rng()
        captions, images = self.pick([item["group_index"] for item in items], rng)
        batch: dict[str, Any] = {}
        batch.update(encode_texts(self.tokenizer, captions, self.max_length, self.text_padding))
        batch.update(encode_images(self.image_processor, images, self.max_num_patches))
        batch["return_loss"] = True  # Siglip2Model only computes its loss when asked
        return batch


def batch_pairs(batch: dict[str, Any]) -> int:
    return int(torch.as_tensor(batch["input_ids"]).shape[0])
