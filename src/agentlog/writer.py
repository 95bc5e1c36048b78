"""``EventWriter``: emit events synchronously, or asynchronously with group commit.

001 describes an asynchronous writer that queued events for an asyncio task; when the simulation blocked the
event loop, the task never ran and the events never reached the disk. Here the asynchronous mode commits from
a background **thread**, which runs whatever the caller's event loop is doing, and it commits in batches: one
lock, one ``write()`` and one ``fsync`` for everything queued meanwhile, so durability costs one flush per
batch rather than per event.

* ``WriteMode.SYNC``: ``emit`` returns the durable :class:`~agentlog.Event`.
* ``WriteMode.ASYNC``: ``emit`` returns an :class:`Ack` at once; ``.result(timeout)`` gives the event once it
  is durable, or raises the error that kept it from the disk (``done()``, ``exception()`` and
  ``add_done_callback()`` work as on a :class:`concurrent.futures.Future`). The queue is bounded:
  ``on_full="block"`` (the default) makes ``emit`` wait, ``on_full="drop"`` fails the acknowledgement with
  :class:`EventDropped` and counts it in ``writer.dropped``.

Nothing is swallowed: a write error reaches every acknowledgement of the batch, the next
``flush()``/``stop()``, and the ``agentlog`` logger. Pending events are flushed at interpreter exit. A forked
child starts with an empty queue of its own, so the parent's pending events are written once, by the parent.

How the hand-off stays cheap at group-commit rates (hundreds of thousands of events a second, sharing the GIL
with the committing thread): ``emit`` checks and serialises the event (:func:`~agentlog.event.event_tail`)
and appends the bytes to its stream's open batch, under one lock; the thread takes every open batch at once,
ids each with :func:`~agentlog.event.uuid7_block` and writes it with one format for the whole batch
(``EventLog.store_records``), getting back the first ``seq`` and the ``ts``. An acknowledgement is three
references (its batch, its place in it, its body) resolved with its whole batch, and its
:class:`~agentlog.Event` is parsed back from the body only when ``result()`` asks. So an event that nobody
waits for leaves no object behind for the garbage collector to walk while it is queued.

This module is the writer: its modes, queue, committing thread, exit flush and fork handling. The
acknowledgement and the batch it is resolved with are in :mod:`agentlog._ack`, the verbosity levels in
:mod:`agentlog._verbosity`; ``Ack``, ``Verbosity`` and ``should_log_event`` are re-exported from here, where
they have always been imported from.
"""

from __future__ import annotations

import atexit
import enum
import os
import threading
import weakref
from types import TracebackType
from typing import Any

from ._ack import Ack, _ack, _Batch, _failed_batch, _Failure, _new, _Outcome, _resolve
from ._verbosity import Verbosity, should_log_event
from .errors import AgentlogError
from .event import Event, IdBlock, event_tail_of, prepare_random, uuid7_block
from .log import EventLog
from .names import validate_stream_name

__all__ = ["Ack", "EventDropped", "EventWriter", "Verbosity", "WriteMode", "should_log_event"]


class WriteMode(enum.Enum):
    SYNC = "sync"
    ASYNC = "async"


class EventDropped(AgentlogError):
    """The writer's queue was full and its policy is ``on_full="drop"``."""


class _Marker:
    """A flush or stop request, queued behind the batches of the events emitted before it."""

    __slots__ = ("done", "stop")

    def __init__(self, stop: bool = False) -> None:
        self.done = threading.Event()
        self.stop = stop


_INFO = int(Verbosity.INFO)
_ASYNC = WriteMode.ASYNC
# Stream names already validated (exact strings that passed validate_stream_name); bounded.
_VALID_STREAMS: set[str] = set()
_VALID_STREAMS_MAX = 4096


