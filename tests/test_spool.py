"""The offline spool: events the root cannot take are fsynced outside it and replayed exactly once.

Faults are real: a full tmpfs, a root path that is a regular file, a lock held by ``flock(1)`` in another
process, replayers killed with ``kill -9``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

import agentlog
from _workers import finish, spawn
from agentlog import EventWriter, StorageError, WriteMode
from conftest import FaultTmpfs
from test_concurrency import _hold_lock, needs_flock


@pytest.fixture(autouse=True)
def _spool_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """conftest turns spooling off for the other tests; here the default (on) applies unless a test says."""
    monkeypatch.delenv("AGENTLOG_SPOOL", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", "/nonexistent-state-dir-so-defaults-are-never-used")


def blocked_root(tmp_path: Path) -> Path:
    """A root path that cannot be a directory (a regular file is there): every append fails with ENOTDIR
    until the file is removed."""
    root = tmp_path / "root"
    root.write_text("not a directory\n")
    return root


def ids_in(log: agentlog.EventLog, stream: str) -> Counter[str]:
    return Counter(ev.id for ev in log.read(stream) if ev.id is not None)


def pending_files(log: agentlog.EventLog) -> list[Path]:
    assert log.spool is not None
    return sorted((Path(log.spool.path) / "pending").glob("*.jsonl"))


# --- spooling -----------------------------------------------------------------------------------------------


def test_a_full_disk_spools_then_the_next_append_replays_exactly_once(tmp_path: Path,
                                                                     fault_tmpfs: FaultTmpfs) -> None:
    """ENOSPC on a 1 MiB tmpfs: appends are spooled (durable, marked, announced); once space is freed the
    next successful append replays them, each id exactly once, in order, and the spool is empty."""
    mount = fault_tmpfs.mount("1m")
    filler = mount / "filler"
    filler.write_bytes(b"x" * 300_000)
    log = agentlog.open_log(mount / "root", spool_dir=tmp_path / "spool")
    acked: list[agentlog.Event] = []
    payload = "y" * 4000
    for i in range(2000):
        ev = log.append("s", "fill", data={"i": i, "p": payload})
        acked.append(ev)
        if ev.spooled:
            break
    else:
        raise AssertionError("the disk never filled up")
    for i in range(len(acked), len(acked) + 5):
        acked.append(log.append("s", "fill", data={"i": i, "p": payload}))
    spooled = [ev for ev in acked if ev.spooled]
    assert len(spooled) == 6 and all(ev.seq == 0 and ev.id for ev in spooled)
    status = log.spool_status()
    assert status is not None and status.records == 6 and status.streams == {"s": 6}
    assert ids_in(log, "s").keys().isdisjoint(ev.id for ev in spooled), "a spooled event is also in the log"

    filler.unlink()
    after = log.append("s", "after")
    assert not after.spooled
    counts = ids_in(log, "s")
    assert all(counts[ev.id] == 1 for ev in [*acked, after]), "an event is missing or doubled"
    assert len(counts) == len(acked) + 1 and sum(counts.values()) == len(acked) + 1
    replayed = [ev for ev in log.read("s") if ev.id in {s.id for s in spooled}]
    assert [ev.data["i"] for ev in replayed] == [ev.data["i"] for ev in spooled], "replay changed the order"
    assert all(isinstance(ev.extra.get("spooled_at"), str) for ev in replayed)
    assert pending_files(log) == [] and log.spool_status().records == 0  # type: ignore[union-attr]
    assert log.replay_spool().replayed == 0
    report = log.verify()
    assert report.ok, report.problems


def test_a_spooled_event_is_announced_and_stored_with_private_modes(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Spooling is never silent (a warning naming the error and the spool) and the spool is 0700/0600."""
    log = agentlog.open_log(blocked_root(tmp_path), spool_dir=tmp_path / "spool")
    with caplog.at_level(logging.WARNING, logger="agentlog"):
        ev = log.append("s", "note", data={"k": 1})
    assert ev.spooled and "spooled=True" in repr(ev)
    assert any("spooled" in r.getMessage() and "ENOTDIR" in r.getMessage() for r in caplog.records)
    assert log.spool is not None
    spool = Path(log.spool.path)
    assert (spool / "ROOT").read_text().strip() == os.path.realpath(tmp_path / "root")
    for path in [spool, spool / "pending"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    [record_file] = pending_files(log)
    assert stat.S_IMODE(record_file.stat().st_mode) == 0o600
    [record] = [orjson.loads(line) for line in record_file.read_bytes().splitlines()]
    assert record["id"] == ev.id and record["event"] == {"stream": "s", "type": "note", "data": {"k": 1}}
    assert "ENOTDIR" in record["error"] and record["attempted_at"] <= record["spooled_at"]


@needs_flock
def test_a_lock_timeout_is_retried_three_times_before_spooling(
        tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]]) -> None:
    """A stream locked by ``flock(1)`` elsewhere: three attempts of ``lock_timeout`` with backoff, then the
    event is spooled; after the holder lets go, the next append replays it."""
    root = tmp_path / "root"
    log = agentlog.open_log(root, lock_timeout=0.3, spool_dir=tmp_path / "spool")
    log.append("s", "first")
    _ready, release = _hold_lock(root / "logs" / "s.jsonl", tmp_path, fault_procs)
    start = time.monotonic()
    blocked = log.append("s", "blocked")
    elapsed = time.monotonic() - start
    assert blocked.spooled
    assert 3 * 0.3 + 0.1 + 0.2 <= elapsed < 10, f"{elapsed:.2f}s is not three attempts with backoff"
    release.touch()
    assert fault_procs[-1].wait(timeout=10) == 0
    log.append("s", "after")
    assert [(ev.seq, ev.type) for ev in log.read("s")] == [(1, "first"), (2, "after"), (3, "blocked")]
    assert [ev.id for ev in log.read("s")][2] == blocked.id


