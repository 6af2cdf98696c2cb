"""LiT: a SigLIP2 vision tower trained against a locked, pretrained sentence encoder.

The embedded default's image-text model. Measured on the 2-core CPU (Tabler, the frozen v1
queries): a whole SigLIP2 trained from scratch for 10 minutes reaches text2img R@10 0.02, because a
text tower trained only on the captions knows no language beyond them and a ViT learns slowly on a
CPU. Here the text side is all-MiniLM-L6-v2 (text_encoder.py), frozen, with a trainable linear
projection; only the SigLIP2 vision tower and that projection learn.

`LockedTextSiglip2Model` has the interface the embedding, index and search code use for any
SigLIP2 checkpoint (`get_text_features` / `get_image_features` returning `.pooler_output`, a
SigLIP loss with `return_loss=True`, `logit_scale`, `logit_bias`, `vision_model`), is saved as a
Hugging Face directory and reloads offline with `LockedTextSiglip2Model.from_pretrained`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    BertConfig,
    BertModel,
    PreTrainedConfig,
    PreTrainedModel,
    Siglip2VisionConfig,
    Siglip2VisionModel,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.siglip2.modeling_siglip2 import Siglip2Output

from icon_pipeline.model.sentence_encoder import mean_pool


class LockedTextSiglip2Config(PreTrainedConfig):
    """A SigLIP2 vision config and the sentence encoder's BERT config."""

    model_type = "icon_pipeline_locked_text_siglip2"
    sub_configs_defaults = {"vision_config": Siglip2VisionConfig, "text_config": BertConfig}

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None


def init_text_projection(projection: nn.Linear) -> None:
    """The identity when the widths match (an untrained model scores text with the sentence
    encoder's own geometry), Xavier otherwise; no bias."""
    with torch.no_grad():
        if projection.weight.shape[0] == projection.weight.shape[1]:
            projection.weight.copy_(torch.eye(projection.weight.shape[0]))
        else:
            nn.init.xavier_uniform_(projection.weight)
        projection.bias.zero_()


class LockedTextSiglip2Model(PreTrainedModel):
    """SigLIP2 vision tower + locked BERT sentence encoder (mean pooled) + trainable text projection."""

    config_class = LockedTextSiglip2Config
    config: LockedTextSiglip2Config
    base_model_prefix = "locked_text_siglip2"
    main_input_name = "pixel_values"
    _supports_sdpa = True

    def __init__(self, config: LockedTextSiglip2Config):
        # transformers before 5.23 (5.17 in the GPU image) leaves the sub-configs as the dicts given.
        if isinstance(config.vision_config, dict):
            config.vision_config = Siglip2VisionConfig(**config.vision_config)
        if isinstance(config.text_config, dict):
            config.text_config = BertConfig(**config.text_config)
        super().__init__(config)
        self.vision_model = Siglip2VisionModel._from_config(config.vision_config)
        self.text_model = BertModel._from_config(config.text_config, add_pooling_layer=False)
        # The text tower's width is mapped onto the vision tower's: both embed into the same space.
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.vision_config.hidden_size)
        self.logit_scale = nn.Parameter(torch.zeros(1))
        self.logit_bias = nn.Parameter(torch.zeros(1))
        self.post_init()
        self.lock_text_tower()

    def lock_text_tower(self) -> None:
        """No gradient for the sentence encoder (`from_pretrained` makes fresh parameters: call again)."""
        self.text_model.requires_grad_(False)

    def _init_weights(self, module: nn.Module) -> None:
        # Sub-models initialise themselves; only the projection is ours. It starts as the identity
        # when the widths match, so an untrained model already scores text with the encoder's geometry.
        if module is getattr(self, "text_projection", None):
            init_text_projection(module)

    def train(self, mode: bool = True) -> LockedTextSiglip2Model:
        super().train(mode)
        self.text_model.eval()  # locked: no dropout, ever
        return self

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> BaseModelOutputWithPooling:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        with torch.no_grad():
            hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            pooled = mean_pool(hidden, attention_mask)
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden, pooler_output=self.text_projection(pooled)
        )

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling:
        return self.vision_model(
            pixel_values=pixel_values,
            pixel_attention_mask=pixel_attention_mask,
            spatial_shapes=spatial_shapes,
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
        image_embeds = self.get_image_features(
            pixel_values, pixel_attention_mask, spatial_shapes
        ).pooler_output
        text_embeds = self.get_text_features(input_ids, attention_mask).pooler_output
        image_embeds = nn.functional.normalize(image_embeds, dim=-1)
        text_embeds = nn.functional.normalize(text_embeds, dim=-1)
        logits_per_text = text_embeds @ image_embeds.t() * self.logit_scale.exp() + self.logit_bias
        loss = None
        if return_loss:
            # SigLIP's sigmoid loss, as transformers' Siglip2Model computes it.
            labels = 2 * torch.eye(logits_per_text.size(0), device=logits_per_text.device) - 1
            loss = -nn.functional.logsigmoid(labels * logits_per_text).sum(dim=-1).mean()
        return Siglip2Output(
            loss=loss,
            logits_per_image=logits_per_text.t(),
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
        )


# Known to the Auto classes, so AutoConfig/AutoModel/AutoTokenizer read these directories offline
# like any other Hugging Face model.
AutoConfig.register(LockedTextSiglip2Config.model_type, LockedTextSiglip2Config)
AutoModel.register(LockedTextSiglip2Config, LockedTextSiglip2Model)
