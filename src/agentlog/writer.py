"""``EventWriter``: emit events synchronously, or asynchronously with group commit.

001 describes an asynchronous writer that queued events for an asyncio task; when the simulation blocked the
event loop, the task never ran and the events never reached the disk. Here the asynchronous mode commits from
a background **thread**, which runs whatever the caller's event loop is doing, and it commits in batches: one
lock, one ``write()`` and one ``fsync`` for everything queued meanwhile, so durability costs one flush per
batch rather than per event.

* ``WriteMode.SYNC``: ``emit`` returns the durable :class:`~agentlog.Event`.
* ``WriteMode.ASYNC``: ``emit`` returns a :class:`concurrent.futures.Future`; ``.result(timeout)`` gives the
  event once it is durable, or raises the error that kept it from the disk. The queue is bounded:
  ``on_full="block"`` (the default) makes ``emit`` wait, ``on_full="drop"`` fails the future with
  :class:`EventDropped` and counts it in ``writer.dropped``.

Nothing is swallowed: a write error reaches every future of the batch, the next ``flush()``/``stop()``, and
the ``agentlog`` logger. Pending events are flushed at interpreter exit. A forked child starts with an empty
queue of its own, so the parent's pending events are written once, by the parent.
"""

from __future__ import annotations

import atexit
import enum
import os
import queue
import threading
import weakref
from collections.abc import Awaitable
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from .errors import AgentlogError
from .event import Draft, Event, make_draft
from .log import EventLog
from .names import validate_stream_name

__all__ = ["EventDropped", "EventWriter", "Verbosity", "WriteMode", "should_log_event"]


class WriteMode(enum.Enum):
    SYNC = "sync"
    ASYNC = "async"


class Verbosity(enum.IntEnum):
    """Levels for filtering, numbered like :mod:`logging` so the two can be mixed."""

    DEBUG = 10
    INFO = 20
    WARNING = 30
    ERROR = 40
    CRITICAL = 50


def should_log_event(level: str | int | None, verbosity: Verbosity | int) -> bool:
    """True when an event at ``level`` passes a writer set to ``verbosity``.

    ``level`` is the event's ``level`` field: a name (``"info"``, any case) or a number; an event without one
    counts as ``INFO``; an unknown name always passes, since dropping what we cannot rank would lose data.
    """
    if level is None:
        rank = int(Verbosity.INFO)
    elif isinstance(level, int):
        rank = level
    else:
        try:
            rank = int(Verbosity[level.upper()])
        except KeyError:
            return True
    return rank >= int(verbosity)


class EventDropped(AgentlogError):
    """The writer's queue was full and its policy is ``on_full="drop"``."""


class _Marker:
    """A flush or stop request travelling through the queue behind the events emitted before it."""

    __slots__ = ("done", "stop")

    def __init__(self, stop: bool = False) -> None:
        self.done: Future[None] = Future()
        self.stop = stop


_Item = tuple[str, Draft, "Future[Event]"] | _Marker


