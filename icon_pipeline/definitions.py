"""Builds the Dagster Definitions from the project's modules, and nothing else."""

from dagster import Definitions

from icon_pipeline.defs.benchmark import benchmark_report, external_benchmark
from icon_pipeline.defs.captions import icon_captions, icon_lexicon, nightly_recaption
from icon_pipeline.defs.corpus import corpus_pairs, icon_corpus
from icon_pipeline.defs.dataset import (
    benchmark_queries,
    benchmark_queries_frozen_hash,
    eval_set,
    eval_set_frozen_hash,
    training_pairs,
)
from icon_pipeline.defs.exemplars import exemplar_embeddings
from icon_pipeline.defs.icons import icon_automation_sensor, icon_catalog, icon_source_sensor, rendered_icons
from icon_pipeline.defs.jobs import JOBS
from icon_pipeline.defs.model import base_checkpoint, finetuned_checkpoint
from icon_pipeline.defs.resources.figma import FigmaResource
from icon_pipeline.defs.resources.gpu import TorchrunResource
from icon_pipeline.defs.resources.llm import CaptionerResource
from icon_pipeline.defs.resources.postgres import PostgresResource
from icon_pipeline.defs.search import (
    caption_embeddings,
    icon_embeddings,
    index_complete,
    search_fusion,
)

defs = Definitions(
    assets=[
        icon_catalog,
        rendered_icons,
        icon_lexicon,
        icon_captions,
        training_pairs,
        icon_corpus,
        corpus_pairs,
        eval_set,
        benchmark_queries,
        base_checkpoint,
        finetuned_checkpoint,
        icon_embeddings,
        caption_embeddings,
        exemplar_embeddings,
        search_fusion,
        external_benchmark,
        benchmark_report,
    ],
    asset_checks=[eval_set_frozen_hash, benchmark_queries_frozen_hash, index_complete],
    jobs=JOBS,
    schedules=[nightly_recaption],
    sensors=[icon_source_sensor, icon_automation_sensor],
    resources={
        "figma": FigmaResource(),
        "postgres": PostgresResource(),
        "captioner": CaptionerResource(),
        "torchrun": TorchrunResource(),
    },
)
