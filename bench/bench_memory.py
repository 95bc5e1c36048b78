# ruff: noqa: RUF002 - the multiplication sign in ratios and labels is meant
"""Target "memory": the ASYNC writer's RSS stays bounded under a slow disk.

Each run is a fresh process that emits events as fast as it can to an ASYNC ``EventWriter`` whose disk
stalls: the first ``fsync``/``fdatasync`` after the warm-up does not return until the emitting loop has
finished or has made no progress for 0.2 s (it is blocked: backpressure), and every later one takes 2 ms
more than it would. Only this process's ``os`` module is wrapped; the library is not changed.

The growth measured is the process's RSS (``VmRSS``) at the end of the stall, when the most events are
pending, minus its RSS after the warm-up. A bounded queue makes the producer block at about ``queue_size``
pending events, so the growth is about the same for N and for k×N events; an unbounded queue holds all of
them, so the growth scales by k. The number of events emitted before the stall ended (the most that could be
pending) is reported too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from common import Row, log, median, scratch

CHILD = r"""
import json, os, sys, threading, time
sys.path.insert(0, sys.argv[1])
root, n = sys.argv[2], int(sys.argv[3])
import agentlog
from agentlog import EventWriter, WriteMode
from common import STREAM, event_fields

progress = [0]
done = threading.Event()
stall_end = []

def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

def slow_disk(real):
    def call(fd):
        if not stall_end:  # the first flush: stall while the producer keeps filling the queue
            last = -1
            while not done.is_set() and progress[0] != last:
                last = progress[0]
                time.sleep(0.2)
            stall_end.append((progress[0], rss_kib()))
        time.sleep(0.002)
        return real(fd)
    return call

with agentlog.open_log(root) as lg:
    w = EventWriter(lg, mode=WriteMode.ASYNC)
    for i in range(2000):  # warm up: the thread, the caches, the allocator
        w.emit(STREAM, "question", **event_fields(i))
    w.flush()
    before = rss_kib()
    os.fsync, os.fdatasync = slow_disk(os.fsync), slow_disk(os.fdatasync)
    for i in range(n):
        w.emit(STREAM, "question", **event_fields(i))
        progress[0] = i + 1
    done.set()
    w.flush()
    w.stop()
    assert lg.stat(STREAM).events == n + 2000
pending, at_stall_end = stall_end[0]
print(json.dumps({"growth_mib": (at_stall_end - before) / 1024, "pending_max": pending,
                  "queue_size": getattr(w, "queue_size", None)}))
"""


def _one(base: str, bench_dir: str, n: int) -> dict[str, Any]:
    with scratch(base, "m-") as root:
        proc = subprocess.run([sys.executable, "-c", CHILD, bench_dir, root, str(n)], capture_output=True, text=True,
                              check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory run failed: {proc.stderr.strip().splitlines()[-1:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def case_memory(base: str, bench_dir: str, n: int, factor: int, runs: int, have_writer: bool
                ) -> tuple[list[Row], dict[str, Any]]:
    label_big = f"`EventWriter` ASYNC: RSS growth at the stall's end, {factor * n:,} events"
    label_small = f"same, {n:,} events"
    if not have_writer:
        return [Row("memory: stalled disk", label_big, None, label_small, None, "MiB",
                    "**not measured: this agentlog has no `EventWriter` ASYNC**")], {"m_big": None, "m_small": None}
    log(f"memory: {runs} runs each of {n:,} and {factor * n:,} events into a stalled disk")
    small: list[dict[str, Any]] = []
    big: list[dict[str, Any]] = []
    for _ in range(runs):
        small.append(_one(base, bench_dir, n))
        big.append(_one(base, bench_dir, factor * n))
    pend_small = median([r["pending_max"] or 0 for r in small])
    pend_big = median([r["pending_max"] or 0 for r in big])
    note = (f"first fsync stalls until the producer blocks or ends, then +2 ms each (a wrapper in the benchmark "
            f"process); writer queue_size={big[0]['queue_size']}; events emitted before the stall ended: "
            f"{pend_big:,.0f} of {factor * n:,} vs {pend_small:,.0f} of {n:,}; bounded ⇒ ratio ≈ 1, "
            f"unbounded ⇒ ≈ {factor}")
    row = Row("memory: stalled disk", label_big, [r["growth_mib"] for r in big], label_small,
              [r["growth_mib"] for r in small], "MiB", note)
    return [row], {"m_big": row.ours, "m_small": row.peer, "m_factor": factor}
