"""The argument parser: every command, option and help text of ``agentlog``.

Only :mod:`argparse` (stdlib) is imported here, because ``agentlog append`` runs once per event in agents'
shell loops and must start fast. Each sub-parser names its handler by string; :mod:`._main` imports the
module that holds it only when that command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

__all__ = ["build_parser"]

ROOT_HELP = "the log's root directory (default: $AGENTLOG_ROOT, else ./.agentlog)"
JSON_HELP = "print JSON Lines (one JSON object per line) instead of text for people"

DESCRIPTION = """\
A durable, multi-process JSONL event log for teams of agents.

Every stream is a plain JSONL file under ROOT/logs/. Exit status: 0 ok,
1 failure (storage, lock timeout, damaged log), 2 usage or invalid input."""

EPILOG = """\
examples:
  agentlog append conv-7 question "How do I start?" --actor alice --interaction 3
  agentlog tail conv-7 -n 5
  agentlog tail conv-7 --follow
  agentlog query --type question --since 2026-11-22T00:00:00Z --json
  agentlog streams
  agentlog verify
  agentlog snapshot conv-7 --keep 3 --watch
  agentlog summary conv-7
  agentlog init
  agentlog ledger write --agent alice task_start --task T-1
  agentlog status
  agentlog run --agent alice --task T-1 -- make test
  agentlog session-summary --agent alice --since 2026-11-22T00:00:00Z
  agentlog task add "build it" --dep ID
  agentlog task claim ID --agent alice
  agentlog spool status
  agentlog stress --procs 10 --events 100 --size 10240"""


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written, and finds the terminal width without importing :mod:`shutil`.

    argparse builds a formatter for every ``add_argument`` call, and the stock one imports ``shutil``
    (with bz2, lzma, zlib and fnmatch) just to ask for the terminal's width: 4 ms on every
    ``agentlog append``, which agents run once per event.
    """

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         _terminal_width() if width is None else width)


_width: list[int] = []


def _terminal_width() -> int:
    """What ``shutil.get_terminal_size().columns - 2`` gives: $COLUMNS, else the terminal, else 80."""
    if not _width:
        try:
            columns = int(os.environ.get("COLUMNS", "0"))
        except ValueError:
            columns = 0
        if columns <= 0:
            try:
                columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
            except (AttributeError, ValueError, OSError):
                columns = 0
        _width.append((columns or 80) - 2)
    return _width[0]


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr, like every other agentlog error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value}")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


COMMANDS = ("append", "tail", "query", "streams", "verify", "snapshot", "summary", "init", "ledger", "heartbeat",
            "status", "schema", "validate", "run", "session-summary", "task", "spool", "stress")


class _Unbuilt:
    """Stands in for the sub-parser of a command that will not run: its arguments are not built."""

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        pass


