# ruff: noqa: RUF001 - the multiplication sign in ratios and labels is meant
"""Cases a and b: durable appends, one event per call, from one process and from ten.

The raw peers are the floor agentlog's write path is built on: ``os.open(O_APPEND)`` once, then per event
``flock(LOCK_EX)``, one ``write`` of a prebuilt 300-byte line, ``fsync`` and unlock. In case a the raw loop
fsyncs under the lock, as the brief words it; in case b the raw processes unlock first and fsync after, as
agentlog does, so the kernel can merge concurrent flushes.
"""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import time
from typing import Any

from common import STREAM, Clock, Row, event_fields, interleaved, log, raw_line, scratch

import agentlog

_FORK = mp.get_context("fork")


# --- a: one process ---------------------------------------------------------------------------------------

def _ours_one(base: str, n: int) -> float:
    with scratch(base, "a-ours-") as root, agentlog.open_log(root) as lg:
        lg.append(STREAM, "question", **event_fields(0))  # create the stream and its directories first
        with Clock() as c:
            for i in range(n):
                lg.append(STREAM, "question", **event_fields(i))
        assert lg.stat(STREAM).events == n + 1
    return n / c.seconds


def _raw_one(base: str, n: int) -> float:
    lines = [raw_line(i) for i in range(n)]
    with scratch(base, "a-raw-") as root:
        fd = os.open(os.path.join(root, "raw.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            with Clock() as c:
                for line in lines:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    os.write(fd, line)
                    os.fsync(fd)
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    return n / c.seconds


def case_a(base: str, n: int, runs: int) -> tuple[list[Row], dict[str, Any]]:
    log(f"a: one process, {n} durable appends per run, {runs} runs each")
    ours, raw = interleaved(runs, lambda r: _ours_one(base, n), lambda r: _raw_one(base, n))
    row = Row("a. one process, durable, 1 event/call", "`log.append` (fsync)", ours,
              "raw `O_APPEND`+`flock`+`write`+`fsync`+unlock", raw, "events/s", f"{n} events/run")
    return [row], {"a_ours": ours, "a_raw": raw}


# --- b: ten processes -------------------------------------------------------------------------------------

def _worker(kind: str, root: str, n: int, offset: int, barrier: Any, out: Any) -> None:
    try:
        if kind == "ours":
            lg = agentlog.open_log(root)
            fields = [event_fields(offset + i) for i in range(n)]
            barrier.wait()
            for f in fields:
                lg.append(STREAM, "question", **f)
            end = time.perf_counter()
            lg.close()
        else:
            lines = [raw_line(offset + i) for i in range(n)]
            fd = os.open(os.path.join(root, "raw.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            barrier.wait()
            for line in lines:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(fd, line)
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.fsync(fd)  # after unlocking, as agentlog does
            end = time.perf_counter()
            os.close(fd)
        out.put(("ok", end))
    except BaseException as exc:
        out.put(("error", repr(exc)))
        raise


def _many(kind: str, base: str, procs: int, n: int) -> float:
    """Events/s for ``procs`` processes appending ``n`` events each: from the moment all of them are ready
    (a barrier) to the moment the last one has its last append acknowledged. perf_counter is
    CLOCK_MONOTONIC, the same clock in every process."""
    with scratch(base, f"b-{kind}-") as root:
        if kind == "ours":
            with agentlog.open_log(root) as lg:  # create the stream up front, outside the timing
                lg.append(STREAM, "question", **event_fields(0))
        barrier = _FORK.Barrier(procs + 1)
        out = _FORK.SimpleQueue()
        workers = [_FORK.Process(target=_worker, args=(kind, root, n, p * n, barrier, out)) for p in range(procs)]
        for w in workers:
            w.start()
        barrier.wait()
        t0 = time.perf_counter()
        results = [out.get() for _ in workers]
        for w in workers:
            w.join()
        errors = [r[1] for r in results if r[0] != "ok"]
        if errors:
            raise RuntimeError(f"case b ({kind}) worker failed: {errors[0]}")
        elapsed = max(r[1] for r in results) - t0
        if kind == "ours":
            with agentlog.open_log(root) as lg:
                assert lg.stat(STREAM).events == procs * n + 1
                report = lg.verify()
                assert report.ok, report.problems[:3]
        else:
            size = os.path.getsize(os.path.join(root, "raw.jsonl"))
            assert size == procs * n * len(raw_line(0)), size
    return procs * n / elapsed


def case_b(base: str, procs: int, n: int, runs: int, a: dict[str, Any]) -> tuple[list[Row], dict[str, Any]]:
    log(f"b: {procs} processes x {n} durable appends per run, {runs} runs each")
    ours, raw = interleaved(runs, lambda r: _many("ours", base, procs, n), lambda r: _many("raw", base, procs, n))
    rows = [
        Row(f"b. {procs} processes, one stream, durable", f"`log.append` (fsync) ×{procs} procs", ours,
            f"{procs} raw procs: lock, write, unlock, then `fsync`", raw, "events/s",
            f"{procs}×{n} events/run"),
        Row("b. vs one process (a)", f"`log.append` ×{procs} procs", ours,
            "`log.append`, 1 process (case a)", a["a_ours"], "events/s", "same runs as above"),
        Row("b. raw, vs one process (a)", f"raw ×{procs} procs (fsync after unlock)", raw,
            "raw, 1 process (case a, fsync under lock)", a["a_raw"], "events/s",
            "for reference: what the kernel gives"),
    ]
    return rows, {"b_ours": ours, "b_raw": raw}
