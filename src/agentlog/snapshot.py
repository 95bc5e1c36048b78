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

Malformed lines (002 §6.4) are skipped, and isolated to ``<root>/errors/<stream>.jsonl`` with the path and
line number ``agentlog verify`` reports for them (see :class:`agentlog._viewfile.MalformedLines`); the
snapshot is rendered from the good events.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from . import _json
from ._viewfile import MalformedLines, open_view_dir, read_file, replace_files, sweep_temps, view_lock
from .event import Event
from .names import validate_stream_name

if TYPE_CHECKING:
    from .log import EventLog

__all__ = ["ARCHIVE", "COMMUNICATION", "Snapshot", "body_of", "render", "snapshot", "watch"]

COMMUNICATION = "communication.md"
ARCHIVE = "archive.md"
BEGIN = "<!-- BEGIN COMMUNICATION -->"
END = "<!-- END COMMUNICATION -->"
_HEADER = re.compile(rb"<!-- agentlog snapshot stream=(\S+) through_seq=(\d+) ")
#: Directories under the root that --out may not point into: the log's own files live there.
_NOT_OUT = ("logs", "quarantine", "errors")
# 002's headings for its four types; any other type gets "actor → addressee · type".
_NO_ADDRESSEE = frozenset(("heartbeat",))


class Snapshot:
    """What :func:`snapshot` wrote: the two paths, the position they reflect, and what went where."""

    def __init__(self, *, communication: str, archive: str, through_seq: int, recent: list[int],
                 archived: list[int], unattached: int, changed: bool, malformed: int = 0,
                 errors: str | None = None, errors_added: int = 0) -> None:
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
        #: Malformed lines the read skipped; they are isolated to ``errors`` (``None`` when there were none),
        #: ``errors_added`` of them for the first time.
        self.malformed = malformed
        self.errors = errors
        self.errors_added = errors_added

    def to_dict(self) -> dict[str, object]:
        return {"communication": self.communication, "archive": self.archive, "through_seq": self.through_seq,
                "recent": self.recent, "archived": self.archived, "unattached": self.unattached,
                "changed": self.changed, "malformed": self.malformed, "errors": self.errors}

    def __repr__(self) -> str:
        return f"Snapshot({self.to_dict()!r})"


def snapshot(log: EventLog, stream: str, *, keep: int = 3, out: str | os.PathLike[str] | None = None,
             lock_timeout: float = 30.0) -> Snapshot:
    """Render ``stream`` into ``communication.md`` and ``archive.md`` in ``out`` (default:
    ``<root>/snapshots/<stream>/``) and return what was written.

    Rendering happens in memory first: if it fails, the files on disk are untouched; both files are written
    before either replaces its previous version, so a full disk leaves the pair as it was. Concurrent runs
    are serialised by a lock file beside the views, and a rendering older than the one on disk is not
    written (unless the log no longer reaches the seq that one was built from: it was reset).

    Malformed lines are skipped and isolated to ``<root>/errors/<stream>.jsonl`` (``Snapshot.errors``).
    ``out`` may not lie inside the root's ``logs/``, ``quarantine/`` or ``errors/``.
    """
    out_dir = _check_args(log, stream, keep, out)
    parts = ["snapshots", *stream.split("/")]
    display_dir = out_dir if out_dir is not None else os.path.join(log.root, *parts)
    malformed = MalformedLines(log.root, stream, "snapshot")
    communication, archive, info = render(stream, log.read(stream, on_malformed=malformed), keep=keep)
    dir_fd = open_view_dir(log.root, parts, out=out_dir)
    try:
        with view_lock(dir_fd, ".snapshot.lock", timeout=lock_timeout, display=display_dir):
            sweep_temps(dir_fd, (COMMUNICATION, ARCHIVE))  # a writer killed mid-write: none is live now
            changed = False
            if not _newer_on_disk(log, dir_fd, stream, info["through_seq"]):
                changed = any(replace_files(dir_fd, [(name, data, os.path.join(display_dir, name))
                                                     for name, data in ((ARCHIVE, archive),
                                                                        (COMMUNICATION, communication))]))
    finally:
        os.close(dir_fd)
    isolated = malformed.isolate(through_seq=info["through_seq"], lock_timeout=lock_timeout)
    return Snapshot(communication=os.path.join(display_dir, COMMUNICATION),
                    archive=os.path.join(display_dir, ARCHIVE), through_seq=info["through_seq"],
                    recent=info["recent"], archived=info["archived"], unattached=info["unattached"],
                    changed=changed, malformed=0 if isolated is None else isolated.met,
                    errors=None if isolated is None else isolated.path,
                    errors_added=0 if isolated is None else isolated.added)


