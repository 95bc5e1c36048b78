"""Communication snapshots: ``communication.md`` (the last K interactions) and ``archive.md`` (every older one).

002's ``generate_snapshot.sh`` rendered these from ``events.log`` with jq. Here they are views (DESIGN.md,
principle 1): rendered from a stream in one pass, deterministic (the same events give the same bytes), headed
by the ``through_seq`` they reflect and a sha256 of their body, and written atomically with the previous
version kept as ``.bak``. The archive is re-rendered from the log each time rather than appended to, so an
interaction can never be written into it twice (002's script appended duplicates on every run).

Grouping: events are grouped by their ``interaction`` number. An event without one belongs to the interaction
in progress, that of the nearest earlier event (in ``seq`` order) that has a number: a heartbeat or a note
between turns stays with its turn. Events before the first numbered event belong to no interaction; they are
counted in the header (``unattached=N``), not shown.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from . import _json
from ._viewfile import open_view_dir, read_file, replace_file, view_lock
from .event import Event

if TYPE_CHECKING:
    from .log import EventLog

__all__ = ["ARCHIVE", "COMMUNICATION", "Snapshot", "body_of", "render", "snapshot", "watch"]

COMMUNICATION = "communication.md"
ARCHIVE = "archive.md"
BEGIN = "<!-- BEGIN COMMUNICATION -->"
END = "<!-- END COMMUNICATION -->"
_HEADER = re.compile(rb"<!-- agentlog snapshot stream=(\S+) through_seq=(\d+)")
# 002's headings for its four types; any other type gets "actor → addressee · type".
_NO_ADDRESSEE = frozenset(("heartbeat",))


class Snapshot:
    """What :func:`snapshot` wrote: the two paths, the position they reflect, and what went where."""

    def __init__(self, *, communication: str, archive: str, through_seq: int, recent: list[int],
                 archived: list[int], unattached: int, changed: bool) -> None:
        self.communication = communication
        self.archive = archive
        self.through_seq = through_seq
        #: Interaction numbers in ``communication.md`` / ``archive.md``, ascending.
        self.recent = recent
        self.archived = archived
        #: Events before the first numbered event (not shown).
        self.unattached = unattached
        #: Whether either file was rewritten (an unchanged rendering is left alone).
        self.changed = changed

    def to_dict(self) -> dict[str, object]:
        return {"communication": self.communication, "archive": self.archive, "through_seq": self.through_seq,
                "recent": self.recent, "archived": self.archived, "unattached": self.unattached,
                "changed": self.changed}

    def __repr__(self) -> str:
        return f"Snapshot({self.to_dict()!r})"


def snapshot(log: EventLog, stream: str, *, keep: int = 3, out: str | os.PathLike[str] | None = None,
             lock_timeout: float = 30.0) -> Snapshot:
    """Render ``stream`` into ``communication.md`` and ``archive.md`` in ``out`` (default:
    ``<root>/snapshots/<stream>/``) and return what was written.

    Rendering happens in memory first: if it fails, the files on disk are untouched. Concurrent runs are
    serialised by a lock file beside the views, and a rendering older than the one on disk is not written.
    """
    if keep < 0:
        raise ValueError("keep must not be negative")
    events = list(log.read(stream))  # validates the name
    if out is None and (not log.root or log.root.startswith("memory:")):
        raise ValueError("a memory log has no root to write snapshots under: give out=DIR")
    parts = ["snapshots", *stream.split("/")]
    display_dir = os.fspath(out) if out is not None else os.path.join(log.root, *parts)
    communication, archive, info = render(stream, events, keep=keep)
    dir_fd = open_view_dir(log.root, parts, out=None if out is None else os.fspath(out))
    try:
        with view_lock(dir_fd, ".snapshot.lock", timeout=lock_timeout, display=display_dir):
            changed = False
            if _through_seq_on_disk(dir_fd, COMMUNICATION) <= info["through_seq"]:
                for name, data in ((ARCHIVE, archive), (COMMUNICATION, communication)):
                    changed |= replace_file(dir_fd, name, data, display=os.path.join(display_dir, name))
    finally:
        os.close(dir_fd)
    return Snapshot(communication=os.path.join(display_dir, COMMUNICATION),
                    archive=os.path.join(display_dir, ARCHIVE), through_seq=info["through_seq"],
                    recent=info["recent"], archived=info["archived"], unattached=info["unattached"],
                    changed=changed)


def render(stream: str, events: Iterable[Event], *, keep: int = 3) -> tuple[bytes, bytes, dict[str, Any]]:
    """``(communication.md, archive.md, info)`` for ``events`` (in seq order): pure and deterministic."""
    groups: dict[int, list[Event]] = {}
    current: int | None = None
    unattached = 0
    through_seq = 0
    for ev in events:
        through_seq = max(through_seq, ev.seq)
        if ev.interaction is not None:
            current = ev.interaction
        if current is None:
            unattached += 1
            continue
        groups.setdefault(current, []).append(ev)
    numbers = sorted(groups)
    split = max(0, len(numbers) - keep)
    archived, recent = numbers[:split], numbers[split:]

    lines = [f"# Communication: {_text(stream)}", "", BEGIN]
    for number in recent:
        lines += ["", f"### Interaction #{number}"]
        for ev, to in _with_addressees(groups[number]):
            lines += ["", f"#### {_heading(ev, to)}", *_quoted(ev), f"<sub>{ev.ts or '-'} · seq {ev.seq}</sub>"]
    lines += ["", END, ""]
    communication = _with_header("\n".join(lines), stream, through_seq, unattached)

    lines = [f"# Archive: {_text(stream)}", ""]
    for number in archived:
        lines += [f"## Interaction #{number}", ""]
        for ev in groups[number]:
            lines.append(f"- [{_text(ev.actor or '-')} {_text(ev.type or '-')} {ev.ts or '-'}]")
            lines += [f"  {line}" if line else "" for line in _content(ev)]
        lines.append("")
    archive = _with_header("\n".join(lines), stream, through_seq, unattached)
    return communication, archive, {"through_seq": through_seq, "recent": recent, "archived": archived,
                                    "unattached": unattached}


def _with_header(body: str, stream: str, through_seq: int, unattached: int) -> bytes:
    data = body.encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    header = (f"<!-- agentlog snapshot stream={stream} through_seq={through_seq} unattached={unattached} "
              f"sha256={digest} -->\n")
    return header.encode() + data


def body_of(data: bytes) -> tuple[bytes, str | None]:
    """Split a rendered file into its body and the sha256 its header records (``None`` if it has none)."""
    header, _, body = data.partition(b"\n")
    match = re.search(rb"sha256=([0-9a-f]{64})", header) if header.startswith(b"<!-- agentlog") else None
    return (body, match[1].decode()) if match else (data, None)


def _through_seq_on_disk(dir_fd: int, name: str) -> int:
    data = read_file(dir_fd, name, name)
    match = _HEADER.match(data or b"")
    return int(match[2]) if match else -1


def _with_addressees(events: Sequence[Event]) -> list[tuple[Event, str | None]]:
    """Each event with whom it was addressed to: an explicit ``to`` (top level or in data), else the last
    other speaker before it in the interaction, else the next one after it."""
    out = []
    for i, ev in enumerate(events):
        to = _explicit_to(ev)
        if to is None and ev.type not in _NO_ADDRESSEE:
            to = _other_actor(ev, reversed(events[:i])) or _other_actor(ev, events[i + 1:])
        out.append((ev, to))
    return out


def _explicit_to(ev: Event) -> str | None:
    for value in (ev.extra.get("to"), ev.data.get("to")):
        if isinstance(value, str) and value:
            return value
    return None


def _other_actor(ev: Event, others: Iterable[Event]) -> str | None:
    for other in others:
        if other.actor and other.actor != ev.actor and other.type not in _NO_ADDRESSEE:
            return other.actor
    return None


def _heading(ev: Event, to: str | None) -> str:
    actor = _text(ev.actor or "unknown")
    kind = _text(ev.type or "event")
    if to is None:
        return f"{actor} · {kind}"
    return f"{actor} → {_text(to)} · {kind}"


def _quoted(ev: Event) -> list[str]:
    return [f"> {line}" if line else ">" for line in _content(ev)]


def _content(ev: Event) -> list[str]:
    """The event's content as lines: ``data.content`` as text, anything else in data as one JSON line."""
    data = ev.data
    content = data.get("content")
    lines = _text(content).split("\n") if isinstance(content, str) else []
    rest = {k: v for k, v in data.items() if k not in ("content", "to")} if isinstance(content, str) \
        else {k: v for k, v in data.items() if k != "to"}
    if rest:
        lines.append("`" + _text(_json.dumps(rest).decode()).replace("`", "\\u0060") + "`")
    return lines or ["(no content)"]


