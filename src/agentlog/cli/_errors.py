"""The two ways a command itself (rather than the library) reports that it cannot go on."""

from __future__ import annotations

__all__ = ["Failure", "UsageError"]


class UsageError(ValueError):
    """The command line or its input is wrong: exit status 2."""


class Failure(Exception):
    """The command ran but could not do what was asked (e.g. no such stream): exit status 1."""
