"""Concurrent searches share model forwards: queries that arrive while an encoder runs are encoded
together in its next forward.

The API and the search app run searches side by side, each on its own thread. One forward of a
text encoder over 8 short queries costs about two forwards of one (MiniLM on one core: 25 ms
against 15 ms), so a search that finds the encoder busy hands its texts to the next forward and
takes its row of the result. A lone caller (the CLI, the benchmark's batches) runs alone, as before.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Embed = Callable[[Sequence[str]], np.ndarray]


class _Call:
    __slots__ = ("texts", "result", "error", "ready", "lead")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()  # answered, or handed the lead
        self.lead = False


class CoalescedEmbed:
    """Calls of one encoder's `embed(texts) -> (len(texts), dim)`, one forward at a time: the calls
    that arrive while a forward runs wait, and the next forward answers all of them (at most
    `max_texts` texts; a larger call goes alone). The caller whose forward ends hands the lead to
    the first one waiting, which runs the next. Every caller passes the same `embed`; holding none
    itself, this keeps no encoder loaded."""

    def __init__(self, max_texts: int = 256) -> None:
        self.max_texts = max_texts
        self._lock = threading.Lock()
        self._pending: list[_Call] = []
        self._running = False  # a caller is leading (running forwards)

    def __call__(self, embed: Embed, texts: Sequence[str]) -> np.ndarray:
        call = _Call(list(texts))
        with self._lock:
            self._pending.append(call)
            call.lead = not self._running
            self._running = True
        if not call.lead:
            call.ready.wait()
        if call.lead and call.result is None and call.error is None:
            self._lead(embed)
        if call.error is not None:
            raise call.error
        assert call.result is not None
        return call.result

    def _lead(self, embed: Embed) -> None:
        """Run one forward over what waits (this caller's texts among them), then pass the lead on."""
        with self._lock:
            batch, size, rest = [], 0, []
            for call in self._pending:
                if not batch or size + len(call.texts) <= self.max_texts:
                    batch.append(call)
                    size += len(call.texts)
                else:
                    rest.append(call)
            self._pending = rest
        try:
            vectors = embed([text for call in batch for text in call.texts])
        except BaseException as exc:  # each caller of the batch raises it (a KeyboardInterrupt too)
            for call in batch:
                call.error = exc
        else:
            start = 0
            for call in batch:
                call.result = vectors[start : start + len(call.texts)]
                start += len(call.texts)
        finally:
            with self._lock:
                if self._pending:
                    self._pending[0].lead = True  # runs the next forward when it wakes
                    self._pending[0].ready.set()
                else:
                    self._running = False
            for call in batch:
                call.ready.set()


# (id of the encoder object, function) -> (weak reference to the encoder, its CoalescedEmbed)
_shared: dict[tuple[int, Any], tuple[weakref.ref, CoalescedEmbed]] = {}
_shared_lock = threading.Lock()


def shared_embed(method: Embed) -> Embed:
    """`method` (a bound `embed`) through the CoalescedEmbed of its encoder object, one per encoder
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
            coalesced = CoalescedEmbed()
            _shared[key] = (weakref.ref(owner), coalesced)

    def embed(texts: Sequence[str]) -> np.ndarray:
        return coalesced(method, texts)

    return embed
