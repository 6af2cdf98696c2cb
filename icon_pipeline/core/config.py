"""The `icon_pipeline.yaml` schema: which icon sources to read and how each stage behaves.

Errors name the file, the offending key path, its line, and what is allowed, so a typo in a
config never surfaces as a stack trace from deep inside a run.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from icon_pipeline.core.augmentation import AugmentConfig
from icon_pipeline.core.limits import DEFAULT_MAX_SVG_BYTES
from icon_pipeline.core.paths import get_paths


class ConfigError(ValueError):
    """A config file that cannot be used; the message is meant for the user as is."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# A source that cannot be read (a missing folder, Figma answering 429/403/500): "fail" stops
# icon_catalog with the reason and changes nothing; "keep" goes on with the source's icons from the
# last good scan, marked stale. Never: a catalog that silently lost the source's icons.
OnFailure = Literal["fail", "keep"]


class TablerSource(_Strict):
    kind: Literal["tabler"]
    on_failure: OnFailure = "fail"
    name: str = "tabler"
    version: str = "3.51.0"
    styles: list[Literal["outline", "filled"]] = ["outline", "filled"]
    limit: int | None = Field(default=None, ge=1, description="take only the first N icons (tests)")


class LocalSource(_Strict):
    kind: Literal["local"]
    path: Path
    name: str | None = None
    on_failure: OnFailure = "fail"

    @property
    def source_name(self) -> str:
        return self.name or f"local-{self.path.name}"


class FigmaSource(_Strict):
    kind: Literal["figma"]
    file_keys: list[str] = Field(min_length=1)
    name: str = "figma"
    api_url: str = "https://api.figma.com"
    on_failure: OnFailure = "fail"


Source = Annotated[TablerSource | LocalSource | FigmaSource, Field(discriminator="kind")]


class RenderConfig(_Strict):
    size: int = Field(default=224, ge=16, le=1024)
    theme: Literal["light", "dark"] = "light"
    workers: int | None = Field(default=None, ge=1, description="processes; default: all cores")
    max_svg_bytes: int = Field(default=DEFAULT_MAX_SVG_BYTES, ge=1, description="larger SVGs are refused")
    timeout_s: float = 10.0
    max_failure_rate: float = Field(default=0.02, ge=0, le=1)


class CaptionsConfig(_Strict):
    """Which captioner writes the search phrases. `openai` is any OpenAI-compatible server (vLLM)."""

    captioner: Literal["offline", "openai"] = "offline"
    base_url: str | None = Field(default=None, description="text LLM server; env ICON_PIPELINE_LLM_BASE_URL")
    vision_base_url: str | None = Field(default=None, description="VLM server; default: base_url")
    api_key_env: str = Field(default="ICON_PIPELINE_LLM_API_KEY", description="env var holding the key")
    text_model: str = "openai/gpt-oss-120b"
    vision_model: str = "Qwen/Qwen3-VL-32B-Thinking"
    reasoning_effort: Literal["low", "medium", "high"] | None = "medium"
    min_text_tokens: int = Field(default=3, ge=0, description="fewer useful lexicon tokens: the VLM")
    max_concurrency: int = Field(default=8, ge=1)
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    max_regenerations: int = Field(default=2, ge=0)
    max_vision_share: float = Field(default=0.5, ge=0, le=1, description="check: share routed to the VLM")
    max_failure_rate: float = Field(default=0.02, ge=0, le=1)


class PairsConfig(_Strict):
    phash_distance: int = Field(default=4, ge=0, le=64)
    max_pixel_diff: float = Field(default=0.0025, ge=0, le=1)
    heldout_share: float = Field(default=0.1, ge=0, lt=1, description="whole groups never trained on")
    seed: int = 0


class EvalConfig(_Strict):
    """The frozen eval set: a new `version` is the only way to change it."""

    version: int = Field(default=1, ge=1)
    n_groups: int = Field(default=500, ge=1, description="a cap: a small library gives every group it has")
    per_group: tuple[int, int] = (3, 5)
    threshold: float = Field(default=0.8, gt=0, le=1, description="max similarity to a training caption")
    max_retries: int = Field(default=3, ge=0)
    seed: int = 0
    paraphraser: Literal["offline", "openai"] = "offline"


