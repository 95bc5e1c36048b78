"""Fast paths for queries on the file backend: what ``since`` and ``by_type`` may skip, and why.

``since(ts)``: agentlog assigns ``ts`` under the stream's lock and never lets it decrease, so its own lines
(an integer ``seq``, a string ``id`` and a ``ts``) are sorted by time in file order, across segments. The
start is found by bisecting file offsets on those lines only, and reading begins right after the *last* own
line older than ``ts``: every line after that point is parsed and filtered, so a line from another writer
(no ``seq``/``id``) is never trusted to steer the bisect. A foreign line before that point is skipped
unread. It was written before an agentlog event older than ``ts``, and a writer that stamps its line and
then writes it (002's ``log_event.sh`` stamps, then waits for the lock) cannot have stamped it later than
that event, unless its clock runs ahead of ours: such a line is the one thing a bisected ``since`` can miss.

``types``: a line whose ``type`` is one of the wanted strings contains that string's JSON encoding, or an
escape that spells it another way. orjson's encoding is the shortest one (it escapes only what JSON
requires, with the short forms where they exist), so any other spelling of the same string contains ``\\u``
or ``\\/``. Lines containing none of these bytes are skipped without parsing; every other line is parsed
and checked exactly, so the byte test only ever lets too many lines through, never too few. Searching for
the value alone, not ``"type":"x"``, keeps foreign writers' ``"type": "x"`` (with a space) in.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from functools import partial
from typing import Any, NamedTuple, cast

from .. import _json
from ..event import comparable_ts
from ._fs import find_last_newline
from ._scan import lines_forward, parse_line
from ._segments import Segment

#: The bisect stops when the region left is this small; the cursor then reads it and filters line by line.
#: A probe (one read, a line or two parsed) costs about what a dozen lines read for nothing cost.
PROBE_SPAN = 1 << 12
_PROBE_CHUNK = 1 << 12  # one probe reads a page or so: a few lines of ~300 bytes
_UNSET = object()

Record = dict[str, Any]


def record_filter(since: str | None, types: Collection[str] | None) -> Callable[[Record], bool] | None:
    """A test on parsed records equal to ``EventLog.query``'s on events: ``type in types``, and a ``ts`` at
    or after ``since`` (canonical); ``None`` when there is nothing to test. For ``since`` alone it is an
    :class:`AtOrAfter`, which readers may also apply to whole chunks of events at once."""
    if since is None:
        return None if types is None else partial(_type_in, types)
    at_or_after = AtOrAfter(since)
    if types is None:
        return at_or_after
    return lambda record: _type_in(types, record) and at_or_after(record)


class AtOrAfter:
    """``ts >= since`` (canonical), on a record (its ``ts``, else its ``timestamp``: the ``ts`` that
    ``event_from_record`` gives its event) or on an event's ``ts`` (:meth:`ts_ok`, :meth:`keep_all`)."""

    __slots__ = ("_last_ok", "_last_ts", "since")

    def __init__(self, since: str) -> None:
        self.since = since
        # The events of one batch share one ts, so the last verdict is usually the next one: checking that a
        # string is canonical (a regex) costs more than comparing it with the previous one.
        self._last_ts: object = _UNSET  # only ever a string after this: a missing or non-string ts never matches
        self._last_ok = False

    def __call__(self, record: Record) -> bool:
        ts = record.get("ts")
        if ts == self._last_ts:
            return self._last_ok
        if not isinstance(ts, str):
            ts = record.get("timestamp")
            if not isinstance(ts, str):
                return False
        return self.ts_ok(ts)

    def ts_ok(self, ts: str | None) -> bool:
        """The verdict on an event's ``ts`` (``None``: it has none, never at or after anything)."""
        if ts == self._last_ts:
            return self._last_ok
        if ts is None:
            return False
        comparable = comparable_ts(ts)
        self._last_ts, self._last_ok = ts, comparable is not None and comparable >= self.since
        return self._last_ok

    def keep_all(self, stamps: Collection[str | None]) -> bool:
        """Whether every one of ``stamps`` (the distinct ``ts`` of a chunk of events) is at or after
        ``since``. Many stamps (events appended one at a time) are checked at once when they are all
        canonical: the lowest then decides, comparing as a string, as :func:`comparable_ts` would."""
        if len(stamps) > _FEW_STAMPS and None not in stamps:
            texts = cast("Collection[str]", stamps)
            if min(texts) >= self.since and set(map(len, texts)) == {len(_SHAPE)} \
                    and "".join(texts).translate(_ZEROS) == _SHAPE * len(texts):
                return True
        return all(map(self.ts_ok, stamps))


