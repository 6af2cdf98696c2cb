"""The training augmentation in torch, batched, on the job's device (the GPU's, or the CPU's).

The same steps as the PIL path (dataset/augment.py: `draw_augment` + `apply_augment`), drawn from
the same distributions, applied to a whole (B, H, W, 3) uint8 batch taken from the decoded-image
cache: crop (a window of `crop_scale` area share at a random place, resized back, bicubic), shift
(without wrap-around, uncovered pixels the background colour: the most common corner), downsample
(NEAREST to a random scale, upsampled back bicubic) and Gaussian blur (a radius in `blur_radius`).
Then `PatchGeometry.patchify` makes the model's NaFlex inputs. One code path on the CPU (tests, CI)
and the GPU; a seeded `torch.Generator` gives bit-identical batches on one device.

Differences from PIL that do not change what the model sees in distribution: torch's bicubic kernel
(a = -0.75; PIL's a = -0.5), a true Gaussian (PIL approximates it with box blurs), pixels kept as
floats between the steps (PIL rounds to uint8 after each); the shift's background colour is read
from the cropped image's corners, as PIL does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from icon_pipeline.dataset.augment import AugmentConfig, AugmentDraw
from icon_pipeline.model.pixels import PatchGeometry

DRAWS_PER_IMAGE = 11  # uniform numbers drawn per image, whatever the config (a fixed stream)


@dataclass(frozen=True)
class BatchDraws:
    """One row per image; the `crop`, `shift`, `downsample` and `blur` masks say which steps apply."""

    crop: torch.Tensor  # bool (B,)
    crop_box: torch.Tensor  # long (B, 4): left, top, width, height
    shift: torch.Tensor  # bool (B,)
    offset: torch.Tensor  # long (B, 2): dx, dy
    downsample: torch.Tensor  # bool (B,)
    scale: torch.Tensor  # float (B,)
    blur: torch.Tensor  # bool (B,)
    radius: torch.Tensor  # float (B,)

    def row(self, index: int) -> AugmentDraw:
        """Image `index`'s draw in the PIL path's terms."""
        return AugmentDraw(
            crop=tuple(int(v) for v in self.crop_box[index]) if self.crop[index] else None,  # type: ignore[arg-type]
            shift=tuple(int(v) for v in self.offset[index]) if self.shift[index] else None,  # type: ignore[arg-type]
            scale=float(self.scale[index]) if self.downsample[index] else None,
            blur_radius=float(self.radius[index]) if self.blur[index] else None,
        )

    @classmethod
    def from_draws(cls, draws: list[AugmentDraw], device: torch.device | str = "cpu") -> BatchDraws:
        """The PIL path's draws as a batch (to apply exactly the same augmentation in torch)."""
        return cls(
            crop=torch.tensor([d.crop is not None for d in draws], device=device),
            crop_box=torch.tensor([d.crop or (0, 0, 1, 1) for d in draws], device=device),
            shift=torch.tensor([d.shift is not None for d in draws], device=device),
            offset=torch.tensor([d.shift or (0, 0) for d in draws], device=device),
            downsample=torch.tensor([d.scale is not None for d in draws], device=device),
            scale=torch.tensor([d.scale or 1.0 for d in draws], device=device, dtype=torch.float64),
            blur=torch.tensor([d.blur_radius is not None for d in draws], device=device),
            radius=torch.tensor([d.blur_radius or 0.0 for d in draws], device=device, dtype=torch.float64),
        )


def _uniform_int(u: torch.Tensor, low: torch.Tensor | int, high: torch.Tensor | int) -> torch.Tensor:
    """An integer in [low, high] (both included, as random.randint) from u in [0, 1)."""
    span = torch.as_tensor(high, device=u.device) - torch.as_tensor(low, device=u.device) + 1
    return (torch.as_tensor(low, device=u.device) + torch.floor(u * span)).long()