_UNSAFE = {0x0D: None, 0x00: "\\x00"}


def _text(value: str) -> str:
    """Text from an event, made safe for the view: no comment markers that could fake our own (BEGIN/END,
    the header), no carriage returns or NULs that would garble the file."""
    return value.replace("<!--", "&lt;!--").translate(_UNSAFE)



def watch(log: EventLog, stream: str, *, keep: int = 3, out: str | os.PathLike[str] | None = None,
          on_render: Callable[[Snapshot], None] | None = None,
          on_error: Callable[[Exception], None] | None = None, stop_event: Any = None,
          debounce_ms: int = 200) -> None:
    """Render the snapshot now and again whenever ``stream`` changes, until ``stop_event`` is set (anything
    with ``is_set()``) or Ctrl-C.

    Changes come from inotify (through watchfiles) on the root's ``logs/`` directory, grouped for
    ``debounce_ms``; a rotation is a change like any other. Once a second the stream's size is also checked,
    so a change the file system did not report (network file systems) is picked up within a second or two.
    A rendering that fails goes to ``on_error`` (default: raised) and leaves the last good files in place.
    """
    import watchfiles  # only here: the append path must not pay for it

    if not log.root or log.root.startswith("memory:"):
        raise ValueError("watch needs a log on disk")
    logs_dir = os.path.join(log.root, "logs")
    os.close(open_view_dir(log.root, ["logs"]))  # watchfiles needs it to exist; created as the log would
    prefix = os.path.join(logs_dir, *stream.split("/"))

    def relevant(_change: object, path: str) -> bool:
        # <stream>.jsonl, its sealed pieces <stream>.jsonl.NNNNNN, or <stream>/YYYY-MM-DD.jsonl (daily)
        return path.startswith(prefix + ".jsonl") or path.startswith(prefix + os.sep)

    def render_now() -> None:
        try:
            result = snapshot(log, stream, keep=keep, out=out)
        except Exception as exc:
            if on_error is None:
                raise
            on_error(exc)
            return
        if on_render is not None:
            on_render(result)

    render_now()
    last = _fingerprint(log, stream)
    for changes in watchfiles.watch(logs_dir, watch_filter=relevant, debounce=debounce_ms, step=50,
                                    stop_event=stop_event, rust_timeout=1000, yield_on_timeout=True,
                                    raise_interrupt=False):
        now = _fingerprint(log, stream)
        if changes or now != last:
            render_now()
        last = now


def _fingerprint(log: EventLog, stream: str) -> tuple[int, int, int]:
    try:
        info = log.stat(stream)
    except OSError:
        return (-1, -1, -1)
    return (info.events, info.bytes, info.segments)
