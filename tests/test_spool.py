"""The offline spool: events the root cannot take are fsynced outside it and replayed exactly once.

Faults are real: a full tmpfs, a root path that is a regular file, a lock held by ``flock(1)`` in another
process, replayers killed with ``kill -9``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

import agentlog
from _workers import finish, spawn
from agentlog import EventWriter, StorageError, WriteMode
from conftest import FaultTmpfs, require_privilege
from test_concurrency import _hold_lock, needs_flock
from test_unprivileged import as_nobody


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



# --- hardening: trust, backoff, durability, unreadable entries, odd root names ---------------------------


NOBODY = 65534


def spool_path(log: agentlog.EventLog) -> Path:
    assert log.spool is not None
    return Path(log.spool.path)


def test_a_spool_that_is_not_ours_is_refused_and_never_replayed(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """The spool is replayed into the log, so a spool directory owned by another user, or writable by group
    or others, is refused with a StorageError naming why; nothing in it is appended, the append that would
    have replayed it still succeeds, and spooling into it fails loudly."""
    root, spool_dir, ids = spool_events(tmp_path, 2, 3)
    log = agentlog.open_log(root, spool_dir=spool_dir)
    top = spool_path(log)
    os.chown(top, NOBODY, NOBODY)  # as a user who created it first (or swapped it in) would have it
    with pytest.raises(StorageError, match="owned by uid 65534"):
        log.replay_spool()
    with pytest.raises(StorageError, match="owned by uid 65534"):
        log.spool_status()
    with caplog.at_level(logging.WARNING, logger="agentlog"):
        assert not log.append("s", "direct").spooled  # the auto-replay refuses, the append is unharmed
    assert any("owned by uid 65534" in r.getMessage() for r in caplog.records)
    assert [ev.type for ev in log.read("s")] == ["direct"], "a record of an untrusted spool was replayed"

    os.chown(top, os.geteuid(), os.getegid())
    os.chmod(top / "pending", 0o770)
    with pytest.raises(StorageError, match="writable by group or others"):
        log.replay_spool()
    assert [ev.type for ev in log.read("s")] == ["direct"]
    os.chmod(top / "pending", 0o700)
    assert log.replay_spool().replayed == 6
    assert ids_in(log, "s") == Counter([*ids, *(ev.id for ev in log.read("s") if ev.type == "direct")])

    other = tmp_path / "other"  # spooling into such a spool is refused too: the caller hears of both failures
    other.mkdir()
    blocked = agentlog.open_log(blocked_root(other), spool_dir=spool_dir)
    Path(blocked.spool.path).mkdir()  # type: ignore[union-attr]
    os.chmod(blocked.spool.path, 0o777)  # type: ignore[union-attr]
    with pytest.raises(StorageError, match=r"spool could not take.*writable by group or others"):
        blocked.append("s", "note")


def test_a_pending_file_that_is_not_ours_is_skipped_not_replayed(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A pending file owned by another user, or writable by group or others, is left alone with a warning;
    the trusted files around it are replayed, and the replay does not report success."""
    root, spool_dir, ids = spool_events(tmp_path, 3, 2)
    log = agentlog.open_log(root, spool_dir=spool_dir)
    foreign, loose, good = pending_files(log)
    os.chown(foreign, NOBODY, NOBODY)
    os.chmod(loose, 0o620)
    with caplog.at_level(logging.WARNING, logger="agentlog"):
        report = log.replay_spool()
    assert report.replayed == 2 and not report.ok
    assert "owned by uid 65534" in report.skipped[foreign.name]
    assert "writable by group or others" in report.skipped[loose.name]
    assert {r.getMessage().split(" in the spool")[0].rsplit("/", 1)[-1] for r in caplog.records
            if "skipping" in r.getMessage()} == {foreign.name, loose.name}
    assert sorted(ids_in(log, "s")) == sorted(ids[4:]), "an untrusted pending file was replayed"
    assert foreign.exists() and loose.exists() and not good.exists()
    status = log.spool_status()
    assert status is not None and set(status.skipped) == {foreign.name, loose.name} and status.records == 0


