"""The two ways a command itself (rather than the library) reports that it cannot go on."""

from __future__ import annotations

from typing import Any

from .. import _json

__all__ = ["Failure", "UsageError", "json_kind", "json_object_option"]


class UsageError(ValueError):
    """The command line or its input is wrong: exit status 2."""


class Failure(Exception):
    """The command ran but could not do what was asked (e.g. no such stream): exit status 1."""


def json_object_option(text: str | None, option: str) -> dict[str, Any] | None:
    """The JSON object an option such as ``--data`` holds (``None`` when not given), or a :class:`UsageError`."""
    if text is None:
        return None
    try:
        value = _json.loads(text)
    except _json.DecodeError as exc:
        raise UsageError(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{option} must be a JSON object, got {json_kind(value)}")
    return value


def json_kind(value: Any) -> str:
    """What a JSON value is, for messages: "an array", "a string", "null", ..."""
    kinds = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)
