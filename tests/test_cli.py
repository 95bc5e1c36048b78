"""The ``agentlog`` command line, run as users run it: real subprocesses, real files, exit statuses."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import agentlog
from agentlog.cli import main
from agentlog.cli._parser import build_parser

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def run(root: Path | None, *args: str, stdin: str | None = None, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m agentlog [--root ROOT] ARGS...`` in a fresh process."""
    full_env = {k: v for k, v in os.environ.items() if k != "AGENTLOG_ROOT"}
    full_env.update(env or {})
    prefix = ["--root", str(root)] if root is not None else []
    return subprocess.run([sys.executable, "-m", "agentlog", *prefix, *args], input=stdin,
                          capture_output=True, text=True, env=full_env, cwd=cwd or (root.parent if root else None),
                          timeout=60, check=False)


def ok(root: Path | None, *args: str, stdin: str | None = None) -> str:
    done = run(root, *args, stdin=stdin)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def assert_one_line_error(done: subprocess.CompletedProcess[str], status: int, *needles: str) -> None:
    assert done.returncode == status, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "log"


def read_all(root: Path, stream: str) -> list[agentlog.Event]:
    with agentlog.open_log(root) as log:
        return list(log.read(stream))


# --- append -----------------------------------------------------------------------------------------------

def test_append_prints_the_new_event_id(root: Path) -> None:
    """`append` prints the id of the event it wrote, and the event holds CONTENT in data.content."""
    out = ok(root, "append", "conv-7", "question", "How do I start?", "--actor", "alice",
             "--interaction", "3", "--visibility", "public")
    event_id = out.strip()
    assert UUID.match(event_id)
    [ev] = read_all(root, "conv-7")
    assert (ev.id, ev.seq, ev.type, ev.actor, ev.interaction, ev.visibility) == \
        (event_id, 1, "question", "alice", 3, "public")
    assert ev.data == {"content": "How do I start?"}


def test_append_json_prints_the_whole_event_with_content_merged_into_data(root: Path) -> None:
    """`append --json` prints the stored event as one JSON line; CONTENT is merged into the --data object."""
    out = ok(root, "append", "conv-7", "answer", "Run it", "--data", '{"tokens": 12}', "--json")
    [printed] = json_lines(out)
    assert printed["data"] == {"tokens": 12, "content": "Run it"}
    assert printed["seq"] == 1 and printed["stream"] == "conv-7" and printed["type"] == "answer"
    [ev] = read_all(root, "conv-7")
    assert ev.to_dict() == printed


def test_append_data_without_content(root: Path) -> None:
    """`append --data` alone stores exactly that object as data."""
    ok(root, "append", "s", "metric", "--data", '{"n": 1, "tags": ["a"]}')
    assert read_all(root, "s")[0].data == {"n": 1, "tags": ["a"]}


def test_append_content_twice_is_refused(root: Path) -> None:
    """CONTENT together with a data.content in --data is ambiguous: exit 2 and nothing written."""
    done = run(root, "append", "s", "note", "text", "--data", '{"content": "other"}')
    assert_one_line_error(done, 2, "content")
    assert read_all(root, "s") == []


@pytest.mark.parametrize("name", ["../escape", "/abs", "a//b", "bad\\name", "2026-01-01"])
def test_append_bad_stream_name_exits_2(root: Path, name: str) -> None:
    """An invalid stream name is refused with one error line and exit 2, and nothing is created."""
    done = run(root, "append", name, "note", "x")
    assert_one_line_error(done, 2, "stream name")
    assert not (root / "logs").exists() or not any((root / "logs").rglob("*.jsonl"))


@pytest.mark.parametrize(("data", "why"), [("{bad", "not valid JSON"), ("[1, 2]", "JSON object"),
                                           ('{"x": NaN}', "not valid JSON"), ('"text"', "JSON object")])
def test_append_bad_data_json_exits_2(root: Path, data: str, why: str) -> None:
    """--data that is not a strict-JSON object is refused with exit 2 before anything is written."""
    done = run(root, "append", "s", "note", "--data", data)
    assert_one_line_error(done, 2, "--data", why)
    assert read_all(root, "s") == []


