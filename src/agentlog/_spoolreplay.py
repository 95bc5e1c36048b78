"""Replaying the spool: its pending files read back and appended to the log, each record once.

:mod:`agentlog.spool` keeps events while the root cannot take them and decides when to replay them; this is
how. :func:`replay` takes the spool's lock (so two processes never replay at once: one waits or skips), then
appends the pending records in order, one batch per stream and file, keeping their ids. It is idempotent by
id: before appending to a stream it collects the ids that stream already holds since shortly before the
records' first attempt, so a record is never written twice, whether an earlier replay was killed half-way or
the original append did land before its fsync failed. A record leaves the spool only once it is durable in
the log, whatever the log's ``durability``. A record that can never be replayed is quarantined; an entry
that cannot be read or trusted is skipped (:func:`read_entry` is also how ``Spool.status`` reads the spool).
What failed updates the backoff state (:mod:`agentlog._spoolstate`).

It is its own module because it is the spool's largest concern and runs only when something waits: the
spooling and the checks on every append stay short to read. It takes the :class:`~agentlog.spool.Spool` as an
argument and never imports :mod:`agentlog.spool`, which imports it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import time
from typing import TYPE_CHECKING, Any

from . import _json
from ._spoolfiles import drop_stale_tmp, entry_key, errname, text, untrusted, warn_skipped, write_file
from ._spoolstate import backoff_delay, due, empty_state, read_state, write_state
from .backends import _fs as fs
from .errors import AgentlogError, InvalidEvent, InvalidStreamName, StorageError
from .event import Draft, format_ts, make_draft, now_ts, parse_ts
from .names import validate_stream_name

if TYPE_CHECKING:
    from .backends import Backend
    from .log import EventLog
    from .spool import Spool

__all__ = ["ReplayReport", "Skip", "entry_names", "read_entry", "replay"]

# Replay looks for ids already in a stream from this long before the oldest record's first attempt, so a
# wall clock stepped back by NTP cannot hide a copy that did land.
_CLOCK_SLACK_SECONDS = 300.0
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# What `Spool.put` names a pending file; anything else found in pending/ is not replayed.
_PENDING_NAME = re.compile(r"[0-9]{20}-[0-9]+-[0-9a-f]{8}\.jsonl")


class ReplayReport:
    """The outcome of one replay. ``remaining`` records stay pending because of ``errors`` (per stream);
    ``deferred`` of them were not tried because their stream is backing off (automatic replays only)."""

    def __init__(self) -> None:
        self.replayed = 0
        self.duplicates = 0
        self.quarantined = 0
        self.remaining = 0
        self.deferred = 0
        self.errors: dict[str, str] = {}
        #: Entries of ``pending/`` that were not read, and why; they stay where they are.
        self.skipped: dict[str, str] = {}
        #: Another process was replaying and this one did not wait.
        self.busy = False
        self._failed_now = False  # a stream or an entry failed in this replay (not only deferred ones)

    @property
    def ok(self) -> bool:
        return not self.remaining and not self.busy and not self.skipped

    def to_dict(self) -> dict[str, Any]:
        return {"replayed": self.replayed, "duplicates": self.duplicates, "quarantined": self.quarantined,
                "remaining": self.remaining, "deferred": self.deferred, "errors": self.errors,
                "skipped": self.skipped, "busy": self.busy}

    def __repr__(self) -> str:
        return f"ReplayReport({self.to_dict()!r})"


class Skip(Exception):
    """A pending entry that is not read: the message says why."""


# --- reading the pending files --------------------------------------------------------------------------

def entry_names(dir_fd: int, *, tidy: bool) -> list[str]:
    """The entries of ``pending/`` in order (temp files aside; stale ones are removed when ``tidy``)."""
    out = []
    now = time.time_ns()
    for name in sorted(os.listdir(dir_fd)):
        if name.startswith("."):
            if tidy and name.endswith(".tmp"):
                drop_stale_tmp(dir_fd, name, now)
            continue
        out.append(name)
    return out


def read_entry(dir_fd: int, name: str) -> list[tuple[int, bytes, Any]] | None:
    """A pending file as ``(line number, raw line, parsed record or the text)``; ``None`` if it is gone.
    Raises :class:`Skip` for an entry that cannot be read or trusted."""
    if not _PENDING_NAME.fullmatch(name):
        raise Skip("not a spool file (its name is not one the spool gives); left as it is")
    try:
        fd = os.open(name, fs.READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Skip("a symlink, which is never followed in the spool") from None
        raise Skip(f"cannot open it: {errname(exc)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Skip("not a regular file (a directory, FIFO or device)")
        why = untrusted(st)
        if why:
            raise Skip(f"not replayed: it {why}")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    except OSError as exc:
        raise Skip(f"cannot read it: {errname(exc)}") from None
    finally:
        os.close(fd)
    records: list[tuple[int, bytes, Any]] = []
    for line_no, line in enumerate(b"".join(chunks).splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append((line_no, line, _json.loads(line)))
        except (ValueError, RecursionError):
            records.append((line_no, line, line.decode("utf-8", "replace")))
    return records


# --- replay ---------------------------------------------------------------------------------------------

def replay(spool: Spool, log: EventLog, *, wait: float | None, backoff: bool) -> ReplayReport:
    """:meth:`Spool.replay <agentlog.spool.Spool.replay>`: take the spool's lock (waiting ``wait`` seconds,
    or not at all when ``None``), then replay every pending file into ``log``."""
    report = ReplayReport()
    top = spool._open_top(create=False)
    if top is None:
        return report
    try:
        try:
            lock_fd = os.open("lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                              spool.file_mode, dir_fd=top)
        except OSError as exc:
            raise fs.storage_error(exc, "cannot open the spool's lock", os.path.join(spool.path, "lock")) \
                from None
        try:
            if wait is None:
                try:
                    fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    report.busy = True
                    return report
            else:
                fs.lock(lock_fd, timeout=wait, display=os.path.join(spool.path, "lock"))
            backend, twin = _durable_backend(log.backend)
            try:
                _replay_locked(spool, log, backend, top, report, backoff)
            finally:
                if twin is not None:
                    twin.close()
            return report
        finally:
            os.close(lock_fd)  # releases the flock
    finally:
        os.close(top)


def _replay_locked(spool: Spool, log: EventLog, backend: Backend, top: int, report: ReplayReport,
                   honour_backoff: bool) -> None:
    now = time.time()
    state = read_state(top)
    run = _Run(log, backend, report)
    if honour_backoff:
        run.deferred = {s for s, item in state["streams"].items() if now < due(item, now, spool.backoff_cap)}
    left: list[str] = []  # names still in pending/ afterwards
    skipped_now: dict[str, str] = {}
    waiting_entries: dict[str, dict[str, Any]] = {}
    pending_fd = spool._open_sub(top, "pending", create=False)
    if pending_fd is not None:
        display = os.path.join(spool.path, "pending")
        try:
            names = entry_names(pending_fd, tidy=True)
            for name in names:
                item = state["entries"].get(entry_key(name))
                if honour_backoff and item is not None and now < due(item, now, spool.backoff_cap):
                    waiting_entries[entry_key(name)] = item
                    report.skipped[text(name)] = item["error"]
                    left.append(name)
                    continue
                try:
                    records = read_entry(pending_fd, name)
                except Skip as why:
                    skipped_now[entry_key(name)] = report.skipped[text(name)] = str(why)
                    warn_skipped(os.path.join(display, name), str(why))
                    left.append(name)
                    continue
                if records is None:
                    continue  # replayed meanwhile by another process
                keep, changed = _replay_file(spool, run, top, name, records)
                if changed:
                    if keep:
                        write_file(pending_fd, name, b"".join(keep), spool.file_mode,
                                   os.path.join(display, name), replace=True)
                    else:
                        try:
                            os.unlink(name, dir_fd=pending_fd)
                        except FileNotFoundError:
                            pass
                    fs.fsync_dir(pending_fd, display)
                if keep:
                    left.append(name)
        except OSError as exc:
            if isinstance(exc, StorageError):
                raise
            raise StorageError.from_oserror(exc, "cannot replay the spool", display) from None
        finally:
            os.close(pending_fd)
    for stream in run.deferred & run.seen:
        item = state["streams"][stream]
        report.errors[stream] = (f"backing off after {item['failures']} failed replay(s), due again at "
                                 f"{format_ts(int(due(item, now, spool.backoff_cap) * 1e9))}: "
                                 f"{item['error']}")
    report.errors.update(run.failed)
    report._failed_now = bool(run.failed or skipped_now)
    # The backoff state: what failed now backs off longer, what waits keeps its time, the rest is forgotten.
    streams = {s: state["streams"][s] for s in run.deferred & run.seen}
    for stream, error in run.failed.items():
        failures = state["streams"].get(stream, {}).get("failures", 0) + 1
        streams[stream] = {"failures": failures, "error": error,
                           "until": now + backoff_delay(failures, spool.backoff_base, spool.backoff_cap)}
    entries = dict(waiting_entries)
    for key, error in skipped_now.items():
        failures = state["entries"].get(key, {}).get("failures", 0) + 1
        entries[key] = {"failures": failures, "error": error,
                        "until": now + backoff_delay(failures, spool.backoff_base, spool.backoff_cap)}
    new = {"streams": streams, "entries": entries, "held": sorted(entry_key(n) for n in left)} \
        if streams or entries else empty_state()
    if new != state:
        try:
            write_state(top, new, file_mode=spool.file_mode, path=spool.path)
        except StorageError as exc:  # what was replayed stays replayed; only the backoff is forgotten
            import logging

            logging.getLogger("agentlog").warning("agentlog: warning: %s", text(str(exc)))


def _replay_file(spool: Spool, run: _Run, top: int, name: str,
                 records: list[tuple[int, bytes, Any]]) -> tuple[list[bytes], bool]:
    """Replay one file: the lines that must stay pending (their stream could not be written or is backing
    off), in their order, and whether anything left the file."""
    report = run.report
    changed = False
    groups: dict[str, list[tuple[int, bytes, Draft, Any]]] = {}
    for line_no, raw, rec in records:
        try:
            if not isinstance(rec, dict):
                raise InvalidEvent("the record is not a JSON object")
            draft = _draft_of(rec, run.log.max_event_bytes)
        except (InvalidEvent, InvalidStreamName, TypeError, ValueError, RecursionError) as exc:
            _quarantine(spool, top, name, line_no, rec, text(str(exc)))
            report.quarantined += 1
            changed = True
            continue
        groups.setdefault(draft.stream, []).append((line_no, raw, draft, rec.get("attempted_at")))
    keep: list[tuple[int, bytes]] = []
    for stream, items in groups.items():
        run.seen.add(stream)
        if stream in run.deferred or stream in run.failed:
            keep.extend((line_no, raw) for line_no, raw, _d, _a in items)
            if stream in run.deferred:
                report.deferred += len(items)
            continue
        try:
            ids = run.ids(stream, [at for _l, _r, _d, at in items])
            todo: list[Draft] = []
            batch: set[str] = set()
            for _line_no, _raw, draft, _at in items:
                if draft.id in ids or draft.id in batch:
                    report.duplicates += 1
                else:
                    batch.add(draft.id)
                    todo.append(draft)
            if todo:
                run.backend.append(stream, todo)
                report.replayed += len(todo)
            ids.update(batch)  # only once they are in the log (and on disk)
            changed = True
        except (OSError, AgentlogError) as exc:
            run.failed[stream] = text(str(exc))
            keep.extend((line_no, raw) for line_no, raw, _d, _a in items)
    keep.sort()
    report.remaining += len(keep)
    return [raw + b"\n" for _line_no, raw in keep], changed


def _quarantine(spool: Spool, top: int, name: str, line_no: int, rec: Any, why: str) -> None:
    dir_fd = spool._open_sub(top, "quarantine", create=True)
    assert dir_fd is not None
    try:
        raw = rec if isinstance(rec, str) else _json.dumps(rec).decode()
        fs.append_quarantine(dir_fd, "spool.jsonl",
                             {"ts": now_ts(), "reason": why, "source": f"pending/{text(name)}",
                              "line": line_no, "record": raw},
                             file_mode=spool.file_mode, timeout=10.0,
                             display=os.path.join(spool.path, "quarantine", "spool.jsonl"))
    finally:
        os.close(dir_fd)


class _Run:
    """What one replay knows as it goes: the ids each stream holds, which streams failed or wait."""

    def __init__(self, log: EventLog, backend: Backend, report: ReplayReport) -> None:
        self.log = log
        self.backend = backend
        self.report = report
        self.deferred: set[str] = set()
        self.failed: dict[str, str] = {}
        self.seen: set[str] = set()
        # stream -> (ids, start of the window they cover: a canonical ts, "" for the whole stream)
        self._ids: dict[str, tuple[set[str], str]] = {}

    def ids(self, stream: str, attempted: list[Any]) -> set[str]:
        """The ids ``stream`` holds from shortly before the earliest of ``attempted`` on; the window only
        grows, so a later file whose records were first tried earlier still finds its copies."""
        start = ""
        for at in attempted:
            begin = _window_start(at)
            if begin is None:
                start = ""
                break
            start = begin if not start or begin < start else start
        have = self._ids.get(stream)
        if have is None:
            events = self.log.read(stream) if not start else self.log.query(streams=[stream], since=start)
            ids = {ev.id for ev in events if ev.id is not None}
            self._ids[stream] = (ids, start)
            return ids
        ids, covered = have
        if covered and (not start or start < covered):
            events = self.log.query(streams=[stream], since=start or None, until=covered)
            ids.update(ev.id for ev in events if ev.id is not None)
            self._ids[stream] = (ids, start)
        return ids


def _durable_backend(backend: Backend) -> tuple[Backend, Any]:
    """What replay appends through, and the twin to close afterwards (or ``None``).

    A record leaves the spool, where it was durable, only once it is durable in the log. A file log opened
    with ``durability="write"`` acknowledges before its fsync, so replay writes through a twin of it that
    fsyncs (same root, same settings: the file locks make the two as safe together as two processes)."""
    if getattr(backend, "durability", "fsync") == "fsync":
        return backend, None
    from .backends.file import FileBackend

    if type(backend) is not FileBackend:
        return backend, None
    twin = FileBackend(backend.root, durability="fsync", segment_bytes=backend.segment_bytes,
                       lock_timeout=backend.lock_timeout, file_mode=backend.file_mode, dir_mode=backend.dir_mode,
                       rotate=backend.rotate)
    return twin, twin


def _window_start(attempted_at: Any) -> str | None:
    """Where to look for copies of a record first tried at ``attempted_at`` (``None``: the whole stream)."""
    if not isinstance(attempted_at, str):
        return None
    try:
        from datetime import datetime, timedelta  # only on this rare path: appends stay light

        return parse_ts(datetime.fromisoformat(attempted_at) - timedelta(seconds=_CLOCK_SLACK_SECONDS))
    except (ValueError, OverflowError):
        return None


def _draft_of(rec: dict[str, Any], max_event_bytes: int) -> Draft:
    """Rebuild a spooled record as a draft with its original id, checked again like any new event."""
    rid = rec.get("id")
    if not isinstance(rid, str) or not _UUID.fullmatch(rid):
        raise InvalidEvent(f"the record has no valid id: {rid!r}")
    body = rec.get("event")
    if not isinstance(body, dict):
        raise InvalidEvent("the record holds no event object")
    fields = dict(body)
    stream = fields.pop("stream", None)
    if not isinstance(stream, str):
        raise InvalidStreamName(f"the record's stream is not a name: {stream!r}")
    validate_stream_name(stream)
    etype = fields.pop("type", None)
    data = fields.pop("data", None)
    actor = fields.pop("actor", None)
    at = rec.get("spooled_at")
    if isinstance(at, str) and "spooled_at" not in fields:
        fields["spooled_at"] = at
    draft = make_draft(stream, etype, data=data, actor=actor, fields=fields, max_event_bytes=max_event_bytes)
    draft.id = rid
    return draft
