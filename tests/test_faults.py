"""Real faults: torn tails, SIGKILLed writers, short writes, a full disk, a read-only mount, no root."""

from __future__ import annotations

import base64
import errno
import json
import logging
import os
import random
import shutil
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import agentlog
from _workers import finish, read_acks, spawn, start_writers
from agentlog import safe_log_event
from agentlog.errors import StorageError
from conftest import fill_disk

if TYPE_CHECKING:
    from conftest import FaultTmpfs

# --- torn tails -----------------------------------------------------------------------------------------

FRAGMENTS = {
    "half a record": b'{"seq":4,"id":"01a2017b-6c32-7885-9354-9384330c7227","ts":"2026-11-22T10:0',
    "a whole record but no newline": b'{"seq":4,"id":"x","ts":"2026-11-22T10:00:00.000000Z","type":"t"}',
    "zero-filled blocks": b"\0" * 4096,
}


def _stream_file(root: Path, stream: str) -> Path:
    return root.joinpath("logs", *stream.split("/")[:-1], stream.rsplit("/", 1)[-1] + ".jsonl")


@pytest.mark.parametrize("stream", ["s", "team/s"])
@pytest.mark.parametrize("fragment", list(FRAGMENTS.values()), ids=list(FRAGMENTS))
def test_append_moves_a_torn_tail_to_quarantine_and_continues_on_a_fresh_line(
        tmp_path: Path, stream: str, fragment: bytes) -> None:
    """An append after a dead writer's unterminated bytes quarantines them (with offset and source),
    truncates the file to its last newline and writes the next seq on a fresh line."""
    log = agentlog.open_log(tmp_path)
    for i in range(3):
        log.append(stream, "e", data={"i": i})
    path = _stream_file(tmp_path, stream)
    good = path.read_bytes()
    with open(path, "ab") as f:
        f.write(fragment)

    ev = log.append(stream, "after")

    assert ev.seq == 4
    data = path.read_bytes()
    assert data.startswith(good) and data.endswith(b"\n")
    assert fragment not in data
    last = json.loads(data[len(good):])
    assert (last["seq"], last["id"], last["type"]) == (4, ev.id, "after")
    parts = stream.split("/")
    quarantine = tmp_path.joinpath("quarantine", *parts[:-1], parts[-1] + ".jsonl")
    records = [json.loads(line) for line in quarantine.read_text().splitlines()]
    assert len(records) == 1
    assert base64.b64decode(records[0]["fragment_b64"]) == fragment
    assert records[0]["offset"] == len(good)
    assert records[0]["source"] == str(path)
    assert [e.seq for e in log.read(stream)] == [1, 2, 3, 4]
    report = log.verify()
    assert report.ok, report.problems


@pytest.mark.parametrize("fragment", list(FRAGMENTS.values()), ids=list(FRAGMENTS))
def test_readers_never_yield_a_torn_tail_and_verify_reports_it(tmp_path: Path, fragment: bytes) -> None:
    """Before any repair, read, tail and follow yield only the whole events, and verify reports the torn
    tail with the file's path."""
    log = agentlog.open_log(tmp_path)
    ids = [log.append("s", "e", data={"i": i}).id for i in range(3)]
    path = _stream_file(tmp_path, "s")
    with open(path, "ab") as f:
        f.write(fragment)
    fresh = agentlog.open_log(tmp_path)
    assert [e.id for e in fresh.read("s")] == ids
    assert [e.id for e in fresh.tail("s", 10)] == ids
    assert [e.id for e in fresh.tail("s", 1)] == ids[-1:]
    assert [e.id for e in fresh.follow("s", timeout=0.1)] == ids
    report = fresh.verify()
    assert not report.ok
    assert [(p.path, "torn" in p.what) for p in report.problems] == [(str(path), True)]
    assert not (tmp_path / "quarantine").exists(), "reading must not repair"
    assert path.read_bytes().endswith(fragment)


def test_a_follower_waiting_behind_a_torn_tail_gets_the_next_event_not_the_fragment(tmp_path: Path) -> None:
    """A follower at the end of a stream whose tail is torn skips the fragment and receives the event the
    next writer appends after repairing it."""
    log = agentlog.open_log(tmp_path)
    log.append("s", "e")
    log.append("s", "e")
    got: list[agentlog.Event] = []

    def follow() -> None:
        for ev in log.follow("s", timeout=10.0, poll=0.01):
            got.append(ev)
            if len(got) == 3:
                return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    with open(_stream_file(tmp_path, "s"), "ab") as f:
        f.write(FRAGMENTS["half a record"])
    time.sleep(0.2)
    assert len(got) == 2
    ev = agentlog.open_log(tmp_path).append("s", "after")
    thread.join(timeout=10)
    assert not thread.is_alive(), "the follower never received the event appended after the repair"
    assert [(e.seq, e.id) for e in got[2:]] == [(3, ev.id)]
    assert [e.seq for e in got] == [1, 2, 3]