def _check_args(log: EventLog, stream: str, keep: int, out: str | os.PathLike[str] | None) -> str | None:
    """Refuse what no rendering could fix (before anything is read or written); the ``out`` directory."""
    validate_stream_name(stream)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise ValueError(f"keep must be a non-negative int, not {keep!r}")
    on_disk = bool(log.root) and not log.root.startswith("memory:")
    if out is None:
        if not on_disk:
            raise ValueError("a memory log has no root to write snapshots under: give out=DIR")
        return None
    out_dir = os.fspath(out)
    if not out_dir:
        raise ValueError("the output directory must not be empty")
    if on_disk:
        real = os.path.realpath(out_dir)
        for name in _NOT_OUT:
            inner = os.path.realpath(os.path.join(log.root, name))
            if real == inner or real.startswith(inner + os.sep):
                raise ValueError(f"the output directory {out_dir!r} is inside the log's {name}/ directory")
    return out_dir


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
            lines += ["", f"#### {_heading(ev, to)}", *_quoted(ev), f"<sub>{_label(ev.ts or '-')} · seq {ev.seq}</sub>"]
    lines += ["", END, ""]
    communication = _with_header("\n".join(lines), stream, through_seq, unattached)

    lines = [f"# Archive: {_text(stream)}", ""]
    for number in archived:
        lines += [f"## Interaction #{number}", ""]
        for ev in groups[number]:
            lines.append(f"- [{_label(ev.actor or '-')} {_label(ev.type or '-')} {_label(ev.ts or '-')}]")
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


def _newer_on_disk(log: EventLog, dir_fd: int, stream: str, through_seq: int) -> bool:
    """Whether the snapshot on disk is of this stream through a later seq than ours, which a concurrent run
    read after we did, and the log still reaches that seq (else the log was reset: ours is the current
    one). Another stream's snapshot in the same directory (``out``) is simply replaced."""
    data = read_file(dir_fd, COMMUNICATION, COMMUNICATION)
    match = _HEADER.match(data or b"")
    if match is None or match[1].decode() != stream or int(match[2]) <= through_seq:
        return False
    try:
        return log.stat(stream).events >= int(match[2])
    except OSError:
        return True  # cannot tell: keep what is there


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
    actor = _label(ev.actor or "unknown")
    kind = _label(ev.type or "event")
    if to is None:
        return f"{actor} · {kind}"
    return f"{actor} → {_label(to)} · {kind}"


def _quoted(ev: Event) -> list[str]:
    return [f"> {line}" if line else ">" for line in _content(ev)]


def _content(ev: Event) -> list[str]:
    """The event's content as lines: ``data.content`` as text (else a top-level ``content``, as
    ``append_event`` and 002's shell writer keep it), anything else in data as one JSON line."""
    data = ev.data
    content = data.get("content")
    in_data = isinstance(content, str)
    if not in_data and isinstance(ev.extra.get("content"), str):
        content = ev.extra["content"]
    lines = _LINE_BREAKS.split(_text(content)) if isinstance(content, str) else []
    rest = {k: v for k, v in data.items() if k not in ("content", "to")} if in_data \
        else {k: v for k, v in data.items() if k != "to"}
    if rest:
        lines.append("`" + _text(_json.dumps(rest).decode()).replace("`", "\\u0060") + "`")
    return lines or ["(no content)"]


