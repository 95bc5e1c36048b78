"""The ``agentlog`` command: a thin layer over :class:`agentlog.EventLog`.

Each command parses its arguments, opens the log with :func:`agentlog.open_log`, calls the library and
renders the result: text for people, JSON Lines with ``--json``. Errors are one line on stderr.
"""

from ._main import main

__all__ = ["main"]
