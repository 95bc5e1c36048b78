"""Stream names: what is allowed, and why.

A stream name becomes a path under the root, so it is checked before anything touches the disk. A name is
one or more segments of ``[A-Za-z0-9][A-Za-z0-9._-]*`` joined by ``/`` (``conv-7``, ``ledger/andy``), at
most 200 characters. Because every segment starts with a letter or digit, ``.``, ``..``, hidden files and
option-like names (``-rf``) are impossible, and with no ``\\``, NUL or leading ``/`` nothing can point
outside the root.

Two more forms are reserved so that no stream's files or directories can be mistaken for another's
segments: a segment ending in ``.jsonl`` or ``.jsonl.<digits>`` (segment file names end that way), and a
last segment shaped like a date (``YYYY-MM-DD``), because daily-rotated streams keep their segments as
``<stream>/YYYY-MM-DD.jsonl``.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import InvalidStreamName

__all__ = ["MAX_STREAM_NAME", "validate_stream_name"]

MAX_STREAM_NAME = 200
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_NAME = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")
DATE_SEGMENT = re.compile(r"\d{4}-\d{2}-\d{2}")
SEGMENT_SUFFIX = re.compile(r"\.jsonl(?:\.\d+)?(?:/|$)")


def validate_stream_name(name: Any) -> str:
    """Return ``name`` if it is a valid stream name, else raise :class:`InvalidStreamName` saying why."""
    if not isinstance(name, str):
        raise InvalidStreamName(f"stream name must be a string, got {type(name).__name__}")
    if not name:
        raise InvalidStreamName("stream name is empty")
    if len(name) > MAX_STREAM_NAME:
        raise InvalidStreamName(f"stream name is longer than {MAX_STREAM_NAME} characters")
    if _NAME.fullmatch(name):
        if SEGMENT_SUFFIX.search(name):
            raise InvalidStreamName(f"stream name {name!r}: a segment ending in '.jsonl' is reserved for "
                                    "segment files")
        if DATE_SEGMENT.fullmatch(name.rsplit("/", 1)[-1]):
            raise InvalidStreamName(f"stream name {name!r}: a last segment shaped YYYY-MM-DD is reserved "
                                    "for daily segments")
        return name
    if "\0" in name:
        why = "contains a NUL byte"
    elif "\\" in name:
        why = "contains a backslash"
    elif name.startswith("/"):
        why = "is absolute"
    elif any(part in (".", "..") for part in name.split("/")):
        why = "contains a '.' or '..' segment"
    elif name.startswith("-"):
        why = "starts with '-'"
    elif "//" in name or name.endswith("/"):
        why = "has an empty segment"
    else:
        why = "must be segments of [A-Za-z0-9][A-Za-z0-9._-]* joined by '/'"
    raise InvalidStreamName(f"invalid stream name {name!r}: {why}")