def test_a_nul_filled_line_is_skipped_reported_and_not_counted(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """A newline-terminated line of NUL bytes (a zero-filled block after a crash) is never yielded; readers
    warn with the path and verify reports it as a problem."""
    log = agentlog.open_log(tmp_path)
    log.append("s", "e")
    path = _stream_file(tmp_path, "s")
    with open(path, "ab") as f:
        f.write(b"\0" * 100 + b"\n")
    ev = log.append("s", "e")
    caplog.set_level(logging.WARNING, logger="agentlog")
    assert [e.seq for e in log.read("s")] == [1, 2]
    assert ev.seq == 2
    assert any(str(path) in r.getMessage() for r in caplog.records)
    report = log.verify()
    assert [(p.path, p.line) for p in report.problems] == [(str(path), 2)]


# --- kill -9 --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_writers_killed_with_sigkill_lose_no_acknowledged_event(
        tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]]) -> None:
    """After writers appending large events across rotations are killed with SIGKILL, every acknowledged
    event is present with its seq, and the next append starts on a fresh line with the next seq."""
    root = tmp_path / "root"
    rng = random.Random(1234)
    sizes = [300, 5_000, 150_000, 40_000, 700_000, 90_000]
    all_acks: list[Path] = []
    appended_after: list[str] = []
    for rnd in range(4):
        here = tmp_path / f"round{rnd}"
        here.mkdir()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            all_acks += start_writers(here, 4, started=procs, root=str(root), stream="k", count=-1, size=0,
                                      sizes=rng.sample(sizes, len(sizes)), segment_bytes=1_500_000)
        finally:
            fault_procs.extend(procs)
        time.sleep(rng.uniform(0.3, 0.6))
        for proc in procs:
            assert proc.poll() is None, "a writer stopped before it was killed"
            proc.send_signal(signal.SIGKILL)
            time.sleep(rng.uniform(0, 0.03))
        for proc in procs:
            assert proc.wait(timeout=10) == -signal.SIGKILL

        path = _stream_file(root, "k")
        log = agentlog.open_log(root)
        before = list(log.read("k"))
        assert [e.seq for e in before] == list(range(1, len(before) + 1))
        assert all(len(e.data["pad"]) == e.data["len"] for e in before if e.type == "work")
        ev = log.append("k", "after-kill", data={"round": rnd})
        appended_after.append(ev.id or "")
        assert ev.seq == len(before) + 1
        data = path.read_bytes()
        assert data.endswith(b"\n")
        assert json.loads(data.rsplit(b"\n", 2)[-2])["id"] == ev.id
        report = log.verify()
        assert report.ok, report.problems
        log.close()

    log = agentlog.open_log(root)
    events = list(log.read("k"))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    by_id = {e.id: e for e in events}
    assert len(by_id) == len(events), "an event was stored twice"
    acked = [rec for p in all_acks for rec in read_acks(p)]
    assert len(acked) > 20, "the writers barely ran before they were killed"
    for seq, eid, worker, i in acked:
        assert eid in by_id, f"acknowledged event {eid} (worker {worker}, #{i}) was lost"
        assert by_id[eid].seq == seq
    assert all(eid in by_id for eid in appended_after)
    assert len(list(root.joinpath("logs").iterdir())) >= 2, "no rotation happened"


@pytest.mark.skipif(shutil.which("flock") is None and os.environ.get("CI") != "true",
                    reason="util-linux flock(1) is not installed")
def test_a_lock_holder_killed_with_sigkill_does_not_block_the_next_writer(
        tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]]) -> None:
    """The stream lock dies with its holder: after SIGKILL of a process holding it, an append goes through
    at once instead of waiting for ``lock_timeout``."""
    log = agentlog.open_log(tmp_path, lock_timeout=30)
    log.append("s", "first")
    path = _stream_file(tmp_path, "s")
    ready = tmp_path / "ready"
    holder = subprocess.Popen(["flock", str(path), "sh", "-c", f'touch "{ready}"; exec sleep 60'],
                              start_new_session=True)
    fault_procs.append(holder)
    while not ready.exists():
        assert holder.poll() is None
        time.sleep(0.01)
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    start = time.monotonic()
    assert log.append("s", "second").seq == 2
    assert time.monotonic() - start < 5


