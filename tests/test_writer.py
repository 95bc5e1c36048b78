"""EventWriter: sync and async (group commit) modes, backpressure, errors, exit, fork, asyncio."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import agentlog
from agentlog import Event, EventDropped, EventWriter, StorageError, Verbosity, WriteMode, should_log_event
from agentlog.writer import Ack


def test_sync_emit_returns_the_durable_event(tmp_path: Path) -> None:
    """SYNC emit writes before returning and returns the stored event."""
    log = agentlog.open_log(tmp_path)
    writer = EventWriter(log, mode=WriteMode.SYNC)
    ev = writer.emit("s", "turn", data={"n": 1}, actor="a")
    assert isinstance(ev, agentlog.Event) and ev.seq == 1
    assert agentlog.open_log(tmp_path).tail("s", 1)[0].data == {"n": 1}


def test_async_emit_group_commits_and_flush_makes_everything_durable(tmp_path: Path) -> None:
    """ASYNC emit returns acknowledgements at once; the thread commits in batches; after flush all are on
    disk, and each acknowledgement gives the event as stored."""
    log = agentlog.open_log(tmp_path)
    with EventWriter(log, mode=WriteMode.ASYNC) as writer:
        acks = [writer.emit("s", "turn", data={"n": n}) for n in range(5000)]
        assert all(isinstance(a, Ack) for a in acks)
        writer.flush()
        assert all(a.done() for a in acks)  # type: ignore[union-attr]
        events = [a.result() for a in acks]  # type: ignore[union-attr]
    assert [e.seq for e in events] == list(range(1, 5001))
    stored = list(agentlog.open_log(tmp_path).read("s"))
    assert [e.data["n"] for e in stored] == list(range(5000))
    assert events == stored  # id, ts, data...: exactly what was written
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


def test_an_acknowledgement_inherited_by_a_forked_child_fails_there_instead_of_waiting_forever(
        tmp_path: Path) -> None:
    """The parent's pending events (one batch held up mid-commit by a lock, one still queued) are the
    parent's to write; in the child, their acknowledgements answer at once with an error saying so, rather
    than wait for a thread the child does not have. In the parent they resolve as ever."""
    log = agentlog.open_log(tmp_path)
    log.append("s", "first")
    holder = _hold_lock(tmp_path / "logs" / "s.jsonl", 1.5)
    writer = EventWriter(log, mode=WriteMode.ASYNC)
    in_flight = writer.emit("s", "parent", data={"n": 1})
    time.sleep(0.3)  # the thread has taken that batch and waits for the lock
    queued = writer.emit("s", "parent", data={"n": 2})
    assert isinstance(in_flight, Ack) and isinstance(queued, Ack)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        status = 1
        try:
            for ack in (in_flight, queued):
                try:
                    ack.result(timeout=5)
                except agentlog.AgentlogError as exc:
                    assert "forked" in str(exc)
                    continue
                os._exit(2)  # it claimed a durable event it cannot know about
            status = 0
        finally:
            os._exit(status)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert in_flight.result(timeout=10).data == {"n": 1} and queued.result(timeout=10).data == {"n": 2}
    writer.stop()
    holder.wait()
    assert [e.type for e in agentlog.open_log(tmp_path).read("s")] == ["first", "parent", "parent"]


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
        with pytest.raises(agentlog.InvalidStreamName, match="must be a string"):
            writer.emit(["s"], "turn")  # type: ignore[arg-type]
        writer.emit("s", "warm-up")  # the ASYNC writer is running now: the same refusals on its fast path
        with pytest.raises(agentlog.InvalidStreamName, match="must be a string"):
            writer.emit(["s"], "turn")  # type: ignore[arg-type]
        with pytest.raises(agentlog.InvalidEvent):
            writer.emit("s", "turn", data={"x": float("inf")}, interaction=-1)
        writer.stop()
    assert [e.type for e in log.read("s")] == ["warm-up", "warm-up"]


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


# --- the acknowledgement -------------------------------------------------------------------------------------

def test_an_ack_answers_like_a_future(tmp_path: Path) -> None:
    """done/result/exception/add_done_callback/cancel behave as on a concurrent.futures.Future, and the event
    is the one stored, built once."""
    log = agentlog.open_log(tmp_path)
    log.append("s", "first")
    holder = _hold_lock(tmp_path / "logs" / "s.jsonl", 0.5)
    writer = EventWriter(log, mode=WriteMode.ASYNC)
    ack = writer.emit("s", "turn", data={"n": 1}, actor="a", level="info", visibility="public", interaction=3)
    assert isinstance(ack, Ack)
    called: list[Ack] = []
    ack.add_done_callback(called.append)
    assert not ack.done() and called == [] and "pending" in repr(ack)
    with pytest.raises(TimeoutError):
        ack.result(timeout=0.05)
    with pytest.raises(TimeoutError):
        ack.exception(timeout=0.05)
    assert ack.cancel() is False and not ack.cancelled()
    holder.wait(timeout=10)
    event = ack.result(timeout=10)
    assert ack.done() and ack.exception() is None and called == [ack]
    assert ack.result() is event  # built once
    late: list[Ack] = []
    ack.add_done_callback(late.append)  # already done: called at once
    assert late == [ack]
    writer.stop()
    stored = log.tail("s", 1)[0]
    assert event == stored and (event.seq, event.actor, event.level, event.interaction) == (2, "a", "info", 3)
    assert stored.id is not None and stored.id in repr(ack)


def test_a_callback_that_raises_is_logged_and_the_writer_goes_on(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    log = agentlog.open_log(tmp_path)
    with EventWriter(log, mode=WriteMode.ASYNC) as writer, caplog.at_level(logging.ERROR, logger="agentlog"):
        first = writer.emit("s", "turn")
        assert isinstance(first, Ack)
        first.add_done_callback(lambda _: 1 / 0)
        writer.flush()
        second = writer.emit("s", "turn")
        assert isinstance(second, Ack)
        assert second.result(timeout=10).seq == 2
    assert "exception calling callback" in caplog.text


def test_the_event_an_ack_gives_is_the_stored_one(tmp_path: Path) -> None:
    """Labels, unknown fields, nested data, Unicode: the acknowledged event equals what a read returns (data
    as stored: a tuple comes back a list, as from a read)."""
    log = agentlog.open_log(tmp_path)
    with EventWriter(log, mode=WriteMode.ASYNC) as writer:
        acks = [
            writer.emit("s", "turn", data={"nested": {"list": [1, 2.5, None, True]}, "text": "héllo ✓"},
                        actor="agent-ü", level="warning", visibility="private", interaction=0,
                        custom={"k": "v"}, tag="x"),
            writer.emit("s", "plain"),
            writer.emit("s", "tupled", data={"pair": (1, 2)}),
        ]
    events = [a.result(timeout=10) for a in acks]  # type: ignore[union-attr]
    stored = list(log.read("s"))
    assert events == stored
    assert events[0].extra == {"custom": {"k": "v"}, "tag": "x"} and events[2].data == {"pair": [1, 2]}


def test_interleaved_streams_are_numbered_per_stream(tmp_path: Path) -> None:
    """Events for several streams in one take are written with one append per stream, each gapless."""
    log = agentlog.open_log(tmp_path)
    with EventWriter(log, mode=WriteMode.ASYNC) as writer:
        acks = [(name, n, writer.emit(name, "turn", data={"n": n})) for n in range(300) for name in ("a", "b/c")]
    for name, n, ack in acks:
        event = ack.result(timeout=10)  # type: ignore[union-attr]
        assert (event.stream, event.seq, event.data["n"]) == (name, n + 1, n)
    for name in ("a", "b/c"):
        assert [e.data["n"] for e in log.read(name)] == list(range(300))
    assert log.verify().ok


def test_a_batch_longer_than_batch_size_is_committed_in_parts(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """batch_size caps what one write and one fsync take; every part resolves its own acknowledgements."""
    log = agentlog.open_log(tmp_path)
    log.append("s", "first")
    sizes: list[int] = []
    store = log.store_records

    def counting(stream: str, ids: Sequence[bytes], tails: Sequence[bytes]) -> tuple[int, str] | list[Event]:
        sizes.append(len(tails))
        return store(stream, ids, tails)

    monkeypatch.setattr(log, "store_records", counting)
    holder = _hold_lock(tmp_path / "logs" / "s.jsonl", 0.5)  # the first take waits: the rest piles up
    writer = EventWriter(log, mode=WriteMode.ASYNC, batch_size=7)
    acks = [writer.emit("s", "turn", data={"n": n}) for n in range(100)]
    holder.wait(timeout=10)
    writer.stop()
    assert [a.result(timeout=10).seq for a in acks] == list(range(2, 102))  # type: ignore[union-attr]
    assert max(sizes) <= 7 and sum(sizes) == 100 and len(sizes) >= 100 // 7
    assert [e.data["n"] for e in log.read("s", after=1)] == list(range(100))


def test_a_failure_in_the_thread_fails_the_batch_and_the_writer_goes_on(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever goes wrong while committing (here: numbering the batch) fails that batch's acknowledgements
    and the next flush; the thread survives and later events are written."""
    import agentlog.writer as writer_module

    log = agentlog.open_log(tmp_path)
    real = agentlog.event.uuid7_block
    broken = [True]

    def block(n: int) -> agentlog.event.IdBlock:
        if broken[0]:
            raise OSError(5, "no randomness today")
        return real(n)

    monkeypatch.setattr(writer_module, "uuid7_block", block)
    writer = EventWriter(log, mode=WriteMode.ASYNC)
    ack = writer.emit("s", "turn")
    with pytest.raises(OSError, match="no randomness"):
        writer.flush()
    assert isinstance(ack.exception(timeout=10), OSError)  # type: ignore[union-attr]
    broken[0] = False
    assert writer.emit("s", "turn").result(timeout=10).seq == 1  # type: ignore[union-attr]
    writer.stop()


