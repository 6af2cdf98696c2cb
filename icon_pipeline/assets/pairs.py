"""training_pairs, eval_set and benchmark_queries: the data every later number depends on."""

import os

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from icon_pipeline.assets.captions import icon_captions
from icon_pipeline.assets.metadata import image_markdown, table
from icon_pipeline.captions import is_valid_phrase
from icon_pipeline.config import load_config
from icon_pipeline.evalset import OfflineParaphraser, Paraphraser, build_eval_set
from icon_pipeline.frozen import frozen_paths, read_frozen_jsonl, verify_frozen, write_frozen_jsonl
from icon_pipeline.grouping import Group, group_icons, grouping_metadata, split_groups
from icon_pipeline.lexicon import normalised_base_name
from icon_pipeline.queries import build_benchmark_queries, group_terms, summarize_queries
from icon_pipeline.rendering import preview_grid
from icon_pipeline.tables import (
    eval_dir,
    icon_images_path,
    pairs_path,
    read_all_batches,
    read_catalog,
    read_records,
    read_table,
    write_table,
)

EVAL_NAME = "eval_t2i_i2t"
QUERIES_NAME = "benchmark_queries"


def _valid_captions(captions: list[str]) -> list[str]:
    return [c for c in captions if is_valid_phrase(c)]


def load_groups() -> tuple[list[Group], dict[str, str], dict[str, str]]:
    records = read_records(pairs_path(), "training_pairs")
    groups = [Group.from_row(row) for row in records]
    split = {row["group_id"]: row["split"] for row in records}
    images = read_table(icon_images_path(), "icon images")
    return groups, split, dict(zip(images["icon_id"], images["png_path"], strict=True))


def _frozen_hash_check(name: str, version: int) -> AssetCheckResult:
    path, _ = frozen_paths(eval_dir(), name, version)
    ok, message = verify_frozen(path)
    return AssetCheckResult(passed=ok, description=message, metadata={"version": version, "path": str(path)})


@asset(group_name="dataset", kinds={"parquet"}, deps=[icon_captions])
def training_pairs(context: AssetExecutionContext) -> MaterializeResult:
    """Icons grouped by normalised base name and near-duplicate image, so variants of one icon are
    never each other's in-batch negatives; whole groups held out for the unseen-icon benchmark."""
    config = load_config().pairs
    icons = read_catalog()
    batches = sorted({i.batch_key for i in icons})
    captions_frame = read_all_batches("captions", batches)
    renders = read_all_batches("rendered", batches)
    png_of = {
        row.icon_id: row.png_path for row in renders.itertuples() if row.status != "failed" and row.png_path
    }
    # Icons a reviewer rejected (captions app) are left out of training altogether.
    rejected = (
        set(captions_frame.loc[captions_frame["rejected"].astype(bool), "icon_id"])
        if "rejected" in captions_frame
        else set()
    )
    captions = {
        row.icon_id: list(row.phrases)
        for row in captions_frame.itertuples()
        if not row.error and row.icon_id not in rejected
    }
    rows = [
        {
            "icon_id": i.icon_id,
            "name": i.name,
            "source": i.source,
            "style": i.style,
            "png_path": png_of[i.icon_id],
        }
        for i in icons
        if i.icon_id in png_of and i.icon_id not in rejected
    ]
    grouping = group_icons(
        rows,
        captions,
        base_name=normalised_base_name,
        phash_distance=config.phash_distance,
        max_pixel_diff=config.max_pixel_diff,
    )
    split = split_groups(grouping, heldout_share=config.heldout_share, seed=config.seed)
    table_rows = []
    for group in grouping.groups:
        row = group.to_row()
        row["png_paths"] = [png_of[m] for m in group.members]
        row["split"] = split[group.group_id]
        table_rows.append(row)
    frame = pd.DataFrame(table_rows)
    without_captions = frame[frame["captions"].map(len) == 0]
    if len(without_captions):
        context.log.warning(f"{len(without_captions)} group(s) have no captions and are left out of training")
    frame = frame[frame["captions"].map(len) > 0]
    if frame.empty:
        raise ValueError("no icon group has captions: check icon_captions' failures before building pairs")
    write_table(frame, pairs_path())
    write_table(
        pd.DataFrame({"icon_id": list(png_of), "png_path": list(png_of.values())}), icon_images_path()
    )

    meta = grouping_metadata(grouping, captions)
    largest = sorted(grouping.groups, key=lambda g: -g.size)[:6]
    grid_paths = [png_of[m] for g in largest for m in g.members[:8]]
    grid_labels = [f"{g.group_id[:7]} {m.split(':')[-1][:14]}" for g in largest for m in g.members[:8]]
    histogram = pd.DataFrame(
        sorted((int(k), v) for k, v in meta["size_histogram"].items()), columns=["group_size", "groups"]
    )
    return MaterializeResult(
        metadata={
            "icons": len(rows),
            "groups": len(frame),
            "heldout_groups": int((frame["split"] == "heldout").sum()),
            "groups_without_captions": len(without_captions),
            "rejected_icons": len(rejected),
            "pairs_before_grouping": meta.get("pairs_before", 0),
            "pairs_after_grouping": meta.get("pairs_after", 0),
            "name_edges": meta["name_edges"],
            "image_edges": meta["image_edges"],
            "group_size_histogram": table(histogram),
            "largest_groups": table(pd.DataFrame(meta["largest_groups"]).astype(str)),
            "largest_groups_preview": image_markdown(preview_grid(grid_paths, columns=8, labels=grid_labels)),
            "path": MetadataValue.path(str(pairs_path())),
        }
    )