# --- short writes (RLIMIT_FSIZE: the kernel cuts a write short, a real fault with no mocks) ---------------

def test_a_short_write_is_rolled_back_and_reported(tmp_path: Path) -> None:
    """When the kernel accepts only part of a record (file size limit), append raises StorageError with the
    errno and path, and the file is truncated back to exactly what it held before."""
    log = agentlog.open_log(tmp_path)
    for i in range(3):
        log.append("s", "e", data={"i": i})
    path = _stream_file(tmp_path, "s")
    before = path.read_bytes()
    out = tmp_path / "result.json"
    proc = spawn("append_past_file_size_limit", root=str(tmp_path), stream="s", limit=len(before) + 5000,
                 size=20_000, out=str(out), die=False)
    finish(proc)
    result = json.loads(out.read_text())
    assert result.get("error") == "StorageError" and result["errno"] == errno.EFBIG, result
    assert result["path"] == str(path)
    assert path.read_bytes() == before
    assert log.append("s", "after").seq == 4
    assert log.verify().ok


def test_a_writer_killed_inside_a_short_write_leaves_a_tail_the_next_append_repairs(tmp_path: Path) -> None:
    """A writer killed by SIGXFSZ after the kernel wrote part of its record leaves a torn tail that readers
    skip and the next append quarantines, reusing the seq that was never acknowledged."""
    log = agentlog.open_log(tmp_path)
    for i in range(3):
        log.append("s", "e", data={"i": i})
    path = _stream_file(tmp_path, "s")
    good = path.read_bytes()
    proc = spawn("append_past_file_size_limit", root=str(tmp_path), stream="s", limit=len(good) + 5000,
                 size=20_000, out=str(tmp_path / "never.json"), die=True)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGXFSZ
    torn = path.read_bytes()
    assert torn.startswith(good) and len(torn) == len(good) + 5000, "the kernel did not cut the write short"
    assert [e.seq for e in agentlog.open_log(tmp_path).read("s")] == [1, 2, 3]
    assert not agentlog.open_log(tmp_path).verify().ok

    ev = log.append("s", "after")
    assert ev.seq == 4
    assert path.read_bytes().startswith(good) and path.read_bytes().endswith(b"\n")
    record = json.loads((tmp_path / "quarantine" / "s.jsonl").read_text())
    fragment = base64.b64decode(record["fragment_b64"])
    assert fragment == torn[len(good):] and fragment.startswith(b'{"seq":4,')
    assert record["offset"] == len(good)
    assert log.verify().ok


# --- a full disk ----------------------------------------------------------------------------------------

def _fill_until_enospc(log: agentlog.EventLog, stream: str, size: int) -> tuple[list[agentlog.Event],
                                                                                StorageError]:
    acked = []
    for i in range(10_000):
        try:
            acked.append(log.append(stream, "fill", data={"i": i, "pad": "f" * size}))
        except StorageError as exc:
            return acked, exc
    raise AssertionError("the disk never filled up")


@pytest.mark.parametrize("durability", ["fsync", "write"])
def test_a_full_disk_raises_enospc_and_keeps_every_earlier_event(
        tmp_path: Path, fault_tmpfs: FaultTmpfs, durability: str) -> None:
    """On a full disk, append raises StorageError with ENOSPC and the path; the file still ends in a newline,
    every acknowledged event reads back intact, verify is ok, and appends work again once space is freed."""
    mnt = fault_tmpfs.mount("1m")
    filler = mnt / "filler"
    filler.write_bytes(b"\1" * 300_000)
    root = mnt / "root"
    log = agentlog.open_log(root, durability=durability, segment_bytes=200_000)
    acked, err = _fill_until_enospc(log, "team/s", 10_000)
    path = _stream_file(root, "team/s")
    assert len(acked) > 20
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC
    assert err.path == str(path) and str(path) in str(err)
    # A second attempt on the still-full disk fails the same way and damages nothing.
    with pytest.raises(StorageError) as again:
        log.append("team/s", "fill", data={"pad": "g" * 10_000})
    assert again.value.errno == errno.ENOSPC
    assert path.read_bytes().endswith(b"\n")
    events = list(agentlog.open_log(root).read("team/s"))
    assert [e.id for e in events] == [e.id for e in acked]
    assert all(e.data == {"i": i, "pad": "f" * 10_000} for i, e in enumerate(events))
    report = log.verify()
    assert report.ok, report.problems

    filler.unlink()
    ev = log.append("team/s", "after", data={"pad": "h" * 10_000})
    assert ev.seq == len(acked) + 1
    assert [e.seq for e in log.read("team/s")] == list(range(1, len(acked) + 2))
    assert log.verify().ok
    log.close()