def command_in(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names, if plainly one of ``COMMANDS`` (after only --root DIR and --json)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--root":
            i += 2
        elif arg == "--json" or arg.startswith("--root="):
            i += 1
        else:
            return arg if arg in COMMANDS else None
    return None


def build_parser(only: str | None = None) -> Parser:
    """The whole ``agentlog`` command line; with ``only``, every other command's sub-parser is left unbuilt.

    Building all of them costs ~3 ms, a tenth of a one-shot ``agentlog append``: main() builds only the one
    it is about to run. Help and errors for that command are the same either way.
    """
    from .. import __version__

    parser = Parser(prog="agentlog", description=DESCRIPTION, epilog=EPILOG,
                    formatter_class=Formatter)
    parser.add_argument("--root", metavar="DIR", default=None, help=ROOT_HELP)
    parser.add_argument("--json", action="store_true", default=False, help=JSON_HELP)
    parser.add_argument("--version", action="version", version=f"agentlog {__version__}",
                        help="print the version and exit")

    # --root and --json are accepted after the command too. SUPPRESS keeps a sub-parser that did not see
    # the option from overwriting what the main parser stored (argparse's sub-parser defaults win).
    shared = Parser(add_help=False, formatter_class=Formatter)
    shared.add_argument("--root", metavar="DIR", default=argparse.SUPPRESS, help=ROOT_HELP)
    shared.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)

    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", required=True,
                                     parser_class=Parser)

    def command(name: str, handler: str, summary: str, description: str,
                parents: list[Parser] | None = None) -> Parser:
        if only is not None and name != only:
            return _Unbuilt()  # type: ignore[return-value]
        sub: Parser = commands.add_parser(name, help=summary, description=description,
                                          parents=[shared] if parents is None else parents,
                                          formatter_class=Formatter)
        sub.set_defaults(handler=handler)
        return sub

    # --- append ---------------------------------------------------------------------------------------
    p = command(
        "append", "_commands:append", "append one event, or a batch read from stdin",
        "Append one event to STREAM and print its id (with --json, the whole event).\n\n"
        "With TYPE '-', read JSON objects from stdin, one per line (each with a\n"
        "\"type\"), and append them as ONE batch: one lock, one write, one fsync.\n"
        "One bad line refuses the whole batch; blank lines are skipped. --actor,\n"
        "--visibility and --interaction then fill in for lines that lack them.\n\n"
        "With --redact, secrets in the data (and in other fields, not in TYPE,\n"
        "--actor or --visibility) become [REDACTED:<rule>] before anything is\n"
        "written, and the event records redactions: [{rule, count}]. Extra rules:\n"
        "a JSON file named by $AGENTLOG_REDACT_RULES.")
    p.add_argument("stream", metavar="STREAM", help="the stream to append to, e.g. conv-7 or ledger/alice")
    p.add_argument("type", metavar="TYPE",
                   help="the event's type, e.g. question; '-' reads a batch of events from stdin")
    p.add_argument("content", metavar="CONTENT", nargs="?", default=None,
                   help="text stored as data.content (merged into --data if both are given)")
    p.add_argument("--actor", metavar="A", help="who did it, e.g. an agent's name")
    p.add_argument("--interaction", metavar="N", type=int,
                   help="the interaction (turn) number this event belongs to, a non-negative integer")
    p.add_argument("--visibility", metavar="V", help="who may see it, e.g. public or private")
    p.add_argument("--data", metavar="JSON", help="the event's data as a JSON object, e.g. '{\"k\": 1}'")
    p.add_argument("--redact", action="store_true",
                   help="replace secrets with [REDACTED:<rule>] before writing (every event of a batch)")

    # --- tail -----------------------------------------------------------------------------------------
    p = command("tail", "_commands:tail", "show the newest events of a stream, optionally following it",
                "Print the newest N events of STREAM, oldest first. With --follow, keep\n"
                "printing new events as other processes append them (across rotations)\n"
                "until Ctrl-C.")
    p.add_argument("stream", metavar="STREAM", help="the stream to show")
    p.add_argument("-n", "--lines", dest="limit", metavar="N", type=_non_negative, default=20,
                   help="how many of the newest events to show first (default: 20)")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep running and print events as they are appended; stop with Ctrl-C")

    # --- query ----------------------------------------------------------------------------------------
    p = command("query", "_commands:query", "find events across streams by type, time, actor, visibility",
                "Print the events that match every filter given, merged across streams in\n"
                "time order. Repeat --stream or --type to match any of several. Timestamps\n"
                "are RFC 3339; one without an offset is taken as UTC.")
    p.add_argument("--stream", dest="streams", metavar="S", action="append",
                   help="only this stream (repeatable; default: every stream)")
    p.add_argument("--type", dest="types", metavar="T", action="append",
                   help="only events of this type (repeatable)")
    p.add_argument("--since", metavar="TS", help="only events with ts at or after TS (inclusive)")
    p.add_argument("--until", metavar="TS", help="only events with ts before TS (exclusive)")
    p.add_argument("--visibility", metavar="V", help="only events with this visibility")
    p.add_argument("--actor", metavar="A", help="only events by this actor")

    # --- streams --------------------------------------------------------------------------------------
    command("streams", "_commands:streams", "list streams with their size and last event time",
            "List every stream: name, events, bytes on disk, segments and the ts of its\n"
            "last event. A table for people; JSON Lines with --json.")

    # --- verify ---------------------------------------------------------------------------------------
    p = command("verify", "_commands:verify", "check that the log is intact (exit 1 if not)",
                "Check every line of the given streams (default: all): strict JSON, gapless\n"
                "seq, ts never going backwards, no torn tail. Prints one line per problem as\n"
                "PATH:LINE: WHAT and exits 1 if there is any. Warnings (such as lines from a\n"
                "foreign writer) are printed too but do not fail.")
    p.add_argument("check", metavar="STREAM", nargs="*", help="a stream to check (default: every stream)")

    # --- snapshot -------------------------------------------------------------------------------------
    p = command("snapshot", "_views:snapshot", "render communication.md and archive.md from a stream",
                "Group STREAM's events by interaction number and write the last KEEP\n"
                "interactions to communication.md and every older one to archive.md, in\n"
                "OUT (default ROOT/snapshots/STREAM/). Files are replaced atomically, the\n"
                "previous version kept as .bak; each records the seq it was built through\n"
                "and a sha256 of its body. An event without an interaction number belongs\n"
                "to the interaction before it. With --watch, render again within a second\n"
                "of every append (across rotations) until Ctrl-C.")
    p.add_argument("stream", metavar="STREAM", help="the stream to render, e.g. conv-7")
    p.add_argument("--keep", metavar="K", type=_non_negative, default=3,
                   help="how many of the latest interactions go to communication.md (default: 3)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="write the two files here (default: ROOT/snapshots/STREAM/)")
    p.add_argument("--watch", action="store_true", help="keep rendering as the stream grows; Ctrl-C stops")

    # --- summary --------------------------------------------------------------------------------------
    p = command("summary", "_views:summary", "summarise a stream into markdown addressed by its sha256",
                "Summarise STREAM (bullets grouped by event type, deterministic) and write\n"
                "ROOT/summaries/STREAM.md plus the immutable copy\n"
                "ROOT/summaries/sha256/<summary_ref>.md; print the path (with --json, the\n"
                "summary record: summary_ref, covers, counts, markdown, path).")
    p.add_argument("stream", metavar="STREAM", help="the stream to summarise")
    p.add_argument("--summariser", metavar="MODULE:FUNC", default=None,
                   help="use this callable (conversation_id, events) -> markdown instead of the default")
    p.add_argument("--no-write", action="store_true",
                   help="print the markdown (or --json record) without writing any file")

    # --- init -----------------------------------------------------------------------------------------
    p = command("init", "_views:init", "create a root's layout (safe to run again)",
                "Create DIR (default: --root, $AGENTLOG_ROOT, else ./.agentlog) with logs/,\n"
                "summaries/, archive/ and tasks.graph.json holding {\"tasks\": []}. Whatever\n"
                "exists is left as it is: running it again changes nothing.")
    p.add_argument("dir", metavar="DIR", nargs="?", default=None, help="the root to set up")

    # --- ledger ---------------------------------------------------------------------------------------
    p = command("ledger", "_ledger:ledger", "write an event to an agent's ledger (updates its status.json)",
                "Append TYPE to the ledger of AGENT (the stream ledger/AGENT, one file per\n"
                "day: logs/ledger/AGENT/YYYY-MM-DD.jsonl) and bring ROOT/agents/AGENT/\n"
                "status.json up to date. TYPE is task_start, task_result (needs\n"
                "data.exit_code), error (needs data.message), heartbeat or state_change\n"
                "(needs data.state: idle, busy, error or offline). Prints the event's id.")
    p.add_argument("action", metavar="ACTION", choices=("write",), help="write: append one ledger event")
    p.add_argument("type", metavar="TYPE", help="task_start, task_result, error, heartbeat or state_change")
    p.add_argument("--agent", metavar="A", required=True, help="the agent whose ledger this is")
    p.add_argument("--task", metavar="ID", default=None, help="the task the event belongs to")
    p.add_argument("--data", metavar="JSON", default=None, help="the event's data as a JSON object")
    p.add_argument("--redact", action="store_true",
                   help="replace secrets in --data and --task with [REDACTED:<rule>] before writing")

    p = command("heartbeat", "_ledger:heartbeat", "record that an agent is alive",
                "Append a heartbeat to AGENT's ledger. With --next-due N the agent promises\n"
                "its next heartbeat within N seconds; 'agentlog status' calls it stale once\n"
                "that deadline (plus a grace period) has passed.")
    p.add_argument("--agent", metavar="A", required=True, help="the agent")
    p.add_argument("--next-due", metavar="SECONDS", type=float, default=None,
                   help="the next heartbeat will come within this many seconds")
    p.add_argument("--task", metavar="ID", default=None, help="the task it is working on, if any")

    p = command("status", "_ledger:status", "show agents' state and liveness from their ledgers",
                "Show every agent (or AGENT): state, task, since when, last heartbeat, and\n"
                "liveness: alive, stale (missed the deadline its own last heartbeat declared,\n"
                "plus a grace period), offline, or unknown (no deadline declared). Each\n"
                "status.json is caught up with its ledger first; --rebuild recreates them\n"
                "all from the ledgers.")
    p.add_argument("agent", metavar="AGENT", nargs="?", default=None, help="only this agent")
    p.add_argument("--rebuild", action="store_true", help="recreate every status.json from the ledgers")
    p.add_argument("--grace", metavar="SECONDS", type=float, default=None,
                   help="grace after a missed deadline (default: half the declared interval, 5-300 s)")

    p = command("schema", "_ledger:schema", "print a JSON Schema: event, ledger or status",
                "Print the JSON Schema (draft 2020-12) of an event line, a ledger event or\n"
                "a status.json file.")
    p.add_argument("name", metavar="NAME", choices=("event", "ledger", "status"), help="event, ledger or status")

    p = command("validate", "_ledger:validate", "check JSONL files (or status.json files) against the schemas",
                "Check every line of each FILE against the event schema (lines of a ledger/\n"
                "stream against the ledger schema): required fields, types, RFC 3339\n"
                "timestamps with an offset. With --status, check status.json files. Prints\n"
                "PATH:LINE: PROBLEM per problem; exit 1 if there is any, else 0.")
    p.add_argument("files", metavar="FILE", nargs="+", help="a file to check")
    p.add_argument("--status", action="store_true", help="the files are status.json files")

    # --- run ----------------------------------------------------------------------------------------
    root_only = Parser(add_help=False, formatter_class=Formatter)
    root_only.add_argument("--root", metavar="DIR", default=argparse.SUPPRESS, help=ROOT_HELP)
    p = command("run", "_run:run", "run a command as an agent's task, recording it in the agent's ledger",
                "Write task_start (command, cwd, git HEAD) to AGENT's ledger, run CMD (no\n"
                "shell) with stdin, stdout and stderr passed through live, write a heartbeat\n"
                "every SECONDS while it runs, then task_result: exit code, duration, files\n"
                "touched (git status before and after in a git work tree, else a bounded\n"
                "mtime scan) and the last 4096 bytes of stdout and stderr. Secrets are\n"
                "redacted before anything is written. A command that cannot start (exit 127\n"
                "if not found, else 126) or dies by signal N (exit 128+N) also gets an error\n"
                "event. SIGINT and SIGTERM are forwarded to CMD. Exits with CMD's status. If\n"
                "the ledger cannot be written, CMD still runs and a warning goes to stderr\n"
                "(the events go to the offline spool when it is on).",
                parents=[root_only])
    p.usage = "agentlog run [-h] [--root DIR] --agent A [--task ID] [--heartbeat SECONDS] -- CMD [ARGS...]"
    p.add_argument("--agent", metavar="A", required=True, help="the agent whose ledger records the run")
    p.add_argument("--task", metavar="ID", default=None, help="the task id (default: a new UUIDv7)")
    p.add_argument("--heartbeat", metavar="SECONDS", type=float, default=None,
                   help="seconds between heartbeats while CMD runs (default: 30, at least 0.01; 0: none)")
    p.add_argument("command", metavar="CMD", nargs=argparse.REMAINDER,
                   help="the command and its arguments, after '--'")

    p = command("session-summary", "_run:session_summary", "summarise an agent's session from its ledger",
                "Summarise AGENT's ledger (from --since on, else all of it) as markdown:\n"
                "tasks run, durations, exit codes, errors, files touched. Writes it to\n"
                "ROOT/agents/AGENT/sessions/<start>-<last seq>.md (start: --since, else the\n"
                "first event's ts, as YYYYMMDDTHHMMSS.ffffffZ) and prints the path (with\n"
                "--json, the summary record). Exit 1 if AGENT has no ledger.")
    p.add_argument("--agent", metavar="A", required=True, help="the agent to summarise")
    p.add_argument("--since", metavar="TS", default=None,
                   help="only events with ts at or after TS (RFC 3339; default: the whole ledger)")

    # --- task ---------------------------------------------------------------------------------------
    p = command("task", "_tasks:task", "the task graph: add, list, ready, claim, done, update, show, graph",
                "Tasks live in the log (the tasks stream); ROOT/tasks.graph.json is their\n"
                "view. ACTION is one of:\n"
                "  add TITLE     create a task (--type, --dep ID..., --parent ID, --input JSON);\n"
                "                prints its id\n"
                "  list          open and claimed tasks, or those with --status S...\n"
                "  ready         unowned tasks whose dependencies are all done\n"
                "  claim ID      claim for --agent A; prints the fencing token; exit 1 when\n"
                "                someone else holds it or it is not ready\n"
                "  done ID       complete a claimed task (--token N, or --agent A: only if A\n"
                "                holds it; --output JSON)\n"
                "  update ID     change fields (--set key=value..., --expect-version N)\n"
                "  show ID       the task and its history from the stream\n"
                "  graph         a picture of the graph (--format text|mermaid|dot)\n"
                "  rebuild       recreate tasks.graph.json from the stream\n"
                "Statuses: open -> claimed -> done or failed; claimed -> open (release);\n"
                "open, claimed or failed -> cancelled; failed or cancelled -> open.")
    p.add_argument("action", metavar="ACTION",
                   choices=("add", "list", "ready", "claim", "done", "update", "show", "graph", "rebuild"),
                   help="add, list, ready, claim, done, update, show, graph or rebuild")
    p.add_argument("target", metavar="TITLE|ID", nargs="?", default=None,
                   help="the new task's title (add) or the task's id (claim, done, update, show)")
    p.add_argument("--type", metavar="T", default="task", help="add: the task's type (default: task)")
    p.add_argument("--dep", metavar="ID", action="append", default=None,
                   help="add: a task this one depends on (repeatable)")
    p.add_argument("--parent", metavar="ID", default=None, help="add: the parent task")
    p.add_argument("--input", metavar="JSON", default=None, help="add: the task's inputs, a JSON object")
    p.add_argument("--status", metavar="S", action="append", default=None,
                   help="list: only tasks with this status (repeatable; default: open and claimed)")
    p.add_argument("--agent", metavar="A", default=None,
                   help="claim: the agent claiming the task; done without --token: only if A holds it")
    p.add_argument("--token", metavar="N", type=_non_negative, default=None,
                   help="done: the fencing token from claim (default: the current claim's)")
    p.add_argument("--output", metavar="JSON", default=None, help="done: the task's outputs, a JSON object")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=None,
                   help="update: set a field (VALUE is JSON, else a string; title, type and status are "
                        "taken as written; repeatable)")
    p.add_argument("--expect-version", metavar="N", type=_non_negative, default=None,
                   help="update: refuse (exit 1) unless the task is still at version N")
    p.add_argument("--format", metavar="FMT", choices=("text", "mermaid", "dot"), default="text",
                   help="graph: text (default), mermaid or dot")

    # --- spool ----------------------------------------------------------------------------------------
    p = command("spool", "_spool:spool", "show or replay events waiting in the offline spool",
                "When the root cannot be written (disk full, read-only, a lock held too long),\n"
                "appends are fsynced into a spool outside the root instead and replayed, in\n"
                "order and at most once per id, on the next successful append. 'status' shows\n"
                "what waits (exit 0); 'replay' appends it now and exits 1 if some events still\n"
                "cannot be written. The spool is $AGENTLOG_SPOOL, else\n"
                "$XDG_STATE_HOME/agentlog/spool (~/.local/state/agentlog/spool).")
    p.add_argument("action", metavar="ACTION", choices=("status", "replay"),
                   help="status: show what waits; replay: append it to the log now")
    p.add_argument("--spool-dir", metavar="DIR", default=None,
                   help="the spool directory (default: $AGENTLOG_SPOOL, else the state directory)")
    p.add_argument("--wait", metavar="SECONDS", type=float, default=60.0,
                   help="replay: how long to wait for another process's replay (default: 60)")

    # --- stress ---------------------------------------------------------------------------------------
    stress_shared = Parser(add_help=False, formatter_class=Formatter)
    stress_shared.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)
    p = command("stress", "_stress:stress", "run the multi-process append stress test and verify the result",
                "Start PROCS real processes that each append EVENTS events with a SIZE-byte\n"
                "payload to one stream of a fresh temporary log, each recording the ids it\n"
                "was acknowledged. Then check that every acknowledged id is present exactly\n"
                "once, the count is PROCS x EVENTS, seq runs 1..N with no gap, payloads are\n"
                "intact and 'verify' is clean; exit 0 only if all hold. The temporary log is\n"
                "removed afterwards unless --keep; --root is not used.",
                parents=[stress_shared])
    p.add_argument("--procs", metavar="N", type=_positive, default=10,
                   help="number of writer processes (default: 10)")
    p.add_argument("--events", metavar="N", type=_positive, default=100,
                   help="events each process appends (default: 100)")
    p.add_argument("--size", metavar="BYTES", type=_non_negative, default=10240,
                   help="payload bytes per event (default: 10240, above a pipe's atomic write size)")
    p.add_argument("--segment-bytes", metavar="N", type=_positive, default=500_000_000,
                   help="rotate segments at this size; make it small to rotate during the run "
                        "(default: 500000000)")
    p.add_argument("--start-method", choices=("fork", "spawn", "forkserver"), default=None,
                   help="how worker processes are started (default: fork where available, else spawn)")
    p.add_argument("--dir", metavar="DIR", default=None,
                   help="create the temporary log inside DIR, e.g. to test a given filesystem "
                        "(default: the system temp directory)")
    p.add_argument("--keep", action="store_true", help="keep the temporary log and print where it is")
    return parser
