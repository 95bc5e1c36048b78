"""`agentlog run`: a command wrapped in an agent's ledger, run as users run it (real processes, signals, disks)."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agentlog import runner
from agentlog.ledger import open_ledger
from agentlog.runner import TAIL_BYTES, run_command
from agentlog.validate import validate_files
from conftest import fill_disk

PY = sys.executable
# Secrets in real formats, made at run time so the repository holds none.
GH_TOKEN = "ghp_" + "Zq8" * 12
AWS_KEY = "AKIA" + "Q7" * 8
PASSWORD = "hunter2-" + "pw" * 6
URL_PASSWORD = "s3cr3t-" + "x9" * 5

# A child that counts SIGINTs: it says "ready", waits for the first one, then for more, and exits 40 + count.
# It takes them with sigtimedwait, which dequeues each at once, so a second one sent soon after is counted.
COUNT_SIGINT = """
import signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
print("ready", flush=True)
n = 0
if signal.sigtimedwait({signal.SIGINT}, 30) is not None:
    n = 1
    while signal.sigtimedwait({signal.SIGINT}, 0.5) is not None:
        n += 1
sys.exit(40 + n)
"""


def cli_argv(root: Path, *args: str) -> list[str]:
    return [PY, "-m", "agentlog", "--root", str(root), *args]


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("AGENTLOG_ROOT", "AGENTLOG_REDACT_RULES")}
    env.update(extra or {})
    return env


def run_cli(root: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_argv(root, *args), input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                          capture_output=True, text=True, env=cli_env(env), cwd=cwd, timeout=timeout, check=False)


def start_cli(root: Path, *args: str, procs: list[subprocess.Popen[bytes]],
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`agentlog run` in the background, in its own session (so teardown can kill its whole group)."""
    proc = subprocess.Popen(cli_argv(root, *args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=cli_env(env), start_new_session=True)
    procs.append(proc)
    return proc


def read_line(stream: Any, timeout: float = 30) -> bytes:
    """One line from a pipe, or fail after ``timeout`` seconds (never blocks the test forever)."""
    fd = stream.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0, f"no line within {timeout}s (got {data!r})"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 1)
            assert chunk, f"end of output before a whole line (got {data!r})"
            data += chunk
    return data


def events(root: Path, agent: str) -> list[dict[str, Any]]:
    found = [json.loads(line) for path in sorted((root / "logs" / "ledger" / agent).glob("*.jsonl"))
             for line in path.read_text().splitlines()]
    return sorted(found, key=lambda ev: ev["seq"])


def of_type(evs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [ev for ev in evs if ev["type"] == kind]


def status(root: Path, agent: str) -> dict[str, Any]:
    return json.loads((root / "agents" / agent / "status.json").read_text())


def all_bytes(*dirs: Path) -> bytes:
    return b"".join(p.read_bytes() for d in dirs if d.exists() for p in sorted(d.rglob("*")) if p.is_file())


# --- exit codes, signals ------------------------------------------------------------------------------------

def test_exit_codes_pass_through_and_each_run_is_recorded(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for code in (0, 1, 3, 255):
        res = run_cli(root, "run", "--agent", "ann", "--task", f"T{code}", "--", "sh", "-c", f"exit {code}")
        assert res.returncode == code, res.stderr
        assert res.stderr == ""
    evs = events(root, "ann")
    assert [ev["type"] for ev in evs] == ["task_start", "heartbeat", "task_result"] * 4
    results = of_type(evs, "task_result")
    assert [(ev["task"], ev["data"]["exit_code"], ev["data"]["signal"]) for ev in results] == \
        [("T0", 0, None), ("T1", 1, None), ("T3", 3, None), ("T255", 255, None)]
    start = of_type(evs, "task_start")[0]
    assert start["data"]["command"] == ["sh", "-c", "exit 0"] and start["data"]["cwd"] == str(Path.cwd())
    assert start["data"]["git_head"] is None or isinstance(start["data"]["git_head"], str)
    assert all(ev["data"]["duration_s"] >= 0 for ev in results)
    assert of_type(evs, "error") == [] and status(root, "ann")["state"] == "idle"
    files = [str(p) for p in (root / "logs").rglob("*.jsonl")]
    assert list(validate_files(files)) == []
    assert list(validate_files([root / "agents" / "ann" / "status.json"], status=True)) == []


def test_a_command_killed_by_a_signal_exits_128_plus_n_with_an_error_event(tmp_path: Path) -> None:
    root = tmp_path / "root"
    res = run_cli(root, "run", "--agent", "ann", "--", "sh", "-c", "kill -KILL $$")
    assert res.returncode == 128 + 9, res.stderr
    evs = events(root, "ann")
    [result] = of_type(evs, "task_result")
    assert (result["data"]["exit_code"], result["data"]["signal"]) == (137, 9)
    [error] = of_type(evs, "error")
    assert error["data"]["kind"] == "signal" and "SIGKILL" in error["data"]["message"]
    assert evs[-1]["type"] == "error" and status(root, "ann")["state"] == "error"


def test_sigterm_is_forwarded_and_a_command_that_handles_it_chooses_the_exit_code(
        tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]]) -> None:
    root = tmp_path / "root"
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda s, f: sys.exit(42))\n"
            "print('ready', flush=True)\n"
            "time.sleep(30)\n")
    proc = start_cli(root, "run", "--agent", "ann", "--", PY, "-c", code, procs=fault_procs)
    assert read_line(proc.stdout) == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 42
    evs = events(root, "ann")
    [result] = of_type(evs, "task_result")
    assert (result["data"]["exit_code"], result["data"]["signal"]) == (42, None)
    assert of_type(evs, "error") == []