def test_a_batch_on_a_full_disk_is_all_or_nothing(tmp_path: Path, fault_tmpfs: FaultTmpfs) -> None:
    """A batch that does not fit on the disk raises ENOSPC and leaves none of its events behind."""
    mnt = fault_tmpfs.mount("1m")
    log = agentlog.open_log(mnt / "root")
    log.append("s", "small")
    big = [{"type": "b", "data": {"k": k, "pad": "z" * 100_000}} for k in range(15)]
    with pytest.raises(StorageError) as info:
        log.append_many("s", big)
    assert info.value.errno == errno.ENOSPC
    assert [e.type for e in log.read("s")] == ["small"]
    assert _stream_file(mnt / "root", "s").read_bytes().count(b"\n") == 1
    assert log.append_many("s", big[:2])[-1].seq == 3
    assert log.verify().ok
    log.close()


def test_a_batch_refused_for_a_full_disk_is_never_seen_by_a_follower(
        tmp_path: Path, fault_tmpfs: FaultTmpfs) -> None:
    """Space for a batch is reserved before writing, so a follower never yields events of a batch that a full
    disk refused (and then rolled back) and still yields the real events that come after."""
    mnt = fault_tmpfs.mount("1m")
    log = agentlog.open_log(mnt / "root")
    log.append("s", "small")
    seen: list[str] = []
    follower = threading.Thread(target=lambda: seen.extend(
        e.type for e in agentlog.open_log(mnt / "root").follow("s", timeout=1.5, poll=0.001)))
    follower.start()
    big = [{"type": "phantom", "data": {"k": k, "pad": "z" * 1000}} for k in range(1500)]
    for _ in range(20):
        with pytest.raises(StorageError) as info:
            log.append_many("s", big)
        assert info.value.errno == errno.ENOSPC
    log.append_many("s", [{"type": "real"}, {"type": "real"}])
    follower.join(10)
    assert seen == ["small", "real", "real"]
    log.close()


def test_safe_log_event_on_a_full_disk_raises_and_keeps_earlier_lines(
        tmp_path: Path, fault_tmpfs: FaultTmpfs) -> None:
    """``safe_log_event`` on a full disk raises StorageError with ENOSPC and the path, and the file keeps
    every earlier line whole."""
    mnt = fault_tmpfs.mount("1m")
    path = mnt / "audit" / "events.jsonl"
    done = 0
    with pytest.raises(StorageError) as info:
        for i in range(10_000):
            safe_log_event({"i": i, "pad": "a" * 7_000}, path)
            done += 1
    assert info.value.errno == errno.ENOSPC and info.value.path == str(path)
    assert done > 20
    data = path.read_bytes()
    assert data.endswith(b"\n")
    assert [json.loads(line)["i"] for line in data.splitlines()] == list(range(done))


def test_a_torn_tail_on_a_full_disk_is_kept_until_it_can_be_quarantined(
        tmp_path: Path, fault_tmpfs: FaultTmpfs) -> None:
    """When the disk is too full to write the quarantine record, append raises ENOSPC and leaves the torn
    bytes in place (never destroyed unrecorded); once space is freed, the next append repairs and proceeds."""
    mnt = fault_tmpfs.mount("1m")
    root = mnt / "root"
    log = agentlog.open_log(root)
    ids = [log.append("s", "e", data={"i": i}).id for i in range(3)]
    path = _stream_file(root, "s")
    fragment = b'{"seq":4,"id":"x","data":{"pad":"' + b"q" * 6000
    with open(path, "ab") as f:
        f.write(fragment)
    torn = path.read_bytes()
    filler = mnt / "filler"
    fill_disk(filler)
    with pytest.raises(StorageError) as info:
        log.append("s", "e")
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == torn, "the torn tail was destroyed without a quarantine record"
    assert [e.id for e in log.read("s")] == ids
    filler.unlink()
    assert log.append("s", "e").seq == 4
    record = json.loads((root / "quarantine" / "s.jsonl").read_text().splitlines()[-1])
    assert base64.b64decode(record["fragment_b64"]) == fragment
    assert log.verify().ok
    log.close()


