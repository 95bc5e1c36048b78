"""``EventLog``: the one facade every view and edge uses.

It checks names and events, then hands storage to a backend (:mod:`agentlog.backends`). Queries that can be
expressed with ``read`` (``since``, ``by_type``, ``query``) are built here once for every backend.
"""

from __future__ import annotations

import heapq
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .backends import Backend, OnMalformed, StreamInfo
from .errors import LockTimeout, StorageError
from .event import (
    DEFAULT_MAX_EVENT_BYTES,
    Draft,
    Event,
    comparable_ts,
    draft_from_tail,
    drafts_from_dicts,
    format_ts,
    make_draft,
    parse_ts,
)
from .names import validate_stream_name
from .report import Report
from .spool import LOCK_ATTEMPTS, LOCK_BACKOFF, Spool, SpoolStatus, resolve_spool_dir

if TYPE_CHECKING:
    from datetime import datetime

    from ._spoolreplay import ReplayReport
    from .redact import Redactor

__all__ = ["EventLog", "default_root", "open_log"]

MEMORY = "memory:"
_Stored = TypeVar("_Stored")


def default_root() -> str:
    """``$AGENTLOG_ROOT`` if set, else ``./.agentlog``."""
    return os.environ.get("AGENTLOG_ROOT") or os.path.join(os.getcwd(), ".agentlog")


def open_log(root: str | os.PathLike[str] | None = None, *, durability: str = "fsync",
             segment_bytes: int = 500_000_000, lock_timeout: float = 10.0, file_mode: int = 0o600,
             dir_mode: int = 0o700, rotate: str = "size",
             max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
             spool_dir: str | os.PathLike[str] | bool | None = None) -> EventLog:
    """Open the log at ``root`` (a directory; ``"memory:"`` for the in-memory backend).

    ``durability="fsync"`` acknowledges an append once it is on disk; ``"write"`` once the kernel has it
    (survives the process dying, not the machine). ``rotate`` is ``"size"`` or ``"daily"`` and applies to
    streams created by this log; a stream keeps the layout it was created with.

    ``spool_dir`` is where events wait when the root cannot be written (see :mod:`agentlog.spool`): by
    default ``$AGENTLOG_SPOOL``, else ``$XDG_STATE_HOME/agentlog/spool``; ``False`` (or
    ``AGENTLOG_SPOOL=off``) turns spooling off, so such appends raise :class:`~agentlog.StorageError`.
    """
    if max_event_bytes <= 0:
        raise ValueError("max_event_bytes must be positive")
    target = default_root() if root is None else os.fspath(root)
    backend: Backend
    if target == MEMORY or target.startswith("memory://"):
        from .backends.memory import MemoryBackend

        backend = MemoryBackend()
        spool = None  # nothing outside the process could hold a memory log's events
    else:
        from .backends.file import FileBackend

        backend = FileBackend(target, durability=durability, segment_bytes=segment_bytes,
                              lock_timeout=lock_timeout, file_mode=file_mode, dir_mode=dir_mode, rotate=rotate)
        where = resolve_spool_dir(spool_dir)
        spool = None if where is None else Spool(where, target, file_mode=file_mode, dir_mode=dir_mode)
    return EventLog(backend, root=target, max_event_bytes=max_event_bytes, spool=spool)


