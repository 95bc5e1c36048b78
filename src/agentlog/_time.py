"""Event timestamps: agentlog's canonical form, ``2026-11-22T10:00:00.123456Z`` (RFC 3339, UTC, microseconds).

The canonical form has a fixed width, so canonical timestamps compare correctly as strings: time queries
compare ``ts`` strings, never parsed instants. :func:`format_ts` and :func:`now_ts` make it (the backend
stamps every event with one, under the stream's lock), :func:`parse_ts` turns any RFC 3339 / ISO 8601 instant
into it, and :func:`comparable_ts` is the time queries' hot path (a pattern check for agentlog's own, a parse
for another writer's).

A module of its own because timestamps are a concern apart from the event envelope; :mod:`agentlog.event`
re-exports the public names, and the rest of the package imports them from there. ``datetime`` is imported
only when a timestamp is parsed, so ``agentlog append`` stays light.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

__all__ = ["comparable_ts", "format_ts", "now_ts", "parse_ts"]


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
    from datetime import UTC, datetime  # here: a one-shot `agentlog append` never parses a timestamp

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