def draw_augmentations(
    config: AugmentConfig, batch: int, size: tuple[int, int], generator: torch.Generator
) -> BatchDraws:
    """`batch` draws for images of `size` (width, height), from `generator` (on the batch's device)."""
    width, height = size
    u = torch.rand(batch, DRAWS_PER_IMAGE, generator=generator, device=generator.device, dtype=torch.float64)
    crop = u[:, 0] < config.p_crop
    area = config.crop_scale[0] + u[:, 1] * (config.crop_scale[1] - config.crop_scale[0])
    side = area.sqrt()
    crop_w = torch.clamp(torch.round(width * side), min=1).long()
    crop_h = torch.clamp(torch.round(height * side), min=1).long()
    left, top = _uniform_int(u[:, 2], 0, width - crop_w), _uniform_int(u[:, 3], 0, height - crop_h)
    shift = u[:, 4] < config.p_shift
    limit_x, limit_y = round(width * config.max_shift), round(height * config.max_shift)
    offset = torch.stack(
        [_uniform_int(u[:, 5], -limit_x, limit_x), _uniform_int(u[:, 6], -limit_y, limit_y)], dim=1
    )
    downsample = u[:, 7] < config.p_downsample
    scale = config.min_scale + u[:, 8] * (1.0 - config.min_scale)
    blur = u[:, 9] < config.p_blur
    low, high = config.blur_radius
    radius = low + u[:, 10] * (high - low)
    return BatchDraws(
        crop=crop,
        crop_box=torch.stack([left, top, crop_w, crop_h], dim=1),
        shift=shift,
        offset=offset,
        downsample=downsample,
        scale=scale,
        blur=blur,
        radius=radius,
    )


def _sample(pixels: torch.Tensor, x: torch.Tensor, y: torch.Tensor, mode: str) -> torch.Tensor:
    """Sample (B, C, H, W) at source pixel coordinates x (B, W') and y (B, H') (pixel centres at
    integers), edges clamped."""
    _, _, height, width = pixels.shape
    gx = ((x + 0.5) / width * 2 - 1).float()
    gy = ((y + 0.5) / height * 2 - 1).float()
    grid = torch.stack(
        [gx[:, None, :].expand(-1, gy.shape[1], -1), gy[:, :, None].expand(-1, -1, gx.shape[1])], dim=-1
    )
    return F.grid_sample(pixels, grid, mode=mode, padding_mode="border", align_corners=False)


