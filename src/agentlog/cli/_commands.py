"""The everyday commands: ``append``, ``tail``, ``query``, ``streams``, ``verify``.

Each one opens the log with :func:`agentlog.open_log`, calls one or two public methods and renders the
result; nothing here knows how a backend stores anything.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any

from .. import _json
from ..errors import InvalidEvent
from ..event import Event
from ..log import open_log
from ._errors import Failure, UsageError, json_kind, json_object_option
from ._output import clean, dumps, write_event, write_line

__all__ = ["append", "query", "streams", "tail", "verify"]

_BATCH_ITEM = re.compile(r"batch item (\d+): ")
_JSON_WHERE = re.compile(r": line \d+ column (\d+) \(char \d+\)$")


# --- append -----------------------------------------------------------------------------------------------

def append(args: argparse.Namespace) -> int:
    _json.use_stdlib()  # one event per process: not worth orjson's 18 ms import (see agentlog._json)
    if args.type == "-":
        return _append_batch(args)
    data = json_object_option(args.data, "--data") or {}
    if args.content is not None:
        if "content" in data:
            raise UsageError("CONTENT and --data both give data.content; use one of them")
        data["content"] = args.content
    redact = _redactor(args.redact)
    with open_log(args.root) as log:
        ev = log.append(args.stream, args.type, data=data, actor=args.actor, interaction=args.interaction,
                        visibility=args.visibility, redact=redact)
    _print_appended([ev], args.json)
    return 0


def _redactor(wanted: bool) -> Any:
    """``--redact``: the rules, loaded before anything is opened (a bad $AGENTLOG_REDACT_RULES is a usage
    error, exit 2), and imported only then, so a plain append stays light."""
    if not wanted:
        return False
    from ..redact import default_redactor

    return default_redactor()


def _print_appended(events: list[Event], as_json: bool) -> None:
    # A spooled event was announced on stderr by the library's warning; --json marks it too.
    for ev in events:
        if not as_json:
            write_line(str(ev.id))
        else:
            write_line(dumps({**ev.to_dict(), "spooled": True}) if ev.spooled else ev.to_json())


def _append_batch(args: argparse.Namespace) -> int:
    if args.content is not None:
        raise UsageError("CONTENT cannot be given with '-' (each stdin line is a whole event)")
    if args.data is not None:
        raise UsageError("--data cannot be given with '-' (each stdin line is a whole event)")
    redact = _redactor(args.redact)
    defaults = {"actor": args.actor, "visibility": args.visibility, "interaction": args.interaction}
    items: list[dict[str, Any]] = []
    line_of: list[int] = []  # stdin line number of each item, for error messages
    for line_no, raw in enumerate(sys.stdin.buffer, 1):
        if not raw.strip():
            continue
        try:
            item = _json.loads(raw.rstrip())
        except _json.DecodeError as exc:
            # orjson counts lines and columns within the text it was given, which here is the one line.
            why = _JSON_WHERE.sub(r" at column \1", str(exc))
            raise UsageError(f"stdin line {line_no}: not valid JSON: {why}; nothing was appended") from None
        if not isinstance(item, dict):
            raise UsageError(f"stdin line {line_no}: expected a JSON object, got {json_kind(item)}; "
                             "nothing was appended")
        if "type" not in item:
            raise UsageError(f"stdin line {line_no}: the event has no \"type\"; nothing was appended")
        for key, value in defaults.items():
            if value is not None:
                item.setdefault(key, value)
        items.append(item)
        line_of.append(line_no)
    with open_log(args.root) as log:
        try:
            events = log.append_many(args.stream, items, redact=redact)
        except InvalidEvent as exc:
            raise InvalidEvent(_name_the_line(str(exc), line_of) + "; nothing was appended") from None
    _print_appended(events, args.json)
    return 0


def _name_the_line(message: str, line_of: list[int]) -> str:
    """Turn the library's "batch item K: ..." (K counts items from 0) into "stdin line L: ..."."""
    match = _BATCH_ITEM.match(message)
    if match and int(match[1]) < len(line_of):
        return f"stdin line {line_of[int(match[1])]}: {message[match.end():]}"
    return f"stdin: {message}"


