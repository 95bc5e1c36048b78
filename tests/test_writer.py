"""EventWriter: sync and async (group commit) modes, backpressure, errors, exit, fork, asyncio."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

import agentlog
from agentlog import EventDropped, EventWriter, StorageError, Verbosity, WriteMode, should_log_event


def test_sync_emit_returns_the_durable_event(tmp_path: Path) -> None:
    """SYNC emit writes before returning and returns the stored event."""
    log = agentlog.open_log(tmp_path)
    writer = EventWriter(log, mode=WriteMode.SYNC)
    ev = writer.emit("s", "turn", data={"n": 1}, actor="a")
    assert isinstance(ev, agentlog.Event) and ev.seq == 1
    assert agentlog.open_log(tmp_path).tail("s", 1)[0].data == {"n": 1}


def test_async_emit_group_commits_and_flush_makes_everything_durable(tmp_path: Path) -> None:
    """ASYNC emit returns futures at once; the thread commits in batches; after flush all are on disk."""
    log = agentlog.open_log(tmp_path)
    with EventWriter(log, mode=WriteMode.ASYNC) as writer:
        futures = [writer.emit("s", "turn", data={"n": n}) for n in range(5000)]
        assert all(isinstance(f, Future) for f in futures)
        writer.flush()
        assert all(f.done() for f in futures)  # type: ignore[union-attr]
        events = [f.result() for f in futures]  # type: ignore[union-attr]
    assert [e.seq for e in events] == list(range(1, 5001))
    stored = list(agentlog.open_log(tmp_path).read("s"))
    assert [e.data["n"] for e in stored] == list(range(5000))
    # One batch shares one ts: far fewer distinct timestamps than events proves group commit happened.
    assert len({e.ts for e in stored}) < 1000


def test_async_keeps_writing_while_the_event_loop_is_blocked(tmp_path: Path) -> None:
    """001's failure: with the asyncio loop blocked, queued events still reach the disk without stop()."""
    log = agentlog.open_log(tmp_path)
    writer = EventWriter(log, mode=WriteMode.ASYNC)

    async def simulation() -> int:
        for n in range(100):
            writer.emit("sim", "turn", data={"n": n})
        time.sleep(0.5)  # a synchronous simulation step that blocks the loop, as in 001
        return agentlog.open_log(tmp_path).stat("sim").events

    assert asyncio.run(simulation()) == 100
    writer.stop()


