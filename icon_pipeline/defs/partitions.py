from dagster import DynamicPartitionsDefinition

# One partition per batch of icons from one source (and style, or Figma page). Keys are never
# re-used for other icons: adding icons adds batches (see icon_pipeline.library.batching).
icon_batches = DynamicPartitionsDefinition(name="icon_batches")
