"""Rendering: JSON Lines for programs, one short line per event for people.

Text for people is sanitised: an event's content comes from whoever appended it, and printing its control
characters raw would let it move the cursor, retitle the terminal or hide lines (terminal escape injection).
"""

from __future__ import annotations

import sys
from typing import Any

from .. import _json
from ..event import Event

__all__ = ["clean", "dumps", "event_line", "write_event", "write_line"]

# C0 controls, DEL and C1 controls, shown as escapes; \n and \t get their familiar short forms.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROLS.update({0x0A: "\\n", 0x09: "\\t", 0x0D: "\\r"})


def clean(text: str) -> str:
    """``text`` with every control character escaped, so it prints on one line and cannot drive the tty."""
    return text.translate(_CONTROLS)


def dumps(value: Any) -> str:
    return _json.dumps(value).decode()


def event_line(ev: Event) -> str:
    """``TS STREAM#SEQ TYPE [ACTOR] [i=N] [(VISIBILITY)] [LEVEL]: CONTENT``: one line for people."""
    parts = [ev.ts or "-", f"{ev.stream}#{ev.seq}", ev.type or "-"]
    if ev.actor:
        parts.append(ev.actor)
    if ev.interaction is not None:
        parts.append(f"i={ev.interaction}")
    if ev.visibility:
        parts.append(f"({ev.visibility})")
    if ev.level:
        parts.append(f"[{ev.level}]")
    head = " ".join(parts)
    data = ev.data
    content = data.get("content")
    if isinstance(content, str):
        rest = {k: v for k, v in data.items() if k != "content"}
        text = content + (f" {dumps(rest)}" if rest else "")
    else:
        text = dumps(data) if data else ""
    return clean(f"{head}: {text}" if text else head)


def write_line(text: str) -> None:
    sys.stdout.write(text + "\n")


def write_event(ev: Event, as_json: bool) -> None:
    write_line(ev.to_json() if as_json else event_line(ev))
