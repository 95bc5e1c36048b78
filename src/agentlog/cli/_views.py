"""Views from the command line: ``snapshot`` (with ``--watch``), ``summary`` and ``init``."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from typing import Any

from ..log import default_root, open_log
from ..names import validate_stream_name
from ..scaffold import init_root
from ..snapshot import Snapshot, watch
from ..snapshot import snapshot as render_snapshot
from ..summary import Summariser, summarize
from ._errors import Failure, UsageError
from ._output import clean, dumps, write_line

__all__ = ["init", "snapshot", "summary"]


def snapshot(args: argparse.Namespace) -> int:
    validate_stream_name(args.stream)  # an invalid name is a usage error (exit 2), in watch mode too
    with open_log(args.root) as log:
        if not args.watch:
            if args.stream not in log.streams():
                raise Failure(f"no such stream: {args.stream!r} (see 'agentlog streams')")
            _report(render_snapshot(log, args.stream, keep=args.keep, out=args.out), args.json, always=True)
            return 0
        print(f"watching {clean(args.stream)}; Ctrl-C to stop", file=sys.stderr)
        import logging

        logging.getLogger("watchfiles").setLevel(logging.ERROR)  # its "KeyboardInterrupt caught": we say "stopped"
        renders = 0

        def on_render(result: Snapshot) -> None:
            nonlocal renders
            renders += 1
            _report(result, args.json, warn_always=renders == 1)

        # SIGTERM (a supervisor, `kill`) ends the watch like Ctrl-C: cleanly, between renderings.
        stop = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
        try:
            watch(log, args.stream, keep=args.keep, out=args.out, on_render=on_render, stop_event=stop,
                  on_error=lambda exc: print(f"error: {clean(str(exc))}", file=sys.stderr))
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a watch ends
        finally:
            signal.signal(signal.SIGTERM, previous)
        print("stopped", file=sys.stderr)
        return 0


def _report(result: Snapshot, as_json: bool, *, always: bool = False, warn_always: bool = False) -> None:
    """One line per rendering; a watch reports only renderings that changed something. Malformed lines
    skipped get one warning on stderr naming the error file (in a watch: at the first rendering, then only
    when new ones are met)."""
    if result.errors is not None and (always or warn_always or result.errors_added):
        _warn_malformed(result.malformed, result.errors)
    if as_json:
        write_line(dumps(result.to_dict()))
    elif result.changed or always:
        state = "" if result.changed else "up to date: "
        write_line(clean(f"{state}{result.communication} (interactions {_span(result.recent)}), "
                         f"{result.archive} (interactions {_span(result.archived)}) through seq "
                         f"{result.through_seq}"))
    sys.stdout.flush()


def _warn_malformed(lines: int, errors: str) -> None:
    noun = "line" if lines == 1 else "lines"
    print(clean(f"warning: skipped {lines} malformed {noun}; isolated to {errors} (see 'agentlog verify')"),
          file=sys.stderr)


def _span(numbers: list[int]) -> str:
    if not numbers:
        return "none"
    return f"#{numbers[0]}" if len(numbers) == 1 else f"#{numbers[0]}-#{numbers[-1]}"


def summary(args: argparse.Namespace) -> int:
    validate_stream_name(args.stream)
    summariser = _load_summariser(args.summariser) if args.summariser else None
    with open_log(args.root) as log:
        if args.stream not in log.streams():
            raise Failure(f"no such stream: {args.stream!r} (see 'agentlog streams')")
        result, path = summarize(log, args.stream, summariser=summariser, persist=not args.no_write)
    malformed = result.get("malformed")
    if malformed:
        _warn_malformed(malformed["lines"], malformed["errors"])
    if args.json:
        write_line(dumps({**result, "path": path}))
    elif path is not None:
        write_line(clean(path))
    else:
        sys.stdout.write(result["markdown"])
    return 0


def _load_summariser(spec: str) -> Summariser:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(f"--summariser must be MODULE:FUNCTION, got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"cannot load the summariser {spec!r}: {exc}") from None
    if not callable(obj):
        raise UsageError(f"the summariser {spec!r} is not callable")
    return obj  # type: ignore[no-any-return]


def init(args: argparse.Namespace) -> int:
    target = args.dir or args.root or default_root()
    created = init_root(target)
    if args.json:
        write_line(dumps({"root": target, "created": created}))
    elif created:
        for path in created:
            write_line(clean(f"created {path}"))
    else:
        write_line(clean(f"{target} is already set up; nothing changed"))
    return 0
