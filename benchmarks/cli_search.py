"""Wall time of `icon-pipeline search` (a fresh process each time, as a user types it): searching in
its own process (loads the models: seconds) against asking a running `icon-pipeline api` named in
ICON_PIPELINE_API_URL (its models are warm). Prints the figures; asserts nothing.

    python benchmarks/cli_search.py [--runs 3] [query ...]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

CLI = [str(Path(sys.executable).with_name("icon-pipeline"))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(CLI + argv, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("queries", nargs="*", default=["settings", "shopping cart", "turn off notifications"])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "ICON_PIPELINE_API_URL"}
    port = free_port()
    api = subprocess.Popen(CLI + ["api", "--port", str(port)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(url + "api/models", timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise SystemExit("the API did not start") from None
                time.sleep(0.5)
        httpx.get(url + "api/search", params={"q": "warm up"}, timeout=120)  # load the models once
        via_api = {**env, "ICON_PIPELINE_API_URL": url}
        print(f"{'query':28} {'in-process s':>13} {'via API s':>10}  (median of {args.runs})")
        for query in args.queries:
            here = [timed(["search", query, "--here"], env) for _ in range(args.runs)]
            remote = [timed(["search", query], via_api) for _ in range(args.runs)]
            print(f"{query:28} {statistics.median(here):13.2f} {statistics.median(remote):10.2f}")
    finally:
        api.terminate()
        api.wait(timeout=30)


if __name__ == "__main__":
    main()
