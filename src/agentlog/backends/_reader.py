"""Reading a file-backed stream: forward cursors that survive rotation, and tail from the end.

Sequence numbers for lines without one (a shell writer using ``flock(1)``, as 002 does) are inferred from
their position: one more than the line before. Writers count such lines the same way, so ``seq`` stays
gapless and file order stays seq order.
"""

from __future__ import annotations

import collections
import operator
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .. import _json
from ..event import Event, comparable_ts, event_from_record
from . import MalformedLine, OnMalformed
from ._fs import find_last_newline, open_read
from ._query import AtOrAfter, Record, Start, find_start
from ._scan import PARSE_CHUNK, chunks_forward, count_newlines, lines_backward, matching_lines, parse_line
from ._segments import Segment

if TYPE_CHECKING:
    from .file import FileBackend


def warn(message: str) -> None:
    # Imported here: `logging` is not needed on the append path, which must start fast.
    import logging

    logging.getLogger("agentlog").warning(message)


def scan_last(fd: int, end: int, begin: int = 0) -> tuple[int | None, int, str | None]:
    """``(last_seq, lines_without_seq_after_it, newest_ts)`` reading backwards from ``end`` to ``begin``.

    ``last_seq`` already counts the seq-less lines after the last numbered one; it is ``None`` when no line
    in the range has a ``seq``, and then the count is of every event line in the range.
    """
    count = 0
    for _start, raw in lines_backward(fd, end, begin=begin):
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


