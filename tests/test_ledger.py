"""Agent ledgers, status.json as their view, liveness, schemas and `agentlog validate`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import agentlog
from _workers import finish, spawn
from agentlog import InvalidEvent, InvalidStreamName
from agentlog.ledger import Ledger, fold, in_order, liveness, open_ledger
from agentlog.redact import default_redactor
from agentlog.validate import validate_files, validate_record


@pytest.fixture
def led(tmp_path: Path) -> Ledger:
    return open_ledger(tmp_path / "root", spool_dir=False)


def status_file(led: Ledger, agent: str) -> dict[str, object]:
    return json.loads((Path(led.log.root) / "agents" / agent / "status.json").read_text())


def test_a_ledger_is_a_daily_stream_and_status_follows_every_transition(led: Ledger) -> None:
    root = Path(led.log.root)
    led.write("alice", "task_start", task="T-1", data={"command": ["make", "test"]})
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert (root / "logs" / "ledger" / "alice" / f"{today}.jsonl").exists()
    first = status_file(led, "alice")
    assert (first["state"], first["task"], first["through_seq"]) == ("busy", "T-1", 1)
    led.write("alice", "task_result", task="T-1", data={"exit_code": 0})
    assert (status_file(led, "alice")["state"], status_file(led, "alice")["task"]) == ("idle", None)
    led.write("alice", "error", task="T-2", data={"message": "disk on fire"})
    st = status_file(led, "alice")
    assert st["state"] == "error" and st["last_error"]["message"] == "disk on fire"  # type: ignore[index]
    led.write("alice", "state_change", data={"state": "offline"})
    assert status_file(led, "alice")["state"] == "offline"
    led.heartbeat("alice", next_due=60)
    st = status_file(led, "alice")
    assert st["state"] == "idle" and st["last_heartbeat"] and st["next_heartbeat_due"]
    assert st["through_seq"] == 5 and st["since"] == st["last_heartbeat"]
    assert validate_record(st, "status") == []
    assert led.agents() == ["alice"]


def test_ledger_events_are_checked_before_writing(led: Ledger) -> None:
    for kind, data in [("lunch", {}), ("task_result", {}), ("task_result", {"exit_code": True}),
                       ("error", {"msg": "x"}), ("state_change", {"state": "sleepy"})]:
        with pytest.raises(InvalidEvent):
            led.write("alice", kind, data=data)
    with pytest.raises(InvalidStreamName):
        led.write("team/alice", "heartbeat")
    with pytest.raises(InvalidStreamName):
        led.write("../x", "heartbeat")
    assert led.log.streams() == []


def test_what_the_schema_refuses_is_refused_before_writing(led: Ledger) -> None:
    """A task id over 256 characters, or a heartbeat whose next_due is not a timestamp (or is past year 9999,
    or not a number of seconds at all), would be written and then fail `agentlog validate`."""
    with pytest.raises(InvalidEvent):
        led.write("alice", "task_start", task="t" * 257)
    with pytest.raises(InvalidEvent):
        led.write("alice", "heartbeat", data={"next_due": "tomorrow"})
    for bad in (float("inf"), float("nan"), 1e12, 0, -1):
        with pytest.raises(ValueError):
            led.heartbeat("alice", next_due=bad)
    assert led.log.streams() == []
    led.write("alice", "task_start", task="t" * 256)
    led.heartbeat("alice", next_due=366 * 86400)
    led.write("alice", "heartbeat", data={"next_due": "2026-11-22T10:00:00+01:00"})
    for path in (Path(led.log.root) / "logs" / "ledger" / "alice").glob("*.jsonl"):
        assert list(validate_files([path])) == []


def test_a_redactor_covers_the_task_id_too(led: Ledger) -> None:
    """As docs/ledger.md says of `Ledger.write(..., redactor=...)` and `agentlog ledger write --redact`."""
    token = "ghp_" + "Zq8" * 12
    ev = led.write("alice", "task_start", task=f"deploy {token}", data={"note": "password=hunter2hunter2"},
                   redactor=default_redactor())
    assert ev.extra["task"] == "deploy [REDACTED:github_token]"
    assert ev.extra["redactions"] == [{"rule": "github_token", "count": 1}, {"rule": "secret_assignment", "count": 1}]
    led.heartbeat("alice", next_due=30, task=f"deploy {token}", redactor=default_redactor())
    assert led.status("alice")["task"] == "deploy [REDACTED:github_token]"
    with pytest.raises(InvalidEvent):  # within 256 characters as given, not once the marker replaces it
        led.write("alice", "task_start", task="t" * 240 + " password=abc", redactor=default_redactor())
    res = cli(Path(led.log.root), "ledger", "write", "--agent", "bob", "task_start", "--task", token, "--redact")
    assert res.returncode == 0
    assert token.encode() not in b"".join(p.read_bytes() for p in Path(led.log.root).rglob("*") if p.is_file())


def test_a_heartbeat_with_an_unusable_deadline_does_not_break_status(led: Ledger) -> None:
    """A line appended to a ledger directly (`agentlog append ledger/A heartbeat ...`) is not checked as a
    ledger write is: its next_due must not make status.json invalid, nor `agentlog status` fail."""
    led.log.append("ledger/alice", "heartbeat", actor="alice", data={"next_due": "tomorrow"})
    st = led.status("alice")
    assert st["next_heartbeat_due"] is None and st["last_heartbeat"] is not None
    assert validate_record(st, "status") == []
    assert liveness(st) == "unknown"
    assert liveness({**st, "next_heartbeat_due": "tomorrow"}) == "unknown", "a status.json edited by hand"
    res = cli(Path(led.log.root), "status", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["liveness"] == "unknown"
    led.write("alice", "heartbeat", data={"next_due": "2999-01-01t00:00:00z"})  # RFC 3339 allows lower case
    st = led.status("alice")
    assert st["next_heartbeat_due"] == "2999-01-01T00:00:00.000000Z" and liveness(st) == "alive"


def test_a_crash_between_append_and_view_write_leaves_a_stale_view_that_catches_up(led: Ledger) -> None:
    """Appending to the ledger without updating status.json is exactly what a crash after the append leaves:
    the next read catches up, and a rebuild from the ledger alone gives the same status."""
    led.write("bob", "task_start", task="A")
    led.log.append("ledger/bob", "task_result", actor="bob", task="A", data={"exit_code": 3})
    led.log.append("ledger/bob", "task_start", actor="bob", task="B")
    assert status_file(led, "bob")["through_seq"] == 1, "the view should be stale here"
    caught_up = led.status("bob")
    assert (caught_up["state"], caught_up["task"], caught_up["through_seq"]) == ("busy", "B", 3)
    assert status_file(led, "bob") == caught_up
    (Path(led.log.root) / "agents" / "bob" / "status.json").write_text("{ torn")
    assert led.rebuild() == [caught_up]
    assert fold(None, led.log.read("ledger/bob"), agent="bob") == caught_up


def test_many_processes_updating_one_agent_never_lose_a_transition_or_tear_the_file(
        tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]]) -> None:
    root = tmp_path / "root"
    path = root / "agents" / "crew" / "status.json"
    go = tmp_path / "go"
    procs = [spawn("ledger_loop", root=str(root), agent="crew", worker=w, tasks=15, go=str(go)) for w in range(6)]
    fault_procs.extend(procs)
    seen: list[str] = []
    stop = threading.Event()

    def read_constantly() -> None:
        while not stop.is_set():
            try:
                text = path.read_text()
            except FileNotFoundError:
                continue
            try:
                json.loads(text)
            except ValueError:
                seen.append(text)

    reader = threading.Thread(target=read_constantly)
    reader.start()
    go.touch()
    try:
        for proc in procs:
            finish(proc, timeout=120)
    finally:
        stop.set()
        reader.join()
    assert seen == [], f"a reader saw invalid JSON: {seen[:1]!r}"
    st = json.loads(path.read_text())
    assert st["through_seq"] == 6 * 15 * 2 and st["state"] == "idle" and st["task"] is None
    with open_ledger(root, spool_dir=False) as again:
        assert fold(None, again.log.read("ledger/crew"), agent="crew") == st


def test_liveness_follows_each_agents_own_deadline() -> None:
    beat = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    fast = {"state": "idle", "last_heartbeat": "2026-11-22T10:00:00Z", "next_heartbeat_due": "2026-11-22T10:00:10Z"}
    slow = {"state": "idle", "last_heartbeat": "2026-11-22T10:00:00Z", "next_heartbeat_due": "2026-11-22T11:00:00Z"}
    at = beat + timedelta(seconds=16)  # 10 s interval: grace 5 s, so stale after 15 s
    assert liveness(fast, now=at) == "stale" and liveness(slow, now=at) == "alive"
    assert liveness(fast, now=beat + timedelta(seconds=14)) == "alive"
    assert liveness(fast, now=at, grace=60) == "alive"
    assert liveness({**fast, "state": "offline"}, now=at) == "offline"
    assert liveness({"state": "idle", "next_heartbeat_due": None}) == "unknown"
    assert liveness(fast, now=at, grace=float("inf")) == "alive" and liveness(fast, now=at, grace=1e300) == "alive"
    for bad in (float("nan"), -1.0):
        with pytest.raises(ValueError):
            liveness(fast, now=at, grace=bad)


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENTLOG_SPOOL": "off"}
    return subprocess.run([sys.executable, "-m", "agentlog", "--root", str(root), *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_the_ledger_commands(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert cli(root, "ledger", "write", "--agent", "ann", "task_start", "--task", "T9").returncode == 0
    res = cli(root, "ledger", "write", "--agent", "ann", "error", "--redact",
              "--data", '{"message": "login failed for https://ann:hunter2hunter2@db.example.com"}')
    assert res.returncode == 0
    assert "hunter2hunter2" not in "".join(p.read_text() for p in (root / "logs").rglob("*.jsonl"))
    assert cli(root, "heartbeat", "--agent", "ann", "--next-due", "30").returncode == 0
    table = cli(root, "status").stdout.splitlines()
    assert table[0].split()[:3] == ["AGENT", "STATE", "TASK"] and table[1].split()[:2] == ["ann", "error"]
    [row] = [json.loads(line) for line in cli(root, "status", "ann", "--json").stdout.splitlines()]
    assert row["liveness"] == "alive" and row["last_error"]["message"].endswith("@db.example.com")
    assert cli(root, "status", "nobody").returncode == 1
    assert cli(root, "status", "--rebuild", "nobody").returncode == 1
    assert cli(root, "status", "--grace", "inf").returncode == 0
    assert cli(root, "status", "--grace", "nan").returncode == 2
    assert cli(root, "ledger", "write", "--agent", "ann", "nap").returncode == 2
    rebuilt = cli(root, "status", "--rebuild", "--json")
    assert rebuilt.returncode == 0 and json.loads(rebuilt.stdout)["through_seq"] == 3


def test_validate_accepts_what_agentlog_writes_and_names_each_problem(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with open_ledger(root, spool_dir=False) as led:
        led.write("ann", "task_start", task="T1")
        led.write("ann", "task_result", task="T1", data={"exit_code": 1, "duration_s": 0.5})
    agentlog.open_log(root).append("conv", "question", data={"content": "hi"})
    files = [str(p) for p in (root / "logs").rglob("*.jsonl")]
    assert list(validate_files(files)) == []
    status = root / "agents" / "ann" / "status.json"
    assert list(validate_files([status], status=True)) == []
    good = json.loads(Path(files[0]).read_text().splitlines()[0])
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([
        json.dumps({**good, "ts": "2026-11-22T10:00:00"}),                       # no offset
        "{not json",
        json.dumps({k: v for k, v in good.items() if k != "id"}),               # missing id
        json.dumps({**good, "stream": "ledger/ann", "type": "task_result", "actor": "ann", "data": {}}),
        json.dumps({**good, "seq": "7"}),
    ]) + "\n")
    problems = list(validate_files([bad]))
    assert [p.line for p in problems] == [1, 2, 3, 4, 5]
    assert "date-time" in problems[0].what and "JSON" in problems[1].what and "'id'" in problems[2].what
    assert "exit_code" in problems[3].what and "seq" in problems[4].what
    res = cli(root, "validate", str(bad))
    assert res.returncode == 1 and res.stdout.splitlines()[0].startswith(f"{bad}:1: ")
    assert cli(root, "validate", *files).returncode == 0
    status.write_text('{"agent": "ann", "state": "napping"}')
    res = cli(root, "validate", "--status", str(status))
    assert res.returncode == 1 and "napping" in res.stdout


def test_the_ledger_schema_checks_the_fields_agentlog_run_adds() -> None:
    """docs/ledger.md documents these fields' types; `agentlog validate` checks them."""
    base = {"seq": 1, "id": "01a245a9-e6bd-737b-bbd2-1ad3b9fd28b1", "ts": "2026-11-22T10:00:00Z",
            "stream": "ledger/ann", "actor": "ann"}
    result = {**base, "type": "task_result",
              "data": {"exit_code": 0, "files_touched_method": "git", "stdout_bytes": 3, "stderr_bytes": 0}}
    error = {**base, "type": "error", "data": {"message": "killed", "kind": "signal", "signal": 9, "errno": 2}}
    assert validate_record(result, "ledger") == [] and validate_record(error, "ledger") == []
    for bad in ({"files_touched_method": "svn"}, {"stdout_bytes": -1}, {"stderr_bytes": "3"}):
        assert validate_record({**result, "data": {**result["data"], **bad}}, "ledger"), bad
    for bad in ({"signal": "9"}, {"errno": 2.5}):
        assert validate_record({**error, "data": {**error["data"], **bad}}, "ledger"), bad