def test_an_async_writer_spools_a_batch_the_root_refuses(tmp_path: Path) -> None:
    """EventWriter goes through the same path: its futures resolve to spooled events, none is lost."""
    root = blocked_root(tmp_path)
    log = agentlog.open_log(root, spool_dir=tmp_path / "spool")
    with EventWriter(log, mode=WriteMode.ASYNC) as writer:
        futures = [writer.emit("s", "tick", data={"i": i}) for i in range(50)]
        writer.flush()
    events = [f.result(timeout=5) for f in futures]  # type: ignore[union-attr]
    assert all(ev.spooled for ev in events)
    root.unlink()
    report = log.replay_spool()
    assert report.replayed == 50 and report.ok
    assert [ev.data["i"] for ev in log.read("s")] == list(range(50))


def test_when_the_spool_cannot_take_it_either_the_error_names_both(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "spool-file"
    not_a_dir.write_text("")
    log = agentlog.open_log(blocked_root(tmp_path), spool_dir=not_a_dir)
    with pytest.raises(StorageError) as info:
        log.append("s", "note")
    text = str(info.value)
    assert "cannot open the log root" in text and "spool could not take" in text


def test_spooling_can_be_turned_off_and_must_live_outside_the_root(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    root = blocked_root(tmp_path)
    with pytest.raises(StorageError):
        agentlog.open_log(root, spool_dir=False).append("s", "note")
    monkeypatch.setenv("AGENTLOG_SPOOL", "off")
    assert agentlog.open_log(root).spool is None
    with pytest.raises(ValueError, match="outside"):
        agentlog.open_log(tmp_path / "r2", spool_dir=tmp_path / "r2" / "spool")
    assert agentlog.open_log("memory:").spool is None


def test_the_default_spool_is_in_the_state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    log = agentlog.open_log(blocked_root(tmp_path))
    assert log.append("s", "note").spooled
    assert log.spool is not None
    assert Path(log.spool.path).parent == tmp_path / "state" / "agentlog" / "spool"
    monkeypatch.setenv("AGENTLOG_SPOOL", str(tmp_path / "elsewhere"))
    assert agentlog.open_log(tmp_path / "root").spool.path.startswith(str(tmp_path / "elsewhere"))  # type: ignore[union-attr]


# --- replay -------------------------------------------------------------------------------------------------


def spool_events(tmp_path: Path, files: int, per_file: int) -> tuple[Path, Path, list[str]]:
    """Spool ``files`` batches of ``per_file`` events against a blocked root, then unblock it."""
    root, spool_dir = blocked_root(tmp_path), tmp_path / "spool"
    log = agentlog.open_log(root, spool_dir=spool_dir)
    ids = []
    for f in range(files):
        events = log.append_many("s", [{"type": "t", "data": {"f": f, "i": i}} for i in range(per_file)])
        assert all(ev.spooled for ev in events)
        ids.extend(ev.id for ev in events if ev.id)
    root.unlink()
    return root, spool_dir, ids


def test_a_replay_interrupted_after_appending_does_not_append_again(tmp_path: Path) -> None:
    """The state a replay killed between append and cleanup leaves (events in the log, record still in the
    spool) is replayed as duplicates: nothing is appended twice."""
    root, spool_dir, ids = spool_events(tmp_path, 3, 10)
    log = agentlog.open_log(root, spool_dir=spool_dir)
    saved = {p.name: p.read_bytes() for p in pending_files(log)}
    assert log.replay_spool().replayed == 30
    for name, data in saved.items():  # put the records back, as if the cleanup never happened
        (Path(log.spool.path) / "pending" / name).write_bytes(data)  # type: ignore[union-attr]
    report = log.replay_spool()
    assert (report.replayed, report.duplicates, report.remaining) == (0, 30, 0)
    assert ids_in(log, "s") == Counter(ids)


def test_replayers_killed_at_random_moments_never_duplicate_or_lose(
        tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]]) -> None:
    """Replayers in other processes are killed with ``kill -9`` at random moments; a last replay finishes
    the job, and every spooled id is in the log exactly once."""
    root, spool_dir, ids = spool_events(tmp_path, 400, 5)
    log = agentlog.open_log(root, spool_dir=spool_dir)
    segment = root / "logs" / "s.jsonl"
    rng = random.Random(7)
    partial = 0
    for attempt in range(4):
        before = segment.stat().st_size if segment.exists() else 0
        proc = spawn("replay_spool", root=str(root), spool_dir=str(spool_dir), out=str(tmp_path / f"r{attempt}"))
        fault_procs.append(proc)
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:  # kill once it is replaying
            if segment.exists() and segment.stat().st_size > before:
                time.sleep(rng.uniform(0, 0.05))
                break
            time.sleep(0.002)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        in_log = sum(ids_in(log, "s").values()) if segment.exists() else 0
        partial += 0 < in_log < len(ids)
    assert partial, "no kill landed in the middle of a replay; the test proved nothing"
    log.replay_spool()
    assert ids_in(log, "s") == Counter(ids)
    assert pending_files(log) == []
    assert log.verify().ok


