"""Agent ledgers from the command line: ``ledger write``, ``heartbeat``, ``status``, ``schema``, ``validate``."""

from __future__ import annotations

import argparse
import json
import sys

from ..ledger import liveness, open_ledger
from ..schemas import schema as get_schema
from ..validate import validate_files
from ._errors import Failure, json_object_option
from ._output import clean, dumps, write_line

__all__ = ["heartbeat", "ledger", "schema", "status", "validate"]


def ledger(args: argparse.Namespace) -> int:
    data = json_object_option(args.data, "--data") or {}
    redactor = None
    if args.redact:
        from ..redact import default_redactor

        redactor = default_redactor()
    with open_ledger(args.root) as led:
        ev = led.write(args.agent, args.type, task=args.task, data=data, redactor=redactor)
    write_line(ev.to_json() if args.json else str(ev.id))
    return 0


def heartbeat(args: argparse.Namespace) -> int:
    with open_ledger(args.root) as led:
        ev = led.heartbeat(args.agent, next_due=args.next_due, task=args.task)
    write_line(ev.to_json() if args.json else str(ev.id))
    return 0


_COLUMNS = ("AGENT", "STATE", "TASK", "SINCE", "LAST HEARTBEAT", "LIVENESS")


def status(args: argparse.Namespace) -> int:
    with open_ledger(args.root) as led:
        if args.agent:
            if args.agent not in led.agents():
                raise Failure(f"no ledger for agent {args.agent!r}")
            statuses = [led.status(args.agent, rebuild=args.rebuild)]
        elif args.rebuild:
            statuses = led.rebuild()
        else:
            statuses = led.statuses()
    rows = [(s, liveness(s, grace=args.grace)) for s in statuses]
    if args.json:
        for s, live in rows:
            write_line(dumps({**s, "liveness": live}))
        return 0
    if not rows:
        print("no agents have a ledger yet", file=sys.stderr)
        return 0
    table = [tuple(clean(str(cell)) for cell in (s["agent"], s["state"], s["task"] or "-", s["since"] or "-",
                                                  s["last_heartbeat"] or "-", live)) for s, live in rows]
    widths = [max(len(row[i]) for row in [_COLUMNS, *table]) for i in range(len(_COLUMNS))]
    for row in [_COLUMNS, *table]:
        write_line("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def schema(args: argparse.Namespace) -> int:
    value = get_schema(args.name)
    write_line(json.dumps(value) if args.json else json.dumps(value, indent=2, ensure_ascii=False))
    return 0


def validate(args: argparse.Namespace) -> int:
    problems = list(validate_files(args.files, status=args.status))
    for p in problems:
        if args.json:
            write_line(dumps({"path": p.path, "line": p.line, "what": p.what}))
        else:
            write_line(clean(str(p)))
    if not args.json:
        checked = f"{len(args.files)} file{'s' if len(args.files) != 1 else ''}"
        print(f"{'ok' if not problems else 'FAILED'}: {checked}, {len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0
