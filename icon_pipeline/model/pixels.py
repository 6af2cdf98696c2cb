"""SigLIP2 NaFlex inputs from uint8 pixels, in torch and batched, on whatever device they are on.

What `Siglip2ImageProcessorPil` does one PIL image at a time (resize to the patch budget, rescale,
normalise, cut into patches, pad to `max_num_patches`), for a whole (B, H, W, 3) uint8 batch at
once: the training job's batches, its eval gallery and linear probe, and `encode_images` when the
images already have the processor's target size (then the result equals the processor's to float
rounding). Only a resize differs from the processor (torch's antialiased bilinear, not PIL's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


def target_size(height: int, width: int, patch_size: int, max_num_patches: int) -> tuple[int, int]:
    """The size the SigLIP2 processor resizes an image to: the largest multiple of the patch size
    (keeping the aspect) with at most `max_num_patches` patches (transformers'
    get_image_size_for_max_num_patches, the same bisection)."""

    def scaled(scale: float, size: int) -> int:
        return int(max(patch_size, math.ceil(size * scale / patch_size) * patch_size))

    low, high = 1e-6, 100.0
    while high - low >= 1e-5:
        scale = (low + high) / 2
        if (scaled(scale, height) / patch_size) * (scaled(scale, width) / patch_size) <= max_num_patches:
            low = scale
        else:
            high = scale
    return scaled(low, height), scaled(low, width)


@dataclass(frozen=True)
class PatchGeometry:
    """How a processor turns pixels into patches: its patch size, budget and normalisation."""

    patch_size: int
    max_num_patches: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    rescale: float = 1 / 255

    @classmethod
    def of(cls, image_processor: Any, max_num_patches: int) -> PatchGeometry:
        """The geometry of a Siglip2 image processor (ours or a pretrained one's saved config)."""

        def triple(value: Any, default: float) -> tuple[float, float, float]:
            values = [value] * 3 if isinstance(value, int | float) else list(value or [default] * 3)
            return (float(values[0]), float(values[1]), float(values[2]))

        normalize = getattr(image_processor, "do_normalize", True)
        return cls(
            patch_size=int(image_processor.patch_size),
            max_num_patches=int(max_num_patches),
            mean=triple(getattr(image_processor, "image_mean", 0.5), 0.5) if normalize else (0.0,) * 3,
            std=triple(getattr(image_processor, "image_std", 0.5), 0.5) if normalize else (1.0,) * 3,
            rescale=float(getattr(image_processor, "rescale_factor", 1 / 255))
            if getattr(image_processor, "do_rescale", True)
            else 1.0,
        )

    def patchify(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) float pixels in [0, 255] (or (B, H, W, 3) uint8) -> pixel_values (B,
        max_num_patches, p*p*3) float32, pixel_attention_mask (B, max_num_patches) int32 and
        spatial_shapes (B, 2), exactly as the processor lays them out."""
        if pixels.dtype == torch.uint8:
            pixels = pixels.permute(0, 3, 1, 2).float()
        batch, _, height, width = pixels.shape
        p = self.patch_size
        target_h, target_w = target_size(height, width, p, self.max_num_patches)
        if (target_h, target_w) != (height, width):
            pixels = F.interpolate(
                pixels, size=(target_h, target_w), mode="bilinear", antialias=True, align_corners=False
            ).clamp(0, 255)
        mean = torch.tensor(self.mean, device=pixels.device, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=pixels.device, dtype=torch.float32).view(1, 3, 1, 1)
        pixels = (pixels.float() * self.rescale - mean) / std
        rows, cols = target_h // p, target_w // p
        patches = pixels.reshape(batch, 3, rows, p, cols, p).permute(0, 2, 4, 3, 5, 1)
        patches = patches.reshape(batch, rows * cols, p * p * 3)
        mask = torch.ones(batch, self.max_num_patches, dtype=torch.int32, device=pixels.device)
        if rows * cols < self.max_num_patches:
            patches = F.pad(patches, (0, 0, 0, self.max_num_patches - rows * cols))
            mask[:, rows * cols :] = 0
        shapes = torch.tensor([[rows, cols]], device=pixels.device).expand(batch, 2).contiguous()
        return {"pixel_values": patches.contiguous(), "pixel_attention_mask": mask, "spatial_shapes": shapes}
