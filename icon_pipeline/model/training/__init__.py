"""SigLIP2 fine-tuning, runnable as
`torchrun --nproc_per_node=N -m icon_pipeline.model.training --config C.json`.

Needs only torch, transformers, pillow, pyarrow (and dagster-pipes when Dagster launches it):
no Dagster, no pandas. Rank 0 reports to Dagster through Pipes; a standalone run just logs.
"""

from icon_pipeline.dataset.augment import AugmentConfig
from icon_pipeline.model.training.config import TrainConfig, TrainConfigError

__all__ = ["AugmentConfig", "TrainConfig", "TrainConfigError"]
