"""What ``verify`` finds."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Problem", "Report"]


class Problem(NamedTuple):
    """One finding: the file, the 1-based line (0 for the file as a whole) and what is wrong."""

    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


class Report:
    """The result of ``EventLog.verify``.

    ``problems`` make the log not ``ok`` (lost, torn, corrupt or out-of-order data). ``warnings`` are worth a
    look but are not damage, such as lines appended by a foreign writer without ``seq`` or ``id``.
    ``counts`` maps each stream checked to the number of events read from it.
    """

    __slots__ = ("counts", "problems", "warnings")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    @property
    def ok(self) -> bool:
        return not self.problems

    def merge(self, other: Report) -> None:
        self.counts.update(other.counts)
        self.problems.extend(other.problems)
        self.warnings.extend(other.warnings)

    def __repr__(self) -> str:
        return (f"Report(ok={self.ok}, streams={len(self.counts)}, events={sum(self.counts.values())}, "
                f"problems={len(self.problems)}, warnings={len(self.warnings)})")
