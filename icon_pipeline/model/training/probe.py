"""Before the first step: the logit bias from the global batch, and a closed-form linear probe.

Linear probe, then fine-tune (LP-FT): the vision tower's attention-pooling head ends in a linear
layer (`head.mlp.fc2`) added to the pooled attention output `a`:

    image_embedding = a + fc2(phi),   phi = the head MLP's hidden activations.

With the rest of the network fixed, the fc2 that best maps every training image onto its group's
caption embedding (the mean of the text tower's embeddings of the group's captions) is a ridge
regression, solved exactly in one pass over the images. On the embedded default (a whole-icon
SigLIP2 vision tower against the locked sentence encoder) this takes seconds on a CPU and is what
makes the model useful there: SGD on the same model for minutes does not get close.

Every rank computes the same fit from the same data and seed, so DDP starts from identical weights.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from icon_pipeline.model.checkpoint import EncoderBundle
from icon_pipeline.model.pixels import PatchGeometry
from icon_pipeline.model.training.data import TrainingData

PROBE_BATCH = 256


def initial_logit_bias(setting: str | float, trained: bool, global_batch: int) -> float | None:
    """The bias to set before training, or None to keep the checkpoint's."""
    if setting == "keep":
        return None
    if setting == "auto":
        return None if trained else -math.log(global_batch)
    return float(setting)


def wants_linear_probe(setting: str, trained: bool) -> bool:
    return setting == "on" or (setting == "auto" and not trained)


def _vision_head(model: torch.nn.Module) -> torch.nn.Module:
    head = getattr(getattr(model, "vision_model", None), "head", None)
    if head is None or not hasattr(head, "mlp") or not hasattr(head, "layernorm"):
        raise ValueError(f"{type(model).__name__} has no attention-pooling vision head to probe")
    return head


def _group_targets(bundle: EncoderBundle, data: TrainingData) -> torch.Tensor:
    """One unit vector per group: the mean of its captions' text embeddings."""
    captions = sorted({caption for group in data.groups for caption in group.captions})
    row = {caption: i for i, caption in enumerate(captions)}
    embedded = bundle.embed_texts(captions)
    targets = np.stack([embedded[[row[c] for c in group.captions]].mean(axis=0) for group in data.groups])
    return torch.nn.functional.normalize(torch.from_numpy(targets).double(), dim=-1)


@torch.no_grad()
def fit_linear_probe(
    bundle: EncoderBundle, data: TrainingData, ridge: float, device: torch.device | None = None
) -> dict[str, Any]:
    """Set the vision head's last linear layer to the ridge solution; returns what it did. Runs on
    `device` (default: the model's): the cached images are patched there, the normal equations
    accumulate there in float64."""
    model = bundle.model
    device = device or bundle.device
    model.to(device)
    geometry = PatchGeometry.of(bundle.image_processor, bundle.max_num_patches)
    head = _vision_head(model)
    targets = _group_targets(bundle, data)
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        head.layernorm.register_forward_hook(lambda m, i, o: captured.__setitem__("a", i[0][:, 0])),
        head.mlp.fc2.register_forward_hook(lambda m, i, o: captured.__setitem__("phi", i[0][:, 0])),
    ]
    rows = [(row, index) for index, group in enumerate(data.groups) for row in group.image_rows]
    width = head.mlp.fc2.in_features + 1  # + the bias column
    gram = torch.zeros(width, width, dtype=torch.float64, device=device)
    cross = torch.zeros(width, head.mlp.fc2.out_features, dtype=torch.float64, device=device)
    targets = targets.to(device)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(rows), PROBE_BATCH):
            chunk = rows[start : start + PROBE_BATCH]
            image_rows = np.asarray([row for row, _ in chunk])
            pixels = torch.from_numpy(np.ascontiguousarray(data.images.array[image_rows])).to(device)
            model.get_image_features(**geometry.patchify(pixels))
            phi = captured["phi"].double()
            features = torch.cat([phi, torch.ones(len(chunk), 1, dtype=torch.float64, device=device)], dim=1)
            residual = targets[[index for _, index in chunk]] - captured["a"].double()
            gram += features.T @ features
            cross += features.T @ residual
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    solution = torch.linalg.solve(gram + ridge * torch.eye(width, dtype=torch.float64), cross)
    fc2 = head.mlp.fc2
    fc2.weight.copy_(solution[:-1].T.to(fc2.weight.dtype))
    fc2.bias.copy_(solution[-1].to(fc2.bias.dtype))
    return {"images": len(rows), "groups": len(data.groups), "features": width - 1, "ridge": ridge}
