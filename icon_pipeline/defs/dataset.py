"""training_pairs, eval_set and benchmark_queries: the data every later number depends on."""

import os

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetExecutionContext,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from icon_pipeline.captions import is_valid_phrase
from icon_pipeline.core.config import library_id, load_config
from icon_pipeline.core.frozen import read_frozen_jsonl, write_frozen_jsonl
from icon_pipeline.core.storage import (
    EVAL_NAME,
    QUERIES_NAME,
    asset_path,
    for_writing,
    frozen_file,
    icon_images_path,
    pairs_path,
    read_all_batches,
    relative_rows,
    resolved_rows,
    write_table,
)
from icon_pipeline.dataset.evalset import OfflineParaphraser, Paraphraser, build_eval_set
from icon_pipeline.dataset.grouping import grouping_metadata, load_groups
from icon_pipeline.dataset.pairs import NoRendersError, build_training_pairs
from icon_pipeline.dataset.queries import build_benchmark_queries, group_terms, summarize_queries
from icon_pipeline.defs.frozen import frozen_hash_check, refuse_changed
from icon_pipeline.defs.metadata import OWNERS, asset_tags, image_markdown, rounded, table
from icon_pipeline.lexicon.mining import normalised_base_name
from icon_pipeline.library.catalog import read_catalog
from icon_pipeline.render.rasterize import preview_grid


def _valid_captions(captions: list[str]) -> list[str]:
    return [c for c in captions if is_valid_phrase(c)]


@asset(
    group_name="dataset",
    kinds={"parquet"},
    deps=["icon_captions"],
    owners=OWNERS,
    tags=asset_tags("dataset", "train"),
)
def training_pairs(context: AssetExecutionContext) -> MaterializeResult:
    """Icons grouped by normalised base name and near-duplicate image, so variants of one icon are
    never each other's in-batch negatives; whole groups held out for the unseen-icon benchmark."""
    config = load_config().pairs
    icons = read_catalog()
    batches = sorted({i.batch_key for i in icons})
    try:
        pairs = build_training_pairs(
            icons,
            read_all_batches("captions", batches),
            read_all_batches("rendered", batches),
            base_name=normalised_base_name,
            phash_distance=config.phash_distance,
            max_pixel_diff=config.max_pixel_diff,
            heldout_share=config.heldout_share,
            seed=config.seed,
        )
    except NoRendersError as exc:
        raise Failure(description=str(exc)) from exc
    frame, rows, png_of, grouping = pairs.frame, pairs.rows, pairs.png_of, pairs.grouping
    if pairs.without_captions:
        context.log.warning(
            f"{pairs.without_captions} group(s) have no captions and are left out of training"
        )
    if frame.empty:
        raise ValueError("no icon group has captions: check icon_captions' failures before building pairs")
    write_table(frame, pairs_path())
    write_table(
        pd.DataFrame({"icon_id": list(png_of), "png_path": list(png_of.values())}), icon_images_path()
    )

    meta = grouping_metadata(grouping, pairs.captions)
    largest = sorted(grouping.groups, key=lambda g: -g.size)[:6]
    # One row per group: its members by readable name (`style/name`, from the icon id's tail).
    grid_paths = [png_of[m] for g in largest for m in g.members[:8]]
    grid_labels = ["/".join(m.split(":")[-2:]) for g in largest for m in g.members[:8]]
    grid = preview_grid(grid_paths, columns=8, cell=112, labels=grid_labels)
    histogram = pd.DataFrame(
        sorted((int(k), v) for k, v in meta["size_histogram"].items()), columns=["group_size", "groups"]
    )
    return MaterializeResult(
        metadata={
            "icons": len(rows),
            "groups": len(frame),
            "heldout_groups": int((frame["split"] == "heldout").sum()),
            "groups_without_captions": pairs.without_captions,
            "rejected_icons": len(pairs.rejected),
            "pairs_before_grouping": meta.get("pairs_before", 0),
            "pairs_after_grouping": meta.get("pairs_after", 0),
            "name_edges": meta["name_edges"],
            "image_edges": meta["image_edges"],
            "group_size_histogram": table(histogram),
            "largest_groups": table(pd.DataFrame(meta["largest_groups"]).astype(str)),
            "largest_groups_preview": image_markdown(grid),
            "path": MetadataValue.path(str(pairs_path())),
        }
    )