def test_the_spool_is_private_whatever_modes_the_log_uses(tmp_path: Path) -> None:
    """A log shared with a group (files 0666, directories 0777, umask 0) still gets a spool only its user can
    write: directories 0700, files 0600."""
    old = os.umask(0)
    try:
        log = agentlog.open_log(blocked_root(tmp_path), spool_dir=tmp_path / "spool", file_mode=0o666,
                                dir_mode=0o777)
        assert log.append("s", "note").spooled
        (tmp_path / "root").unlink()
        (tmp_path / "root").mkdir()
        (tmp_path / "root" / "logs").mkdir()
        (tmp_path / "root" / "logs" / "b.jsonl").symlink_to(tmp_path / "outside")
        assert log.append("b", "note").spooled
        log.replay_spool()  # b fails: writes the lock, backoff.json and keeps b's file
    finally:
        os.umask(old)
    top = spool_path(log)
    for path in [top, top / "pending"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for path in [top / "ROOT", top / "lock", top / "backoff.json", *pending_files(log)]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_symlinks_in_the_spool_tree_are_never_followed(tmp_path: Path) -> None:
    """A symlink in place of the root's spool directory, of a pending file or of the quarantine is refused
    or skipped: what it points to is never replayed or counted."""
    root, spool_dir, _ids = spool_events(tmp_path, 1, 2)
    log = agentlog.open_log(root, spool_dir=spool_dir)
    top = spool_path(log)
    [real] = pending_files(log)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "pending").mkdir(parents=True, mode=0o700)
    os.chmod(elsewhere, 0o700)
    os.rename(real, elsewhere / "pending" / real.name)
    decoy = top / "pending" / "00000000000000000001-1-0000abcd.jsonl"
    decoy.symlink_to(elsewhere / "pending" / real.name)
    status = log.spool_status()
    assert status is not None and status.records == 0 and "symlink" in status.skipped[decoy.name]
    report = log.replay_spool()
    assert report.replayed == 0 and "symlink" in report.skipped[decoy.name]
    assert not ids_in(log, "s")

    (top / "quarantine").mkdir(mode=0o700)
    (tmp_path / "q-elsewhere").write_text('{"a": 1}\n{"b": 2}\n')
    (top / "quarantine" / "spool.jsonl").symlink_to(tmp_path / "q-elsewhere")
    with pytest.raises(StorageError, match="symlink"):
        log.spool_status()  # not a count of whatever file the link names
    decoy.unlink()
    os.rename(top, tmp_path / "moved")
    top.symlink_to(elsewhere)  # the whole per-root directory swapped for a symlink
    with pytest.raises(StorageError, match="symlink"):
        log.replay_spool()
    assert not ids_in(log, "s")


