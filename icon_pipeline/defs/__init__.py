"""The Dagster layer: one module per asset group (icons, captions, dataset, model, search), with
the partitions, sensors, schedules, resources and jobs beside them. Nothing outside this package
imports Dagster."""
