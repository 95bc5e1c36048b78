# ruff: noqa: RUF001 - the multiplication sign in ratios and labels is meant
"""What every benchmark group shares: the events, the sizes, timing, and the result rows.

Every group writes the same ~300-byte events: agentlog's stored line for ``event_fields(i)`` is 300 bytes
give or take a digit, and the raw loops write lines of exactly that length.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

STREAM = "bench"
CONTENT = ("How do I start the MCP server? It should listen on the socket that the coordinator created "
           "earlier.")[:100]
EVENT_BYTES = 300  # the length of one stored line, newline included (checked by check_event_size)


def event_fields(i: int) -> dict[str, Any]:
    """The keyword fields of event ``i`` for ``log.append`` (everything but stream and type)."""
    return {"data": {"content": CONTENT}, "actor": "agent-a", "visibility": "public", "interaction": i % 1000}


def event_dict(i: int, type: str = "question") -> dict[str, Any]:
    """Event ``i`` as a batch item for ``log.append_many``."""
    return {"type": type, **event_fields(i)}


def raw_line(i: int) -> bytes:
    """A JSON line of exactly EVENT_BYTES bytes for the raw loops, shaped like agentlog's (seq, id, ts, ...)."""
    body = {"seq": i + 1, "id": f"{i:032x}", "ts": "2026-11-22T10:00:00.000000Z", "stream": STREAM,
            "type": "question", "actor": "agent-a", "visibility": "public", "interaction": i % 1000,
            "data": {"content": ""}}
    bare = len(orjson.dumps(body)) + 1
    body["data"] = {"content": CONTENT[: max(0, EVENT_BYTES - bare)].ljust(max(0, EVENT_BYTES - bare), ".")}
    line = orjson.dumps(body) + b"\n"
    assert len(line) == EVENT_BYTES, len(line)
    return line


def median(values: list[float]) -> float:
    return statistics.median(values)


def log(msg: str) -> None:
    """Progress goes to stderr, so stdout is the markdown table and nothing else."""
    print(msg, file=sys.stderr, flush=True)


class Clock:
    """``with Clock() as c: ...`` then ``c.seconds``."""

    seconds = 0.0

    def __enter__(self) -> Clock:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0


@contextmanager
def scratch(base: str | None, prefix: str) -> Iterator[str]:
    """A fresh directory under ``base`` (the run's temp dir), removed afterwards."""
    path = tempfile.mkdtemp(prefix=prefix, dir=base)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def interleaved(runs: int, first: Callable[[int], float], second: Callable[[int], float]) -> tuple[list[float],
                                                                                                   list[float]]:
    """Run two measurements ``runs`` times each, alternating which goes first, so that drift in the disk or
    the machine (page cache, journal commits, another tenant) lands on both sides alike."""
    a: list[float] = []
    b: list[float] = []
    for r in range(runs):
        if r % 2 == 0:
            a.append(first(r))
            b.append(second(r))
        else:
            b.append(second(r))
            a.append(first(r))
    return a, b


@dataclass
class Row:
    """One line of the table: agentlog's median beside one peer's, in the same unit."""

    case: str
    ours_label: str
    ours: list[float] | None
    peer_label: str
    peer: list[float] | None
    unit: str  # "events/s" (higher is better) or "ms" / "ms/call" (lower is better)
    note: str = ""
    ours_runs: int = field(init=False, default=0)
    peer_runs: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.ours_runs = len(self.ours or [])
        self.peer_runs = len(self.peer or [])

    @property
    def higher_is_better(self) -> bool:
        return self.unit.startswith("events/s")

    @property
    def ours_median(self) -> float | None:
        return median(self.ours) if self.ours else None

    @property
    def peer_median(self) -> float | None:
        return median(self.peer) if self.peer else None

    @property
    def ratio(self) -> float | None:
        """agentlog / peer, in the row's unit."""
        o, p = self.ours_median, self.peer_median
        if o is None or p is None or p == 0:
            return None
        return o / p


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit.startswith("events/s"):
        return f"{value:,.0f}"
    if unit == "MiB":
        return f"{value:,.1f}"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(rows: list[Row]) -> str:
    lines = [
        "| case | agentlog | median | peer | peer median | ratio agentlog/peer | runs | note |",
        "|---|---|--:|---|--:|--:|--:|---|",
    ]
    for r in rows:
        arrow = "↑" if r.higher_is_better else "↓"
        unit = f"{r.unit} {arrow}"
        ratio = "—" if r.ratio is None else f"{r.ratio:.2f}×"
        runs = f"{r.ours_runs}/{r.peer_runs}"
        lines.append(f"| {r.case} | {r.ours_label} | {fmt(r.ours_median, r.unit)} {unit} | {r.peer_label} | "
                     f"{fmt(r.peer_median, r.unit)} {unit} | {ratio} | {runs} | {r.note} |")
    return "\n".join(lines)


def file_bytes(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0
