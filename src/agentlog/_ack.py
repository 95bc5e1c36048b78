"""The acknowledgement of an ASYNC ``emit`` (:class:`Ack`) and the batch it is resolved with.

An :class:`Ack` answers like a :class:`concurrent.futures.Future` (``result``, ``exception``, ``done``,
``add_done_callback``) for a fraction of its cost: it is three references (its :class:`_Batch`, its place in
it, its body), the committing thread resolves a whole batch at once (:func:`_resolve`), and the
:class:`~agentlog.Event` is parsed back from the body only when ``result()`` asks. A write error is kept as a
:class:`_Failure` and raised again, with its original traceback, by every acknowledgement of the batch.

This is the one side of the writer that callers hold on to and wait on, and it needs nothing of the queue,
the thread or the log: it lives here so that ``agentlog.writer`` is the writer alone. ``agentlog.writer``
re-exports :class:`Ack`; :class:`~agentlog.EventWriter` makes the batches and acknowledgements (``emit``
builds them inline, with :data:`_new`, as it is the hot path).
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_right
from collections.abc import Callable
from typing import NoReturn

from . import _json
from .event import Event, IdBlock, event_from_record

__all__ = ["Ack"]


# Acknowledgements are resolved by the committing threads and waited for by callers: one condition for all
# of them (waiting is rare; an object to wait on per event would cost more than the rest of emit), notified
# once per batch.
_RESOLVED = threading.Condition()


class _Failure:
    """The error that kept events off the disk, with the traceback it had when it was caught. It is raised
    again from there every time (as asyncio's futures do): one exception is shared by every acknowledgement
    of its batch and by ``flush()``, and raising the same object again would lengthen its traceback (and
    keep each raising frame alive) once per raise."""

    __slots__ = ("exc", "tb")

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.tb = exc.__traceback__

    def raise_(self) -> NoReturn:
        raise self.exc.with_traceback(self.tb)


# What a batch's commit ended in: (seq of its first event, ts), its spooled events, or the error.
_Outcome = tuple[int, str] | list[Event] | _Failure


class _Batch:
    """Events for one stream, in emit order, taken by the thread as a whole."""

    __slots__ = ("callbacks", "chunks", "finished", "ids", "outcome", "stream", "tails")

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.tails: list[bytes] = []  # the events' bodies after their brace (event_tail)
        self.ids: IdBlock | None = None  # given by the thread when it takes the batch
        self.finished = False
        self.outcome: _Outcome | None = None
        # A batch longer than batch_size is committed in chunks: (first index, outcome) for each.
        self.chunks: list[tuple[int, _Outcome]] | None = None
        self.callbacks: list[tuple[Callable[[Ack], object], Ack]] | None = None

    def outcome_of(self, index: int) -> tuple[_Outcome, int]:
        """The outcome of the event at ``index`` and its place in the part of the batch it was written with."""
        chunks = self.chunks
        if chunks is None:
            assert self.outcome is not None
            return self.outcome, index
        start, outcome = chunks[bisect_right(chunks, index, key=_first) - 1]
        return outcome, index - start


def _first(chunk: tuple[int, _Outcome]) -> int:
    return chunk[0]


def _settled() -> _Batch:
    batch = _Batch("")
    batch.outcome = (0, "")  # never read: a settled acknowledgement answers from its event
    batch.finished = True
    return batch


#: The batch of every acknowledgement whose event has been built: done, and not failed.
_SETTLED = _settled()


def _failed_batch(stream: str, exc: BaseException) -> _Batch:
    batch = _Batch(stream)
    batch.outcome = _Failure(exc)
    batch.finished = True
    return batch


class Ack:
    """The acknowledgement of one ASYNC ``emit``: ``result(timeout)`` is the durable :class:`~agentlog.Event`,
    or raises what kept it off the disk (:class:`~agentlog.EventDropped`, a :class:`~agentlog.StorageError`, ...).

    It answers like a :class:`concurrent.futures.Future` (``result``, ``exception``, ``done``,
    ``add_done_callback``; an emitted event cannot be cancelled) for a fraction of its cost: the writer's
    thread resolves a whole batch at once, and the event is built from the stored line's body on the first
    ``result()`` (so its ``data`` is an equal copy of what was emitted, as a later read returns it); the same
    object is returned after that. A spooled event comes back with ``spooled`` true.
    """

    __slots__ = ("_batch", "_event", "_index", "_tail")

    _batch: _Batch
    _tail: bytes
    _event: Event
    _index: int

    def done(self) -> bool:
        """True once the event is durable (or spooled) or has failed."""
        return self._batch.finished

    def result(self, timeout: float | None = None) -> Event:
        """The durable event; waits up to ``timeout`` seconds (forever when ``None``), then raises
        :class:`TimeoutError`. Raises the error that kept the event off the disk."""
        batch = self._batch
        if not batch.finished:
            self._wait(timeout)
        try:
            return self._event
        except AttributeError:
            pass
        outcome, offset = batch.outcome_of(self._index)
        if isinstance(outcome, _Failure):
            outcome.raise_()
        if isinstance(outcome, list):
            event = outcome[offset]  # spooled: the spool made the events
        else:
            try:
                tail = self._tail
            except AttributeError:  # another thread's result() built the event meanwhile
                return self._event
            first, ts = outcome
            assert batch.ids is not None
            event = event_from_record(_json.loads(b"{" + tail), batch.stream, first + offset)
            event.id = batch.ids[self._index].decode()
            event.ts = ts
        with _RESOLVED:  # against another thread's result() on this acknowledgement: one event, built once
            try:
                return self._event
            except AttributeError:
                pass
            self._event = event
            # What made the event is not needed any more: a kept acknowledgement keeps only its event, not its
            # batch's ids (nor its own body).
            self._batch = _SETTLED
            del self._tail
        return event

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The error that kept the event off the disk, or ``None`` once it is durable; waits like ``result``."""
        batch = self._batch
        if not batch.finished:
            self._wait(timeout)
        outcome, _ = batch.outcome_of(self._index)
        return outcome.exc if isinstance(outcome, _Failure) else None

    def add_done_callback(self, fn: Callable[[Ack], object]) -> None:
        """Call ``fn(ack)`` once the acknowledgement is done: at once if it is, else from the writer's thread.
        Exceptions from ``fn`` are logged, as :class:`concurrent.futures.Future` does."""
        batch = self._batch
        with _RESOLVED:
            if not batch.finished:
                if batch.callbacks is None:
                    batch.callbacks = []
                batch.callbacks.append((fn, self))
                return
        _call_back(fn, self)

    def cancel(self) -> bool:
        """An emitted event cannot be taken back: always ``False``."""
        return False

    def cancelled(self) -> bool:
        return False

    def _wait(self, timeout: float | None) -> None:
        batch = self._batch
        with _RESOLVED:
            if not _RESOLVED.wait_for(lambda: batch.finished, timeout):
                raise TimeoutError(f"the event was not durable within {timeout} s")

    def __repr__(self) -> str:
        batch = self._batch
        if not batch.finished:
            state = "pending"
        else:
            outcome, _ = batch.outcome_of(self._index)
            state = "failed" if isinstance(outcome, _Failure) else "done"
        try:
            return f"<Ack {state} {self._event!r}>"
        except AttributeError:
            return f"<Ack {state} stream={batch.stream!r}>"


_new = object.__new__


def _ack(batch: _Batch, index: int, tail: bytes) -> Ack:
    ack: Ack = _new(Ack)
    ack._batch = batch
    ack._index = index
    ack._tail = tail
    return ack


def _call_back(fn: Callable[[Ack], object], ack: Ack) -> None:
    try:
        fn(ack)
    except Exception:
        import logging

        logging.getLogger("agentlog").exception("EventWriter: exception calling callback for %r", ack)


def _resolve(batch: _Batch) -> None:
    """Mark ``batch`` done (its outcome is set), wake whoever waits, run its callbacks."""
    with _RESOLVED:
        batch.finished = True
        _RESOLVED.notify_all()
        callbacks, batch.callbacks = batch.callbacks, None
    if callbacks:
        for fn, ack in callbacks:
            _call_back(fn, ack)


def _after_fork() -> None:
    global _RESOLVED
    # Another thread may have held it at the fork; the parent's pending acknowledgements are not ours.
    _RESOLVED = threading.Condition()


os.register_at_fork(after_in_child=_after_fork)
