"""The spool's backoff state: which streams (and unreadable entries) keep failing to replay, and until when.

A stream the log still cannot take keeps its records in the spool, and the automatic replay (after every
successful append) leaves it alone for :data:`BACKOFF_BASE` seconds, doubling with each failure in a row up to
:data:`BACKOFF_CAP`. The state lives in ``backoff.json`` in the spool's directory so that every process (each
``agentlog append`` is one) honours it. It is only ever advice: a missing, damaged or untrusted file counts as
no backoff at all (the spool is trusted input, so an untrusted file is never believed), and losing it only
brings a retry forward.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from . import _json
from ._spoolfiles import untrusted, write_file
from .backends import _fs as fs
from .errors import StorageError

__all__ = ["BACKOFF_BASE", "BACKOFF_CAP", "backoff_delay", "checked_state", "due", "empty_state", "next_due",
           "read_state", "write_state"]

#: After a stream's replay fails, the automatic replay leaves it alone this many seconds, doubling with each
#: failure in a row up to :data:`BACKOFF_CAP`.
BACKOFF_BASE = 5.0
BACKOFF_CAP = 300.0
_STATE = "backoff.json"
_STATE_MAX_BYTES = 1 << 20


def read_state(top: int) -> dict[str, Any]:
    """``backoff.json`` in the spool directory ``top``, checked; a missing, damaged or untrusted one counts as
    no backoff at all."""
    try:
        fd = os.open(_STATE, fs.READ_FLAGS, dir_fd=top)
    except OSError:
        return empty_state()
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or untrusted(st) or st.st_size > _STATE_MAX_BYTES:
            return empty_state()
        data = os.read(fd, _STATE_MAX_BYTES + 1)
    except OSError:
        return empty_state()
    finally:
        os.close(fd)
    try:
        return checked_state(_json.loads(data))
    except (ValueError, RecursionError):
        return empty_state()


def write_state(top: int, state: dict[str, Any], *, file_mode: int, path: str) -> None:
    """Replace ``backoff.json`` in the spool directory ``top`` (``path`` names it in errors); not fsynced:
    losing it to a crash only brings a retry forward."""
    display = os.path.join(path, _STATE)
    if not state["streams"] and not state["entries"]:
        try:
            os.unlink(_STATE, dir_fd=top)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError.from_oserror(exc, "cannot update the spool's backoff state", display) \
                from None
        return
    write_file(top, _STATE, _json.dumps(state), file_mode, display, replace=True, sync=False)


def empty_state() -> dict[str, Any]:
    return {"streams": {}, "entries": {}, "held": []}


def checked_state(data: Any) -> dict[str, Any]:
    """The parts of a loaded ``backoff.json`` that have the right shape."""
    out = empty_state()
    if not isinstance(data, dict):
        return out
    for part in ("streams", "entries"):
        items = data.get(part)
        if not isinstance(items, dict):
            continue
        for key, item in items.items():
            if isinstance(item, dict) and type(item.get("failures")) is int and item["failures"] > 0 \
                    and type(item.get("until")) in (int, float) and isinstance(item.get("error"), str):
                out[part][key] = {"failures": item["failures"], "error": item["error"],
                                  "until": float(item["until"])}
    held = data.get("held")
    if isinstance(held, list):
        out["held"] = [name for name in held if isinstance(name, str)]
    return out


def backoff_delay(failures: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds to leave a stream alone after ``failures`` failed replays in a row: base, 2 x base, ... cap."""
    return float(min(cap, base * 2 ** min(max(failures, 1) - 1, 32)))


def due(item: dict[str, Any], now: float, cap: float) -> float:
    """When a backing-off item is due. A time further away than the cap means the clock was stepped back:
    due now rather than waiting for the clock to catch up."""
    until: float = item["until"]
    return now if until - now > cap else until


def next_due(state: dict[str, Any], now: float, cap: float) -> float | None:
    times = [due(item, now, cap) for part in ("streams", "entries") for item in state[part].values()]
    return min(times) if times else None
