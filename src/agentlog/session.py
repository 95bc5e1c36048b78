"""Session summaries: what an agent did, from its ledger, as markdown people can read.

:func:`session_summary` reads ``ledger/<agent>`` (from ``since``, inclusive, if given), pairs each
``task_start`` with its ``task_result`` by task id (events without a task id pair with the latest unpaired
start that has none), and renders the tasks run (start, duration, exit code, command), the errors and the
files touched. The rendering depends only on the events and ``since``: the same ledger gives the same bytes.

It is written atomically to ``<root>/agents/<agent>/sessions/<start>-<last seq>.md``, where ``<start>`` is
``since`` if given, else the first event's ``ts``, both in the compact form ``YYYYMMDDTHHMMSS.ffffffZ``, and
``<last seq>`` is the ledger seq of the newest event covered (0 if none). So the name says where a summary
starts and how far it reaches: the same period summarised again after more events is a new file; summarised
again with nothing new, the same file (left alone when identical).
"""

from __future__ import annotations

import os
import shlex
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ._viewfile import open_view_dir, replace_file
from .errors import AgentlogError
from .event import Event, comparable_ts, parse_ts
from .ledger import Ledger, ledger_stream, open_ledger

__all__ = ["SessionSummary", "TaskRow", "render_session", "session_file_name", "session_summary", "summarise"]

_COMMAND_CHARS = 200  # a longer command is cut in the table (the ledger has it whole)


@dataclass
class TaskRow:
    """One task as the summary shows it (``started``/``finished`` are ``None`` when outside the period)."""

    task: str | None
    started: str | None = None
    finished: str | None = None
    duration_s: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    command: list[str] | None = None
    cwd: str | None = None
    files_touched: list[str] = field(default_factory=list)
    files_touched_truncated: bool = False

    @property
    def outcome(self) -> str:
        """``ok`` (exit 0), ``failed``, or ``unfinished`` (no ``task_result`` yet: running or interrupted)."""
        if self.exit_code is None:
            return "unfinished"
        return "ok" if self.exit_code == 0 else "failed"

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "started": self.started, "finished": self.finished,
                "duration_s": self.duration_s, "exit_code": self.exit_code, "signal": self.signal,
                "outcome": self.outcome, "command": self.command, "cwd": self.cwd,
                "files_touched": self.files_touched, "files_touched_truncated": self.files_touched_truncated}


@dataclass
class SessionSummary:
    """A rendered session summary and what it was made from; ``path`` is ``None`` until written."""

    agent: str
    since: str | None
    first_seq: int | None
    last_seq: int | None
    first_ts: str | None
    last_ts: str | None
    counts: dict[str, int]
    tasks: list[TaskRow]
    errors: list[dict[str, Any]]
    files_touched: dict[str, list[str]]
    markdown: str = ""
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "path": self.path, "since": self.since,
                "covers": {"first_seq": self.first_seq, "last_seq": self.last_seq, "first_ts": self.first_ts,
                           "last_ts": self.last_ts},
                "counts": self.counts, "tasks": [t.to_dict() for t in self.tasks], "errors": self.errors,
                "files_touched": [{"path": p, "tasks": tasks} for p, tasks in self.files_touched.items()],
                "markdown": self.markdown}


def session_summary(ledger_or_root: Ledger | str | os.PathLike[str] | None, agent: str, *,
                    since: str | None = None, write: bool = True) -> SessionSummary:
    """Summarise ``agent``'s ledger (from ``since`` on) and, with ``write``, write it under
    ``agents/<agent>/sessions/`` (see the module). Raises :class:`AgentlogError` if the agent has no ledger."""
    stream = ledger_stream(agent)
    lo = None if since is None else parse_ts(since)
    own = not isinstance(ledger_or_root, Ledger)
    ledger = ledger_or_root if isinstance(ledger_or_root, Ledger) else open_ledger(ledger_or_root)
    try:
        if agent not in ledger.agents():
            raise AgentlogError(f"no ledger for agent {agent!r}")
        events = ledger.log.read(stream) if lo is None else ledger.log.query(streams=[stream], since=lo)
        summary = summarise(agent, events, since=lo)
        summary.markdown = render_session(summary)
        if write:
            name = session_file_name(summary)
            dir_fd = open_view_dir(ledger.log.root, ["agents", agent, "sessions"])
            path = os.path.join(ledger.log.root, "agents", agent, "sessions", name)
            try:
                replace_file(dir_fd, name, summary.markdown.encode(), display=path, backup=False)
            finally:
                os.close(dir_fd)
            summary.path = path
        return summary
    finally:
        if own:
            ledger.close()


def summarise(agent: str, events: Iterable[Event], *, since: str | None = None) -> SessionSummary:
    """Fold ledger events (in seq order) into a :class:`SessionSummary` (not yet rendered). Pure."""
    rows: list[TaskRow] = []
    open_rows: dict[str | None, TaskRow] = {}
    errors: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    first: Event | None = None
    last: Event | None = None
    for ev in events:
        if since is not None and (comparable_ts(ev.ts or "") or "") < since:
            continue
        first = first or ev
        last = ev
        counts[ev.type] += 1
        task = ev.extra.get("task") if isinstance(ev.extra.get("task"), str) else None
        data = ev.data
        if ev.type == "task_start":
            row = TaskRow(task=task, started=ev.ts)
            command = data.get("command")
            if isinstance(command, list) and all(isinstance(a, str) for a in command):
                row.command = command
            row.cwd = data["cwd"] if isinstance(data.get("cwd"), str) else None
            rows.append(row)
            open_rows[task] = row
        elif ev.type == "task_result":
            found = open_rows.pop(task, None)
            if found is None:  # its start is before the period (or was never written)
                found = TaskRow(task=task)
                rows.append(found)
            _apply_result(found, ev)
        elif ev.type == "error":
            message = data.get("message")
            errors.append({"ts": ev.ts, "task": task, "message": message if isinstance(message, str) else "",
                           "kind": data.get("kind") if isinstance(data.get("kind"), str) else None})
    touched: dict[str, list[str]] = {}
    for row in rows:
        for path in row.files_touched:
            label = row.task or "-"
            owners = touched.setdefault(path, [])
            if label not in owners:
                owners.append(label)
    return SessionSummary(
        agent=agent, since=since, first_seq=first.seq if first else None, last_seq=last.seq if last else None,
        first_ts=first.ts if first else None, last_ts=last.ts if last else None, counts=dict(sorted(counts.items())),
        tasks=rows, errors=errors, files_touched=dict(sorted(touched.items())))


