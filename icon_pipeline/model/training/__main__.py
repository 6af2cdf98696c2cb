"""Entry point: `python -m icon_pipeline.model.training --config CONFIG.json` (under torchrun or alone)."""

from __future__ import annotations

import argparse
import sys

from torch.distributed.elastic.multiprocessing.errors import record
from transformers.utils import logging as hf_logging

from icon_pipeline.model.checkpoint import CheckpointError
from icon_pipeline.model.training.config import TrainConfig, TrainConfigError
from icon_pipeline.model.training.reporting import Reporter, logger, setup_logging

EXIT_BAD_INPUT = 2


@record  # under torchrun, a failing rank's traceback goes to its error file and the launcher's summary
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m icon_pipeline.model.training", description=__doc__)
    parser.add_argument("--config", required=True, help="training config JSON (see TrainConfig)")
    args = parser.parse_args(argv)
    setup_logging()
    hf_logging.disable_progress_bar()  # per-file progress bars are noise in job logs
    with Reporter() as reporter:
        try:
            config = TrainConfig.load(args.config)
        except TrainConfigError as error:
            logger.error("%s", error)
            raise
        # Imported late: torch/transformers take seconds, a bad config path should not.
        from icon_pipeline.model.training.run import run_training

        try:
            run_training(config, reporter)
        except (TrainConfigError, CheckpointError) as error:
            # Bad input: one clear line on every rank (the traceback adds nothing), then fail.
            logger.error("cannot train: %s", error)
            raise
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (TrainConfigError, CheckpointError):
        sys.exit(EXIT_BAD_INPUT)