def test_unreadable_pending_entries_are_skipped_with_a_warning(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """A directory, a FIFO and a stray file in pending/ neither abort the replay or the status nor get
    removed: each is named in a warning and in the report, and the records around them are replayed."""
    root, spool_dir, ids = spool_events(tmp_path, 2, 2)
    log = agentlog.open_log(root, spool_dir=spool_dir)
    pending = spool_path(log) / "pending"
    a_dir = pending / "00000000000000000001-1-00000001.jsonl"
    a_dir.mkdir()
    a_fifo = pending / "00000000000000000002-1-00000002.jsonl"
    os.mkfifo(a_fifo, 0o600)
    stray = pending / "notes.txt"
    stray.write_text("not a spool file\n")
    os.chmod(stray, 0o600)
    with caplog.at_level(logging.WARNING, logger="agentlog"):
        status = log.spool_status()
    assert status is not None and status.records == 4 and status.files == 2
    assert set(status.skipped) == {a_dir.name, a_fifo.name, stray.name}
    assert "regular file" in status.skipped[a_fifo.name] and "not a spool file" in status.skipped[stray.name]
    res = run_cli(tmp_path, "spool", "status")
    assert res.returncode == 0 and f"skipped pending/{a_fifo.name}" in res.stdout, res.stdout + res.stderr
    with caplog.at_level(logging.WARNING, logger="agentlog"):
        report = log.replay_spool()
    assert report.replayed == 4 and set(report.skipped) == {a_dir.name, a_fifo.name, stray.name}
    assert not report.ok
    assert sum("skipping" in r.getMessage() and a_fifo.name in r.getMessage() for r in caplog.records) == 2
    assert ids_in(log, "s") == Counter(ids)
    assert a_dir.is_dir() and stat.S_ISFIFO(a_fifo.lstat().st_mode) and stray.exists()
    for entry in (a_fifo, stray):
        entry.unlink()
    a_dir.rmdir()
    assert log.replay_spool().ok


def test_a_pending_file_the_user_cannot_read_is_skipped(tmp_path: Path) -> None:
    """As an ordinary user (permission bits are enforced): a pending file that cannot be opened (mode 000)
    is skipped with its errno, and the others are replayed."""
    require_privilege(os.geteuid() == 0, "dropping to another user needs root")
    base = Path(tempfile.mkdtemp(prefix="agentlog-spool-unpriv-"))
    try:
        os.chmod(base, 0o755)
        work = base / "w"
        work.mkdir()
        os.chown(work, NOBODY, NOBODY)

        def child() -> None:
            root, spool_dir, ids = spool_events(work, 2, 3)
            log = agentlog.open_log(root, spool_dir=spool_dir)
            locked, _readable = pending_files(log)
            os.chmod(locked, 0)
            status = log.spool_status()
            assert status is not None and status.records == 3, status
            assert "EACCES" in status.skipped[locked.name], status.skipped
            report = log.replay_spool()
            assert report.replayed == 3 and "EACCES" in report.skipped[locked.name], report
            assert sorted(ids_in(log, "s")) == sorted(ids[3:])
            os.chmod(locked, 0o600)
            assert log.replay_spool().replayed == 3 and ids_in(log, "s") == Counter(ids)

        assert as_nobody(child) == 0
    finally:
        shutil.rmtree(base)


def b_blocked_by_a_symlink(tmp_path: Path, log: agentlog.EventLog) -> Path:
    """Spool one event of stream ``b`` while the root is blocked, then give the root back with ``b``'s file
    a symlink, which the log refuses: every replay of ``b`` fails until it is removed."""
    assert log.append("b", "waiting").spooled
    root = tmp_path / "root"
    root.unlink()
    (root / "logs").mkdir(parents=True)
    link = root / "logs" / "b.jsonl"
    link.symlink_to(tmp_path / "outside.jsonl")
    return link


def backoff_state(tmp_path: Path) -> dict:  # type: ignore[type-arg]
    [top] = (tmp_path / "spool").iterdir()
    path = top / "backoff.json"
    return json.loads(path.read_text()) if path.exists() else {}


def test_a_failing_stream_is_not_rewritten_and_every_process_backs_off(tmp_path: Path) -> None:
    """``agentlog append`` processes one after another: the first replays and fails on ``b``; its pending file
    is left untouched (same inode, same mtime), and the next processes do not try ``b`` again until its backoff
    (stored in the spool) is over, while a newly spooled healthy stream is replayed at once. ``agentlog spool
    replay`` ignores the backoff (and doubles it when it fails too)."""
    blocked_root(tmp_path)
    res = run_cli(tmp_path, "append", "b", "note", "waiting")
    assert res.returncode == 0 and "spooled" in res.stderr
    root = tmp_path / "root"
    root.unlink()
    (root / "logs").mkdir(parents=True)
    link = root / "logs" / "b.jsonl"
    link.symlink_to(tmp_path / "outside.jsonl")
    [b_file] = (tmp_path / "spool").glob("*/pending/*.jsonl")
    before = b_file.stat()

    res = run_cli(tmp_path, "append", "a", "note", "1")
    assert res.returncode == 0 and "could not be replayed" in res.stderr and "b:" in res.stderr, res.stderr
    after = b_file.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), "rewritten though unchanged"
    state = backoff_state(tmp_path)
    assert state["streams"]["b"]["failures"] == 1
    assert 3 < state["streams"]["b"]["until"] - time.time() <= 5

    res = run_cli(tmp_path, "append", "a", "note", "2")
    assert res.returncode == 0 and "could not be replayed" not in res.stderr, res.stderr
    assert backoff_state(tmp_path)["streams"]["b"]["failures"] == 1, "a second process tried b again"

    (root / "logs" / "c.jsonl").symlink_to(tmp_path / "outside.jsonl")  # c is spooled, then healthy again
    assert run_cli(tmp_path, "append", "c", "note", "spooled").returncode == 0
    (root / "logs" / "c.jsonl").unlink()
    res = run_cli(tmp_path, "append", "a", "note", "3")
    assert res.returncode == 0 and "could not be replayed" not in res.stderr, res.stderr
    tail = run_cli(tmp_path, "tail", "c", "--json").stdout.splitlines()
    assert [json.loads(line)["data"]["content"] for line in tail] == ["spooled"], "c waited behind b's backoff"
    assert backoff_state(tmp_path)["streams"]["b"]["failures"] == 1

    res = run_cli(tmp_path, "spool", "replay")
    assert res.returncode == 1 and "still waiting 1" in res.stdout and "  b: " in res.stdout, res.stdout
    state = backoff_state(tmp_path)
    assert state["streams"]["b"]["failures"] == 2 and 8 < state["streams"]["b"]["until"] - time.time() <= 10
    assert b_file.stat().st_ino == before.st_ino
    status = run_cli(tmp_path, "spool", "status").stdout
    assert "b: 1 (replay failed 2 time(s)" in status, status

    link.unlink()
    assert run_cli(tmp_path, "append", "a", "note", "4").returncode == 0
    assert run_cli(tmp_path, "tail", "b", "--json").stdout == "", "b was tried while backing off"
    res = run_cli(tmp_path, "spool", "replay", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["replayed"] == 1, res.stdout
    assert backoff_state(tmp_path) == {} and not b_file.exists()


def test_the_backoff_doubles_up_to_its_cap_and_then_the_stream_is_tried_again(tmp_path: Path) -> None:
    """In one process, with a short backoff: appends within it leave ``b`` alone, the first after it tries
    again and doubles it; once ``b`` can be written, the first append after the backoff replays it."""
    from agentlog.spool import BACKOFF_BASE, BACKOFF_CAP, _backoff_delay

    assert [_backoff_delay(n) for n in (1, 2, 3, 4)] == [BACKOFF_BASE, 2 * BACKOFF_BASE, 4 * BACKOFF_BASE,
                                                          8 * BACKOFF_BASE]
    assert _backoff_delay(60) == _backoff_delay(10_000) == BACKOFF_CAP
    log = agentlog.open_log(blocked_root(tmp_path), spool_dir=tmp_path / "spool")
    assert log.spool is not None
    log.spool.backoff_base, log.spool.backoff_cap = 0.3, 0.6
    link = b_blocked_by_a_symlink(tmp_path, log)
    tries: list[tuple[int, float]] = []  # (failures so far, seconds until b is due) after each try of b
    start = time.monotonic()
    for _ in range(14):
        log.append("a", "tick")
        b = backoff_state(tmp_path)["streams"]["b"]
        if not tries or b["failures"] != tries[-1][0]:
            tries.append((b["failures"], b["until"] - time.time()))
        time.sleep(0.1)
    elapsed = time.monotonic() - start
    assert [n for n, _ in tries] == list(range(1, len(tries) + 1))
    assert len(tries) >= 3 and len(tries) <= 2 + elapsed / 0.6, f"b tried {len(tries)} times in {elapsed:.2f}s"
    for n, left in tries:  # 0.3 s, then 0.6 s, then the cap (0.6 s) again
        delay = min(0.6, 0.3 * 2 ** (n - 1))
        assert delay - 0.25 < left <= delay, (n, left)
    link.unlink()
    time.sleep(0.7)
    log.append("a", "tick")
    assert [ev.type for ev in log.read("b")] == ["waiting"] and backoff_state(tmp_path) == {}


def dirty_pages(path: Path) -> int:
    """Pages of ``path`` in the page cache that are not on disk yet (``cachestat(2)``, Linux 6.5)."""
    import ctypes

    class Range(ctypes.Structure):
        _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]

    class Stat(ctypes.Structure):
        _fields_ = [(name, ctypes.c_uint64) for name in ("cache", "dirty", "writeback", "evicted", "recent")]

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        whole, out = Range(0, 0), Stat()
        rc = libc.syscall(451, fd, ctypes.byref(whole), ctypes.byref(out), 0)  # 451: cachestat, every arch
        require_privilege(rc == 0, f"cachestat(2) failed: {os.strerror(ctypes.get_errno())}")
        return int(out.dirty)
    finally:
        os.close(fd)


