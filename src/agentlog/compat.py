"""The seed-compatible module functions, on the default root.

``append_event``, ``tail``, ``since`` and ``by_type`` keep the names and shapes of 004 (S23): the stream is
the event's ``conversation_id`` and results are plain dicts that also carry ``conversation_id`` and
``timestamp``. ``safe_log_event`` is 000's: one JSON line appended to any file under agentlog's locking,
torn-tail repair and fsync rules.

The default root is ``$AGENTLOG_ROOT``, else ``./.agentlog``, read at each call so a test or a script can
change it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .backends import _fs as fs
from .errors import InvalidEvent
from .event import Event, dumps_strict
from .log import EventLog, default_root, open_log

if TYPE_CHECKING:
    from datetime import datetime

__all__ = ["append_event", "by_type", "safe_log_event", "since", "tail"]

_logs: dict[tuple[str, int], EventLog] = {}
_logs_lock = threading.Lock()


def _default() -> EventLog:
    root = os.path.abspath(default_root())
    key = (root, os.getpid())
    with _logs_lock:
        log = _logs.get(key)
        if log is None:
            log = _logs[key] = open_log(root)
        return log


def _as_dict(event: Event) -> dict[str, Any]:
    out = event.to_dict()
    out.setdefault("conversation_id", event.stream)
    out.setdefault("timestamp", event.ts)
    return out


def append_event(event: Mapping[str, Any]) -> str:
    """Append ``event`` to the stream ``event["conversation_id"]`` and return the new event's id.

    ``type`` is required; ``data``, ``actor``, ``level``, ``visibility`` and ``interaction`` are envelope
    fields; any other key (``content``, say) is kept as a top-level field.
    """
    if not isinstance(event, Mapping):
        raise InvalidEvent(f"event must be a dict, got {type(event).__name__}")
    fields = dict(event)
    stream = fields.pop("conversation_id", None)
    if stream is None:
        raise InvalidEvent("event has no conversation_id")
    etype = fields.pop("type", None)
    data = fields.pop("data", None)
    actor = fields.pop("actor", None)
    if not all(isinstance(key, str) for key in fields):
        raise InvalidEvent("field names must be strings")
    ev = _default().append(stream, etype, data=data, actor=actor, **fields)
    assert ev.id is not None
    return ev.id


def tail(conversation_id: str, limit: int = 20) -> list[dict[str, Any]]:
    """The newest ``limit`` events of the conversation, oldest first."""
    return [_as_dict(ev) for ev in _default().tail(conversation_id, limit)]


def since(timestamp: str | datetime) -> list[dict[str, Any]]:
    """Every event, across conversations, with a timestamp at or after ``timestamp``, in time order."""
    return [_as_dict(ev) for ev in _default().since(timestamp)]


def by_type(event_types: str | Iterable[str], visibility: str | None = None) -> list[dict[str, Any]]:
    """Every event, across conversations, whose type is in ``event_types`` (and with ``visibility``)."""
    return [_as_dict(ev) for ev in _default().by_type(event_types, visibility=visibility)]


def safe_log_event(event_data: Mapping[str, Any], log_path: str | os.PathLike[str], *,
                   lock_timeout: float = 10.0, file_mode: int = 0o600, fsync: bool = True) -> None:
    """Append ``event_data`` as one strict-JSON line to ``log_path`` (000's audit logger).

    The file is locked with ``flock``, a torn tail left by a dead writer is moved to
    ``<log_path>.quarantine.jsonl`` first, the line is written with one ``write()``, and the file is
    fsynced before returning. The final path component is never followed if it is a symlink.
    """
    if not isinstance(event_data, Mapping):
        raise InvalidEvent(f"event_data must be a dict, got {type(event_data).__name__}")
    line = dumps_strict(dict(event_data)) + b"\n"
    path = os.path.abspath(os.fspath(log_path))
    directory, name = os.path.split(path)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise fs.storage_error(exc, "cannot open the log's directory", directory) from None
    try:
        fd = fs.open_append(dir_fd, name, create=True, file_mode=file_mode, display=path)
        assert fd is not None
        try:
            with fs.locked(fd, timeout=lock_timeout, display=path):
                size = os.fstat(fd).st_size
                if size and fs.last_byte(fd, size) != b"\n":
                    size = fs.repair_torn_tail(fd, size, source=path,
                                               quarantine=(dir_fd, name + ".quarantine.jsonl",
                                                           path + ".quarantine.jsonl"),
                                               file_mode=file_mode, timeout=lock_timeout)
                fs.write_all(fd, line, size, path)
            if fsync:
                fs.sync(fd, path)
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)
