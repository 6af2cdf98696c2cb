"""Builds the Dagster Definitions from the project's modules, and nothing else."""

from dagster import Definitions

from icon_pipeline.assets.captions import icon_captions
from icon_pipeline.assets.catalog import icon_catalog
from icon_pipeline.assets.index import benchmark_report, caption_embeddings, icon_embeddings, search_fusion
from icon_pipeline.assets.lexicon import icon_lexicon
from icon_pipeline.assets.pairs import (
    benchmark_queries,
    benchmark_queries_frozen_hash,
    eval_set,
    eval_set_frozen_hash,
    training_pairs,
)
from icon_pipeline.assets.rendering import rendered_icons
from icon_pipeline.assets.training import base_checkpoint, finetuned_checkpoint
from icon_pipeline.automation.schedules import nightly_recaption
from icon_pipeline.automation.sensors import icon_automation_sensor, icon_source_sensor
from icon_pipeline.resources.figma import FigmaResource
from icon_pipeline.resources.gpu import TorchrunResource
from icon_pipeline.resources.llm import CaptionerResource
from icon_pipeline.resources.postgres import PostgresResource

defs = Definitions(
    assets=[
        icon_catalog,
        rendered_icons,
        icon_lexicon,
        icon_captions,
        training_pairs,
        eval_set,
        benchmark_queries,
        base_checkpoint,
        finetuned_checkpoint,
        icon_embeddings,
        caption_embeddings,
        search_fusion,
        benchmark_report,
    ],
    asset_checks=[eval_set_frozen_hash, benchmark_queries_frozen_hash],
    schedules=[nightly_recaption],
    sensors=[icon_source_sensor, icon_automation_sensor],
    resources={
        "figma": FigmaResource(),
        "postgres": PostgresResource(),
        "captioner": CaptionerResource(),
        "torchrun": TorchrunResource(),
    },
)
