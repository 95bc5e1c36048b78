"""Running a command under an agent's ledger: what ``agentlog run`` does.

:func:`run_command` writes ``task_start`` (the command, its working directory, the git ``HEAD`` when there is
one), runs the command with stdin inherited and stdout/stderr passed through live, writes a heartbeat every
``heartbeat`` seconds while it runs, and writes ``task_result`` (exit code, signal, duration, the files it
touched, the redacted tails of its output). A command that cannot start, or that dies by a signal, also gets an
``error`` event. The ledger never stops the command: a write that fails is reported on stderr
(``agentlog: warning: ...``) and the run goes on; with the spool on, such events wait in the spool instead.

Output (:mod:`agentlog._outtail`). The command's stdout and stderr are pipes, passed through live to our own
stdout and stderr by two threads that keep the last :data:`TAIL_BYTES` bytes of each for ``task_result``;
output written after the command exited, by processes it left behind holding the pipes, is passed on for
:data:`DRAIN_GRACE` seconds.

Redaction. Everything recorded goes through :func:`agentlog.redact.default_redactor` (plus an argument that
follows a secret-named flag, as in ``--password hunter2``). Each tail is redacted *before* it is cut to
:data:`TAIL_BYTES`, with :data:`REDACT_WINDOW_BYTES` more bytes of output in view (see
:mod:`agentlog._outtail`).

Signals. The command stays in our process group, so it remains in the terminal's foreground group (it can
read the terminal and receives Ctrl-C itself). While it runs, SIGINT and SIGTERM sent to ``agentlog run`` are
forwarded to it and ``agentlog run`` keeps waiting for it to exit; on Linux a signal the terminal generated
(``si_code`` ``SI_KERNEL``: Ctrl-C reaches the whole foreground group) is not forwarded again, so the command
receives it once. (A signal sent by another process to the whole process group reaches it twice.) A signal
that was ignored when the run began stays ignored, for us and for the command. The handlers and the signal
mask are restored afterwards.

Files touched (:mod:`agentlog._touched`). In a git work tree, what ``git status`` lists before and after the
run, compared by status and content, plus what commits the command made changed; elsewhere, a bounded scan
of the working directory by mtime (:data:`SCAN_MAX_ENTRIES`, :data:`SCAN_MAX_SECONDS`, :data:`SCAN_SKIP`).
At most :data:`FILES_TOUCHED_MAX` paths are recorded. The log's own root is never reported.

This module is the run itself and its ledger events; the output and the files touched are the two modules
above, whose public names it re-exports.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, Any

from ._outtail import DRAIN_GRACE, REDACT_WINDOW_BYTES, TAIL_BYTES, Kept, Pump, binary, cut, drain, redact_tail
from ._touched import FILES_TOUCHED_MAX, SCAN_MAX_ENTRIES, SCAN_MAX_SECONDS, SCAN_SKIP, TouchedFiles
from ._touched import text as _text
from .errors import AgentlogError
from .event import Event, uuid7
from .ledger import Ledger, ledger_stream, open_ledger
from .redact import _SECRET_KEYS, Redactor, default_redactor

__all__ = [
    "DEFAULT_HEARTBEAT",
    "DRAIN_GRACE",
    "EXIT_NOT_EXECUTABLE",
    "EXIT_NOT_FOUND",
    "FILES_TOUCHED_MAX",
    "REDACT_WINDOW_BYTES",
    "SCAN_MAX_ENTRIES",
    "SCAN_MAX_SECONDS",
    "SCAN_SKIP",
    "TAIL_BYTES",
    "RunResult",
    "run_command",
]

#: Seconds between heartbeats unless told otherwise; each promises the next within twice this.
DEFAULT_HEARTBEAT = 30.0
#: Exit status when the command is not found, and when it is found but cannot be executed (as in sh).
EXIT_NOT_FOUND, EXIT_NOT_EXECUTABLE = 127, 126

_HEARTBEAT_MAX = 86400.0
_HEARTBEAT_MIN = 0.01  # each heartbeat is an fsynced append: 1e-9 would be a busy loop of them
_SI_KERNEL = 0x80  # Linux: the kernel (the tty's line discipline) sent the signal
_FORWARDED = (signal.SIGINT, signal.SIGTERM)
# A flag whose name ends like a secret's (--password, --api-key, --db-token, --pgpassword); bounded and lazy,
# so a long argument costs linear time.
_SECRET_FLAG = re.compile(rf"(?i)-{{1,2}}[a-z0-9_-]{{0,64}}?(?:{_SECRET_KEYS})")


@dataclass
class RunResult:
    """What happened: the fields of ``task_result`` as recorded (redacted), and what the ledger took."""

    agent: str
    task: str
    exit_code: int
    signal: int | None = None
    duration_s: float = 0.0
    #: ``False`` when the command could not be started (``error`` says why).
    started: bool = True
    #: Why it could not start, or which signal killed it (the ledger's ``error`` event has it redacted).
    error: str | None = None
    files_touched: list[str] = field(default_factory=list)
    files_touched_truncated: bool = False
    #: ``"git"``, ``"mtime"`` or ``None`` (not computed: the command did not start).
    files_touched_method: str | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    #: The ledger events written (or spooled: ``event.spooled``), in order.
    events: list[Event] = field(default_factory=list)
    #: Ledger writes that failed (each was reported as a warning; repeated heartbeat failures only once).
    failed_writes: int = 0


def run_command(ledger_or_root: Ledger | str | os.PathLike[str] | None, agent: str, argv: Sequence[str], *,
                task: str | None = None, heartbeat: float | None = DEFAULT_HEARTBEAT,
                cwd: str | os.PathLike[str] | None = None, redactor: Redactor | None = None,
                passthrough: bool = True, stdout: IO[bytes] | None = None, stderr: IO[bytes] | None = None,
                forward_signals: bool = True, warn: Callable[[str], None] | None = None,
                spool_dir: str | os.PathLike[str] | bool | None = None) -> RunResult:
    """Run ``argv`` (no shell) as a task of ``agent``, recording it in the agent's ledger; see the module.

    ``ledger_or_root``: an open :class:`Ledger`, or a root to open one on (closed afterwards; ``spool_dir`` as
    in :func:`agentlog.open_log`). ``task``: the task id (default: a new UUIDv7). ``heartbeat``: seconds
    between heartbeats (``None`` or 0: none). ``cwd``: where to run it (default: here). ``redactor``: the
    rules (default: :func:`default_redactor`). Output goes to ``stdout``/``stderr`` (binary streams; default
    ours), or nowhere with ``passthrough=False``. Signals are forwarded only from the main thread.
    ``warn`` receives each warning (default: a line ``agentlog: warning: ...`` on stderr).

    The command sees ``AGENTLOG_AGENT`` and ``AGENTLOG_TASK`` in its environment. Raises ``ValueError`` for a
    bad agent, task, heartbeat, ``cwd``, an empty ``argv`` or an unusable ``$AGENTLOG_REDACT_RULES`` (running
    without the rules asked for could record secrets), before anything is written or run.
    """
    argv = [os.fspath(arg) for arg in argv]
    if not argv:
        raise ValueError("no command given")
    ledger_stream(agent)  # refuses a bad agent name before anything runs
    if task is None:
        task = uuid7()
    elif not isinstance(task, str) or not task or len(task) > 256 or not task.isprintable():
        raise ValueError(f"a task id is 1-256 printable characters, got {task!r}")
    if heartbeat is not None and not (heartbeat == 0 or _HEARTBEAT_MIN <= heartbeat <= _HEARTBEAT_MAX):
        raise ValueError(f"heartbeat must be {_HEARTBEAT_MIN} to {_HEARTBEAT_MAX:.0f} seconds (0 or None: no "
                         "heartbeats)")
    where = os.path.abspath(os.fspath(cwd)) if cwd is not None else os.getcwd()
    if not os.path.isdir(where):
        raise ValueError(f"no such directory: {where}")
    run_redactor = _RunRedactor(redactor or default_redactor())
    if len(run_redactor.redact_text(task)[0]) > 256:  # the marker may be longer than the secret
        raise ValueError(f"a task id is at most 256 characters once redacted, got {task!r}")
    recorder = _Recorder(ledger_or_root, agent, task, run_redactor, warn or _warn_stderr, spool_dir)
    try:
        return _run(recorder, argv, where, heartbeat or None, passthrough, stdout, stderr, forward_signals)
    finally:
        recorder.close()


def _run(rec: _Recorder, argv: list[str], cwd: str, heartbeat: float | None, passthrough: bool,
         stdout: IO[bytes] | None, stderr: IO[bytes] | None, forward_signals: bool) -> RunResult:
    result = RunResult(agent=rec.agent, task=rec.task, exit_code=0)
    # The bounds are read here, from this module's names, so that setting agentlog.runner.SCAN_MAX_ENTRIES
    # (or the others) still counts.
    before = TouchedFiles(cwd, max_entries=SCAN_MAX_ENTRIES, max_seconds=SCAN_MAX_SECONDS, skip=SCAN_SKIP,
                          max_paths=FILES_TOUCHED_MAX)
    rec.write("task_start", {"command": [_text(arg) for arg in argv], "cwd": _text(cwd), "git_head": before.head,
                             "pid": os.getpid()})

    out_sink = err_sink = None
    if passthrough:
        out_sink = stdout if stdout is not None else binary(sys.stdout)
        err_sink = stderr if stderr is not None else binary(sys.stderr)
    for text_stream in (sys.stdout, sys.stderr):  # what we printed so far goes first
        try:
            if text_stream is not None:
                text_stream.flush()
        except (OSError, ValueError):
            pass

    signals = _Signals(forward_signals)
    signals.install()
    try:
        env = {**os.environ, "AGENTLOG_AGENT": rec.agent, "AGENTLOG_TASK": rec.task}
        began = time.monotonic()
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            return _not_started(rec, result, argv, exc, began)
        signals.block()  # our threads started from here on inherit the blocked mask
        assert proc.stdout is not None and proc.stderr is not None
        out, err = Pump(proc.stdout, out_sink), Pump(proc.stderr, err_sink)
        out.start()
        err.start()
        stop_beats = threading.Event()
        beats = None
        if heartbeat:
            beats = threading.Thread(target=_beat, args=(rec, heartbeat, stop_beats), daemon=True,
                                     name="agentlog-heartbeat")
            beats.start()
        try:
            code = signals.wait(proc)
            result.duration_s = round(time.monotonic() - began, 6)
        finally:
            signals.unblock()  # a signal from now on is recorded by our handler, not forwarded, not fatal
            stop_beats.set()
            drain([out, err])
            if beats is not None:
                beats.join()

        if code < 0:
            result.signal = -code
            result.exit_code = 128 - code
        else:
            result.exit_code = code
        touched, truncated, result.files_touched_method = before.after(rec.excluded)
        recorded = rec.write("task_result", {
            "exit_code": result.exit_code, "signal": result.signal, "duration_s": result.duration_s,
            "files_touched": touched, "files_touched_truncated": truncated,
            "files_touched_method": result.files_touched_method,
            "stdout_tail": Kept(out.tail, out.total > len(out.tail)),
            "stderr_tail": Kept(err.tail, err.total > len(err.tail)),
            "stdout_bytes": out.total, "stderr_bytes": err.total})
        result.files_touched, result.files_touched_truncated = recorded["files_touched"], truncated
        result.stdout_tail, result.stderr_tail = recorded["stdout_tail"], recorded["stderr_tail"]
        result.stdout_bytes, result.stderr_bytes = out.total, err.total
        if result.signal is not None:
            result.error = f"{_text(argv[0])} was killed by signal {result.signal} ({_signal_name(result.signal)})"
            rec.write("error", {"message": result.error, "kind": "signal", "signal": result.signal})
    finally:
        signals.restore()
    result.events, result.failed_writes = rec.events, rec.failed
    return result


def _not_started(rec: _Recorder, result: RunResult, argv: list[str], exc: OSError, began: float) -> RunResult:
    """The command could not be started: ``task_result`` with 127 (not found) or 126, then ``error``."""
    not_found = isinstance(exc, FileNotFoundError)
    result.started = False
    result.exit_code = EXIT_NOT_FOUND if not_found else EXIT_NOT_EXECUTABLE
    result.duration_s = round(time.monotonic() - began, 6)
    # "cannot run X (reason)": "/etc/passwd: Permission denied" would read as an assignment to redaction.
    result.error = f"cannot run {_text(argv[0])} ({exc.strerror or exc})"
    rec.write("task_result", {"exit_code": result.exit_code, "signal": None, "duration_s": result.duration_s,
                              "files_touched": [], "files_touched_truncated": False, "stdout_tail": "",
                              "stderr_tail": ""})
    rec.write("error", {"message": result.error, "kind": "not_found" if not_found else "not_executable",
                        "errno": exc.errno})
    result.events, result.failed_writes = rec.events, rec.failed
    return result


# --- the ledger, never in the way -----------------------------------------------------------------------

class _Recorder:
    """Writes the run's ledger events; a write that fails becomes a warning, never an exception."""

    def __init__(self, ledger_or_root: Ledger | str | os.PathLike[str] | None, agent: str, task: str,
                 redactor: _RunRedactor, warn: Callable[[str], None],
                 spool_dir: str | os.PathLike[str] | bool | None) -> None:
        self.agent, self.task, self.redactor, self.warn_line = agent, task, redactor, warn
        self.events: list[Event] = []
        self.failed = 0
        self._warned_heartbeat = False
        self._own = not isinstance(ledger_or_root, Ledger)
        self.ledger: Ledger | None = None
        if isinstance(ledger_or_root, Ledger):
            self.ledger = ledger_or_root
        else:
            try:
                options: dict[str, Any] = {} if spool_dir is None else {"spool_dir": spool_dir}
                self.ledger = open_ledger(ledger_or_root, **options)
            except (AgentlogError, OSError, ValueError) as exc:
                self._failed("the ledger", exc)
        #: Never reported as touched: the log's root and its spool.
        self.excluded: list[str] = []
        if self.ledger is not None:
            self.excluded.append(os.path.abspath(self.ledger.log.root))
            spool = self.ledger.log.spool
            if spool is not None:
                self.excluded.append(spool.directory)

    def write(self, type: str, data: dict[str, Any]) -> dict[str, Any]:
        """Write one event; returns its data as recorded (redacted), whether or not the write succeeded."""
        recorded, _ = self.redactor.redact(data)
        if self.ledger is not None:
            try:
                self.events.append(self.ledger.write(self.agent, type, task=self.task, data=data,
                                                     redactor=self.redactor))
            except (AgentlogError, OSError) as exc:
                self._failed(type, exc)
        return dict(recorded)

    def heartbeat(self, interval: float) -> None:
        if self.ledger is None:
            return
        try:
            self.events.append(self.ledger.heartbeat(self.agent, next_due=interval * 2, task=self.task,
                                                     redactor=self.redactor))
        except (AgentlogError, OSError) as exc:
            if self._warned_heartbeat:
                self.failed += 1
                return
            self._warned_heartbeat = True
            self._failed("heartbeat", exc, " (further heartbeat failures are not reported)")

    def _failed(self, what: str, exc: BaseException, more: str = "") -> None:
        self.failed += 1
        message = " ".join(str(exc).split()) or type(exc).__name__
        self.warn_line(f"could not write {what} to the ledger of {self.agent!r}: {message}; "
                       f"the command is not affected{more}")

    def close(self) -> None:
        if self._own and self.ledger is not None:
            try:
                self.ledger.close()
            except (AgentlogError, OSError):
                pass