def test_schema_prints_each_schema(tmp_path: Path) -> None:
    for name in ("event", "ledger", "status"):
        res = cli(tmp_path, "schema", name)
        assert res.returncode == 0 and json.loads(res.stdout)["$id"] == f"agentlog:{name}"
    assert cli(tmp_path, "schema", "nope").returncode == 2


# --- events replayed from the spool arrive late ------------------------------------------------------------

def _shift(ts: str, seconds: float) -> str:
    return (datetime.fromisoformat(ts) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_an_event_replayed_late_never_overwrites_a_newer_state_task_or_heartbeat(led: Ledger) -> None:
    """What a spool replay appends (the event as it was, plus ``spooled_at``) lands after newer events; the
    view folds each event where it happened, whether it is caught up incrementally, rebuilt or recreated."""
    log = led.log
    start = led.write("ann", "task_start", task="T-1")
    beat = led.heartbeat("ann", next_due=60)  # its own promise (one naming T-1 would end with T-1)
    done = led.write("ann", "task_result", task="T-1", data={"exit_code": 0})
    time.sleep(0.01)
    off = led.write("ann", "state_change", data={"state": "offline", "reason": "shut down"})
    before = led.status("ann")
    assert before["state"] == "offline" and before["since"] == off.ts
    assert done.ts is not None and start.ts is not None and off.ts is not None
    between = _shift(done.ts, 0.001)  # after the task ended, before the agent went offline
    long_ago = _shift(start.ts, -1)
    log.append("ledger/ann", "task_start", actor="ann", task="T-0", spooled_at=long_ago)
    log.append("ledger/ann", "heartbeat", actor="ann", spooled_at=long_ago,
               data={"interval_s": 5, "next_due": _shift(long_ago, 5)})
    log.append("ledger/ann", "error", actor="ann", task="T-1", spooled_at=between, data={"message": "late"})
    assert [ev.seq for ev in log.read("ledger/ann")] == [1, 2, 3, 4, 5, 6, 7]

    caught_up = led.status("ann")  # incrementally, from through_seq 4
    assert (caught_up["state"], caught_up["task"], caught_up["since"]) == ("offline", None, off.ts)
    assert caught_up["last_heartbeat"] == beat.ts, "an older heartbeat does not replace a newer one"
    assert caught_up["next_heartbeat_due"] == beat.data["next_due"]
    assert caught_up["last_error"] == {"ts": between, "message": "late", "task": "T-1"}, "but it did happen"
    assert caught_up["through_seq"] == 7 and caught_up["last_event"] == off.ts
    assert validate_record(caught_up, "status") == []
    assert status_file(led, "ann") == caught_up
    assert led.rebuild() == [caught_up]
    (Path(log.root) / "agents" / "ann" / "status.json").unlink()
    assert led.status("ann") == caught_up, "recreated from the whole ledger"
    assert fold(None, in_order(lambda: log.read("ledger/ann")), agent="ann") == caught_up
    assert [ev.seq for ev in in_order(lambda: log.read("ledger/ann"))] == [5, 6, 1, 2, 3, 7, 4]
    naive = fold(None, log.read("ledger/ann"), agent="ann")
    assert (naive["state"], naive["task"]) == ("error", "T-0"), "in seq order the late events would win"


def test_a_ledger_event_spooled_while_the_root_was_unwritable_is_folded_where_it_happened(tmp_path: Path) -> None:
    """The real thing: the root cannot be written (a file where its directory should be), so a task_start and a
    heartbeat go to the spool; once it can be written again, a newer state_change is appended and the spool is
    replayed after it (automatically, by that append). The agent stays offline."""
    root, spool, aside = tmp_path / "root", tmp_path / "spool", tmp_path / "aside"
    with open_ledger(root, spool_dir=spool) as led:
        led.write("ann", "task_start", task="T-1")
        led.write("ann", "task_result", task="T-1", data={"exit_code": 0})
    root.rename(aside)
    root.write_text("not a directory\n")
    with open_ledger(root, spool_dir=spool) as led:
        spooled = [led.write("ann", "task_start", task="T-2"), led.heartbeat("ann", next_due=30, task="T-2")]
        assert all(ev.spooled for ev in spooled)
    root.unlink()
    aside.rename(root)
    time.sleep(0.01)
    with open_ledger(root, spool_dir=spool) as led:
        off = led.write("ann", "state_change", data={"state": "offline"})
        assert not off.spooled
        stored = list(led.log.read("ledger/ann"))
        assert [(ev.type, "spooled_at" in ev.extra) for ev in stored] == [
            ("task_start", False), ("task_result", False), ("state_change", False), ("task_start", True),
            ("heartbeat", True)], "the replay came after the newer event"
        st = status_file(led, "ann")
        assert (st["state"], st["task"], st["through_seq"]) == ("offline", None, 5)
        assert st["since"] == off.ts and st["last_heartbeat"] == stored[4].extra["spooled_at"]
        assert led.rebuild() == [st]


def test_a_tasks_heartbeats_stop_promising_when_the_task_ends(tmp_path: Path) -> None:
    """Heartbeats that name a task (agentlog run's) promise only while it runs: after its task_result the agent
    is idle with no deadline (liveness unknown), never stale; an agent's own heartbeats keep their promise."""
    from datetime import UTC, datetime, timedelta

    from agentlog.ledger import liveness, open_ledger
    from agentlog.validate import validate_files

    later = datetime.now(UTC) + timedelta(hours=1)
    with open_ledger(tmp_path) as ledger:
        ledger.write("runner", "task_start", task="T-1")
        ledger.heartbeat("runner", next_due=30, task="T-1")
        assert liveness(ledger.status("runner")) == "alive"
        ledger.write("runner", "task_result", task="T-1", data={"exit_code": 0})
        done = ledger.status("runner")
        assert (done["state"], done["next_heartbeat_due"]) == ("idle", None)
        assert liveness(done, now=later) == "unknown"

        ledger.heartbeat("self", next_due=30)  # the agent's own promise, not a task's
        ledger.write("self", "task_start", task="T-2")
        ledger.write("self", "task_result", task="T-2", data={"exit_code": 0})
        assert liveness(ledger.status("self"), now=later) == "stale"
        assert ledger.rebuild() == [ledger.status("runner"), ledger.status("self")]
    statuses = sorted(str(p) for p in (tmp_path / "agents").glob("*/status.json"))
    assert [p for p in validate_files(statuses, status=True)] == []