#: The shape of a canonical ts with every digit made 0 (ASCII digits only: stricter than ``event``'s
#: pattern, whose ``\d`` matches any decimal digit, so a stamp it would take and this would not is merely
#: checked alone). Every stamp being 27 characters long keeps the joined ones aligned on the shape.
_SHAPE = "0000-00-00T00:00:00.000000Z"
_ZEROS = str.maketrans("123456789", "000000000")
_FEW_STAMPS = 8  # up to this many, one by one: a batch shares one stamp, and each is cached as it passes


def _type_in(types: Collection[str], record: Record) -> bool:
    value = record.get("type")
    return (value if isinstance(value, str) else "") in types


def type_needles(types: Collection[str]) -> list[bytes] | None:
    """Byte strings of which every line holding one of ``types`` contains at least one (see the module
    docstring); ``None`` when no byte test is safe: the empty type matches lines that have no ``type``."""
    if "" in types:
        return None
    try:
        needles = {_json.dumps(t) for t in types}
    except _json.EncodeError:
        return None  # a lone surrogate: no parsed line can hold it, but be plain rather than clever
    return [*sorted(needles), b"\\u", b"\\/"]


def own_ts(record: Record) -> str | None:
    """The comparable ``ts`` of a line agentlog wrote (the lines whose order ``since`` relies on), else
    ``None``. The same test decides which ``ts`` bounds the next append (``scan_last``)."""
    ts = record.get("ts")
    if type(record.get("seq")) is int and isinstance(record.get("id"), str) and isinstance(ts, str):
        return comparable_ts(ts)
    return None


class Start(NamedTuple):
    """Where a ``since`` read begins: ``segment`` (its position in the listing, opened as ``fd``) at
    ``offset``, just after an own line numbered ``seq``."""

    segment: int
    fd: int
    offset: int
    seq: int


class _Own(NamedTuple):
    stop: int  # offset just after the line's newline
    ts: str
    seq: int


def find_start(segments: list[Segment], open_segment: Callable[[Segment], int | None],
               since: str) -> Start | bool:
    """Where to start reading events at or after ``since``: a :class:`Start`, ``True`` to read from the
    beginning, or ``False`` if a segment moved while we looked (the caller lists again).

    Segments are tried newest first; the first whose earliest own line is older than ``since`` holds the
    boundary (earlier ones hold only older own lines), and it is bisected.
    """
    for index in range(len(segments) - 1, -1, -1):
        fd = open_segment(segments[index])
        if fd is None:
            return False
        try:
            end = find_last_newline(fd, os.fstat(fd).st_size)
            first = _first_own(fd, 0, end, end)
            if first is not None and first.ts < since:
                start, fd = _bisect(index, fd, end, first, since), -1  # the caller owns it now
                return start
        finally:
            if fd >= 0:
                os.close(fd)
    return True


def _bisect(index: int, fd: int, end: int, first: _Own, since: str) -> Start:
    """Invariant: own lines before ``lo`` are older than ``since`` and ``lo`` is just after one of them
    (numbered ``seq``); own lines starting at or after ``hi`` are not older. Only ``lo`` decides what is
    read (everything after it, filtered), so the results rest on the first half alone; ``hi`` only narrows
    the search. Equal timestamps (a batch shares one) need nothing special: only ``< since`` moves ``lo``."""
    lo, seq, hi = first.stop, first.seq, end
    while hi - lo > PROBE_SPAN:
        mid = (lo + hi) // 2
        found = _first_own(fd, mid, hi, end)
        if found is None or found.ts >= since:
            hi = mid
        else:
            lo, seq = found.stop, found.seq
    return Start(index, fd, lo, seq)


def _first_own(fd: int, begin: int, limit: int, end: int) -> _Own | None:
    """The first own line that starts in ``[begin, limit)``; a line ``begin`` falls inside is passed over.
    Malformed and foreign lines are passed over silently: the cursor reports what it reads, and a probe
    may look at lines before where reading starts."""
    # Reading from begin - 1, the first "line" is the tail of the one begin falls inside (empty when a
    # line starts exactly at begin): one read finds both the line start and the lines after it.
    skip = begin > 0
    for line_start, raw in lines_forward(fd, max(begin - 1, 0), end, chunk=_PROBE_CHUNK):
        if skip:
            skip = False
            continue
        if line_start >= limit:
            return None
        rec, _why = parse_line(raw)
        if rec is None:
            continue
        ts = own_ts(rec)
        if ts is not None:
            return _Own(line_start + len(raw) + 1, ts, rec["seq"])
    return None