class EventWriter:
    """Emit events to an :class:`~agentlog.EventLog` in SYNC or ASYNC (group commit) mode."""

    def __init__(self, log: EventLog, *, mode: WriteMode | str = WriteMode.SYNC,
                 verbosity: Verbosity | int = Verbosity.DEBUG, queue_size: int = 10_000, batch_size: int = 1_000,
                 on_full: str = "block") -> None:
        if queue_size <= 0 or batch_size <= 0:
            raise ValueError("queue_size and batch_size must be positive")
        if on_full not in ("block", "drop"):
            raise ValueError(f"on_full must be 'block' or 'drop', got {on_full!r}")
        self.log = log
        self.mode = WriteMode(mode)
        self.verbosity = verbosity
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.on_full = on_full
        #: Events refused because the queue was full (``on_full="drop"``).
        self.dropped = 0
        #: Events filtered out by ``verbosity``.
        self.filtered = 0
        self._lock = threading.Lock()
        self._errors: list[BaseException] = []
        self._reset()
        _LIVE.add(self)

    def _reset(self) -> None:
        self._queue: queue.Queue[_Item] = queue.Queue(self.queue_size)
        self._thread: threading.Thread | None = None
        self._stopped = False

    # --- emitting -------------------------------------------------------------------------------------

    def emit(self, stream: str, type: str, *, data: dict[str, Any] | None = None,
             **fields: Any) -> Event | Future[Event] | None:
        """Emit one event: the durable ``Event`` (SYNC), a ``Future`` of it (ASYNC), or ``None`` when
        ``verbosity`` filters it out. Bad input raises :class:`~agentlog.InvalidEvent` here, in both modes."""
        if not should_log_event(fields.get("level"), self.verbosity):
            self.filtered += 1
            return None
        if self.mode is WriteMode.SYNC:
            return self.log.append(stream, type, data=data, **fields)
        stream, draft = self._draft(stream, type, data, fields)
        future = self._enqueue(stream, draft, block=self.on_full == "block")
        if future is None:
            future = Future()
            future.set_exception(self._dropped())
        return future

    async def aemit(self, stream: str, type: str, *, data: dict[str, Any] | None = None,
                    **fields: Any) -> Event | None:
        """``emit`` for asyncio code: never blocks the event loop; returns the durable event."""
        import asyncio

        if not should_log_event(fields.get("level"), self.verbosity):
            self.filtered += 1
            return None
        if self.mode is WriteMode.SYNC:
            return await asyncio.to_thread(self.log.append, stream, type, data=data, **fields)
        stream, draft = self._draft(stream, type, data, fields)
        future = self._enqueue(stream, draft, block=False)
        if future is None:
            if self.on_full == "drop":
                raise self._dropped()
            # Wait for room in a worker thread: the event loop itself must never block.
            future = await asyncio.to_thread(self._enqueue, stream, draft, block=True)
        assert future is not None
        result: Awaitable[Event] = asyncio.wrap_future(future)
        return await result

    def _draft(self, stream: str, type: str, data: dict[str, Any] | None,
               fields: dict[str, Any]) -> tuple[str, Draft]:
        validate_stream_name(stream)
        actor = fields.pop("actor", None)
        return stream, make_draft(stream, type, data=data, actor=actor, fields=fields,
                                  max_event_bytes=self.log.max_event_bytes)

    def _enqueue(self, stream: str, draft: Draft, *, block: bool) -> Future[Event] | None:
        """Queue one event; ``None`` when the queue is full and ``block`` is false."""
        if self._stopped:
            raise AgentlogError("the writer is stopped")
        self._ensure_thread()
        future: Future[Event] = Future()
        try:
            self._queue.put((stream, draft, future), block=block)
        except queue.Full:
            return None
        return future

    def _dropped(self) -> EventDropped:
        with self._lock:
            self.dropped += 1
        return EventDropped(f"queue full ({self.queue_size} events): event dropped")

    # --- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> EventWriter:
        """Start the background thread (ASYNC; ``emit`` also starts it on first use)."""
        if self.mode is WriteMode.ASYNC:
            self._ensure_thread()
        return self

    def flush(self, timeout: float | None = None) -> None:
        """Block until every event emitted so far is durable; raise the first write error since the last
        flush (events that failed are not retried)."""
        if self.mode is WriteMode.ASYNC and self._thread is not None and self._thread.is_alive():
            marker = _Marker()
            self._queue.put(marker)
            marker.done.result(timeout)
        self._raise_pending()

    def stop(self, timeout: float | None = None) -> None:
        """Flush, then end the background thread. Raises the first pending write error."""
        if self.mode is WriteMode.ASYNC and self._thread is not None and self._thread.is_alive():
            marker = _Marker(stop=True)
            self._queue.put(marker)
            marker.done.result(timeout)
            self._thread.join(timeout)
        self._stopped = True
        self._raise_pending()

    def __enter__(self) -> EventWriter:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _raise_pending(self) -> None:
        with self._lock:
            errors, self._errors = self._errors, []
        if errors:
            raise errors[0]

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                # A daemon thread cannot keep the interpreter alive; the atexit hook flushes it first.
                self._thread = threading.Thread(target=self._run, name="agentlog-writer", daemon=True)
                self._thread.start()

    # --- the committing thread ------------------------------------------------------------------------

    def _run(self) -> None:
        q = self._queue
        while True:
            items = [q.get()]
            while len(items) < self.batch_size:
                try:
                    items.append(q.get_nowait())
                except queue.Empty:
                    break
            if self._commit(items):
                return

    def _commit(self, items: list[_Item]) -> bool:
        """Write ``items`` with one append per stream, resolving markers in order; True on a stop marker."""
        pending: dict[str, list[tuple[Draft, Future[Event]]]] = {}
        for item in items:
            if isinstance(item, _Marker):
                self._write(pending)
                pending = {}
                item.done.set_result(None)
                if item.stop:
                    return True
            else:
                stream, draft, future = item
                pending.setdefault(stream, []).append((draft, future))
        self._write(pending)
        return False

    def _write(self, pending: dict[str, list[tuple[Draft, Future[Event]]]]) -> None:
        for stream, entries in pending.items():
            try:
                events = self.log.append_drafts(stream, [draft for draft, _ in entries])
            except BaseException as exc:  # every error must reach the caller, whatever it is
                with self._lock:
                    self._errors.append(exc)
                import logging

                logging.getLogger("agentlog").error("EventWriter: %d event(s) for %r not written: %s",
                                                    len(entries), stream, exc)
                for _, future in entries:
                    future.set_exception(exc)
                continue
            for (_, future), event in zip(entries, events, strict=True):
                future.set_result(event)

    def _after_fork_in_child(self) -> None:
        # The parent's queued events are the parent's to write: a child that wrote them too would write
        # them twice. The child starts empty, with its own thread when it first emits.
        self._reset()


_LIVE: weakref.WeakSet[EventWriter] = weakref.WeakSet()


def _flush_at_exit() -> None:
    for writer in list(_LIVE):
        if writer.mode is WriteMode.ASYNC and writer._thread is not None and writer._thread.is_alive():
            try:
                writer.stop(timeout=60)
            except BaseException as exc:  # at exit there is no caller left: say it
                import logging

                logging.getLogger("agentlog").error("EventWriter: flush at exit failed: %s", exc)


def _after_fork() -> None:
    for writer in list(_LIVE):
        writer._after_fork_in_child()


atexit.register(_flush_at_exit)
os.register_at_fork(after_in_child=_after_fork)
