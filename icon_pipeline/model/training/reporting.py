"""Progress reporting: stdout always; Dagster Pipes on global rank 0 when Dagster launched the job.

dagster-pipes is imported only there, so a standalone run (or a worker rank) needs no Dagster at
all, and the orchestrator sees one stream of logs and exactly one materialization.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import ExitStack
from types import TracebackType
from typing import Any

PIPES_CONTEXT_ENV = "DAGSTER_PIPES_CONTEXT"

logger = logging.getLogger("icon_pipeline.model.training")


def global_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup_logging() -> None:
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(
            logging.Formatter(f"[rank{global_rank()}] %(asctime)s %(levelname)s %(message)s")
        )
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


class Reporter:
    """Context manager; on rank 0 under Dagster it opens Pipes (an exception inside is reported to it)."""

    def __init__(self, rank: int | None = None):
        self.rank = global_rank() if rank is None else rank
        self._stack = ExitStack()
        self.pipes: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def launched_by_dagster(self) -> bool:
        return self.pipes is not None

    def __enter__(self) -> Reporter:
        setup_logging()
        if self.is_main and os.environ.get(PIPES_CONTEXT_ENV):
            from dagster_pipes import open_dagster_pipes

            self.pipes = self._stack.enter_context(open_dagster_pipes())
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return self._stack.__exit__(exc_type, exc, tb)

    def info(self, message: str) -> None:
        """Every rank logs to stdout; rank 0 also to Dagster."""
        logger.info(message)
        if self.pipes is not None:
            self.pipes.log.info(message)

    def warning(self, message: str) -> None:
        logger.warning(message)
        if self.pipes is not None:
            self.pipes.log.warning(message)

    def custom(self, payload: dict[str, Any]) -> None:
        if self.pipes is not None:
            self.pipes.report_custom_message(payload)

    def materialize(self, metadata: dict[str, Any]) -> None:
        if self.pipes is not None:
            self.pipes.report_asset_materialization(metadata=metadata)
