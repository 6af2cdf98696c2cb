"""The GPU (or CPU) training launcher: torchrun under Dagster Pipes.

`TorchrunResource.run` starts `python -m torch.distributed.run ... -m icon_pipeline.model.training
--config CONFIG.json` through a `PipesSubprocessClient`, so rank 0's logs, eval metrics and final
materialization reach the Dagster event log. torchrun writes each rank's stdout/stderr and (via
`@record`) its error file under a log directory; when any rank fails, the run fails with that
rank's error and traceback as the Dagster failure, not only a bare exit code.
"""

from __future__ import annotations

import json
import socket
import tempfile
from pathlib import Path
from typing import Any

from dagster import (
    ConfigurableResource,
    Failure,
    MetadataValue,
    PipesClientCompletedInvocation,
    PipesSubprocessClient,
)
from pydantic import Field

from icon_pipeline.model.training.launch import DDP_BACKEND_ENV, torchrun_command

TRACEBACK_TAIL_LINES = 30


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _tail(text: str, lines: int = TRACEBACK_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def rank_failures(log_dir: Path) -> list[dict[str, Any]]:
    """Errors recorded by failed ranks under torchrun's log dir, first failure first.

    torchrun lays out `<log_dir>/<run>/attempt_<n>/<local_rank>/{error.json,stderr.log}`;
    error.json exists when the rank died of a Python exception (`@record`), stderr.log always.
    """
    failures = []
    for error_file in sorted(log_dir.glob("*/attempt_*/*/error.json")):
        try:
            message = json.loads(error_file.read_text())["message"]
            if isinstance(message, str):
                message = {"message": message, "extraInfo": {}}
            extra = message.get("extraInfo", {})
            failures.append(
                {
                    "local_rank": int(error_file.parent.name),
                    "message": str(message.get("message", "")),
                    "traceback": _tail(str(extra.get("py_callstack", ""))),
                    "timestamp": int(extra.get("timestamp", 0) or 0),
                    "file": str(error_file),
                }
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
    failures.sort(key=lambda f: (f["timestamp"], f["local_rank"]))
    if failures:
        return failures
    # No Python error file (killed, segfault, OOM): fall back to the stderr of each rank.
    for stderr_file in sorted(log_dir.glob("*/attempt_*/*/stderr.log")):
        text = stderr_file.read_text(errors="replace") if stderr_file.is_file() else ""
        if text.strip():
            failures.append(
                {
                    "local_rank": int(stderr_file.parent.name),
                    "message": _tail(text, 1),
                    "traceback": _tail(text),
                    "timestamp": 0,
                    "file": str(stderr_file),
                }
            )
    return failures


class TorchrunResource(ConfigurableResource):
    """Launches the training job with torchrun (single node by default, N nodes with a rendezvous)."""

    nproc_per_node: int = Field(default=1, ge=1, description="processes (GPUs) per node")
    nnodes: int = Field(default=1, ge=1)
    node_rank: int = Field(default=0, ge=0)
    rdzv_endpoint: str | None = Field(
        default=None,
        description="host:port of the rendezvous (needed with nnodes > 1); None: a free local port, "
        "so two single-node jobs on one machine never collide",
    )
    rdzv_backend: str = "c10d"
    rdzv_id: str | None = Field(default=None, description="rendezvous id; default: the Dagster run id")
    visible_devices: str | None = Field(default=None, description="CUDA_VISIBLE_DEVICES for the job")
    extra_env: dict[str, str] = Field(default_factory=dict, description="more environment for every rank")
    python_executable: str | None = Field(default=None, description="default: this interpreter")
    log_dir: str | None = Field(default=None, description="torchrun per-rank logs; default: a temp dir")

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def endpoint(self) -> str:
        if self.rdzv_endpoint:
            return self.rdzv_endpoint
        if self.nnodes > 1:
            raise ValueError("a multi-node torchrun needs rdzv_endpoint (a host:port every node reaches)")
        return f"127.0.0.1:{free_port()}"

    def command(self, config_path: Path, log_dir: Path, rdzv_id: str) -> list[str]:
        return torchrun_command(
            config_path,
            self.nproc_per_node,
            rdzv_endpoint=self.endpoint(),
            rdzv_backend=self.rdzv_backend,
            python=self.python_executable,
            launcher_args=[
                "--nnodes",
                str(self.nnodes),
                "--node_rank",
                str(self.node_rank),
                "--rdzv-id",
                rdzv_id,
                "--log-dir",
                str(log_dir),
                # Every rank's output goes to its own files (read back on failure) and to the console.
                "--redirects",
                "3",
                "--tee",
                "3",
            ],
        )

    def environment(self) -> dict[str, str]:
        env = dict(self.extra_env)
        if self.visible_devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.visible_devices
        if DDP_BACKEND_ENV not in env and not cuda_available():
            env[DDP_BACKEND_ENV] = "gloo"  # NCCL needs GPUs
        # Python's own buffering would hold rank logs back until exit.
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def run(
        self, context: Any, config_path: Path, pipes_client: PipesSubprocessClient | None = None
    ) -> PipesClientCompletedInvocation:
        """Run the training job; raises dagster.Failure naming the failed rank and its error."""
        config_path = Path(config_path)
        if not config_path.is_file():
            raise Failure(description=f"training config {config_path} does not exist")
        client = pipes_client or PipesSubprocessClient()
        log_dir = Path(self.log_dir) if self.log_dir else Path(tempfile.mkdtemp(prefix="torchrun-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        run_id = getattr(getattr(context, "run", None), "run_id", None)
        rdzv_id = self.rdzv_id or str(run_id or "icon-pipeline")
        command = self.command(config_path, log_dir, rdzv_id)
        env = self.environment()
        context.log.info(
            f"torchrun: {self.nnodes} node(s) x {self.nproc_per_node} process(es), "
            f"backend {env.get(DDP_BACKEND_ENV, 'nccl')}, logs in {log_dir}: {' '.join(command)}"
        )
        try:
            return client.run(command=command, context=context, env=env)
        # A non-zero exit raises DagsterPipesExecutionError, which dagster does not export (and which
        # is not a DagsterError): catch whatever the launch raised and report the ranks' own errors.
        except Exception as error:
            failures = rank_failures(log_dir)
            if not failures:
                raise Failure(
                    description=f"torchrun failed and no rank left an error ({error}); logs in {log_dir}",
                    metadata={"log_dir": MetadataValue.path(str(log_dir))},
                ) from error
            first = failures[0]
            rank = self.node_rank * self.nproc_per_node + first["local_rank"]
            raise Failure(
                description=(
                    f"training rank {rank} failed: {first['message']}\n{first['traceback']}\n"
                    f"(per-rank logs in {log_dir})"
                ),
                metadata={
                    "failed_rank": rank,
                    "failed_ranks": len(failures),
                    "error": first["message"],
                    "error_file": MetadataValue.path(first["file"]),
                    "log_dir": MetadataValue.path(str(log_dir)),
                },
            ) from error