class EventWriter:
    """Emit events to an :class:`~agentlog.EventLog` in SYNC or ASYNC (group commit) mode."""

    def __init__(self, log: EventLog, *, mode: WriteMode | str = WriteMode.SYNC,
                 verbosity: Verbosity | int = Verbosity.DEBUG, queue_size: int = 10_000,
                 batch_size: int = 10_000, on_full: str = "block") -> None:
        if queue_size <= 0 or batch_size <= 0:
            raise ValueError("queue_size and batch_size must be positive")
        if on_full not in ("block", "drop"):
            raise ValueError(f"on_full must be 'block' or 'drop', got {on_full!r}")
        self.log = log
        self._mode = WriteMode(mode)
        self._verbosity = verbosity
        #: The most events waiting for the thread to take them; emit blocks or drops beyond it.
        self.queue_size = queue_size
        #: The most events one write and one fsync take: a longer batch is committed in parts.
        self.batch_size = batch_size
        self.on_full = on_full
        #: Events refused because the queue was full (``on_full="drop"``).
        self.dropped = 0
        #: Events filtered out by ``verbosity``.
        self.filtered = 0
        self._reset()
        _LIVE.add(self)
        if self._mode is _ASYNC:
            prepare_random()  # what the thread ids batches with: loaded now, not during the first batch

    def _reset(self) -> None:
        # One lock for the queue, the thread's sleep and a full queue's wait.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the thread waits here for work
        self._room = threading.Condition(self._lock)  # emit waits here on a full queue
        self._open: dict[str, _Batch] = {}  # each stream's batch that emit appends to
        self._sealed: list[_Batch | _Marker] = []  # closed by flush/stop, in order, before the open ones
        self._pending = 0  # events in _open and _sealed: what queue_size bounds
        self._idle = False  # the thread waits on _wake
        self._room_waiters = 0
        self._errors: list[_Failure] = []
        self._work: list[_Batch | _Marker] = []  # what the thread is committing now (read after a fork)
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._exited = False
        self._settle()

    def _settle(self) -> None:
        # emit's one check: ASYNC, started and not stopped, and an event without a level (INFO) passes.
        self._fast = (self._mode is _ASYNC and self._thread is not None and not self._stopped
                      and int(self._verbosity) <= _INFO)

    @property
    def mode(self) -> WriteMode:
        return self._mode

    @mode.setter
    def mode(self, mode: WriteMode | str) -> None:
        mode = WriteMode(mode)
        if mode is not _ASYNC and self._running():
            # What is queued goes first, or a SYNC emit would overtake it (errors wait for flush/stop).
            self._await_marker(_Marker(), None)
        self._mode = mode
        self._settle()

    @property
    def verbosity(self) -> Verbosity | int:
        return self._verbosity

    @verbosity.setter
    def verbosity(self, verbosity: Verbosity | int) -> None:
        self._verbosity = verbosity
        self._settle()

    # --- emitting -------------------------------------------------------------------------------------

    def emit(self, stream: str, type: str, *, data: dict[str, Any] | None = None, actor: str | None = None,
             level: str | None = None, visibility: str | None = None, interaction: int | None = None,
             **fields: Any) -> Event | Ack | None:
        """Emit one event: the durable ``Event`` (SYNC), its :class:`Ack` (ASYNC), or ``None`` when
        ``verbosity`` filters it out. Bad input raises :class:`~agentlog.InvalidEvent` here, in both modes.

        The envelope's fields are named (``log.append`` takes them in ``**fields``): keyword arguments bound
        to parameters cost far less than a dict to look them up in, and this runs for every event."""
        if not self._fast:
            return self._emit(stream, type, data, actor, level, visibility, interaction, fields)
        if level is not None and not should_log_event(level, self._verbosity):
            self.filtered += 1
            return None
        if stream.__class__ is not str or stream not in _VALID_STREAMS:  # (an unhashable name is refused)
            _remember_stream(stream)
        tail = event_tail_of(stream, type, data, actor, level, visibility, interaction,
                             _fields(level, visibility, interaction, fields) if fields else None,
                             self.log.max_event_bytes)
        # _enqueue_slowly's common case, inline: this runs for every event. acquire/release rather than
        # `with`, which costs more than everything else the lock guards here.
        lock = self._lock
        lock.acquire()
        try:
            if self._pending >= self.queue_size or self._stopped:
                return self._enqueue_slowly(stream, tail, self.on_full == "block") or self._drop(stream, tail)
            batch = self._open.get(stream)
            if batch is None:
                batch = self._open[stream] = _Batch(stream)
            tails = batch.tails
            index = len(tails)
            tails.append(tail)
            self._pending += 1
            if self._idle:
                self._wake.notify()
        finally:
            lock.release()
        ack: Ack = _new(Ack)
        ack._batch = batch
        ack._index = index
        ack._tail = tail
        return ack

    def _emit(self, stream: str, type: str, data: dict[str, Any] | None, actor: str | None, level: str | None,
              visibility: str | None, interaction: int | None, fields: dict[str, Any]) -> Event | Ack | None:
        """``emit`` when its one check fails: SYNC, filtered, not started yet, or stopped."""
        if not should_log_event(level, self._verbosity):
            self.filtered += 1
            return None
        given = _fields(level, visibility, interaction, fields)
        if self._mode is not _ASYNC:
            return self.log.append(stream, type, data=data, actor=actor, **given)
        tail = self._checked_tail(stream, type, data, actor, level, visibility, interaction, given)
        with self._lock:
            return self._enqueue_slowly(stream, tail, self.on_full == "block") or self._drop(stream, tail)

    def _checked_tail(self, stream: str, type: str, data: dict[str, Any] | None, actor: str | None,
                      level: str | None, visibility: str | None, interaction: int | None,
                      given: dict[str, Any]) -> bytes:
        """The event serialised for the queue, after every check ``emit``/``aemit`` make before queueing it;
        starts the thread if need be."""
        validate_stream_name(stream)
        tail = event_tail_of(stream, type, data, actor, level, visibility, interaction, given,
                             self.log.max_event_bytes)
        if self._stopped:
            raise AgentlogError("the writer is stopped")
        self._ensure_thread()
        return tail

    def _enqueue_slowly(self, stream: str, tail: bytes, block: bool) -> Ack | None:
        """Queue ``tail`` (the lock is held) when the queue may be full or the writer stopped: waits for room
        when ``block``, else returns ``None`` on a full queue."""
        if self._stopped:
            raise AgentlogError("the writer is stopped")
        if self._pending >= self.queue_size:
            if not block:
                return None
            self._room_waiters += 1
            try:
                while self._pending >= self.queue_size:
                    if self._exited or self._stopped:
                        raise AgentlogError("the writer is stopped")
                    self._room.wait()
            finally:
                self._room_waiters -= 1
        batch = self._open.get(stream)
        if batch is None:
            batch = self._open[stream] = _Batch(stream)
        index = len(batch.tails)
        batch.tails.append(tail)
        self._pending += 1
        if self._idle:
            self._wake.notify()
        return _ack(batch, index, tail)

    def _drop(self, stream: str, tail: bytes) -> Ack:
        """The acknowledgement of an event refused by a full queue (the lock is held)."""
        self.dropped += 1
        return _ack(_failed_batch(stream, self._dropped()), 0, tail)

    def _dropped(self) -> EventDropped:
        return EventDropped(f"queue full ({self.queue_size} events): event dropped")

    async def aemit(self, stream: str, type: str, *, data: dict[str, Any] | None = None, actor: str | None = None,
                    level: str | None = None, visibility: str | None = None, interaction: int | None = None,
                    **fields: Any) -> Event | None:
        """``emit`` for asyncio code: never blocks the event loop; returns the durable event."""
        import asyncio

        if not should_log_event(level, self._verbosity):
            self.filtered += 1
            return None
        given = _fields(level, visibility, interaction, fields)
        if self._mode is not _ASYNC:
            return await asyncio.to_thread(self.log.append, stream, type, data=data, actor=actor, **given)
        tail = self._checked_tail(stream, type, data, actor, level, visibility, interaction, given)
        with self._lock:
            queued = self._enqueue_slowly(stream, tail, False)
            if queued is None and self.on_full == "drop":
                self.dropped += 1
                raise self._dropped()
        if queued is None:
            # Wait for room in a worker thread: the event loop itself must never block.
            def wait_and_enqueue() -> Ack | None:
                with self._lock:
                    return self._enqueue_slowly(stream, tail, True)

            queued = await asyncio.to_thread(wait_and_enqueue)
        assert queued is not None
        ack = queued
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Event] = loop.create_future()

        def settle() -> None:
            if done.done():
                return
            exc = ack.exception(0)
            if exc is not None:
                done.set_exception(exc)
            else:
                done.set_result(ack.result(0))

        def from_writer(_: Ack) -> None:
            try:
                loop.call_soon_threadsafe(settle)
            except RuntimeError:  # the loop was closed meanwhile: nobody is awaiting any more
                pass

        ack.add_done_callback(from_writer)
        return await done

    # --- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> EventWriter:
        """Start the background thread (ASYNC; ``emit`` also starts it on first use)."""
        if self._mode is _ASYNC:
            self._ensure_thread()
        return self

    def flush(self, timeout: float | None = None) -> None:
        """Block until every event emitted so far is durable; raise the first write error since the last
        flush (events that failed are not retried)."""
        if self._running():
            self._await_marker(_Marker(), timeout)
        self._raise_pending()

    def stop(self, timeout: float | None = None) -> None:
        """Flush, then end the background thread. Raises the first pending write error."""
        if self._running():
            assert self._thread is not None
            self._await_marker(_Marker(stop=True), timeout)
            self._thread.join(timeout)
        with self._lock:
            self._stopped = True
            self._settle()
        self._raise_pending()

    def _running(self) -> bool:
        # Not "the mode is ASYNC": the mode may have been set to SYNC since, and what the thread holds still
        # counts for flush, stop and exit.
        return self._thread is not None and self._thread.is_alive()

    def _await_marker(self, marker: _Marker, timeout: float | None) -> None:
        with self._lock:
            if self._exited:  # the thread has ended (and failed what it left): nobody would answer
                return
            if marker.stop:
                self._stopped = True  # nothing emitted after the marker is accepted
                self._settle()
                self._room.notify_all()  # an emit waiting for room fails rather than wait for nobody
            # Behind every batch open now: they hold events emitted before the marker.
            self._sealed.extend(self._open.values())
            self._open = {}
            self._sealed.append(marker)
            if self._idle:
                self._wake.notify()
        if not marker.done.wait(timeout):
            raise TimeoutError(f"the writer did not flush within {timeout} s")

    def __enter__(self) -> EventWriter:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _raise_pending(self) -> None:
        with self._lock:
            errors, self._errors = self._errors, []
        if errors:
            errors[0].raise_()

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                # A daemon thread cannot keep the interpreter alive; the atexit hook flushes it first.
                self._thread = threading.Thread(target=self._run, name="agentlog-writer", daemon=True)
                self._thread.start()
                self._settle()

    # --- the committing thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._open and not self._sealed:
                        self._idle = True
                        self._wake.wait()
                    self._idle = False
                    work = self._sealed
                    work.extend(self._open.values())
                    self._sealed = []
                    self._open = {}
                    self._pending = 0
                    if self._room_waiters:
                        self._room.notify_all()
                self._work = work
                stop = False
                for item in work:
                    if isinstance(item, _Marker):
                        item.done.set()  # everything taken before it is resolved
                        stop = stop or item.stop
                    else:
                        self._commit(item)
                self._work = []
                if stop:
                    return
        finally:
            with self._lock:
                self._exited = True
                self._stopped = True
                self._settle()
                left = self._sealed + list(self._open.values())
                self._sealed = []
                self._open = {}
                self._room.notify_all()
            for item in left:  # none unless the thread died: say so to whoever waits
                if isinstance(item, _Marker):
                    item.done.set()
                else:
                    item.outcome = _Failure(AgentlogError("the writer is stopped"))
                    _resolve(item)

    def _commit(self, batch: _Batch) -> None:
        """Id, write and resolve one stream's batch: one write and one fsync per ``batch_size`` events."""
        tails = batch.tails
        n = len(tails)
        size = self.batch_size
        try:
            ids = batch.ids = uuid7_block(n)
            if n <= size:
                batch.outcome = self._write(batch.stream, ids, tails)
            else:
                batch.chunks = [(start, self._write(batch.stream, ids[start:start + size],
                                                    tails[start:start + size]))
                                for start in range(0, n, size)]
        except BaseException as exc:  # not the write's (that one is kept): still, nobody may wait forever
            batch.chunks = None
            batch.outcome = self._failed(batch.stream, n, exc)
        batch.tails = []  # each acknowledgement has its own: the batch need not keep them all alive
        _resolve(batch)

    def _write(self, stream: str, ids: IdBlock, tails: list[bytes]) -> _Outcome:
        try:
            return self.log.store_records(stream, ids, tails)
        except BaseException as exc:  # every error must reach the caller, whatever it is
            return self._failed(stream, len(tails), exc)

    def _failed(self, stream: str, n: int, exc: BaseException) -> _Failure:
        """Keep ``exc`` for the next flush/stop and log it; it is the outcome of the ``n`` events."""
        failure = _Failure(exc)
        with self._lock:
            self._errors.append(failure)
        import logging

        logging.getLogger("agentlog").error("EventWriter: %d event(s) for %r not written: %s", n, stream, exc)
        return failure

    def _after_fork_in_child(self) -> None:
        # The parent's queued events are the parent's to write: a child that wrote them too would write
        # them twice. The child starts empty, with its own thread when it first emits. Their acknowledgements,
        # copied into the child, would wait forever there for a thread the child does not have: they fail,
        # saying so (the parent's own acknowledgements are untouched; its callbacks do not run here).
        inherited = [*self._sealed, *self._open.values(), *self._work]
        self._reset()
        failure = _Failure(AgentlogError(
            "emitted before this process was forked: the parent process writes the event, and only the "
            "parent's acknowledgement can tell when it is durable"))
        for item in inherited:
            if isinstance(item, _Batch) and not item.finished:
                item.callbacks = item.chunks = None
                item.outcome = failure
                _resolve(item)


