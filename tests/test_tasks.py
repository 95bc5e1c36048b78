"""The task graph: one source of truth in the `tasks` stream, atomic claims, fencing tokens, graph rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import agentlog
from _workers import finish, spawn
from agentlog import Conflict, CycleError, InvalidEvent
from agentlog.tasks import STREAM, TaskGraph


@pytest.fixture
def graph(tmp_path: Path) -> TaskGraph:
    return TaskGraph(agentlog.open_log(tmp_path, spool_dir=False))


def view(graph: TaskGraph) -> dict[str, object]:
    return json.loads((Path(graph.log.root) / "tasks.graph.json").read_text())


def test_tasks_have_004s_shape_and_every_mutation_is_an_event(graph: TaskGraph) -> None:
    a = graph.create_task({"title": "write the parser", "type": "code", "inputs": {"spec": "S25"}})
    assert set(a) >= {"id", "type", "status", "owner", "inputs", "outputs", "created_at", "updated_at",
                      "parent_id", "dependency_ids", "title", "version"}
    assert (a["status"], a["owner"], a["version"], a["dependency_ids"]) == ("open", None, 1, [])
    b = graph.create_task({"title": "test it", "dependency_ids": [a["id"]], "parent_id": a["id"]})
    updated = graph.update_task(a["id"], title="write the parser (v2)")
    assert updated["version"] == 2 and updated["updated_at"] > a["updated_at"]
    assert updated["created_at"] == a["created_at"]
    assert [ev.type for ev in graph.log.read(STREAM)] == ["task_created", "task_created", "task_updated"]
    on_disk = view(graph)
    assert on_disk["through_seq"] == 3 and [t["id"] for t in on_disk["tasks"]] == [a["id"], b["id"]]  # type: ignore[index]
    assert graph.load_graph()["tasks"][0]["title"] == "write the parser (v2)"
    assert [t["id"] for t in graph.list_active()] == [a["id"], b["id"]]
    assert graph.list_active({"done"}) == []


def test_compare_and_set_on_version(graph: TaskGraph) -> None:
    t = graph.create_task({"title": "x"})
    graph.update_task(t["id"], expected_version=1, title="y")
    with pytest.raises(Conflict, match="version 2"):
        graph.update_task(t["id"], expected_version=1, title="z")
    assert graph.get(t["id"])["title"] == "y"


def test_claims_tokens_and_the_lifecycle(graph: TaskGraph) -> None:
    dep = graph.create_task({"title": "first"})
    t = graph.create_task({"title": "second", "dependency_ids": [dep["id"]]})
    assert [x["id"] for x in graph.ready()] == [dep["id"]]
    with pytest.raises(Conflict, match="waiting for"):
        graph.claim(t["id"], "ann")
    t1 = graph.claim(dep["id"], "ann")
    with pytest.raises(Conflict, match="held by ann"):
        graph.claim(dep["id"], "bob")
    graph.release(dep["id"], token=t1)
    t2 = graph.claim(dep["id"], "bob")
    assert t2 > t1
    with pytest.raises(Conflict, match="stale token"):
        graph.complete(dep["id"], token=t1, outputs={"by": "ann"})
    with pytest.raises(Conflict, match="stale token"):
        graph.release(dep["id"], token=t1)
    done = graph.complete(dep["id"], token=t2, outputs={"by": "bob"})
    assert (done["status"], done["owner"], done["outputs"]) == ("done", None, {"by": "bob"})
    assert [x["id"] for x in graph.ready()] == [t["id"]]
    t3 = graph.claim(t["id"], "ann")
    assert t3 > t2
    failed = graph.fail(t["id"], token=t3, error="flaky")
    assert failed["status"] == "failed"
    with pytest.raises(Conflict, match="cannot go from failed to done"):
        graph.update_task(t["id"], status="done")
    assert graph.update_task(t["id"], status="open")["status"] == "open"


def test_graph_rules_refuse_missing_links_and_cycles(graph: TaskGraph) -> None:
    a = graph.create_task({"id": "a"})
    graph.create_task({"id": "b", "dependency_ids": ["a"]})
    graph.create_task({"id": "c", "dependency_ids": ["b"], "parent_id": "a"})
    with pytest.raises(InvalidEvent, match="does not exist"):
        graph.create_task({"id": "d", "dependency_ids": ["nope"]})
    with pytest.raises(InvalidEvent, match="does not exist"):
        graph.create_task({"id": "d", "parent_id": "nope"})
    with pytest.raises(CycleError) as info:
        graph.update_task("a", dependency_ids=["c"])
    assert info.value.cycle == ["a", "c", "b", "a"] and "a -> c -> b -> a" in str(info.value)
    with pytest.raises(CycleError):
        graph.create_task({"id": "self", "dependency_ids": ["self"]})
    with pytest.raises(CycleError, match="parent"):
        graph.update_task("a", parent_id="c")
    with pytest.raises(Conflict, match="already exists"):
        graph.create_task({"id": "a"})
    assert graph.get("a") == a
    assert len(list(graph.log.read(STREAM))) == 3, "a refused change reached the stream"


def test_a_rebuilt_view_equals_the_incremental_one_and_a_crash_leaves_it_only_stale(graph: TaskGraph) -> None:
    for i in range(5):
        graph.create_task({"id": f"t{i}", "dependency_ids": [f"t{i - 1}"] if i else []})
    token = graph.claim("t0", "ann")
    graph.complete("t0", token=token, outputs={"ok": True})
    incremental = view(graph)
    assert graph.rebuild() == incremental and view(graph) == incremental
    # A crash between the append and the view write: the event is in the stream, the view is behind.
    graph.log.append_if(STREAM, [{"type": "task_claimed", "data": {"id": "t1", "owner": "bob"}}],
                        last_seq=incremental["through_seq"])  # type: ignore[arg-type]
    assert view(graph) == incremental
    caught_up = graph.load_graph()
    assert caught_up["through_seq"] == incremental["through_seq"] + 1  # type: ignore[operator]
    assert graph.get("t1")["owner"] == "bob" and view(graph) == caught_up
    (Path(graph.log.root) / "tasks.graph.json").write_text("{ torn")
    assert graph.load_graph() == caught_up and view(graph) == caught_up
    history = graph.history("t1")
    assert [ev.type for ev in history] == ["task_created", "task_claimed"]


def test_eight_processes_racing_to_claim_each_task_exactly_one_wins(
        tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]]) -> None:
    root = tmp_path / "root"
    graph = TaskGraph(agentlog.open_log(root, spool_dir=False))
    ids = [graph.create_task({"id": f"job-{i}"})["id"] for i in range(25)]
    go = tmp_path / "go"
    procs = [spawn("claim_race", root=str(root), task_ids=ids, agent=f"agent-{n}", out=str(tmp_path / f"out{n}"),
                   go=str(go)) for n in range(8)]
    fault_procs.extend(procs)
    go.touch()
    for proc in procs:
        finish(proc, timeout=120)
    wins: Counter[str] = Counter()
    tokens = []
    for n in range(8):
        for line in (tmp_path / f"out{n}").read_text().splitlines():
            task_id, outcome = line.split()
            if outcome != "lost":
                wins[task_id] += 1
                tokens.append(int(outcome))
    assert wins == Counter({task_id: 1 for task_id in ids}), "a task had no winner or several"
    assert len(set(tokens)) == len(tokens)
    claims = [ev for ev in graph.log.read(STREAM) if ev.type == "task_claimed"]
    assert sorted(ev.data["id"] for ev in claims) == sorted(ids)
    assert all(t["status"] == "claimed" for t in graph.load_graph()["tasks"])


def test_concurrent_creates_lose_nothing(tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]]) -> None:
    root = tmp_path / "root"
    go = tmp_path / "go"
    procs = [spawn("create_tasks", root=str(root), worker=w, count=25, go=str(go)) for w in range(6)]
    fault_procs.extend(procs)
    go.touch()
    for proc in procs:
        finish(proc, timeout=120)
    graph = TaskGraph(agentlog.open_log(root, spool_dir=False))
    assert len(graph.load_graph()["tasks"]) == 150
    assert len(list(graph.log.read(STREAM))) == 150
    assert graph.rebuild() == view(graph)


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENTLOG_SPOOL": "off"}
    return subprocess.run([sys.executable, "-m", "agentlog", "--root", str(root), "task", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def test_the_task_commands(tmp_path: Path) -> None:
    first = cli(tmp_path, "add", "design it", "--type", "design", "--input", '{"doc": "S25"}').stdout.strip()
    second = cli(tmp_path, "add", "build it", "--dep", first).stdout.strip()
    child = cli(tmp_path, "add", "sub-step", "--parent", second).stdout.strip()
    assert [json.loads(line)["id"] for line in cli(tmp_path, "ready", "--json").stdout.splitlines()] == [first, child]
    token = cli(tmp_path, "claim", first, "--agent", "ann").stdout.strip()
    assert token.isdigit()
    res = cli(tmp_path, "claim", first, "--agent", "bob")
    assert res.returncode == 1 and "held by ann" in res.stderr
    res = cli(tmp_path, "done", first, "--token", str(int(token) - 1))
    assert res.returncode == 1 and "stale token" in res.stderr
    res = cli(tmp_path, "done", first, "--agent", "bob")  # bob lost the race: he cannot finish ann's claim
    assert res.returncode == 1 and "held by ann, not bob" in res.stderr
    assert cli(tmp_path, "done", first, "--token", token, "--output", '{"pr": 7}').returncode == 0
    assert cli(tmp_path, "update", second, "--set", "title=build it well", "--set", "inputs={\"n\": 2}").returncode == 0
    listed = cli(tmp_path, "list", "--status", "done", "--json").stdout.splitlines()
    assert [json.loads(line)["outputs"] for line in listed] == [{"pr": 7}]
    show = cli(tmp_path, "show", second).stdout
    assert "build it well" in show and "task_updated" in show
    mermaid = cli(tmp_path, "graph", "--format", "mermaid").stdout
    assert mermaid.startswith("flowchart TD") and "-->" in mermaid
    dot = cli(tmp_path, "graph", "--format", "dot").stdout
    assert dot.startswith("digraph tasks {") and f'"{first}" -> "{second}";' in dot
    text = cli(tmp_path, "graph").stdout
    assert f"- [open] {second}: build it well  (after {first})" in text and f"  - [open] {child}: sub-step" in text
    res = cli(tmp_path, "update", first, "--set", f"dependency_ids=[\"{second}\"]")
    assert res.returncode == 2 and "cycle" in res.stderr
    assert cli(tmp_path, "show", "missing").returncode == 1
    assert "rebuilt 3 task(s)" in cli(tmp_path, "rebuild").stdout
    assert cli(tmp_path, "update", child, "--set", "title=42").returncode == 0  # the title "42", not a number
    assert json.loads(cli(tmp_path, "show", child, "--json").stdout)["task"]["title"] == "42"


AGENT_LOOP = r"""
set -u
while :; do
    id=$("$AGENTLOG" task ready | head -n 1 | cut -d ' ' -f 1)
    [ -n "$id" ] || exit 0
    if token=$("$AGENTLOG" task claim "$id" --agent "$AGENT" 2>>"$ERRS"); then
        "$AGENTLOG" task done "$id" --token "$token" --output "{\"by\": \"$AGENT\"}" >/dev/null || exit 3
        echo "$id" >>"$DONE"
    fi
