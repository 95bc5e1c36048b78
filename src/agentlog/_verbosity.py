"""Verbosity levels for :class:`~agentlog.EventWriter`: ``Verbosity`` and ``should_log_event``.

The writer filters events by their ``level`` field against its ``verbosity``. What a level ranks as, and
what passes, is a rule of its own (the levels are numbered like :mod:`logging`'s so the two can be mixed) and
needs none of the writer's queue or thread, so it lives here; ``agentlog.writer`` re-exports both names.
"""

from __future__ import annotations

import enum

__all__ = ["Verbosity", "should_log_event"]


class Verbosity(enum.IntEnum):
    """Levels for filtering, numbered like :mod:`logging` so the two can be mixed."""

    DEBUG = 10
    INFO = 20
    WARNING = 30
    ERROR = 40
    CRITICAL = 50


def should_log_event(level: str | int | None, verbosity: Verbosity | int) -> bool:
    """True when an event at ``level`` passes a writer set to ``verbosity``.

    ``level`` is the event's ``level`` field: a name (``"info"``, any case) or a number; an event without one
    counts as ``INFO``; an unknown name always passes, since dropping what we cannot rank would lose data.
    """
    if level is None:
        rank = int(Verbosity.INFO)
    elif isinstance(level, int):
        rank = level
    elif isinstance(level, str):
        try:
            rank = int(Verbosity[level.upper()])
        except KeyError:
            return True
    else:  # not a level at all: let it through, for the event's checks to refuse (InvalidEvent)
        return True
    return rank >= int(verbosity)
