"""Agent ledgers (003): one stream per agent, and ``status.json`` as a view of it.

Each agent's ledger is the stream ``ledger/<agent>`` with daily segments (``logs/ledger/<agent>/
YYYY-MM-DD.jsonl``), holding ``task_start``, ``task_result``, ``error``, ``heartbeat`` and ``state_change``
events (:mod:`agentlog.schemas` documents them). ``agents/<agent>/status.json`` is folded from the ledger:
after every write, under a lock beside it, the events after the ``through_seq`` it records are applied and the
file is replaced atomically. Every transition is in the log first, so a crash between the append and the view
write leaves a stale view that the next write or read catches up, never a lost transition; ``rebuild``
recreates it from the ledger alone.

States: ``task_start`` -> ``busy`` (with the task id); ``task_result`` -> ``idle``; ``error`` -> ``error``;
``state_change`` -> the state it names; a heartbeat brings an ``offline`` agent back to ``idle``. Liveness is
judged against each agent's own promise: a heartbeat declares when the next one is due (``next_due``), and
the agent is stale once that time plus a grace period has passed.

Order. Events are folded in the order they happened: by each event's *own time* (:func:`own_time`: its
``spooled_at`` if it waited in the offline spool, else its ``ts``), ``seq`` breaking ties. For events appended
directly that is ``seq`` order. An event replayed from the spool is appended late, after events that happened
while it waited; when one arrives older than what the view already holds, the view is folded again from the
whole ledger in own-time order (:func:`in_order`), so a replayed ``task_start`` or heartbeat never overwrites
a newer state, task or heartbeat.
"""

from __future__ import annotations

import heapq
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import _json
from ._viewfile import MalformedLines, open_view_dir, read_file, replace_file, view_lock
from .errors import InvalidEvent, InvalidStreamName
from .event import Event, comparable_ts, format_ts, parse_ts
from .names import validate_stream_name
from .schemas import LEDGER_TYPES, STATES
from .validate import is_rfc3339 as _is_timestamp  # RFC 3339 with an offset; jsonschema is not imported

if TYPE_CHECKING:
    from .log import EventLog
    from .redact import Redactor

__all__ = ["Ledger", "fold", "in_order", "ledger_stream", "liveness", "open_ledger", "own_time"]

PREFIX = "ledger"
#: Grace after a missed heartbeat deadline: half the declared interval, within these bounds (seconds).
GRACE_MIN, GRACE_MAX = 5.0, 300.0
#: The longest a heartbeat may promise the next one for (seconds): 366 days.
NEXT_DUE_MAX = 366 * 86400.0
#: The longest task id a ledger event may carry (the ledger schema's bound).
TASK_MAX = 256


def ledger_stream(agent: str) -> str:
    """``ledger/<agent>``; the agent's name is one stream-name segment (no ``/``)."""
    if not isinstance(agent, str) or "/" in agent:
        raise InvalidStreamName(f"an agent name is one segment of a stream name (no '/'), got {agent!r}")
    return validate_stream_name(f"{PREFIX}/{agent}")


def open_ledger(root: str | os.PathLike[str] | None = None, **options: Any) -> Ledger:
    """A :class:`Ledger` on the log at ``root`` (default: ``$AGENTLOG_ROOT``, else ``./.agentlog``), opened
    with daily rotation so a new ledger's files are ``YYYY-MM-DD.jsonl``; ``options`` go to ``open_log``."""
    from .log import open_log

    options.setdefault("rotate", "daily")
    return Ledger(open_log(root, **options))