def test_replay_into_a_write_durability_log_is_on_disk_before_the_spool_lets_go(tmp_path: Path) -> None:
    """A log opened with ``durability="write"`` does not fsync its appends, but the records it replays were
    durable in the spool: they are fsynced into the stream before their pending file is removed. Seen in
    the page cache: the stream the replay wrote has no dirty page left, while the one appended at "write"
    durability (the control) still has."""
    root, spool_dir, ids = spool_events(tmp_path, 2, 5)
    log = agentlog.open_log(root, durability="write", spool_dir=spool_dir)
    log.append("other", "note", data={"pad": "x" * 5000})  # not fsynced; replays the spool after it
    assert ids_in(log, "s") == Counter(ids) and pending_files(log) == []
    require_privilege(dirty_pages(root / "logs" / "other.jsonl") > 0,
                      "this file system shows no dirty pages after a write: the test would prove nothing")
    assert dirty_pages(root / "logs" / "s.jsonl") == 0, "replayed records were not fsynced before unspooling"


def test_a_later_file_first_attempted_earlier_still_finds_its_copy(tmp_path: Path) -> None:
    """Replay reads one pending file at a time. A copy that landed an hour ago (the append whose fsync
    failed) is found even when the record that owns it sits in a later file than one first attempted
    now: the window of ids looked up grows to cover it."""
    root, spool_dir = blocked_root(tmp_path), tmp_path / "spool"
    log = agentlog.open_log(root, spool_dir=spool_dir)
    early = log.append("s", "early-attempt")
    late = log.append("s", "late-attempt")
    first, second = pending_files(log)
    hour_ago = agentlog.event.format_ts(time.time_ns() - 3600 * 10**9)
    rec = orjson.loads(second.read_bytes())
    assert rec["id"] == late.id
    second.write_bytes(orjson.dumps({**orjson.loads(first.read_bytes()), "attempted_at": hour_ago}) + b"\n")
    first.write_bytes(orjson.dumps(rec) + b"\n")  # now the later-attempted record comes first
    root.unlink()
    (root / "logs").mkdir(parents=True)
    (root / "logs" / "s.jsonl").write_text(json.dumps(
        {"seq": 1, "id": early.id, "ts": hour_ago, "stream": "s", "type": "early-attempt"}) + "\n")
    report = log.replay_spool()
    assert (report.replayed, report.duplicates) == (1, 1)
    assert ids_in(log, "s") == Counter([early.id, late.id])


