"""The seed-compatible module functions: 004's query helpers and 000's safe_log_event."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

import agentlog
from agentlog import InvalidEvent, LockTimeout, StorageError


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AGENTLOG_ROOT", str(tmp_path / "root"))
    return tmp_path / "root"


def test_append_event_and_tail_use_conversation_id(root: Path) -> None:
    """append_event writes to logs/<conversation_id>.jsonl and returns the id; tail returns 004-shaped dicts."""
    ids = [agentlog.append_event({"conversation_id": "c1", "type": "question", "content": f"q{i}",
                                  "visibility": "public"}) for i in range(3)]
    got = agentlog.tail("c1", limit=2)
    assert [e["id"] for e in got] == ids[1:]
    assert got[0]["conversation_id"] == "c1" and got[0]["timestamp"] == got[0]["ts"]
    assert got[0]["content"] == "q1" and got[0]["visibility"] == "public"
    assert (root / "logs" / "c1.jsonl").exists()


def test_since_and_by_type_span_conversations(root: Path) -> None:
    """since and by_type look across every conversation and return lists of dicts."""
    agentlog.append_event({"conversation_id": "c1", "type": "question", "visibility": "public"})
    cut = agentlog.tail("c1", 1)[0]["timestamp"]
    agentlog.append_event({"conversation_id": "c2", "type": "answer", "visibility": "private"})
    assert [e["conversation_id"] for e in agentlog.since(cut)] == ["c1", "c2"]
    assert [e["type"] for e in agentlog.by_type(["answer"], visibility="private")] == ["answer"]
    assert agentlog.by_type(["answer"], visibility="public") == []


def test_append_event_refuses_bad_input(root: Path) -> None:
    """A missing conversation_id, a missing type or a non-dict is refused before anything is written."""
    for bad in ({"type": "t"}, {"conversation_id": "c"}, ["not", "a", "dict"],
                {"conversation_id": "../escape", "type": "t"}):
        with pytest.raises(ValueError):
            agentlog.append_event(bad)  # type: ignore[arg-type]
    assert not root.exists()


def test_default_root_is_dot_agentlog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without AGENTLOG_ROOT the default root is ./.agentlog in the working directory."""
    monkeypatch.delenv("AGENTLOG_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    agentlog.append_event({"conversation_id": "c", "type": "t"})
    assert (tmp_path / ".agentlog" / "logs" / "c.jsonl").exists()


def test_safe_log_event_appends_one_line(tmp_path: Path) -> None:
    """safe_log_event appends exactly the given object as one line, creating the file 0600."""
    path = tmp_path / "audit" / "log.jsonl"
    agentlog.safe_log_event({"a": 1}, path)
    agentlog.safe_log_event({"b": "x" * 20000}, str(path))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [{"a": 1}, {"b": "x" * 20000}]
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_safe_log_event_repairs_a_torn_tail(tmp_path: Path) -> None:
    """A fragment left by a dead writer is quarantined beside the file and the new line starts fresh."""
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"ok": 1}\n{"torn": ')
    agentlog.safe_log_event({"next": 2}, path)
    assert path.read_text() == '{"ok": 1}\n{"next":2}\n'
    quarantined = json.loads((tmp_path / "log.jsonl.quarantine.jsonl").read_text())
    assert quarantined["offset"] == 10 and quarantined["reason"] == "torn tail"


def test_safe_log_event_refuses_non_json_and_symlinks(tmp_path: Path) -> None:
    """NaN is refused before writing, and a symlink at the log path is never followed."""
    with pytest.raises(InvalidEvent):
        agentlog.safe_log_event({"x": float("nan")}, tmp_path / "log.jsonl")
    assert not (tmp_path / "log.jsonl").exists()
    target = tmp_path / "target"
    target.write_text("keep\n")
    (tmp_path / "link.jsonl").symlink_to(target)
    with pytest.raises(StorageError):
        agentlog.safe_log_event({"x": 1}, tmp_path / "link.jsonl")
    assert target.read_text() == "keep\n"


def test_errors_pickle_and_keep_their_context() -> None:
    """Errors cross process boundaries with their message, path, errno and wait time intact."""
    err = LockTimeout("timed out", path="/x/y.jsonl", waited=1.5)
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, TimeoutError) and isinstance(back, StorageError) and isinstance(back, OSError)
    assert (back.path, back.waited, str(back)) == ("/x/y.jsonl", 1.5, str(err))
    storage = StorageError("write failed", path="/p", errno=28)
    assert "ENOSPC" in str(storage) and "/p" in str(storage)
    assert pickle.loads(pickle.dumps(storage)).errno == 28
