"""Many real processes on one stream: no loss, no duplicates, gapless seq, rotation, followers, flock(1)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import agentlog
from _workers import finish, read_acks, spawn, start_writers
from agentlog.errors import LockTimeout, StorageError

STREAM = "team/stress"


def _segments(root: Path, stream: str = STREAM) -> list[Path]:
    parent = root.joinpath("logs", *stream.split("/")[:-1])
    base = stream.rsplit("/", 1)[-1] + ".jsonl"
    return sorted(p for p in parent.iterdir() if p.name == base or p.name.startswith(base + "."))


def _check_log(root: Path, acks: list[Path], expected: int, stream: str = STREAM) -> list[agentlog.Event]:
    """Every acknowledged event is present exactly once with its acknowledged seq; seq is 1..expected."""
    log = agentlog.open_log(root)
    events = list(log.read(stream))
    assert len(events) == expected, f"read returned {len(events)} of {expected} events"
    seqs = [ev.seq for ev in events]
    assert seqs == list(range(1, expected + 1)), "seq is not gapless 1..N in file order"
    by_id = {ev.id: ev for ev in events}
    assert len(by_id) == len(events), "an event id appears twice"
    acked = [rec for path in acks for rec in read_acks(path)]
    assert len(acked) == expected
    for seq, eid, worker, i in acked:
        ev = by_id.get(eid)
        assert ev is not None, f"acknowledged event {eid} (worker {worker}, #{i}) is missing"
        assert ev.seq == seq, f"event {eid} was acknowledged as seq {seq} but stored as {ev.seq}"
        assert (ev.data["worker"], ev.data["i"]) == (worker, i)
        assert len(ev.data["pad"]) == ev.data["len"]
    for worker in {rec[2] for rec in acked}:
        mine = [ev.data["i"] for ev in events if ev.data["worker"] == worker]
        assert mine == sorted(mine), f"worker {worker}'s events are not in the order it appended them"
    report = log.verify()
    assert report.ok, report.problems
    assert report.counts == {stream: expected}
    log.close()
    return events


@pytest.mark.slow
@pytest.mark.parametrize("segment_bytes", [100_000, 1], ids=["every-10-events", "every-event"])
def test_ten_processes_with_rotation_lose_nothing_and_a_follower_sees_each_event_once(
        tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]], segment_bytes: int) -> None:
    """Ten processes appending 10 KB events across many rotations lose and duplicate nothing, seq stays
    gapless, and a follower process running throughout sees every event exactly once in order."""
    root = tmp_path / "root"
    procs, per_worker = 10, 60
    total = procs * per_worker
    follower_out = tmp_path / "follower.txt"
    follower_ready = tmp_path / "follower-ready"
    follower = spawn("follow_stream", root=str(root), stream=STREAM, out=str(follower_out), expect=total,
                     timeout=15.0, ready=str(follower_ready))
    fault_procs.append(follower)
    while not follower_ready.exists():
        assert follower.poll() is None, follower.stderr.read().decode() if follower.stderr else ""
        time.sleep(0.01)
    acks = start_writers(tmp_path, procs, started=fault_procs, batch_every=5, root=str(root), stream=STREAM,
                         count=per_worker, size=10 * 1024, segment_bytes=segment_bytes)
    for proc in fault_procs[1:]:
        finish(proc, timeout=120)
    finish(follower, timeout=60)

    events = _check_log(root, acks, total)
    assert len(_segments(root)) >= 20, "rotation did not happen during the run"

    seen = [line.split() for line in follower_out.read_text().splitlines()]
    assert [int(seq) for seq, _id, _ok in seen] == list(range(1, total + 1))
    assert [eid for _seq, eid, _ok in seen] == [ev.id for ev in events]
    assert all(ok == "ok" for _seq, _id, ok in seen), "the follower saw a truncated payload"


def test_follower_thread_sees_every_event_once_across_rotations(
        tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]]) -> None:
    """A follower started before any write receives every seq exactly once, in order, while writer
    processes force a rotation every few events."""
    root = tmp_path / "root"
    procs, per_worker = 4, 40
    total = procs * per_worker
    log = agentlog.open_log(root)
    got: list[agentlog.Event] = []
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            for ev in log.follow(STREAM, timeout=30.0, poll=0.005):
                got.append(ev)
                if len(got) >= total:
                    return
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    acks = start_writers(tmp_path, procs, started=fault_procs, root=str(root), stream=STREAM,
                         count=per_worker, size=2000, segment_bytes=16_000)
    for proc in fault_procs:
        finish(proc, timeout=120)
    thread.join(timeout=60)
    assert not thread.is_alive(), f"the follower stopped early after {len(got)} events"
    assert not errors, errors
    assert [ev.seq for ev in got] == list(range(1, total + 1))
    events = _check_log(root, acks, total)
    assert [ev.id for ev in got] == [ev.id for ev in events]
    assert len(_segments(root)) >= 10


def test_follow_from_a_position_starts_in_the_right_sealed_segment(tmp_path: Path) -> None:
    """``follow(after=k)`` over many sealed segments yields exactly the events with seq > k."""
    log = agentlog.open_log(tmp_path, segment_bytes=3000)
    for i in range(60):
        log.append("s", "e", data={"i": i, "pad": "y" * 500})
    assert len(_segments(tmp_path, "s")) >= 10
    for after in (0, 1, 17, 59, 60):
        assert [ev.seq for ev in log.follow("s", after=after, timeout=0.05)] == list(range(after + 1, 61))
        assert [ev.seq for ev in log.read("s", after=after)] == list(range(after + 1, 61))


@pytest.mark.slow
def test_readers_never_see_a_partial_line_while_1mb_events_are_written(
        tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture) -> None:
    """While several processes append 1 MB events (with rotations), read, tail and follow in this process
    only ever yield whole events carrying their exact payload."""
    root = tmp_path / "root"
    size = 1024 * 1024
    procs, per_worker = 3, 6
    total = procs * per_worker
    caplog.set_level(logging.WARNING, logger="agentlog")
    log = agentlog.open_log(root)
    followed: list[tuple[int, bool]] = []
    errors: list[BaseException] = []

    def whole(ev: agentlog.Event) -> bool:
        pad = ev.data.get("pad")
        return isinstance(pad, str) and len(pad) == ev.data.get("len") == size and pad == "x" * size

    def follow() -> None:
        try:
            for ev in log.follow(STREAM, timeout=30.0, poll=0.005):
                followed.append((ev.seq, whole(ev)))
                if len(followed) >= total:
                    return
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    writers = []
    acks = start_writers(tmp_path, procs, started=writers, root=str(root), stream=STREAM, count=per_worker,
                         size=size, segment_bytes=5 * size)
    fault_procs.extend(writers)
    reads = tails = 0
    while True:
        running = any(p.poll() is None for p in writers)
        seqs = []
        for ev in log.read(STREAM):
            assert whole(ev), f"read yielded a partial event at seq {ev.seq}"
            seqs.append(ev.seq)
        assert seqs == list(range(1, len(seqs) + 1))
        reads += 1
        newest = log.tail(STREAM, 2)
        assert all(whole(ev) for ev in newest), "tail yielded a partial event"
        assert [ev.seq for ev in newest] == sorted(ev.seq for ev in newest)
        tails += 1
        if not running:
            break
    for proc in writers:
        finish(proc)
    thread.join(timeout=60)
    assert not errors, errors
    assert followed == [(seq, True) for seq in range(1, total + 1)]
    assert reads >= 2 and tails >= 2
    _check_log(root, acks, total)
    malformed = [r.getMessage() for r in caplog.records if r.name.startswith("agentlog")]
    assert not malformed, malformed


def test_daily_streams_write_utc_dated_segments(tmp_path: Path) -> None:
    """``rotate="daily"`` keeps a stream as ``logs/<stream>/YYYY-MM-DD.jsonl`` named for the UTC date."""
    log = agentlog.open_log(tmp_path, rotate="daily")
    before = datetime.now(UTC).date().isoformat()
    ev = log.append("ledger/andy", "task", data={"n": 1})
    after = datetime.now(UTC).date().isoformat()
    day_dir = tmp_path / "logs" / "ledger" / "andy"
    files = sorted(p.name for p in day_dir.iterdir())
    assert files == [f"{ev.ts[:10]}.jsonl"]
    assert before <= ev.ts[:10] <= after
    assert log.streams() == ["ledger/andy"]
    assert [e.id for e in log.read("ledger/andy")] == [ev.id]
    assert not (tmp_path / "logs" / "ledger" / "andy.jsonl").exists()


def test_daily_stream_moves_to_a_new_file_when_the_day_changes(tmp_path: Path) -> None:
    """An append after the active daily segment's date seals that segment and starts today's file, with seq
    continuing across the two and a follower moving from one to the other."""
    log = agentlog.open_log(tmp_path, rotate="daily")
    first = [log.append("ledger/bo", "task", data={"n": i}) for i in range(3)]
    log.close()
    day_dir = tmp_path / "logs" / "ledger" / "bo"
    # The day's file as a writer yesterday would have left it (its events' ts say today, which is harmless).
    os.rename(day_dir / f"{first[0].ts[:10]}.jsonl", day_dir / "2020-01-01.jsonl")
    log = agentlog.open_log(tmp_path, rotate="daily")
    followed: list[int] = []

    def follow() -> None:
        for e in log.follow("ledger/bo", timeout=10.0, poll=0.01):
            followed.append(e.seq)
            if e.seq == 4:
                return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    while len(followed) < 3 and follower.is_alive():
        time.sleep(0.01)
    ev = log.append("ledger/bo", "task", data={"n": 3})
    assert ev.seq == 4
    follower.join(timeout=15)
    assert followed == [1, 2, 3, 4], "a follower did not move from the old day's file to the new one"
    names = sorted(p.name for p in day_dir.iterdir())
    assert names == ["2020-01-01.jsonl", f"{ev.ts[:10]}.jsonl"]
    assert [e.seq for e in log.read("ledger/bo")] == [1, 2, 3, 4]
    assert log.verify().ok


@pytest.mark.slow
def test_daily_stream_rotates_by_size_within_a_day_under_concurrent_writers(
        tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]]) -> None:
    """A daily stream that passes ``segment_bytes`` within a day is sealed into dated pieces, losing nothing
    while several processes write."""
    root = tmp_path / "root"
    agentlog.open_log(root, rotate="daily").append("ledger/cy", "start")
    acks = start_writers(tmp_path, 3, started=fault_procs, root=str(root), stream="ledger/cy", count=30,
                         size=1000, segment_bytes=10_000)
    for proc in fault_procs:
        finish(proc)
    log = agentlog.open_log(root)
    events = list(log.read("ledger/cy"))
    assert [ev.seq for ev in events] == list(range(1, 92))
    acked = {rec[1] for path in acks for rec in read_acks(path)}
    assert acked <= {ev.id for ev in events}
    names = sorted(p.name for p in (root / "logs" / "ledger" / "cy").iterdir())
    day = events[0].ts[:10]
    assert f"{day}.jsonl.000001" in names and len(names) >= 5, names
    assert all(n.startswith(day) or n[:10] > day for n in names)
    assert log.verify().ok


# --- flock(1) interoperability --------------------------------------------------------------------------

needs_flock = pytest.mark.skipif(shutil.which("flock") is None and os.environ.get("CI") != "true",
                                 reason="util-linux flock(1) is not installed")


def _hold_lock(path: Path, tmp: Path, procs: list[subprocess.Popen[bytes]]) -> tuple[Path, Path]:
    """Start ``flock FILE sh -c ...`` holding the stream file's lock until a release file appears."""
    ready, release = tmp / "holder-ready", tmp / "holder-release"
    script = f'touch "{ready}"; while [ ! -e "{release}" ]; do sleep 0.02; done'
    holder = subprocess.Popen(["flock", str(path), "sh", "-c", script], start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    procs.append(holder)
    deadline = time.monotonic() + 10
    while not ready.exists():
        assert holder.poll() is None, holder.stderr.read().decode() if holder.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return ready, release


@needs_flock
def test_lock_timeout_against_a_flock_holder_in_another_process(
        tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]]) -> None:
    """While ``flock(1)`` in another process holds the stream file, append waits ``lock_timeout`` and
    raises ``LockTimeout`` naming the path; once the holder exits, append succeeds with the next seq."""
    root = tmp_path / "root"
    log = agentlog.open_log(root, lock_timeout=0.5)
    log.append("s", "first")
    path = root / "logs" / "s.jsonl"
    _ready, release = _hold_lock(path, tmp_path, fault_procs)
    start = time.monotonic()
    with pytest.raises(LockTimeout) as info:
        log.append("s", "blocked")
    elapsed = time.monotonic() - start
    err = info.value
    assert isinstance(err, TimeoutError) and isinstance(err, StorageError) and isinstance(err, OSError)
    assert err.path == str(path) and str(path) in str(err)
    assert 0.5 <= err.waited < 5 and 0.45 <= elapsed < 5
    assert path.read_bytes().count(b"\n") == 1, "a byte was written without the lock"
    release.touch()
    assert fault_procs[-1].wait(timeout=10) == 0
    ev = log.append("s", "after")
    assert ev.seq == 2
    assert [(e.seq, e.type) for e in log.read("s")] == [(1, "first"), (2, "after")]


