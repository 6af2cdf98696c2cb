"""`icon-pipeline ui`: the Dagster webserver and daemon over one shared code server, all in one
process group of their own, stopped together.

`dagster dev` is superseded (it warns on every start), so this starts what it starts, with the
public commands: `dagster code-server start` (loads icon_pipeline.definitions from this checkout
once, for both), `dagster-webserver` and `dagster-daemon run`, pointed at a workspace file that
names the code server. SIGTERM or SIGINT (Ctrl-C) is forwarded to the whole group; whatever has
not exited after STOP_TIMEOUT_S is killed, so no code server, run worker or grpc process outlives
the command.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from icon_pipeline.defs.run_origin import LOCATION_NAME  # the demo's runs carry this origin too

STOP_TIMEOUT_S = 20.0
CODE_SERVER_START_TIMEOUT_S = 120.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`."""
    import psutil

    members = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                members.append(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stop_group(pgid: int, processes: list[subprocess.Popen], signum: int, timeout: float) -> list[int]:
    """Send `signum` to the group, wait up to `timeout` for every member, SIGKILL the rest.
    Returns the pids that had to be killed."""
    _signal_group(pgid, signum)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in processes:
            proc.poll()  # reap our own children so they do not linger as zombies
        if not group_members(pgid):
            return []
        time.sleep(0.2)
    survivors = group_members(pgid)
    _signal_group(pgid, signal.SIGKILL)
    for proc in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    return survivors


def workspace_file(directory: Path, code_port: int) -> Path:
    path = directory / "workspace.yaml"
    path.write_text(
        "load_from:\n"
        "  - grpc_server:\n"
        "      host: 127.0.0.1\n"
        f"      port: {code_port}\n"
        f"      location_name: {LOCATION_NAME}\n"
    )
    return path


def run_ui(repo_root: Path, host: str, port: int, log=print) -> int:
    """Serve the UI until SIGTERM/SIGINT or until one of its processes dies; 0 on a requested stop."""
    bin_dir = Path(sys.executable).parent
    code_port = free_port()
    requested: list[int] = []

    def on_signal(signum: int, _frame) -> None:
        requested.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    processes: list[subprocess.Popen] = []
    pgid = None
    with tempfile.TemporaryDirectory(prefix="icon-pipeline-ui-") as tmp:
        workspace = workspace_file(Path(tmp), code_port)
        commands = {
            "code server": [
                str(bin_dir / "dagster"),
                *("code-server", "start", "-h", "127.0.0.1", "-p", str(code_port)),
                *("-m", "icon_pipeline.definitions", "-d", str(repo_root), "--location-name", LOCATION_NAME),
            ],
            "webserver": [
                str(bin_dir / "dagster-webserver"),
                "-w",
                str(workspace),
                "-h",
                host,
                "-p",
                str(port),
            ],
            "daemon": [str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)],
        }
        names = list(commands)
        try:
            for name in names:
                if requested:
                    break
                # The first process leads a new process group (so a terminal's Ctrl-C reaches only us,
                # and we forward it to the whole group); the others join that group.
                group = {"process_group": 0 if pgid is None else pgid}
                processes.append(subprocess.Popen(commands[name], cwd=repo_root, **group))
                if pgid is None:
                    pgid = processes[0].pid
                    deadline = time.monotonic() + CODE_SERVER_START_TIMEOUT_S
                    while not requested and not _port_open("127.0.0.1", code_port):
                        if processes[0].poll() is not None or time.monotonic() > deadline:
                            log("icon-pipeline ui: the code server did not start")
                            requested.append(signal.SIGTERM)
                            break
                        time.sleep(0.2)
            while not requested:
                ended = [(n, p) for n, p in zip(names, processes, strict=False) if p.poll() is not None]
                if ended:
                    name, proc = ended[0]
                    log(f"icon-pipeline ui: the {name} exited with code {proc.returncode}; stopping the rest")
                    break
                time.sleep(0.5)
        finally:
            signum = requested[0] if requested else signal.SIGTERM
            if pgid is not None:
                killed = stop_group(pgid, processes, signum, STOP_TIMEOUT_S)
                if killed:
                    log(
                        f"icon-pipeline ui: killed {len(killed)} process(es) that did not stop "
                        f"in {STOP_TIMEOUT_S:.0f}s"
                    )
            for s, handler in previous.items():
                signal.signal(s, handler)
    return 0 if requested else 1
