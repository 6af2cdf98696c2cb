"""The GPU (or CPU) training launcher: torchrun under Dagster Pipes.

`TorchrunResource.run` starts `python -m torch.distributed.run ... -m icon_pipeline.model.training
--config CONFIG.json` through a `PipesSubprocessClient`, so rank 0's logs, eval metrics and final
materialization reach the Dagster event log. torchrun writes each rank's stdout/stderr and (via
`@record`) its error file under a log directory; when any rank fails, the run fails with that
rank's error and traceback as the Dagster failure, not only a bare exit code. The headline is the
line that says what happened: the exception of a traceback, or "rank 0 was killed (signal 9,
SIGKILL)" for a rank that left no Python error, never a warning the rank printed before it died.
"""

from __future__ import annotations

import json
import re
import signal
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


_TRACEBACK = "Traceback (most recent call last):"
_CONSOLE_PREFIX = re.compile(r"^\[[\w-]*\d+\]:")  # `torchrun --tee`'s "[default0]:" before a rank's lines
# "x.py:2: FutureWarning: ...", "UserWarning: ..."; the indented source line after it is the warning's too.
_WARNING_HEADER = re.compile(r"^(?:\S.*:\d+: )?[A-Z]\w*Warning: ")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?::|$)")
# torchrun's own report of a rank that died of a signal: "exitcode  : -9 (pid: 27823)  (SIGKILL)"
# in the root cause block, "failed (exitcode: -9) local_rank: 0" in its log line.
_EXITCODE = re.compile(r"exitcode\s*:\s*(-?\d+)")
_SUMMARY_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)", re.MULTILINE)
_LOG_LOCAL_RANK = re.compile(r"failed \(exitcode: -?\d+\) local_rank: (\d+)")
_ROOT_CAUSE = "Root Cause (first observed failure):"


def killed_headline(rank: int | str, signum: int) -> str:
    """`rank 0 was killed (signal 9, SIGKILL)`."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        return f"rank {rank} was killed (signal {signum})"
    return f"rank {rank} was killed (signal {signum}, {name})"


def failure_headline(text: str) -> str:
    """The line of a failed rank's (or torchrun's) stderr that says what went wrong.

    torchrun's report of a rank killed by a signal -> "rank 0 was killed (signal 9, SIGKILL)"; a
    Python traceback -> its exception line ("RuntimeError: ..."; the last traceback when exceptions
    were chained); else the last line that is not a warning. "" when nothing is left.
    """
    lines = [_CONSOLE_PREFIX.sub("", line).rstrip() for line in text.splitlines()]
    for match in _EXITCODE.finditer(text):
        code = int(match.group(1))
        rank = _SUMMARY_RANK.search(text) or _LOG_LOCAL_RANK.search(text)
        if code < 0:
            return killed_headline(rank.group(1) if rank else "?", -code)
        if _ROOT_CAUSE in text:  # torchrun's report of a rank that exited: its own traceback says nothing
            return f"rank {rank.group(1) if rank else '?'} exited with code {code}"
    starts = [i for i, line in enumerate(lines) if line.startswith(_TRACEBACK)]
    if starts:
        # After the frames (indented) comes the exception, at the start of a line.
        for line in lines[starts[-1] + 1 :]:
            if _EXCEPTION_LINE.match(line):
                return line.strip()
    warning_lines: set[int] = set()
    for i, line in enumerate(lines):
        if _WARNING_HEADER.match(line.lstrip()):
            warning_lines.add(i)
            if i + 1 < len(lines) and lines[i + 1][:1].isspace():
                warning_lines.add(i + 1)  # the source line Python shows under a warning
        elif line.strip().startswith("warnings.warn("):
            warning_lines.add(i)
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].strip() and i not in warning_lines:
            return lines[i].strip()
    return ""


def _launcher_failures(log_dir: Path) -> dict[int, dict[str, Any]]:
    """local rank -> what torchrun knew of that failed rank (exit code, signal), recorded by the
    launch wrapper (`LAUNCHER_RECORD`); {} when torchrun did not report failed ranks."""
    try:
        rows = json.loads((log_dir / LAUNCHER_RECORD).read_text())
        return {int(row["local_rank"]): row for row in rows}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def rank_failures(log_dir: Path, first_rank: int = 0) -> list[dict[str, Any]]:
    """Errors recorded by failed ranks under torchrun's log dir, first failure first.

    torchrun lays out `<log_dir>/<run>/attempt_<n>/<local_rank>/{error.json,stderr.log}`;
    error.json exists when the rank died of a Python exception (`@record`), stderr.log always.
    Ranks are `first_rank + local rank` (first_rank: this node's first global rank). Each failure's
    `summary` is one sentence: "rank 1 failed: RuntimeError: ...", "rank 0 was killed (signal 9,
    SIGKILL)" or "rank 0 exited with code 3".
    """
    failures = []
    for error_file in sorted(log_dir.glob("*/attempt_*/*/error.json")):
        try:
            message = json.loads(error_file.read_text())["message"]
            if isinstance(message, str):
                message = {"message": message, "extraInfo": {}}
            extra = message.get("extraInfo", {})
            local_rank = int(error_file.parent.name)
            callstack = str(extra.get("py_callstack", ""))
            text = str(message.get("message", "")) or failure_headline(callstack)
            failures.append(
                {
                    "local_rank": local_rank,
                    "rank": first_rank + local_rank,
                    "message": text,
                    "summary": f"rank {first_rank + local_rank} failed: {text}",
                    "traceback": _tail(callstack),
                    "timestamp": int(extra.get("timestamp", 0) or 0),
                    "file": str(error_file),
                }
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
    failures.sort(key=lambda f: (f["timestamp"], f["local_rank"]))
    if failures:
        return failures
    # No Python error file (killed, segfault, OOM): what torchrun saw of each rank, and its stderr.
    launched = _launcher_failures(log_dir)
    # The latest attempt's file of each local rank (a restarted or reused log dir holds several).
    logs = sorted(log_dir.glob("*/attempt_*/*/stderr.log"), key=lambda f: f.stat().st_mtime)
    stderr_files = {int(f.parent.name): f for f in logs}
    for local_rank in sorted(set(launched) | set(stderr_files)):
        stderr_file = stderr_files.get(local_rank)
        text = stderr_file.read_text(errors="replace") if stderr_file and stderr_file.is_file() else ""
        row = launched.get(local_rank)
        if row is None and not text.strip():
            continue
        rank = int(row["rank"]) if row and "rank" in row else first_rank + local_rank
        exitcode = int(row["exitcode"]) if row and row.get("exitcode") is not None else None
        headline = failure_headline(text)
        if exitcode is not None and exitcode < 0:
            summary = killed_headline(rank, -exitcode)
            message = summary.removeprefix(f"rank {rank} ")
        elif headline:
            summary, message = f"rank {rank} failed: {headline}", headline
        elif exitcode is not None:
            message = f"exited with code {exitcode}"
            summary = f"rank {rank} {message}"
        else:
            continue
        failures.append(
            {
                "local_rank": local_rank,
                "rank": rank,
                "message": message,
                "summary": summary,
                "traceback": _tail(text),
                "timestamp": int(row.get("timestamp", 0) or 0) if row else 0,
                "file": str(stderr_file or log_dir / LAUNCHER_RECORD),
            }
        )
    failures.sort(key=lambda f: (f["timestamp"], f["local_rank"]))
    return failures


# torchrun run in this process's image, so that when ranks fail, what torchrun knows of each (exit
# code, signal) is written to <log_dir>/LAUNCHER_RECORD: a rank killed by a signal leaves no other
# trace (no error.json; its stderr ends with whatever it printed last). Same arguments and exit code.
LAUNCHER_RECORD = "torchrun_failures.json"
_RECORDING_LAUNCHER = """\
import json, runpy, sys
record = sys.argv.pop(1)
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
try:
    runpy.run_module("torch.distributed.run", run_name="__main__", alter_sys=True)
