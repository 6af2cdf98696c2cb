"""The embedded default's image-text model: a pretrained image trunk and the locked sentence encoder.

`TrunkLiTModel` has the interface every SigLIP2 checkpoint of the project has (`get_image_features` /
`get_text_features` returning `.pooler_output`, a SigLIP loss with `return_loss=True`, `logit_scale`,
`logit_bias`), takes the same SigLIP2 processor output, is saved as a Hugging Face directory and
reloads offline with `from_pretrained` (registered with the Auto classes). So the index, search,
the benchmark and the training job use it like any other checkpoint.

Image side: each drawing framed to its ink (trunk.frame_drawings), EfficientNet-Lite0 (pretrained,
frozen) at `trunk_image_size`, its last feature map pooled to a `pool_grid` x `pool_grid` grid (where
a shape is matters: 2x2 pooling measured R@1 0.364 against 0.282 for one global pool on the
corpus's held-out drawings), then two heads:

- **semantic** (`semantic_head`, an MLP): trained with the SigLIP loss against the locked text tower
  on the library's captions and the corpus's names, so text queries find drawings (measured better
  than a linear head fitted in closed form onto the concepts' caption vectors, on every external
  slice: docs/search_quality.md);
- **visual** (`visual_projection`, linear): a discriminant fitted in closed form so that drawings of
  one concept by different sets lie together (between-concept over within-concept scatter).

The image embedding is both, each unit length, weighed `visual_share`:
`[sqrt(1 - s) * semantic, sqrt(s) * visual]`. A text embedding is `[semantic, 0]`: text-to-image
scores are the semantic head's alone, and image-to-image scores mix concept and drawing, which finds
another set's drawing of a concept better than either head (docs/search_quality.md).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, BertConfig, BertModel, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.siglip2.modeling_siglip2 import Siglip2Output

from icon_pipeline.model.locked_text import init_text_projection
from icon_pipeline.model.sentence_encoder import mean_pool
from icon_pipeline.model.trunk import TRUNK_CHANNELS, TRUNK_NAME, frame_drawings, new_trunk, unpatchify


class TrunkLiTConfig(PreTrainedConfig):
    """The sentence encoder's BERT config and the image side's geometry."""

    model_type = "icon_pipeline_trunk_lit"
    sub_configs_defaults = {"text_config": BertConfig}

    text_config: dict | PreTrainedConfig | None = None
    trunk: str = TRUNK_NAME
    trunk_image_size: int = 96
    pool_grid: int = 2
    patch_size: int = 16  # the SigLIP2 processor's patches the pixels arrive in
    head_hidden: int = 1024
    semantic_dim: int = 384
    visual_dim: int = 512
    visual_share: float = 0.7

    @property
    def pooled_dim(self) -> int:
        return TRUNK_CHANNELS * self.pool_grid**2

    @property
    def embedding_dim(self) -> int:
        return self.semantic_dim + self.visual_dim


class TrunkLiTModel(PreTrainedModel):
    """Frozen pretrained trunk + semantic and visual heads; locked sentence encoder + text projection."""

    config_class = TrunkLiTConfig
    config: TrunkLiTConfig
    base_model_prefix = "trunk_lit"
    main_input_name = "pixel_values"
    _supports_sdpa = True

    def __init__(self, config: TrunkLiTConfig):
        super().__init__(config)
        pooled = config.pooled_dim
        self.trunk = new_trunk()
        self.register_buffer("feature_mean", torch.zeros(pooled))
        self.register_buffer("feature_std", torch.ones(pooled))
        self.semantic_head = nn.Sequential(
            nn.Linear(pooled, config.head_hidden),
            nn.GELU(),
            nn.Linear(config.head_hidden, config.semantic_dim),
        )
        self.visual_projection = nn.Linear(pooled, config.visual_dim)
        self.text_model = BertModel._from_config(config.text_config, add_pooling_layer=False)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.semantic_dim)
        self.logit_scale = nn.Parameter(torch.zeros(1))
        self.logit_bias = nn.Parameter(torch.zeros(1))
        self.post_init()
        self.lock()

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    def lock(self) -> None:
        """No gradient for the trunk, the sentence encoder or the fitted visual projection
        (`from_pretrained` makes fresh parameters: call again)."""
        for module in (self.trunk, self.text_model, self.visual_projection):
            module.requires_grad_(False)

    def _init_weights(self, module: nn.Module) -> None:
        # The trunk and the text encoder bring their own weights; the text projection starts as the
        # identity when the widths match, so an untrained model scores text with the encoder's geometry.
        if module is getattr(self, "text_projection", None):
            init_text_projection(module)

    def train(self, mode: bool = True) -> TrunkLiTModel:
        super().train(mode)
        self.trunk.eval()  # frozen: batch norm keeps its ImageNet statistics
        self.text_model.eval()
        return self

    # --- image side ---------------------------------------------------------------------------

    def pooled_features(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (B, 3, H, W) -> the trunk's pooled feature grid (B, pooled_dim)."""
        framed = frame_drawings(images, self.config.trunk_image_size)
        framed = framed.contiguous(memory_format=torch.channels_last)  # ~1.4x faster on a CPU
        features = self.trunk.extract_features(framed)
        return nn.functional.adaptive_avg_pool2d(features, self.config.pool_grid).flatten(1)

    def trunk_fingerprint(self) -> str:
        """A digest of the trunk's weights and input geometry: equal for every checkpoint built on the
        same trunk (the base and its fine-tunes), so its features are computed once for all of them."""
        if getattr(self, "_fingerprint", None) is None:
            digest = hashlib.sha256(f"{self.config.trunk_image_size}:{self.config.pool_grid}".encode())
            for name, tensor in sorted(self.trunk.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().float().cpu().numpy().tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def semantic_embeddings(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.semantic_head((pooled - self.feature_mean) / self.feature_std)

    def embed_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled trunk features -> the image embedding (unit length): both heads, weighed."""
        share = self.config.visual_share
        semantic = nn.functional.normalize(self.semantic_embeddings(pooled), dim=-1)
        visual = nn.functional.normalize(self.visual_projection(pooled), dim=-1)
        return torch.cat([math.sqrt(1 - share) * semantic, math.sqrt(share) * visual], dim=-1)

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling:
        if pixel_values.dim() == 3:  # SigLIP2 NaFlex patches, as the processor gives them
            if spatial_shapes is None:
                raise ValueError("patchified pixel_values need spatial_shapes")
            pixel_values = unpatchify(pixel_values, spatial_shapes, self.config.patch_size)
        pooled = self.pooled_features(pixel_values)
        return BaseModelOutputWithPooling(
            last_hidden_state=pooled[:, None], pooler_output=self.embed_pooled(pooled)
        )

    # --- text side ----------------------------------------------------------------------------

    def sentence_embeddings(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The locked sentence encoder's unit vectors (what the captions channel stores too)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        with torch.no_grad():
            hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return nn.functional.normalize(mean_pool(hidden, attention_mask), dim=-1)

    def project_sentences(self, sentences: torch.Tensor) -> torch.Tensor:
        """Sentence vectors -> text embeddings: the semantic part, zeros where the visual part is."""
        semantic = self.text_projection(sentences)
        return torch.cat([semantic, semantic.new_zeros(semantic.shape[0], self.config.visual_dim)], dim=-1)

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> BaseModelOutputWithPooling:
        sentences = self.sentence_embeddings(input_ids, attention_mask)
        return BaseModelOutputWithPooling(
            last_hidden_state=sentences[:, None], pooler_output=self.project_sentences(sentences)
        )

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        return_loss: bool | None = None,
        **kwargs: Any,
    ) -> Siglip2Output:
        """The SigLIP loss of the semantic head against the text projection (what trains)."""
        if pixel_values.dim() == 3:
            pixel_values = unpatchify(pixel_values, spatial_shapes, self.config.patch_size)
        image_embeds = nn.functional.normalize(
            self.semantic_embeddings(self.pooled_features(pixel_values)), dim=-1
        )
        text_embeds = nn.functional.normalize(
            self.text_projection(self.sentence_embeddings(input_ids, attention_mask)), dim=-1
        )
        logits_per_text = text_embeds @ image_embeds.t() * self.logit_scale.exp() + self.logit_bias
        loss = siglip_loss(logits_per_text) if return_loss else None
        return Siglip2Output(
            loss=loss,
            logits_per_image=logits_per_text.t(),
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
        )


def siglip_loss(logits: torch.Tensor) -> torch.Tensor:
    """SigLIP's sigmoid loss over a square logit matrix whose diagonal holds the pairs."""
    labels = 2 * torch.eye(logits.size(0), device=logits.device) - 1
    return -nn.functional.logsigmoid(labels * logits).sum(dim=-1).mean()


# Known to the Auto classes, so these directories read offline like any other Hugging Face model.
AutoConfig.register(TrunkLiTConfig.model_type, TrunkLiTConfig)
AutoModel.register(TrunkLiTConfig, TrunkLiTModel)
