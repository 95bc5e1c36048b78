"""The event envelope: validation, strict JSON, ids and timestamps.

An event on disk is one line of strict JSON::

    {"seq":42,"id":"0195f0c4-...","ts":"2026-11-22T10:00:00.123456Z","stream":"conv-7","type":"question",
     "actor":"agent-a","visibility":"public","interaction":3,"data":{"content":"..."}}

``seq`` and ``ts`` are assigned by the backend under the stream's lock; everything else is checked and
serialised here, before the lock is taken, so a refused event never costs a byte on disk and the lock is held
only for the write itself.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from . import _json
from .errors import InvalidEvent

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "ENVELOPE_FIELDS",
    "MAX_DEPTH",
    "Draft",
    "Event",
    "drafts_from_dicts",
    "dumps_strict",
    "format_ts",
    "make_draft",
    "now_ts",
    "parse_ts",
    "uuid7",
]

#: Events whose line (envelope included) would be larger than this are refused: 16 MiB.
DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024
#: Containers (objects and arrays) may nest at most this deep inside an event's fields.
MAX_DEPTH = 64
#: The longest ``type``, ``actor``, ``level`` or ``visibility`` accepted.
MAX_LABEL_CHARS = 256

#: Top-level names with a meaning; ``seq``, ``id``, ``ts`` and ``stream`` are assigned, never given.
ENVELOPE_FIELDS = ("seq", "id", "ts", "stream", "type", "actor", "level", "visibility", "interaction", "data")
ASSIGNED_FIELDS = frozenset(("seq", "id", "ts", "stream"))
_LABELS = ("actor", "level", "visibility")
# Room for '{"seq":<20 digits>,"id":"<36>","ts":"<27>",' and the newline around the serialised body.
_ENVELOPE_OVERHEAD = 100


class Event:
    """One event read from or written to a stream."""

    __slots__ = ("actor", "data", "extra", "id", "interaction", "level", "seq", "spooled", "stream", "ts",
                 "type", "visibility")

    def __init__(self, *, seq: int, id: str | None, ts: str | None, stream: str, type: str,
                 actor: str | None = None, level: str | None = None, visibility: str | None = None,
                 interaction: int | None = None, data: dict[str, Any] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        self.seq = seq
        self.id = id
        self.ts = ts
        self.stream = stream
        self.type = type
        self.actor = actor
        self.level = level
        self.visibility = visibility
        self.interaction = interaction
        self.data = data if data is not None else {}
        #: Unknown top-level fields, preserved as they were written.
        self.extra = extra if extra is not None else {}
        #: True when the root could not be written and the event waits in the offline spool: it is durable
        #: there, has ``seq`` 0 and the time it was spooled as ``ts``, and gets both when it is replayed.
        self.spooled = False

    def to_dict(self) -> dict[str, Any]:
        """The event as it is stored: envelope first, optional fields only when set, then unknown ones."""
        out: dict[str, Any] = {"seq": self.seq, "id": self.id, "ts": self.ts, "stream": self.stream,
                               "type": self.type}
        if self.actor is not None:
            out["actor"] = self.actor
        if self.level is not None:
            out["level"] = self.level
        if self.visibility is not None:
            out["visibility"] = self.visibility
        if self.interaction is not None:
            out["interaction"] = self.interaction
        out["data"] = self.data
        out.update(self.extra)
        return out

    def to_json(self) -> str:
        """The event as one line of JSON, without the newline."""
        return _json.dumps(self.to_dict()).decode()

    @classmethod
    def from_record(cls, record: dict[str, Any], *, stream: str, seq: int) -> Event:
        """Build an event from a parsed line; ``seq`` is used when the line has none (a foreign writer)."""
        return event_from_record(record, stream, seq)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable, like a dict

    def __repr__(self) -> str:
        spooled = ", spooled=True" if self.spooled else ""
        return (f"Event(stream={self.stream!r}, seq={self.seq}, type={self.type!r}, id={self.id!r}, "
                f"ts={self.ts!r}{spooled})")


_KNOWN = frozenset(ENVELOPE_FIELDS)
_new = object.__new__


def event_from_record(record: dict[str, Any], stream: str, seq: int) -> Event:
    """``Event.from_record`` without keyword arguments or helper calls: every event a read yields is built
    here, and those were half of its cost. Slots are set directly, so every slot must be set here."""
    get = record.get
    ev: Event = _new(Event)
    value = get("seq")
    ev.seq = value if type(value) is int else seq
    value = get("id")
    ev.id = value if isinstance(value, str) else None
    ts = get("ts")
    if not isinstance(ts, str):
        ts = get("timestamp")  # 002's shell writer writes "timestamp": keep its lines queryable by time
        ts = ts if isinstance(ts, str) else None
    ev.ts = ts
    ev.stream = stream
    value = get("type")
    ev.type = value if isinstance(value, str) else ""
    value = get("actor")
    ev.actor = value if isinstance(value, str) else None
    value = get("level")
    ev.level = value if isinstance(value, str) else None
    value = get("visibility")
    ev.visibility = value if isinstance(value, str) else None
    value = get("interaction")
    ev.interaction = value if isinstance(value, int) and not isinstance(value, bool) else None
    value = get("data")
    ev.data = value if isinstance(value, dict) else ({} if value is None else {"value": value})
    ev.extra = {} if _KNOWN.issuperset(record) else {k: v for k, v in record.items() if k not in _KNOWN}
    ev.spooled = False
    return ev


class Draft:
    """A checked, serialised event waiting for its ``seq`` and ``ts``."""

    __slots__ = ("actor", "body", "data", "extra", "id", "interaction", "level", "stream", "type",
                 "visibility")

    def __init__(self, *, stream: str, type: str, data: dict[str, Any], actor: str | None,
                 level: str | None, visibility: str | None, interaction: int | None,
                 extra: dict[str, Any], body: bytes, id: str) -> None:
        self.stream = stream
        self.type = type
        self.data = data
        self.actor = actor
        self.level = level
        self.visibility = visibility
        self.interaction = interaction
        self.extra = extra
        #: ``{"stream":...,"type":...,...}`` serialised; the backend splices seq, id and ts in front.
        self.body = body
        self.id = id

    def line(self, seq: int, ts: str) -> bytes:
        """The full record, newline included."""
        return b'{"seq":%d,"id":"%s","ts":"%s",%s\n' % (seq, self.id.encode(), ts.encode(), self.body[1:])

    def event(self, seq: int, ts: str) -> Event:
        return Event(seq=seq, id=self.id, ts=ts, stream=self.stream, type=self.type, actor=self.actor,
                     level=self.level, visibility=self.visibility, interaction=self.interaction,
                     data=self.data, extra=self.extra)


def make_draft(stream: str, type: Any, *, data: Any = None, actor: Any = None,
               fields: Mapping[str, Any] | None = None,
               max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> Draft:
    """Check one event and serialise it, or raise :class:`InvalidEvent` naming what is wrong."""
    if not isinstance(type, str) or not type:
        raise InvalidEvent(f"event type must be a non-empty string, got {type!r}")
    _check_label("type", type)
    if actor is not None:
        _check_label("actor", actor)
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        raise InvalidEvent(f"data must be a JSON object (dict), got {_type_name(data)}")
    level = visibility = interaction = None
    extra: dict[str, Any] = {}
    if fields:
        for key, value in fields.items():
            if not isinstance(key, str):
                raise InvalidEvent(f"field names must be strings, got {key!r}")
            if key in ASSIGNED_FIELDS:
                raise InvalidEvent(f"{key!r} is assigned by agentlog and cannot be given")
            if key in ("type", "data", "actor"):
                raise InvalidEvent(f"{key!r} given twice")
            if value is None:
                continue
            if key == "level" or key == "visibility":
                _check_label(key, value)
                if key == "level":
                    level = value
                else:
                    visibility = value
            elif key == "interaction":
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _INT_MAX:
                    raise InvalidEvent(f"interaction must be a non-negative integer, got {value!r}")
                interaction = value
            else:
                extra[key] = value
    body: dict[str, Any] = {"stream": stream, "type": type}
    if actor is not None:
        body["actor"] = actor
    if level is not None:
        body["level"] = level
    if visibility is not None:
        body["visibility"] = visibility
    if interaction is not None:
        body["interaction"] = interaction
    body["data"] = data
    try:
        _check_json(data, 1)
        for key, value in extra.items():
            _check_json(value, 1)
            body[key] = value
    except _Reject as rej:
        raise InvalidEvent(f"{rej.where()}: {rej.reason}") from None
    try:
        serialised = _json.dumps(body)
    except _json.EncodeError as exc:
        # Lone surrogates are not valid UTF-8: both JSON implementations refuse them here.
        raise InvalidEvent(f"event is not strict JSON: {exc}") from None
    if len(serialised) + _ENVELOPE_OVERHEAD > max_event_bytes:
        raise InvalidEvent(f"event is {len(serialised) + _ENVELOPE_OVERHEAD} bytes, over the "
                           f"max_event_bytes limit of {max_event_bytes}")
    return Draft(stream=stream, type=type, data=data, actor=actor, level=level, visibility=visibility,
                 interaction=interaction, extra=extra, body=serialised, id=uuid7())


def dumps_strict(value: Any) -> bytes:
    """Serialise one JSON value under the same strict rules as events, or raise :class:`InvalidEvent`."""
    try:
        _check_json(value, 0)
    except _Reject as rej:
        raise InvalidEvent(f"{rej.where()}: {rej.reason}") from None
    try:
        return _json.dumps(value)
    except _json.EncodeError as exc:
        raise InvalidEvent(f"not strict JSON: {exc}") from None


def drafts_from_dicts(stream: str, items: Iterable[Any], *, max_event_bytes: int) -> list[Draft]:
    """Check a batch given as dicts (``{"type": ..., "data": ..., ...}``); one bad item refuses all."""
    drafts = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise InvalidEvent(f"batch item {index}: expected an object, got {_type_name(item)}")
        fields = dict(item)
        etype = fields.pop("type", None)
        data = fields.pop("data", None)
        actor = fields.pop("actor", None)
        try:
            drafts.append(make_draft(stream, etype, data=data, actor=actor, fields=fields,
                                     max_event_bytes=max_event_bytes))
        except InvalidEvent as exc:
            raise InvalidEvent(f"batch item {index}: {exc}") from None
    return drafts


def _check_label(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise InvalidEvent(f"{name} must be a string, got {_type_name(value)}")
    if len(value) > MAX_LABEL_CHARS:
        raise InvalidEvent(f"{name} is longer than {MAX_LABEL_CHARS} characters")
    if _CONTROL.search(value):
        raise InvalidEvent(f"{name} contains a control character: {value!r}")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _Reject(Exception):
    """Raised inside the strict-JSON walk; collects the path on the way out."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []

    def where(self) -> str:
        out = ""
        for part in reversed(self.path):
            out += part if part.startswith("[") else f".{part}" if out else part
        return out or "event"