def test_sigterm_is_forwarded_to_a_command_that_does_not_handle_it(
        tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]]) -> None:
    root = tmp_path / "root"
    proc = start_cli(root, "run", "--agent", "ann", "--", PY, "-c",
                     "import time; print('ready', flush=True); time.sleep(30)", procs=fault_procs)
    assert read_line(proc.stdout) == b"ready\n"
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert time.monotonic() - began < 10, "the command should have ended at once, not after its sleep"
    evs = events(root, "ann")
    assert of_type(evs, "task_result")[0]["data"]["signal"] == signal.SIGTERM
    assert "SIGTERM" in of_type(evs, "error")[0]["data"]["message"]


def test_sigint_sent_to_agentlog_reaches_the_command_exactly_once(
        tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]]) -> None:
    root = tmp_path / "root"
    proc = start_cli(root, "run", "--agent", "ann", "--", PY, "-c", COUNT_SIGINT, procs=fault_procs)
    assert read_line(proc.stdout) == b"ready\n"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 41


def test_ctrl_c_in_a_terminal_reaches_the_command_exactly_once(tmp_path: Path) -> None:
    """Ctrl-C makes the terminal send SIGINT to its whole foreground group, the command included: agentlog
    must not forward it a second time (a second SIGINT would interrupt the command's own cleanup)."""
    root = tmp_path / "root"
    argv = cli_argv(root, "run", "--agent", "ann", "--", PY, "-c", COUNT_SIGINT)
    env = cli_env()
    pid, master = pty.fork()  # the child leads a new session whose controlling terminal is the pty
    if pid == 0:
        try:
            os.execve(PY, argv, env)
        finally:
            os._exit(127)
    try:
        seen = b""
        deadline = time.monotonic() + 30
        while b"ready" not in seen:
            assert time.monotonic() < deadline, f"no 'ready' from the command: {seen!r}"
            if select.select([master], [], [], 1)[0]:
                seen += os.read(master, 1024)
        os.write(master, b"\x03")  # Ctrl-C
        while True:
            if not select.select([master], [], [], 30)[0]:
                break
            try:
                if not os.read(master, 1024):
                    break
            except OSError:  # EIO: the terminal's last user is gone
                break
        _, wait_status = os.waitpid(pid, 0)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(master)
    assert os.waitstatus_to_exitcode(wait_status) == 41


# --- output, stdin, status ------------------------------------------------------------------------------------