def test_a_backend_without_append_records_still_gets_every_event() -> None:
    """EventLog.store_records falls back to the backend's plain append (drafts rebuilt from the bodies)."""
    from agentlog.backends.memory import MemoryBackend

    class PlainBackend:
        """A memory backend that offers only what every backend must (no append_records)."""

        def __init__(self) -> None:
            self.inner = MemoryBackend()

        def __getattr__(self, name: str) -> Any:
            if name == "append_records":
                raise AttributeError(name)
            return getattr(self.inner, name)

    log = agentlog.EventLog(PlainBackend())
    with EventWriter(log, mode=WriteMode.ASYNC) as writer:
        acks = [writer.emit("s", "turn", data={"n": n}, actor="a") for n in range(50)]
    events = [a.result(timeout=10) for a in acks]  # type: ignore[union-attr]
    assert [(e.seq, e.data["n"], e.actor) for e in events] == [(n + 1, n, "a") for n in range(50)]
    assert events == list(log.read("s"))


def test_mode_and_verbosity_can_be_changed_after_construction(tmp_path: Path) -> None:
    log = agentlog.open_log(tmp_path)
    writer = EventWriter(log, mode=WriteMode.ASYNC)
    assert isinstance(writer.emit("s", "kept"), Ack)
    writer.verbosity = Verbosity.ERROR
    assert writer.emit("s", "quiet") is None and writer.emit("s", "loud", level="error") is not None
    writer.flush()
    writer.mode = WriteMode.SYNC
    synced = writer.emit("s", "synced", level="critical", actor="a", note="x")
    assert isinstance(synced, agentlog.Event) and (synced.level, synced.actor, synced.extra) == ("critical", "a",
                                                                                                 {"note": "x"})
    writer.stop()
    assert [e.type for e in log.read("s")] == ["kept", "loud", "synced"]


