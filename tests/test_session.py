"""Session summaries: an agent's ledger as deterministic markdown under agents/<agent>/sessions/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentlog import AgentlogError
from agentlog.ledger import Ledger, open_ledger
from agentlog.session import render_session, session_file_name, session_summary, summarise


@pytest.fixture
def led(tmp_path: Path) -> Ledger:
    return open_ledger(tmp_path / "root", spool_dir=False)


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AGENTLOG_ROOT"}
    return subprocess.run([sys.executable, "-m", "agentlog", "--root", str(root), *args], capture_output=True,
                          text=True, timeout=60, env=env, stdin=subprocess.DEVNULL, check=False)


def a_session(led: Ledger) -> None:
    led.write("ann", "task_start", task="T-1", data={"command": ["make", "test"], "cwd": "/w"})
    led.heartbeat("ann", next_due=30, task="T-1")
    led.write("ann", "task_result", task="T-1", data={"exit_code": 0, "duration_s": 1.5,
                                                      "files_touched": ["src/a.py", "README.md"]})
    led.write("ann", "task_start", task="T-2", data={"command": ["sh", "-c", "echo '|' `x`"]})
    led.write("ann", "task_result", task="T-2", data={"exit_code": 137, "signal": 9, "duration_s": 0.25,
                                                      "files_touched": ["src/a.py"], "files_touched_truncated": True})
    led.write("ann", "error", task="T-2", data={"message": "sh was killed by signal 9 (SIGKILL)", "kind": "signal"})
    led.write("ann", "task_start", task="T-3", data={"command": ["sleep", "1000"]})


def test_a_summary_pairs_tasks_and_lists_errors_and_files(led: Ledger) -> None:
    a_session(led)
    summary = session_summary(led, "ann")
    assert summary.path is not None
    path = Path(summary.path)
    assert path.parent == Path(led.log.root) / "agents" / "ann" / "sessions"
    assert path.read_text() == summary.markdown
    first = next(iter(led.log.read("ledger/ann")))
    stamp = first.ts.replace("-", "").replace(":", "")
    assert path.name == f"{stamp}-7.md"
    assert [(t.task, t.exit_code, t.outcome) for t in summary.tasks] == \
        [("T-1", 0, "ok"), ("T-2", 137, "failed"), ("T-3", None, "unfinished")]
    assert summary.files_touched == {"README.md": ["T-1"], "src/a.py": ["T-1", "T-2"]}
    md = summary.markdown
    assert md.startswith("# Session summary: ann\n")
    assert "- Tasks: 3 (1 ok, 1 failed, 1 unfinished); total duration 1.750 s" in md
    assert "| `make test` |" in md and "1.500 s" in md and "137 (signal 9)" in md and "running or interrupted" in md
    assert "``sh -c 'echo '\"'\"'\\|'\"'\"' `x`'``" in md, "backticks and pipes cannot break the table"
    assert "[signal]: sh was killed by signal 9 (SIGKILL)" in md
    assert "- `src/a.py` (T-1, T-2)" in md and "incomplete" in md


def test_the_same_ledger_gives_the_same_bytes_and_the_same_file(led: Ledger) -> None:
    a_session(led)
    one = session_summary(led, "ann")
    two = session_summary(led, "ann")
    assert (one.path, one.markdown) == (two.path, two.markdown)
    assert render_session(summarise("ann", led.log.read("ledger/ann"))) == one.markdown
    led.heartbeat("ann")
    three = session_summary(led, "ann")
    assert three.path != one.path and three.path is not None and three.path.endswith("-8.md")
    assert sorted(os.listdir(Path(one.path).parent)) == sorted([Path(one.path).name, Path(three.path).name])


def test_since_limits_the_period_and_names_the_file(led: Ledger) -> None:
    a_session(led)
    cut = next(ev for ev in led.log.read("ledger/ann") if ev.type == "task_result").ts
    summary = session_summary(led, "ann", since=cut)
    assert summary.first_seq == 3 and summary.last_seq == 7
    assert [(t.task, t.started) for t in summary.tasks] == [("T-1", None), ("T-2", summary.tasks[1].started),
                                                            ("T-3", summary.tasks[2].started)]
    assert "(before the period)" in summary.markdown and f"(since {cut})" in summary.markdown
    assert summary.path is not None and Path(summary.path).name.startswith(cut.replace("-", "").replace(":", ""))
    empty = session_summary(led, "ann", since="2999-01-01T00:00:00Z", write=False)
    assert empty.tasks == [] and empty.last_seq is None and "no events since" in empty.markdown
    assert session_file_name(empty) == "29990101T000000.000000Z-0.md"


def test_an_agent_without_a_ledger_is_an_error(led: Ledger) -> None:
    with pytest.raises(AgentlogError):
        session_summary(led, "nobody")


def test_session_summary_command(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with open_ledger(root, spool_dir=False) as led:
        a_session(led)
    res = cli(root, "session-summary", "--agent", "ann")
    assert res.returncode == 0, res.stderr
    path = Path(res.stdout.strip())
    assert path.parent == root / "agents" / "ann" / "sessions" and path.read_text().startswith("# Session summary")
    res = cli(root, "session-summary", "--agent", "ann", "--json")
    record = json.loads(res.stdout)
    assert record["path"] == str(path) and record["covers"]["last_seq"] == 7
    assert [t["task"] for t in record["tasks"]] == ["T-1", "T-2", "T-3"]
    assert record["errors"][0]["kind"] == "signal" and record["markdown"] == path.read_text()
    assert cli(root, "session-summary", "--agent", "nobody").returncode == 1
    assert cli(root, "session-summary", "--agent", "ann", "--since", "yesterday").returncode == 2
    assert cli(root, "session-summary").returncode == 2


def test_a_summary_of_real_runs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for code in ("0", "3"):
        subprocess.run([sys.executable, "-m", "agentlog", "--root", str(root), "run", "--agent", "bo", "--task",
                        f"T{code}", "--", "sh", "-c", f"touch f{code}; exit {code}"], cwd=tmp_path,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
    res = cli(root, "session-summary", "--agent", "bo", "--json")
    record = json.loads(res.stdout)
    assert [(t["task"], t["exit_code"]) for t in record["tasks"]] == [("T0", 0), ("T3", 3)]
    assert [f["path"] for f in record["files_touched"]] == ["f0", "f3"]
    assert all(t["command"][0] == "sh" for t in record["tasks"])