def test_output_is_passed_through_live_and_status_is_busy_during_the_run(
        tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]]) -> None:
    root = tmp_path / "root"
    go = tmp_path / "go"
    code = ("import os, sys, time\n"
            "print('first line', flush=True)\n"
            "print('first error', file=sys.stderr, flush=True)\n"
            f"while not os.path.exists({str(go)!r}):\n"
            "    time.sleep(0.01)\n"
            "print('second line')\n")
    proc = start_cli(root, "run", "--agent", "ann", "--task", "T-live", "--heartbeat", "0.2", "--", PY, "-c", code,
                     procs=fault_procs)
    assert read_line(proc.stdout) == b"first line\n"
    assert read_line(proc.stderr) == b"first error\n"
    assert proc.poll() is None, "the command should still be waiting"
    during = status(root, "ann")
    assert (during["state"], during["task"]) == ("busy", "T-live")
    time.sleep(0.5)
    assert len(of_type(events(root, "ann"), "heartbeat")) >= 2, "heartbeats while it runs"
    assert status(root, "ann")["next_heartbeat_due"] is not None
    go.touch()
    assert proc.wait(timeout=30) == 0
    assert proc.stdout is not None and proc.stdout.read() == b"second line\n"
    after = status(root, "ann")
    assert (after["state"], after["task"]) == ("idle", None)
    result = of_type(events(root, "ann"), "task_result")[0]["data"]
    assert result["stdout_tail"] == "first line\nsecond line\n" and result["stderr_tail"] == "first error\n"
    assert of_type(events(root, "ann"), "heartbeat")[0]["data"]["interval_s"] == 0.4


def test_stdin_is_passed_through_and_the_command_sees_its_agent_and_task(tmp_path: Path) -> None:
    root = tmp_path / "root"
    res = run_cli(root, "run", "--agent", "ann", "--task", "T-9", "--heartbeat", "0", "--", "cat", stdin="one\ntwo\n")
    assert (res.returncode, res.stdout, res.stderr) == (0, "one\ntwo\n", "")
    assert [ev["type"] for ev in events(root, "ann")] == ["task_start", "task_result"]
    res = run_cli(root, "run", "--agent", "ann", "--task", "T-10", "--", PY, "-c",
                  "import os; print(os.environ['AGENTLOG_AGENT'], os.environ['AGENTLOG_TASK'])")
    assert res.stdout == "ann T-10\n"


def test_the_tails_are_bounded_and_the_output_is_whole(tmp_path: Path) -> None:
    root = tmp_path / "root"
    code = ("import sys\nfor i in range(2000): print('%05d' % i + 'x' * 60)\n"
            "print('END')\nprint('é' * 3000, file=sys.stderr)")
    res = subprocess.run(cli_argv(root, "run", "--agent", "ann", "--", PY, "-c", code), capture_output=True,
                         stdin=subprocess.DEVNULL, env=cli_env(), timeout=60, check=False)
    assert res.returncode == 0
    assert len(res.stdout) == 2000 * 66 + 4 and res.stdout.endswith(b"01999" + b"x" * 60 + b"\nEND\n")
    data = of_type(events(root, "ann"), "task_result")[0]["data"]
    assert data["stdout_bytes"] == 2000 * 66 + 4 and data["stderr_bytes"] == 6001
    assert len(data["stdout_tail"].encode()) <= TAIL_BYTES and data["stdout_tail"].endswith("\nEND\n")
    assert len(data["stdout_tail"].encode()) > TAIL_BYTES - 70
    assert len(data["stderr_tail"].encode()) <= TAIL_BYTES and set(data["stderr_tail"]) <= {"é", "\n"}


# --- the ledger cannot be written -------------------------------------------------------------------------

@pytest.mark.slow
def test_on_a_full_disk_the_command_runs_and_its_events_are_spooled(tmp_path: Path, fault_tmpfs: Any) -> None:
    mount = fault_tmpfs.mount("1m")
    root = mount / "root"
    root.mkdir()
    fill_disk(mount / "filler")
    spool = tmp_path / "spool"
    ran = tmp_path / "ran"
    code = (f"import time; open({str(ran)!r}, 'w').write('x'); print('working', flush=True); time.sleep(0.5); "
            "raise SystemExit(7)")
    res = run_cli(root, "run", "--agent", "disk", "--task", "T-full", "--heartbeat", "0.2", "--", PY, "-c", code,
                  env={"AGENTLOG_SPOOL": str(spool)})
    assert res.returncode == 7, res.stderr
    assert ran.exists() and res.stdout == "working\n"
    assert "agentlog: warning:" in res.stderr and "spooled" in res.stderr
    with open_ledger(root, spool_dir=spool) as led:
        waiting = led.log.spool_status()
        assert waiting is not None and waiting.records >= 3 and set(waiting.streams) == {"ledger/disk"}
        assert events(root, "disk") == []
        (mount / "filler").unlink()
        report = led.log.replay_spool()
        assert report.remaining == 0
        kinds = [ev.type for ev in led.log.read("ledger/disk")]
        assert kinds[0] == "task_start" and kinds[-1] == "task_result" and "heartbeat" in kinds
        assert [ev.data["exit_code"] for ev in led.log.read("ledger/disk") if ev.type == "task_result"] == [7]
        assert led.status("disk")["state"] == "idle"