def test_a_stopped_writer_does_not_leave_an_emitter_waiting_for_room(tmp_path: Path) -> None:
    """An emit blocked on a full queue is released by stop(): its event is written or refused, never
    left waiting for a thread that has gone."""
    log = agentlog.open_log(tmp_path)
    log.append("s", "first")
    holder = _hold_lock(tmp_path / "logs" / "s.jsonl", 0.5)
    writer = EventWriter(log, mode=WriteMode.ASYNC, queue_size=5)
    outcomes: list[object] = []

    def produce() -> None:
        for n in range(50):
            try:
                outcomes.append(writer.emit("s", "turn", data={"n": n}))
            except agentlog.AgentlogError as exc:
                outcomes.append(exc)
                return

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(0.2)
    writer.stop(timeout=20)
    producer.join(timeout=20)
    holder.wait(timeout=10)
    assert not producer.is_alive()
    written = [o for o in outcomes if isinstance(o, Ack)]
    assert all(a.result(timeout=10).seq >= 2 for a in written)
    assert log.stat("s").events == 1 + len(written)


def test_switching_to_sync_writes_what_is_queued_first_and_flush_stop_still_cover_it(tmp_path: Path) -> None:
    """Events queued in ASYNC mode before ``mode = SYNC`` are written before any SYNC event, and flush()
    and stop() still wait for the thread (they used to skip it once the mode was SYNC)."""
    log = agentlog.open_log(tmp_path)
    log.append("s", "first")
    holder = _hold_lock(tmp_path / "logs" / "s.jsonl", 0.5)
    writer = EventWriter(log, mode=WriteMode.ASYNC)
    acks = [writer.emit("s", "queued", data={"n": n}) for n in range(50)]
    writer.mode = WriteMode.SYNC
    writer.flush()
    assert all(a.done() for a in acks)  # type: ignore[union-attr]
    assert writer.emit("s", "synced") is not None
    writer.stop()
    holder.wait(timeout=10)
    assert writer._thread is not None and not writer._thread.is_alive()
    assert [e.type for e in log.read("s")] == ["first"] + ["queued"] * 50 + ["synced"]