done
"""


def test_agents_pulling_work_from_the_command_line_never_do_a_task_twice(
        tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]]) -> None:
    """Four shell agents loop on `task ready` / `task claim` / `task done` until nothing is ready: every task,
    including those that become ready only when their dependency is done, is done exactly once."""
    root = tmp_path / "root"
    first = [cli(root, "add", f"job {i}").stdout.strip() for i in range(6)]
    later = [cli(root, "add", f"after {i}", "--dep", first[i]).stdout.strip() for i in range(2)]
    entry = Path(sys.executable).with_name("agentlog")
    env = {**os.environ, "AGENTLOG_SPOOL": "off", "AGENTLOG_ROOT": str(root), "AGENTLOG": str(entry),
           "DONE": str(tmp_path / "done"), "ERRS": str(tmp_path / "errs")}
    procs = [subprocess.Popen(["bash", "-c", AGENT_LOOP], env={**env, "AGENT": f"agent-{n}"}) for n in range(4)]
    fault_procs.extend(procs)
    assert [proc.wait(timeout=240) for proc in procs] == [0, 0, 0, 0]
    done = (tmp_path / "done").read_text().split()
    assert sorted(done) == sorted(first + later), "a task was done twice or not at all"
    graph = TaskGraph(agentlog.open_log(root, spool_dir=False))
    completions = Counter(ev.data["id"] for ev in graph.log.read(STREAM) if ev.type == "task_completed")
    assert completions == Counter({task_id: 1 for task_id in first + later})
    for line in (tmp_path / "errs").read_text().splitlines() if (tmp_path / "errs").exists() else []:
        assert line.startswith("error: ") and ("held by" in line or "not open" in line or "done" in line), line


def test_004s_module_functions_work_on_the_default_root_and_close_what_they_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentlog import tasks

    monkeypatch.setenv("AGENTLOG_ROOT", str(tmp_path))
    fds_before = len(os.listdir("/proc/self/fd"))
    a = tasks.create_task({"id": "a", "title": "first"})
    tasks.create_task({"id": "b", "dependency_ids": ["a"]})
    assert [t["id"] for t in tasks.ready()] == ["a"]
    token = tasks.claim("a", "ann")
    assert [t["id"] for t in tasks.list_active(["claimed"])] == ["a"]
    with pytest.raises(Conflict):
        tasks.update_task("a", expected_version=a["version"], title="too late")
    tasks.complete("a", token=token, outputs={"ok": 1})
    assert [t["id"] for t in tasks.ready()] == ["b"]
    assert len(os.listdir("/proc/self/fd")) == fds_before, "a module function left a descriptor open"

    # save_graph replaces the whole graph as one event, checked like creations, in the order given.
    saved = {"tasks": [{"id": "z", "title": "last first", "dependency_ids": ["y"]},
                       {"id": "y", "status": "done", "version": 4}]}
    tasks.save_graph(saved)
    graph = tasks.load_graph()
    assert [(t["id"], t["status"], t["version"]) for t in graph["tasks"]] == [("z", "open", 1), ("y", "done", 4)]
    assert [t["id"] for t in tasks.ready()] == ["z"]
    with pytest.raises(CycleError):
        tasks.save_graph({"tasks": [{"id": "p", "dependency_ids": ["q"]}, {"id": "q", "dependency_ids": ["p"]}]})
    with pytest.raises(InvalidEvent):
        tasks.save_graph({"tasks": [{"id": "p", "dependency_ids": ["nowhere"]}]})
    with pytest.raises(InvalidEvent):
        tasks.save_graph({"tasks": [{"id": "p", "version": "two"}]})
    assert tasks.load_graph() == graph, "a refused save changed the graph"


def test_a_damaged_view_is_rewritten_even_while_the_stream_is_empty(graph: TaskGraph) -> None:
    path = Path(graph.log.root) / "tasks.graph.json"
    path.write_text("{ torn")
    assert graph.list_active() == []
    assert view(graph) == {"tasks": [], "through_seq": 0}


def test_a_view_write_failing_after_the_append_does_not_report_the_landed_mutation_as_failed(
        graph: TaskGraph, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    graph.create_task({"id": "a"})
    before = view(graph)

    def full_disk(*args: object, **kwargs: object) -> None:
        raise agentlog.StorageError("no space left on device", path="tasks.graph.json")

    monkeypatch.setattr(graph, "_write_view", full_disk)
    token = graph.claim("a", "ann")  # the claim is in the stream: ann must get her token, not an error
    monkeypatch.undo()
    assert "tasks.graph.json not updated" in caplog.text, "the failure must be said, not swallowed"
    assert view(graph) == before, "the view was written after all"
    assert graph.get("a")["token"] == token and view(graph)["through_seq"] == token


def test_save_graph_changes_versions_and_tokens_so_compare_and_set_and_fencing_still_hold(graph: TaskGraph) -> None:
    graph.create_task({"id": "x", "title": "a"})
    graph.create_task({"id": "y"})
    ann = graph.claim("y", "ann")
    saved = graph.load_graph()
    saved["tasks"][0]["title"] = "changed by a save"  # type: ignore[index]
    graph.save_graph(saved)  # the round trip keeps ann's claim
    assert graph.get("y")["token"] == ann
    with pytest.raises(Conflict, match="version"):
        graph.update_task("x", expected_version=1, title="would overwrite the save")
    assert graph.get("x")["title"] == "changed by a save"
    # Handing y to bob is a new claim: a new, larger token; ann's is refused.
    graph.save_graph({"tasks": [{"id": "x"}, {"id": "y", "status": "claimed", "owner": "bob", "token": ann}]})
    bob = graph.get("y")["token"]
    assert isinstance(bob, int) and bob > ann
    with pytest.raises(Conflict, match="stale token"):
        graph.complete("y", token=ann)
    assert graph.complete("y", token=bob)["status"] == "done"
    before = graph.load_graph()
    with pytest.raises(InvalidEvent, match="twice"):
        graph.save_graph({"tasks": [{"id": "p", "title": "one"}, {"id": "p", "title": "two"}]})
    with pytest.raises(InvalidEvent, match="owner"):
        graph.save_graph({"tasks": [{"id": "p", "status": "claimed"}]})
    assert graph.load_graph() == before and graph.rebuild() == before


def test_a_mermaid_picture_survives_any_title() -> None:
    from agentlog.cli._tasks import render_graph

    tasks = [{"id": "a", "title": 'two\nlines "quoted"', "status": "open", "dependency_ids": [], "parent_id": None},
             {"id": "b/c", "title": "x", "status": "open", "dependency_ids": ["a"], "parent_id": "a"}]
    lines = render_graph(tasks, "mermaid").splitlines()
    assert lines == ["flowchart TD", '    t_a["a: two lines #quot;quoted#quot;"]', '    t_b_2f_c["b/c: x"]',
                     "    t_a --> t_b_2f_c", "    t_a -.-> t_b_2f_c"]


def test_a_view_ahead_of_its_stream_is_rebuilt_from_the_stream_on_the_next_change(
        graph: TaskGraph, caplog: pytest.LogCaptureFixture) -> None:
    """The stream is the truth: if its files were replaced by an older copy, the view (further on) is not
    trusted over it; the next change rebuilds from the stream instead of failing as a conflict."""
    graph.create_task({"id": "kept"})
    stream_file = Path(graph.log.root) / "logs" / "tasks.jsonl"
    older = stream_file.read_bytes()
    graph.create_task({"id": "lost"})
    stream_file.write_bytes(older)  # a restore from a backup taken before "lost" was created
    graph.log.close()
    graph = TaskGraph(agentlog.open_log(graph.log.root, spool_dir=False))
    graph.create_task({"id": "new"})
    assert [t["id"] for t in graph.load_graph()["tasks"]] == ["kept", "new"]
    assert "ahead of the tasks stream" in caplog.text
    assert graph.rebuild() == view(graph)