# --- tail ---------------------------------------------------------------------------------------------------

def tail(args: argparse.Namespace) -> int:
    try:
        with open_log(args.root) as log:
            events = log.tail(args.stream, args.limit) if args.limit else []
            if not events and not args.follow and log.stat(args.stream).segments == 0:
                raise Failure(f"no such stream: {args.stream}")
            for ev in events:
                write_event(ev, args.json)
            if not args.follow:
                return 0
            sys.stdout.flush()
            # Follow from the last event shown; with nothing shown (-n 0, or an empty or not yet created
            # stream) from the stream's current end, so old events are not replayed.
            after = events[-1].seq if events else log.stat(args.stream).events
            for ev in log.follow(args.stream, after=after):
                write_event(ev, args.json)
                sys.stdout.flush()  # a pipe is block-buffered; a follower must see each event as it comes
    except KeyboardInterrupt:
        if args.follow:
            return 0  # Ctrl-C is how --follow is meant to end
        raise
    return 0


# --- query --------------------------------------------------------------------------------------------------

def query(args: argparse.Namespace) -> int:
    with open_log(args.root) as log:
        for ev in log.query(streams=args.streams, types=args.types, since=args.since, until=args.until,
                            visibility=args.visibility, actor=args.actor):
            write_event(ev, args.json)
    return 0


# --- streams ------------------------------------------------------------------------------------------------

_COLUMNS = ("STREAM", "EVENTS", "BYTES", "SEGMENTS", "LAST TS")


def streams(args: argparse.Namespace) -> int:
    with open_log(args.root) as log:
        infos = [log.stat(name) for name in log.streams()]
        root = log.root
    if args.json:
        for info in infos:
            write_line(dumps(info._asdict()))
        return 0
    if not infos:
        print(f"no streams in {root}", file=sys.stderr)
        return 0
    rows = [(info.name, str(info.events), str(info.bytes), str(info.segments), info.last_ts or "-")
            for info in infos]
    if sys.stdout.isatty():
        _rich_table(rows)
    else:
        widths = [max(len(row[i]) for row in [_COLUMNS, *rows]) for i in range(len(_COLUMNS))]
        for row in [_COLUMNS, *rows]:
            cells = [cell.ljust(w) if i in (0, 4) else cell.rjust(w) for i, (cell, w) in
                     enumerate(zip(row, widths, strict=True))]
            write_line("  ".join(cells).rstrip())
    return 0


def _rich_table(rows: Sequence[tuple[str, ...]]) -> None:
    # rich costs tens of milliseconds to import: only this command, and only for a terminal, pays for it.
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for i, name in enumerate(_COLUMNS):
        table.add_column(name, justify="left" if i in (0, 4) else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    Console(highlight=False).print(table)


# --- verify -------------------------------------------------------------------------------------------------

def verify(args: argparse.Namespace) -> int:
    with open_log(args.root) as log:
        report = log.verify(args.check or None)
    events = sum(report.counts.values())
    if args.json:
        for level, found in (("problem", report.problems), ("warning", report.warnings)):
            for p in found:
                write_line(dumps({"level": level, "path": p.path, "line": p.line, "what": p.what}))
        write_line(dumps({"level": "summary", "ok": report.ok, "streams": len(report.counts),
                          "events": events, "problems": len(report.problems),
                          "warnings": len(report.warnings), "counts": report.counts}))
        return 0 if report.ok else 1
    for p in report.problems:
        write_line(clean(str(p)))
    for p in report.warnings:
        write_line(clean(f"warning: {p}"))
    streams_text = _plural(len(report.counts), "stream")
    if report.ok:
        warned = f", {_plural(len(report.warnings), 'warning')}" if report.warnings else ""
        write_line(f"ok: {streams_text}, {_plural(events, 'event')} intact{warned}")
        return 0
    write_line(f"FAILED: {_plural(len(report.problems), 'problem')} in {streams_text} "
               f"({_plural(events, 'event')} read)")
    return 1


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