class QueriesConfig(_Strict):
    """The frozen benchmark queries. Version 2 judges text queries by source term (queries.py);
    version 1 files stay readable."""

    version: int = Field(default=2, ge=1)
    total: int = Field(default=2968, ge=3, description="a cap: a small library gets what it has")
    seed: int = 0


class ModelConfig(_Strict):
    """The base encoder: a pretrained SigLIP2 (a Hugging Face id in the local cache, or a
    directory) or, by default, one built from a config: a SigLIP2 vision tower of `size` against
    the locked pretrained sentence encoder (`text_tower: minilm`, LiT), or a whole SigLIP2 with a
    tokenizer trained on the captions (`text_tower: own`)."""

    base_model: str | None = Field(default=None, description="e.g. google/siglip2-base-patch16-naflex")
    size: Literal["effnet-lite0", "whole-icon-32", "tiny", "small", "base"] = "effnet-lite0"
    text_tower: Literal["minilm", "own"] = "minilm"
    vocab_size: int = Field(default=8000, ge=100, description="text_tower own: the tokenizer's vocabulary")
    max_num_patches: int | None = Field(
        default=None,
        ge=1,
        description="unset: the size's own (196 = 224 px at 16 px patches); a base_model is recorded with it",
    )
    seed: int = 0


class TrainingConfig(_Strict):
    """The fine-tuning settings. Every name here is a field of the training job's TrainConfig and is
    carried into it under that name (model.training.config.train_config_from_pipeline)."""

    max_steps: int = Field(default=300, ge=1)
    per_device_batch_size: int = Field(default=64, ge=2)
    learning_rate: float = Field(default=5e-4, gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    warmup_steps: int = Field(default=30, ge=0)
    weight_decay: float = Field(default=0.1, ge=0)
    eval_every_steps: int = Field(default=100, ge=0)
    save_every_steps: int = Field(default=100, ge=1)
    gather_negatives: bool = False
    logit_bias: Literal["auto", "keep"] | float = Field(
        default="auto", description="auto: -ln(global batch) on an untrained model, a trained one's kept"
    )
    linear_probe: Literal["auto", "on", "off"] = Field(
        default="auto", description="closed-form fit of the vision head first; auto: untrained models only"
    )
    linear_probe_ridge: float = Field(default=0.1, gt=0)
    export_best: bool = Field(default=True, description="export the linear probe if fine-tuning did worse")
    discriminant_ridge: float = Field(
        default=0.01, gt=0, description="trunk models: ridge of the visual head's closed-form discriminant"
    )
    dataloader_workers: int | None = Field(
        default=None, ge=0, description="unset: none on the CPU, up to 8 per GPU (the cores allow)"
    )
    augmentation: AugmentConfig = Field(
        default_factory=AugmentConfig, description="carried whole into the training job's config"
    )
    eval_batch_size: int | None = Field(
        default=None, ge=1, description="unset: 1024 on a GPU, 128 on the CPU"
    )
    # GPU speed switches (unset: on with CUDA, off on the CPU); see configs/gpu-small.yaml.
    bf16: bool | None = None
    pin_memory: bool | None = None
    torch_compile: bool | None = Field(
        default=None, description="compile the training forward (eager on failure)"
    )
    fused_adamw: bool | None = None
    tf32: bool | None = None
    seed: int = 0


class IndexConfig(_Strict):
    extra_models: dict[str, str] = Field(default_factory=dict, description="model id -> checkpoint dir")
    batch_size: int = Field(default=64, ge=1)
    hnsw_m: int = Field(default=16, ge=4)
    ef_construction: int = Field(default=64, ge=8)
    ef_search: int = Field(default=100, ge=1)
    resident_mb: int = Field(
        default=1024,
        ge=0,
        description="vectors a search server (API, search app) holds in memory, in all; larger tables "
        "are searched in PostgreSQL (HNSW). 0: none held",
    )


class CorpusConfig(_Strict):
    """Other open icon sets trained on (library/sources/icon_sets.py): their drawings with the names,
    aliases and tags people gave them teach the model concepts across drawing styles. None unless
    listed (the shipped icon_pipeline.yaml lists four)."""

    sets: list[str] = Field(
        default_factory=list,
        description="corpus sets trained on: mdi, iconoir, remixicon, material-symbols",
    )
    styles: dict[str, list[str]] = Field(
        default_factory=dict, description="set -> styles to read (default: the set's own default styles)"
    )
    fit_share: float = Field(
        default=0.2,
        ge=0,
        lt=1,
        description="share of the library concepts a corpus set also draws whose corpus drawings and names "
        "are held out of training and fit hybrid search instead (queries written by other people)",
    )
    limit: int | None = Field(
        default=None, ge=1, description="only the first N icon names of each set (tests)"
    )
    seed: int = 0

    @field_validator("sets")
    @classmethod
    def _known_corpus_sets(cls, sets: list[str]) -> list[str]:
        from icon_pipeline.core.icon_set_names import check_set_name

        for name in sets:
            check_set_name(name, role="corpus")  # refuses unknown, benchmark, Lucide and Feather sets
        return sets


class ExternalConfig(_Strict):
    """The external benchmark: other open icon sets' human tags and drawings as queries, matched to
    the library's icons by name and alias. Never trained on, fitted on, or used as vocabulary."""

    sets: list[str] = Field(default_factory=list, description="phosphor, fontawesome (none unless listed)")
    min_matches: int = Field(default=20, ge=1, description="a set matching fewer library icons is skipped")
    max_queries: int = Field(
        default=1500,
        ge=1,
        description="per set and query slice (all tags, novel tags, drawings): a seeded sample",
    )
    seed: int = 0

    @field_validator("sets")
    @classmethod
    def _known_benchmark_sets(cls, sets: list[str]) -> list[str]:
        from icon_pipeline.core.icon_set_names import check_set_name

        for name in sets:
            check_set_name(name, role="benchmark")
        return sets


class BatchingConfig(_Strict):
    icons_per_batch: int = Field(default=1000, ge=1)


class PipelineConfig(_Strict):
    sources: list[Source] = Field(min_length=1)
    batching: BatchingConfig = BatchingConfig()
    render: RenderConfig = RenderConfig()
    captions: CaptionsConfig = CaptionsConfig()
    pairs: PairsConfig = PairsConfig()
    eval: EvalConfig = EvalConfig()
    queries: QueriesConfig = QueriesConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    index: IndexConfig = IndexConfig()
    corpus: CorpusConfig = CorpusConfig()
    external: ExternalConfig = ExternalConfig()

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[Any]) -> list[Any]:
        names = [getattr(s, "source_name", None) or s.name for s in sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {', '.join(dupes)} (set `name:`)")
        return sources


def source_name(source: TablerSource | LocalSource | FigmaSource) -> str:
    return source.source_name if isinstance(source, LocalSource) else source.name


def source_identity(source: TablerSource | LocalSource | FigmaSource) -> str:
    """What makes a source the same library: where its icons come from, not how they are read."""
    if isinstance(source, TablerSource):
        return f"tabler:{source.name}:{source.version}:{','.join(source.styles)}:{source.limit}"
    if isinstance(source, LocalSource):
        return f"local:{source.source_name}:{source.path}"
    return f"figma:{source.name}:{source.api_url}:{','.join(sorted(source.file_keys))}"


def library_id(config: PipelineConfig) -> str:
    """The configured library as a folder name, `<source names>-<hash of their identities>`: the
    frozen eval and query sets of one library are never used for another."""
    identities = sorted(source_identity(s) for s in config.sources)
    digest = hashlib.sha256("\n".join(identities).encode()).hexdigest()[:10]
    names = "+".join(
        sorted(re.sub(r"[^a-z0-9]+", "-", source_name(s).lower()).strip("-") for s in config.sources)
    )
    return f"{names[:40]}-{digest}"


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _YamlLoader(yaml.SafeLoader):
    """A SafeLoader that refuses what safe_load lets through: a key given twice in one mapping
    (the later value silently won) and an alias inside its own anchor (a recursive structure that
    ended as a RecursionError deep inside validation)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._open_anchors: list[tuple[str, yaml.Mark]] = []  # anchors whose node is being composed

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        anchor = getattr(event, "anchor", None)
        if isinstance(event, yaml.AliasEvent):
            for name, mark in self._open_anchors:
                if name == anchor:
                    raise yaml.composer.ComposerError(
                        problem=f"self-referencing alias *{anchor} (inside its own anchor &{anchor} "
                        f"of line {mark.line + 1})",
                        problem_mark=event.start_mark,
                    )
            return super().compose_node(parent, index)
        if anchor is None:
            return super().compose_node(parent, index)
        self._open_anchors.append((anchor, event.start_mark))
        try:
            return super().compose_node(parent, index)
        finally:
            self._open_anchors.pop()

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], yaml.Mark] = {}
        for key, _ in node.value:
            # Keys merged in by `<<: *defaults` may be overridden: that is what merging is for.
            if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
                continue
            seen = first.get((key.tag, key.value))
            if seen is not None:
                raise yaml.composer.ComposerError(
                    problem=f"duplicate key {key.value!r} (first at line {seen.line + 1})",
                    problem_mark=key.start_mark,
                )
            first[(key.tag, key.value)] = key.start_mark
        return node


def _line_index(text: str) -> dict[tuple[Any, ...], int]:
    lines: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = (*path, key.value)
                walk(value, child)
                lines[child] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    root = yaml.compose(text, Loader=_YamlLoader)
    if root is not None:
        walk(root, ())
    return lines


def _describe(error: dict[str, Any], lines: dict[tuple[Any, ...], int], file: Path) -> str:
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p in {"tabler", "local", "figma"}))
    line = None
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in lines:
            line = lines[loc[:cut]]
            break
    key = ".".join(str(p) for p in loc) or "(top level)"
    message = error["msg"]
    if error["type"] == "union_tag_invalid":
        message = f"unknown source kind {error['input'].get('kind')!r}; allowed: tabler, local, figma"
    elif error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        message = "unknown key (check the spelling; see icon_pipeline/core/config.py for the schema)"
    where = f"{file}:{line}" if line else str(file)
    return f"{where}: {key}: {message}"


def load_yaml(text: str, file: Path) -> Any:
    """YAML as safe_load reads it, but a duplicate key or a self-referencing alias is a ConfigError
    naming the file, the line and why, as is any other YAML error. The one YAML reader for the
    pipeline config and the CLI's Dagster run config."""
    try:
        return yaml.load(text, Loader=_YamlLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else str(file)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    except RecursionError:  # thousands of nested brackets: Python's stack, not a recursive alias
        raise ConfigError(f"{file}: not valid YAML: nested too deeply") from None


EXTENDS_KEY = "extends"  # a profile: `extends: ../icon_pipeline.yaml`, then only what differs


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` over `base`: mappings merge key by key, anything else (a list too) replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _raw_config(text: str, file: Path, chain: tuple[Path, ...] = ()) -> Any:
    """The file's mapping, on top of the file it `extends` (if any), whose relative local source
    paths are made absolute first (they are relative to the file that names them)."""
    raw = load_yaml(text, file)
    if not isinstance(raw, dict) or EXTENDS_KEY not in raw:
        return raw
    raw = dict(raw)
    name = raw.pop(EXTENDS_KEY)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{file}: `{EXTENDS_KEY}` must name a config file, got {name!r}")
    base_file = (file.parent / name).resolve()
    if base_file in (*chain, file.resolve()):
        raise ConfigError(f"{file}: `{EXTENDS_KEY}: {name}` makes a loop ({base_file} extends back)")
    if not base_file.is_file():
        raise ConfigError(f"{file}: `{EXTENDS_KEY}: {name}`: {base_file} does not exist")
    base = _raw_config(base_file.read_text(encoding="utf-8"), base_file, (*chain, file.resolve()))
    if not isinstance(base, dict):
        raise ConfigError(f"{base_file}: expected a mapping (extended by {file})")
    for source in base.get("sources") or []:
        if isinstance(source, dict) and source.get("kind") == "local" and source.get("path"):
            source["path"] = str((base_file.parent / str(source["path"])).resolve())
    return _merge(base, raw)


def parse_config(text: str, file: Path) -> PipelineConfig:
    raw = _raw_config(text, file)
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: expected a mapping with a `sources:` list at the top level")
    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        lines = _line_index(text)
        details = "\n".join(_describe(e, lines, file) for e in exc.errors())
        raise ConfigError(f"invalid config {file}:\n{details}") from None
    base = file.parent
    # Relative local paths are relative to the config file, not to the working directory.
    sources = [
        s.model_copy(update={"path": (base / s.path).resolve()}) if isinstance(s, LocalSource) else s
        for s in config.sources
    ]
    return config.model_copy(update={"sources": sources})


def load_config(file: Path | None = None) -> PipelineConfig:
    file = file or get_paths().config_file
    if not file.exists():
        raise ConfigError(f"{file}: config file not found (set ICON_PIPELINE_CONFIG or create it)")
    return parse_config(file.read_text(encoding="utf-8"), file)
