"""``main``: parse, run one command, and turn every error into one line and an exit status.

Exit status is the contract scripts rely on: 0 ok, 1 failure (an :class:`~agentlog.AgentlogError` such as
``StorageError`` or ``LockTimeout``, or a damaged log), 2 usage or invalid input (argparse errors,
``InvalidEvent``, ``InvalidStreamName``, any ``ValueError`` such as a bad timestamp or bad ``--data``).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence

from ..errors import AgentlogError
from ._errors import Failure
from ._parser import build_parser, command_in

__all__ = ["main"]

OK, FAILURE, USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``agentlog`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(only=command_in(argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: argparse has already printed
        return exc.code if isinstance(exc.code, int) else USAGE
    module, _, name = args.handler.partition(":")
    handler: Callable[..., int] = getattr(importlib.import_module(f".{module}", __package__), name)
    try:
        status = handler(args)
        sys.stdout.flush()  # here, so that a reader that went away is handled below, not at exit
        return status
    except BrokenPipeError:  # before OSError, which it is
        # The reader went away (`agentlog tail -n 1000 s | head`): stop quietly, as `cat` would. Point
        # stdout at /dev/null so the interpreter's final flush does not raise a second time.
        _silence_stdout()
        return OK
    except ValueError as exc:  # InvalidEvent and InvalidStreamName are ValueErrors too
        return _error(exc, USAGE)
    except (AgentlogError, Failure, OSError) as exc:
        return _error(exc, FAILURE)
    except KeyboardInterrupt:
        return 130


def _error(exc: BaseException, status: int) -> int:
    message = " ".join(str(exc).split()) or type(exc).__name__
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    print(f"error: {message}", file=sys.stderr)
    return status


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass  # stdout is not a real file (e.g. captured in a test); nothing will flush to a dead pipe
