"""``EventLog``: the one facade every view and edge uses.

It checks names and events, then hands storage to a backend (:mod:`agentlog.backends`). Queries that can be
expressed with ``read`` (``since``, ``by_type``, ``query``) are built here once for every backend.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

from .backends import Backend, StreamInfo
from .event import DEFAULT_MAX_EVENT_BYTES, Draft, Event, comparable_ts, drafts_from_dicts, make_draft, parse_ts
from .names import validate_stream_name
from .report import Report

__all__ = ["EventLog", "default_root", "open_log"]

MEMORY = "memory:"


def default_root() -> str:
    """``$AGENTLOG_ROOT`` if set, else ``./.agentlog``."""
    return os.environ.get("AGENTLOG_ROOT") or os.path.join(os.getcwd(), ".agentlog")


def open_log(root: str | os.PathLike[str] | None = None, *, durability: str = "fsync",
             segment_bytes: int = 500_000_000, lock_timeout: float = 10.0, file_mode: int = 0o600,
             dir_mode: int = 0o700, rotate: str = "size",
             max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> EventLog:
    """Open the log at ``root`` (a directory; ``"memory:"`` for the in-memory backend).

    ``durability="fsync"`` acknowledges an append once it is on disk; ``"write"`` once the kernel has it
    (survives the process dying, not the machine). ``rotate`` is ``"size"`` or ``"daily"`` and applies to
    streams created by this log; a stream keeps the layout it was created with.
    """
    if max_event_bytes <= 0:
        raise ValueError("max_event_bytes must be positive")
    target = default_root() if root is None else os.fspath(root)
    backend: Backend
    if target == MEMORY or target.startswith("memory://"):
        from .backends.memory import MemoryBackend

        backend = MemoryBackend()
    else:
        from .backends.file import FileBackend

        backend = FileBackend(target, durability=durability, segment_bytes=segment_bytes,
                              lock_timeout=lock_timeout, file_mode=file_mode, dir_mode=dir_mode, rotate=rotate)
    return EventLog(backend, root=target, max_event_bytes=max_event_bytes)


class EventLog:
    """Streams of events: append, read, query, follow, verify."""

    def __init__(self, backend: Backend, *, root: str = "", max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES):
        self.backend = backend
        self.root = root
        self.max_event_bytes = max_event_bytes

    # --- writing --------------------------------------------------------------------------------------

    def append(self, stream: str, type: str, *, data: dict[str, Any] | None = None, actor: str | None = None,
               **fields: Any) -> Event:
        """Append one event and return it with its ``seq``, ``id`` and ``ts``; durable when this returns
        (at the default durability)."""
        validate_stream_name(stream)
        draft = make_draft(stream, type, data=data, actor=actor, fields=fields,
                           max_event_bytes=self.max_event_bytes)
        return self.backend.append(stream, [draft])[0]

    def append_many(self, stream: str, events: Iterable[Mapping[str, Any]]) -> list[Event]:
        """Append a batch with one lock, one write and one fsync; every item is checked first, and one bad
        item refuses the whole batch."""
        validate_stream_name(stream)
        drafts = drafts_from_dicts(stream, events, max_event_bytes=self.max_event_bytes)
        return self.backend.append(stream, drafts)

    def append_drafts(self, stream: str, drafts: Sequence[Draft]) -> list[Event]:
        """Append events already checked by :func:`agentlog.event.make_draft` (what writers queue), as one
        batch."""
        validate_stream_name(stream)
        return self.backend.append(stream, drafts)

    async def aappend(self, stream: str, type: str, *, data: dict[str, Any] | None = None,
                      actor: str | None = None, **fields: Any) -> Event:
        """``append`` for asyncio code: runs in a worker thread, so the event loop never blocks on fsync."""
        import asyncio

        return await asyncio.to_thread(self.append, stream, type, data=data, actor=actor, **fields)

    # --- reading --------------------------------------------------------------------------------------

    def read(self, stream: str, *, after: int = 0) -> Iterator[Event]:
        """Events with ``seq > after``, in order, across sealed segments."""
        validate_stream_name(stream)
        return self.backend.read(stream, after)

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
