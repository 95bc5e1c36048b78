"""The event envelope: the :class:`Event` and :class:`Draft` types, validation, strict JSON, serialisation.

An event on disk is one line of strict JSON::

    {"seq":42,"id":"0195f0c4-...","ts":"2026-11-22T10:00:00.123456Z","stream":"conv-7","type":"question",
     "actor":"agent-a","visibility":"public","interaction":3,"data":{"content":"..."}}

``seq`` and ``ts`` are assigned by the backend under the stream's lock; everything else is checked and
serialised here, before the lock is taken, so a refused event never costs a byte on disk and the lock is held
only for the write itself.

Ids and timestamps are concerns of their own, in :mod:`agentlog._ids` (:func:`uuid7`, :func:`uuid7_block`,
:class:`IdBlock`) and :mod:`agentlog._time` (:func:`format_ts`, :func:`now_ts`, :func:`parse_ts`,
:func:`comparable_ts`); their public names are re-exported here, where the rest of the package and its users
import them from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from . import _json
from ._ids import IdBlock, uuid7, uuid7_block
from ._ids import prepare_random as prepare_random  # re-exported: not in __all__, but imported from here
from ._time import comparable_ts as comparable_ts  # re-exported: not in __all__, but imported from here
from ._time import format_ts, now_ts, parse_ts
from .errors import InvalidEvent

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "ENVELOPE_FIELDS",
    "MAX_DEPTH",
    "Draft",
    "Event",
    "IdBlock",
    "draft_from_tail",
    "drafts_from_dicts",
    "dumps_strict",
    "event_tail",
    "event_tail_of",
    "format_ts",
    "make_draft",
    "now_ts",
    "parse_ts",
    "uuid7",
    "uuid7_block",
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
        """The stored event, sharing ``data`` with the draft (slots set directly, as in
        :func:`event_from_record`: every slot must be set here)."""
        ev: Event = _new(Event)
        ev.seq = seq
        ev.id = self.id
        ev.ts = ts
        ev.stream = self.stream
        ev.type = self.type
        ev.actor = self.actor
        ev.level = self.level
        ev.visibility = self.visibility
        ev.interaction = self.interaction
        ev.data = self.data
        extra = self.extra
        ev.extra = extra if extra is not _NO_EXTRA else {}  # the shared empty one is never handed out
        ev.spooled = False
        return ev


def make_draft(stream: str, type: Any, *, data: Any = None, actor: Any = None,
               fields: Mapping[str, Any] | None = None,
               max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> Draft:
    """Check one event and serialise it, or raise :class:`InvalidEvent` naming what is wrong."""
    tail = event_tail(stream, type, data, actor, fields, max_event_bytes)
    # Checked: the fields are what _checked_draft would have kept.
    draft: Draft = _new(Draft)
    draft.stream = stream
    draft.type = type
    draft.data = {} if data is None else data
    draft.actor = actor
    if fields:
        get = fields.get
        draft.level = get("level")
        draft.visibility = get("visibility")
        draft.interaction = get("interaction")
        draft.extra = _NO_EXTRA if _SHORT_FIELDS.issuperset(fields) else \
            {key: value for key, value in fields.items() if value is not None and key not in _SHORT_FIELDS}
    else:
        draft.level = draft.visibility = draft.interaction = None
        draft.extra = _NO_EXTRA
    draft.body = b"{" + tail
    draft.id = uuid7()
    return draft


def event_tail(stream: str, type: Any, data: Any, actor: Any, fields: Mapping[str, Any] | None,
               max_event_bytes: int) -> bytes:
    """Check and serialise one event as :func:`make_draft` does, raising the same :class:`InvalidEvent`s, and
    return its body after the opening brace (``Draft.body[1:]``): what a line holds after its ``seq``,
    ``id`` and ``ts``. ``EventWriter`` queues these, not drafts (through :func:`event_tail_of`)."""
    if fields:
        get = fields.get
        return event_tail_of(stream, type, data, actor, get("level"), get("visibility"), get("interaction"),
                             fields, max_event_bytes)
    return event_tail_of(stream, type, data, actor, None, None, None, None, max_event_bytes)


def event_tail_of(stream: str, type: Any, data: Any, actor: Any, level: Any, visibility: Any, interaction: Any,
                  given: Mapping[str, Any] | None, max_event_bytes: int) -> bytes:
    """:func:`event_tail` with ``level``, ``visibility`` and ``interaction`` given on their own (as
    ``EventWriter.emit`` takes them), and ``given`` every field as the caller gave them (those three included,
    in the caller's order), or ``None`` when there is no other: the full checks take ``given``, so that of
    several faults they report the one they always did.

    This is every event's hot path. The usual event, one whose stream and labels were seen before with no
    other top-level field, skips the label checks and the envelope's serialisation: :data:`_PREFIXES` holds
    its checked, serialised beginning, and only ``data`` is checked and serialised. Everything else takes
    :func:`_checked_draft`, which gives every error message; the shortcut refuses nothing by itself but
    ``data`` (with the same walk) and the size, so both paths refuse the same events with the same words."""
    if given is not None and not _SHORT_FIELDS.issuperset(given):
        return _checked_draft(stream, type, data, actor, given, max_event_bytes).body[1:]
    if interaction is not None and (interaction.__class__ is not int or not 0 <= interaction <= _INT_MAX):
        return _checked_draft(stream, type, data, actor, _given(level, visibility, interaction, given),
                              max_event_bytes).body[1:]
    try:
        prefix = _PREFIXES[stream, type, actor, level, visibility]
    except (KeyError, TypeError):  # not seen yet, or an unhashable (so invalid) label
        return _checked_draft(stream, type, data, actor, _given(level, visibility, interaction, given),
                              max_event_bytes).body[1:]
    if data is None:
        serialised = _EMPTY_DATA
    elif data.__class__ is not dict:
        return _checked_draft(stream, type, data, actor, _given(level, visibility, interaction, given),
                              max_event_bytes).body[1:]
    else:
        for key, value in data.items():  # a flat object of plain values needs no recursive walk
            kind = value.__class__
            if key.__class__ is not str or not (
                    kind is str or kind is bool or value is None
                    or (kind is int and _INT_MIN <= value <= _INT_MAX) or (kind is float and _isfinite(value))):
                try:
                    _check_json(data, 1)
                except _Reject as rej:
                    raise InvalidEvent(f"{rej.where()}: {rej.reason}") from None
                break
        try:
            serialised = _json.dumps(data)
        except _json.EncodeError:
            return _checked_draft(stream, type, data, actor, _given(level, visibility, interaction, given),
                                  max_event_bytes).body[1:]
    if interaction is None:
        tail = b'%s,"data":%s}' % (prefix, serialised)
    else:
        tail = b'%s,"interaction":%d,"data":%s}' % (prefix, interaction, serialised)
    if len(tail) + _ENVELOPE_OVERHEAD + 1 > max_event_bytes:
        raise InvalidEvent(f"event is {len(tail) + _ENVELOPE_OVERHEAD + 1} bytes, over the "
                           f"max_event_bytes limit of {max_event_bytes}")
    return tail


def _given(level: Any, visibility: Any, interaction: Any, given: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return {"level": level, "visibility": visibility, "interaction": interaction} if given is None else given


def _checked_draft(stream: str, type: Any, data: Any, actor: Any, fields: Mapping[str, Any] | None,
                   max_event_bytes: int) -> Draft:
    """Every check, for whatever :func:`event_tail`'s shortcut does not cover: a :class:`Draft` without ``id``."""
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
    if not extra:
        _remember_prefix(stream, type, actor, level, visibility)
    draft: Draft = _new(Draft)
    draft.stream = stream
    draft.type = type
    draft.data = data
    draft.actor = actor
    draft.level = level
    draft.visibility = visibility
    draft.interaction = interaction
    draft.extra = extra
    draft.body = serialised
    return draft


def draft_from_tail(stream: str, id: str, tail: bytes) -> Draft:
    """The :class:`Draft` that :func:`make_draft` made for ``tail`` (:func:`event_tail`, what
    ``EventWriter`` queues), rebuilt from it; for the rare paths that need drafts (the spool)."""
    body = b"{" + tail
    ev = event_from_record(_json.loads(body), stream, 0)
    draft: Draft = _new(Draft)
    draft.stream = stream
    draft.type = ev.type
    draft.data = ev.data
    draft.actor = ev.actor
    draft.level = ev.level
    draft.visibility = ev.visibility
    draft.interaction = ev.interaction
    draft.extra = ev.extra
    draft.body = body
    draft.id = id
    return draft


def _remember_prefix(stream: str, type: str, actor: str | None, level: str | None,
                     visibility: str | None) -> None:
    """Keep the serialised envelope of a checked event for :func:`event_tail`'s shortcut: only exact ``str``
    labels (a subclass could compare equal to a string it does not serialise as), and only so many."""
    key = (stream, type, actor, level, visibility)
    if any(v is not None and v.__class__ is not str for v in key) or len(_PREFIXES) >= _PREFIXES_MAX:
        return
    head: dict[str, Any] = {"stream": stream, "type": type}
    if actor is not None:
        head["actor"] = actor
    if level is not None:
        head["level"] = level
    if visibility is not None:
        head["visibility"] = visibility
    _PREFIXES[key] = _json.dumps(head)[1:-1]  # without the braces


#: ``(stream, type, actor, level, visibility)`` -> ``b'"stream":...,"type":...'`` for events already
#: checked once (see :func:`event_tail`); bounded, so unbounded label sets only lose the shortcut.
_PREFIXES: dict[tuple[str, str, str | None, str | None, str | None], bytes] = {}
_PREFIXES_MAX = 4096
_SHORT_FIELDS = frozenset(("level", "visibility", "interaction"))
_EMPTY_DATA = b"{}"
#: ``Draft.extra`` of every draft without unknown fields: one shared dict, never mutated and never handed
#: to an :class:`Event` (``Draft.event`` gives each its own), so that each draft does not allocate one.
_NO_EXTRA: dict[str, Any] = {}


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
_isfinite = math.isfinite


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
