"""``agentlog stress``: run :func:`agentlog.stress.run_stress` and report what it found."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ._output import dumps, write_line

__all__ = ["stress"]


def stress(args: argparse.Namespace) -> int:
    from ..stress import run_stress  # multiprocessing and friends: only this command pays for them

    if not args.json:
        write_line(f"stress: {args.procs} processes x {args.events} events x {args.size} bytes into one "
                   f"stream (segment_bytes={args.segment_bytes})")
        sys.stdout.flush()
    with _progress(enabled=not args.json and sys.stderr.isatty()) as progress:
        result = run_stress(args.procs, args.events, args.size, args.segment_bytes, keep=args.keep,
                            start_method=args.start_method, temp_dir=args.dir, progress=progress)
    if args.json:
        write_line(dumps(result.to_dict()))
        return 0 if result.ok else 1
    mib = result.acknowledged * args.size / 2**20
    rate = result.events_per_second
    write_line(f"acknowledged {result.acknowledged}/{result.expected}, found {result.found}, "
               f"missing {result.missing}, duplicated {result.duplicated}, "
               f"unacknowledged {result.unacknowledged}, corrupt {result.corrupt}")
    write_line(f"seq {'gapless 1..' + str(result.found) if result.gapless else 'HAS GAPS OR REPEATS'}; "
               f"{result.segments} segment{'' if result.segments == 1 else 's'}; "
               f"verify {'ok' if not result.problems else f'found {len(result.problems)} problems'}")
    write_line(f"{result.acknowledged} events in {result.elapsed:.2f} s: {rate:,.0f} events/s "
               f"({mib / result.elapsed if result.elapsed else 0:,.1f} MiB/s)")
    for line in result.worker_errors:
        write_line(f"writer error: {line}")
    for line in result.problems[:20]:
        write_line(line)
    if len(result.problems) > 20:
        write_line(f"... and {len(result.problems) - 20} more problems")
    if result.kept:
        write_line(f"log kept at {result.root}")
    write_line("OK" if result.ok else "FAILED")
    return 0 if result.ok else 1


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar on stderr for people at a terminal; nothing otherwise."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("appending"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task("appending", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update