def test_a_root_path_that_is_not_utf8_or_is_long_still_has_a_spool(tmp_path: Path) -> None:
    """A root whose name holds bytes that are not UTF-8, and one whose escaped path would be too long for a
    directory entry, both spool and replay; the spool's name shows the odd bytes as %XX."""
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/root-\xff\xfe"))
    odd.write_text("blocked")
    log = agentlog.open_log(odd, spool_dir=tmp_path / "spool")
    ev = log.append("s", "note")
    assert ev.spooled
    top = spool_path(log)
    assert top.name.endswith("root-%FF%FE")
    assert (top / "ROOT").read_bytes() == bytes(odd) + b"\n"
    status = log.spool_status()
    assert status is not None and status.records == 1
    json.dumps(status.to_dict())  # plain text
    res = subprocess.run([sys.executable, "-m", "agentlog", "--root", str(odd), "spool", "status", "--json"],
                         capture_output=True, env={**os.environ, "AGENTLOG_SPOOL": str(tmp_path / "spool")},
                         timeout=60)
    assert res.returncode == 0 and json.loads(res.stdout)["records"] == 1, res.stderr
    odd.unlink()
    assert log.replay_spool().replayed == 1 and [e.id for e in log.read("s")] == [ev.id]

    deep = tmp_path / ("\U0001d11e" * 30) / ("\U0001d11e" * 30) / "root"  # 4 bytes a character
    deep.parent.mkdir(parents=True)
    deep.write_text("blocked")
    log = agentlog.open_log(deep, spool_dir=tmp_path / "spool")
    assert log.append("s", "note").spooled
    assert len(os.fsencode(spool_path(log).name)) <= 255
    deep.unlink()
    assert log.replay_spool().replayed == 1