# orjson's range; the standard library would write any integer, so both are held to this one.
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1


def _check_json(value: Any, depth: int) -> None:
    """Refuse what strict JSON cannot represent; exact type checks first because they are the hot path."""
    kind = value.__class__
    if kind is str or kind is bool or value is None:
        return
    if kind is int:
        if _INT_MIN <= value <= _INT_MAX:
            return
        raise _Reject(f"{value} is outside the 64-bit integers JSON readers can hold")
    if kind is float:
        if math.isfinite(value):
            return
        raise _Reject(f"{value!r} is not valid JSON (NaN and Infinity are refused)")
    if isinstance(value, dict):
        if depth > MAX_DEPTH:
            raise _Reject(f"nested deeper than {MAX_DEPTH} levels")
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Reject(f"object key {key!r} is not a string")
            try:
                _check_json(item, depth + 1)
            except _Reject as rej:
                rej.path.append(key)
                raise
        return
    if isinstance(value, (list, tuple)):
        if depth > MAX_DEPTH:
            raise _Reject(f"nested deeper than {MAX_DEPTH} levels")
        for index, item in enumerate(value):
            try:
                _check_json(item, depth + 1)
            except _Reject as rej:
                rej.path.append(f"[{index}]")
                raise
        return
    if isinstance(value, str):
        return  # str subclasses (enums) serialise as their value
    if isinstance(value, int):
        return _check_json(int(value), depth)
    if isinstance(value, float):
        return _check_json(float(value), depth)
    raise _Reject(f"{_type_name(value)} is not representable in JSON")