def _crop(pixels: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Each image's window (left, top, width, height) resized back to the full size, bicubic."""
    _, _, height, width = pixels.shape
    box = box.to(torch.float64)
    xs = torch.arange(width, device=pixels.device, dtype=torch.float64)
    ys = torch.arange(height, device=pixels.device, dtype=torch.float64)
    x = box[:, 0:1] + (xs[None] + 0.5) * box[:, 2:3] / width - 0.5
    y = box[:, 1:2] + (ys[None] + 0.5) * box[:, 3:4] / height - 0.5
    return _sample(pixels, x, y, "bicubic")


def background(pixels: torch.Tensor) -> torch.Tensor:
    """(B, C) the most common of the four corner colours (the first corner on a tie), as PIL's path."""
    corners = torch.stack(
        [pixels[:, :, 0, 0], pixels[:, :, 0, -1], pixels[:, :, -1, 0], pixels[:, :, -1, -1]], dim=1
    )  # (B, 4, C)
    same = (corners[:, :, None, :] == corners[:, None, :, :]).all(dim=-1).sum(dim=-1)  # (B, 4)
    return corners[torch.arange(len(pixels), device=pixels.device), same.argmax(dim=1)]


def _shift(pixels: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Translate each image by (dx, dy) pixels; uncovered pixels take its background colour."""
    batch, channels, height, width = pixels.shape
    ys = torch.arange(height, device=pixels.device)[None] - offset[:, 1:2]  # source rows (B, H)
    xs = torch.arange(width, device=pixels.device)[None] - offset[:, 0:1]
    inside = ((ys >= 0) & (ys < height))[:, :, None] & ((xs >= 0) & (xs < width))[:, None, :]
    index = ys.clamp(0, height - 1)[:, :, None] * width + xs.clamp(0, width - 1)[:, None, :]
    moved = pixels.reshape(batch, channels, height * width).gather(
        2, index.reshape(batch, 1, height * width).expand(-1, channels, -1)
    )
    moved = moved.reshape(batch, channels, height, width)
    return torch.where(inside[:, None], moved, background(pixels)[:, :, None, None])


def _downsample_upsample(pixels: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """NEAREST down to round(side * scale) pixels, bicubic back up, each image its own scale.

    The small image lives in the top-left corner of a full-size buffer whose rows and columns past
    it repeat its last one, so one bicubic grid sample upsamples every image of the batch."""
    _, _, height, width = pixels.shape

    def nearest(side: int) -> tuple[torch.Tensor, torch.Tensor]:
        small = torch.clamp(torch.round(side * scale), min=1)  # (B,)
        step = (side / small)[:, None].expand(-1, side).clone()
        step[:, 0] = step[:, 0] * 0.5
        # PIL's NEAREST source column: a running sum of the step from half a step (a source exactly on
        # a pixel edge rounds as PIL's does), floored; past the small image its last column repeats.
        source = torch.floor(step.cumsum(dim=1)).clamp(max=side - 1).long()
        j = torch.minimum(torch.arange(side, device=pixels.device)[None], small.long()[:, None] - 1)
        return source.gather(1, j), small

    cols, small_w = nearest(width)
    rows, small_h = nearest(height)
    batch, channels = pixels.shape[:2]
    index = rows[:, :, None] * width + cols[:, None, :]
    buffer = pixels.reshape(batch, channels, height * width).gather(
        2, index.reshape(batch, 1, height * width).expand(-1, channels, -1)
    )
    buffer = buffer.reshape(batch, channels, height, width)
    xs = torch.arange(width, device=pixels.device, dtype=torch.float64)[None]
    ys = torch.arange(height, device=pixels.device, dtype=torch.float64)[None]
    x = (xs + 0.5) * small_w[:, None] / width - 0.5
    y = (ys + 0.5) * small_h[:, None] / height - 0.5
    return _sample(buffer, x, y, "bicubic")


def _blur(pixels: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """A separable Gaussian blur of standard deviation `radius` per image (edges replicated)."""
    batch, channels, height, width = pixels.shape
    half = max(1, math.ceil(3 * float(radius.max())))
    taps = torch.arange(-half, half + 1, device=pixels.device, dtype=torch.float32)
    sigma = radius.float().clamp(min=1e-3)[:, None]
    kernel = torch.exp(-0.5 * (taps[None] / sigma) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)  # (B*C, K)
    flat = pixels.reshape(1, batch * channels, height, width)
    flat = F.conv2d(
        F.pad(flat, (half, half, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=batch * channels
    )
    flat = F.conv2d(
        F.pad(flat, (0, 0, half, half), mode="replicate"), kernel[:, None, :, None], groups=batch * channels
    )
    return flat.reshape(batch, channels, height, width)


def apply_augmentations(images: torch.Tensor, draws: BatchDraws) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [0, 255], each image augmented as drawn."""
    pixels = images.permute(0, 3, 1, 2).float()
    steps = (
        (draws.crop, lambda x, keep: _crop(x, draws.crop_box[keep])),
        (draws.shift, lambda x, keep: _shift(x, draws.offset[keep])),
        (draws.downsample, lambda x, keep: _downsample_upsample(x, draws.scale[keep])),
        (draws.blur, lambda x, keep: _blur(x, draws.radius[keep])),
    )
    for mask, step in steps:
        # Only the images that take a step go through it (the others stay exact, and cost nothing).
        chosen = mask.nonzero().flatten()
        if len(chosen):
            pixels = pixels.index_copy(0, chosen, step(pixels[chosen], chosen).clamp(0, 255))
    return pixels


class BatchAugmenter:
    """Training and eval image inputs from uint8 batches, on the batches' device."""

    def __init__(self, augmentation: AugmentConfig, geometry: PatchGeometry):
        self.augmentation = augmentation
        self.geometry = geometry

    def train_inputs(self, images: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        """Augmented NaFlex inputs for (B, H, W, 3) uint8 images; `seed` fixes every draw."""
        generator = torch.Generator(device=images.device)
        generator.manual_seed(int(seed))
        draws = draw_augmentations(
            self.augmentation, len(images), (images.shape[2], images.shape[1]), generator
        )
        return self.geometry.patchify(apply_augmentations(images, draws))

    def eval_inputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unaugmented NaFlex inputs (the processor's numbers for images at its target size)."""
        return self.geometry.patchify(images)