def test_append_invalid_event_exits_2(root: Path) -> None:
    """An event the library refuses (a negative interaction) exits 2 with the library's reason."""
    done = run(root, "append", "s", "note", "--interaction", "-1")
    assert_one_line_error(done, 2, "interaction")


def test_append_non_integer_interaction_is_a_usage_error(root: Path) -> None:
    """--interaction that is not an integer is an argparse usage error: exit 2, one line."""
    assert_one_line_error(run(root, "append", "s", "note", "--interaction", "three"), 2, "--interaction")


def test_append_batch_from_stdin_is_one_batch(root: Path) -> None:
    """`append STREAM -` appends every stdin line in order, skips blank lines, and prints one id per event."""
    stdin = '{"type": "a"}\n\n   \n{"type": "b", "data": {"k": 1}, "actor": "own"}\n{"type": "c"}\n'
    out = ok(root, "append", "s", "-", "--actor", "default-actor", stdin=stdin)
    ids = out.split()
    assert len(ids) == 3 and all(UUID.match(i) for i in ids)
    events = read_all(root, "s")
    assert [(e.id, e.seq, e.type, e.actor) for e in events] == [
        (ids[0], 1, "a", "default-actor"), (ids[1], 2, "b", "own"), (ids[2], 3, "c", "default-actor")]
    assert events[1].data == {"k": 1}
    # One batch is one write under one lock: every event got the same ts.
    assert len({e.ts for e in events}) == 1


def test_append_batch_json_prints_events(root: Path) -> None:
    """`append STREAM - --json` prints each appended event as a JSON line."""
    out = ok(root, "append", "s", "-", "--json", stdin='{"type": "a"}\n{"type": "b"}\n')
    assert [(e["seq"], e["type"]) for e in json_lines(out)] == [(1, "a"), (2, "b")]


@pytest.mark.parametrize(("stdin", "line", "why"), [
    ('{"type": "a"}\n\n{"type": "b",\n', 3, "not valid JSON"),
    ('{"type": "a"}\n[1]\n', 2, "JSON object"),
    ('{"type": "a"}\n{"data": {}}\n', 2, "type"),
    ('{"type": "a"}\n\n{"type": "b"}\n{"type": "c", "data": [1]}\n', 4, "data"),
    ('{"type": "a"}\n{"type": "b", "seq": 9}\n', 2, "seq"),
])
def test_append_batch_bad_line_refuses_the_whole_batch(root: Path, stdin: str, line: int, why: str) -> None:
    """One bad stdin line refuses the whole batch with exit 2, and the message names that line."""
    ok(root, "append", "s", "before")
    done = run(root, "append", "s", "-", stdin=stdin)
    assert_one_line_error(done, 2, f"stdin line {line}:", why)
    assert done.stdout == ""
    assert [e.type for e in read_all(root, "s")] == ["before"]


def test_append_batch_refuses_content_and_data(root: Path) -> None:
    """With '-' the events come from stdin, so CONTENT and --data are usage errors."""
    assert_one_line_error(run(root, "append", "s", "-", "text", stdin=""), 2, "CONTENT")
    assert_one_line_error(run(root, "append", "s", "-", "--data", "{}", stdin=""), 2, "--data")


# --- tail ---------------------------------------------------------------------------------------------------

def test_tail_shows_the_newest_events_oldest_first(root: Path) -> None:
    """`tail -n 2` prints the last two events, oldest first, one line each."""
    ok(root, "append", "s", "-", stdin="".join(f'{{"type": "t{i}"}}\n' for i in range(1, 6)))
    lines = ok(root, "tail", "s", "-n", "2").splitlines()
    assert len(lines) == 2
    assert " s#4 t4" in lines[0] and " s#5 t5" in lines[1]
    assert [e["seq"] for e in json_lines(ok(root, "tail", "s", "--json"))] == [1, 2, 3, 4, 5]


def test_tail_text_escapes_control_characters(root: Path) -> None:
    """Text output escapes control characters so an event cannot drive the reader's terminal."""
    ok(root, "append", "s", "note", "red\x1b[31m\nsecond line")
    [line] = ok(root, "tail", "s").splitlines()
    assert "\x1b" not in line and "\\x1b[31m\\nsecond line" in line


def test_tail_missing_stream_exits_1(root: Path) -> None:
    """`tail` of a stream that does not exist is a failure, like tail(1) of a missing file."""
    ok(root, "append", "s", "note")
    assert_one_line_error(run(root, "tail", "nope"), 1, "no such stream")