@pytest.mark.slow
def test_on_a_full_disk_without_a_spool_the_command_still_runs_with_a_warning(
        tmp_path: Path, fault_tmpfs: Any) -> None:
    mount = fault_tmpfs.mount("1m")
    root = mount / "root"
    root.mkdir()
    fill_disk(mount / "filler")
    ran = tmp_path / "ran"
    res = run_cli(root, "run", "--agent", "disk", "--heartbeat", "0.1", "--", PY, "-c",
                  f"import time; open({str(ran)!r}, 'w').write('x'); time.sleep(0.5); raise SystemExit(5)",
                  env={"AGENTLOG_SPOOL": "off"})
    assert res.returncode == 5 and ran.exists()
    warnings = [line for line in res.stderr.splitlines() if line.startswith("agentlog: warning:")]
    assert any("could not write task_start" in line for line in warnings), res.stderr
    assert any("could not write task_result" in line for line in warnings), res.stderr
    assert sum("heartbeat" in line for line in warnings) == 1, "repeated heartbeat failures are reported once"
    assert all("No space left" in line or "ENOSPC" in line or "28" in line for line in warnings), res.stderr


@pytest.mark.slow
def test_events_spooled_on_a_full_disk_are_redacted_and_folded_where_they_happened(
        tmp_path: Path, fault_tmpfs: Any) -> None:
    """The run's events wait in the spool (redacted there too: the spool is on a disk). Once space is freed, a
    newer ledger write lands first and replays them after it; the status keeps the newer state."""
    mount = fault_tmpfs.mount("1m")
    root = mount / "root"
    root.mkdir()
    fill_disk(mount / "filler")
    spool = tmp_path / "spool"
    code = "import sys; print('using ' + sys.argv[2]); print('password=' + sys.argv[4], file=sys.stderr)"
    res = run_cli(root, "run", "--agent", "disk", "--task", "T-full", "--heartbeat", "0", "--", PY, "-c", code,
                  "--token", GH_TOKEN, "--password", PASSWORD, env={"AGENTLOG_SPOOL": str(spool)})
    assert res.returncode == 0 and GH_TOKEN in res.stdout and "spooled" in res.stderr, res.stderr
    assert events(root, "disk") == [] and all_bytes(spool)
    for secret in (GH_TOKEN, PASSWORD):
        assert secret.encode() not in all_bytes(spool), "a secret reached the spool"
    (mount / "filler").unlink()
    res = run_cli(root, "ledger", "write", "--agent", "disk", "state_change", "--data", '{"state": "offline"}',
                  env={"AGENTLOG_SPOOL": str(spool)})
    assert res.returncode == 0, res.stderr
    evs = events(root, "disk")
    assert [(ev["type"], "spooled_at" in ev) for ev in evs] == [
        ("state_change", False), ("task_start", True), ("task_result", True)], "replayed after the newer event"
    assert evs[2]["data"]["stdout_tail"] == "using [REDACTED:github_token]\n"
    st = status(root, "disk")
    assert (st["state"], st["task"], st["through_seq"]) == ("offline", None, 3)
    assert st["since"] == evs[0]["ts"]
    for secret in (GH_TOKEN, PASSWORD):
        assert secret.encode() not in all_bytes(root, spool)


# --- a command that cannot start --------------------------------------------------------------------------

def test_a_command_that_cannot_start_gets_an_error_event_and_126_or_127(tmp_path: Path) -> None:
    root = tmp_path / "root"
    res = run_cli(root, "run", "--agent", "ann", "--task", "T-nf", "--", "no-such-command-anywhere", "arg")
    assert res.returncode == 127
    assert res.stderr.startswith("error: cannot run no-such-command-anywhere") and res.stdout == ""
    evs = events(root, "ann")
    assert [ev["type"] for ev in evs] == ["task_start", "task_result", "error"]
    assert evs[1]["data"]["exit_code"] == 127
    assert evs[2]["data"]["kind"] == "not_found" and evs[2]["task"] == "T-nf"
    assert status(root, "ann")["state"] == "error"
    script = tmp_path / "not-executable.sh"
    script.write_text("echo hi\n")
    script.chmod(0o644)
    res = run_cli(root, "run", "--agent", "ann", "--", str(script))
    assert res.returncode == 126 and of_type(events(root, "ann"), "error")[-1]["data"]["kind"] == "not_executable"