def test_two_processes_replaying_one_spool_append_each_event_once(
        tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]]) -> None:
    root, spool_dir, ids = spool_events(tmp_path, 40, 50)
    go = tmp_path / "go"
    procs = [spawn("replay_spool", root=str(root), spool_dir=str(spool_dir), out=str(tmp_path / f"r{i}"),
                   go=str(go)) for i in range(2)]
    fault_procs.extend(procs)
    go.touch()
    for proc in procs:
        finish(proc)
    reports = [json.loads((tmp_path / f"r{i}").read_text()) for i in range(2)]
    assert sum(r["replayed"] for r in reports) == len(ids)
    assert all(r["remaining"] == 0 and r["quarantined"] == 0 for r in reports)
    log = agentlog.open_log(root, spool_dir=spool_dir)
    assert ids_in(log, "s") == Counter(ids)


def test_a_poison_record_is_quarantined_and_replay_goes_on(tmp_path: Path) -> None:
    """Damaged lines, a record with no id, one whose stream name escapes the root and one whose event is not
    valid are quarantined with the reason; the good records around them are replayed."""
    root, spool_dir, ids = spool_events(tmp_path, 1, 2)
    log = agentlog.open_log(root, spool_dir=spool_dir)
    [path] = pending_files(log)
    good = path.read_bytes().splitlines()
    template = orjson.loads(good[0])
    bad = [
        b'{"id": "torn',
        orjson.dumps({**template, "id": None}),
        orjson.dumps({**template, "id": "01a20000-0000-7000-8000-000000000001",
                      "event": {**template["event"], "stream": "../escape"}}),
        orjson.dumps({**template, "id": "01a20000-0000-7000-8000-000000000002",
                      "event": {**template["event"], "type": ""}}),
        b"[1, 2]",
    ]
    path.write_bytes(b"\n".join([good[0], *bad, good[1]]) + b"\n")
    report = log.replay_spool()
    assert (report.replayed, report.quarantined, report.remaining) == (2, 5, 0)
    assert ids_in(log, "s") == Counter(ids)
    quarantine = Path(log.spool.path) / "quarantine" / "spool.jsonl"  # type: ignore[union-attr]
    records = [orjson.loads(line) for line in quarantine.read_bytes().splitlines()]
    assert [r["line"] for r in records] == [2, 3, 4, 5, 6]
    assert all(r["reason"] and r["source"] == f"pending/{path.name}" for r in records)
    assert "escape" in records[2]["record"] and log.spool_status().quarantined == 5  # type: ignore[union-attr]
    assert pending_files(log) == []