def _paraphraser(kind: str) -> Paraphraser:
    if kind == "offline":
        return OfflineParaphraser.default()
    from icon_pipeline.captions.paraphrase import LLMParaphraser
    from icon_pipeline.resources.llm import text_server_url

    captions = load_config().captions
    base_url = text_server_url(captions, "eval.paraphraser")
    return LLMParaphraser(base_url, os.environ.get(captions.api_key_env), captions.text_model)


@asset(group_name="dataset", kinds={"jsonl"}, deps=[training_pairs])
def eval_set(context: AssetExecutionContext) -> MaterializeResult:
    """Unseen captions for a sample of training groups, frozen as versioned JSONL: written once,
    never overwritten; a new version needs a config change."""
    config = load_config().eval
    path, _ = frozen_paths(eval_dir(), EVAL_NAME, config.version)
    report_meta: dict = {}
    if path.exists():
        frozen = write_frozen_jsonl(eval_dir(), EVAL_NAME, config.version, read_frozen_jsonl(path))
        context.log.info(f"{path.name} exists and is frozen: reused as is")
    else:
        groups, split, _ = load_groups()
        rows, report = build_eval_set(
            groups,
            split,
            _paraphraser(config.paraphraser),
            n_groups=config.n_groups,
            per_group=config.per_group,
            threshold=config.threshold,
            max_retries=config.max_retries,
            seed=config.seed,
            allow_fewer=config.allow_fewer,
            validate=_valid_captions,
        )
        frozen = write_frozen_jsonl(eval_dir(), EVAL_NAME, config.version, rows)
        report_meta = {
            k: MetadataValue.json(v) if isinstance(v, dict | list) else v
            for k, v in report.to_metadata().items()
        }
    sample = pd.DataFrame(read_frozen_jsonl(frozen.path)[:30])
    columns = [
        c for c in ("caption", "nearest_training_caption", "max_train_similarity", "group_id") if c in sample
    ]
    return MaterializeResult(
        metadata={
            "version": config.version,
            "sha256": frozen.sha256,
            "rows": frozen.rows,
            "reused": frozen.reused,
            "path": MetadataValue.path(str(frozen.path)),
            "sample": table(sample[columns]),
            **report_meta,
        }
    )


@asset_check(asset=eval_set, name="eval_set_frozen_hash")
def eval_set_frozen_hash(context: AssetCheckExecutionContext) -> AssetCheckResult:
    """The eval file on disk is byte-for-byte what was frozen (hand edits and corruption fail)."""
    return _frozen_hash_check(EVAL_NAME, load_config().eval.version)


@asset(group_name="dataset", kinds={"jsonl", "png"}, deps=[eval_set])
def benchmark_queries(context: AssetExecutionContext) -> MaterializeResult:
    """Queries split evenly across text2img, semantic2img and img2img (degraded screenshots),
    each naming its relevant groups; frozen and versioned like the eval set."""
    config = load_config()
    settings = config.queries
    path, _ = frozen_paths(eval_dir(), QUERIES_NAME, settings.version)
    if path.exists():
        frozen = write_frozen_jsonl(eval_dir(), QUERIES_NAME, settings.version, read_frozen_jsonl(path))
        context.log.info(f"{path.name} exists and is frozen: reused as is")
    else:
        groups, split, images = load_groups()
        eval_path, _ = frozen_paths(eval_dir(), EVAL_NAME, config.eval.version)
        rows = build_benchmark_queries(
            groups,
            split,
            read_frozen_jsonl(eval_path),
            images,
            out_image_dir=eval_dir() / f"{QUERIES_NAME}.v{settings.version}",
            total=settings.total,
            seed=settings.seed,
            paraphraser=_paraphraser(config.eval.paraphraser),
            allow_fewer=settings.allow_fewer,
            # Version 2 on: a text query is relevant to every group carrying its source term.
            terms=group_terms(groups, {i.icon_id: i.tags for i in read_catalog()})
            if settings.version >= 2
            else None,
        )
        frozen = write_frozen_jsonl(eval_dir(), QUERIES_NAME, settings.version, rows)
    rows = read_frozen_jsonl(frozen.path)
    summary = summarize_queries(rows)
    examples = pd.DataFrame(rows).groupby("task").head(5)
    img2img = [r["image_path"] for r in rows if r["task"] == "img2img" and r.get("image_path")][:20]
    metadata = {
        "version": settings.version,
        "sha256": frozen.sha256,
        "rows": frozen.rows,
        "reused": frozen.reused,
        "summary": MetadataValue.json(summary),
        "examples": table(examples[["task", "text", "degradation", "heldout"]].fillna("")),
        "path": MetadataValue.path(str(frozen.path)),
    }
    if img2img:
        metadata["img2img_preview"] = image_markdown(
            preview_grid(
                img2img, columns=10, labels=[r["degradation"] for r in rows if r["image_path"] in img2img]
            )
        )
    return MaterializeResult(metadata=metadata)


@asset_check(asset=benchmark_queries, name="benchmark_queries_frozen_hash")
def benchmark_queries_frozen_hash(context: AssetCheckExecutionContext) -> AssetCheckResult:
    """The queries file on disk is byte-for-byte what was frozen."""
    return _frozen_hash_check(QUERIES_NAME, load_config().queries.version)