_UNSAFE = {0x0D: None, 0x00: "\\x00"}
# Everything str.splitlines() and Markdown readers may take for a line break: content is split on all of
# them, so each of its lines is quoted (or indented) and none can pass for a heading or a marker.
_LINE_BREAKS = re.compile("[\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# In one-line labels (actor, type, addressee, timestamp), any control character or line break is a space.
_LABEL_BREAKS = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]+")


def _text(value: str) -> str:
    """Text from an event, made safe for the view: no comment markers that could fake our own (BEGIN/END,
    the header), no carriage returns or NULs that would garble the file."""
    return value.replace("<!--", "&lt;!--").translate(_UNSAFE)


def _label(value: str) -> str:
    """A one-line label from an event (actor, type, addressee, ts): another writer's line is not checked as
    agentlog's own are, and a newline in a label must not start a heading of its own."""
    return _LABEL_BREAKS.sub(" ", value.replace("<!--", "&lt;!--"))


#: How often watch() also compares the stream's size and segments, for changes inotify did not report.
POLL_SECONDS = 1.0


def watch(log: EventLog, stream: str, *, keep: int = 3, out: str | os.PathLike[str] | None = None,
          on_render: Callable[[Snapshot], None] | None = None,
          on_error: Callable[[Exception], None] | None = None, stop_event: Any = None,
          debounce_ms: int = 200) -> None:
    """Render the snapshot now and again whenever ``stream`` changes, until ``stop_event`` is set (anything
    with ``is_set()``) or Ctrl-C.

    Changes come from inotify (through watchfiles) on the root's ``logs/`` directory, grouped for
    ``debounce_ms``; a rotation is a change like any other. Once a second the stream's size is also checked,
    so a change the file system did not report (network file systems) is picked up within a second or two,
    however busy other streams keep the directory. Arguments no rendering could fix (a bad stream name,
    ``keep`` or ``out``) raise at once; a rendering that fails goes to ``on_error`` (default: raised) and
    leaves the last good files in place.
    """
    import watchfiles  # only here: the append path must not pay for it

    if not log.root or log.root.startswith("memory:"):
        raise ValueError("watch needs a log on disk")
    _check_args(log, stream, keep, out)
    if debounce_ms < 0:
        raise ValueError("debounce_ms must not be negative")
    # watchfiles reports absolute paths, whatever form the watched one was given in.
    logs_dir = os.path.abspath(os.path.join(log.root, "logs"))
    os.close(open_view_dir(log.root, ["logs"]))  # watchfiles needs it to exist; created as the log would
    prefix = os.path.join(logs_dir, *stream.split("/"))

    def relevant(path: str) -> bool:
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
    checked = time.monotonic()
    # No watch_filter: watchfiles yields nothing while every change it sees is filtered out, so a busy
    # neighbouring stream would starve the once-a-second check. Changes are sorted out here instead.
    for changes in watchfiles.watch(logs_dir, debounce=debounce_ms, step=50, stop_event=stop_event,
                                    rust_timeout=int(POLL_SECONDS * 1000), yield_on_timeout=True,
                                    raise_interrupt=False):
        hit = any(relevant(path) for _change, path in changes)
        now = time.monotonic()
        if not hit and now - checked < POLL_SECONDS:
            continue
        checked = now
        fingerprint = _fingerprint(log, stream)
        if hit or fingerprint != last:
            render_now()
        last = fingerprint


def _fingerprint(log: EventLog, stream: str) -> tuple[int, int, int]:
    try:
        info = log.stat(stream)
    except OSError:
        return (-1, -1, -1)
    return (info.events, info.bytes, info.segments)
