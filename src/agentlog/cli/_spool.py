"""``agentlog spool status|replay``: what waits in the offline spool, and replaying it now."""

from __future__ import annotations

import argparse

from ..log import open_log
from ._errors import Failure
from ._output import clean, dumps, write_line

__all__ = ["spool"]


def spool(args: argparse.Namespace) -> int:
    with open_log(args.root, spool_dir=args.spool_dir) as log:
        if log.spool is None:
            raise Failure("spooling is off (AGENTLOG_SPOOL is set to 'off')")
        if args.action == "status":
            status = log.spool_status()
            assert status is not None
            if args.json:
                write_line(dumps(status.to_dict()))
                return 0
            shown = status.to_dict()  # the paths as text, whatever bytes they hold
            write_line(clean(f"spool: {shown['path']}"))
            write_line(clean(f"root:  {shown['root']}"))
            if not status.records:
                write_line("nothing waiting")
            else:
                oldest = f", oldest spooled at {status.oldest}" if status.oldest else ""
                write_line(f"{status.records} event(s) waiting in {status.files} file(s){oldest}")
                for stream, n in sorted(status.streams.items()):
                    retry = status.backoff.get(stream)
                    note = "" if retry is None else \
                        f" (replay failed {retry['failures']} time(s), next automatic try at {retry['retry_at']}: " \
                        f"{retry['error']})"
                    write_line(clean(f"  {stream}: {n}{note}"))
            for name, why in sorted(status.skipped.items()):
                write_line(clean(f"skipped pending/{name}: {why}"))
            if status.quarantined:
                write_line(f"{status.quarantined} record(s) quarantined (could never be replayed): "
                           f"{clean(shown['path'])}/quarantine/spool.jsonl")
            return 0
        report = log.replay_spool(wait=args.wait)
    if args.json:
        write_line(dumps({**report.to_dict(), "ok": report.ok}))
        return 0 if report.ok else 1
    write_line(f"replayed {report.replayed}, already in the log {report.duplicates}, "
               f"quarantined {report.quarantined}, still waiting {report.remaining}")
    for stream, why in sorted(report.errors.items()):
        write_line(clean(f"  {stream}: {why}"))
    for name, why in sorted(report.skipped.items()):
        write_line(clean(f"  skipped pending/{name}: {why}"))
    if report.busy:
        write_line(f"another process kept replaying for more than {args.wait:g}s")
    return 0 if report.ok else 1