def test_a_stream_that_still_fails_keeps_its_records_and_the_others_replay(tmp_path: Path) -> None:
    """A stream blocked by a symlink planted in the tree keeps its records pending (order intact) while the
    other streams' records in the same spool file are replayed."""
    root, spool_dir = blocked_root(tmp_path), tmp_path / "spool"
    log = agentlog.open_log(root, spool_dir=spool_dir)
    a = log.append("a", "one")
    b = log.append("b", "two")
    root.unlink()
    (root / "logs").mkdir(parents=True)
    (root / "logs" / "b.jsonl").symlink_to(tmp_path / "outside.jsonl")
    report = log.replay_spool()
    assert (report.replayed, report.remaining) == (1, 1) and set(report.errors) == {"b"}
    assert not report.ok
    assert [ev.id for ev in log.read("a")] == [a.id]
    (root / "logs" / "b.jsonl").unlink()
    assert log.replay_spool().replayed == 1
    assert [ev.id for ev in log.read("b")] == [b.id]
    assert not (tmp_path / "outside.jsonl").exists()


# --- command line -------------------------------------------------------------------------------------------


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENTLOG_SPOOL": str(tmp_path / "spool")}
    return subprocess.run([sys.executable, "-m", "agentlog", "--root", str(tmp_path / "root"), *args],
                          capture_output=True, text=True, env=env, timeout=60)


def test_the_cli_warns_when_it_spools_and_replays_on_demand(tmp_path: Path) -> None:
    blocked_root(tmp_path)
    res = run_cli(tmp_path, "append", "s", "note", "hello")
    assert res.returncode == 0, res.stderr
    event_id = res.stdout.strip()
    assert "warning" in res.stderr and "spooled" in res.stderr and "ENOTDIR" in res.stderr
    res = run_cli(tmp_path, "append", "s", "note", "again", "--json")
    assert json.loads(res.stdout)["spooled"] is True
    status = json.loads(run_cli(tmp_path, "spool", "status", "--json").stdout)
    assert status["records"] == 2 and status["streams"] == {"s": 2}
    assert "2 event(s) waiting" in run_cli(tmp_path, "spool", "status").stdout

    res = run_cli(tmp_path, "spool", "replay")
    assert res.returncode == 1 and "still waiting 2" in res.stdout, "replay reported success while blocked"
    (tmp_path / "root").unlink()
    res = run_cli(tmp_path, "spool", "replay", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["replayed"] == 2
    tail = run_cli(tmp_path, "tail", "s", "--json").stdout.splitlines()
    assert [json.loads(line)["id"] for line in tail] == [event_id, json.loads(tail[1])["id"]]
    assert run_cli(tmp_path, "spool", "status").stdout.splitlines()[-1] == "nothing waiting"


def test_the_spool_command_says_when_spooling_is_off(tmp_path: Path) -> None:
    env = {**os.environ, "AGENTLOG_SPOOL": "off"}
    res = subprocess.run([sys.executable, "-m", "agentlog", "--root", str(tmp_path), "spool", "status"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 1 and "spooling is off" in res.stderr