@needs_flock
def test_append_waits_for_a_short_flock_holder(tmp_path: Path,
                                               fault_procs: list[subprocess.Popen[bytes]]) -> None:
    """An append blocked by a ``flock(1)`` holder that lets go within ``lock_timeout`` succeeds after it."""
    root = tmp_path / "root"
    log = agentlog.open_log(root, lock_timeout=10)
    log.append("s", "first")
    _ready, release = _hold_lock(root / "logs" / "s.jsonl", tmp_path, fault_procs)
    threading.Timer(0.3, release.touch).start()
    start = time.monotonic()
    ev = log.append("s", "second")
    assert time.monotonic() - start >= 0.25
    assert ev.seq == 2


def _shell_append(path: Path, line_expr: str) -> None:
    """Append a line the way 002's script does: ``flock FILE sh -c 'echo ... >> FILE'``."""
    subprocess.run(["flock", "--exclusive", str(path), "sh", "-c", f'echo "{line_expr}" >> "{path}"'],
                   check=True, timeout=10)


@needs_flock
def test_a_002_shell_writer_line_is_read_as_an_event_and_only_warned_about(tmp_path: Path) -> None:
    """A line appended by 002's ``flock``/``echo`` shell writer (no seq, no id, a whole-second timestamp) is
    read as an event with an inferred seq, verify gives a warning not a problem, and seq stays gapless."""
    log = agentlog.open_log(tmp_path)
    log.append("conv-1", "question", data={"content": "a"})
    log.append("conv-1", "answer", data={"content": "b"})
    path = tmp_path / "logs" / "conv-1.jsonl"
    stamp = subprocess.run(["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"], capture_output=True, text=True,
                           check=True).stdout.strip()
    line = json.dumps({"interaction": 3, "actor": "AgentX", "type": "note", "content": "from sh",
                       "timestamp": stamp})
    _shell_append(path, line.replace('"', '\\"'))
    log.append("conv-1", "question", data={"content": "c"})
    log.append("conv-1", "answer", data={"content": "d"})

    events = list(log.read("conv-1"))
    assert [ev.seq for ev in events] == [1, 2, 3, 4, 5]
    shell = events[2]
    assert (shell.type, shell.actor, shell.id, shell.ts) == ("note", "AgentX", None, stamp)
    assert shell.extra["content"] == "from sh" and shell.interaction == 3
    assert [ev.seq for ev in log.tail("conv-1", 3)] == [3, 4, 5]
    report = log.verify()
    assert report.ok, report.problems
    assert [w.line for w in report.warnings] == [3]
    assert report.counts == {"conv-1": 5}


