"""The backend interface behind :class:`agentlog.EventLog`.

A backend stores streams of events and assigns ``seq`` and ``ts``; everything else (validation, the
envelope, queries built from ``read``) lives above it in :mod:`agentlog.log`, so a new backend (PostgreSQL,
later) implements only this Protocol and passes the shared contract suite in :mod:`agentlog.testing`.

A backend may also offer ``scan`` (:class:`Scanner`): ``read`` restricted to a time and a set of types, for
backends that can skip what cannot match (the file backend bisects by time and searches bytes before
parsing; PostgreSQL would use an index). ``EventLog.query`` uses it when it is there and filters ``read``
otherwise, so it is an optimisation only: its results must equal that filter exactly.

Likewise ``append_records`` (:class:`RecordAppender`): ``append`` given each event's id and serialised body
(after its opening brace: :func:`agentlog.event.event_tail`) and returning where the batch landed, for
``EventWriter``, which queues bytes and builds an :class:`~agentlog.Event` only when its caller asks for one.

A line that is not a JSON object is never an event: ``read`` skips it and goes on. By default the file backend
logs a warning naming ``path:line``; given ``on_malformed``, it hands the line (:class:`MalformedLine`) to that
callable instead, which is how views isolate such lines to ``<root>/errors/`` (see
:mod:`agentlog._viewfile`). A backend that cannot hold malformed lines (memory, PostgreSQL) accepts the
argument and never calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from typing import NamedTuple, Protocol

from ..event import Draft, Event
from ..report import Report

__all__ = ["Backend", "MalformedLine", "OnMalformed", "RecordAppender", "Scanner", "StreamInfo"]


class StreamInfo(NamedTuple):
    """What ``streams --json`` shows for one stream."""

    name: str
    events: int  #: the last seq, which equals the number of events in a gapless stream
    bytes: int
    segments: int
    last_ts: str | None


class MalformedLine(NamedTuple):
    """A line a read skipped because it is not a JSON object: what ``on_malformed`` receives.

    ``path`` and ``line`` are exactly what ``verify`` reports for the same line (the segment file, and the
    1-based line number within it), so the two can be matched.
    """

    path: str  #: the segment file holding the line
    line: int  #: 1-based line number within that file
    offset: int  #: byte offset of the line's start within that file
    after_seq: int  #: the seq of the last event before the line in the stream (0 when there is none)
    raw: bytes  #: the line as stored, without its newline
    reason: str  #: why it is not an event ("not valid JSON (...)", "empty line", ...)


#: The callable a read hands each skipped line to.
OnMalformed = Callable[[MalformedLine], None]


class Backend(Protocol):
    """Storage for streams. Every method is safe to call from several threads and processes at once."""

    def append(self, stream: str, drafts: Sequence[Draft], *, expect_last: int | None = None) -> list[Event]:
        """Store ``drafts`` as consecutive events: gapless ``seq``, non-decreasing ``ts``.

        With ``expect_last``, store them only if the stream's last ``seq`` (0 when empty) equals it, decided
        under the same exclusion as the append, else raise :class:`~agentlog.Conflict` and store nothing: the
        compare-and-set that ``EventLog.append_if`` (and so the task graph) rests on.

        A batch is all or nothing for every error the call can report (refusal, disk full, short write):
        nothing of it stays. A process killed in the middle of writing a large batch can leave a prefix
        of whole records, none of them acknowledged; never a partial record.
        """
        ...

    def read(self, stream: str, after: int = 0, *, on_malformed: OnMalformed | None = None) -> Iterator[Event]:
        """Events with ``seq > after`` in order; an unknown stream yields nothing.

        Malformed lines are skipped. ``on_malformed``, when given, is called with each one met (as it is
        met, during iteration) instead of any warning the backend would log; a segment the read skips
        because all of its events are at or before ``after`` is not looked at."""
        ...

    def tail(self, stream: str, limit: int) -> list[Event]:
        """The newest ``limit`` events, oldest first."""
        ...

    def follow(self, stream: str, after: int, timeout: float | None, poll: float) -> Iterator[Event]:
        """Like ``read``, then wait for new events; stop after ``timeout`` seconds without one."""
        ...

    def streams(self) -> list[str]:
        ...

    def stat(self, stream: str) -> StreamInfo:
        ...

    def verify(self, streams: Sequence[str] | None) -> Report:
        ...

    def close(self) -> None:
        ...


class Scanner(Protocol):
    """The optional fast path a :class:`Backend` may add for ``EventLog.query``."""

    def scan(self, stream: str, *, since: str | None = None,
             types: Collection[str] | None = None) -> Iterator[Event]:
        """Exactly the events of ``read(stream, 0)`` whose ``type`` is in ``types`` and whose ``ts``, made
        comparable (:func:`agentlog.event.comparable_ts`), is at or after ``since`` (canonical); events
        without a usable ``ts`` are left out when ``since`` is given. ``None`` means no condition. Lines
        skipped unparsed are not reported as malformed; ``verify`` still reports every one.
        """
        ...


class RecordAppender(Protocol):
    """The optional fast path a :class:`Backend` may add for ``EventLog.store_records``."""

    def append_records(self, stream: str, ids: Sequence[bytes], tails: Sequence[bytes], *,
                       expect_last: int | None = None) -> tuple[int, str]:
        """Exactly ``append(stream, drafts, expect_last=expect_last)`` for the drafts with these ids
        (``Draft.id``, ASCII-encoded) and bodies (``Draft.body[1:]``, the body after its opening brace), at
        least one: returns ``(seq, ts)``, the first event's ``seq`` (the others follow it, gapless) and the
        ``ts`` every event of the batch got. A record is ``{"seq":<seq>,"id":"<id>","ts":"<ts>",<tail>`` and a newline.
        """
        ...
