"""Malformed lines met by views (002 §6.4): skipped, isolated to <root>/errors/<stream>.jsonl with the path
and line number verify reports, never twice, and the view still rendered from the good events."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import agentlog
from agentlog import StorageError
from agentlog.backends import MalformedLine
from agentlog.snapshot import COMMUNICATION, snapshot
from agentlog.summary import summarize

BAD = [b"this is not json", b"", b"[1, 2]", b'{"seq": 9, "nul": "\x00"}', b'{"cut": "in half']


def damaged(root: Path, stream: str = "conv", **kwargs: Any) -> agentlog.EventLog:
    """Four good events with the BAD lines written between them, as a broken writer would leave them."""
    log = agentlog.open_log(root, **kwargs)
    path = root / "logs" / f"{stream}.jsonl"
    for i, raw in enumerate(BAD[:3], 1):
        log.append(stream, "question", actor="alice", interaction=i, data={"content": f"good {i}"})
        with path.open("ab") as fh:
            fh.write(raw + b"\n")
    log.append(stream, "answer", actor="bob", interaction=3, data={"content": "good 4"})
    with path.open("ab") as fh:
        fh.write(BAD[3] + b"\n" + BAD[4] + b"\n")
    return log


def errors_of(root: Path, stream: str = "conv") -> list[dict[str, Any]]:
    return [json.loads(line) for line in (root / "errors" / f"{stream}.jsonl").read_text().splitlines()]


def test_a_snapshot_isolates_malformed_lines_at_the_lines_verify_reports(tmp_path: Path) -> None:
    log = damaged(tmp_path)
    result = snapshot(log, "conv", keep=5)
    comm = Path(result.communication).read_text()
    assert all(f"good {i}" in comm for i in range(1, 5)), "the good events must still be rendered"
    assert result.malformed == 5 and result.errors == str(tmp_path / "errors" / "conv.jsonl")
    records = errors_of(tmp_path)
    problems = [p for p in log.verify("conv").problems if p.what.startswith("malformed line")]
    assert [(r["path"], r["line"]) for r in records] == [(p.path, p.line) for p in problems]
    assert [r["line"] for r in records] == [2, 4, 6, 8, 9]
    assert [base64.b64decode(r["raw_b64"]) for r in records] == BAD
    assert [r["after_seq"] for r in records] == [1, 2, 3, 4, 4]
    assert {r["views"] == ["snapshot"] and r["stream"] == "conv" for r in records} == {True}
    assert records[0]["reason"].startswith("not valid JSON") and records[1]["reason"] == "empty line"
    assert records[0]["sha256"] == hashlib.sha256(BAD[0]).hexdigest() and records[0]["text"] == BAD[0].decode()
    assert "NUL" in records[3]["reason"] and "\\x00" not in records[3]["text"] and "\x00" in records[3]["text"]
    assert oct((tmp_path / "errors" / "conv.jsonl").stat().st_mode & 0o777) == "0o600"


def test_rendering_again_and_from_another_view_never_adds_a_line_twice(tmp_path: Path) -> None:
    log = damaged(tmp_path)
    errors = tmp_path / "errors" / "conv.jsonl"
    first = snapshot(log, "conv")
    assert first.errors_added == 5
    before = errors.read_bytes()
    for _ in range(5):
        again = snapshot(log, "conv")
        assert again.malformed == 5 and again.errors_added == 0
    assert errors.read_bytes() == before, "re-rendering changed the error file"
    summary, _path = summarize(log, "conv")
    assert summary["malformed"] == {"lines": 5, "errors": str(errors)}
    assert summary["events"] == 4
    records = errors_of(tmp_path)
    assert len(records) == 5 and {tuple(r["views"]) for r in records} == {("snapshot", "summary")}
    settled = errors.read_bytes()
    snapshot(log, "conv")
    summarize(log, "conv")
    assert errors.read_bytes() == settled
    # A new malformed line is added once, after the others; the old records keep when they were first seen.
    log.append("conv", "note", actor="carol")
    with (tmp_path / "logs" / "conv.jsonl").open("ab") as fh:
        fh.write(b"one more bad line\n")
    assert snapshot(log, "conv").errors_added == 1
    later = errors_of(tmp_path)
    assert len(later) == 6 and later[-1]["after_seq"] == 5 and later[-1]["views"] == ["snapshot"]
    assert [r["first_seen"] for r in later[:5]] == [r["first_seen"] for r in records]


def test_identical_bad_lines_are_each_isolated(tmp_path: Path) -> None:
    log = agentlog.open_log(tmp_path)
    log.append("conv", "q", interaction=1)
    with (tmp_path / "logs" / "conv.jsonl").open("ab") as fh:
        fh.write(b"\n\n\n")
    for _ in range(3):
        snapshot(log, "conv")
    assert [(r["line"], r["after_seq"]) for r in errors_of(tmp_path)] == [(2, 1), (3, 1), (4, 1)]


def test_a_record_follows_its_line_into_a_sealed_segment(tmp_path: Path) -> None:
    """Rotation renames the segment holding the bad line: the record's path and line move with it (still what
    verify reports), and it is not isolated a second time under the new name."""
    log = agentlog.open_log(tmp_path, segment_bytes=1500)
    log.append("conv", "q", actor="a", interaction=1, data={"content": "x" * 100})
    with (tmp_path / "logs" / "conv.jsonl").open("ab") as fh:
        fh.write(b"garbage\n")
    snapshot(log, "conv")
    (record,) = errors_of(tmp_path)
    assert record["path"] == str(tmp_path / "logs" / "conv.jsonl") and record["line"] == 2
    for i in range(2, 20):
        log.append("conv", "q", actor="a", interaction=i, data={"content": "x" * 100})
    assert log.stat("conv").segments > 2
    result = snapshot(log, "conv")
    assert result.malformed == 1 and result.errors_added == 0
    (moved,) = errors_of(tmp_path)
    (problem,) = log.verify("conv").problems
    assert (moved["path"], moved["line"]) == (problem.path, problem.line)
    assert moved["path"] == str(tmp_path / "logs" / "conv.jsonl.000001")
    assert moved["first_seen"] == record["first_seen"]


def test_a_repaired_log_clears_its_records(tmp_path: Path) -> None:
    log = damaged(tmp_path)
    snapshot(log, "conv")
    path = tmp_path / "logs" / "conv.jsonl"
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(line for line in lines if line != b"this is not json"))
    assert snapshot(log, "conv").malformed == 4
    assert [base64.b64decode(r["raw_b64"]) for r in errors_of(tmp_path)] == BAD[1:]
    good = [line for line in path.read_bytes().split(b"\n") if line.startswith(b'{"seq":') and b"\0" not in line]
    path.write_bytes(b"".join(line + b"\n" for line in good))
    assert log.verify("conv").ok
    result = snapshot(log, "conv")
    assert result.malformed == 0 and result.errors is None
    assert not (tmp_path / "errors" / "conv.jsonl").exists()


def test_streams_with_slashes_mirror_the_log_and_symlinks_are_refused(tmp_path: Path) -> None:
    log = damaged(tmp_path / "a", stream="team/conv")
    result = snapshot(log, "team/conv")
    assert result.errors == str(tmp_path / "a" / "errors" / "team" / "conv.jsonl")
    assert len(errors_of(tmp_path / "a", "team/conv")) == 5
    log = damaged(tmp_path / "b")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "b" / "errors").symlink_to(outside)
    with pytest.raises(StorageError, match="symlink"):
        snapshot(log, "conv")
    assert list(outside.iterdir()) == []


def test_a_huge_bad_line_is_isolated_in_part_with_the_hash_of_the_whole(tmp_path: Path) -> None:
    from agentlog._viewfile import ISOLATE_BYTES

    log = agentlog.open_log(tmp_path)
    log.append("conv", "q", interaction=1)
    huge = b"{" + b"z" * (ISOLATE_BYTES * 2)
    with (tmp_path / "logs" / "conv.jsonl").open("ab") as fh:
        fh.write(huge + b"\n")
    snapshot(log, "conv")
    (record,) = errors_of(tmp_path)
    assert record["size"] == len(huge) and record["truncated"] is True
    assert record["sha256"] == hashlib.sha256(huge).hexdigest()
    assert base64.b64decode(record["raw_b64"]) == huge[:ISOLATE_BYTES] and len(record["text"]) == 200


def test_read_hands_malformed_lines_to_on_malformed_instead_of_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = damaged(tmp_path)
    # A line from a shell writer (no seq) counts as an event: the bad line after it comes after seq 6.
    with (tmp_path / "logs" / "conv.jsonl").open("ab") as fh:
        fh.write(b'{"type": "shell", "content": "from flock"}\n}{\n')
    met: list[MalformedLine] = []
    with caplog.at_level(logging.WARNING, logger="agentlog"):
        events = list(log.read("conv", on_malformed=met.append))
    assert "malformed" not in caplog.text
    assert [ev.seq for ev in events] == [1, 2, 3, 4, 5]
    assert [(m.line, m.after_seq, m.raw) for m in met] == [
        (2, 1, BAD[0]), (4, 2, BAD[1]), (6, 3, BAD[2]), (8, 4, BAD[3]), (9, 4, BAD[4]), (11, 5, b"}{")]
    data = (tmp_path / "logs" / "conv.jsonl").read_bytes()
    assert all(data[m.offset:m.offset + len(m.raw) + 1] == m.raw + b"\n" for m in met)
    assert {m.path for m in met} == {str(tmp_path / "logs" / "conv.jsonl")}
    # A read that starts later reads the segment holding its start from the top: the same lines, numbered
    # the same way. A sealed segment wholly before it is not read, so its lines are not met.
    assert _met(log, after=4) == met
    with caplog.at_level(logging.WARNING, logger="agentlog"):
        list(log.read("conv"))
    assert f"{tmp_path / 'logs' / 'conv.jsonl'}:2: skipping malformed line" in caplog.text


def _met(log: agentlog.EventLog, after: int) -> list[MalformedLine]:
    met: list[MalformedLine] = []
    list(log.read("conv", after=after, on_malformed=met.append))
    return met


def test_a_memory_log_accepts_on_malformed_and_has_nothing_to_isolate(tmp_path: Path) -> None:
    log = agentlog.open_log("memory:")
    log.append("conv", "q", interaction=1)
    met: list[MalformedLine] = []
    assert [ev.seq for ev in log.read("conv", on_malformed=met.append)] == [1]
    assert met == []
    result = snapshot(log, "conv", out=tmp_path / "out")
    assert result.malformed == 0 and result.errors is None and not (tmp_path / "errors").exists()


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentlog", "--root", str(root), *args], capture_output=True,
                          text=True, timeout=60)


def test_the_cli_warns_once_naming_the_error_file(tmp_path: Path) -> None:
    damaged(tmp_path)
    errors = tmp_path / "errors" / "conv.jsonl"
    res = cli(tmp_path, "snapshot", "conv")
    assert res.returncode == 0 and "through seq 4" in res.stdout
    warnings = res.stderr.strip().splitlines()
    assert warnings == [f"warning: skipped 5 malformed lines; isolated to {errors} (see 'agentlog verify')"]
    assert b"good 4" in (tmp_path / "snapshots" / "conv" / COMMUNICATION).read_bytes()
    res = cli(tmp_path, "summary", "conv", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["malformed"] == {"lines": 5, "errors": str(errors)}
    assert res.stderr.strip().splitlines() == warnings
    res = cli(tmp_path, "verify", "conv")
    assert res.returncode == 1 and f"{tmp_path / 'logs' / 'conv.jsonl'}:2: malformed line" in res.stdout + res.stderr


def test_an_older_read_does_not_drop_a_line_a_newer_one_isolated(tmp_path: Path) -> None:
    """Two views at once: the one that read first merges last. A bad line appended between their reads is
    not in the first read, and must not be dropped as if the log had been repaired."""
    from agentlog._viewfile import MalformedLines

    log = agentlog.open_log(tmp_path)
    log.append("conv", "q", interaction=1)
    older = MalformedLines(str(tmp_path), "conv", "summary")
    assert [ev.seq for ev in log.read("conv", on_malformed=older)] == [1]
    with (tmp_path / "logs" / "conv.jsonl").open("ab") as fh:
        fh.write(b"appended meanwhile\n")
    newer = MalformedLines(str(tmp_path), "conv", "snapshot")
    list(log.read("conv", on_malformed=newer))
    assert newer.isolate(through_seq=1) is not None
    assert older.isolate(through_seq=1) is None
    assert [r["text"] for r in errors_of(tmp_path)] == ["appended meanwhile"]


def test_the_task_graph_skips_and_isolates_a_malformed_line(tmp_path: Path) -> None:
    """tasks.graph.json is a view too: a bad line in the tasks stream is isolated and the graph still folds."""
    from agentlog.tasks import TaskGraph

    log = agentlog.open_log(tmp_path, spool_dir=False)
    graph = TaskGraph(log)
    graph.create_task({"id": "a"})
    with (tmp_path / "logs" / "tasks.jsonl").open("ab") as fh:
        fh.write(b'{"seq": 2, "type": "task_claimed", "data": {"id": "a"\n')
    graph.create_task({"id": "b", "dependency_ids": ["a"]})
    assert [t["id"] for t in graph.rebuild()["tasks"]] == ["a", "b"]
    records = errors_of(tmp_path, "tasks")
    assert [(r["line"], r["views"]) for r in records] == [(2, ["tasks"])]
    assert graph.get("a")["status"] == "open", "the torn claim must not count"


def test_an_agents_status_skips_and_isolates_a_malformed_ledger_line(tmp_path: Path) -> None:
    """status.json is a view of the ledger: a bad line is isolated and the status still folds the good ones."""
    from agentlog.ledger import open_ledger

    with open_ledger(tmp_path) as ledger:
        ledger.write("alice", "task_start", task="T-1", data={"command": ["make"]})
        (day,) = (tmp_path / "logs" / "ledger" / "alice").iterdir()
        with day.open("ab") as fh:
            fh.write(b"not json at all\n")
        ledger.write("alice", "task_result", task="T-1", data={"exit_code": 0})
        status = ledger.status("alice", rebuild=True)
        assert (status["state"], status["through_seq"]) == ("idle", 2)
    records = errors_of(tmp_path, "ledger/alice")
    assert [(r["line"], r["views"], r["path"]) for r in records] == [(2, ["status"], str(day))]
