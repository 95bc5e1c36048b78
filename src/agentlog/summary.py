"""Rolling summaries (004 S24): a stream's events collapsed into markdown, addressed by its sha256.

``rolling_summary(conversation_id, events)`` builds the summary record: the markdown, ``summary_ref`` (the
sha256 of the markdown's UTF-8 bytes), ``covers`` (first and last ``seq``), and the count per type.
``persist_summary(conversation_id, summary)`` writes ``<root>/summaries/<stream>.md`` atomically (the latest
summary of that stream) and an immutable copy ``<root>/summaries/sha256/<summary_ref>.md`` that is never
overwritten, so a ``summary_ref`` handed to someone keeps pointing at exactly what they were given.

The summariser is pluggable: any callable ``(conversation_id, events) -> markdown`` (an LLM call, say). The
default is deterministic: the same events give the same markdown, hence the same ``summary_ref``.

``summarize(log, stream)`` reads the stream as a view: malformed lines are skipped and isolated to
``<root>/errors/<stream>.jsonl`` (see :class:`agentlog._viewfile.MalformedLines`).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import _json
from ._viewfile import MalformedLines, open_view_dir, read_file, replace_file
from .errors import CorruptLog
from .event import Event, comparable_ts
from .names import validate_stream_name

if TYPE_CHECKING:
    from .log import EventLog

__all__ = ["BULLETS_PER_TYPE", "BULLET_CHARS", "Summariser", "deterministic", "persist_summary",
           "rolling_summary", "summarize"]

#: Each type's section lists its newest events, at most this many, oldest first.
BULLETS_PER_TYPE = 5
#: A bullet's text is cut to this many characters (an ellipsis marks the cut).
BULLET_CHARS = 160

Summariser = Callable[[str, Sequence[Event]], str]


def rolling_summary(conversation_id: str, events: Iterable[Event | Mapping[str, Any]], *,
                    summariser: Summariser | None = None) -> dict[str, Any]:
    """Summarise ``events`` (``Event`` objects or the dicts ``agentlog.tail`` returns) of one stream.

    Returns ``{"conversation_id", "markdown", "summary_ref", "covers": {"first_seq", "last_seq",
    "first_ts", "last_ts"}, "counts": {type: n}, "events": n, "summariser": name}``.
    """
    evs = _as_events(conversation_id, events)
    fn = summariser or deterministic
    markdown = fn(conversation_id, evs)
    if not isinstance(markdown, str):
        raise TypeError(f"the summariser returned {type(markdown).__name__}, not markdown text (str)")
    counts = Counter(ev.type for ev in evs)
    seqs = [ev.seq for ev in evs]
    first_ts, last_ts = _time_span(evs)
    return {
        "conversation_id": conversation_id,
        "markdown": markdown,
        "summary_ref": _sha256(markdown),
        "covers": {"first_seq": min(seqs, default=None), "last_seq": max(seqs, default=None),
                   "first_ts": first_ts, "last_ts": last_ts},
        "counts": dict(sorted(counts.items())),
        "events": len(evs),
        "summariser": _name_of(fn),
    }


def deterministic(conversation_id: str, events: Sequence[Event]) -> str:
    """The default summariser: a header line, the actors, then one section per type (alphabetical) with its
    count and its newest events as bullets."""
    lines = [f"# Summary: {conversation_id}", ""]
    if not events:
        return "\n".join([*lines, "No events.", ""])
    seqs = [ev.seq for ev in events]
    first_ts, last_ts = _time_span(events)
    span = f", {_label(first_ts)} to {_label(last_ts)}" if first_ts and last_ts else ""
    lines.append(f"{len(events)} events, seq {min(seqs)} to {max(seqs)}{span}.")
    actors = Counter(_label(ev.actor) for ev in events if ev.actor)
    if actors:
        lines.append("Actors: " + ", ".join(f"{name} ({n})" for name, n in sorted(actors.items())) + ".")
    by_type: dict[str, list[Event]] = {}
    for ev in sorted(events, key=lambda e: e.seq):
        by_type.setdefault(_label(ev.type) or "(no type)", []).append(ev)
    for kind in sorted(by_type):
        group = by_type[kind]
        lines += ["", f"## {kind} ({len(group)})"]
        shown = group[-BULLETS_PER_TYPE:]
        if len(group) > len(shown):
            lines.append(f"- ... {len(group) - len(shown)} earlier")
        for ev in shown:
            who = f" {_label(ev.actor)}" if ev.actor else ""
            lines.append(f"- #{ev.seq}{who}: {_one_line(ev)}")
    return "\n".join([*lines, ""])


def persist_summary(conversation_id: str, summary: Mapping[str, Any], *,
                    root: str | os.PathLike[str] | EventLog | None = None) -> str:
    """Write the summary's markdown to ``<root>/summaries/<conversation_id>.md`` (atomically) and to the
    immutable ``<root>/summaries/sha256/<summary_ref>.md``; return the first path.

    ``root`` is a directory or an ``EventLog`` (default: ``$AGENTLOG_ROOT``, else ``./.agentlog``). The
    markdown must hash to ``summary_ref``: a summary edited after it was made is refused. A stream under
    ``sha256/`` is refused too: its summary would land among the immutable copies.
    """
    validate_stream_name(conversation_id)
    if conversation_id.startswith("sha256/"):
        raise ValueError(f"cannot persist a summary of {conversation_id!r}: summaries/sha256/ holds the "
                         "immutable copies")
    markdown, ref = summary.get("markdown"), summary.get("summary_ref")
    if not isinstance(markdown, str) or not isinstance(ref, str):
        raise ValueError("a summary needs 'markdown' and 'summary_ref' (as rolling_summary returns)")
    if _sha256(markdown) != ref:
        raise ValueError("the summary's markdown does not hash to its summary_ref: it was changed after it was "
                         "made")
    base = _root_path(root)
    data = markdown.encode("utf-8")
    *parents, leaf = conversation_id.split("/")
    dir_fd = open_view_dir(base, ["summaries", "sha256"])
    try:
        _write_once(dir_fd, f"{ref}.md", data, os.path.join(base, "summaries", "sha256", f"{ref}.md"))
    finally:
        os.close(dir_fd)
    dir_fd = open_view_dir(base, ["summaries", *parents])
    path = os.path.join(base, "summaries", *parents, f"{leaf}.md")
    try:
        replace_file(dir_fd, f"{leaf}.md", data, display=path, backup=False)
    finally:
        os.close(dir_fd)
    return path


def summarize(log: EventLog, stream: str, *, summariser: Summariser | None = None,
              persist: bool = True) -> tuple[dict[str, Any], str | None]:
    """Summarise a whole stream of ``log`` and (by default) persist it: ``(summary, path or None)``.

    Malformed lines are skipped and isolated to ``<root>/errors/<stream>.jsonl``; when there were any, the
    summary says so: ``summary["malformed"] == {"lines": n, "errors": path}`` (outside the markdown, so
    ``summary_ref`` depends on the events alone)."""
    malformed = MalformedLines(log.root, stream, "summary")
    summary = rolling_summary(stream, log.read(stream, on_malformed=malformed), summariser=summariser)
    covered = summary["covers"]["last_seq"]
    isolated = malformed.isolate(through_seq=covered if isinstance(covered, int) else None)
    if isolated is not None:
        summary["malformed"] = {"lines": isolated.met, "errors": isolated.path}
    return summary, (persist_summary(stream, summary, root=log) if persist else None)


def _write_once(dir_fd: int, name: str, data: bytes, display: str) -> None:
    """Create ``name`` holding ``data`` unless it exists; an existing copy must be identical."""
    existing = read_file(dir_fd, name, display)
    if existing is None:
        replace_file(dir_fd, name, data, display=display, backup=False)
    elif existing != data:
        raise CorruptLog("an immutable summary copy does not match its sha256 name", path=display)


def _as_events(conversation_id: str, events: Iterable[Event | Mapping[str, Any]]) -> list[Event]:
    out = []
    for position, item in enumerate(events, 1):
        if isinstance(item, Event):
            out.append(item)
        elif isinstance(item, Mapping):
            record = dict(item)
            ev = Event.from_record(record, stream=conversation_id, seq=position)
            if "content" in ev.extra and "content" not in ev.data:  # 004's dicts keep content top-level
                ev.data = {**ev.data, "content": ev.extra["content"]}
            out.append(ev)
        else:
            raise TypeError(f"events must be Event objects or dicts, got {type(item).__name__}")
    return out


def _time_span(events: Sequence[Event]) -> tuple[str | None, str | None]:
    """The earliest and the latest ``ts`` as stored, compared as instants (another writer's offsets and
    precisions sort correctly); timestamps that are not RFC 3339 are left out."""
    stamped = [(key, ev.ts) for ev in events if ev.ts and (key := comparable_ts(ev.ts)) is not None]
    if not stamped:
        return None, None
    return min(stamped)[1], max(stamped)[1]


def _label(value: str) -> str:
    """A label (actor, type, ts) on one line: another writer's lines are not checked as agentlog's are."""
    return " ".join(value.split())


def _one_line(ev: Event) -> str:
    content = ev.data.get("content")
    if not isinstance(content, str) and isinstance(ev.extra.get("content"), str):
        content = ev.extra["content"]  # kept top-level by append_event and by 002's shell writer
    text = content if isinstance(content, str) else (_json.dumps(ev.data).decode() if ev.data else "")
    text = " ".join(text.split()) or "(no content)"
    return text if len(text) <= BULLET_CHARS else text[:BULLET_CHARS - 1] + "…"


def _sha256(markdown: str) -> str:
    return hashlib.sha256(markdown.encode("utf-8")).hexdigest()


def _name_of(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{name}" if module else name


def _root_path(root: str | os.PathLike[str] | EventLog | None) -> str:
    from .log import EventLog, default_root

    if isinstance(root, EventLog):
        if not root.root or root.root.startswith("memory:"):
            raise ValueError("a memory log has no root to write summaries under: give root=DIR")
        return root.root
    return default_root() if root is None else os.fspath(root)
