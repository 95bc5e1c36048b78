"""The in-memory backend: the reference implementation of the contract, for tests and examples.

It is a real backend, not a mock: gapless ``seq``, non-decreasing ``ts``, all-or-nothing batches, live
``follow``, thread safety. It keeps events for the life of the object only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterator, Sequence

from .. import _json
from ..errors import Conflict
from ..event import Draft, Event, comparable_ts, format_ts
from ..report import Report
from . import OnMalformed, StreamInfo


class MemoryBackend:
    def __init__(self) -> None:
        self._streams: dict[str, list[tuple[Event, int]]] = {}  # (event, its size as a line)
        self._changed = threading.Condition()

    def append(self, stream: str, drafts: Sequence[Draft], *, expect_last: int | None = None) -> list[Event]:
        if not drafts:
            return []
        first, ts = self.append_records(stream, [d.id.encode() for d in drafts], [d.body[1:] for d in drafts],
                                        expect_last=expect_last)
        return [draft.event(first + i, ts) for i, draft in enumerate(drafts)]

    def append_records(self, stream: str, ids: Sequence[bytes], tails: Sequence[bytes], *,
                       expect_last: int | None = None) -> tuple[int, str]:
        if not tails or len(ids) != len(tails):
            raise ValueError("append_records needs as many ids as tails, and at least one")
        with self._changed:
            events = self._streams.setdefault(stream, [])
            if expect_last is not None and len(events) != expect_last:
                raise Conflict(f"stream {stream!r} is at seq {len(events)}, not {expect_last}")
            first = len(events) + 1
            ts = format_ts(time.time_ns())
            last_ts = events[-1][0].ts if events else None
            if last_ts is not None and ts < last_ts:
                ts = last_ts
            for i, (id, tail) in enumerate(zip(ids, tails, strict=True)):
                line = b'{"seq":%d,"id":"%s","ts":"%s",%s\n' % (first + i, id, ts.encode(), tail)
                # Store a parsed copy, so a caller mutating its dict afterwards cannot rewrite history.
                stored = Event.from_record(_json.loads(line), stream=stream, seq=first + i)
                events.append((stored, len(line)))
            self._changed.notify_all()
            return first, ts

    def read(self, stream: str, after: int = 0, *, on_malformed: OnMalformed | None = None) -> Iterator[Event]:
        # Events are stored parsed: there is never a malformed line to hand to on_malformed.
        with self._changed:
            snapshot = [ev for ev, _ in self._streams.get(stream, [])[max(after, 0):]]
        return iter([_copy(ev) for ev in snapshot])

    def scan(self, stream: str, *, since: str | None = None,
             types: Collection[str] | None = None) -> Iterator[Event]:
        """``read(stream)`` restricted to ``ts >= since`` and ``type in types``: nothing to skip in memory, so
        this only filters (before copying)."""
        def keep(ev: Event) -> bool:
            if types is not None and ev.type not in types:
                return False
            if since is not None:
                ts = None if ev.ts is None else comparable_ts(ev.ts)
                if ts is None or ts < since:
                    return False
            return True

        with self._changed:
            snapshot = [ev for ev, _ in self._streams.get(stream, []) if keep(ev)]
        return iter([_copy(ev) for ev in snapshot])

    def tail(self, stream: str, limit: int) -> list[Event]:
        if limit <= 0:
            return []
        with self._changed:
            return [_copy(ev) for ev, _ in self._streams.get(stream, [])[-limit:]]

    def follow(self, stream: str, after: int = 0, timeout: float | None = None,
               poll: float = 0.1) -> Iterator[Event]:
        position = max(after, 0)
        while True:
            with self._changed:
                deadline = None if timeout is None else time.monotonic() + timeout
                while len(self._streams.get(stream, [])) <= position:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return
                    self._changed.wait(remaining)
                batch = [ev for ev, _ in self._streams[stream][position:]]
            for event in batch:
                position += 1
                yield _copy(event)

    def streams(self) -> list[str]:
        with self._changed:
            return sorted(name for name, events in self._streams.items() if events)

    def stat(self, stream: str) -> StreamInfo:
        with self._changed:
            events = self._streams.get(stream, [])
            return StreamInfo(stream, len(events), sum(size for _, size in events), 1 if events else 0,
                              events[-1][0].ts if events else None)

    def verify(self, streams: Sequence[str] | None = None) -> Report:
        report = Report()
        with self._changed:
            for name in streams or sorted(self._streams):
                report.counts[name] = len(self._streams.get(name, []))
        return report

    def close(self) -> None:
        pass


def _copy(event: Event) -> Event:
    return Event.from_record(_json.loads(event.to_json()), stream=event.stream, seq=event.seq)