def seq_through(backend: FileBackend, stream: str, dir_fd: int, segments: list[Segment]) -> int:
    """The seq a forward read has reached at the end of ``segments`` (the stream's first ones)."""
    count = 0
    for seg in reversed(segments):
        fd = open_read(dir_fd, seg.name, backend.segment_path(stream, seg.name))
        if fd is None:
            continue
        try:
            last, n, _ts = scan_last(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        if last is not None:
            return last + count
        count += n
    return count


_SEQ = operator.itemgetter("seq")
_EVENT_SEQ = operator.attrgetter("seq")
_EVENT_TS = operator.attrgetter("ts")

LAST = "last"
MOVING = "moving"
#: How often to look again at a rotation in progress before taking our segment as the last: a crashed
#: rotation leaves a sealed piece last for good (until the next append), and must not stall readers.
_MOVING_TRIES = 10


class Cursor:
    """Reads one stream forwards from ``after``; moves on when a later segment exists.

    Two optional fast paths, used by queries (``FileBackend.scan``): ``since`` starts at the bisected
    position instead of the first segment (see :mod:`._query`), and ``needles`` parses only the lines that
    contain one of them. ``keep`` then decides, on the parsed record, which events are yielded; when it is
    an :class:`~._query.AtOrAfter` (``since`` alone), it may judge a whole chunk's events by their ``ts``.

    Malformed lines are skipped; each is logged as a warning naming ``path:line``, or handed to
    ``on_malformed`` (a :class:`~agentlog.backends.MalformedLine`, numbered as ``verify`` numbers it).
    """

    def __init__(self, backend: FileBackend, stream: str, after: int, *, since: str | None = None,
                 needles: list[bytes] | None = None, keep: Callable[[Record], bool] | None = None,
                 on_malformed: OnMalformed | None = None) -> None:
        self.backend = backend
        self.on_malformed = on_malformed
        self.stream = stream
        self.after = after
        self.since = since
        self.needles = needles
        self.keep = keep
        self.dir_fd: int | None = None
        self.fd: int | None = None
        self.ino = 0
        self.name = ""
        self.offset = 0
        # Line numbers (for messages only) are counted when needed: ln_count lines start before ln_off.
        self.ln_off = self.ln_count = 0
        # The seq of the last event line before seq_off. Reading every line keeps seq_off at offset; with
        # needles it lags, and the lines between are parsed only if a seq-less line needs its number.
        self.prev_seq = 0
        self.seq_off = 0
        self.base_seq: int | None = 0  # prev_seq at the segment's start; None after a since start

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
            moving = 0
            while True:
                if self.fd is None and not self._open_first():
                    if not follow or _expired(last_activity, timeout):
                        return
                    time.sleep(poll)
                    continue
                got = False
                for batch in self._pump():  # lists of events: yielded from here, one generator deep
                    got = True
                    yield from batch
                successor = self._successor()
                if successor == MOVING and moving < _MOVING_TRIES:
                    moving += 1
                    time.sleep(0.001 if moving > 3 else 0)  # a rename and a create take microseconds
                    continue
                moving = 0
                if isinstance(successor, tuple):
                    # A later segment exists, so every write to ours happened before it was created (both
                    # under our file's lock): one more drain reads everything, then move on.
                    for batch in self._pump():
                        got = True
                        yield from batch
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

    def _pump(self) -> Iterator[list[Event]]:
        """The events now readable in our segment, in non-empty lists (a chunk's worth each)."""
        assert self.fd is not None
        size = os.fstat(self.fd).st_size
        if size < self.offset:
            self._rewind(size)
        if self.needles is not None:
            return self._pump_matching()
        return self._pump_all()

    def _pump_all(self) -> Iterator[list[Event]]:
        # What every read runs on every line. A chunk's lines are parsed, numbered and filtered in C loops
        # (map, min, set) when they allow it: JSON objects that all carry an integer seq above `after`, and
        # no filter but `since`, judged on the chunk's distinct ts (AtOrAfter.keep_all). Any other chunk is
        # taken line by line. Small chunks (PARSE_CHUNK) keep a chunk's lines and records in memory the
        # allocator already holds: fresh pages cost more than parsing on some machines.
        assert self.fd is not None
        fd, keep = self.fd, self.keep
        since = keep if isinstance(keep, AtOrAfter) else None
        whole = keep is None or since is not None
        for pos, lines in chunks_forward(fd, self.offset, chunk=PARSE_CHUNK):
            recs = events = None
            if whole:
                recs, events = self._chunk(lines, since)
            if events is None:
                events = self._each(pos, lines, recs)
            self.offset = self.seq_off = pos + sum(map(len, lines)) + len(lines)  # prev_seq is there too
            if events:
                yield events

    def _chunk(self, lines: list[bytes], since: AtOrAfter | None) -> tuple[list[Any] | None, list[Event] | None]:
        """``(records, events)`` for a chunk every line of which is an event numbered above ``after``;
        ``(records or None, None)`` for any other (records when they all parsed)."""
        after, stream = self.after, self.stream
        try:
            recs = list(map(_json.loads, lines))
        except _json.DecodeError:
            return None, None
        try:
            # Raises for a line that is not an object or has no seq (or one that does not compare with an
            # integer); lets through a seq that is not an integer (a float, a bool), caught below.
            if min(map(_SEQ, recs)) <= after:
                return recs, None
        except (KeyError, TypeError):
            return recs, None
        # A record whose seq is not an integer gives its event `after`, which the check below refuses.
        events = [event_from_record(rec, stream, after) for rec in recs]
        if min(map(_EVENT_SEQ, events)) <= after:
            return recs, None
        self.prev_seq = events[-1].seq
        if since is not None and not since.keep_all(set(map(_EVENT_TS, events))):
            ts_ok = since.ts_ok
            events = [ev for ev in events if ts_ok(ev.ts)]
        return recs, events

    def _each(self, pos: int, lines: list[bytes], recs: list[Any] | None) -> list[Event]:
        """The events of a chunk, line by line: malformed lines reported, seqs inferred, ``keep`` applied.
        ``recs``, when given, are the lines already parsed."""
        after, keep, stream, loads = self.after, self.keep, self.stream, _json.loads
        prev = self.prev_seq
        events: list[Event] = []
        for index, raw in enumerate(lines):
            if recs is not None:
                rec = recs[index]
            else:
                try:
                    rec = loads(raw)  # parse_line, inlined: orjson refuses every line it does (a NUL byte is
                except _json.DecodeError:  # never valid JSON), so only the warning needs its reason
                    rec = None
            if rec.__class__ is not dict:
                self._malformed(pos + sum(map(len, lines[:index])) + index, raw, prev)
                continue
            seq = rec.get("seq")
            if type(seq) is not int:
                seq = prev + 1
            prev = seq
            if seq > after and (keep is None or keep(rec)):
                events.append(event_from_record(rec, stream, seq))
        self.prev_seq = prev
        return events

    def _pump_matching(self) -> Iterator[list[Event]]:
        fd, keep, stream = self.fd, self.keep, self.stream
        assert fd is not None and self.needles is not None
        events: list[Event] = []
        for start, raw in matching_lines(fd, self.offset, self.needles):
            if raw is None:  # the end of a chunk
                self.offset = start
                if events:
                    yield events
                    events = []
                continue
            end = start + len(raw) + 1
            self.offset = end
            rec, _why = parse_line(raw)
            if rec is None:
                self._malformed(start, raw, None)
                continue
            seq = rec.get("seq")
            if type(seq) is not int:
                seq = self._seq_before(start) + 1
            self.prev_seq, self.seq_off = seq, end
            if seq > self.after and (keep is None or keep(rec)):
                events.append(event_from_record(rec, stream, seq))
        if events:  # matching_lines ends every chunk with a mark, so this is only a safeguard
            yield events

    def _seq_before(self, start: int) -> int:
        """The seq of the last event line before ``start`` (a line start at or after ``seq_off``)."""
        assert self.fd is not None
        last, count, _ts = scan_last(self.fd, start, self.seq_off)
        return last if last is not None else self.prev_seq + count

    def _settle(self) -> None:
        """Bring ``prev_seq`` up to ``offset`` (it lags when lines are skipped unparsed)."""
        if self.needles is not None and self.seq_off < self.offset:
            self.prev_seq, self.seq_off = self._seq_before(self.offset), self.offset

    def _malformed(self, start: int, raw: bytes, after_seq: int | None) -> None:
        """Report the malformed line at ``start``; ``after_seq`` is the seq of the event line before it
        (``None``: not known yet, as when only matching lines are parsed)."""
        assert self.fd is not None
        _rec, why = parse_line(raw)
        # Numbered as verify numbers it: lines (newlines) from the start of the segment file.
        self.ln_count += count_newlines(self.fd, self.ln_off, start)
        self.ln_off = start
        if self.on_malformed is None:
            warn(f"{self.display()}:{self.ln_count + 1}: skipping malformed line: {why}")
            return
        if after_seq is None:
            after_seq = self._seq_before(start)
        self.on_malformed(MalformedLine(self.display(), self.ln_count + 1, start, after_seq, raw, why))

    def _rewind(self, size: int) -> None:
        """The file shrank under us: a writer rolled back a write we may have read part of (a short write;
        a full disk on a batch is caught before writing). Step back to the last whole line and let seqs
        above it be yielded again, so the records that really land are not skipped."""
        assert self.fd is not None
        self.offset = find_last_newline(self.fd, size)
        last, count, _ts = scan_last(self.fd, self.offset)
        if last is not None:
            self.prev_seq = last
            self.after = min(self.after, last)
        else:
            self.prev_seq = self._base() + count  # no numbered line left in this segment to count from
        self.seq_off = self.offset
        self.ln_off = self.ln_count = 0

    def _base(self) -> int:
        """``prev_seq`` at the start of this segment, listing the earlier ones if we started mid-stream."""
        if self.base_seq is not None:
            return self.base_seq
        listing = self.backend.listing(self.stream)
        if listing is None:
            return 0
        dir_fd, segments = listing
        try:
            position = next((i for i, seg in enumerate(segments) if seg.ino == self.ino), len(segments))
            self.base_seq = seq_through(self.backend, self.stream, dir_fd, segments[:position])
        finally:
            os.close(dir_fd)
        return self.base_seq

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

    def _open_segment(self, dir_fd: int, seg: Segment) -> int | None:
        """``seg`` opened for reading, or ``None`` if it is gone or another file now has its name."""
        fd = open_read(dir_fd, seg.name, self.backend.segment_path(self.stream, seg.name))
        if fd is not None and os.fstat(fd).st_ino != seg.ino:
            os.close(fd)
            return None
        return fd

    def _choose(self, dir_fd: int, segments: list[Segment]) -> bool | None:
        if self.since is not None:
            start = find_start(segments, lambda seg: self._open_segment(dir_fd, seg), self.since)
            if start is False:
                return None
            if isinstance(start, Start):
                self._use(start.fd, segments[start.segment], start.seq)
                self.offset = self.seq_off = start.offset
                self.base_seq = None
                return True
        prev = 0
        for index, seg in enumerate(segments):
            fd = self._open_segment(dir_fd, seg)
            if fd is None:
                return None
            if index < len(segments) - 1:  # not the last, so complete
                last, _count, _ts = scan_last(fd, find_last_newline(fd, os.fstat(fd).st_size))
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
        self.offset = self.seq_off = self.ln_off = self.ln_count = 0
        self.prev_seq = self.base_seq = prev_seq

    def _successor(self) -> tuple[int, Segment, int] | str:
        """``(dir_fd, segment, fd)`` of the segment after ours, opened; ``LAST`` while ours is the last;
        ``MOVING`` while a rotation is half seen: the next segment was renamed between our listing and our
        open, or the listing missed a file being renamed (a directory read racing a rename may return
        neither name). Stopping there would end a read before events acknowledged long ago."""
        listing = self.backend.listing(self.stream)
        if listing is None:
            return LAST
        dir_fd, segments = listing
        position = next((i for i, seg in enumerate(segments) if seg.ino == self.ino), None)
        if position is None:
            os.close(dir_fd)
            if self.fd is not None and os.fstat(self.fd).st_nlink == 0:
                # Our file was deleted from under us: resume after the last seq we saw.
                self._settle()
                self.after = max(self.after, self.prev_seq)
                os.close(self.fd)
                self.fd = None
                return LAST
            return MOVING
        if position + 1 >= len(segments):
            os.close(dir_fd)
            # A sealed piece is followed by the segment it was sealed for, unless a rotation crashed
            # between its rename and the next file's creation (the next writer creates it).
            return LAST if segments[position].name.endswith(".jsonl") else MOVING
        seg = segments[position + 1]
        fd = open_read(dir_fd, seg.name, self.backend.segment_path(self.stream, seg.name))
        if fd is None or os.fstat(fd).st_ino != seg.ino:
            if fd is not None:
                os.close(fd)
            os.close(dir_fd)
            return MOVING
        return dir_fd, seg, fd

    def _switch(self, dir_fd: int, seg: Segment, fd: int) -> None:
        self._settle()  # the next segment counts on from the last line of this one
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
    # Usually the active file alone holds them: then no listing is needed, whose cost grows with the
    # number of files beside the stream's.
    done: tuple[int, _Gather] | None = None
    active = backend.open_active(stream)
    if active is not None:
        fd, display = active
        gather = _Gather(limit)
        try:
            if gather.segment(fd, display):
                return gather.events(backend, stream)
            done = (os.fstat(fd).st_ino, gather)
        finally:
            os.close(fd)
    for _attempt in range(10):
        listing = backend.listing(stream)
        if listing is None:
            return []
        dir_fd, segments = listing
        try:
            found = _collect_backwards(backend, stream, dir_fd, segments, limit, done)
        finally:
            os.close(dir_fd)
        done = None  # fed (or stale) now: a retry starts over
        if found is not None:
            return found.events(backend, stream)
    return _tail_forward(backend, stream, limit)


def _tail_forward(backend: FileBackend, stream: str, limit: int) -> list[Event]:
    """The slow path (a stream no line of which has a seq, or endless rotation races): bounded memory."""
    return list(collections.deque(Cursor(backend, stream, 0).events(follow=False), maxlen=limit))


class _Gather:
    """The newest ``limit`` records (newest first) and, when none of them has a ``seq``, an ``anchor``
    ``(position, seq)``: the nearest older line that has one. Fed one segment at a time, newest first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.records: list[dict[str, Any]] = []
        self.have_seq = False
        self.all_seq = True  # the usual case: nothing to infer
        self.position = 0
        self.anchor: tuple[int, int] | None = None

    def segment(self, fd: int, display: str) -> bool:
        """Read ``fd`` backwards; true once enough is known to number the records."""
        limit, loads = self.limit, _json.loads
        for start, raw in lines_backward(fd, os.fstat(fd).st_size):
            try:
                rec = loads(raw)  # parse_line, inlined; its reason is only needed for the warning
            except _json.DecodeError:
                rec = None
            if rec.__class__ is not dict:
                warn(f"{display}: skipping malformed line at byte {start}: {parse_line(raw)[1]}")
                continue
            numbered = type(rec.get("seq")) is int
            if self.position < limit:
                self.records.append(rec)
                self.have_seq = self.have_seq or numbered
                self.all_seq = self.all_seq and numbered
            elif numbered:
                self.anchor = (self.position, rec["seq"])  # only counted: memory stays bounded by `limit`
                return True
            self.position += 1
            if self.position >= limit and self.have_seq:
                return True
        return False

    def events(self, backend: FileBackend, stream: str) -> list[Event]:
        if self.all_seq:
            return [event_from_record(rec, stream, 0) for rec in reversed(self.records)]
        return _number(self.records, self.anchor, backend=backend, stream=stream, limit=self.limit)


def _collect_backwards(backend: FileBackend, stream: str, dir_fd: int, segments: list[Segment],
                       limit: int, done: tuple[int, _Gather] | None) -> _Gather | None:
    """The newest records across ``segments``; ``None`` if a segment moved meanwhile. ``done`` is
    ``(inode, gather)`` of a segment already read: when it is still the newest, reading goes on from it
    (so its malformed lines are not reported twice)."""
    gather = _Gather(limit)
    if done is not None and segments and segments[-1].ino == done[0]:
        gather, segments = done[1], segments[:-1]
    for seg in reversed(segments):
        display = backend.segment_path(stream, seg.name)
        fd = open_read(dir_fd, seg.name, display)
        if fd is None:
            return None
        try:
            if os.fstat(fd).st_ino != seg.ino:
                return None
            if gather.segment(fd, display):
                break
        finally:
            os.close(fd)
    return gather


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
    events = [event_from_record(records[i], stream, seqs[i]) for i in range(len(records))]
    events.reverse()
    return events
