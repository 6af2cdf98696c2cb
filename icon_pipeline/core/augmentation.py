"""The training augmentation settings, standard library only, on the bottom floor: the config
schema (core/config.py) validates them, and dataset/augment.py, which applies them, re-exports them."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class AugmentConfig:
    """The training augmentation settings, the only definition of them: `training.augmentation`
    in icon_pipeline.yaml (validated by pydantic as a nested field), the training job's JSON config
    (`TrainConfig.augmentation`) and the augmentation preview app all take this class whole.

    Crop and shift are on by default: a model trained with downsample and blur alone lost the
    img2img queries that include a crop to a raw-pixel baseline (16x16 grayscale, cosine).
    """

    p_downsample: float = 0.5
    min_scale: float = 0.25
    p_blur: float = 0.3
    blur_radius: tuple[float, float] = (0.5, 1.5)
    p_crop: float = 0.3
    crop_scale: tuple[float, float] = (0.7, 1.0)  # kept area share
    p_shift: float = 0.2
    max_shift: float = 0.1  # share of the side

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AugmentConfig:
        """From JSON (lists for the ranges); unknown keys and bad values raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(
                f"unknown augmentation keys: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in raw.items()})

    def __post_init__(self) -> None:
        for name in ("p_downsample", "p_blur", "p_crop", "p_shift"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must be a probability in [0, 1], got {value}")
        if not 0.0 < self.min_scale <= 1.0:
            raise ValueError(f"AugmentConfig.min_scale must be in (0, 1], got {self.min_scale}")
        low, high = self.blur_radius
        if not 0.0 <= low <= high:
            raise ValueError(
                f"AugmentConfig.blur_radius must be (low, high) with 0 <= low <= high, got {self.blur_radius}"
            )
        low, high = self.crop_scale
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(
                f"AugmentConfig.crop_scale must be (low, high) within (0, 1], got {self.crop_scale}"
            )
        if not 0.0 <= self.max_shift < 0.5:
            raise ValueError(f"AugmentConfig.max_shift must be in [0, 0.5), got {self.max_shift}")
