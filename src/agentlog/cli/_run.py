"""Wrapping a command in an agent's ledger (``run``) and summarising a session (``session-summary``)."""

from __future__ import annotations

import argparse
import sys

from ._errors import UsageError
from ._output import clean, dumps, write_line

__all__ = ["run", "session_summary"]


def run(args: argparse.Namespace) -> int:
    from ..runner import DEFAULT_HEARTBEAT, run_command

    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise UsageError("no command given: agentlog run --agent A -- CMD [ARGS...]")
    result = run_command(args.root, args.agent, command, task=args.task,
                         heartbeat=DEFAULT_HEARTBEAT if args.heartbeat is None else args.heartbeat)
    if not result.started:
        print(f"error: {clean(result.error or 'the command could not be started')}", file=sys.stderr)
    return result.exit_code


def session_summary(args: argparse.Namespace) -> int:
    from ..session import session_summary as summarise

    summary = summarise(args.root, args.agent, since=args.since)
    write_line(dumps(summary.to_dict()) if args.json else str(summary.path))
    return 0
