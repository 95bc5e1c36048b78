"""Reading a file-backed stream: forward cursors that survive rotation, and tail from the end.

Sequence numbers for lines without one (a shell writer using ``flock(1)``, as 002 does) are inferred from
their position: one more than the line before. Writers count such lines the same way, so ``seq`` stays
gapless and file order stays seq order.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..event import Event, comparable_ts
from ._fs import find_last_newline, open_read
from ._scan import lines_backward, lines_forward, parse_line
from ._segments import Segment, is_sealed

if TYPE_CHECKING:
    from .file import FileBackend


def warn(message: str) -> None:
    # Imported here: `logging` is not needed on the append path, which must start fast.
    import logging

    logging.getLogger("agentlog").warning(message)


def scan_last(fd: int, end: int) -> tuple[int | None, int, str | None]:
    """``(last_seq, lines_without_seq_after_it, newest_ts)`` reading backwards from ``end``.

    ``last_seq`` already counts the seq-less lines after the last numbered one; it is ``None`` when no line
    in the file has a ``seq``, and then the count is of every event line in the file.
    """
    count = 0
    newest_ts: str | None = None
    for _start, raw in lines_backward(fd, end):
        rec, _why = parse_line(raw)
        if rec is None:
            continue
        if newest_ts is None:
            newest_ts = _record_ts(rec)
        seq = rec.get("seq")
        if type(seq) is int:
            return seq + count, count, newest_ts
        count += 1
    return None, count, newest_ts


def _record_ts(rec: dict[str, Any]) -> str | None:
    # Only agentlog's own "ts" bounds the next ts: a foreign writer's "timestamp" runs on its own clock.
    value = rec.get("ts")
    if not isinstance(value, str):
        return None
    return comparable_ts(value)


class Cursor:
    """Reads one stream forwards from ``after``; moves to the next segment when the current one is sealed."""

    def __init__(self, backend: FileBackend, stream: str, after: int) -> None:
        self.backend = backend
        self.stream = stream
        self.after = after
        self.dir_fd: int | None = None
        self.fd: int | None = None
        self.ino = 0
        self.name = ""
        self.offset = 0
        self.line_no = 0
        self.prev_seq = 0

    def close(self) -> None:
        for fd in (self.fd, self.dir_fd):
            if fd is not None:
                os.close(fd)
        self.fd = self.dir_fd = None

    def display(self) -> str:
        return self.backend.segment_path(self.stream, self.name)

    def events(self, *, follow: bool, timeout: float | None = None, poll: float = 0.1) -> Iterator[Event]:
        try:
            last_activity = time.monotonic()
            while True:
                if self.fd is None and not self._open_first():
                    if not follow or _expired(last_activity, timeout):
                        return
                    time.sleep(poll)
                    continue
                got = False
                for event in self._pump():
                    got = True
                    yield event
                assert self.fd is not None
                st = os.fstat(self.fd)
                if is_sealed(st.st_mode) or st.st_nlink == 0:
                    # Sealing happens under the lock after the last write: one more drain reads everything.
                    for event in self._pump():
                        got = True
                        yield event
                    if self._next_segment():
                        continue
                if got:
                    last_activity = time.monotonic()
                    continue
                if not follow or _expired(last_activity, timeout):
                    return
                time.sleep(poll)
        finally:
            self.close()

    def _pump(self) -> Iterator[Event]:
        assert self.fd is not None
        for start, raw in lines_forward(self.fd, self.offset):
            self.offset = start + len(raw) + 1
            self.line_no += 1
            rec, why = parse_line(raw)
            if rec is None:
                warn(f"{self.display()}:{self.line_no}: skipping malformed line: {why}")
                continue
            seq = rec.get("seq")
            if type(seq) is not int:
                seq = self.prev_seq + 1
            self.prev_seq = seq
            if seq > self.after:
                yield Event.from_record(rec, stream=self.stream, seq=seq)

    def _open_first(self) -> bool:
        """Open the first segment that can hold ``seq > after``, skipping sealed ones wholly before it."""
        for _attempt in range(10):
            listing = self.backend.listing(self.stream)
            if listing is None:
                return False
            dir_fd, segments = listing
            opened = self._choose(dir_fd, segments)
            if opened is None:
                os.close(dir_fd)
                continue  # a segment moved while we looked: list again
            if self.dir_fd is not None:
                os.close(self.dir_fd)
            self.dir_fd = dir_fd
            return opened
        return False

    def _choose(self, dir_fd: int, segments: list[Segment]) -> bool | None:
        prev = 0
        for index, seg in enumerate(segments):
            fd = open_read(dir_fd, seg.name, self.backend.segment_path(self.stream, seg.name))
            if fd is None:
                return None
            st = os.fstat(fd)
            if st.st_ino != seg.ino:
                os.close(fd)
                return None
            if index < len(segments) - 1 and is_sealed(st.st_mode):
                last, _count, _ts = scan_last(fd, find_last_newline(fd, st.st_size))
                if last is not None and last <= self.after:
                    prev = last
                    os.close(fd)
                    continue
            self._use(fd, seg, prev)
            return True
        return False

    def _use(self, fd: int, seg: Segment, prev_seq: int) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.fd, self.ino, self.name = fd, seg.ino, seg.name
        self.offset = self.line_no = 0
        self.prev_seq = prev_seq

    def _next_segment(self) -> bool:
        """Move to the segment after the current one; False when it does not exist yet."""
        listing = self.backend.listing(self.stream)
        if listing is None:
            return False
        dir_fd, segments = listing
        position = next((i for i, seg in enumerate(segments) if seg.ino == self.ino), None)
        if position is None:
            # Our file was removed from under us: resume after the last seq we saw.
            os.close(dir_fd)
            self.after = max(self.after, self.prev_seq)
            assert self.fd is not None
            os.close(self.fd)
            self.fd = None
            return self._open_first()
        if position + 1 >= len(segments):
            os.close(dir_fd)
            return False
        seg = segments[position + 1]
        fd = open_read(dir_fd, seg.name, self.backend.segment_path(self.stream, seg.name))
        if fd is None or os.fstat(fd).st_ino != seg.ino:
            if fd is not None:
                os.close(fd)
            os.close(dir_fd)
            return False  # it is moving; the caller tries again
        if self.dir_fd is not None:
            os.close(self.dir_fd)
        self.dir_fd = dir_fd
        self._use(fd, seg, self.prev_seq)
        return True


def _expired(since: float, timeout: float | None) -> bool:
    return timeout is not None and time.monotonic() - since >= timeout


def tail(backend: FileBackend, stream: str, limit: int) -> list[Event]:
    """The newest ``limit`` events, reading backwards: the cost depends on ``limit``, not on the stream."""
    if limit <= 0:
        return []
    for _attempt in range(10):
        listing = backend.listing(stream)
        if listing is None:
            return []
        dir_fd, segments = listing
        try:
            records = _collect_backwards(backend, stream, dir_fd, segments, limit)
        finally:
            os.close(dir_fd)
        if records is not None:
            return _number(records, limit, stream, backend)
    return list(Cursor(backend, stream, 0).events(follow=False))[-limit:]


def _collect_backwards(backend: FileBackend, stream: str, dir_fd: int, segments: list[Segment],
                       limit: int) -> list[dict[str, Any]] | None:
    """Records newest first until ``limit`` are found and one of them carries a ``seq``."""
    records: list[dict[str, Any]] = []
    have_seq = False
    for seg in reversed(segments):
        display = backend.segment_path(stream, seg.name)
        fd = open_read(dir_fd, seg.name, display)
        if fd is None:
            return None
        try:
            st = os.fstat(fd)
            if st.st_ino != seg.ino:
                return None
            for start, raw in lines_backward(fd, find_last_newline(fd, st.st_size)):
                rec, why = parse_line(raw)
                if rec is None:
                    warn(f"{display}: skipping malformed line at byte {start}: {why}")
                    continue
                records.append(rec)
                have_seq = have_seq or type(rec.get("seq")) is int
                if len(records) >= limit and have_seq:
                    return records
        finally:
            os.close(fd)
    return records


def _number(records: list[dict[str, Any]], limit: int, stream: str, backend: FileBackend) -> list[Event]:
    """Give seq-less records (newest first) the numbers a forward read would infer."""
    known = next((i for i, rec in enumerate(records) if type(rec.get("seq")) is int), None)
    if known is None:
        # Nothing numbered at all (a stream only shell writers wrote): count from the start.
        return list(Cursor(backend, stream, 0).events(follow=False))[-limit:]
    seqs: list[int] = []
    base = records[known]["seq"]
    for i in range(known):
        seqs.append(base + (known - i))
    for i in range(known, len(records)):
        seq = records[i].get("seq")
        seqs.append(seq if type(seq) is int else seqs[-1] - 1)
    events = [Event.from_record(records[i], stream=stream, seq=seqs[i]) for i in range(min(limit, len(records)))]
    events.reverse()
    return events