def test_usage_errors_exit_2_before_anything_is_written(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for args in (["run", "--agent", "ann"], ["run", "--agent", "ann", "--"], ["run", "--agent", "a/b", "--", "true"],
                 ["run", "--agent", "ann", "--heartbeat", "-1", "--", "true"],
                 ["run", "--agent", "ann", "--heartbeat", "1e-9", "--", "true"],
                 ["run", "--agent", "ann", "--task", "", "--", "true"], ["run", "--", "true"]):
        res = run_cli(root, *args)
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr.startswith("error: "), res.stderr
    assert not (root / "logs").exists()


# --- redaction --------------------------------------------------------------------------------------------

def test_secrets_in_the_command_line_and_the_output_never_reach_the_disk(tmp_path: Path) -> None:
    root = tmp_path / "root"
    code = ("import sys\n"
            "print('token: ' + sys.argv[2])\n"
            "print('password=' + sys.argv[4], file=sys.stderr)\n"
            "print('key ' + sys.argv[6], file=sys.stderr)\n")
    url = f"https://bob:{URL_PASSWORD}@db.example.com/x"
    res = run_cli(root, "run", "--agent", "ann", "--", PY, "-c", code, "--token", GH_TOKEN, "--password", PASSWORD,
                  url, AWS_KEY)
    assert res.returncode == 0, res.stderr
    assert GH_TOKEN in res.stdout and PASSWORD in res.stderr, "the user's own terminal sees the real output"
    on_disk = all_bytes(root)
    for secret in (GH_TOKEN, AWS_KEY, PASSWORD, URL_PASSWORD):
        assert secret.encode() not in on_disk, secret
    start, result = (of_type(events(root, "ann"), kind)[0] for kind in ("task_start", "task_result"))
    assert start["data"]["command"][3:] == ["--token", "[REDACTED:github_token]", "--password",
                                            "[REDACTED:secret_assignment]",
                                            "https://bob:[REDACTED:url_password]@db.example.com/x",
                                            "[REDACTED:aws_access_key_id]"]
    assert {r["rule"] for r in start["redactions"]} == {"github_token", "secret_assignment", "url_password",
                                                         "aws_access_key_id"}
    assert result["data"]["stdout_tail"] == "token: [REDACTED:github_token]\n"
    assert "[REDACTED:secret_assignment]" in result["data"]["stderr_tail"]
    assert {r["rule"] for r in result["redactions"]} >= {"github_token", "secret_assignment", "aws_access_key_id"}


def test_a_secret_in_the_task_id_never_reaches_the_disk(tmp_path: Path) -> None:
    root = tmp_path / "root"
    res = run_cli(root, "run", "--agent", "ann", "--task", f"deploy {GH_TOKEN}", "--heartbeat", "0.1", "--",
                  PY, "-c", "import time; time.sleep(0.4)")
    assert res.returncode == 0, res.stderr
    assert GH_TOKEN.encode() not in all_bytes(root)
    evs = events(root, "ann")
    assert {ev["type"] for ev in evs} == {"task_start", "heartbeat", "task_result"}
    assert {ev["task"] for ev in evs} == {"deploy [REDACTED:github_token]"}
    # Within 256 characters as given, but not once redacted: a usage error before anything runs.
    res = run_cli(root, "run", "--agent", "bob", "--task", "t" * 240 + " password=abc", "--", PY, "-c", "pass")
    assert res.returncode == 2 and not (root / "logs" / "ledger" / "bob").exists()


def test_the_argument_after_a_secret_named_flag_is_redacted_only_when_it_is_one(tmp_path: Path) -> None:
    with open_ledger(tmp_path / "root", spool_dir=False) as led:
        result = run_command(led, "ann", [PY, "-c", "pass", "--pgpassword", "hunter2x", "--db-api-key", "k-1",
                                          "--max-tokens", "4096", "--token", "42", "--pwd", "/home/ann", "-x", "y"],
                             heartbeat=None, passthrough=False, cwd=tmp_path)
        assert result.exit_code == 0
        start = result.events[0]
        assert start.data["command"][3:] == ["--pgpassword", "[REDACTED:secret_assignment]", "--db-api-key",
                                             "[REDACTED:secret_assignment]", "--max-tokens", "4096", "--token", "42",
                                             "--pwd", "/home/ann", "-x", "y"]
        assert start.extra["redactions"] == [{"rule": "secret_assignment", "count": 2}]


def test_a_bad_redaction_rules_file_stops_the_run_before_anything_runs(tmp_path: Path) -> None:
    """Running the command without the rules the user asked for could write their secrets: a usage error."""
    root, rules, marker = tmp_path / "root", tmp_path / "rules.json", tmp_path / "ran"
    rules.write_text('{"rules": [{"name": "broken", "pattern": "tk-[0-9"}]}')
    res = run_cli(root, "run", "--agent", "ann", "--", PY, "-c", f"open({str(marker)!r}, 'w')",
                  env={"AGENTLOG_REDACT_RULES": str(rules)})
    assert res.returncode == 2 and not marker.exists() and not (root / "logs").exists()
    assert res.stderr == (f"error: $AGENTLOG_REDACT_RULES: {rules}: rule 'broken': bad pattern: "
                          "unterminated character set at position 3\n")
    rules.write_text('{"rules": [{"name": "ticket", "pattern": "TK-[0-9]{6}"}]}')
    res = run_cli(root, "run", "--agent", "ann", "--", PY, "-c", "print('TK-123456')",
                  env={"AGENTLOG_REDACT_RULES": str(rules)})
    assert res.returncode == 0 and res.stdout == "TK-123456\n"
    assert of_type(events(root, "ann"), "task_result")[0]["data"]["stdout_tail"] == "[REDACTED:ticket]\n"


def test_a_secret_across_the_tail_cut_is_still_redacted(tmp_path: Path) -> None:
    root = tmp_path / "root"
    # The token starts 4 bytes before the tail's cut, so the tail alone would hold all of it but "ghp_".
    after = TAIL_BYTES + 4 - len(GH_TOKEN) - 1
    code = f"import sys; sys.stdout.write('a' * 20000 + ' ' + sys.argv[1] + ' ' + 'b' * {after})"
    res = run_cli(root, "run", "--agent", "ann", "--", PY, "-c", code, GH_TOKEN)
    assert res.returncode == 0
    tail = of_type(events(root, "ann"), "task_result")[0]["data"]["stdout_tail"]
    assert GH_TOKEN[4:].encode() not in all_bytes(root) and GH_TOKEN[8:] not in tail
    assert tail.endswith("b" * after) and len(tail.encode()) <= TAIL_BYTES


def test_a_secret_cut_at_the_front_of_the_kept_output_is_not_recorded(tmp_path: Path) -> None:
    """`cat` of five private keys: the output kept for the tail begins inside the second key (its BEGIN line
    dropped), and the three whole keys after it shrink to markers. What is recorded is the end of the output,
    redacted with the bytes before it in view, never the headless body of a key cut at the front."""
    def key(n: int) -> str:
        body = "\n".join(f"{n}{i:02d}".ljust(64, "Q") for i in range(50))
        return f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----\n"

    keys = "".join(key(n) for n in range(1, 6))
    assert len(keys.encode()) - runner.TAIL_BYTES - runner.REDACT_WINDOW_BYTES > len(key(1).encode())
    with open_ledger(tmp_path / "root", spool_dir=False) as led:
        result = run_command(led, "ann", [PY, "-c", "import sys; sys.stdout.write(sys.argv[1])", keys],
                             heartbeat=None, passthrough=False, cwd=tmp_path)
    assert result.exit_code == 0 and result.stdout_bytes == len(keys.encode())
    on_disk = all_bytes(tmp_path / "root")
    for n in range(1, 6):
        for i in range(50):
            assert f"{n}{i:02d}QQQQ".encode() not in on_disk, f"line {i} of key {n} reached the disk"
    assert result.stdout_tail.endswith("[REDACTED:private_key]\n")


# --- files touched ----------------------------------------------------------------------------------------

def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True,
                          env=git_env(repo)).stdout.strip()


