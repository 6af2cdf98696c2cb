"""One icon rendered: its file read under the byte limits, drawn (svg or raster), composed on the
theme, under a time limit (in a killable process for untrusted input)."""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FutureTimeoutError
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from icon_pipeline.core.limits import MAX_RASTER_BYTES
from icon_pipeline.library.records import IconRecord
from icon_pipeline.render.compose import compose_on_theme
from icon_pipeline.render.raster import fit_into, load_raster
from icon_pipeline.render.settings import HARD_TIMEOUT_GRACE_S, RenderError, RenderSettings
from icon_pipeline.render.svg import rasterize_svg


def render_icon(
    source: IconRecord | Path | str,
    settings: RenderSettings | None = None,
    *,
    fmt: Literal["svg", "png"] | None = None,
) -> Image.Image:
    """Render one icon (a record, or a path whose suffix gives the format) to an RGB `size`x`size` image.

    Raises RenderError with a short reason for any bad input. The time limit applies when called
    from a process's main thread (as in the render workers); elsewhere it is not enforced.
    """
    settings = settings or RenderSettings()
    if isinstance(source, IconRecord):
        path, fmt = Path(source.file_path), fmt or source.format
        item = source.icon_id
    else:
        path = Path(source)
        item = str(path)
        fmt = fmt or ("svg" if path.suffix.lower() in (".svg", ".svgz") else "png")
    started = time.perf_counter()
    try:
        with _time_limit(settings.timeout_s):
            if fmt == "svg":
                data = _read_file(path, settings.max_svg_bytes, "SVG")
                glyph = rasterize_svg(data, settings)
            else:
                data = _read_file(path, MAX_RASTER_BYTES, "image")
                glyph = fit_into(load_raster(data), settings.content_box)
            image = compose_on_theme(glyph, settings)
        # The alarm cannot interrupt native code, nor fire where another library owns SIGALRM
        # (or off the main thread): an icon that took too long fails the same way after the fact.
        if time.perf_counter() - started > settings.timeout_s:
            raise _RenderTimeout()
        return image
    except RenderError as exc:
        raise RenderError(exc.reason, item) from None
    except _RenderTimeout:
        raise RenderError(f"timed out after {settings.timeout_s:g}s", item) from None
    except MemoryError:
        raise RenderError("out of memory while rendering", item) from None
    except RecursionError:  # the checks below should leave none: a named failure all the same
        raise RenderError(
            "SVG too deeply nested or self-referencing for the renderer (Python's recursion limit)", item
        ) from None


_isolated_pool: Any = None  # a pebble ProcessPool, started on first use
_isolated_lock = threading.Lock()


def render_icon_isolated(
    source: Path | str,
    settings: RenderSettings | None = None,
    *,
    fmt: Literal["svg", "png"] | None = None,
) -> Image.Image:
    """render_icon in a worker process, stopped (killed) past the time limit: for untrusted files
    rendered off a main thread, as search queries are in the API and the app. There the in-process
    alarm cannot run, and cairo's native code may never return (a circle of radius 1e999 draws
    forever): such a file would hold a server thread and a core for good."""
    from pebble import ProcessExpired, ProcessPool

    global _isolated_pool
    settings = settings or RenderSettings()
    with _isolated_lock:
        if _isolated_pool is None:
            import atexit

            pool = ProcessPool(max_workers=2, context=pool_context())
            atexit.register(pool.stop)
            _isolated_pool = pool
        pool = _isolated_pool
    future = pool.submit(render_icon, settings.timeout_s + HARD_TIMEOUT_GRACE_S, source, settings, fmt=fmt)
    try:
        return future.result()
    except FutureTimeoutError:
        raise RenderError(
            f"timed out after {settings.timeout_s:g}s; the renderer was stopped", str(source)
        ) from None
    except ProcessExpired as exc:
        raise RenderError(f"renderer crashed ({exit_status(exc.exitcode)})", str(source)) from None


class _RenderTimeout(BaseException):
    """Raised by the alarm; a BaseException so library code catching Exception cannot swallow it."""


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise _RenderTimeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _read_file(path: Path, max_bytes: int, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise RenderError(f"{what} file too large: {size} bytes > limit {max_bytes}")
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise RenderError(f"cannot read file: {exc.strerror or exc}") from None
    if len(data) > max_bytes:  # grew since stat
        raise RenderError(f"{what} file too large: > limit {max_bytes} bytes")
    if not data:
        raise RenderError(f"empty {what} file")
    return data


def pool_context() -> multiprocessing.context.BaseContext:
    # forkserver: workers do not inherit the parent's threads and locks (Dagster runs threads),
    # and start faster than spawn.
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # Workers fork from a server that already imported the renderer (cairo, numpy, PIL).
    context.set_forkserver_preload(["icon_pipeline.render.rasterize"])  # every step
    return context


def exit_status(code: int | None) -> str:
    """A worker's exit code in words: a negative one is the signal that killed it."""
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"exit code {code}"
