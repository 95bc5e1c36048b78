"""Worker functions that the multi-process and fault tests run in real child processes.

Each worker is a plain function (importable, so a test can also call one in-process) and can be started as
``python tests/_workers.py NAME JSON_KWARGS`` with :func:`spawn`. Workers report what they did through files
written with unbuffered ``os.write`` on an ``O_APPEND`` descriptor, so a record written before a ``kill -9`` is
never lost with the process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

WORKERS_PY = str(Path(__file__).resolve())


def spawn(name: str, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start worker ``name`` with ``kwargs`` in a new Python process (its own session, for clean kills)."""
    return subprocess.Popen([sys.executable, WORKERS_PY, name, json.dumps(kwargs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _record(fd: int, line: str) -> None:
    # One write() of a whole line to an O_APPEND file: it is in the kernel when this returns, so it
    # survives SIGKILL of this process a microsecond later.
    os.write(fd, line.encode() + b"\n")


def _wait_for(go: str | None, timeout: float = 30.0) -> None:
    if go is None:
        return
    deadline = time.monotonic() + timeout
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise SystemExit(f"never told to start: {go}")
        time.sleep(0.002)


def append_loop(root: str, stream: str, worker: int, count: int, size: int, acks: str,
                segment_bytes: int = 500_000_000, durability: str = "fsync", ready: str | None = None,
                go: str | None = None, sizes: list[int] | None = None, batch: int = 1) -> None:
    """Append ``count`` events (forever when negative) of ``size`` pad bytes; after each append returns,
    record ``seq id worker i`` in ``acks``."""
    import agentlog

    log = agentlog.open_log(root, segment_bytes=segment_bytes, durability=durability)
    ack_fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    if ready is not None:
        Path(ready).touch()
    _wait_for(go)
    i = 0
    while count < 0 or i < count:
        n = sizes[i % len(sizes)] if sizes else size
        if batch == 1:
            evs = [log.append(stream, "work", actor=f"w{worker}",
                              data={"worker": worker, "i": i, "len": n, "pad": "x" * n})]
        else:
            evs = log.append_many(stream, [{"type": "work", "actor": f"w{worker}",
                                            "data": {"worker": worker, "i": i + k, "len": n, "pad": "x" * n}}
                                           for k in range(batch)])
        for k, ev in enumerate(evs):
            _record(ack_fd, f"{ev.seq} {ev.id} {worker} {i + k}")
        i += len(evs)
    os.close(ack_fd)
    log.close()


def follow_stream(root: str, stream: str, out: str, expect: int, timeout: float,
                  ready: str | None = None) -> None:
    """Follow ``stream`` from the start, recording ``seq id`` of each event in ``out``, until ``expect``
    events were seen or ``timeout`` seconds pass without one."""
    import agentlog

    log = agentlog.open_log(root)
    out_fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    if ready is not None:
        Path(ready).touch()
    seen = 0
    for ev in log.follow(stream, timeout=timeout, poll=0.01):
        pad = ev.data.get("pad", "")
        ok = len(pad) == ev.data.get("len", -1)
        _record(out_fd, f"{ev.seq} {ev.id} {'ok' if ok else 'BAD'}")
        seen += 1
        if seen >= expect:
            break
    os.close(out_fd)
    log.close()


def read_acks(path: str | os.PathLike[str]) -> list[tuple[int, str, int, int]]:
    """The ``(seq, id, worker, i)`` records a writer acknowledged."""
    out = []
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        seq, eid, worker, i = line.split()
        out.append((int(seq), eid, int(worker), int(i)))
    return out


def main(argv: list[str]) -> None:
    name, kwargs = argv[0], json.loads(argv[1])
    func = {"append_loop": append_loop, "follow_stream": follow_stream}[name]
    func(**kwargs)


if __name__ == "__main__":
    main(sys.argv[1:])
