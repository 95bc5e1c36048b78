"""Reading JSONL without locks: complete lines only, bounded memory, forwards or backwards.

Readers never take the writers' lock. They are safe anyway because writers only ever append whole records
and a reader stops at the last ``\\n`` it sees: bytes after it belong to a write still in flight (or to a torn
tail the next writer will repair), so they are never yielded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

from .. import _json

CHUNK = 1 << 20  # forward reads: big enough for throughput, small enough to keep memory bounded
#: Forward reads that parse every line hold a chunk's lines (and their records) at once: at 64 KiB they fit in
#: memory the allocator already has, where a MiB makes it map fresh pages (a page fault costs ~4 us on a VM).
PARSE_CHUNK = 1 << 16
BACK_CHUNK = 1 << 13  # first backward read: tail(20) of ~300-byte events should touch two pages
MAX_BACK_CHUNK = 1 << 20


def parse_line(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """``(record, "")`` for a line holding a JSON object, else ``(None, why)``."""
    if not raw:
        return None, "empty line"
    if b"\0" in raw:
        return None, "contains a NUL byte (a torn or zero-filled write)"
    try:
        obj = _json.loads(raw)
    except _json.DecodeError as exc:
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
    for pos, lines in chunks_forward(fd, offset, end, chunk):
        for line in lines:
            yield pos, line
            pos += len(line) + 1


def chunks_forward(fd: int, offset: int = 0, end: int | None = None,
                   chunk: int = CHUNK) -> Iterator[tuple[int, list[bytes]]]:
    """``lines_forward`` a chunk at a time: ``(start of the first line, lines)``, for the hottest loops."""
    for pos, data, _last in _chunks(fd, offset, end, chunk):
        lines = data.split(b"\n")
        lines.pop()  # what follows the last newline: read again, whole, with the next chunk
        yield pos, lines


def _chunks(fd: int, offset: int, end: int | None, chunk: int) -> Iterator[tuple[int, bytes, int]]:
    """``(pos, data, last)``: ``data`` read at ``pos``, whose last newline is at ``last``.

    The line a chunk cuts in two is read again with the next chunk instead of being glued onto it, which
    would copy every chunk once more. A line longer than a chunk is read again with twice the size until
    its newline is in: reads stay linear in its length, and memory bounded by it.
    """
    size = chunk
    while end is None or offset < end:
        want = size if end is None else min(size, end - offset)
        data = os.pread(fd, want, offset)
        last = data.rfind(b"\n")
        if last < 0:
            if len(data) < want or (end is not None and offset + want >= end):
                return  # no newline before the end: a write still in flight
            size *= 2
            continue
        size = chunk
        yield offset, data, last
        offset += last + 1


def lines_backward(fd: int, end: int, chunk: int = BACK_CHUNK, begin: int = 0) -> Iterator[tuple[int, bytes]]:
    """Yield ``(start, line)`` for the complete lines in ``[begin, end)``, newest first, without newlines.

    Bytes after the last newline before ``end`` (a write in flight) are left alone, so ``end`` may simply be
    the file's size. ``begin`` must be the start of a line. Lines are cut one ``rfind`` at a time, so a caller
    that stops after a few lines (``tail``) pays for those, not for the whole chunk; reads double in size up
    to ``MAX_BACK_CHUNK`` and are never shorter than the fragment carried over, so a 16 MiB line costs
    O(size), not O(size squared / chunk).
    """
    buf = b""  # the unyielded bytes [base, base + len(buf))
    base = end
    stop = -1  # index in buf of the newline that ends the next line to yield (-1: none found yet)
    while base > begin:
        want = max(chunk, len(buf))
        lo = max(begin, base - want)
        data = os.pread(fd, base - lo, lo)
        if len(data) != base - lo:
            return  # the file shrank under us (a writer rolled back): what we hold may be gone
        if stop >= 0:
            stop += len(data)
        buf = data + buf if buf else data
        base = lo
        chunk = min(chunk * 2, MAX_BACK_CHUNK)
        if stop < 0:
            stop = buf.rfind(b"\n")
            if stop < 0:
                continue
        while (nl := buf.rfind(b"\n", 0, stop)) >= 0:
            yield base + nl + 1, buf[nl + 1:stop]
            stop = nl
        buf = buf[:stop]  # the newest unyielded line, which starts before `base`
    if stop >= 0:
        yield begin, buf[:stop]


def matching_lines(fd: int, offset: int, needles: list[bytes],
                   chunk: int = CHUNK) -> Iterator[tuple[int, bytes | None]]:
    """Yield ``(start, line)`` for the complete lines from ``offset`` that contain any of ``needles``, in order.

    The needles are searched in the raw bytes and only the lines they hit are cut out, so the lines around
    them are never split or copied. After each chunk it yields ``(next_offset, None)``: everything before
    ``next_offset`` has been looked at. No needle may contain a newline.
    """
    # A compiled literal searches short needles faster than bytes.find (which checks its last byte first,
    # and the last byte of a JSON string is a quote: everywhere in a JSON line).
    plain = [re.compile(re.escape(n)).search for n in needles if b"\\" not in n]
    escaped = [re.compile(re.escape(n)).search for n in needles if b"\\" in n]
    for pos, data, last in _chunks(fd, offset, None, chunk):
        hits: dict[int, int] = {}
        # Escapes cannot occur in a chunk without a backslash, and a one-byte search runs at memory
        # speed: most chunks skip those needles at once.
        searches = plain + escaped if escaped and data.find(b"\\", 0, last) >= 0 else plain
        for search in searches:
            m = search(data, 0, last)
            while m is not None:
                begin = data.rfind(b"\n", 0, m.start()) + 1
                stop = data.find(b"\n", m.start())
                hits[begin] = stop
                m = search(data, stop + 1, last)
        for begin in sorted(hits):
            yield pos + begin, data[begin:hits[begin]]
        yield pos + last + 1, None


def count_newlines(fd: int, begin: int, end: int, chunk: int = CHUNK) -> int:
    """How many ``\\n`` bytes lie in ``[begin, end)``: line numbers for messages, without parsing."""
    count = 0
    while begin < end:
        data = os.pread(fd, min(chunk, end - begin), begin)
        if not data:
            break
        count += data.count(b"\n")
        begin += len(data)
    return count