def test_tail_negative_count_is_a_usage_error(root: Path) -> None:
    """`tail -n -1` exits 2."""
    assert_one_line_error(run(root, "tail", "s", "-n", "-1"), 2, "-n")


class LineReader:
    """Reads a pipe in a thread, so a test can wait for a line with a timeout."""

    def __init__(self, pipe) -> None:  # type: ignore[no-untyped-def]
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(pipe,), daemon=True).start()

    def _pump(self, pipe) -> None:  # type: ignore[no-untyped-def]
        for line in pipe:
            self.lines.put(line)

    def next(self, timeout: float = 15.0) -> str:
        return self.lines.get(timeout=timeout)


def test_tail_follow_picks_up_an_append_from_another_process(root: Path) -> None:
    """`tail -f` prints the existing tail, then an event appended by another process, and Ctrl-C exits 0."""
    ok(root, "append", "s", "old", "first")
    ok(root, "append", "s", "old", "second")
    env = {k: v for k, v in os.environ.items() if k != "AGENTLOG_ROOT"}
    follower = subprocess.Popen([sys.executable, "-m", "agentlog", "--root", str(root), "tail", "s", "-n", "1",
                                 "-f", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
    try:
        out = LineReader(follower.stdout)
        assert json.loads(out.next())["data"] == {"content": "second"}
        new_id = ok(root, "append", "s", "new", "from elsewhere").strip()
        event = json.loads(out.next())
        assert (event["id"], event["seq"], event["type"]) == (new_id, 3, "new")
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=15) == 0
        assert follower.stderr is not None and follower.stderr.read() == ""
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


def test_tail_follow_with_zero_count_shows_only_new_events(root: Path) -> None:
    """`tail -n 0 -f` skips the history and prints only what is appended afterwards."""
    ok(root, "append", "s", "old")
    follower = subprocess.Popen([sys.executable, "-m", "agentlog", "--root", str(root), "tail", "s", "-n", "0",
                                 "-f"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out = LineReader(follower.stdout)
        # The follower starts in a moment; appending twice makes sure it sees at least the second one.
        ok(root, "append", "s", "new1")
        ok(root, "append", "s", "new2")
        seen = [out.next()]
        if " new1" in seen[0]:
            seen.append(out.next())
        assert " s#3 new2" in seen[-1]
        assert not any(" old" in line for line in seen)
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=15) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


def test_tail_into_a_closed_pipe_exits_quietly(root: Path) -> None:
    """`agentlog tail ... | head -1`: when the reader goes away, agentlog stops with status 0 and no noise."""
    ok(root, "append", "s", "-", stdin="".join(f'{{"type": "n", "data": {{"i": {i}}}}}\n' for i in range(3000)))
    proc = subprocess.Popen([sys.executable, "-m", "agentlog", "--root", str(root), "tail", "s", "-n", "3000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert b" s#1 n" in proc.stdout.readline()
    proc.stdout.close()  # 3000 lines are far more than a pipe holds: the writer must hit EPIPE
    assert proc.wait(timeout=30) == 0
    assert proc.stderr.read() == b""


# --- query --------------------------------------------------------------------------------------------------

@pytest.fixture
def chat(root: Path) -> Path:
    stdin = "\n".join([
        '{"type": "question", "actor": "alice", "interaction": 1, "visibility": "public"}',
        '{"type": "answer", "actor": "bob", "interaction": 1, "visibility": "private"}',
        '{"type": "question", "actor": "bob", "interaction": 2, "visibility": "public"}',
    ])
    ok(root, "append", "chat", "-", stdin=stdin)
    ok(root, "append", "other", "question", "elsewhere", "--actor", "alice")
    return root


def test_query_filters_combine(chat: Path) -> None:
    """`query` filters by type, stream, actor and visibility, and repeated options match any."""
    def seqs(*args: str) -> list[tuple[str, int]]:
        return [(e["stream"], e["seq"]) for e in json_lines(ok(chat, "query", "--json", *args))]

    assert seqs("--type", "question") == [("chat", 1), ("chat", 3), ("other", 1)]
    assert seqs("--type", "question", "--stream", "chat") == [("chat", 1), ("chat", 3)]
    assert seqs("--type", "question", "--type", "answer", "--stream", "chat") == [
        ("chat", 1), ("chat", 2), ("chat", 3)]
    assert seqs("--actor", "alice") == [("chat", 1), ("other", 1)]
    assert seqs("--visibility", "private") == [("chat", 2)]
    assert seqs("--stream", "chat", "--stream", "other", "--actor", "bob") == [("chat", 2), ("chat", 3)]


def test_query_since_and_until(chat: Path) -> None:
    """--since is inclusive and --until exclusive, and both accept any RFC 3339 form."""
    other = json_lines(ok(chat, "query", "--json", "--stream", "other"))[0]
    assert [e["stream"] for e in json_lines(ok(chat, "query", "--json", "--since", other["ts"]))] == ["other"]
    before = json_lines(ok(chat, "query", "--json", "--until", other["ts"]))
    assert [e["stream"] for e in before] == ["chat"] * 3
    assert ok(chat, "query", "--since", "2999-01-01T00:00:00+02:00") == ""
    assert len(ok(chat, "query", "--since", "2000-01-01").splitlines()) == 4


def test_query_text_output_is_one_line_per_event(chat: Path) -> None:
    """Without --json, `query` prints one readable line per event naming stream, seq, type and actor."""
    lines = ok(chat, "query", "--type", "answer").splitlines()
    assert len(lines) == 1
    assert " chat#2 answer bob i=1 (private)" in lines[0]


@pytest.mark.parametrize("option", ["--since", "--until"])
@pytest.mark.parametrize("value", [
    "yesterday",
    "2026-11-22T25:00:00Z",
    # Shaped like agentlog's canonical form (27 chars, T, '.', Z) but not a date: the library's fast path in
    # parse_ts returns such strings unchecked, so these are accepted (exit 0) instead of refused.
    "2026-13-45T99:99:99.000000Z",
    "XXXXXXXXXXTXXXXXXXX.XXXXXXZ",
])
def test_query_bad_timestamp_exits_2(chat: Path, option: str, value: str) -> None:
    """A timestamp that is not RFC 3339 is invalid input: exit 2, one line naming it."""
    assert_one_line_error(run(chat, "query", option, value), 2, value)


def test_query_bad_stream_name_exits_2(chat: Path) -> None:
    """`query --stream` with an invalid name exits 2."""
    assert_one_line_error(run(chat, "query", "--stream", "../etc"), 2, "stream name")


# --- streams ------------------------------------------------------------------------------------------------

def test_streams_json_gives_name_events_bytes_segments_last_ts(chat: Path) -> None:
    """`streams --json` prints one object per stream with its stat, matching the files on disk."""
    rows = json_lines(ok(chat, "streams", "--json"))
    assert [r["name"] for r in rows] == ["chat", "other"]
    chat_row = rows[0]
    assert set(chat_row) == {"name", "events", "bytes", "segments", "last_ts"}
    assert chat_row["events"] == 3 and chat_row["segments"] == 1
    assert chat_row["bytes"] == (chat / "logs" / "chat.jsonl").stat().st_size
    assert chat_row["last_ts"] == json_lines(ok(chat, "tail", "chat", "-n", "1", "--json"))[0]["ts"]


def test_streams_text_is_a_table(chat: Path) -> None:
    """`streams` without --json prints a header and one row per stream."""
    lines = ok(chat, "streams").splitlines()
    assert lines[0].split() == ["STREAM", "EVENTS", "BYTES", "SEGMENTS", "LAST", "TS"]
    assert [line.split()[:2] for line in lines[1:]] == [["chat", "3"], ["other", "1"]]


def test_streams_on_an_empty_root(root: Path) -> None:
    """`streams` on a log with no streams prints nothing on stdout and says so on stderr, exit 0."""
    done = run(root, "streams")
    assert done.returncode == 0 and done.stdout == "" and "no streams" in done.stderr
    assert ok(root, "streams", "--json") == ""


# --- verify -------------------------------------------------------------------------------------------------

def test_verify_intact_log_exits_0_with_a_summary(chat: Path) -> None:
    """`verify` on an intact log exits 0 and prints a one-line summary of streams and events."""
    assert ok(chat, "verify").splitlines() == ["ok: 2 streams, 4 events intact"]
    assert ok(chat, "verify", "chat").splitlines() == ["ok: 1 stream, 3 events intact"]


def test_verify_corrupted_file_exits_1_naming_path_and_line(chat: Path) -> None:
    """A damaged line makes `verify` exit 1 with a `path:line: what` line for it."""
    path = chat / "logs" / "chat.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = b'{"seq": 2, "id": "x", "type": "answer", "data": {"oops"\n'
    path.write_bytes(b"".join(lines))
    done = run(chat, "verify")
    assert done.returncode == 1, done.stdout
    out = done.stdout.splitlines()
    assert any(line.startswith(f"{path}:2: ") for line in out), out
    assert out[-1].startswith("FAILED: ")
    # Only the damaged stream is reported; checking just the intact one passes.
    assert run(chat, "verify", "other").returncode == 0


def test_verify_torn_tail_exits_1(chat: Path) -> None:
    """A stream ending in half a record (a writer died mid-write) fails `verify`."""
    path = chat / "logs" / "other.jsonl"
    with open(path, "ab") as f:
        f.write(b'{"seq": 2, "id": "01')
    done = run(chat, "verify", "--json")
    assert done.returncode == 1
    rows = json_lines(done.stdout)
    problems = [r for r in rows if r["level"] == "problem"]
    assert problems and problems[0]["path"] == str(path) and "torn" in problems[0]["what"]
    assert rows[-1]["level"] == "summary" and rows[-1]["ok"] is False


def test_verify_prints_warnings_without_failing(chat: Path) -> None:
    """A line from a foreign writer (no seq or id) is a warning: printed with `warning: `, exit 0."""
    path = chat / "logs" / "other.jsonl"
    with open(path, "ab") as f:
        f.write(b'{"type": "shell", "timestamp": "2999-01-01T00:00:00Z"}\n')
    done = run(chat, "verify")
    assert done.returncode == 0, done.stdout
    out = done.stdout.splitlines()
    assert any(line.startswith(f"warning: {path}:2: ") for line in out), out
    assert out[-1].startswith("ok: ") and "1 warning" in out[-1]


def test_verify_json_summary(chat: Path) -> None:
    """`verify --json` ends with a summary object holding per-stream counts."""
    [summary] = json_lines(ok(chat, "verify", "--json"))
    assert summary == {"level": "summary", "ok": True, "streams": 2, "events": 4, "problems": 0,
                       "warnings": 0, "counts": {"chat": 3, "other": 1}}


def test_verify_unknown_stream_fails(chat: Path) -> None:
    """Naming a stream that does not exist is a problem: exit 1."""
    done = run(chat, "verify", "nope")
    assert done.returncode == 1 and "no such stream" in done.stdout


# --- global options, errors, help ---------------------------------------------------------------------------

def test_json_flag_works_before_and_after_the_command(chat: Path) -> None:
    """--json is accepted both as a global option and as a command option, with the same output."""
    assert ok(chat, "--json", "streams") == ok(chat, "streams", "--json")
    assert ok(chat, "--json", "tail", "chat") == ok(chat, "tail", "chat", "--json")
    assert json_lines(ok(chat, "--json", "tail", "chat"))[0]["seq"] == 1


def test_root_option_after_the_command(root: Path, tmp_path: Path) -> None:
    """--root is accepted after the command too."""
    done = run(None, "append", "s", "note", "--root", str(root), cwd=tmp_path)
    assert done.returncode == 0
    assert len(read_all(root, "s")) == 1 and not (tmp_path / ".agentlog").exists()


def test_root_from_the_environment(tmp_path: Path) -> None:
    """Without --root, $AGENTLOG_ROOT names the log."""
    target = tmp_path / "from-env"
    done = run(None, "append", "s", "note", env={"AGENTLOG_ROOT": str(target)}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(read_all(target, "s")) == 1 and not (tmp_path / ".agentlog").exists()


def test_default_root_is_dot_agentlog_in_the_working_directory(tmp_path: Path) -> None:
    """With neither --root nor $AGENTLOG_ROOT, the log is ./.agentlog."""
    done = run(None, "append", "s", "note", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / ".agentlog" / "logs" / "s.jsonl").is_file()


def test_storage_failure_exits_1(tmp_path: Path) -> None:
    """A root that cannot be used (a regular file) is a storage failure: exit 1, one line naming it."""
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    done = run(not_a_dir, "append", "s", "note")
    assert_one_line_error(done, 1, str(not_a_dir))


def test_lock_timeout_exits_1(root: Path) -> None:
    """An append that cannot get the stream's lock within the 10 s lock timeout exits 1 naming the file."""
    ok(root, "append", "s", "first")
    path = root / "logs" / "s.jsonl"
    with open(path, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what flock(1) or another agentlog writer would hold
        done = run(root, "append", "s", "second")
    assert_one_line_error(done, 1, "lock", str(path))
    assert [e.type for e in read_all(root, "s")] == ["first"]


@pytest.mark.parametrize("args", [["bogus"], [], ["append", "s"], ["tail"], ["query", "--nope"],
                                  ["stress", "--procs", "0"], ["tail", "s", "-n", "x"]])
def test_usage_errors_exit_2_with_one_line(tmp_path: Path, args: list[str]) -> None:
    """Bad command lines exit 2 with a single `error: ...` line on stderr."""
    assert_one_line_error(run(tmp_path, *args), 2)


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no sub-commands")


def test_every_command_and_option_has_help(tmp_path: Path) -> None:
    """Every command's --help works and documents each of its options and arguments."""
    parser = build_parser()
    commands = _commands(parser)
    assert set(commands) == {"append", "tail", "query", "streams", "verify", "snapshot", "summary", "init", "ledger",
                             "heartbeat", "status", "schema", "validate", "run", "session-summary", "task", "spool",
                             "stress"}
    top = ok(tmp_path, "--help")
    for name, sub in [("", parser), *commands.items()]:
        text = ok(tmp_path, *([name] if name else []), "--help")
        if name:
            assert name in top and sub.description, name
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)
            for flag in action.option_strings or [action.metavar]:
                assert flag in text, (name, flag)


def test_version(tmp_path: Path) -> None:
    """`agentlog --version` prints the package version."""
    assert ok(tmp_path, "--version").strip() == f"agentlog {agentlog.__version__}"


def test_main_returns_the_exit_status(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`agentlog.cli.main(argv)` runs in-process and returns the exit status instead of exiting."""
    assert main(["--root", str(root), "append", "s", "note", "hi"]) == 0
    assert UUID.match(capsys.readouterr().out.strip())
    assert main(["--root", str(root), "append", "../s", "note"]) == 2
    assert capsys.readouterr().err.startswith("error: invalid stream name")
    assert main(["--root", str(root), "tail", "nope"]) == 1
    assert main(["--root", str(root), "--help"]) == 0


def test_append_does_not_import_heavy_modules(root: Path) -> None:
    """`agentlog append` stays light: rich, multiprocessing, the stress module and the spool's replay engine
    (with the spool on, as by default) are never imported."""
    code = ("import sys; from agentlog.cli import main; "
            f"status = main(['--root', {str(root)!r}, 'append', 's', 'note']); "
            "heavy = [m for m in ('rich', 'multiprocessing', 'agentlog.stress', 'shutil', 'asyncio', "
            "'agentlog._spoolreplay') if m in sys.modules]; print(status, heavy)")
    env = {**os.environ, "AGENTLOG_SPOOL": str(root.parent / "spool")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert done.stdout.splitlines()[-1] == "0 []"


# --- append --redact ----------------------------------------------------------------------------------------

GH_TOKEN = "ghp_" + "Zq8" * 12  # a real-format token, made here so the repository holds none


def stored(root: Path, stream: str) -> list[dict]:
    return json_lines((root / "logs" / f"{stream}.jsonl").read_text())


def test_append_redact_removes_secrets_from_content_data_and_fields(root: Path) -> None:
    out = ok(root, "append", "s", "note", f"push with {GH_TOKEN}", "--redact", "--json",
             "--data", '{"db": {"password": "hunter2"}, "dsn": "postgres://app:pw-123456@db/prod"}')
    [ev] = json_lines(out)
    assert ev["data"] == {"db": {"password": "[REDACTED:secret_field]"},
                          "dsn": "postgres://app:[REDACTED:url_password]@db/prod",
                          "content": "push with [REDACTED:github_token]"}
    assert ev["redactions"] == [{"rule": "github_token", "count": 1}, {"rule": "url_password", "count": 1},
                                {"rule": "secret_field", "count": 1}]
    assert stored(root, "s") == [ev]
    raw = (root / "logs" / "s.jsonl").read_text()
    assert GH_TOKEN not in raw and "hunter2" not in raw and "pw-123456" not in raw
    ok(root, "append", "s", "note", f"push with {GH_TOKEN}")  # without --redact: stored as given
    plain = stored(root, "s")[1]
    assert plain["data"]["content"] == f"push with {GH_TOKEN}" and "redactions" not in plain


def test_append_redact_applies_to_every_event_of_a_stdin_batch(root: Path) -> None:
    lines = "\n".join(json.dumps(item) for item in [
        {"type": "a", "data": {"api_key": "k-1"}},
        {"type": "b", "note": f"token {GH_TOKEN}"},
        {"type": "c", "data": {"content": "nothing secret"}},
    ]) + "\n"
    ok(root, "append", "s", "-", "--redact", "--actor", "alice", stdin=lines)
    evs = stored(root, "s")
    assert [ev["type"] for ev in evs] == ["a", "b", "c"] and {ev["actor"] for ev in evs} == {"alice"}
    assert evs[0]["data"] == {"api_key": "[REDACTED:secret_field]"}
    assert evs[0]["redactions"] == [{"rule": "secret_field", "count": 1}]
    assert evs[1]["note"] == "token [REDACTED:github_token]"
    assert "redactions" not in evs[2]
    bad = '{"type": "a", "data": {"password": "x"}, "redactions": "yes"}\n'
    assert_one_line_error(run(root, "append", "s", "-", "--redact", stdin=bad), 2,
                          "stdin line 1: redactions must be a list", "nothing was appended")
    assert len(stored(root, "s")) == 3


def test_append_redact_with_a_bad_rules_file_is_a_usage_error_and_writes_nothing(root: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text('{"rules": [{"name": "broken", "pattern": "(tk"}]}')
    done = run(root, "append", "s", "note", "hello", "--redact", env={"AGENTLOG_REDACT_RULES": str(rules)})
    assert_one_line_error(done, 2, f"$AGENTLOG_REDACT_RULES: {rules}: rule 'broken': bad pattern: missing )")
    assert not (root / "logs").exists()
    done = run(root, "append", "s", "note", "hello", env={"AGENTLOG_REDACT_RULES": str(rules)})
    assert done.returncode == 0, "without --redact the rules are never read"
    rules.write_text('{"rules": [{"name": "ticket", "pattern": "TK-[0-9]{6}"}]}')
    done = run(root, "append", "s", "note", "see TK-123456", "--redact", "--json",
               env={"AGENTLOG_REDACT_RULES": str(rules)})
    assert done.returncode == 0 and json_lines(done.stdout)[0]["data"]["content"] == "see [REDACTED:ticket]"


def test_append_redact_stays_light_too(root: Path) -> None:
    """`--redact` imports the rules, and nothing heavy; a plain append does not even import the rules."""
    for extra, redact_loaded in (([], False), (["--redact"], True)):
        code = ("import sys; from agentlog.cli import main; "
                f"status = main(['--root', {str(root)!r}, 'append', 's', 'note', 'x', *{extra!r}]); "
                "heavy = [m for m in ('rich', 'multiprocessing', 'agentlog.stress', 'shutil', 'asyncio') "
                "if m in sys.modules]; print(status, heavy, 'agentlog.redact' in sys.modules)")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert done.stdout.splitlines()[-1] == f"0 [] {redact_loaded}"


def test_main_builds_only_the_command_it_runs_and_knows_every_command() -> None:
    """`COMMANDS` lists every sub-command (main() uses it to build only the one that runs), and the command
    is found after the global options."""
    from agentlog.cli._parser import COMMANDS, command_in

    assert set(COMMANDS) == set(_commands(build_parser()))
    assert set(_commands(build_parser(only="append"))) == {"append"}
    assert command_in(["--root", "r", "--json", "append", "s", "t"]) == "append"
    assert command_in(["--root=r", "task", "ready"]) == "task"
    assert command_in(["--help"]) is None and command_in(["apend"]) is None and command_in([]) is None
