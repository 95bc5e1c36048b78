"""The multi-process stress test and verifier of 000 (``agentlog stress``), as a library function.

``PROCS`` real processes each append ``EVENTS`` events with a ``SIZE``-byte payload to one stream, all at
once (they start together at a barrier), and each records every id it was acknowledged. Then the parent
checks what 000's verifier checked and more:

* every acknowledged id is in the stream exactly once, and nothing else is (no loss, no duplicate);
* the count is ``PROCS x EVENTS`` and ``seq`` runs 1..N with no gap;
* every payload is byte-for-byte what its writer sent (no torn or interleaved record);
* ``EventLog.verify`` finds no problem.

Payloads are larger than ``PIPE_BUF`` by default (10 KiB), so a single ``write()`` is not atomic with respect
to other writers by any POSIX promise; only the lock keeps records whole. A small ``segment_bytes`` makes
the writers rotate segments under each other during the run.

Acknowledged ids go to one small file per worker, flushed after each append, so the parent knows what was
promised even if a worker dies half-way.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .log import open_log

__all__ = ["STREAM", "StressResult", "payload", "run_stress"]

#: The stream every worker appends to.
STREAM = "stress"
_ID_LINE = 37  # a UUID and a newline: ack files grow by exactly this per acknowledged event


@dataclass
class StressResult:
    """What a stress run found. ``ok`` is true only when nothing was lost, duplicated or corrupted."""

    procs: int
    events: int  #: per process
    size: int
    segment_bytes: int
    root: str  #: the log's root; removed after the run unless kept
    kept: bool
    elapsed: float  #: seconds from the start barrier until the last writer finished
    acknowledged: int  #: ids the writers were acknowledged
    found: int  #: events read back from the stream
    missing: int  #: acknowledged ids not in the stream
    duplicated: int  #: ids that occur more than once
    unacknowledged: int  #: events in the stream whose id no writer reported
    corrupt: int  #: events whose payload or fields differ from what was written
    gapless: bool  #: seq runs exactly 1..found
    segments: int
    problems: list[str] = field(default_factory=list)  #: from verify(), as ``path:line: what``
    warnings: list[str] = field(default_factory=list)
    worker_errors: list[str] = field(default_factory=list)

    @property
    def expected(self) -> int:
        return self.procs * self.events

    @property
    def events_per_second(self) -> float:
        return self.acknowledged / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def ok(self) -> bool:
        return (self.acknowledged == self.expected and self.found == self.expected and self.missing == 0
                and self.duplicated == 0 and self.unacknowledged == 0 and self.corrupt == 0 and self.gapless
                and not self.problems and not self.worker_errors)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(ok=self.ok, expected=self.expected, events_per_second=round(self.events_per_second, 1))
        return out


def payload(worker: int, index: int, size: int) -> str:
    """The ``size``-character payload of event ``index`` of ``worker``: distinct per event, so a record
    spliced from two writes or swapped with another cannot pass the check."""
    seed = f"{worker}.{index}.{hashlib.sha256(f'{worker}.{index}'.encode()).hexdigest()}."
    return (seed * (size // len(seed) + 1))[:size]


def run_stress(procs: int = 10, events: int = 100, size: int = 10240, segment_bytes: int = 500_000_000,
               root: str | os.PathLike[str] | None = None, *, keep: bool = False,
               start_method: str | None = None, temp_dir: str | None = None,
               progress: Callable[[int, int], None] | None = None,
               timeout: float = 600.0) -> StressResult:
    """Run the stress test and return what it found (see the module docstring).

    ``root`` defaults to a fresh temporary directory (inside ``temp_dir`` if given) that is removed
    afterwards unless ``keep``; a ``root`` you give is never removed, and must not already hold the
    ``stress`` stream. ``start_method`` is a :mod:`multiprocessing` start method (default: ``fork`` where
    available, else ``spawn``). ``progress(done, total)`` is called a few times a second while writers run.
    """
    if procs < 1 or events < 1:
        raise ValueError("procs and events must be at least 1")
    if size < 0:
        raise ValueError("size must not be negative")
    if segment_bytes < 1:
        raise ValueError("segment_bytes must be positive")
    if start_method is None:
        start_method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(start_method)

    work = tempfile.mkdtemp(prefix="agentlog-stress-", dir=temp_dir)
    own_root = root is None
    log_root = os.path.join(work, "log") if root is None else os.fspath(root)
    if not own_root:
        with open_log(log_root) as log:
            if log.stat(STREAM).segments:
                shutil.rmtree(work)
                raise ValueError(f"{log_root} already holds a {STREAM!r} stream; give an empty root")
    try:
        acks = [os.path.join(work, f"acks-{i}.txt") for i in range(procs)]
        elapsed, errors = _run_writers(ctx, log_root, procs, events, size, segment_bytes, acks, progress,
                                       timeout)
        result = _check(log_root, procs, events, size, segment_bytes, acks, elapsed, errors)
    finally:
        if own_root and not keep:
            shutil.rmtree(work, ignore_errors=True)
        elif not keep:
            for name in os.listdir(work):
                os.unlink(os.path.join(work, name))
            os.rmdir(work)
    result.kept = keep or not own_root
    return result


def _run_writers(ctx: Any, root: str, procs: int, events: int, size: int, segment_bytes: int,
                 acks: list[str], progress: Callable[[int, int], None] | None,
                 timeout: float) -> tuple[float, list[str]]:
    # Writers report "ready" and wait for "go", so they all start appending at the same moment (the most
    # contention) and the clock measures appending, not process start-up.
    ready, go = ctx.Semaphore(0), ctx.Event()
    workers = [ctx.Process(target=_writer, name=f"agentlog-stress-{i}", daemon=True,
                           args=(root, i, events, size, segment_bytes, acks[i], ready, go))
               for i in range(procs)]
    for w in workers:
        w.start()
    errors: list[str] = []
    waiting, deadline = procs, time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        if ready.acquire(timeout=0.1):
            waiting -= 1
        elif any(w.exitcode is not None for w in workers):
            break  # a writer died before the start: go anyway, and report it below
    go.set()
    start = time.monotonic()
    total = procs * events
    while any(w.is_alive() for w in workers):
        if progress is not None:
            progress(_acknowledged_so_far(acks), total)
        if time.monotonic() > deadline:
            for w in workers:
                if w.is_alive():
                    w.kill()
                    errors.append(f"{w.name} still running after {timeout:.0f} s; killed")
            break
        for w in workers:
            w.join(timeout=0.1)
            if w.is_alive():
                break
    elapsed = time.monotonic() - start
    for w in workers:
        w.join()
    if progress is not None:
        progress(_acknowledged_so_far(acks), total)
    for i, w in enumerate(workers):
        if w.exitcode != 0:
            why = _read(acks[i] + ".err").strip() or "no error recorded"
            errors.append(f"writer {i} exited with status {w.exitcode}: {why}")
    return elapsed, errors


def _writer(root: str, index: int, events: int, size: int, segment_bytes: int, ack_path: str,
            ready: Any, go: Any) -> None:
    """One writer process: append ``events`` events and record each acknowledged id."""
    try:
        with open_log(root, segment_bytes=segment_bytes) as log, open(ack_path, "w") as acks:
            ready.release()
            go.wait(timeout=120)
            for i in range(events):
                ev = log.append(STREAM, "stress", actor=f"writer-{index}",
                                data={"worker": index, "i": i, "payload": payload(index, i, size)})
                acks.write(f"{ev.id}\n")
                acks.flush()  # the parent must learn of every acknowledgement, even if we die next
    except BaseException as exc:
        with open(ack_path + ".err", "w") as err:
            err.write(f"{type(exc).__name__}: {exc}\n")
        sys.exit(1)


def _check(root: str, procs: int, events: int, size: int, segment_bytes: int, acks: list[str],
           elapsed: float, errors: list[str]) -> StressResult:
    acknowledged: set[str] = set()
    n_acks = 0
    for path in acks:
        for line in _read(path).splitlines():
            if line:
                acknowledged.add(line)
                n_acks += 1
    if len(acknowledged) != n_acks:
        errors.append(f"{n_acks - len(acknowledged)} ids were acknowledged to more than one append")
    seen: Counter[str] = Counter()
    corrupt = 0
    gapless = True
    found = 0
    with open_log(root) as log:
        for ev in log.read(STREAM):
            found += 1
            if ev.seq != found:
                gapless = False
            seen[ev.id or ""] += 1
            d = ev.data
            w, i = d.get("worker"), d.get("i")
            if not (isinstance(w, int) and isinstance(i, int) and ev.type == "stress"
                    and ev.actor == f"writer-{w}" and d.get("payload") == payload(w, i, size)):
                corrupt += 1
        report = log.verify()
        segments = log.stat(STREAM).segments
    return StressResult(
        procs=procs, events=events, size=size, segment_bytes=segment_bytes, root=root, kept=False,
        elapsed=elapsed, acknowledged=n_acks, found=found,
        missing=sum(1 for i in acknowledged if i not in seen),
        duplicated=sum(1 for n in seen.values() if n > 1),
        unacknowledged=sum(1 for i in seen if i not in acknowledged),
        corrupt=corrupt, gapless=gapless, segments=segments,
        problems=[str(p) for p in report.problems], warnings=[str(p) for p in report.warnings],
        worker_errors=errors,
    )


def _acknowledged_so_far(acks: list[str]) -> int:
    total = 0
    for path in acks:
        try:
            total += os.stat(path).st_size // _ID_LINE
        except FileNotFoundError:
            pass
    return total


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""