class Ledger:
    """Writes ledger events and keeps each agent's ``status.json`` caught up."""

    def __init__(self, log: EventLog) -> None:
        if not log.root or log.root.startswith("memory:"):
            raise ValueError("a ledger needs a log on disk: status.json lives under its root")
        self.log = log

    # --- writing -------------------------------------------------------------------------------------

    def write(self, agent: str, type: str, *, task: str | None = None, data: Mapping[str, Any] | None = None,
              redactor: Redactor | None = None) -> Event:
        """Append one ledger event (``redactor``: remove secrets from ``data`` and ``task`` first) and update
        ``status.json``. An event the root could not take is spooled (``event.spooled``) and reaches
        ``status.json`` once it is replayed."""
        stream = ledger_stream(agent)
        if type not in LEDGER_TYPES:
            raise InvalidEvent(f"a ledger event's type is one of {', '.join(LEDGER_TYPES)}, got {type!r}")
        payload = dict(data or {})
        if type == "state_change" and payload.get("state") not in STATES:
            raise InvalidEvent(f"a state_change needs data.state, one of {', '.join(STATES)}")
        if type == "error" and not isinstance(payload.get("message"), str):
            raise InvalidEvent("an error event needs data.message (a string)")
        if type == "task_result" and (not isinstance(payload.get("exit_code"), int)
                                      or isinstance(payload.get("exit_code"), bool)):
            raise InvalidEvent("a task_result needs data.exit_code (an integer)")
        if type == "heartbeat" and "next_due" in payload and not _is_timestamp(payload["next_due"]):
            raise InvalidEvent("a heartbeat's data.next_due is an RFC 3339 timestamp with an offset, "
                               f"got {payload['next_due']!r}")
        fields: dict[str, Any] = {}
        if redactor is not None:
            payload, found = redactor.redact(payload)
            counts = Counter({item["rule"]: item["count"] for item in found})
            if isinstance(task, str):
                task, found = redactor.redact(task)
                counts.update({item["rule"]: item["count"] for item in found})
            if counts:
                fields["redactions"] = redactor.report(counts)
        if task is not None and (not isinstance(task, str) or not task or len(task) > TASK_MAX):
            raise InvalidEvent(f"task must be a string of 1-{TASK_MAX} characters, got {task!r}")
        ev = self.log.append(stream, type, actor=agent, data=payload, task=task, **fields)
        if not ev.spooled:
            self.status(agent)
        return ev

    def heartbeat(self, agent: str, *, next_due: float | None = None, task: str | None = None,
                  redactor: Redactor | None = None) -> Event:
        """A heartbeat; ``next_due`` (seconds) promises the next one within that time (``redactor``: as in
        :meth:`write`)."""
        data: dict[str, Any] = {}
        if next_due is not None:
            if not 0 < next_due <= NEXT_DUE_MAX:
                raise ValueError(f"next_due must be a positive number of seconds, at most {NEXT_DUE_MAX:.0f}")
            data["interval_s"] = next_due
            data["next_due"] = format_ts(time.time_ns() + int(next_due * 1e9))
        return self.write(agent, "heartbeat", task=task, data=data, redactor=redactor)

    # --- status.json ---------------------------------------------------------------------------------

    def status(self, agent: str, *, rebuild: bool = False) -> dict[str, Any]:
        """The agent's status, caught up with its ledger (and written to ``status.json`` if it was behind)."""
        stream = ledger_stream(agent)
        dir_fd = open_view_dir(self.log.root, ["agents", agent])
        path = os.path.join(self.log.root, "agents", agent, "status.json")
        # A malformed line in the ledger is skipped and isolated to errors/ledger/<agent>.jsonl, like any view's.
        malformed = MalformedLines(self.log.root, stream, "status")

        def read(after: int = 0) -> Iterator[Event]:
            return self.log.read(stream, after=after, on_malformed=malformed)

        try:
            with view_lock(dir_fd, ".status.lock", timeout=30.0, display=path):
                current = None if rebuild else _load_status(read_file(dir_fd, "status.json", path))
                whole = current is None
                if current is not None:  # the usual case: fold in what came after it
                    new = _fold(current, read(current["through_seq"]), agent, strict=True)
                else:  # new, rebuilt or damaged: from the whole ledger
                    new = _fold(None, read(), agent, strict=True)
                if new is None:  # an event came late (replayed from the spool): the whole ledger, in order
                    whole = True
                    new = fold(None, in_order(read), agent=agent)
                if new != current or rebuild:
                    replace_file(dir_fd, "status.json", _json.dumps(new) + b"\n", display=path, backup=False)
        finally:
            os.close(dir_fd)
        through = new.get("through_seq")
        malformed.isolate(through_seq=through if whole and isinstance(through, int) else None)
        return new

    def agents(self) -> list[str]:
        """Every agent with a ledger, sorted."""
        prefix = PREFIX + "/"
        return sorted(name[len(prefix):] for name in self.log.streams()
                      if name.startswith(prefix) and "/" not in name[len(prefix):])

    def statuses(self) -> list[dict[str, Any]]:
        return [self.status(agent) for agent in self.agents()]

    def rebuild(self) -> list[dict[str, Any]]:
        """Recreate every ``status.json`` from the ledgers alone."""
        return [self.status(agent, rebuild=True) for agent in self.agents()]

    def close(self) -> None:
        self.log.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def own_time(ev: Event) -> str | None:
    """When a ledger event happened, as a canonical timestamp (compares as a string): ``spooled_at`` for an
    event that waited in the offline spool (written then, appended on replay), else its ``ts``; ``None``
    if it has neither (a foreign line)."""
    at = ev.extra.get("spooled_at")
    if isinstance(at, str):
        own = comparable_ts(at)
        if own is not None:
            return own
    return comparable_ts(ev.ts) if isinstance(ev.ts, str) else None


def fold(status: Mapping[str, Any] | None, events: Iterable[Event], *, agent: str) -> dict[str, Any]:
    """Apply ledger ``events``, in the order given, to ``status`` (``None``: a new agent). Pure. Events at or
    below the status's ``through_seq`` are skipped. The times recorded (``since``, ``last_heartbeat``,
    ``last_error.ts``, ``last_event``) are each event's :func:`own_time`. Give a whole ledger through
    :func:`in_order` to fold it in the order its events happened."""
    out = _fold(status, events, agent, strict=False)
    assert out is not None
    return out


