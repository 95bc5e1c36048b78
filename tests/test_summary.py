"""Rolling summaries (hashing, grouping, persistence, pluggable summarisers) and the root scaffold."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import agentlog
from agentlog import CorruptLog, StorageError
from agentlog.event import Event
from agentlog.scaffold import init_root
from agentlog.summary import BULLETS_PER_TYPE, persist_summary, rolling_summary, summarize


def chat(log: agentlog.EventLog, stream: str = "conv", turns: int = 8) -> None:
    for i in range(turns):
        log.append(stream, "question", actor="alice", interaction=i, data={"content": f"question {i}?"})
        log.append(stream, "answer", actor="bob", interaction=i, data={"content": f"answer {i}\n  spread  out"})
    log.append(stream, "decision", actor="carol", data={"choice": "ship"})


def test_the_summary_groups_by_type_counts_and_covers(tmp_path: Path) -> None:
    log = agentlog.open_log(tmp_path)
    chat(log)
    summary = rolling_summary("conv", log.read("conv"))
    md = summary["markdown"]
    assert summary["counts"] == {"answer": 8, "decision": 1, "question": 8} and summary["events"] == 17
    assert summary["covers"]["first_seq"] == 1 and summary["covers"]["last_seq"] == 17
    assert [line for line in md.splitlines() if line.startswith("## ")] == [
        "## answer (8)", "## decision (1)", "## question (8)"]
    answers = md[md.index("## answer"):md.index("## decision")]
    bullets = [line for line in answers.splitlines() if line.startswith("- #")]
    assert len(bullets) == BULLETS_PER_TYPE and bullets[-1] == "- #16 bob: answer 7 spread out"
    assert "- ... 3 earlier" in answers
    assert '- #17 carol: {"choice":"ship"}' in md
    assert summary["summary_ref"] == hashlib.sha256(md.encode()).hexdigest()
    assert summary["summariser"] == "agentlog.summary.deterministic"


def test_the_same_events_give_the_same_ref_and_any_change_a_new_one(tmp_path: Path) -> None:
    log = agentlog.open_log(tmp_path)
    chat(log)
    events = list(log.read("conv"))
    assert rolling_summary("conv", events) == rolling_summary("conv", list(log.read("conv")))
    log.append("conv", "answer", actor="bob", data={"content": "one more"})
    assert rolling_summary("conv", log.read("conv"))["summary_ref"] != rolling_summary("conv", events)["summary_ref"]


def test_dicts_from_the_seed_functions_are_summarised_like_events(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTLOG_ROOT", str(tmp_path))
    agentlog.append_event({"conversation_id": "c1", "type": "question", "content": "what now?", "actor": "a"})
    summary = rolling_summary("c1", agentlog.tail("c1"))
    assert "- #1 a: what now?" in summary["markdown"] and summary["counts"] == {"question": 1}


def test_content_kept_top_level_by_the_seed_api_is_summarised_from_the_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTLOG_ROOT", str(tmp_path))
    agentlog.append_event({"conversation_id": "c1", "type": "question", "content": "what now?", "actor": "a"})
    summary, _path = summarize(agentlog.open_log(tmp_path), "c1", persist=False)
    assert "- #1 a: what now?" in summary["markdown"]


def test_persist_writes_the_latest_and_an_immutable_copy_named_by_its_hash(tmp_path: Path) -> None:
    log = agentlog.open_log(tmp_path)
    chat(log, "team/conv")
    first = rolling_summary("team/conv", log.read("team/conv"))
    path = persist_summary("team/conv", first, root=tmp_path)
    assert path == str(tmp_path / "summaries" / "team" / "conv.md")
    copy = tmp_path / "summaries" / "sha256" / f"{first['summary_ref']}.md"
    assert Path(path).read_text() == copy.read_text() == first["markdown"]
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == first["summary_ref"]
    log.append("team/conv", "answer", actor="bob", data={"content": "later"})
    second, second_path = summarize(log, "team/conv")
    assert second_path == path and "later" in Path(path).read_text()
    assert copy.read_text() == first["markdown"], "an immutable copy changed"
    assert (tmp_path / "summaries" / "sha256" / f"{second['summary_ref']}.md").exists()
    assert oct(copy.stat().st_mode & 0o777) == "0o600"


def test_a_summary_edited_after_it_was_made_or_a_damaged_copy_is_refused(tmp_path: Path) -> None:
    summary = rolling_summary("c", [Event(seq=1, id="x", ts=None, stream="c", type="t")])
    with pytest.raises(ValueError, match="summary_ref"):
        persist_summary("c", {**summary, "markdown": summary["markdown"] + "forged"}, root=tmp_path)
    with pytest.raises(agentlog.InvalidStreamName):
        persist_summary("../escape", summary, root=tmp_path)
    persist_summary("c", summary, root=tmp_path)
    copy = tmp_path / "summaries" / "sha256" / f"{summary['summary_ref']}.md"
    copy.write_text("tampered")
    with pytest.raises(CorruptLog):
        persist_summary("c", summary, root=tmp_path)


def test_a_stream_under_sha256_cannot_overwrite_an_immutable_copy(tmp_path: Path) -> None:
    victim = rolling_summary("c", [Event(seq=1, id="x", ts=None, stream="c", type="t")])
    persist_summary("c", victim, root=tmp_path)
    copy = tmp_path / "summaries" / "sha256" / f"{victim['summary_ref']}.md"
    before = copy.read_bytes()
    other = rolling_summary("x", [Event(seq=1, id="y", ts=None, stream="x", type="other")])
    with pytest.raises(ValueError, match="immutable"):
        persist_summary(f"sha256/{victim['summary_ref']}", other, root=tmp_path)
    assert copy.read_bytes() == before
    assert persist_summary("sha256", other, root=tmp_path) == str(tmp_path / "summaries" / "sha256.md")


def test_other_writers_lines_are_summarised_safely(tmp_path: Path) -> None:
    """A shell writer's lines: no type, a newline in the actor, timestamps with offsets. The summary keeps
    one line per label, counts the untyped line, and orders times as instants, not as strings."""
    log = agentlog.open_log(tmp_path)
    log.append("conv", "question", actor="alice", data={"content": "q"})
    own_ts = next(iter(log.read("conv"))).ts
    assert own_ts is not None
    with (tmp_path / "logs" / "conv.jsonl").open("ab") as fh:
        fh.write(b'{"actor": "sh\\n## forged (9)", "timestamp": "2000-01-01T05:00:00+05:00", "content": "x"}\n')
        fh.write(b'{"type": "note", "timestamp": "2100-01-01T00:00:00-01:00"}\n')
    summary = rolling_summary("conv", log.read("conv"))
    md = summary["markdown"]
    assert [line for line in md.splitlines() if line.startswith("## ")] == [
        "## (no type) (1)", "## note (1)", "## question (1)"]
    assert summary["counts"] == {"": 1, "note": 1, "question": 1}
    assert summary["covers"]["first_ts"] == "2000-01-01T05:00:00+05:00"
    assert summary["covers"]["last_ts"] == "2100-01-01T00:00:00-01:00"
    assert "- #2 sh ## forged (9): x" in md, "content kept top-level (as 002's writer and append_event do)"


def shout(conversation_id: str, events: Any) -> str:
    return f"{conversation_id.upper()}: {len(events)} EVENTS\n"


def test_the_summariser_is_pluggable(tmp_path: Path) -> None:
    log = agentlog.open_log(tmp_path)
    chat(log, turns=2)
    summary = rolling_summary("conv", log.read("conv"), summariser=shout)
    assert summary["markdown"] == "CONV: 5 EVENTS\n" and summary["summariser"].endswith("shout")
    assert summary["counts"] == {"answer": 2, "decision": 1, "question": 2}
    with pytest.raises(TypeError, match="markdown"):
        rolling_summary("conv", [], summariser=lambda c, e: None)  # type: ignore[arg-type, return-value]


def cli(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentlog", "--root", str(root), *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_the_summary_command(tmp_path: Path) -> None:
    chat(agentlog.open_log(tmp_path / "root"), turns=3)
    res = cli(tmp_path / "root", "summary", "conv")
    assert res.returncode == 0 and res.stdout.strip() == str(tmp_path / "root" / "summaries" / "conv.md")
    record = json.loads(cli(tmp_path / "root", "summary", "conv", "--json", "--no-write").stdout)
    assert record["path"] is None and record["counts"]["question"] == 3
    assert record["summary_ref"] == hashlib.sha256(record["markdown"].encode()).hexdigest()
    (tmp_path / "plug.py").write_text("def summarise(cid, events):\n    return f'{cid} has {len(events)}\\n'\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    res = cli(tmp_path / "root", "summary", "conv", "--no-write", "--summariser", "plug:summarise", env=env)
    assert res.returncode == 0 and res.stdout == "conv has 7\n"
    res = cli(tmp_path / "root", "summary", "conv", "--summariser", "plug", env=env)
    assert res.returncode == 2 and "MODULE:FUNCTION" in res.stderr
    assert cli(tmp_path / "root", "summary", "missing").returncode == 1


# --- scaffold ------------------------------------------------------------------------------------------------


def snapshot_tree(root: Path) -> dict[str, tuple[bytes, int]]:
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.stat()
        out[str(path.relative_to(root))] = (path.read_bytes() if path.is_file() else b"", st.st_mtime_ns)
    return out


def test_init_creates_the_layout_and_running_it_again_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "data"
    created = init_root(root)
    assert sorted(created) == sorted(str(p) for p in [root, root / "logs", root / "summaries", root / "archive",
                                                       root / "tasks.graph.json"])
    assert json.loads((root / "tasks.graph.json").read_text()) == {"tasks": []}
    assert oct((root / "tasks.graph.json").stat().st_mode & 0o777) == "0o600"
    agentlog.open_log(root).append("conv", "note")
    (root / "tasks.graph.json").write_text('{"tasks": [{"id": "t1"}]}')
    before = snapshot_tree(root)
    assert init_root(root) == []
    assert snapshot_tree(root) == before, "init changed or overwrote something"


def test_init_from_the_cli_and_from_many_processes_at_once(tmp_path: Path) -> None:
    root = tmp_path / "r"
    procs = [subprocess.Popen([sys.executable, "-m", "agentlog", "init", str(root), "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(6)]
    created: list[str] = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        created += json.loads(out)["created"]
    # Each path is reported once, by the process that made it.
    assert sorted(created) == sorted(str(p) for p in [root, root / "logs", root / "summaries", root / "archive",
                                                      root / "tasks.graph.json"])
    assert json.loads((root / "tasks.graph.json").read_text()) == {"tasks": []}
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]
    res = cli(tmp_path, "init", str(root))
    assert res.returncode == 0 and "nothing changed" in res.stdout


def test_init_does_not_follow_a_symlink_planted_at_the_graph(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    target = tmp_path / "victim"
    (root / "tasks.graph.json").symlink_to(target)
    init_root(root)
    assert not target.exists() and (root / "tasks.graph.json").is_symlink()
    other = tmp_path / "r2"
    other.mkdir()
    (other / "logs").symlink_to(tmp_path)
    with pytest.raises(StorageError):
        init_root(other)
