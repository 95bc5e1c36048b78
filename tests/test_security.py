"""Nothing escapes the root: stream names, planted symlinks and special files, and private file modes."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import agentlog
from _workers import spawn
from agentlog import InvalidStreamName
from agentlog.errors import StorageError

BAD_NAMES = [
    "..", "../x", "x/..", "x/../../etc", ".", "./x", ".hidden", "/abs", "/etc/passwd", "", "a\\b", "..\\x",
    "a\0b", "-rf", "x/-y", "a//b", "a/", "a b", "conv\n", "é", "~", "a" * 201, "x/2026-01-01", "2026-01-01",
]
GOOD_NAMES = ["ledger/andy", "conv-7", "a.b_c-d", "A9/b.c/d_e", "a" * 200, "x/2026-01-01x"]


def _every_entry_point(log: agentlog.EventLog, name: Any) -> Iterator[Callable[[], object]]:
    yield lambda: log.append(name, "e")
    yield lambda: log.append_many(name, [{"type": "e"}])
    yield lambda: log.read(name)
    yield lambda: log.tail(name, 5)
    yield lambda: log.follow(name, timeout=0.01)
    yield lambda: log.stat(name)
    if isinstance(name, str):  # verify(None) means "every stream"; a non-string is no sequence of names
        yield lambda: log.verify(name)
    yield lambda: log.query(streams=[name])
    yield lambda: log.since("2000-01-01T00:00:00Z", streams=[name])
    yield lambda: log.by_type("e", streams=[name])


@pytest.mark.parametrize("name", [*BAD_NAMES, None, b"conv", 7], ids=repr)
def test_a_bad_stream_name_is_refused_everywhere_and_creates_nothing(tmp_path: Path, name: Any) -> None:
    """Traversal, absolute, empty, NUL, backslash, option-like, empty-segment, overlong, date-shaped and
    non-string names raise InvalidStreamName (a ValueError) from every call, and nothing is created."""
    root = tmp_path / "root"
    log = agentlog.open_log(root)
    for call in _every_entry_point(log, name):
        with pytest.raises(InvalidStreamName) as info:
            call()
        assert isinstance(info.value, ValueError)
    log.close()
    assert list(tmp_path.iterdir()) == [], "a refused name still created something"


def test_a_bad_conversation_id_is_refused_by_append_event(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed-compatible ``append_event`` refuses a traversal ``conversation_id`` before touching disk."""
    monkeypatch.setenv("AGENTLOG_ROOT", str(tmp_path / "root"))
    for name in ("../x", "/abs", "a\0b"):
        with pytest.raises(InvalidStreamName):
            agentlog.append_event({"conversation_id": name, "type": "question"})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_a_valid_stream_name_round_trips_to_its_file(tmp_path: Path, name: str) -> None:
    """Valid names (nested, dotted, dashed, 200 characters) append, read back and live at
    ``logs/<name>.jsonl`` under the root."""
    log = agentlog.open_log(tmp_path)
    ev = log.append(name, "e", data={"n": 1})
    assert [e.id for e in log.read(name)] == [ev.id]
    assert tmp_path.joinpath("logs", name + ".jsonl").is_file()
    assert log.streams() == [name]


# --- symlinks and special files planted in the tree -------------------------------------------------------