def _fold(status: Mapping[str, Any] | None, events: Iterable[Event], agent: str, *,
          strict: bool) -> dict[str, Any] | None:
    """:func:`fold`; with ``strict``, ``None`` as soon as an event is older than one already folded in (it
    came late, from the spool): the caller then folds the whole ledger :func:`in_order`."""
    out: dict[str, Any] = dict(status) if status else {
        "agent": agent, "state": "idle", "task": None, "since": None, "last_heartbeat": None,
        "next_heartbeat_due": None, "last_error": None, "through_seq": 0, "last_event": None}
    done = out["through_seq"]
    newest = out.get("last_event")
    newest = comparable_ts(newest) if isinstance(newest, str) else None
    if strict and status and newest is None:
        return None  # a view from before last_event was kept: it cannot tell what is late
    for ev in events:
        if ev.seq <= done:
            continue
        at = own_time(ev)
        if at is None:
            at = newest or ev.ts  # no time of its own: taken as in order
        elif newest is not None and at < newest:
            if strict:
                return None
        else:
            newest = at
        state = out["state"]
        task = ev.extra.get("task") if isinstance(ev.extra.get("task"), str) else None
        if ev.type == "task_start":
            state, out["task"] = "busy", task
        elif ev.type == "task_result":
            state, out["task"] = "idle", None
            if task is not None and out.get("heartbeat_task") == task:
                # The heartbeats were the task's (agentlog run beats while its command runs): its end withdraws
                # their promise, or an agent idle after a run would turn stale one interval later.
                out["next_heartbeat_due"] = out["heartbeat_task"] = None
        elif ev.type == "error":
            state = "error"
            message = ev.data.get("message")
            out["last_error"] = {"ts": at, "message": message if isinstance(message, str) else "", "task": task}
        elif ev.type == "state_change" and ev.data.get("state") in STATES:
            state = ev.data["state"]
            if state != "busy":
                out["task"] = None
        elif ev.type == "heartbeat":
            out["last_heartbeat"] = at
            due = ev.data.get("next_due")
            out["next_heartbeat_due"] = _timestamp(due)
            out["heartbeat_task"] = task
            if state == "offline":
                state = "idle"
        if state != out["state"] or out["since"] is None:
            out["since"] = at
        out["state"] = state
        out["through_seq"] = max(out["through_seq"], ev.seq)
        out["last_event"] = newest
    return out


def in_order(read: Callable[[], Iterable[Event]]) -> Iterator[Event]:
    """The events of a ledger in the order they happened: by :func:`own_time`, ``seq`` breaking ties.
    ``read()`` gives the ledger in ``seq`` order and is called twice; only the events that came late (older
    than one before them) are held in memory. Events appended between the two reads are left out, for the
    next fold to take."""
    late: list[tuple[str, int, Event]] = []
    top = ""
    last_seq = 0
    for ev in read():
        at = own_time(ev) or top
        if at < top:
            late.append((at, ev.seq, ev))
        else:
            top = at
        last_seq = max(last_seq, ev.seq)
    late.sort(key=lambda item: (item[0], item[1]))
    skip = {seq for _, seq, _ in late}
    top = ""

    def on_time() -> Iterator[tuple[str, int, Event]]:
        nonlocal top
        for ev in read():
            if ev.seq > last_seq:
                return
            if ev.seq not in skip:
                top = own_time(ev) or top
                yield top, ev.seq, ev

    for _, _, ev in heapq.merge(on_time(), late, key=lambda item: (item[0], item[1])):
        yield ev


def liveness(status: Mapping[str, Any], *, now: datetime | None = None,
             grace: float | None = None) -> str:
    """``"alive"``, ``"stale"`` (its own heartbeat deadline plus grace has passed), ``"offline"`` (it said so)
    or ``"unknown"`` (it never declared a deadline)."""
    if grace is not None and not grace >= 0:
        raise ValueError(f"grace must be a number of seconds, 0 or more, got {grace!r}")
    if status.get("state") == "offline":
        return "offline"
    due = _timestamp(status.get("next_heartbeat_due"))
    if due is None:
        return "unknown"
    due_at = datetime.fromisoformat(due)
    if grace is None:
        last = _timestamp(status.get("last_heartbeat"))
        interval = (due_at - datetime.fromisoformat(last)).total_seconds() if last is not None else 0
        grace = min(GRACE_MAX, max(GRACE_MIN, interval / 2))
    current = now or datetime.now(UTC)
    try:
        deadline = due_at + timedelta(seconds=grace)
    except OverflowError:  # a grace past year 9999: never stale
        return "alive"
    return "stale" if current > deadline else "alive"


def _timestamp(value: Any) -> str | None:
    """``value`` in canonical form if it is an RFC 3339 timestamp with an offset (a ``date-time`` of the
    schemas, ``t`` and ``z`` in lower case too), else ``None``."""
    return parse_ts(value.upper()) if _is_timestamp(value) else None


def _load_status(data: bytes | None) -> dict[str, Any] | None:
    """The status on disk, or ``None`` when missing or unusable (it is then rebuilt from the ledger)."""
    if data is None:
        return None
    try:
        value = _json.loads(data)
    except _json.DecodeError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("through_seq"), int):
        return None
    return value
