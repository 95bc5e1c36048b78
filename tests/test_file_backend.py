"""File-backend behaviour beyond the shared contract: layout, rotation, recovery, foreign writers."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from agentlog import open_log


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_stream_is_plain_jsonl(tmp_path: Path) -> None:
    """Each event is one JSON line in logs/<stream>.jsonl, readable without agentlog."""
    log = open_log(tmp_path)
    log.append("conv-7", "question", data={"content": "hi"}, actor="a")
    log.append("ledger/andy", "heartbeat")
    rows = lines(tmp_path / "logs" / "conv-7.jsonl")
    assert rows[0]["seq"] == 1 and rows[0]["data"] == {"content": "hi"} and rows[0]["stream"] == "conv-7"
    assert (tmp_path / "logs" / "ledger" / "andy.jsonl").read_bytes().endswith(b"\n")


def test_size_rotation_seals_segments_in_order(tmp_path: Path) -> None:
    """Passing segment_bytes seals the active file as <stream>.jsonl.NNNNNN, and reads span all segments."""
    log = open_log(tmp_path, segment_bytes=600)
    for i in range(20):
        log.append("s", "t", data={"i": i, "pad": "x" * 100})
    logs = tmp_path / "logs"
    sealed = sorted(p.name for p in logs.iterdir() if p.name != "s.jsonl")
    assert len(sealed) >= 3 and sealed[0] == "s.jsonl.000001"
    for name in sealed:
        assert (logs / name).stat().st_size <= 600
    assert [e.data["i"] for e in log.read("s")] == list(range(20))
    assert [e.seq for e in log.read("s", after=17)] == [18, 19, 20]
    assert [e.seq for e in log.tail("s", 4)] == [17, 18, 19, 20]
    assert log.stat("s").segments == len(sealed) + 1
    assert log.verify().ok


def test_a_batch_larger_than_a_segment_is_written_whole(tmp_path: Path) -> None:
    """A batch bigger than segment_bytes goes into one fresh segment rather than being split."""
    log = open_log(tmp_path, segment_bytes=300)
    log.append("s", "t")
    evs = log.append_many("s", [{"type": "t", "data": {"pad": "x" * 200}}] * 3)
    assert [e.seq for e in evs] == [2, 3, 4]
    assert len(lines(tmp_path / "logs" / "s.jsonl")) == 3


def test_daily_rotation_starts_a_new_date_file(tmp_path: Path) -> None:
    """A daily stream whose newest segment is from an earlier date seals it and continues seq today."""
    day_dir = tmp_path / "logs" / "ledger" / "andy"
    day_dir.mkdir(parents=True)
    old = {"seq": 1, "id": "x", "ts": "2020-01-01T00:00:00.000000Z", "stream": "ledger/andy", "type": "t",
           "data": {}}
    (day_dir / "2020-01-01.jsonl").write_text(json.dumps(old) + "\n")
    log = open_log(tmp_path)  # the layout on disk wins over the rotate option
    ev = log.append("ledger/andy", "heartbeat")
    today = ev.ts[:10] + ".jsonl"
    assert ev.seq == 2
    assert sorted(p.name for p in day_dir.iterdir()) == ["2020-01-01.jsonl", today]
    assert [e.seq for e in log.read("ledger/andy")] == [1, 2]
    assert log.streams() == ["ledger/andy"]


def test_new_daily_stream_uses_date_named_files(tmp_path: Path) -> None:
    """With rotate="daily" a new stream is written to logs/<stream>/YYYY-MM-DD.jsonl."""
    log = open_log(tmp_path, rotate="daily")
    ev = log.append("ledger/andy", "task_start")
    assert (tmp_path / "logs" / "ledger" / "andy" / f"{ev.ts[:10]}.jsonl").exists()
    assert open_log(tmp_path).append("ledger/andy", "task_result").seq == 2


def test_ts_never_decreases_when_the_clock_is_behind_the_log(tmp_path: Path) -> None:
    """If the last event carries a later ts than the wall clock, new events reuse that ts."""
    log = open_log(tmp_path)
    log.append("s", "t")
    path = tmp_path / "logs" / "s.jsonl"
    future = {"seq": 2, "id": "y", "ts": "2999-01-01T00:00:00.000000Z", "stream": "s", "type": "t", "data": {}}
    with path.open("a") as f:
        f.write(json.dumps(future) + "\n")
    log2 = open_log(tmp_path)
    assert log2.append("s", "t").ts == "2999-01-01T00:00:00.000000Z"
    assert log2.verify().ok


def test_rotation_interrupted_after_rename_is_recovered(tmp_path: Path) -> None:
    """With the active file renamed but not recreated, the next append creates it and continues seq."""
    log = open_log(tmp_path)
    log.append("s", "t")
    logs = tmp_path / "logs"
    os.rename(logs / "s.jsonl", logs / "s.jsonl.000001")
    fresh = open_log(tmp_path)
    assert fresh.append("s", "t").seq == 2
    assert [e.seq for e in fresh.tail("s", 5)] == [1, 2]


def test_lines_from_a_shell_writer_get_inferred_seqs(tmp_path: Path) -> None:
    """Lines without seq (002's log_event.sh) are read as events numbered by position, and seq stays gapless."""
    log = open_log(tmp_path)
    log.append("s", "question")
    path = tmp_path / "logs" / "s.jsonl"
    with path.open("a") as f:
        f.write('{"interaction":1,"actor":"Agent A","type":"answer","content":"hi",'
                '"timestamp":"2026-01-01T00:00:00Z"}\n')
    assert [e.seq for e in log.tail("s", 1)] == [2]
    assert log.append("s", "followup").seq == 3
    events = list(log.read("s"))
    assert [(e.seq, e.type) for e in events] == [(1, "question"), (2, "answer"), (3, "followup")]
    assert events[1].extra["content"] == "hi" and events[1].actor == "Agent A"
    report = log.verify()
    assert report.ok and len(report.warnings) == 1 and "another writer" in report.warnings[0].what


def test_malformed_lines_are_skipped_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A garbage line is skipped by readers with a warning naming path and line, and verify reports it."""
    log = open_log(tmp_path)
    log.append("s", "t")
    path = tmp_path / "logs" / "s.jsonl"
    with path.open("ab") as f:
        f.write(b"this is not json\n")
        f.write(b'{"seq": 2, "nul": "\x00"}\n')
    log2 = open_log(tmp_path)
    log2.append("s", "t")
    with caplog.at_level(logging.WARNING, logger="agentlog"):
        assert [e.seq for e in log2.read("s")] == [1, 2]
    assert f"{path}:2:" in caplog.text
    report = log2.verify()
    assert not report.ok
    assert [(p.line, p.what.split(":")[0]) for p in report.problems] == [(2, "malformed line"),
                                                                           (3, "malformed line")]


def test_verify_finds_gaps_and_duplicates(tmp_path: Path) -> None:
    """verify reports a seq gap and a repeated seq with their line numbers."""
    path = tmp_path / "logs" / "s.jsonl"
    path.parent.mkdir(parents=True)
    rows = [{"seq": s, "id": f"i{s}", "ts": "2026-01-01T00:00:00.000000Z", "stream": "s", "type": "t", "data": {}}
            for s in (1, 2, 4, 4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = open_log(tmp_path).verify()
    assert [(p.line, "gap" in p.what) for p in report.problems] == [(3, True), (4, False)]
    assert report.counts == {"s": 4}


def test_reading_a_missing_root_creates_nothing(tmp_path: Path) -> None:
    """Queries on a root that does not exist return nothing and leave no directory behind."""
    root = tmp_path / "absent"
    log = open_log(root)
    assert log.streams() == [] and log.tail("s") == [] and list(log.read("s")) == []
    assert log.verify().ok
    assert not root.exists()


def test_options_are_validated(tmp_path: Path) -> None:
    """Nonsense options raise ValueError before anything is created."""
    for kwargs in ({"durability": "maybe"}, {"rotate": "weekly"}, {"segment_bytes": 0},
                   {"file_mode": 0o400}, {"lock_timeout": -1}, {"max_event_bytes": 0}):
        with pytest.raises(ValueError):
            open_log(tmp_path / "r", **kwargs)
    assert not (tmp_path / "r").exists()
