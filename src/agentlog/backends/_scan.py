"""Reading JSONL without locks: complete lines only, bounded memory, forwards or backwards.

Readers never take the writers' lock. They are safe anyway because writers only ever append whole records
and a reader stops at the last ``\\n`` it sees: bytes after it belong to a write still in flight (or to a torn
tail the next writer will repair), so they are never yielded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import orjson

CHUNK = 1 << 20  # forward reads: big enough for throughput, small enough to keep memory bounded
BACK_CHUNK = 1 << 16  # backward reads: tail(20) should touch a few pages, not megabytes


def parse_line(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """``(record, "")`` for a line holding a JSON object, else ``(None, why)``."""
    if not raw:
        return None, "empty line"
    if b"\0" in raw:
        return None, "contains a NUL byte (a torn or zero-filled write)"
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc})"
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    return obj, ""


def lines_forward(fd: int, offset: int = 0, end: int | None = None,
                  chunk: int = CHUNK) -> Iterator[tuple[int, bytes]]:
    """Yield ``(start, line)`` for each complete line from ``offset``, without its newline.

    Stops at the last newline available when the data was read; a partial line at the end is left alone.
    Memory is one chunk plus the longest line.
    """
    buf = b""
    buf_start = offset
    read_pos = offset
    while end is None or read_pos < end:
        want = chunk if end is None else min(chunk, end - read_pos)
        data = os.pread(fd, want, read_pos)
        if not data:
            return
        read_pos += len(data)
        buf = buf + data if buf else data
        last = buf.rfind(b"\n")
        if last < 0:
            continue  # a line longer than a chunk: keep reading until it ends
        pos = buf_start
        for line in buf[:last].split(b"\n"):
            yield pos, line
            pos += len(line) + 1
        buf = buf[last + 1:]
        buf_start = pos


def lines_backward(fd: int, end: int, chunk: int = BACK_CHUNK) -> Iterator[tuple[int, bytes]]:
    """Yield ``(start, line)`` for the complete lines before ``end``, newest first.

    ``end`` must sit just after a newline (or be 0).
    """
    if end <= 0:
        return
    pos = end - 1  # the final newline; invariant: the byte at pos + len(carry) is a newline
    carry = b""
    pending: list[bytes] = []  # chunks of one long line, newest first, joined once its start is found
    while True:
        start = max(0, pos - chunk)
        data = os.pread(fd, pos - start, start)
        if start > 0 and b"\n" not in data:
            # Inside a line longer than a chunk: gather, and copy once, so a 16 MiB line costs O(size).
            pending.append(data)
            pos = start
            continue
        if pending:
            pending.reverse()
            carry = b"".join(pending) + carry
            pending = []
        data += carry
        parts = data.split(b"\n")
        offsets = [start]
        for part in parts[:-1]:
            offsets.append(offsets[-1] + len(part) + 1)
        first = 0 if start == 0 else 1  # parts[0] may begin before `start`
        for i in range(len(parts) - 1, first - 1, -1):
            yield offsets[i], parts[i]
        if start == 0:
            return
        carry = parts[0]
        pos = start
