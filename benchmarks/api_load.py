"""How does the HTTP search API hold up under concurrent clients? Latency at 1, 8 and 32 at once.

Not a test: prints figures, asserts nothing. Starts `icon-pipeline api` on a free port over the
index `make demo` leaves (or points at a running one with --url), warms it up (models load on the
first searches), then, per concurrency level, has that many clients (threads, each with its own
keep-alive HTTP connection) send `GET /api/search` text queries back to back until --requests
have been answered, and prints p50 / p99 latency, errors and throughput per level. The queries are
the frozen benchmark queries' texts when they exist, a fixed list of designer queries otherwise.

    .venv/bin/python benchmarks/api_load.py                          # levels 1, 8, 32
    .venv/bin/python benchmarks/api_load.py --levels 1 8 --requests 400 --model bm25
    .venv/bin/python benchmarks/api_load.py --url http://127.0.0.1:7865/ --user ana:secret

The clients run on the same machine as the server (and share its cores): on a 2-core machine
the figures are a lower bound of what the server does alone. Where /proc exists (Linux), each
level also prints the CPU time one request cost, split between the API process, the PostgreSQL
server's processes and the clients, and the p50 that this cost allows at best: c clients on n cores
wait, on average, for c x (CPU per request) / n, however the server schedules them.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FALLBACK_QUERIES = [
    "ring a bell",
    "delete file",
    "hide layer",
    "user profile",
    "settings gear",
    "arrow pointing left",
    "upload to the cloud",
    "lock screen",
    "magnifying glass",
    "calendar event",
    "shopping cart",
    "send message",
    "download",
    "home page",
    "edit with a pencil",
    "trash can",
]


def benchmark_queries(limit: int) -> list[str]:
    """The frozen benchmark queries' texts (what the report scores), else FALLBACK_QUERIES."""
    try:
        from icon_pipeline.core.config import load_config
        from icon_pipeline.core.frozen import read_frozen_jsonl
        from icon_pipeline.core.storage import QUERIES_NAME, frozen_file

        rows = read_frozen_jsonl(frozen_file(QUERIES_NAME, load_config()))
        texts = list(dict.fromkeys(r["text"] for r in rows if r.get("text")))
    except (OSError, ValueError, KeyError):
        texts = []
    return texts[:limit] or FALLBACK_QUERIES


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(workers: int | None) -> tuple[subprocess.Popen, str]:
    """`icon-pipeline api` on a free port, from this checkout; returns once it accepts requests."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "icon_pipeline.cli", "api", "--port", str(port)]
    command += ["--workers", str(workers)] if workers else []
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the API exited with code {process.returncode} before answering")
        try:
            httpx.get(url + "api/docs", timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit("the API did not answer within 120 s")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (0 for one that is gone)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (after the state field)
    return total / ticks


def postgres_pids() -> list[int]:
    """The processes of the PostgreSQL server behind the index (the embedded server of this data
    root: its postmaster and the backends it started); empty for an external server."""
    from icon_pipeline.core.paths import get_paths

    try:
        postmaster = int((get_paths().pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    return with_children(postmaster)


def with_children(pid: int) -> list[int]:
    """`pid` and the processes it started (the API's worker processes, PostgreSQL's backends)."""
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent == pid:
                pids.append(int(entry.name))
    return pids


def run_level(
    url: str, queries: list[str], clients: int, requests: int, params: dict, auth: tuple[str, str] | None
) -> tuple[np.ndarray, list[str], float]:
    """(latencies in ms of the answered requests, error descriptions, wall seconds)."""
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    done = [0]
    step = max(1, requests // 10)

    where = urlsplit(url)
    headers = {"Authorization": "Basic " + base64.b64encode(":".join(auth).encode()).decode()} if auth else {}

    def client(_: int) -> None:
        # The standard library's client: a tenth of httpx's CPU per request, which on a machine
        # that runs the clients beside the server is CPU the server does not get.
        connection = http.client.HTTPConnection(where.hostname, where.port, timeout=120)
        try:
            while (index := next(counter)) < requests:
                target = f"{where.path}api/search?" + urlencode(
                    {"q": queries[index % len(queries)], **params}
                )
                started = time.perf_counter()
                try:
                    connection.request("GET", target, headers=headers)
                    response = connection.getresponse()
                    response.read()
                    problem = "" if response.status == 200 else f"HTTP {response.status}"
                except (OSError, http.client.HTTPException) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                    connection.close()  # the next request opens a new connection
                elapsed = (time.perf_counter() - started) * 1000.0
                with lock:
                    (errors.append(problem) if problem else latencies.append(elapsed))
                    done[0] += 1
                    if done[0] % step == 0 and sys.stdout.isatty():
                        print(f"\r  {clients:>3} clients: {done[0]}/{requests}", end="", flush=True)
        finally:
            connection.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - started
    if sys.stdout.isatty():
        print("\r" + " " * 40 + "\r", end="", flush=True)
    return np.asarray(latencies), errors, wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running API (default: start one on a free port)")
    parser.add_argument("--user", help="user:password when the API has basic auth on")
    parser.add_argument("--workers", type=int, help="the started API's processes (default: the API's own)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32], help="concurrent clients")
    parser.add_argument("--requests", type=int, default=200, help="requests per level")
    parser.add_argument(
        "--warmup", type=int, default=40, help="requests before the first level (8 at once: every worker)"
    )
    parser.add_argument("--model", help="default: the API's (hybrid)")
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()

    auth = tuple(args.user.split(":", 1)) if args.user else None
    params = {"k": args.k, **({"model": args.model} if args.model else {})}
    queries = benchmark_queries(max(args.requests, 200))
    process = None
    url = args.url
    if url is None:
        process, url = start_server(args.workers)
    url = url if url.endswith("/") else url + "/"
    try:
        print(f"API at {url}; {len(queries)} distinct queries, k={args.k}, model={args.model or 'default'}")
        print(f"cores on this machine: {os.cpu_count()}; load average {os.getloadavg()[0]:.2f} (1 min)")
        _, errors, _ = run_level(url, queries, 8, args.warmup, params, auth)  # models load here
        if errors:
            raise SystemExit(f"warm-up failed: {errors[0]}")
        rows = []
        serial_p50 = None
        measure_cpu = Path("/proc/self/stat").exists() and process is not None
        for clients in args.levels:
            cpu_before = (
                (cpu_seconds(with_children(process.pid)), cpu_seconds(postgres_pids()), sum(os.times()[:2]))
                if measure_cpu
                else None
            )
            latencies, errors, wall = run_level(url, queries, clients, args.requests, params, auth)
            if cpu_before is not None:
                # Backends started during the level are counted from 0; ones that ended are lost (few).
                spent = (
                    cpu_seconds(with_children(process.pid)) - cpu_before[0],
                    cpu_seconds(postgres_pids()) - cpu_before[1],
                    sum(os.times()[:2]) - cpu_before[2],
                )
                per_request = [1000.0 * s / args.requests for s in spent]
                bound = clients * sum(per_request) / (os.cpu_count() or 1)
                api, database, client_side = per_request
                print(
                    f"  {clients:>3} clients: CPU per request {sum(per_request):5.1f} ms (API {api:.1f},"
                    f" PostgreSQL {database:.1f}, clients {client_side:.1f}); best possible p50"
                    f" at this cost {max(bound, api + database):.1f} ms"
                )
            p50 = float(np.percentile(latencies, 50)) if len(latencies) else float("nan")
            p99 = float(np.percentile(latencies, 99)) if len(latencies) else float("nan")
            serial_p50 = p50 if clients == 1 else serial_p50
            ratio = f"{p50 / serial_p50:.2f}x" if serial_p50 else "-"
            rows.append((clients, p50, p99, len(errors), args.requests / wall, ratio))
            print(
                f"  {clients:>3} clients: p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  errors {len(errors)}"
                f"  {args.requests / wall:6.1f} req/s" + (f"  (first error: {errors[0]})" if errors else "")
            )
        print()
        print(f"{'clients':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'req/s':>7} {'p50 / serial':>12}")
        for clients, p50, p99, error_count, rate, ratio in rows:
            print(f"{clients:7d} {p50:8.1f} {p99:8.1f} {error_count:6d} {rate:7.1f} {ratio:>12}")
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
