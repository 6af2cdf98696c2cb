from dagster import DynamicPartitionsDefinition, StaticPartitionsDefinition

from icon_pipeline.library.sources.icon_sets import CORPUS_SETS

# One partition per batch of icons from one source (and style, or Figma page). Keys are never
# re-used for other icons: adding icons adds batches (see icon_pipeline.library.batching).
icon_batches = DynamicPartitionsDefinition(name="icon_batches")

# Every corpus set the project knows; the runner materializes those `corpus.sets` names.
corpus_sets = StaticPartitionsDefinition(list(CORPUS_SETS))