def test_a_rotation_that_cannot_create_the_next_segment_fails_cleanly_and_recovers(
        tmp_path: Path, fault_tmpfs: FaultTmpfs) -> None:
    """When no inode is left for the next segment, the append that needed the rotation raises StorageError
    (ENOSPC), nothing acknowledged is lost, and once an inode is freed appends continue with the next seq."""
    mnt = fault_tmpfs.mount("4m", "nr_inodes=64")
    root = mnt / "root"
    log = agentlog.open_log(root, segment_bytes=2_000)
    acked = [log.append("s", "e", data={"i": 0, "pad": "x" * 500})]
    fillers = []
    with pytest.raises(OSError) as full:
        for k in range(1000):
            filler = mnt / f"filler{k}"
            filler.touch()
            fillers.append(filler)
    assert full.value.errno == errno.ENOSPC
    with pytest.raises(StorageError) as info:
        for i in range(1, 100):
            acked.append(log.append("s", "e", data={"i": i, "pad": "x" * 500}))
    assert info.value.errno == errno.ENOSPC
    assert len(acked) >= 2
    assert [e.id for e in agentlog.open_log(root).read("s")] == [e.id for e in acked]
    for filler in fillers[:3]:
        filler.unlink()
    ev = log.append("s", "e", data={"i": len(acked), "pad": "x" * 500})
    assert ev.seq == len(acked) + 1
    assert [e.seq for e in log.read("s")] == list(range(1, len(acked) + 2))
    report = log.verify()
    assert report.ok, report.problems
    log.close()


# --- a read-only file system ----------------------------------------------------------------------------

def test_a_read_only_file_system_refuses_appends_with_erofs_but_reads(
        tmp_path: Path, fault_tmpfs: FaultTmpfs) -> None:
    """On a file system remounted read-only, append raises StorageError (an OSError) with EROFS and the
    path, for existing and new streams alike, while read, tail, streams and verify keep working."""
    mnt = fault_tmpfs.mount("4m")
    root = mnt / "root"
    log = agentlog.open_log(root)
    ids = [log.append("s", "e", data={"i": i}).id for i in range(3)]
    log.append("team/t", "e")
    log.close()
    fault_tmpfs.remount_ro(mnt)

    log = agentlog.open_log(root)
    try:
        with pytest.raises(StorageError) as info:
            log.append("s", "e")
        assert isinstance(info.value, OSError) and info.value.errno == errno.EROFS
        assert info.value.path == str(_stream_file(root, "s"))
        with pytest.raises(StorageError) as info:
            log.append("new/stream", "e")
        assert info.value.errno == errno.EROFS
        with pytest.raises(StorageError) as info:
            safe_log_event({"a": 1}, mnt / "audit.jsonl")
        assert info.value.errno == errno.EROFS
        assert [e.id for e in log.read("s")] == ids
        assert [e.id for e in log.tail("s", 2)] == ids[1:]
        assert log.streams() == ["s", "team/t"]
        assert [e.seq for e in log.follow("s", timeout=0.05)] == [1, 2, 3]
        report = log.verify()
        assert report.ok, report.problems
    finally:
        log.close()


# --- a missing root -------------------------------------------------------------------------------------

def test_reading_a_missing_root_finds_nothing_and_creates_nothing(tmp_path: Path) -> None:
    """Every read-side call on a root that does not exist returns empty and creates no file or directory."""
    root = tmp_path / "absent"
    log = agentlog.open_log(root)
    assert log.streams() == []
    assert log.tail("s", 5) == []
    assert list(log.read("s")) == []
    assert list(log.follow("s", timeout=0.05)) == []
    assert list(log.since("2000-01-01T00:00:00Z")) == []
    assert list(log.by_type("e")) == []
    assert log.stat("s").events == 0
    assert log.verify().ok
    log.close()
    assert not root.exists()
    assert list(tmp_path.iterdir()) == []


def test_quarantine_file_is_private(tmp_path: Path) -> None:
    """The quarantine directory and file are created with the log's private modes."""
    log = agentlog.open_log(tmp_path)
    log.append("s", "e")
    with open(_stream_file(tmp_path, "s"), "ab") as f:
        f.write(b'{"torn')
    log.append("s", "e")
    assert stat.S_IMODE(os.stat(tmp_path / "quarantine").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "quarantine" / "s.jsonl").st_mode) == 0o600