except ChildFailedError as error:
    rows = [
        {"rank": rank, "local_rank": f.local_rank, "exitcode": f.exitcode, "pid": f.pid,
         "timestamp": f.timestamp, "error_file": f.error_file}
        for rank, f in error.failures.items()
    ]
    with open(record, "w") as out:
        json.dump(rows, out)
    raise
"""


def recording_launch(command: list[str], record: Path) -> list[str]:
    """`python -m torch.distributed.run ARGS` -> the same launch, recording failed ranks to `record`."""
    if command[1:3] != ["-m", "torch.distributed.run"]:
        raise ValueError(f"not a torchrun command: {command[:3]}")
    return [command[0], "-c", _RECORDING_LAUNCHER, str(record), *command[3:]]


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
        record = log_dir / LAUNCHER_RECORD
        record.unlink(missing_ok=True)  # a configured log_dir is reused: never an earlier run's ranks
        try:
            return client.run(command=recording_launch(command, record), context=context, env=env)
        # A non-zero exit raises DagsterPipesExecutionError, which dagster does not export (and which
        # is not a DagsterError): catch whatever the launch raised and report the ranks' own errors.
        except Exception as error:
            failures = rank_failures(log_dir, first_rank=self.node_rank * self.nproc_per_node)
            if not failures:
                raise Failure(
                    description=f"torchrun failed and no rank left an error ({error}); logs in {log_dir}",
                    metadata={"log_dir": MetadataValue.path(str(log_dir))},
                ) from error
            first = failures[0]
            rank = first["rank"]
            raise Failure(
                description=(
                    f"training {first['summary']}\n{first['traceback']}\n(per-rank logs in {log_dir})"
                ),
                metadata={
                    "failed_rank": rank,
                    "failed_ranks": len(failures),
                    "error": first["summary"],
                    "error_file": MetadataValue.path(first["file"]),
                    "log_dir": MetadataValue.path(str(log_dir)),
                },
            ) from error