@needs_flock
def test_shell_writers_and_agentlog_processes_exclude_each_other(
        tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]]) -> None:
    """Shell writers taking ``flock(1)`` on the stream file, interleaved with agentlog processes, never
    tear or interleave a line, and seq (inferred for shell lines) stays gapless."""
    root = tmp_path / "root"
    log = agentlog.open_log(root)
    log.append("mixed", "start")
    path = root / "logs" / "mixed.jsonl"
    # Like 002's writer, but the timestamp is taken inside the lock so it is never earlier than the line
    # before it; the loop starts when the agentlog writers do.
    script = r"""
        while [ ! -e "$GO" ]; do sleep 0.005; done
        i=1
        while [ $i -le 25 ]; do
          flock "$F" sh -c 'printf "{\"type\":\"shell\",\"n\":%s,\"pad\":\"%s\",\"timestamp\":\"%s\"}\n" \
            "$0" "$PAD" "$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)" >> "$F"' "$i"
          i=$((i + 1))
        done
    """
    env = {**os.environ, "F": str(path), "PAD": "p" * 500, "GO": str(tmp_path / "sync" / "go")}
    shell = subprocess.Popen(["sh", "-c", script], env=env, start_new_session=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    fault_procs.append(shell)
    acks = start_writers(tmp_path, 2, started=fault_procs, root=str(root), stream="mixed", count=25,
                         size=3000)
    for proc in fault_procs:
        finish(proc)
    events = list(log.read("mixed"))
    assert [ev.seq for ev in events] == list(range(1, 77))
    shell_events = [ev for ev in events if ev.type == "shell"]
    assert [ev.extra["n"] for ev in shell_events] == list(range(1, 26))
    assert all(len(ev.extra["pad"]) == 500 for ev in shell_events)
    acked: dict[str, int] = {eid: seq for p in acks for seq, eid, _w, _i in read_acks(p)}
    stored: dict[Any, int] = {ev.id: ev.seq for ev in events if ev.id is not None}
    assert all(stored.get(eid) == seq for eid, seq in acked.items()), "an acknowledged seq was not kept"
    assert len(acked) == 50
    report = log.verify()
    assert report.ok, report.problems
    assert len(report.warnings) == 25


def test_verify_while_writers_rotate_never_reports_a_false_problem(
        tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]]) -> None:
    """``verify`` run over and over while processes append across frequent rotations reports no problem:
    a write in flight is not a torn tail and a segment sealed mid-check is not a gap."""
    root = tmp_path / "root"
    log = agentlog.open_log(root)
    log.append(STREAM, "start")
    writers: list[subprocess.Popen[bytes]] = []
    start_writers(tmp_path, 4, started=writers, root=str(root), stream=STREAM, count=150, size=3000,
                  segment_bytes=12_000)
    fault_procs.extend(writers)
    runs = 0
    while True:
        running = any(p.poll() is None for p in writers)
        report = log.verify()
        assert report.ok, report.problems
        runs += 1
        if not running:
            break
    for proc in writers:
        finish(proc)
    assert runs >= 3
    assert log.verify().counts == {STREAM: 601}