def _apply_result(row: TaskRow, ev: Event) -> None:
    data = ev.data
    row.finished = ev.ts
    code = data.get("exit_code")
    row.exit_code = code if isinstance(code, int) and not isinstance(code, bool) else None
    sig = data.get("signal")
    row.signal = sig if isinstance(sig, int) and not isinstance(sig, bool) else None
    duration = data.get("duration_s")
    if isinstance(duration, (int, float)) and not isinstance(duration, bool):
        row.duration_s = float(duration)
    files = data.get("files_touched")
    if isinstance(files, list):
        row.files_touched = [f for f in files if isinstance(f, str)]
    row.files_touched_truncated = data.get("files_touched_truncated") is True


def session_file_name(summary: SessionSummary) -> str:
    """``<since or first ts, compact>-<last seq>.md``, e.g. ``20261122T100000.123456Z-42.md``."""
    start = summary.since or summary.first_ts or "1970-01-01T00:00:00.000000Z"
    stamp = parse_ts(start).replace("-", "").replace(":", "")
    return f"{stamp}-{summary.last_seq or 0}.md"


def render_session(summary: SessionSummary) -> str:
    """The markdown of a summary: deterministic, derived from the summary alone."""
    lines = [f"# Session summary: {_inline(summary.agent)}", ""]
    if summary.last_seq is None:
        lines.append(f"- Ledger: `ledger/{_inline(summary.agent)}`, no events"
                     + (f" since {summary.since}" if summary.since else ""))
    else:
        total = sum(summary.counts.values())
        lines.append(f"- Ledger: `ledger/{_inline(summary.agent)}`, seq {summary.first_seq} to {summary.last_seq}"
                     f" ({total} event{'s' if total != 1 else ''}: "
                     + ", ".join(f"{n} {kind}" for kind, n in summary.counts.items()) + ")")
        lines.append(f"- Period: {summary.first_ts} to {summary.last_ts}"
                     + (f" (since {summary.since})" if summary.since else ""))
    outcomes = Counter(row.outcome for row in summary.tasks)
    durations = [row.duration_s for row in summary.tasks if row.duration_s is not None]
    lines.append(f"- Tasks: {len(summary.tasks)} ({outcomes['ok']} ok, {outcomes['failed']} failed, "
                 f"{outcomes['unfinished']} unfinished); total duration {_seconds(sum(durations))}")
    lines.append(f"- Errors: {len(summary.errors)}")
    lines.append(f"- Files touched: {len(summary.files_touched)}")

    lines += ["", "## Tasks", ""]
    if not summary.tasks:
        lines.append("No tasks in this period.")
    else:
        lines.append("| # | Task | Started | Duration | Exit | Command |")
        lines.append("| ---: | --- | --- | ---: | ---: | --- |")
        for n, row in enumerate(summary.tasks, 1):
            exit_text = "running or interrupted" if row.exit_code is None else str(row.exit_code)
            if row.signal is not None:
                exit_text += f" (signal {row.signal})"
            command = shlex.join(row.command) if row.command is not None else ""
            if len(command) > _COMMAND_CHARS:
                command = command[:_COMMAND_CHARS - 1] + "…"
            cells = [str(n), _code(row.task) if row.task else "-", row.started or "(before the period)",
                     _seconds(row.duration_s) if row.duration_s is not None else "-", exit_text,
                     _code(command) if command else "-"]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")

    lines += ["", "## Errors", ""]
    if not summary.errors:
        lines.append("None.")
    for error in summary.errors:
        where = f" (task {_code(error['task'])})" if error["task"] else ""
        kind = f" [{_inline(error['kind'])}]" if error["kind"] else ""
        lines.append(f"- {error['ts']}{where}{kind}: {_inline(error['message'])}")

    lines += ["", "## Files touched", ""]
    if not summary.files_touched:
        lines.append("None recorded.")
    for path, tasks in summary.files_touched.items():
        lines.append(f"- {_code(path)} ({', '.join(_inline(t) for t in tasks)})")
    if any(row.files_touched_truncated for row in summary.tasks):
        lines += ["", "Some runs hit the bounds of the files-touched search; their lists are incomplete."]
    return "\n".join(lines) + "\n"


# --- markdown helpers ------------------------------------------------------------------------------------

_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def _inline(text: str) -> str:
    """Text on one line, with control characters shown as escapes (so it cannot break the layout)."""
    return text.translate(_CONTROLS).replace("<!--", "&lt;!--")


def _code(text: str) -> str:
    """A code span that holds ``text`` whatever backticks it contains (CommonMark)."""
    text = _inline(text)
    run = longest = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _seconds(value: float) -> str:
    return f"{value:.3f} s"
