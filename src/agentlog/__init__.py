"""agentlog: a durable, multi-process JSONL event log for teams of agents."""

from typing import TYPE_CHECKING

from .backends import Backend, StreamInfo
from .compat import append_event, by_type, safe_log_event, since, tail
from .errors import (
    AgentlogError,
    Conflict,
    CorruptLog,
    CycleError,
    InvalidEvent,
    InvalidStreamName,
    LockTimeout,
    StorageError,
)
from .event import DEFAULT_MAX_EVENT_BYTES, MAX_DEPTH, Event, uuid7
from .log import EventLog, default_root, open_log
from .names import validate_stream_name
from .report import Problem, Report

if TYPE_CHECKING:
    from .writer import EventDropped, EventWriter, Verbosity, WriteMode, should_log_event

__version__ = "0.1.0"

_LAZY = {"EventDropped", "EventWriter", "Verbosity", "WriteMode", "should_log_event"}


def __getattr__(name: str) -> object:
    # The writer (enum, its thread, asyncio on first aemit) is imported on first use: `agentlog append` in a
    # shell loop must not pay for it.
    if name in _LAZY:
        from . import writer

        return getattr(writer, name)
    raise AttributeError(f"module 'agentlog' has no attribute {name!r}")

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "MAX_DEPTH",
    "AgentlogError",
    "Backend",
    "Conflict",
    "CorruptLog",
    "CycleError",
    "Event",
    "EventDropped",
    "EventLog",
    "EventWriter",
    "InvalidEvent",
    "InvalidStreamName",
    "LockTimeout",
    "Problem",
    "Report",
    "StorageError",
    "StreamInfo",
    "Verbosity",
    "WriteMode",
    "__version__",
    "append_event",
    "by_type",
    "default_root",
    "open_log",
    "safe_log_event",
    "should_log_event",
    "since",
    "tail",
    "uuid7",
    "validate_stream_name",
]