@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the root holding a file an attacker would like agentlog to write."""
    out = tmp_path / "outside"
    out.mkdir()
    target = out / "target"
    target.write_bytes(b"precious\n")
    os.chmod(target, 0o644)
    os.utime(target, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    return out


def _untouched(outside: Path) -> None:
    target = outside / "target"
    assert sorted(p.name for p in outside.iterdir()) == ["target"], "something was created outside the root"
    assert target.read_bytes() == b"precious\n"
    st = os.stat(target)
    assert st.st_mtime_ns == 1_000_000_000_000_000_000
    assert stat.S_IMODE(st.st_mode) == 0o644


def test_a_symlink_at_a_stream_path_is_refused_for_writing_and_reading(tmp_path: Path, outside: Path) -> None:
    """A symlink planted at ``logs/s.jsonl`` makes append, read, tail and follow raise StorageError, verify
    reports it, and its target is untouched."""
    root = tmp_path / "root"
    (root / "logs").mkdir(parents=True)
    link = root / "logs" / "s.jsonl"
    link.symlink_to(outside / "target")
    log = agentlog.open_log(root)
    with pytest.raises(StorageError) as info:
        log.append("s", "e")
    assert info.value.path == str(link)
    with pytest.raises(StorageError):
        log.append_many("s", [{"type": "e"}, {"type": "e"}])
    with pytest.raises(StorageError):
        list(log.read("s"))
    with pytest.raises(StorageError):
        log.tail("s", 5)
    with pytest.raises(StorageError):
        list(log.follow("s", timeout=0.1))
    report = log.verify()
    assert not report.ok and any(p.path == str(link) for p in report.problems)
    assert os.path.islink(link)
    _untouched(outside)


def test_a_symlink_planted_as_a_sealed_segment_is_refused_by_readers(tmp_path: Path, outside: Path) -> None:
    """A symlink planted among a stream's sealed segments makes reads raise StorageError rather than read
    the target."""
    root = tmp_path / "root"
    log = agentlog.open_log(root)
    log.append("s", "e")
    (root / "logs" / "s.jsonl.000001").symlink_to(outside / "target")
    with pytest.raises(StorageError):
        list(agentlog.open_log(root).read("s"))
    assert not agentlog.open_log(root).verify().ok
    _untouched(outside)


@pytest.mark.parametrize(("link", "stream", "rotate"), [
    ("logs/dir", "dir/x", "size"),
    ("logs/dir", "dir/x", "daily"),
    ("logs/a/b", "a/b/c/d", "size"),
    ("logs", "x", "size"),
    ("logs/x", "x", "daily"),
])
def test_a_symlinked_directory_in_the_tree_is_never_followed(tmp_path: Path, outside: Path, link: str,
                                                             stream: str, rotate: str) -> None:
    """A directory symlink planted anywhere on a stream's path makes append and read raise StorageError and
    creates nothing in the directory it points to."""
    root = tmp_path / "root"
    planted = root / link
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.symlink_to(outside, target_is_directory=True)
    log = agentlog.open_log(root, rotate=rotate)
    with pytest.raises(StorageError):
        log.append(stream, "e")
    with pytest.raises(StorageError):
        list(log.read(stream))
    with pytest.raises(StorageError):
        log.tail(stream, 1)
    _untouched(outside)


def test_a_symlinked_quarantine_directory_is_not_followed_when_repairing(tmp_path: Path,
                                                                        outside: Path) -> None:
    """When the quarantine directory is a planted symlink, repairing a torn tail raises StorageError, writes
    nothing through the link and leaves the stream file as it was."""
    root = tmp_path / "root"
    log = agentlog.open_log(root)
    log.append("s", "e")
    (root / "quarantine").symlink_to(outside, target_is_directory=True)
    path = root / "logs" / "s.jsonl"
    with open(path, "ab") as f:
        f.write(b'{"torn')
    before = path.read_bytes()
    with pytest.raises(StorageError):
        log.append("s", "e")
    assert path.read_bytes() == before
    _untouched(outside)


def _op_in_child(root: Path, stream: str, op: str, tmp: Path, durability: str = "fsync") -> dict[str, Any]:
    """Run one log operation in a child process; a hang becomes a test failure, not a stuck suite."""
    out = tmp / f"op-{op}-{durability}.json"
    proc = spawn("stream_op", root=str(root), stream=stream, op=op, out=str(out), durability=durability)
    try:
        _o, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"{op} on a special file hung")
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out.read_text())
    return result


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_special_file_at_a_stream_path_is_refused_not_hung_on_or_written_into(tmp_path: Path,
                                                                               kind: str) -> None:
    """A FIFO or directory planted at ``logs/s.jsonl`` makes append (at every durability) and every reader
    raise StorageError promptly: no hang, and no event acknowledged into something that is not a file."""
    root = tmp_path / "root"
    (root / "logs").mkdir(parents=True)
    path = root / "logs" / "s.jsonl"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    for op, durability in [("append", "fsync"), ("append", "write"), ("read", "fsync"), ("tail", "fsync"),
                           ("follow", "fsync")]:
        result = _op_in_child(root, "s", op, tmp_path, durability)
        assert result.get("error") == "StorageError", f"{op} ({durability}) on a {kind}: {result}"
        assert result["path"] == str(path)
    verdict = _op_in_child(root, "s", "verify", tmp_path)
    assert "ok" in verdict, f"verify on a {kind}: {verdict}"


def test_a_stream_cannot_break_another_by_mimicking_its_daily_segments(tmp_path: Path) -> None:
    """A stream whose name ends in a daily segment's file name (``ledger/andy/2030-01-01.jsonl``) is either
    refused or kept apart: the daily stream ``ledger/andy`` still reads, tails, verifies and appends."""
    log = agentlog.open_log(tmp_path, rotate="daily")
    first = log.append("ledger/andy", "task")
    for name in ("ledger/andy/2030-01-01.jsonl", "ledger/andy/2020-01-01.jsonl.000001"):
        try:
            log.append(name, "task")
        except (InvalidStreamName, StorageError):
            pass
    log.close()
    log = agentlog.open_log(tmp_path, rotate="daily")
    assert [e.id for e in log.read("ledger/andy")] == [first.id]
    assert [e.id for e in log.tail("ledger/andy", 5)] == [first.id]
    assert log.append("ledger/andy", "task").seq == 2
    report = log.verify("ledger/andy")
    assert report.ok, report.problems


# --- modes ----------------------------------------------------------------------------------------------

def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o000])
def test_new_files_are_0600_and_directories_0700_by_default(tmp_path: Path, umask: Callable[[int], None],
                                                           mask: int) -> None:
    """Whatever the umask, every file agentlog creates is 0o600 and every directory 0o700, including the
    root, nested stream directories, daily directories and quarantine."""
    umask(mask)
    root = tmp_path / "root"
    log = agentlog.open_log(root, segment_bytes=300)
    for _ in range(3):
        log.append("team/a", "e", data={"pad": "x" * 200})
    with open(root / "logs" / "team" / "a.jsonl", "ab") as f:
        f.write(b'{"torn')
    log.append("team/a", "e")
    agentlog.open_log(root, rotate="daily").append("ledger/bo", "e")
    dirs = [root, root / "logs", root / "logs" / "team", root / "quarantine", root / "quarantine" / "team",
            root / "logs" / "ledger" / "bo"]
    files = [root / "logs" / "team" / "a.jsonl", root / "quarantine" / "team" / "a.jsonl",
             *(root / "logs" / "ledger" / "bo").iterdir()]
    assert {str(d): oct(_mode(d)) for d in dirs} == {str(d): oct(0o700) for d in dirs}
    assert {str(f): oct(_mode(f)) for f in files} == {str(f): oct(0o600) for f in files}


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_file_and_directory_modes_are_configurable(tmp_path: Path, umask: Callable[[int], None],
                                                   mask: int) -> None:
    """``file_mode`` and ``dir_mode`` set the exact modes of new files and directories (the root included),
    whatever the umask."""
    umask(mask)
    root = tmp_path / "root"
    log = agentlog.open_log(root, file_mode=0o640, dir_mode=0o750)
    log.append("team/a", "e")
    for d in (root, root / "logs", root / "logs" / "team"):
        assert oct(_mode(d)) == oct(0o750), d
    assert oct(_mode(root / "logs" / "team" / "a.jsonl")) == oct(0o640)


def test_a_sealed_segment_keeps_its_mode_and_never_changes(tmp_path: Path) -> None:
    """Rotation keeps the configured mode on the sealed segment (no chmod, so writers who do not own the
    file can rotate too), and later appends leave its bytes alone."""
    log = agentlog.open_log(tmp_path, segment_bytes=1000, file_mode=0o640)
    for i in range(6):
        log.append("s", "e", data={"i": i, "pad": "x" * 300})
    sealed = tmp_path / "logs" / "s.jsonl.000001"
    assert _mode(sealed) == 0o640
    assert _mode(tmp_path / "logs" / "s.jsonl") == 0o640
    digest = hashlib.sha256(sealed.read_bytes()).hexdigest()
    for i in range(6):
        log.append("s", "e", data={"i": i, "pad": "y" * 300})
    assert hashlib.sha256(sealed.read_bytes()).hexdigest() == digest
    assert _mode(sealed) == 0o640
    assert log.verify().ok
