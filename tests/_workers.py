"""Worker functions that the multi-process and fault tests run in real child processes.

Each worker is a plain function (importable, so a test can also call one in-process) and can be started as
``python tests/_workers.py NAME JSON_KWARGS`` with :func:`spawn`. Workers report what they did through files
written with unbuffered ``os.write`` on an ``O_APPEND`` descriptor, so a record written before a
``kill -9`` is never lost with the process.
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


def finish(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Wait for a worker and fail, with its stderr, unless it exited 0."""
    try:
        _out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
        raise AssertionError(f"worker {proc.args!r} did not finish in {timeout}s: "
                             f"{err.decode()[-2000:]}") from None
    assert proc.returncode == 0, f"worker failed with {proc.returncode}: {err.decode()[-2000:]}"


def start_writers(tmp: Path, n: int, *, started: list[subprocess.Popen[bytes]], batch_every: int = 0,
                  **kwargs: Any) -> list[Path]:
    """Start ``n`` ``append_loop`` workers that wait until all are ready, then start together; return their
    ack files. Every process is added to ``started`` as soon as it exists (for cleanup by the caller).

    ``batch_every=k`` makes every k-th worker append batches of three with ``append_many``.
    """
    sync = tmp / "sync"
    sync.mkdir(exist_ok=True)
    go = sync / "go"
    acks = []
    readies = []
    for w in range(n):
        ack = tmp / f"acks-{w}.txt"
        ready = sync / f"ready-{w}"
        batch = 3 if batch_every and w % batch_every == 0 else 1
        started.append(spawn("append_loop", worker=w, acks=str(ack), ready=str(ready), go=str(go),
                             batch=batch, **kwargs))
        acks.append(ack)
        readies.append(ready)
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in readies):
        for proc in started[-n:]:
            if proc.poll() is not None:
                finish(proc)  # raises with the worker's stderr
        assert time.monotonic() < deadline, "writers never became ready"
        time.sleep(0.01)
    go.touch()
    return acks


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


def append_with(log: Any, stream: str, worker: int, count: int, acks: str) -> None:
    """Append ``count`` events with an ``EventLog`` inherited from the parent (a forked child)."""
    ack_fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    for i in range(count):
        ev = log.append(stream, "child", data={"worker": worker, "i": i, "pad": "c" * 500})
        _record(ack_fd, f"{ev.seq} {ev.id} {worker} {i}")
    os.close(ack_fd)


def follow_stream(root: str, stream: str, out: str, expect: int, timeout: float,
                  ready: str | None = None) -> None:
    """Follow ``stream`` from the start, recording ``seq id`` of each event in ``out``, until ``expect``
    events were seen or ``timeout`` seconds pass without one."""
    import agentlog

    log = agentlog.open_log(root)
    out_fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    if ready is not None:
        Path(ready).touch()
    for seen, ev in enumerate(log.follow(stream, timeout=timeout, poll=0.01), start=1):
        pad = ev.data.get("pad", "")
        ok = len(pad) == ev.data.get("len", -1)
        _record(out_fd, f"{ev.seq} {ev.id} {'ok' if ok else 'BAD'}")
        if seen >= expect:
            break
    os.close(out_fd)
    log.close()


def stream_op(root: str, stream: str, op: str, out: str, durability: str = "fsync") -> None:
    """Run one operation on ``stream`` and record its outcome in ``out`` as JSON: ``{"ok": result}`` or
    ``{"error": class name, "errno": ..., "path": ...}``. Run in a child so a hang can be timed out."""
    import agentlog

    log = agentlog.open_log(root, durability=durability)
    result: dict[str, Any]
    try:
        if op == "append":
            ev = log.append(stream, "probe")
            value: Any = ev.seq
        elif op == "read":
            value = [ev.seq for ev in log.read(stream)]
        elif op == "tail":
            value = [ev.seq for ev in log.tail(stream, 5)]
        elif op == "follow":
            value = [ev.seq for ev in log.follow(stream, timeout=0.2)]
        elif op == "verify":
            report = log.verify()
            value = {"ok": report.ok, "problems": [list(p) for p in report.problems]}
        else:
            raise ValueError(op)
        result = {"ok": value}
    except Exception as exc:
        result = {"error": type(exc).__name__, "errno": getattr(exc, "errno", None),
                  "path": getattr(exc, "path", None), "message": str(exc)}
    Path(out).write_text(json.dumps(result))


