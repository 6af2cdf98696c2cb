"""The torchrun command line for the training job: one place that builds it."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

TRAINING_MODULE = "icon_pipeline.model.training"
DDP_BACKEND_ENV = "ICON_PIPELINE_DDP_BACKEND"  # read by icon_pipeline.model.training.run


def torchrun_command(
    config_path: Path,
    nproc_per_node: int = 1,
    *,
    rdzv_endpoint: str = "127.0.0.1:0",  # c10d on port 0: the OS picks a free port
    rdzv_backend: str = "c10d",
    launcher_args: Sequence[str] = (),
    python: str | None = None,
) -> list[str]:
    """`python -m torch.distributed.run ... -m icon_pipeline.model.training --config CONFIG`."""
    return [
        python or sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc_per_node),
        "--rdzv-backend",
        rdzv_backend,
        "--rdzv-endpoint",
        rdzv_endpoint,
        *launcher_args,
        "-m",
        TRAINING_MODULE,
        "--config",
        str(config_path),
    ]
