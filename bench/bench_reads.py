"""Case d: reads on one big stream (1,000,000 events in the full run), in milliseconds.

The stream is written once per run with ``log.append_many`` in batches of 1,000 at ``durability="write"``
(or reused from ``--cache-dir``). 1% of its events have type ``x``. Everything is read warm: the file is
read once before timing, so every contender finds it in the page cache (the machine has far more memory
than the file).

- ``log.tail(s, 20)`` in-process vs ``tail -n 20 FILE`` (a process per call, as a person or script runs it);
- ``list(log.by_type("x"))`` vs ``grep -c '"type":"x"' FILE`` and ``jq -c 'select(.type=="x")' FILE``;
- ``list(log.since(ts))`` for the last 10,000 events vs a full scan: ``list(log.read(s))`` filtered on ts.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
from typing import Any

from common import Clock, Row, event_dict, log

import agentlog

STREAM = "big"
BATCH = 1_000
OTHER_TYPES = ("question", "answer", "followup", "heartbeat")


def _type_of(i: int) -> str:
    return "x" if i % 100 == 37 else OTHER_TYPES[i % 4]


def build(root: str, n: int) -> str:
    """Write the ``n``-event stream under ``root`` unless it is already there; return its file's path."""
    os.makedirs(root, exist_ok=True)
    with agentlog.open_log(root, durability="write") as lg:
        have = lg.stat(STREAM).events if STREAM in lg.streams() else 0
        if have not in (0, n):
            raise SystemExit(f"{root} holds a {have}-event stream {STREAM!r}, not {n}: use another --cache-dir")
        if have == 0:
            log(f"d: writing a {n:,}-event stream (append_many, batches of {BATCH:,}, durability='write')")
            with Clock() as c:
                for start in range(0, n, BATCH):
                    lg.append_many(STREAM, [event_dict(i, _type_of(i)) for i in range(start, min(n, start + BATCH))])
            log(f"d: written in {c.seconds:.1f} s")
        else:
            log(f"d: reusing the {n:,}-event stream in {root}")
    files = sorted(glob.glob(os.path.join(root, "logs", f"{STREAM}.jsonl*")))
    if len(files) != 1:
        raise SystemExit(f"expected one segment for {STREAM!r}, found {files}")
    return files[0]


def _ms(fn: Any, calls: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) * 1000 / calls


def _run(cmd: list[str]) -> bytes:
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE).stdout


def case_d(root: str, n: int, runs: int, slow_runs: int, last: int) -> tuple[list[Row], dict[str, Any]]:
    path = build(root, n)
    with open(path, "rb") as f:  # warm the page cache for everyone
        while f.read(1 << 24):
            pass
    expected_x = sum(1 for i in range(n) if _type_of(i) == "x")
    jq = shutil.which("jq")
    rows: list[Row] = []
    results: dict[str, Any] = {}
    with agentlog.open_log(root) as lg:
        # tail(20): in-process, many calls per run; `tail -n 20` is a process per call.
        assert len(lg.tail(STREAM, 20)) == 20 and lg.tail(STREAM, 20)[-1].seq == n
        assert len(_run(["tail", "-n", "20", path]).splitlines()) == 20
        log(f"d: tail(20), {runs} runs")
        ours = [_ms(lambda: lg.tail(STREAM, 20), 200) for _ in range(runs)]
        peer = [_ms(lambda: _run(["tail", "-n", "20", path]), 20) for _ in range(runs)]
        rows.append(Row(f"d. {n:,}-event stream", "`log.tail(s, 20)` (in-process)", ours,
                        "`tail -n 20 FILE` (a process per call)", peer, "ms",
                        "200 calls/run (agentlog), 20 calls/run (tail)"))
        results["d_tail"] = ours

        # by_type: agentlog vs grep -c and jq select.
        log(f"d: by_type('x'), grep -c, jq select: {slow_runs} runs each")
        counts: list[int] = []

        def ours_by_type() -> None:
            counts.append(len(list(lg.by_type("x"))))

        grep_counts: list[int] = []

        def grep() -> None:
            grep_counts.append(int(_run(["grep", "-c", '"type":"x"', path])))

        jq_counts: list[int] = []

        def jq_select() -> None:
            assert jq is not None
            jq_counts.append(len(_run([jq, "-c", 'select(.type=="x")', path]).splitlines()))

        by_type, by_grep, by_jq = [], [], []
        for r in range(slow_runs):
            by_type.append(_ms(ours_by_type))
            by_grep.append(_ms(grep))
            if jq:
                by_jq.append(_ms(jq_select))
            log(f"d: by_type round {r + 1}/{slow_runs}: agentlog {by_type[-1]:.0f} ms, grep {by_grep[-1]:.0f} ms"
                + (f", jq {by_jq[-1]:.0f} ms" if jq else ""))
        # A wrong answer is reported in the table (and fails the target), not hidden by a crash.
        assert set(grep_counts) == {expected_x}, (grep_counts, expected_x)
        assert not jq or set(jq_counts) == {expected_x}, jq_counts
        wrong = "" if set(counts) == {expected_x} else \
            f"; **WRONG RESULT: by_type returned {sorted(set(counts))} events, expected {expected_x:,}**"
        results["d_by_type_wrong"] = bool(wrong)
        rows.append(Row(f"d. {n:,}-event stream", f'`list(log.by_type("x"))` ({expected_x:,} hits, 1%)', by_type,
                        "`grep -c '\"type\":\"x\"' FILE`", by_grep, "ms", "page cache warm" + wrong))
        rows.append(Row(f"d. {n:,}-event stream", '`list(log.by_type("x"))`', by_type,
                        "`jq -c 'select(.type==\"x\")' FILE`", by_jq if jq else None, "ms",
                        "page cache warm" if jq else "**skipped: jq is not installed** (`apt-get install jq`)"))
        results["d_by_type"] = by_type
        results["d_grep"] = by_grep
        results["d_jq"] = by_jq

        # since(ts) for the last `last` events vs a full scan filtered in Python.
        cut = lg.tail(STREAM, last)[0]
        ts = cut.ts
        assert ts is not None
        log(f"d: since(ts) for the last {last:,} events vs a full scan: {slow_runs} runs each")
        since_counts: list[int] = []
        scan_counts: list[int] = []

        def ours_since() -> None:
            since_counts.append(len(list(lg.since(ts))))

        def full_scan() -> None:
            scan_counts.append(len([ev for ev in lg.read(STREAM) if ev.ts is not None and ev.ts >= ts]))

        since, scan = [], []
        for r in range(slow_runs):
            since.append(_ms(ours_since))
            scan.append(_ms(full_scan))
            log(f"d: since round {r + 1}/{slow_runs}: since {since[-1]:.0f} ms, full scan {scan[-1]:.0f} ms")
        assert len(set(scan_counts)) == 1 and scan_counts[0] >= last, (scan_counts, last)
        wrong = "" if set(since_counts) == set(scan_counts) else \
            f"; **WRONG RESULT: since returned {sorted(set(since_counts))} events, the full scan {scan_counts[0]:,}**"
        results["d_since_wrong"] = bool(wrong)
        rows.append(Row(f"d. {n:,}-event stream", f"`list(log.since(ts))` (last {scan_counts[0]:,} events)", since,
                        "full scan: `list(log.read(s))` filtered on ts", scan, "ms", "page cache warm" + wrong))
        results["d_since"] = since
    results["d_file_bytes"] = os.path.getsize(path)
    return rows, results
