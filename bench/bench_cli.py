"""Case e: one process per event, ms per call: the venv's ``agentlog append`` vs 002's ``log_event.sh``.

Both are started the way an agent's shell loop starts them (``subprocess.run`` of the command, no shell in
between for agentlog; ``bash log_event.sh ...`` for 002). Each append is durable for agentlog (fsync);
002's script never fsyncs.

``log_event.sh`` is 002's script verbatim (only the log path is an argument); as written it makes jq fail and
appends an empty line, so ``log_event_fixed.sh`` (the same processes: bash, date, jq, flock, bash) is
measured beside it, and both rows are reported.

agentlog runs with its bytecode cache, as an installed package does (pip compiles it at install time); an
inherited ``PYTHONDONTWRITEBYTECODE`` would make every call recompile every module, which no user pays.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Any

from common import CONTENT, Clock, Row, interleaved, log, scratch

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "log_event.sh")
FIXED = os.path.join(HERE, "log_event_fixed.sh")


def agentlog_exe() -> str:
    """The venv's ``agentlog`` entry point, beside the interpreter running this benchmark."""
    exe = os.path.join(os.path.dirname(sys.executable), "agentlog")
    if not os.access(exe, os.X_OK):
        raise SystemExit(f"{exe} not found: install agentlog into this venv (pip install -e '.[bench]')")
    return exe


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _ours(base: str, calls: int) -> float:
    exe = agentlog_exe()
    env = _env()
    with scratch(base, "e-ours-") as root:
        with Clock() as c:
            for i in range(calls):
                subprocess.run([exe, "append", "conv-1", "question", CONTENT, "--actor", "agent-a",
                                "--interaction", str(i), "--root", root], check=True, stdout=subprocess.DEVNULL,
                               env=env)
        out = subprocess.run([exe, "streams", "--json", "--root", root], check=True, capture_output=True).stdout
        assert f'"events":{calls}'.encode() in out.replace(b" ", b""), out
    return c.seconds * 1000 / calls


def _shell(base: str, calls: int, script: str) -> float:
    with scratch(base, "e-shell-") as d:
        path = os.path.join(d, "events.log")
        with Clock() as c:
            for i in range(calls):
                subprocess.run(["bash", script, path, str(i), "agent-a", "question", CONTENT], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(path, "rb") as f:
            lines = f.read().splitlines()
        assert len(lines) >= calls, (len(lines), calls)
    return c.seconds * 1000 / calls


def case_e(base: str, calls: int, runs: int) -> tuple[list[Row], dict[str, Any]]:
    missing = [tool for tool in ("jq", "flock") if shutil.which(tool) is None]
    exe = agentlog_exe()
    with scratch(base, "e-warm-") as root:  # warm the disk cache and write the bytecode cache
        subprocess.run([exe, "append", "warm", "up", "--root", root], check=True, stdout=subprocess.DEVNULL,
                       env=_env())
    if missing:
        log(f"e: skipping the shell rows: {', '.join(missing)} not installed")
        ours = [_ours(base, calls) for _ in range(runs)]
        note = f"**skipped: {' and '.join(missing)} not installed** (`apt-get install {' '.join(missing)}`)"
        return [Row("e. a process per event", "`agentlog append` (fsync)", ours, "002's `log_event.sh`", None,
                    "ms/call", note)], {"e_ours": ours, "e_shell": None, "e_fixed": None}
    log(f"e: {runs} runs x {calls} calls each of agentlog append, log_event.sh, log_event_fixed.sh")
    ours, shell = interleaved(runs, lambda r: _ours(base, calls), lambda r: _shell(base, calls, SCRIPT))
    fixed = [_shell(base, calls, FIXED) for _ in range(runs)]
    rows = [
        Row("e. a process per event", "`agentlog append` (fsync)", ours,
            "002's `log_event.sh` as written (bash+date+jq+flock)", shell, "ms/call",
            f"{calls} calls/run; as written its jq fails and it appends an empty line; no fsync"),
        Row("e. a process per event", "`agentlog append` (fsync)", ours,
            "`log_event_fixed.sh` (002's, bugs fixed)", fixed, "ms/call",
            f"{calls} calls/run; writes a real JSON line; no fsync"),
    ]
    return rows, {"e_ours": ours, "e_shell": shell, "e_fixed": fixed}
