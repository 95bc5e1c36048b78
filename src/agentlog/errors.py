"""Every error agentlog raises.

::

    AgentlogError
    ├── InvalidEvent(AgentlogError, ValueError)        bad field, not strict JSON, too large, too deep
    ├── InvalidStreamName(AgentlogError, ValueError)   a name that could escape the root or is malformed
    ├── StorageError(AgentlogError, OSError)           .path, .errno: disk full, permission, I/O, symlink
    │   └── LockTimeout(StorageError, TimeoutError)    .path, .waited
    ├── CorruptLog(AgentlogError)                      .path, .line_no
    ├── Conflict(AgentlogError)                        a compare-and-set lost (tasks, leases)
    └── CycleError(AgentlogError, ValueError)          .cycle: task dependencies that would loop

The builtin mix-ins let callers who do not know agentlog catch what they already know: bad input is a
``ValueError``, a storage failure an ``OSError``, a lock timeout a ``TimeoutError``. Every error pickles, so
it can cross a process boundary (multiprocessing pools, the stress test's workers).
"""

from __future__ import annotations

import errno as _errno
import os
from typing import Any

__all__ = [
    "AgentlogError",
    "Conflict",
    "CorruptLog",
    "CycleError",
    "InvalidEvent",
    "InvalidStreamName",
    "LockTimeout",
    "StorageError",
]


class AgentlogError(Exception):
    """The root of every error agentlog raises on purpose."""


class InvalidEvent(AgentlogError, ValueError):
    """An event was refused before any byte was written."""


class InvalidStreamName(AgentlogError, ValueError):
    """A stream name is malformed or could reach outside the root."""


class StorageError(AgentlogError, OSError):
    """The log could not be written or read; ``path`` and ``errno`` say where and why."""

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None,
                 errno: int | None = None) -> None:
        # OSError's own constructor would reinterpret the arguments; set the attributes ourselves.
        super().__init__(message)
        self.message = message
        self.path = os.fspath(path) if path is not None else None
        self.errno = errno
        self.strerror = os.strerror(errno) if errno else None
        self.filename = self.path

    def __str__(self) -> str:
        text = self.message
        if self.path is not None and self.path not in text:
            text = f"{text}: {self.path}"
        if self.errno:
            name = _errno.errorcode.get(self.errno, str(self.errno))
            text = f"{text} [{name}: {os.strerror(self.errno)}]"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        # errno and strerror live in OSError's C struct, not in __dict__: carry them explicitly.
        state = {**self.__dict__, "errno": self.errno, "strerror": self.strerror, "filename": self.filename}
        return (_rebuild, (type(self), self.message, state))

    @classmethod
    def from_oserror(cls, exc: OSError, message: str, path: str | os.PathLike[str]) -> StorageError:
        """Wrap a raw ``OSError`` so the message names the path and the errno."""
        return cls(message, path=path, errno=exc.errno)


class LockTimeout(StorageError, TimeoutError):
    """The stream's lock was not acquired within ``lock_timeout`` seconds."""

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None,
                 waited: float = 0.0) -> None:
        super().__init__(message, path=path, errno=_errno.ETIMEDOUT)
        self.waited = waited

    def __str__(self) -> str:
        # "Connection timed out" (ETIMEDOUT's text) would mislead: the message already says what timed out.
        return self.message if self.path is None or self.path in self.message else f"{self.message}: {self.path}"


class CorruptLog(AgentlogError):
    """A log file holds something agentlog cannot read as events."""

    def __init__(self, message: str, *, path: str | None = None, line_no: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line_no = line_no

    def __str__(self) -> str:
        where = f"{self.path}:{self.line_no}: " if self.path and self.line_no else ""
        return f"{where}{self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.__dict__.copy()))


class Conflict(AgentlogError):
    """A compare-and-set lost: the thing changed since it was read."""


class CycleError(AgentlogError, ValueError):
    """A change to the task graph would make a task depend on itself; ``cycle`` lists the loop's ids."""

    def __init__(self, cycle: list[str], *, what: str = "dependency") -> None:
        super().__init__(f"{what} cycle: {' -> '.join(cycle)}")
        self.cycle = cycle
        self.what = what

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.cycle,), {"what": self.what})


def _rebuild(cls: type[Exception], message: str, state: dict[str, Any]) -> Exception:
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    for key, value in state.items():
        setattr(exc, key, value)
    return exc
