"""JSON Schemas (draft 2020-12) for the event envelope, ledger events and ``status.json``.

They document the formats (``agentlog schema event|ledger|status`` prints them) and are what
``agentlog validate`` checks files against. Timestamps are RFC 3339 with an offset (``Z`` or ``±hh:mm``).
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["LEDGER_TYPES", "SCHEMAS", "STATES", "schema"]

#: The event types of an agent's ledger.
LEDGER_TYPES = ("task_start", "task_result", "error", "heartbeat", "state_change")
#: The states ``status.json`` can hold.
STATES = ("idle", "busy", "error", "offline")

_TS = {"type": "string", "format": "date-time",
       "description": "RFC 3339 timestamp with an offset, e.g. 2026-11-22T10:00:00.123456Z"}
_TS_OR_NULL = {"anyOf": [_TS, {"type": "null"}]}
_LABEL = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^\\u0000-\\u001f\\u007f]*$"}
_STREAM = {"type": "string", "maxLength": 200,
           "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$"}

EVENT: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "agentlog:event",
    "title": "agentlog event (one line of a stream)",
    "type": "object",
    "required": ["seq", "id", "ts", "stream", "type", "data"],
    "properties": {
        "seq": {"type": "integer", "minimum": 1, "description": "gapless per stream, assigned under the lock"},
        "id": {"type": "string", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
               "description": "UUIDv7 made by the client"},
        "ts": _TS,
        "stream": _STREAM,
        "type": _LABEL,
        "actor": _LABEL,
        "level": _LABEL,
        "visibility": _LABEL,
        "interaction": {"type": "integer", "minimum": 0},
        "data": {"type": "object"},
        "redactions": {"type": "array", "items": {
            "type": "object", "required": ["rule", "count"],
            "properties": {"rule": {"type": "string"}, "count": {"type": "integer", "minimum": 1}}}},
    },
    "additionalProperties": True,
}

_LEDGER_DATA: dict[str, dict[str, Any]] = {
    "task_start": {"type": "object", "properties": {
        "command": {"type": "array", "items": {"type": "string"}},
        "cwd": {"type": "string"},
        "git_head": {"type": ["string", "null"]},
        "pid": {"type": "integer"}}},
    "task_result": {"type": "object", "required": ["exit_code"], "properties": {
        "exit_code": {"type": "integer"},
        "signal": {"type": ["integer", "null"]},
        "duration_s": {"type": "number", "minimum": 0},
        "files_touched": {"type": "array", "items": {"type": "string"}},
        "files_touched_truncated": {"type": "boolean"},
        "files_touched_method": {"enum": ["git", "mtime"]},
        "stdout_tail": {"type": "string"},
        "stderr_tail": {"type": "string"},
        "stdout_bytes": {"type": "integer", "minimum": 0},
        "stderr_bytes": {"type": "integer", "minimum": 0}}},
    "error": {"type": "object", "required": ["message"], "properties": {
        "message": {"type": "string"}, "kind": {"type": "string"}, "signal": {"type": "integer"},
        "errno": {"type": "integer"}}},
    "heartbeat": {"type": "object", "properties": {
        "next_due": _TS, "interval_s": {"type": "number", "exclusiveMinimum": 0}}},
    "state_change": {"type": "object", "required": ["state"], "properties": {
        "state": {"enum": list(STATES)}, "reason": {"type": "string"}}},
}

LEDGER: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "agentlog:ledger",
    "title": "agentlog ledger event (one line of ledger/<agent>/YYYY-MM-DD.jsonl)",
    "allOf": [
        {"$ref": "agentlog:event"},
        {"type": "object", "required": ["actor", "type"], "properties": {
            "type": {"enum": list(LEDGER_TYPES)},
            "stream": {"type": "string", "pattern": "^ledger/"},
            "task": {"type": ["string", "null"], "maxLength": 256}}},
        *[{"if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
           "then": {"properties": {"data": data}}} for kind, data in _LEDGER_DATA.items()],
    ],
    "$defs": {"event": EVENT},
}

STATUS: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "agentlog:status",
    "title": "agentlog status.json (agents/<agent>/status.json, a view of the agent's ledger)",
    "type": "object",
    "required": ["agent", "state", "task", "since", "last_heartbeat", "next_heartbeat_due", "last_error",
                 "through_seq"],
    "properties": {
        "agent": _LABEL,
        "state": {"enum": list(STATES)},
        "task": {"type": ["string", "null"]},
        "since": _TS_OR_NULL,
        "last_heartbeat": _TS_OR_NULL,
        "next_heartbeat_due": _TS_OR_NULL,
        "last_error": {"anyOf": [{"type": "null"}, {
            "type": "object", "required": ["ts", "message"],
            "properties": {"ts": _TS, "message": {"type": "string"}, "task": {"type": ["string", "null"]}}}]},
        "through_seq": {"type": "integer", "minimum": 0},
        "last_event": _TS_OR_NULL,
        "heartbeat_task": {"type": ["string", "null"]},
    },
    "additionalProperties": False,
}

SCHEMAS: dict[str, dict[str, Any]] = {"event": EVENT, "ledger": LEDGER, "status": STATUS}


def schema(name: str) -> dict[str, Any]:
    """A copy of the schema called ``name`` (``event``, ``ledger`` or ``status``)."""
    try:
        return copy.deepcopy(SCHEMAS[name])
    except KeyError:
        raise ValueError(f"no schema {name!r}; choose one of {', '.join(SCHEMAS)}") from None
