"""Gradio apps over the pipeline's assets, started by `icon-pipeline app NAME`.

- captions: caption review (approve / edit / reject, stored as overrides in PostgreSQL)
- dataset: grouped training pairs, held-out groups, the eval set with its nearest training caption
- augment: training augmentations beside the original, re-rolled on demand
- search: text and image search over the pgvector index, two models side by side

Every app binds 127.0.0.1 unless told otherwise, and turns on HTTP basic auth when the
environment variable named by `auth_env` holds `user:password` (several: comma separated).
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import gradio as gr

APPS: dict[str, str] = {
    "captions": "icon_pipeline.apps.captions",
    "dataset": "icon_pipeline.apps.dataset",
    "augment": "icon_pipeline.apps.augment",
    "search": "icon_pipeline.apps.search",
}
# One port per app, so all four can run at once.
DEFAULT_PORTS: dict[str, int] = {"captions": 7861, "dataset": 7862, "augment": 7863, "search": 7864}
AUTH_ENV = "ICON_PIPELINE_APP_AUTH"
MAX_UPLOAD = "50mb"  # search.MAX_QUERY_BYTES: larger uploads are refused before they reach the app
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class AppError(RuntimeError):
    """An app that cannot start; the message is meant for the user (never contains a password)."""


def _quiet_gradio() -> None:
    # No telemetry or version checks from a machine that may have no internet.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def build_app(name: str) -> gr.Blocks:
    """The Blocks of app `name` (not launched)."""
    if name not in APPS:
        raise AppError(f"unknown app {name!r}; available: {', '.join(APPS)}")
    _quiet_gradio()
    return importlib.import_module(APPS[name]).build()


def parse_auth(value: str | None, env_name: str = AUTH_ENV) -> list[tuple[str, str]] | None:
    """`user:password[,user2:password2]` -> credentials; None when unset or blank."""
    if value is None or not value.strip():
        return None
    pairs = []
    for index, item in enumerate(value.split(","), start=1):
        user, sep, password = item.strip().partition(":")
        if not sep or not user or not password:
            # Say which entry is wrong, never what it contains.
            raise AppError(f"{env_name}: entry {index} is not `user:password` (both non-empty)")
        pairs.append((user, password))
    return pairs


def signed_in_user(blocks: gr.Blocks, request: gr.Request | None) -> str | None:
    """The user this request signed in as, when `blocks` runs with basic auth; None when it runs without.

    Gradio refuses a request without a signed-in user before any handler runs; an app with auth
    whose request still names nobody is refused here too (AppError) rather than trusted.
    """
    if blocks.auth is None:
        return None
    user = getattr(request, "username", None)
    if not user:
        raise AppError("sign in first: this app has basic auth on and the request names no signed-in user")
    return str(user)


@dataclass
class RunningApp:
    name: str
    url: str
    blocks: gr.Blocks

    def close(self) -> None:
        self.blocks.close()


def launch(
    name: str,
    host: str = "127.0.0.1",
    port: int | None = None,
    auth_env: str = AUTH_ENV,
    block: bool = True,
) -> RunningApp:
    """Serve app `name` on host:port (port None: the app's own default, see DEFAULT_PORTS).

    block=False returns once the server is up (tests, notebooks); block=True serves until Ctrl-C.
    """
    from icon_pipeline.core.paths import get_paths

    auth = parse_auth(os.environ.get(auth_env), auth_env)
    blocks = build_app(name)
    port = port if port is not None else DEFAULT_PORTS[name]
    if host not in LOOPBACK and auth is None:
        print(
            f"warning: serving {name} on {host} without a password; set {auth_env}=user:password",
            file=sys.stderr,
        )
    data_dir = get_paths().data_dir
    try:
        blocks.queue(default_concurrency_limit=4)
        _, local_url, _ = blocks.launch(
            server_name=host,
            server_port=port,
            auth=auth,
            auth_message=f"{name}: sign in (credentials from {auth_env})" if auth else None,
            allowed_paths=[str(data_dir)],
            max_file_size=MAX_UPLOAD,
            prevent_thread_lock=True,
            show_error=True,
            quiet=True,
            ssr_mode=False,
            mcp_server=False,
            pwa=False,
            enable_monitoring=False,
        )
    except OSError as exc:
        raise AppError(f"cannot serve {name} on {host}:{port} ({exc}); choose another --port") from None
    url = local_url or f"http://{host}:{port}/"
    running = RunningApp(name, url, blocks)
    if block:
        print(f"{name} on {url} (Ctrl-C to stop)")
        try:
            blocks.block_thread()
        finally:
            running.close()
    return running