def append_past_file_size_limit(root: str, stream: str, limit: int, size: int, out: str,
                                die: bool) -> None:
    """Append one ``size``-byte event with ``RLIMIT_FSIZE`` at ``limit`` bytes, so the kernel cuts the write
    short. With ``die`` the default SIGXFSZ action kills this process mid-append (a real torn write);
    otherwise the signal is ignored and the outcome is recorded in ``out`` as JSON."""
    import resource
    import signal

    import agentlog

    log = agentlog.open_log(root)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL if die else signal.SIG_IGN)
    result: dict[str, Any]
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        result = {"ok": log.append(stream, "big", data={"pad": "x" * size}).seq}
    except Exception as exc:
        result = {"error": type(exc).__name__, "errno": getattr(exc, "errno", None),
                  "path": getattr(exc, "path", None), "message": str(exc)}
    Path(out).write_text(json.dumps(result))


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


def replay_spool(root: str, spool_dir: str, out: str, go: str | None = None) -> None:
    """Replay the spool of ``root`` (waiting for any other replayer) and write the report as JSON to ``out``."""
    import agentlog

    _wait_for(go)
    with agentlog.open_log(root, spool_dir=spool_dir) as log:
        report = log.replay_spool(wait=60)
    Path(out).write_text(json.dumps(report.to_dict()))


def ledger_loop(root: str, agent: str, worker: int, tasks: int, go: str | None = None) -> None:
    """Run ``tasks`` task_start/task_result pairs on ``agent``'s ledger."""
    from agentlog.ledger import open_ledger

    _wait_for(go)
    with open_ledger(root, spool_dir=False) as led:
        for i in range(tasks):
            led.write(agent, "task_start", task=f"w{worker}-{i}")
            led.write(agent, "task_result", task=f"w{worker}-{i}", data={"exit_code": 0})


def claim_race(root: str, task_ids: list[str], agent: str, out: str, go: str | None = None) -> None:
    """Try to claim every task in ``task_ids`` in order; record ``task_id token`` or ``task_id lost``."""
    import agentlog
    from agentlog.tasks import TaskGraph

    _wait_for(go)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with agentlog.open_log(root, spool_dir=False) as log:
        graph = TaskGraph(log)
        for task_id in task_ids:
            try:
                _record(fd, f"{task_id} {graph.claim(task_id, agent)}")
            except agentlog.Conflict:
                _record(fd, f"{task_id} lost")
    os.close(fd)


def create_tasks(root: str, worker: int, count: int, go: str | None = None) -> None:
    import agentlog
    from agentlog.tasks import TaskGraph

    _wait_for(go)
    with agentlog.open_log(root, spool_dir=False) as log:
        graph = TaskGraph(log)
        for i in range(count):
            graph.create_task({"id": f"w{worker}-{i}", "title": f"task {i} of worker {worker}"})


def main(argv: list[str]) -> None:
    name, kwargs = argv[0], json.loads(argv[1])
    func = {"append_loop": append_loop, "follow_stream": follow_stream, "stream_op": stream_op,
            "append_past_file_size_limit": append_past_file_size_limit, "replay_spool": replay_spool,
            "ledger_loop": ledger_loop, "claim_race": claim_race, "create_tasks": create_tasks}[name]
    func(**kwargs)


if __name__ == "__main__":
    main(sys.argv[1:])