def _warn_stderr(message: str) -> None:
    try:
        sys.stderr.write(f"agentlog: warning: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def _beat(rec: _Recorder, interval: float, stop: threading.Event) -> None:
    while True:
        rec.heartbeat(interval)
        if stop.wait(interval):
            return


# --- redaction ----------------------------------------------------------------------------------------

class _RunRedactor(Redactor):
    """The given rules, plus: the value after a secret-named flag in ``command`` (``--token X``), and each
    ``*_tail`` redacted first, then cut to :data:`TAIL_BYTES`."""

    def __init__(self, base: Redactor) -> None:
        super().__init__(base.rules, fields=base.fields, extra_fields=base.extra_fields)

    def redact(self, value: Any) -> tuple[Any, list[dict[str, Any]]]:
        counts: Counter[str] = Counter()
        kept: dict[str, Kept] = {}
        if isinstance(value, dict):
            kept = {key: value[key] for key in _TAILS if isinstance(value.get(key), Kept)}
            value = {**value, **{key: "" for key in kept}}
            if isinstance(value.get("command"), list):
                value["command"] = self._flag_values(value["command"], counts)
        out, found = super().redact(value)
        for item in found:
            counts[item["rule"]] += item["count"]
        if isinstance(out, dict):
            for key in _TAILS:
                if key in kept:
                    out[key] = redact_tail(self.rules, kept[key], counts)
                elif isinstance(out.get(key), str):
                    out[key] = cut(out[key], TAIL_BYTES)
        return out, self.report(counts)

    def _flag_values(self, command: list[Any], counts: Counter[str]) -> list[Any]:
        out = list(command)
        for i in range(len(out) - 1):
            flag, value = out[i], out[i + 1]
            if isinstance(flag, str) and isinstance(value, str) and _SECRET_FLAG.fullmatch(flag):
                joined, found = self.redact_text(f"{flag}={value}")
                if found and joined.startswith(flag + "="):
                    out[i + 1] = joined[len(flag) + 1:]
                    counts.update(found)
        return out


_TAILS = ("stdout_tail", "stderr_tail")


# --- signals ------------------------------------------------------------------------------------------

class _Signals:
    """Forward SIGINT and SIGTERM to the command while it runs; see the module's docstring."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.previous: dict[int, Any] = {}
        self.pending: list[int] = []
        self.masked: set[int] = set()
        self.old_mask: set[Any] | None = None

    def install(self) -> None:
        if not self.enabled:
            return
        for sig in _FORWARDED:
            if signal.getsignal(sig) == signal.SIG_IGN:
                continue  # ignored when we began: stays ignored, and the command inherits that
            self.previous[sig] = signal.signal(sig, self._record)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.pending.append(signum)

    def block(self) -> None:
        """Block the signals in this thread (and the threads it starts) and take them with sigtimedwait, which
        says who sent them. Called after the command started, so that it does not inherit the mask."""
        if self.previous and hasattr(signal, "sigtimedwait") and hasattr(signal, "pthread_sigmask"):
            self.masked = {*self.previous, signal.SIGCHLD}
            self.old_mask = set(signal.pthread_sigmask(signal.SIG_BLOCK, self.masked))

    def unblock(self) -> None:
        if self.old_mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.old_mask)  # pending ones go to _record
            self.old_mask = None
            self.masked = set()

    def wait(self, proc: subprocess.Popen[bytes]) -> int:
        while True:
            code = proc.poll()
            if code is not None:
                return code
            if self.masked:
                info = signal.sigtimedwait(self.masked, 0.1)
                # One the terminal sent (Ctrl-C) reached the command too, in the same foreground group.
                if info is not None and info.si_signo != signal.SIGCHLD and not _from_terminal(info):
                    _forward(proc, info.si_signo)
            else:
                try:
                    proc.wait(timeout=0.1)
                except subprocess.TimeoutExpired:
                    pass
            while self.pending:
                _forward(proc, self.pending.pop(0))

    def restore(self) -> None:
        self.unblock()
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()


def _from_terminal(info: signal.struct_siginfo) -> bool:
    return sys.platform.startswith("linux") and info.si_code == _SI_KERNEL


def _forward(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        proc.send_signal(sig)  # does nothing once the command has been reaped
    except OSError:
        pass


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