class EventLog:
    """Streams of events: append, read, query, follow, verify."""

    def __init__(self, backend: Backend, *, root: str = "", max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
                 spool: Spool | None = None):
        self.backend = backend
        self.root = root
        self.max_event_bytes = max_event_bytes
        #: Where events wait while the root cannot be written; ``None`` when spooling is off.
        self.spool = spool

    # --- writing --------------------------------------------------------------------------------------

    def append(self, stream: str, type: str, *, data: dict[str, Any] | None = None, actor: str | None = None,
               redact: bool | Redactor = False, **fields: Any) -> Event:
        """Append one event and return it with its ``seq``, ``id`` and ``ts``; durable when this returns
        (at the default durability).

        ``redact``: ``True`` (the rules of :func:`agentlog.redact.default_redactor`) or a
        :class:`~agentlog.redact.Redactor` replaces secrets in ``data`` and in the other top-level fields
        (not in ``type``, ``actor``, ``level``, ``visibility``) before the event is checked and written, and
        records what was removed as ``redactions: [{"rule", "count"}]``; see :func:`agentlog.redact.redact_event`."""
        validate_stream_name(stream)
        if redact:
            from .redact import redact_event  # only when asked: the plain append path stays light

            fields = redact_event(redact, {**fields, "data": data})
            data = fields.pop("data")
        draft = make_draft(stream, type, data=data, actor=actor, fields=fields,
                           max_event_bytes=self.max_event_bytes)
        return self._write(stream, [draft])[0]

    def append_many(self, stream: str, events: Iterable[Mapping[str, Any]], *,
                    redact: bool | Redactor = False) -> list[Event]:
        """Append a batch with one lock, one write and one fsync; every item is checked first, and one bad
        item refuses the whole batch. ``redact`` applies to each item as in :meth:`append`."""
        validate_stream_name(stream)
        if redact:
            from .redact import redact_batch

            events = redact_batch(redact, events)
        drafts = drafts_from_dicts(stream, events, max_event_bytes=self.max_event_bytes)
        return self._write(stream, drafts)

    def append_if(self, stream: str, events: Iterable[Mapping[str, Any]], *, last_seq: int) -> list[Event]:
        """``append_many`` only if the stream's last ``seq`` is still ``last_seq`` (0: the stream is empty),
        decided under the stream's lock; else raise :class:`~agentlog.Conflict` and store nothing. A
        compare-and-set: read the stream, check preconditions, append only if nobody moved in between.
        Never spooled: a conditional write must be decided against the stream itself, so a root that cannot
        be written raises its ``StorageError``."""
        validate_stream_name(stream)
        if isinstance(last_seq, bool) or not isinstance(last_seq, int) or last_seq < 0:
            raise TypeError(f"last_seq must be a non-negative int, not {last_seq!r}")
        drafts = drafts_from_dicts(stream, events, max_event_bytes=self.max_event_bytes)
        if not drafts:
            return []
        return self.backend.append(stream, drafts, expect_last=last_seq)

    def append_drafts(self, stream: str, drafts: Sequence[Draft]) -> list[Event]:
        """Append events already checked by :func:`agentlog.event.make_draft` (what writers queue), as one
        batch."""
        validate_stream_name(stream)
        return self._write(stream, drafts)

    def store_records(self, stream: str, ids: Sequence[bytes],
                      tails: Sequence[bytes]) -> tuple[int, str] | list[Event]:
        """Append, as one batch, the checked events with these ids (ASCII bytes) and serialised bodies after
        their opening brace (:func:`agentlog.event.event_tail`), without building an :class:`Event` for
        each: what ``EventWriter`` commits. Returns ``(seq of the first, ts of all)`` once stored, or the
        events when they are not numbered that way: spooled (the root could not take them), or stored by a
        backend without ``append_records``."""
        validate_stream_name(stream)
        if not tails:
            return []
        append_records: Callable[[str, Sequence[bytes], Sequence[bytes]], tuple[int, str]] | None = \
            getattr(self.backend, "append_records", None)  # see RecordAppender

        def drafts() -> list[Draft]:
            return [draft_from_tail(stream, id.decode(), tail) for id, tail in zip(ids, tails, strict=True)]

        if append_records is None:
            batch = drafts()
            return self._store(lambda: self.backend.append(stream, batch), lambda: batch)
        return self._store(lambda: append_records(stream, ids, tails), drafts)

    def _write(self, stream: str, drafts: Sequence[Draft]) -> list[Event]:
        """Hand a checked batch to the backend; with a spool, a failure to store it spools it instead."""
        if not drafts:
            return self.backend.append(stream, drafts)
        return self._store(lambda: self.backend.append(stream, drafts), lambda: drafts)

    def _store(self, append: Callable[[], _Stored], drafts: Callable[[], Sequence[Draft]]) -> _Stored | list[Event]:
        """``append()``'s result; with a spool, when the root cannot take the batch, the spooled events of
        ``drafts()`` instead (asked for only then)."""
        spool = self.spool
        if spool is None:
            return append()
        attempted_ns = time.time_ns()  # formatted only if the batch is spooled
        for attempt in range(1, LOCK_ATTEMPTS + 1):
            try:
                stored = append()
                break
            except LockTimeout as exc:
                if attempt < LOCK_ATTEMPTS:
                    time.sleep(LOCK_BACKOFF * 2 ** (attempt - 1))
                    continue
                return self._spool(spool, drafts(), exc, format_ts(attempted_ns))
            except StorageError as exc:
                if exc.errno is None:  # not the disk's doing (e.g. a closed log): spooling would not help
                    raise
                return self._spool(spool, drafts(), exc, format_ts(attempted_ns))
        spool.auto_replay(self)
        return stored

    @staticmethod
    def _spool(spool: Spool, drafts: Sequence[Draft], exc: StorageError, attempted_at: str) -> list[Event]:
        try:
            return spool.put(drafts, exc, attempted_at)
        except StorageError as spool_exc:
            # Neither place could take the events: the caller must know, with both reasons.
            raise StorageError(f"{exc}; the spool could not take the event(s) either: {spool_exc}",
                               path=exc.path, errno=exc.errno) from exc

    def spool_status(self) -> SpoolStatus | None:
        """What waits in this log's spool (``None`` when spooling is off)."""
        return None if self.spool is None else self.spool.status()

    def replay_spool(self, *, wait: float | None = 60.0) -> ReplayReport:
        """Append what waits in the spool, in order and at most once per id; see :class:`ReplayReport`.
        Runs by itself after any successful append; call it to replay without appending."""
        if self.spool is None:
            from ._spoolreplay import ReplayReport

            return ReplayReport()
        return self.spool.replay(self, wait=wait)

    async def aappend(self, stream: str, type: str, *, data: dict[str, Any] | None = None,
                      actor: str | None = None, **fields: Any) -> Event:
        """``append`` for asyncio code: runs in a worker thread, so the event loop never blocks on fsync."""
        import asyncio

        return await asyncio.to_thread(self.append, stream, type, data=data, actor=actor, **fields)

    # --- reading --------------------------------------------------------------------------------------

    def read(self, stream: str, *, after: int = 0, on_malformed: OnMalformed | None = None) -> Iterator[Event]:
        """Events with ``seq > after``, in order, across sealed segments.

        A line that is not a JSON object is skipped, with a logged warning naming ``path:line``; given
        ``on_malformed``, each such line is handed to it instead, as a
        :class:`~agentlog.backends.MalformedLine` numbered as ``verify`` numbers it (views use this to
        isolate them to ``<root>/errors/<stream>.jsonl``)."""
        validate_stream_name(stream)
        if on_malformed is None:
            return self.backend.read(stream, after)
        return self.backend.read(stream, after, on_malformed=on_malformed)

    def tail(self, stream: str, limit: int = 20) -> list[Event]:
        """The newest ``limit`` events, oldest first."""
        validate_stream_name(stream)
        return self.backend.tail(stream, limit)

    def follow(self, stream: str, *, after: int = 0, timeout: float | None = None,
               poll: float = 0.1) -> Iterator[Event]:
        """Events with ``seq > after``, then new ones as they are appended, across rotations. Stops after
        ``timeout`` seconds without a new event (never, when ``None``)."""
        validate_stream_name(stream)
        return self.backend.follow(stream, after, timeout, poll)

    def since(self, ts: str | datetime, *, streams: Sequence[str] | None = None) -> Iterator[Event]:
        """Events with ``ts >= ts`` from every stream (or ``streams``), merged in time order.

        The file backend bisects to the start instead of reading what comes before it, relying on ``ts``
        never decreasing among agentlog's own lines. Lines of other writers after that start are all read;
        one before it is missed only if its writer's clock stamped it later than the agentlog event written
        after it (a clock running ahead of ours)."""
        return self.query(streams=streams, since=ts)

    def by_type(self, types: str | Iterable[str], *, visibility: str | None = None,
                streams: Sequence[str] | None = None) -> Iterator[Event]:
        """Events whose type is one of ``types`` (and with that ``visibility``), merged in time order."""
        return self.query(streams=streams, types=types, visibility=visibility)

    def query(self, *, streams: Sequence[str] | None = None, types: str | Iterable[str] | None = None,
              since: str | datetime | None = None, until: str | datetime | None = None,
              visibility: str | None = None, actor: str | None = None) -> Iterator[Event]:
        """Events matching every filter given; ``since`` is inclusive, ``until`` exclusive. Streams are
        merged by ``(ts, stream, seq)``; within a stream, events stay in ``seq`` order."""
        names = self._stream_list(streams)
        type_set = None if types is None else ({types} if isinstance(types, str) else set(types))
        lo = None if since is None else parse_ts(since)
        hi = None if until is None else parse_ts(until)
        # A backend with `scan` applies `since` and `types` itself and can skip what cannot match (the file
        # backend bisects and searches bytes); the other filters are applied here, to every backend alike.
        scan: Callable[..., Iterator[Event]] | None = getattr(self.backend, "scan", None)  # see Scanner
        pushed = scan is not None and (lo is not None or type_set is not None)
        if pushed:
            want_types, want_lo = None, None
        else:
            want_types, want_lo = type_set, lo

        def matches(ev: Event) -> bool:
            if want_types is not None and ev.type not in want_types:
                return False
            if visibility is not None and ev.visibility != visibility:
                return False
            if actor is not None and ev.actor != actor:
                return False
            if want_lo is not None or hi is not None:
                ts = None if ev.ts is None else comparable_ts(ev.ts)
                if ts is None:
                    return False
                if (want_lo is not None and ts < want_lo) or (hi is not None and ts >= hi):
                    return False
            return True

        def source(name: str) -> Iterator[Event]:
            if pushed:
                assert scan is not None
                return scan(name, since=lo, types=type_set)
            return self.backend.read(name, 0)

        filtered = want_types is not None or want_lo is not None or visibility is not None \
            or actor is not None or hi is not None
        per_stream = [(ev for ev in source(name) if matches(ev)) if filtered else source(name) for name in names]
        if len(per_stream) == 1:
            return per_stream[0]
        return heapq.merge(*per_stream, key=lambda ev: (ev.ts or "", ev.stream, ev.seq))

    def streams(self) -> list[str]:
        """Every stream that holds at least one segment, sorted."""
        return self.backend.streams()

    def stat(self, stream: str) -> StreamInfo:
        """Events, bytes, segments and last ``ts`` of one stream."""
        validate_stream_name(stream)
        return self.backend.stat(stream)

    def verify(self, stream: str | Sequence[str] | None = None) -> Report:
        """Check every line of ``stream`` (or of every stream): strict JSON, gapless seq, ts order, no torn
        tail. ``report.ok`` is true when nothing is lost or damaged."""
        names = None if stream is None else self._stream_list(stream)
        return self.backend.verify(names)

    def _stream_list(self, streams: str | Sequence[str] | None) -> list[str]:
        if streams is None:
            return self.backend.streams()
        if isinstance(streams, str) or not isinstance(streams, (list, tuple)):
            return [validate_stream_name(streams)]  # a single name; anything else is refused by name
        return [validate_stream_name(name) for name in streams]

    # --- lifecycle ------------------------------------------------------------------------------------

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EventLog({self.root!r})"
