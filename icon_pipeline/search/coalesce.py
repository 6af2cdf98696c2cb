"""Concurrent searches share batched work: calls that arrive while a batch runs join the next one.

The API and the search app run searches side by side, each on its own thread. One forward of a
text encoder over 8 short queries costs about two forwards of one (MiniLM on one core: 25 ms
against 15 ms), and one matrix product over a resident table for 8 query vectors about three of
one (search/resident.py), so a search that finds the work busy hands its items to the next batch
and takes its share of the result. A lone caller (the CLI, the benchmark's batches) runs alone.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Embed = Callable[[Sequence[str]], np.ndarray]
Batched = Callable[[list[Any]], Sequence[Any]]  # items -> one result per item, in order


class _Call:
    __slots__ = ("items", "result", "error", "ready", "lead")

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.result: Sequence[Any] | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()  # answered, or handed the lead
        self.lead = False


class CoalescedCalls:
    """Calls of one batched function (an encoder's `embed(texts) -> (len(texts), dim)`, a resident
    table's search), one batch at a time: the calls that arrive while a batch runs wait, and the
    next batch answers all of them (at most `max_items` items; a larger call goes alone). The
    caller whose batch ends hands the lead to the first one waiting, which runs the next. Every
    caller passes an equivalent function; holding none itself, this keeps no encoder loaded."""

    def __init__(self, max_items: int = 256) -> None:
        self.max_items = max_items
        self._lock = threading.Lock()
        self._pending: list[_Call] = []
        self._running = False  # a caller is leading (running forwards)

    def __call__(self, run: Batched, items: Sequence[Any]) -> Sequence[Any]:
        call = _Call(list(items))
        with self._lock:
            self._pending.append(call)
            call.lead = not self._running
            self._running = True
        if not call.lead:
            call.ready.wait()
        if call.lead and call.result is None and call.error is None:
            self._lead(run)
        if call.error is not None:
            raise call.error
        assert call.result is not None
        return call.result

    def _lead(self, run: Batched) -> None:
        """Run one batch of what waits (this caller's items among them), then pass the lead on."""
        with self._lock:
            batch, size, rest = [], 0, []
            for call in self._pending:
                if not batch or size + len(call.items) <= self.max_items:
                    batch.append(call)
                    size += len(call.items)
                else:
                    rest.append(call)
            self._pending = rest
        try:
            results = run([item for call in batch for item in call.items])
        except BaseException as exc:  # each caller of the batch raises it (a KeyboardInterrupt too)
            for call in batch:
                call.error = exc
        else:
            start = 0
            for call in batch:
                call.result = results[start : start + len(call.items)]
                start += len(call.items)
        finally:
            with self._lock:
                if self._pending:
                    self._pending[0].lead = True  # runs the next batch when it wakes
                    self._pending[0].ready.set()
                else:
                    self._running = False
            for call in batch:
                call.ready.set()


# (id of the encoder object, function) -> (weak reference to the encoder, its CoalescedCalls)
_shared: dict[tuple[int, Any], tuple[weakref.ref, CoalescedCalls]] = {}
_shared_lock = threading.Lock()


def shared_embed(method: Embed) -> Embed:
    """`method` (a bound `embed`) through the CoalescedCalls of its encoder object, one per encoder
    in this process: every search that uses that encoder joins the same batches. Anything else
    is returned unchanged."""
    owner = getattr(method, "__self__", None)
    function = getattr(method, "__func__", None)
    if owner is None or function is None:
        return method
    key = (id(owner), function)
    with _shared_lock:
        found = _shared.get(key)
        if found is not None and found[0]() is owner:
            coalesced = found[1]
        else:
            for stale in [k for k, (ref, _) in _shared.items() if ref() is None]:
                del _shared[stale]  # encoders unloaded since (an id may be reused)
            coalesced = CoalescedCalls()
            _shared[key] = (weakref.ref(owner), coalesced)

    def embed(texts: Sequence[str]) -> np.ndarray:
        return coalesced(method, texts)

    return embed