def test_result_from_two_threads_at_once_gives_one_event(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two threads asking one acknowledgement for its event (a done callback and the caller, say) both get
    the same event: the second used to fail with AttributeError once the first had dropped the body. The
    other thread's result() is run at the worst moment: while this one is building the event."""
    import agentlog._ack as ack_module

    log = agentlog.open_log(tmp_path)
    with EventWriter(log, mode=WriteMode.ASYNC) as writer:
        ack = writer.emit("s", "turn", data={"n": 1})
        assert isinstance(ack, Ack)
        writer.flush()
    build = agentlog.event.event_from_record  # what Ack.result() calls
    other: list[Event] = []

    def interleaved(record: dict[str, Any], stream: str, seq: int) -> Event:
        if not other:
            other.append(Event(seq=0, id=None, ts=None, stream="", type="placeholder"))
            thread = threading.Thread(target=lambda: other.__setitem__(0, ack.result()))
            thread.start()
            thread.join(timeout=10)
        return build(record, stream, seq)

    monkeypatch.setattr(ack_module, "event_from_record", interleaved)
    event = ack.result(timeout=10)
    assert other[0] is event and ack.result() is event and event.data == {"n": 1}


def test_a_shared_batch_error_does_not_grow_with_each_raise(tmp_path: Path) -> None:
    """Every acknowledgement of a failed batch raises the same exception: its traceback stays the one it
    had (the raising frames are not piled on it once per result() call, nor kept alive by it)."""
    (tmp_path / "logs" / "bad.jsonl").mkdir(parents=True)  # not a file: every write fails
    writer = EventWriter(agentlog.open_log(tmp_path), mode=WriteMode.ASYNC)
    acks = [writer.emit("bad", "turn") for _ in range(200)]
    with pytest.raises(StorageError) as flushed:
        writer.flush()

    def depth(exc: BaseException) -> int:
        n, tb = 0, exc.__traceback__
        while tb is not None:
            n, tb = n + 1, tb.tb_next
        return n

    raised = []
    for ack in acks:
        with pytest.raises(StorageError) as info:
            ack.result(timeout=10)  # type: ignore[union-attr]
        raised.append(info.value)
    # Where it was raised from (result's frame, pytest's) on top of where it happened, not 200 times that.
    assert max(depth(exc) for exc in [flushed.value, *raised]) < 30
    writer.stop()


def test_a_level_that_is_not_a_string_is_refused_not_crashed_on(tmp_path: Path) -> None:
    """emit(level=...) with something that is not a level raises InvalidEvent in both modes (the verbosity
    filter used to call .upper() on it and raise AttributeError)."""
    log = agentlog.open_log(tmp_path)
    for mode in WriteMode:
        with EventWriter(log, mode=mode) as writer:
            for level in (5.0, ["info"], {"x": 1}):
                with pytest.raises(agentlog.InvalidEvent, match="level must be a string"):
                    writer.emit("s", "turn", level=level)  # type: ignore[arg-type]
    assert should_log_event(1.5, Verbosity.CRITICAL) is True  # type: ignore[arg-type]
    assert log.stat("s").events == 0


def test_a_full_disk_fails_every_ack_of_the_batch_or_spools_it(tmp_path: Path, fault_tmpfs: Any,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """ENOSPC on a real tmpfs: without a spool every acknowledgement fails with the error, flush raises it,
    it is logged, and no part of a batch is on disk; with a spool the events are spooled, and replayed
    exactly once after space is freed."""
    mount = fault_tmpfs.mount("1m")
    filler = mount / "filler"
    log = agentlog.open_log(mount / "root", spool_dir=False)
    log.append("s", "first")
    filler.write_bytes(b"x" * (os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize))  # not a page left
    pad = "p" * 5000  # more than what is left of the stream file's last page: no event fits
    holder = _hold_lock(mount / "root" / "logs" / "s.jsonl", 0.3)  # the events pile up into a batch
    writer = EventWriter(log, mode=WriteMode.ASYNC)
    with caplog.at_level(logging.ERROR, logger="agentlog"):
        acks = [writer.emit("s", "turn", data={"n": n, "pad": pad}) for n in range(100)]
        holder.wait(timeout=10)
        with pytest.raises(StorageError) as info:
            writer.flush()
    assert info.value.errno == errno.ENOSPC
    assert all(isinstance(a.exception(timeout=10), StorageError) for a in acks)  # type: ignore[union-attr]
    assert sum(map(int, re.findall(r"(\d+) event\(s\) for 's' not written", caplog.text))) == 100
    assert log.stat("s").events == 1 and log.verify().ok
    writer.stop()

    spooling = agentlog.open_log(mount / "root", spool_dir=tmp_path / "spool")
    with EventWriter(spooling, mode=WriteMode.ASYNC) as writer:
        acks = [writer.emit("s", "turn", data={"n": n, "pad": pad}) for n in range(100)]
        writer.flush()
        assert all(a.result(timeout=10).spooled for a in acks)  # type: ignore[union-attr]
        filler.unlink()
        writer.emit("s", "after").result(timeout=10)  # type: ignore[union-attr]
    events = list(spooling.read("s"))
    assert [e.type for e in events] == ["first", "after"] + ["turn"] * 100
    assert [e.data["n"] for e in events[2:]] == list(range(100))
    assert [e.id for e in events[2:]] == [a.result().id for a in acks]  # type: ignore[union-attr]
    assert spooling.verify().ok

# --- the pieces it is made of ----------------------------------------------------------------------------------

UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_uuid7_blocks_are_uuid7s_unique_and_sliceable() -> None:
    from agentlog.event import IdBlock, uuid7, uuid7_block

    block = uuid7_block(1500)
    ids = [i.decode() for i in block]
    assert len(block) == 1500 and all(UUID7.fullmatch(i) for i in ids)
    assert len(set(ids) | {uuid7() for _ in range(2000)}) == 3500
    assert {i[19] for i in ids} == set("89ab")  # the variant's two random bits take every value
    part = block[10:20]
    assert isinstance(part, IdBlock) and list(part) == list(block)[10:20] and block[-1] == list(block)[-1]
    with pytest.raises(IndexError):
        block[1500]
    assert len(uuid7_block(0)) == 0 and len(uuid7_block(1)) == 1


def test_ids_made_after_a_fork_differ_from_the_parents() -> None:
    """uuid7 hands out suffixes made in advance: a forked child must not hand out the parent's."""
    from agentlog.event import uuid7, uuid7_block

    uuid7()  # the parent has a chunk of suffixes in hand
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.write(write, "\n".join([uuid7() for _ in range(200)] + [i.decode() for i in uuid7_block(200)]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        child = set(f.read().split("\n"))
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    parent = {uuid7() for _ in range(200)} | {i.decode() for i in uuid7_block(200)}
    assert len(child) == 400 and not child & parent


@pytest.mark.parametrize(("args", "fields"), [
    (("s", "t", None, None), {}),
    (("s", "t", {"n": 1, "x": 1.5, "ok": False, "none": None, "big": 2**64 - 1}, "a"),
     {"level": "info", "visibility": "public", "interaction": 7}),
    (("s", "t", {"nested": {"deep": [1, {"k": "v"}]}}, None), {"visibility": "v"}),
    (("s", "t", {}, "a"), {"custom": [1, 2], "level": None}),
    (("s", "ünï", {"é": "✓"}, "agent-ü"), {"interaction": 0}),
])
def test_event_tail_is_the_body_make_draft_makes(args: tuple[Any, ...], fields: dict[str, Any]) -> None:
    """The writer's serialisation (with its shortcut, taken from the second event of a shape on) is
    make_draft's, byte for byte."""
    from agentlog.event import event_tail, make_draft

    stream, etype, data, actor = args
    for _ in range(2):  # the first fills the shortcut's cache, the second uses it
        tail = event_tail(stream, etype, data, actor, dict(fields), 1 << 20)
        assert b"{" + tail == make_draft(stream, etype, data=data, actor=actor, fields=dict(fields)).body


@pytest.mark.parametrize(("data", "fields"), [
    ({"x": float("nan")}, {}),
    ({"x": 2**64}, {}),
    ({1: "x"}, {}),
    ({"x": object()}, {}),
    ({"x": "\ud800"}, {}),
    ({"x": "y" * 2000}, {}),
    ({}, {"interaction": -1}),
    ({}, {"interaction": True}),
    ({}, {"level": "bad\nlevel"}),
    ({}, {"seq": 1}),
    ({}, {"data": {}}),
    ("not a dict", {}),
])
def test_event_tail_refuses_what_make_draft_refuses_in_the_same_words(data: Any, fields: dict[str, Any]) -> None:
    from agentlog.event import event_tail, make_draft

    event_tail("s", "t", {"warm": 1}, "a", {"visibility": "public"}, 1000)  # the shortcut knows this shape
    with pytest.raises(agentlog.InvalidEvent) as expected:
        make_draft("s", "t", data=data, actor="a", fields={"visibility": "public", **fields},
                   max_event_bytes=1000)
    with pytest.raises(agentlog.InvalidEvent) as got:
        event_tail("s", "t", data, "a", {"visibility": "public", **fields}, 1000)
    assert str(got.value) == str(expected.value)
