"""exemplar_embeddings: other open sets' drawings of the library's concepts, in the index as the
`exemplars` channel (search/exemplars.py)."""

import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, asset

from icon_pipeline.core.config import load_config
from icon_pipeline.core.storage import asset_path, read_checkpoint_pointer, read_records, to_relative
from icon_pipeline.dataset.grouping import library_groups
from icon_pipeline.defs.metadata import FLOAT_PLACES, OWNERS, asset_tags, image_markdown, table
from icon_pipeline.defs.resources.postgres import PostgresResource
from icon_pipeline.model.checkpoint import load_checkpoint
from icon_pipeline.model.embedding import embed_image_files
from icon_pipeline.render.rasterize import preview_grid
from icon_pipeline.search.channels import EXEMPLARS, FINETUNED_MODEL
from icon_pipeline.search.exemplars import exemplar_rows, library_drawings
from icon_pipeline.search.index import drop_model, write_embeddings


@asset(
    owners=OWNERS,
    tags=asset_tags("search", "index"),
    group_name="search",
    kinds={"postgres", "pgvector"},
    deps=["corpus_pairs", "finetuned_checkpoint", "training_pairs"],
)
def exemplar_embeddings(context: AssetExecutionContext, postgres: PostgresResource) -> MaterializeResult:
    """The `exemplars` channel: other open sets' drawings of the library's concepts (corpus_pairs'
    exemplars: never a fitting query, never an external benchmark set), embedded by the fine-tuned
    model, one pgvector row per drawing with the icons of its concept. A screenshot drawn in another
    style finds the library's icon through the drawing of its concept that looks most like it; the
    `finetuned` channel, the same model over the icons' own drawings, answers the rest."""
    settings = load_config().index
    path = asset_path("corpus_exemplars")
    groups = library_groups()
    members: dict[str, list[str]] = {}
    for icon_id, group_id in groups.items():
        members.setdefault(group_id, []).append(icon_id)
    drawings = library_drawings(read_records(path, "corpus exemplars") if path.exists() else [], members)
    with postgres.connect(autocommit=True) as conn:
        if not drawings:
            dropped = drop_model(conn, EXEMPLARS)
            context.log.warning(
                "no corpus drawing names a library concept (corpus.sets empty, or corpus_pairs not "
                "materialized): the exemplars channel is " + ("dropped" if dropped else "left out")
            )
            return MaterializeResult(metadata={"drawings": 0})
        checkpoint = read_checkpoint_pointer(FINETUNED_MODEL, "finetuned_checkpoint")["path"]
        bundle = load_checkpoint(checkpoint)
        paths = [row["png_path"] for row in drawings]
        embeddings, seconds = embed_image_files(
            bundle, paths, settings.batch_size, cache_dir=asset_path("training_cache")
        )
        rows = exemplar_rows(drawings, embeddings, members, [str(to_relative(p)) for p in paths])
        stats = write_embeddings(
            conn,
            EXEMPLARS,
            rows.icon_ids,
            rows.group_ids,
            rows.vectors,
            hnsw_m=settings.hnsw_m,
            ef_construction=settings.ef_construction,
            embedder_info={"checkpoint": to_relative(checkpoint), "dim": bundle.dim, "drawings": len(paths)},
            texts=rows.keys,
        )
    sample = drawings[:: max(1, len(drawings) // 24)][:24]
    labels = [r["set"] for r in sample]
    grid = preview_grid([r["png_path"] for r in sample], columns=8, cell=96, labels=labels)
    per_set = pd.Series([r["set"] for r in drawings]).value_counts().rename_axis("set").reset_index()
    concepts = set(rows.group_ids)
    return MaterializeResult(
        metadata={
            "drawings": len(drawings),
            "library_concepts": len(concepts),
            "library_concepts_share": round(len(concepts) / max(1, len(members)), FLOAT_PLACES),
            "per_set": table(per_set),
            "embed_images_per_s": round(len(paths) / seconds, 1) if seconds else 0.0,
            "table": stats.table_name,
            "preview": image_markdown(grid, "exemplars: other sets' drawings of library concepts"),
        }
    )