def test_forked_children_using_the_parents_log_object_exclude_each_other(tmp_path: Path) -> None:
    """Children forked after the parent has appended (inheriting its open descriptors) and the parent itself
    append concurrently without sharing a lock: seq stays gapless and nothing is lost."""
    import multiprocessing

    from _workers import append_with

    log = agentlog.open_log(tmp_path, segment_bytes=20_000)
    log.append(STREAM, "parent")  # the parent now holds a cached, locked-and-unlocked descriptor
    ctx = multiprocessing.get_context("fork")
    acks = [tmp_path / f"fork-acks-{k}.txt" for k in range(4)]
    children = [ctx.Process(target=append_with, args=(log, STREAM, k, 40, str(acks[k]))) for k in range(4)]
    for child in children:
        child.start()
    mine = [log.append(STREAM, "parent", data={"n": n, "pad": "p" * 500}).id for n in range(40)]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    events = list(agentlog.open_log(tmp_path).read(STREAM))
    assert [ev.seq for ev in events] == list(range(1, 202))
    stored = {ev.id: ev.seq for ev in events}
    assert len(stored) == 201
    assert all(eid in stored for eid in mine)
    for seq, eid, _w, _i in (rec for path in acks for rec in read_acks(path)):
        assert stored.get(eid) == seq
    assert log.verify().ok