def _fields(level: str | None, visibility: str | None, interaction: int | None,
            fields: dict[str, Any]) -> dict[str, Any]:
    """Every field but type, data and actor, as ``log.append`` and the full checks take them (the named ones
    first: what the caller wrote in between is not known any more; None values are skipped as ever)."""
    given = {key: value for key, value in (("level", level), ("visibility", visibility),
                                           ("interaction", interaction)) if value is not None}
    given.update(fields)
    return given


def _remember_stream(stream: str) -> None:
    validate_stream_name(stream)
    if stream.__class__ is str and len(_VALID_STREAMS) < _VALID_STREAMS_MAX:
        _VALID_STREAMS.add(stream)


_LIVE: weakref.WeakSet[EventWriter] = weakref.WeakSet()


def _flush_at_exit() -> None:
    for writer in list(_LIVE):
        if writer._running():
            try:
                writer.stop(timeout=60)
            except BaseException as exc:  # at exit there is no caller left: say it
                import logging

                logging.getLogger("agentlog").error("EventWriter: flush at exit failed: %s", exc)


def _after_fork() -> None:
    # (The acknowledgements' condition is renewed by _ack's own hook, registered before this one.)
    for writer in list(_LIVE):
        writer._after_fork_in_child()


atexit.register(_flush_at_exit)
os.register_at_fork(after_in_child=_after_fork)
