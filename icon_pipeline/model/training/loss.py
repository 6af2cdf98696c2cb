"""SigLIP sigmoid loss, local or over the global batch (all-gathered negatives).

transformers' Siglip2Model computes the loss over the local batch only, so under DDP each GPU
sees only its own negatives (checked against transformers 5.x). `gather_features` follows
open_clip's default: gather every rank's features without gradient, then put the local slice
back with its gradient, so each rank backpropagates the full global loss into its own
features. DDP then averages the per-rank gradients, which scales the true global gradient by
1/world_size, as in open_clip; Adam's update is invariant to that constant.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def siglip_loss(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor
) -> torch.Tensor:
    """Mean over texts of the summed pairwise sigmoid loss (big_vision's SigLIP, as in transformers).

    Embeddings must be L2-normalised; row i of each is a positive pair.
    """
    logits = text_embeds @ image_embeds.t() * logit_scale.exp() + logit_bias
    labels = 2 * torch.eye(logits.size(0), device=logits.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(labels * logits).sum(dim=-1).mean()


def gather_features(features: torch.Tensor) -> torch.Tensor:
    """All ranks' features concatenated in rank order; only the local slice carries gradient."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features
    gathered = [torch.zeros_like(features) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, features.detach().contiguous())
    gathered[dist.get_rank()] = features
    return torch.cat(gathered, dim=0)


def global_siglip_loss(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor
) -> torch.Tensor:
    """The SigLIP loss over every rank's pairs (equal local batch sizes required)."""
    return siglip_loss(gather_features(image_embeds), gather_features(text_embeds), logit_scale, logit_bias)
