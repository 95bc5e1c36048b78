"""agentlog: a durable, multi-process JSONL event log for teams of agents."""

from .backends import Backend, StreamInfo
from .compat import append_event, by_type, safe_log_event, since, tail
from .errors import (
    AgentlogError,
    Conflict,
    CorruptLog,
    InvalidEvent,
    InvalidStreamName,
    LockTimeout,
    StorageError,
)
from .event import DEFAULT_MAX_EVENT_BYTES, MAX_DEPTH, Event, uuid7
from .log import EventLog, default_root, open_log
from .names import validate_stream_name
from .report import Problem, Report

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "MAX_DEPTH",
    "AgentlogError",
    "Backend",
    "Conflict",
    "CorruptLog",
    "Event",
    "EventLog",
    "InvalidEvent",
    "InvalidStreamName",
    "LockTimeout",
    "Problem",
    "Report",
    "StorageError",
    "StreamInfo",
    "__version__",
    "append_event",
    "by_type",
    "default_root",
    "open_log",
    "safe_log_event",
    "since",
    "tail",
    "uuid7",
    "validate_stream_name",
]
