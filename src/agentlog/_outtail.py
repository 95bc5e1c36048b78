"""The command's output under ``agentlog run``: passed through live, its tails kept and redacted.

Kept apart from :mod:`agentlog.runner` because reading the pipes and keeping (then redacting) the end of
what came through is a concern of its own, with subtle byte-level rules, that knows nothing of the ledger or
of signals: the runner starts a :class:`Pump` per pipe, waits for them with :func:`drain` after the command exited,
and its redactor records each tail with :func:`redact_tail`.

Output. The command's stdout and stderr are pipes read by two threads that write every chunk through to our
own stdout and stderr at once and keep the last :data:`TAIL_BYTES` bytes of each for ``task_result``. Because
they are pipes, not the terminal, programs that buffer their output when it is not a terminal (C stdio,
Python without ``-u``) print in larger chunks. If our own stdout goes away (``agentlog run -- yes | head``),
the pipe is closed, so the command gets ``SIGPIPE`` as it would without the wrapper. Output written after the
command exited, by processes it left behind holding the pipes, is passed on for :data:`DRAIN_GRACE` seconds.

Redaction. Each tail is redacted *before* it is cut to :data:`TAIL_BYTES`, with :data:`REDACT_WINDOW_BYTES`
more bytes of output in view, so a secret crossing the cut is still recognised (unless it is longer than that
window). When output before those bytes was dropped, they are context only: what is recorded is the redacted
last :data:`TAIL_BYTES` of the output, never the bytes before it (they may begin in the middle of a secret).
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from .redact import Rule, _apply

__all__ = ["DRAIN_GRACE", "REDACT_WINDOW_BYTES", "TAIL_BYTES", "Kept", "Pump", "binary", "cut", "drain",
           "redact_tail"]

#: ``stdout_tail`` and ``stderr_tail`` hold at most this many bytes (UTF-8) of the end of the output.
TAIL_BYTES = 4096
#: How much more output (bytes, before the tail) redaction sees, so a secret crossing the cut is recognised.
REDACT_WINDOW_BYTES = 8192
#: Seconds to keep passing on output after the command exited, while something it started holds the pipes.
DRAIN_GRACE = 2.0


@dataclass(frozen=True)
class Kept:
    """The bytes a :class:`Pump` kept of one output, and whether output before them was dropped (``cut``)."""

    data: bytes
    cut: bool


# --- passing the output through -----------------------------------------------------------------------

class Pump(threading.Thread):
    """Reads one of the command's pipes: every chunk goes to ``sink`` at once; the end is kept as the tail."""

    def __init__(self, pipe: IO[bytes], sink: IO[bytes] | None) -> None:
        super().__init__(daemon=True, name="agentlog-output")
        self.pipe, self.sink = pipe, sink
        self.keep = TAIL_BYTES + REDACT_WINDOW_BYTES
        self.buffer = bytearray()
        self.total = 0
        self.stop = threading.Event()

    @property
    def tail(self) -> bytes:
        return bytes(self.buffer)

    def run(self) -> None:
        fd = self.pipe.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        try:
            while True:
                if not poller.poll(100):
                    if self.stop.is_set():
                        return
                    continue
                try:
                    chunk = os.read(fd, 1 << 16)
                except OSError:
                    return
                if not chunk:
                    return
                self.total += len(chunk)
                self.buffer += chunk
                if len(self.buffer) > self.keep:
                    del self.buffer[:len(self.buffer) - self.keep]
                if self.sink is not None:
                    try:
                        self.sink.write(chunk)
                        self.sink.flush()
                    except (OSError, ValueError):
                        # Our reader went away: close the pipe, so the command learns it as it would have.
                        return
        finally:
            self.pipe.close()


def binary(stream: Any) -> IO[bytes] | None:
    """The binary stream under a text stream (``sys.stdout.buffer``), or ``None``."""
    if stream is None:
        return None
    buffer = getattr(stream, "buffer", None)
    return buffer if buffer is not None else None


def drain(pumps: list[Pump]) -> None:
    """Wait for the output to end; after :data:`DRAIN_GRACE` seconds, stop reading it."""
    deadline = time.monotonic() + DRAIN_GRACE
    for pump in pumps:
        pump.join(max(0.0, deadline - time.monotonic()))
    for pump in pumps:
        pump.stop.set()
    for pump in pumps:
        pump.join(1.0)


# --- the tails, redacted ------------------------------------------------------------------------------

def redact_tail(rules: Iterable[Rule], kept: Kept, counts: Counter[str]) -> str:
    """The last :data:`TAIL_BYTES` of the output, redacted with the bytes kept before them in view (``counts``
    receives what each rule found). When output before those was dropped, the kept bytes may begin inside a
    secret that no rule can recognise any more (a PEM body without its BEGIN line), so they are context only,
    never recorded, even when the secrets after them shrink to markers."""
    raw = kept.data
    if not kept.cut or len(raw) <= TAIL_BYTES:
        text, start = _decode(raw), 0
    else:
        split = len(raw) - TAIL_BYTES
        while split < len(raw) and 0x80 <= raw[split] < 0xC0:  # not inside a character
            split += 1
        context = _decode(raw[:split])
        text, start = context + _decode(raw[split:]), len(context)
    for rule in rules:
        edits: list[tuple[int, int, int]] = []
        text = _apply(rule, text, counts, edits)
        # Where the recorded part begins now: moved by the replacements before it; a marker that
        # replaced a secret across the boundary is recorded, so the part begins with it.
        boundary, shift = start, 0
        for begin, end, length in edits:
            if begin >= start:
                break
            if end > start:
                boundary = begin
                break
            shift += length - (end - begin)
        start = boundary + shift
    return cut(text[start:], TAIL_BYTES)


def cut(text: str, limit: int) -> str:
    """The last ``limit`` bytes of ``text`` (UTF-8), not starting inside a character or a redaction marker."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    kept = raw[-limit:].decode("utf-8", "ignore")
    dropped = text[:len(text) - len(kept)]
    marker = dropped.rfind("[REDACTED:")
    if marker >= 0 and "]" not in dropped[marker:]:
        close = kept.find("]")
        if close >= 0:
            kept = kept[close + 1:]
    return kept


def _decode(data: bytes) -> str:
    """Output bytes as text: invalid UTF-8 becomes U+FFFD (a lone surrogate could not be stored)."""
    return data.decode("utf-8", "replace")
