"""icon_embeddings and benchmark_report: the pgvector index and what it is worth."""

import json

import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from icon_pipeline.assets.metadata import image_markdown, table
from icon_pipeline.assets.pairs import QUERIES_NAME, benchmark_queries, training_pairs
from icon_pipeline.assets.training import base_checkpoint, finetuned_checkpoint
from icon_pipeline.config import load_config
from icon_pipeline.embedding import embed_image_files
from icon_pipeline.frozen import frozen_paths, read_frozen_jsonl
from icon_pipeline.index import write_embeddings
from icon_pipeline.lexical import library_keywords
from icon_pipeline.modeling import load_checkpoint
from icon_pipeline.report import run_benchmark
from icon_pipeline.resources.postgres import PostgresResource
from icon_pipeline.settings import get_paths
from icon_pipeline.tables import (
    eval_dir,
    icon_images_path,
    pairs_path,
    read_checkpoint_pointer,
    read_records,
)


def _configured_models() -> dict[str, str]:
    """model id -> checkpoint: base, fine-tuned, and any extra checkpoint dirs from the config."""
    models = {
        "base": read_checkpoint_pointer("base", "base_checkpoint")["path"],
        "finetuned": read_checkpoint_pointer("finetuned", "finetuned_checkpoint")["path"],
    }
    models.update(load_config().index.extra_models)
    return models


def _icon_groups() -> dict[str, str]:
    """icon_id -> group_id; icons left out of training (no captions) are groups of their own."""
    groups = {
        m: row["group_id"] for row in read_records(pairs_path(), "training_pairs") for m in row["members"]
    }
    images = read_records(icon_images_path(), "icon images")
    return {row["icon_id"]: groups.get(row["icon_id"], f"solo:{row['icon_id']}") for row in images}


@asset(
    group_name="search",
    kinds={"postgres", "pgvector"},
    deps=[base_checkpoint, finetuned_checkpoint, training_pairs],
)
def icon_embeddings(context: AssetExecutionContext, postgres: PostgresResource) -> MaterializeResult:
    """Image embeddings of every icon, one pgvector table (HNSW, cosine) per model, swapped in
    atomically so searches never see a half-built index."""
    settings = load_config().index
    images = read_records(icon_images_path(), "icon images")
    icon_ids = [row["icon_id"] for row in images]
    paths = [row["png_path"] for row in images]
    groups = _icon_groups()
    rows = []
    with postgres.connect(autocommit=True) as conn:
        for model_id, checkpoint in _configured_models().items():
            bundle = load_checkpoint(checkpoint)

            def progress(done: int, total: int, model_id: str = model_id) -> None:
                if done == total or done % (settings.batch_size * 20) == 0:
                    context.log.info(f"{model_id}: embedded {done}/{total} icons")

            embeddings, seconds = embed_image_files(bundle, paths, settings.batch_size, progress)
            stats = write_embeddings(
                conn,
                model_id,
                icon_ids,
                [groups[i] for i in icon_ids],
                embeddings,
                hnsw_m=settings.hnsw_m,
                ef_construction=settings.ef_construction,
                embedder_info={"checkpoint": str(checkpoint), "dim": bundle.dim},
            )
            rows.append(
                {
                    "model_id": model_id,
                    "rows": len(icon_ids),
                    "dim": bundle.dim,
                    "embed_images_per_s": round(len(icon_ids) / seconds, 1) if seconds else 0.0,
                    "table": stats.table_name,
                    "checkpoint": str(checkpoint),
                }
            )
    return MaterializeResult(metadata={"models": table(pd.DataFrame(rows)), "icons": len(icon_ids)})


@asset(group_name="search", kinds={"json", "markdown"}, deps=[icon_embeddings, benchmark_queries])
def benchmark_report(context: AssetExecutionContext, postgres: PostgresResource) -> MaterializeResult:
    """R@1/5/10/30 and mAP per task and model, exact beside HNSW, seen and held-out icons, with
    BM25 and raw-pixel baselines; as metadata and as files under data/reports/."""
    config = load_config()
    path, _ = frozen_paths(eval_dir(), QUERIES_NAME, config.queries.version)
    queries = read_frozen_jsonl(path)
    lexical = library_keywords().index
    images = {row["icon_id"]: row["png_path"] for row in read_records(icon_images_path(), "icon images")}
    models = {model_id: load_checkpoint(checkpoint) for model_id, checkpoint in _configured_models().items()}
    with postgres.connect(autocommit=True) as conn:
        report = run_benchmark(
            conn,
            queries,
            models,
            _icon_groups(),
            lexical,
            icon_images=images,
            ef_search=config.index.ef_search,
        )
    out_dir = get_paths().reports_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    report.write_json(out_dir / "benchmark.json")
    markdown = report.to_markdown()
    (out_dir / "benchmark.md").write_text(markdown)
    plots = report.plots(out_dir)
    flat = pd.DataFrame(report.to_json()["rows"])
    headline = flat[flat["subset"] == "all"] if "subset" in flat else flat
    metadata = {
        "queries": len(queries),
        "report": MetadataValue.md(markdown),
        "results": table(headline, max_rows=60),
        "json": MetadataValue.path(str(out_dir / "benchmark.json")),
        "markdown": MetadataValue.path(str(out_dir / "benchmark.md")),
        "failures": len(report.failures),
    }
    for plot in plots:
        metadata[f"plot_{plot.stem}"] = image_markdown(plot, plot.stem)
    context.log.info(f"benchmark written to {out_dir}: {json.dumps([p.name for p in plots])}")
    return MaterializeResult(metadata=metadata)