def git_env(home: Path) -> dict[str, str]:
    return cli_env({"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "HOME": str(home),
                    "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
                    "GIT_COMMITTER_EMAIL": "t@example.com"})


def test_files_touched_in_a_git_work_tree_are_what_the_run_changed(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    for name in ("a.txt", "b.txt", "c.txt", "d.txt", "e.txt"):
        (repo / name).write_text(f"{name}\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "start")
    head = git(repo, "rev-parse", "HEAD")
    (repo / "b.txt").write_text("dirty before the run, rewritten by it with the same content\n")
    (repo / "c.txt").write_text("dirty before the run\n")
    (repo / "untracked-before.txt").write_text("x\n")
    root = repo / ".agentlog"  # inside the work tree and not ignored: its own files are never reported
    code = ("import os\n"
            "open('a.txt', 'a').write('more\\n')\n"
            "same = open('b.txt').read(); open('b.txt', 'w').write(same)\n"
            "open('c.txt', 'a').write('and changed again\\n')\n"
            "os.remove('d.txt')\n"
            "open('new.txt', 'w').write('new\\n')\n"
            "os.makedirs('sub', exist_ok=True)\n"
            "open('sub/deep.txt', 'w').write('deep\\n')\n")
    res = subprocess.run(cli_argv(root, "run", "--agent", "ann", "--heartbeat", "0.05", "--", PY, "-c", code),
                         cwd=repo, env=git_env(tmp_path), capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    evs = events(root, "ann")
    assert of_type(evs, "task_start")[0]["data"]["git_head"] == head
    data = of_type(evs, "task_result")[0]["data"]
    assert data["files_touched_method"] == "git" and data["files_touched_truncated"] is False
    assert data["files_touched"] == ["a.txt", "c.txt", "d.txt", "new.txt", "sub/deep.txt"]

    # A commit made by the command: a file that was clean before and after shows up through HEAD's change.
    code = ("import subprocess; open('../e.txt', 'a').write('x\\n')\n"
            "subprocess.run(['git', 'commit', '-qm', 'e', '../e.txt'], check=True)")
    res = subprocess.run(cli_argv(root, "run", "--agent", "ann", "--", PY, "-c", code), cwd=repo / "sub",
                         env=git_env(tmp_path), capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    data = of_type(events(root, "ann"), "task_result")[-1]["data"]
    assert data["files_touched"] == ["../e.txt"], "paths are relative to the command's working directory"
    assert git(repo, "rev-parse", "HEAD") != head


def test_files_touched_outside_git_are_found_by_mtime(tmp_path: Path) -> None:
    work = tmp_path / "plain"
    work.mkdir()
    (work / "old.txt").write_text("old\n")
    (work / "modified.txt").write_text("before\n")
    hour_ago = time.time() - 3600
    for name in ("old.txt", "modified.txt"):
        os.utime(work / name, (hour_ago, hour_ago))
    root = work / ".agentlog"
    code = ("import os\n"
            "open('modified.txt', 'a').write('after\\n')\n"
            "open('new.txt', 'w').write('n\\n')\n"
            "for d in ('sub', 'node_modules/pkg', '.venv/lib', '.git'):\n"
            "    os.makedirs(d, exist_ok=True)\n"
            "    open(os.path.join(d, 'f.txt'), 'w').write('x')\n")
    res = subprocess.run(cli_argv(root, "run", "--agent", "ann", "--", PY, "-c", code), cwd=work, env=cli_env(),
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    evs = events(root, "ann")
    assert of_type(evs, "task_start")[0]["data"]["git_head"] is None
    data = of_type(evs, "task_result")[0]["data"]
    assert data["files_touched_method"] == "mtime" and data["files_touched_truncated"] is False
    assert data["files_touched"] == ["modified.txt", "new.txt", "sub/f.txt"]


def test_the_mtime_scan_is_bounded_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "many"
    work.mkdir()
    monkeypatch.setattr(runner, "SCAN_MAX_ENTRIES", 10)
    code = "for i in range(30): open('f%02d' % i, 'w').write('x')"
    with open_ledger(tmp_path / "root", spool_dir=False) as led:
        result = run_command(led, "ann", [PY, "-c", code], cwd=work, heartbeat=None, passthrough=False)
    assert result.exit_code == 0 and result.files_touched_truncated is True
    assert result.files_touched == [f"f{i:02d}" for i in range(10)]


# --- many agents, the library -----------------------------------------------------------------------------

def test_five_agents_running_commands_at_once(tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]]) -> None:
    root = tmp_path / "root"
    go = tmp_path / "go"
    code = ("import os, sys, time\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
            "time.sleep(0.3)\n"
            "print(os.environ['AGENTLOG_AGENT'])\n"
            "sys.exit(int(sys.argv[1]))\n")
    procs = {f"agent{i}": start_cli(root, "run", "--agent", f"agent{i}", "--heartbeat", "0.1", "--", PY, "-c", code,
                                    str(10 + i), procs=fault_procs) for i in range(5)}
    deadline = time.monotonic() + 60
    while not all((root / "agents" / a / "status.json").exists() for a in procs):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert {status(root, a)["state"] for a in procs} == {"busy"}, "all five are running at once"
    go.touch()
    for i, (agent, proc) in enumerate(procs.items()):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 10 + i, err
        assert out == f"{agent}\n".encode()
    with open_ledger(root, spool_dir=False) as led:
        assert led.agents() == sorted(procs)
        for i, agent in enumerate(procs):
            evs = list(led.log.read(f"ledger/{agent}"))
            assert evs[0].type == "task_start" and evs[-1].type == "task_result"
            assert evs[-1].data["exit_code"] == 10 + i and sum(ev.type == "heartbeat" for ev in evs) >= 2
            assert len({ev.extra["task"] for ev in evs}) == 1
            assert led.status(agent)["state"] == "idle"
    assert list(validate_files([str(p) for p in (root / "logs").rglob("*.jsonl")])) == []


def test_run_command_in_process(tmp_path: Path) -> None:
    warnings: list[str] = []
    with open_ledger(tmp_path / "root", spool_dir=False) as led:
        result = run_command(led, "lib", [PY, "-c", "import sys; print('out'); print('err', file=sys.stderr)"],
                             task="T-lib", heartbeat=None, passthrough=False, warn=warnings.append, cwd=tmp_path)
        assert (result.exit_code, result.signal, result.started, result.task) == (0, None, True, "T-lib")
        assert (result.stdout_tail, result.stderr_tail) == ("out\n", "err\n")
        assert [ev.type for ev in result.events] == ["task_start", "task_result"] and warnings == []
        assert led.status("lib")["state"] == "idle"
        missing = run_command(led, "lib", ["/nonexistent/tool"], heartbeat=None, passthrough=False)
        assert (missing.exit_code, missing.started) == (127, False) and "/nonexistent/tool" in (missing.error or "")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "handlers are restored"
    with pytest.raises(ValueError):
        run_command(tmp_path / "root", "lib", [])
    with pytest.raises(ValueError):
        run_command(tmp_path / "root", "lib", ["true"], heartbeat=-1)


def test_a_ledger_that_cannot_be_opened_does_not_stop_the_command(tmp_path: Path) -> None:
    warnings: list[str] = []
    blocker = tmp_path / "file"
    blocker.write_text("a file where the root should be")
    marker = tmp_path / "ran"
    result = run_command(blocker / "root", "ann", [PY, "-c", f"open({str(marker)!r}, 'w')"], heartbeat=0.05,
                         passthrough=False, warn=warnings.append, spool_dir=False, cwd=tmp_path)
    assert result.exit_code == 0 and marker.exists() and result.events == []
    assert warnings and all("the command is not affected" in w for w in warnings)
    assert sum("heartbeat" in w for w in warnings) <= 1


def test_output_keeps_flowing_when_the_reader_is_slow(tmp_path: Path) -> None:
    """The pipe applies backpressure: nothing is dropped between the command and our stdout."""
    root = tmp_path / "root"
    proc = subprocess.Popen(cli_argv(root, "run", "--agent", "ann", "--", PY, "-c",
                                     "import sys\nfor i in range(20000): print(i)"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    chunks: list[bytes] = []

    def slow_reader() -> None:
        assert proc.stdout is not None
        time.sleep(0.5)
        chunks.append(proc.stdout.read())

    reader = threading.Thread(target=slow_reader)
    reader.start()
    reader.join(60)
    assert proc.wait(timeout=60) == 0
    assert chunks[0] == "".join(f"{i}\n" for i in range(20000)).encode()