def test_pending_events_are_flushed_at_interpreter_exit(tmp_path: Path) -> None:
    """A process that exits with a non-empty queue and never calls stop() still gets every event written."""
    script = textwrap.dedent(f"""
        import agentlog
        from agentlog import EventWriter, WriteMode
        w = EventWriter(agentlog.open_log({str(tmp_path)!r}), mode=WriteMode.ASYNC, batch_size=50)
        for n in range(20000):
            w.emit("s", "turn", data={{"n": n}})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    log = agentlog.open_log(tmp_path)
    assert [e.data["n"] for e in log.read("s")] == list(range(20000))
    assert log.verify().ok


def test_a_forked_child_never_writes_the_parents_pending_events(tmp_path: Path) -> None:
    """After fork the child has its own empty queue: each event is written exactly once."""
    log = agentlog.open_log(tmp_path)
    writer = EventWriter(log, mode=WriteMode.ASYNC)
    for n in range(2000):
        writer.emit("s", "parent", data={"n": n})
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        status = 1
        try:
            for n in range(300):
                writer.emit("s", "child", data={"n": n})
            writer.flush()
            status = 0
        finally:
            os._exit(status)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    writer.stop()
    events = list(agentlog.open_log(tmp_path).read("s"))
    parent = [e.data["n"] for e in events if e.type == "parent"]
    child = [e.data["n"] for e in events if e.type == "child"]
    assert parent == list(range(2000)) and child == list(range(300))
    assert [e.seq for e in events] == list(range(1, 2301))


def _hold_lock(path: Path, seconds: float) -> subprocess.Popen[bytes]:
    """Hold the stream file's flock from another process, like a slow disk or a slow shell writer."""
    proc = subprocess.Popen(["flock", str(path), "sh", "-c", f"echo locked; sleep {seconds}"],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"locked\n"
    return proc


def test_a_full_queue_blocks_emit_until_the_disk_catches_up(tmp_path: Path) -> None:
    """With the default policy a full queue makes emit wait (bounded memory), and nothing is lost."""
    log = agentlog.open_log(tmp_path)
    log.append("s", "first")
    holder = _hold_lock(tmp_path / "logs" / "s.jsonl", 1.0)
    writer = EventWriter(log, mode=WriteMode.ASYNC, queue_size=10, batch_size=5)
    emitted: list[int] = []

    def produce() -> None:
        for n in range(100):
            writer.emit("s", "turn", data={"n": n})
            emitted.append(n)

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(0.3)
    assert producer.is_alive() and len(emitted) < 100  # blocked on the full queue, not buffering all
    holder.wait(timeout=10)
    producer.join(timeout=20)
    writer.stop()
    assert [e.data.get("n") for e in log.read("s", after=1)] == list(range(100))


def test_the_drop_policy_counts_and_reports_every_drop(tmp_path: Path) -> None:
    """on_full="drop" never blocks: dropped events fail their future with EventDropped and are counted."""
    log = agentlog.open_log(tmp_path)
    log.append("s", "first")
    holder = _hold_lock(tmp_path / "logs" / "s.jsonl", 0.5)
    writer = EventWriter(log, mode=WriteMode.ASYNC, queue_size=10, batch_size=5, on_full="drop")
    futures = [writer.emit("s", "turn", data={"n": n}) for n in range(200)]
    holder.wait(timeout=10)
    writer.stop()
    dropped = [f for f in futures if isinstance(f.exception(timeout=10), EventDropped)]  # type: ignore[union-attr]
    assert writer.dropped == len(dropped) > 0
    assert log.stat("s").events == 1 + 200 - len(dropped)


def test_write_errors_reach_futures_flush_and_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A batch that cannot be written fails each future, makes flush() raise, and is logged."""
    (tmp_path / "logs" / "bad.jsonl").mkdir(parents=True)  # not a file: every write fails
    writer = EventWriter(agentlog.open_log(tmp_path), mode=WriteMode.ASYNC)
    with caplog.at_level(logging.ERROR, logger="agentlog"):
        future = writer.emit("bad", "turn")
        ok = writer.emit("good", "turn")
        with pytest.raises(StorageError):
            writer.flush()
    assert isinstance(future.exception(timeout=10), StorageError)  # type: ignore[union-attr]
    assert ok.result(timeout=10).seq == 1  # type: ignore[union-attr]
    assert "not written" in caplog.text
    writer.flush()  # the error was reported once; the writer goes on
    writer.stop()


def test_bad_events_are_refused_at_emit_in_both_modes(tmp_path: Path) -> None:
    """Invalid input raises InvalidEvent in the caller, before anything is queued."""
    log = agentlog.open_log(tmp_path)
    for mode in WriteMode:
        writer = EventWriter(log, mode=mode)
        with pytest.raises(agentlog.InvalidEvent):
            writer.emit("s", "turn", data={"x": float("nan")})
        with pytest.raises(agentlog.InvalidStreamName):
            writer.emit("../s", "turn")
        writer.stop()
    assert log.streams() == []


def test_verbosity_filters_by_level(tmp_path: Path) -> None:
    """Events below the writer's verbosity are not written and are counted as filtered."""
    log = agentlog.open_log(tmp_path)
    writer = EventWriter(log, verbosity=Verbosity.WARNING)
    assert writer.emit("s", "noise", level="debug") is None
    assert writer.emit("s", "plain") is None  # no level counts as INFO
    assert writer.emit("s", "alarm", level="error") is not None
    assert writer.emit("s", "custom", level="audit") is not None  # unknown levels pass
    assert [e.type for e in log.read("s")] == ["alarm", "custom"]
    assert writer.filtered == 2


@pytest.mark.parametrize(("level", "verbosity", "expected"), [
    (None, Verbosity.INFO, True), (None, Verbosity.WARNING, False), ("DEBUG", Verbosity.DEBUG, True),
    ("info", Verbosity.ERROR, False), (45, Verbosity.ERROR, True), ("whatever", Verbosity.CRITICAL, True),
])
def test_should_log_event(level: str | int | None, verbosity: Verbosity, expected: bool) -> None:
    """should_log_event ranks names and numbers like logging and lets unknown names through."""
    assert should_log_event(level, verbosity) is expected


def test_aemit_and_aappend_do_not_block_the_loop(tmp_path: Path) -> None:
    """aemit and aappend wait for a locked file in a thread while other coroutines keep running."""
    log = agentlog.open_log(tmp_path)
    log.append("s", "first")
    ticks = 0

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    async def main() -> tuple[agentlog.Event | None, agentlog.Event]:
        stop = asyncio.Event()
        task = asyncio.create_task(ticker(stop))
        holder = _hold_lock(tmp_path / "logs" / "s.jsonl", 0.5)
        writer = EventWriter(log, mode=WriteMode.ASYNC)
        emitted = await writer.aemit("s", "async-turn")
        appended = await log.aappend("s", "async-append")
        stop.set()
        await task
        holder.wait(timeout=10)
        writer.stop()
        return emitted, appended

    emitted, appended = asyncio.run(main())
    assert emitted is not None and (emitted.seq, appended.seq) == (2, 3)
    assert ticks >= 10  # the loop ran throughout the ~0.5 s the lock was held


def test_emit_after_stop_is_refused(tmp_path: Path) -> None:
    """A stopped async writer refuses new events rather than queueing them where no thread will write."""
    writer = EventWriter(agentlog.open_log(tmp_path), mode=WriteMode.ASYNC)
    writer.emit("s", "turn")
    writer.stop()
    with pytest.raises(agentlog.AgentlogError, match="stopped"):
        writer.emit("s", "turn")
