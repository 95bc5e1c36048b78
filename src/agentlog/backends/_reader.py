"""Reading a file-backed stream: forward cursors that survive rotation, and tail from the end.

Sequence numbers for lines without one (a shell writer using ``flock(1)``, as 002 does) are inferred from
their position: one more than the line before. Writers count such lines the same way, so ``seq`` stays
gapless and file order stays seq order.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..event import Event, comparable_ts
from ._fs import find_last_newline, open_read
from ._scan import lines_backward, lines_forward, parse_line
from ._segments import Segment

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
    for _start, raw in lines_backward(fd, end):
        rec, _why = parse_line(raw)
        if rec is None:
            continue
        seq = rec.get("seq")
        if type(seq) is int:
            # Only agentlog's own ts bounds the next one: another writer's clock (a "ts" or "timestamp" on a
            # line without seq and id) must not drag the stream's time forward.
            ts = rec.get("ts")
            own = isinstance(ts, str) and isinstance(rec.get("id"), str)
            return seq + count, count, comparable_ts(ts) if own else None  # type: ignore[arg-type]
        count += 1
    return None, count, None


class Cursor:
    """Reads one stream forwards from ``after``; moves on when a later segment exists."""

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
                successor = self._successor()
                if successor is not None:
                    # A later segment exists, so every write to ours happened before it was created (both
                    # under our file's lock): one more drain reads everything, then move on.
                    for event in self._pump():
                        got = True
                        yield event
                    self._switch(*successor)
                    continue
                if not follow:
                    return
                if got:
                    last_activity = time.monotonic()
                    continue
                if _expired(last_activity, timeout):
                    return
                time.sleep(poll)
        finally:
            self.close()

    def _pump(self) -> Iterator[Event]:
        assert self.fd is not None
        size = os.fstat(self.fd).st_size
        if size < self.offset:
            self._rewind(size)
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

    def _rewind(self, size: int) -> None:
        """The file shrank under us: a writer rolled back a write we may have read part of (a short write;
        a full disk on a batch is caught before writing). Step back to the last whole line and let seqs
        above it be yielded again, so the records that really land are not skipped."""
        assert self.fd is not None
        self.offset = find_last_newline(self.fd, size)
        last, _count, _ts = scan_last(self.fd, self.offset)
        if last is not None:
            self.prev_seq = last
            self.after = min(self.after, last)
        self.line_no = sum(1 for _ in lines_forward(self.fd, 0, self.offset))

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
            if index < len(segments) - 1:  # not the last, so complete
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

    def _successor(self) -> tuple[int, Segment, int] | None:
        """``(dir_fd, segment, fd)`` of the segment after ours, opened, or ``None`` while ours is the last."""
        listing = self.backend.listing(self.stream)
        if listing is None:
            return None
        dir_fd, segments = listing
        position = next((i for i, seg in enumerate(segments) if seg.ino == self.ino), None)
        if position is None:
            os.close(dir_fd)
            if self.fd is not None and os.fstat(self.fd).st_nlink == 0:
                # Our file was deleted from under us: resume after the last seq we saw.
                self.after = max(self.after, self.prev_seq)
                os.close(self.fd)
                self.fd = None
            return None
        if position + 1 >= len(segments):
            os.close(dir_fd)
            return None
        seg = segments[position + 1]
        fd = open_read(dir_fd, seg.name, self.backend.segment_path(self.stream, seg.name))
        if fd is None or os.fstat(fd).st_ino != seg.ino:
            if fd is not None:
                os.close(fd)
            os.close(dir_fd)
            return None  # it is moving; the caller looks again
        return dir_fd, seg, fd

    def _switch(self, dir_fd: int, seg: Segment, fd: int) -> None:
        if self.dir_fd is not None:
            os.close(self.dir_fd)
        self.dir_fd = dir_fd
        self._use(fd, seg, self.prev_seq)


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
            found = _collect_backwards(backend, stream, dir_fd, segments, limit)
        finally:
            os.close(dir_fd)
        if found is not None:
            return _number(*found, backend=backend, stream=stream, limit=limit)
    return _tail_forward(backend, stream, limit)


def _tail_forward(backend: FileBackend, stream: str, limit: int) -> list[Event]:
    """The slow path (a stream no line of which has a seq, or endless rotation races): bounded memory."""
    return list(collections.deque(Cursor(backend, stream, 0).events(follow=False), maxlen=limit))


def _collect_backwards(backend: FileBackend, stream: str, dir_fd: int, segments: list[Segment],
                       limit: int) -> tuple[list[dict[str, Any]], tuple[int, int] | None] | None:
    """The newest ``limit`` records (newest first) and, when none of them has a ``seq``, an anchor
    ``(position, seq)`` of the nearest older line that does; ``None`` if a segment moved meanwhile."""
    records: list[dict[str, Any]] = []
    have_seq = False
    position = 0
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
                seq = rec.get("seq")
                if position < limit:
                    records.append(rec)
                    have_seq = have_seq or type(seq) is int
                elif type(seq) is int:
                    return records, (position, seq)  # only counted: memory stays bounded by `limit`
                position += 1
                if position >= limit and have_seq:
                    return records, None
        finally:
            os.close(fd)
    return records, None


def _number(records: list[dict[str, Any]], anchor: tuple[int, int] | None, *, backend: FileBackend,
            stream: str, limit: int) -> list[Event]:
    """Give seq-less records (newest first) the numbers a forward read would infer."""
    known = next(((i, rec["seq"]) for i, rec in enumerate(records) if type(rec.get("seq")) is int), anchor)
    if known is None:
        # Nothing numbered at all (a stream only shell writers wrote): count from the start.
        return _tail_forward(backend, stream, limit)
    index, base = known
    seqs: list[int] = []
    for i in range(len(records)):
        seq = records[i].get("seq")
        if i <= index or type(seq) is not int:
            seq = base + (index - i) if i <= index else seqs[-1] - 1
        seqs.append(seq)
    events = [Event.from_record(records[i], stream=stream, seq=seqs[i]) for i in range(len(records))]
    events.reverse()
    return events
