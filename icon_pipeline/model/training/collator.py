"""One item per group per epoch; the collator draws a caption and a member image for each.

Drawing at collate time means every epoch sees a different caption/image of each group, while a
group is still only once in a batch, so size/style variants are never each other's negatives.

The collator (in the dataloader's workers) only tokenises and gathers the drawn images' uint8
rows from the decoded-image cache, with a seed for their augmentation; the trainer augments and
patches them in torch on the job's device (augment_batch.py), after a (pinned, non-blocking) copy.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info
from transformers import PreTrainedTokenizerBase

from icon_pipeline.dataset.augment import AugmentConfig
from icon_pipeline.model.checkpoint import EncoderBundle, encode_texts
from icon_pipeline.model.pixels import PatchGeometry
from icon_pipeline.model.training.augment_batch import BatchAugmenter
from icon_pipeline.model.training.data import DecodedImages, TrainGroup, TrainingData

IMAGES_KEY = "images"  # (B, S, S, 3) uint8 rows of the decoded-image cache
AUGMENT_SEED_KEY = "augment_seed"
SEED_RANGE = 2**62


class GroupDataset(Dataset):
    """Index -> group index; the sampler (seeded, sharded per rank by the Trainer) does the rest."""

    def __init__(self, groups: Sequence[TrainGroup]):
        self.groups = list(groups)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> dict[str, int]:
        return {"group_index": index}


class PairCollator:
    """Builds a SigLIP batch: one random caption + one member image (uint8, augmented later on the
    device: `augmenter`) per group."""

    def __init__(
        self,
        groups: Sequence[TrainGroup],
        images: DecodedImages,
        tokenizer: PreTrainedTokenizerBase,
        geometry: PatchGeometry,
        max_length: int,
        augmentation: AugmentConfig,
        seed: int,
        rank: int = 0,
        text_padding: str = "max_length",
    ):
        self.groups = list(groups)
        self.images = images
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.augmenter = BatchAugmenter(augmentation, geometry)
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
            PatchGeometry.of(bundle.image_processor, bundle.max_num_patches),
            bundle.max_length,
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

    def pick(self, group_indices: Sequence[int], rng: random.Random) -> tuple[list[str], list[int]]:
        """A caption and an image row of each group."""
        captions, rows = [], []
        for index in group_indices:
            group = self.groups[index]
            captions.append(rng.choice(group.captions))
            rows.append(rng.choice(group.image_rows))
        return captions, rows

    def __call__(self, items: Sequence[dict[str, int]]) -> dict[str, Any]:
        rng = self._rng()
        captions, rows = self.pick([item["group_index"] for item in items], rng)
        batch: dict[str, Any] = {}
        batch.update(encode_texts(self.tokenizer, captions, self.max_length, self.text_padding))
        # Sorted rows read the memory-mapped cache in file order; the batch keeps the drawn order.
        order = np.argsort(rows, kind="stable")
        pixels = np.empty((len(rows), *self.images.array.shape[1:]), dtype=np.uint8)
        pixels[order] = self.images.array[np.asarray(rows)[order]]
        batch[IMAGES_KEY] = torch.from_numpy(pixels)
        batch[AUGMENT_SEED_KEY] = torch.tensor(rng.randrange(SEED_RANGE))
        batch["return_loss"] = True  # Siglip2Model only computes its loss when asked
        return batch

    def model_inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The model's inputs from a collated batch (on any device): its images augmented and patched
        there. The trainer calls this after moving the batch to the job's device."""
        batch = dict(batch)
        images, seed = batch.pop(IMAGES_KEY), batch.pop(AUGMENT_SEED_KEY)
        batch.update(self.augmenter.train_inputs(images, int(seed)))
        return batch


def batch_pairs(batch: dict[str, Any]) -> int:
    return int(torch.as_tensor(batch["input_ids"]).shape[0])