def _type_name(value: Any) -> str:
    return type(value).__qualname__


# --- ids and timestamps ---------------------------------------------------------------------------------

def uuid7() -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then randomness; sorts by creation time."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64 | 0b10 << 62 \
        | (rand & 0x3FFF_FFFF_FFFF_FFFF)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def format_ts(ns: int) -> str:
    """Nanoseconds since the epoch as RFC 3339 UTC with microseconds and ``Z``."""
    sec, rem = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{rem // 1000:06d}Z"


def now_ts() -> str:
    return format_ts(time.time_ns())


def parse_ts(value: str | datetime) -> str:
    """Any RFC 3339 / ISO 8601 instant (or a ``datetime``) in agentlog's canonical form.

    The canonical form has a fixed width, so canonical timestamps compare correctly as strings. A value
    without an offset is taken as UTC. Raises ``ValueError`` for anything else.
    """
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"not an RFC 3339 timestamp: {value!r}") from None
    else:
        raise ValueError(f"not a timestamp: {value!r}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_CANONICAL = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


def comparable_ts(value: str) -> str | None:
    """A stored ``ts`` in a form that compares correctly as a string, or ``None`` if it has none.

    The hot path of time queries: agentlog's own timestamps are already canonical and are only
    pattern-checked; anything else (another writer's ``timestamp``) is parsed.
    """
    if _CANONICAL.fullmatch(value):
        return value
    try:
        return parse_ts(value)
    except ValueError:
        return None