def _paraphraser(kind: str) -> Paraphraser:
    if kind == "offline":
        return OfflineParaphraser.default()
    from icon_pipeline.captions.paraphrase import LLMParaphraser
    from icon_pipeline.defs.resources.llm import text_server_url

    captions = load_config().captions
    base_url = text_server_url(captions, "eval.paraphraser")
    return LLMParaphraser(base_url, os.environ.get(captions.api_key_env), captions.text_model)


@asset(
    group_name="dataset",
    kinds={"jsonl"},
    deps=[training_pairs],
    owners=OWNERS,
    tags=asset_tags("dataset", "train"),
)
def eval_set(context: AssetExecutionContext) -> MaterializeResult:
    """Unseen captions for a sample of training groups, frozen as versioned JSONL: written once,
    never overwritten; a new version needs a config change."""
    pipeline = load_config()
    config = pipeline.eval
    path = frozen_file(EVAL_NAME, pipeline)
    report_meta: dict = {}
    if path.exists():
        refuse_changed(context, "eval_set", path)
        frozen = write_frozen_jsonl(path.parent, EVAL_NAME, config.version, read_frozen_jsonl(path))
        context.log.info(f"{path.name} of library {path.parent.name} exists and is frozen: reused as is")
    else:
        for_writing(path)
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
            validate=_valid_captions,
        )
        frozen = write_frozen_jsonl(path.parent, EVAL_NAME, config.version, rows)
        report_meta = rounded(
            {
                k: MetadataValue.json(v) if isinstance(v, dict | list) else v
                for k, v in report.to_metadata().items()
            }
        )
        if report.shortfall_note:
            context.log.warning(f"eval_set: {report.shortfall_note}")
    sample = pd.DataFrame(read_frozen_jsonl(frozen.path)[:30])
    columns = [
        c for c in ("caption", "nearest_training_caption", "max_train_similarity", "group_id") if c in sample
    ]
    return MaterializeResult(
        metadata={
            "version": config.version,
            "library": path.parent.name,
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
    """The eval file on disk is byte-for-byte what was frozen: against its sidecar and against the hash
    recorded when it was first written (a hand edit with a regenerated sidecar fails too)."""
    return frozen_hash_check(context, "eval_set", EVAL_NAME)


@asset(
    group_name="dataset",
    kinds={"jsonl", "png"},
    deps=[eval_set],
    owners=OWNERS,
    tags=asset_tags("dataset", "train"),
)
def benchmark_queries(context: AssetExecutionContext) -> MaterializeResult:
    """Queries split evenly across text2img, semantic2img and img2img (degraded screenshots),
    each naming its relevant groups; frozen and versioned like the eval set."""
    config = load_config()
    settings = config.queries
    path = frozen_file(QUERIES_NAME, config)
    if path.exists():
        refuse_changed(context, "benchmark_queries", path)
        frozen = write_frozen_jsonl(path.parent, QUERIES_NAME, settings.version, read_frozen_jsonl(path))
        context.log.info(f"{path.name} of library {path.parent.name} exists and is frozen: reused as is")
    else:
        groups, split, images = load_groups()
        rows = build_benchmark_queries(
            groups,
            split,
            read_frozen_jsonl(frozen_file(EVAL_NAME, config)),
            images,
            out_image_dir=asset_path(
                "frozen_images", library=library_id(config), name=QUERIES_NAME, version=settings.version
            ),
            total=settings.total,
            seed=settings.seed,
            paraphraser=_paraphraser(config.eval.paraphraser),
            # Version 2 on: a text query is relevant to every group carrying its source term.
            terms=group_terms(groups, {i.icon_id: i.tags for i in read_catalog()})
            if settings.version >= 2
            else None,
        )
        # Image paths frozen relative to the data root, so the set survives a moved root.
        folder = for_writing(path).parent
        frozen = write_frozen_jsonl(folder, QUERIES_NAME, settings.version, relative_rows(rows))
    rows = resolved_rows(read_frozen_jsonl(frozen.path))
    summary = summarize_queries(rows, settings.total)
    for task, note in summary["shortfall"].items():
        context.log.warning(f"benchmark_queries {task}: {note}")
    examples = pd.DataFrame(rows).groupby("task").head(5)
    img2img = [r["image_path"] for r in rows if r["task"] == "img2img" and r.get("image_path")][:20]
    metadata = {
        "version": settings.version,
        "library": path.parent.name,
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
    """The queries file on disk is byte-for-byte what was frozen (sidecar and first recorded hash)."""
    return frozen_hash_check(context, "benchmark_queries", QUERIES_NAME)
