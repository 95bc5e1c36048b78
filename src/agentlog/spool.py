"""The offline spool: where events wait while the log's root cannot take them.

002 (§6) and 003 ask that a log that cannot be written degrade gracefully instead of losing events. When an
append fails with a :class:`~agentlog.StorageError` (a full or read-only disk, a missing root, a lock held past
three attempts), :class:`~agentlog.EventLog` hands the events to this spool: they are fsynced into a
directory *outside* the root, and the caller gets them back with ``spooled=True`` (and ``seq`` 0) instead of an
error. Nothing is silent: every spooling is a warning on the ``agentlog`` logger (stderr by default).

Layout, one directory per root (the root's path, escaped, names it)::

    <spool dir>/<escaped root>/
        ROOT                   the root this spool belongs to
        lock                   flock held by whoever replays
        pending/<ns>-<pid>-<rand>.jsonl   one file per spooled batch, written temp -> fsync -> rename
        quarantine/spool.jsonl records that can never be replayed, with the reason

Replay appends the pending records in order, one batch per stream and file, keeping their ids, and adds
``spooled_at`` (when the event was first written) to each. It is idempotent by id: before appending to a
stream it collects the ids that stream already holds since the oldest record's first attempt, so a record
is never written twice, whether an earlier replay was killed half-way, two processes replay at once (the lock
makes one wait or skip) or the original append did land before its fsync failed. A record that cannot be
replayed at all (not JSON, no id, an invalid name or event) is quarantined and replay goes on.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import _json
from .backends import _fs as fs
from .errors import AgentlogError, InvalidEvent, InvalidStreamName, StorageError
from .event import Draft, Event, make_draft, now_ts
from .names import validate_stream_name

if TYPE_CHECKING:
    from .log import EventLog

__all__ = ["LOCK_ATTEMPTS", "SPOOL_ENV", "ReplayReport", "Spool", "SpoolStatus", "resolve_spool_dir"]

#: Names the spool directory; ``off`` (or ``0``, ``false``, ``no``, ``none``) turns spooling off.
SPOOL_ENV = "AGENTLOG_SPOOL"
#: A lock timeout is retried this many times in all (with a short backoff) before the event is spooled.
LOCK_ATTEMPTS = 3
LOCK_BACKOFF = 0.1
_OFF = frozenset(("off", "0", "false", "no", "none"))
# Replay looks for ids already in a stream from this long before the oldest record's first attempt, so a
# wall clock stepped back by NTP cannot hide a copy that did land.
_CLOCK_SLACK = timedelta(minutes=5)
# After a failed automatic replay, appends wait this long before trying again, so an outage does not make
# every append pay for a second failing attempt.
_AUTO_RETRY_AFTER = 5.0
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_STALE_TMP_NS = 3600 * 10**9


def resolve_spool_dir(spool_dir: str | os.PathLike[str] | bool | None) -> str | None:
    """The spool directory to use: ``spool_dir`` if given (``False`` turns spooling off), else
    ``$AGENTLOG_SPOOL``, else ``$XDG_STATE_HOME/agentlog/spool`` (``~/.local/state/agentlog/spool``)."""
    if spool_dir is False:
        return None
    if spool_dir is not None and spool_dir is not True:
        return os.path.abspath(os.fspath(spool_dir))
    env = os.environ.get(SPOOL_ENV, "").strip()
    if env:
        return None if env.lower() in _OFF else os.path.abspath(env)
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(os.path.abspath(state), "agentlog", "spool")


class SpoolStatus:
    """What a spool holds: ``records`` pending in ``files``, per stream, and how many were quarantined."""

    # Plain classes, not dataclasses: defining a dataclass costs milliseconds at import, on every
    # `agentlog append`.
    def __init__(self, path: str, root: str) -> None:
        self.path = path
        self.root = root
        self.records = 0
        self.files = 0
        self.streams: dict[str, int] = {}
        #: When the oldest waiting record was spooled.
        self.oldest: str | None = None
        self.quarantined = 0

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "root": self.root, "records": self.records, "files": self.files,
                "streams": self.streams, "oldest": self.oldest, "quarantined": self.quarantined}

    def __repr__(self) -> str:
        return f"SpoolStatus({self.to_dict()!r})"


class ReplayReport:
    """The outcome of one replay. ``remaining`` records stay pending because of ``errors`` (per stream)."""

    def __init__(self) -> None:
        self.replayed = 0
        self.duplicates = 0
        self.quarantined = 0
        self.remaining = 0
        self.errors: dict[str, str] = {}
        #: Another process was replaying and this one did not wait.
        self.busy = False

    @property
    def ok(self) -> bool:
        return not self.remaining and not self.busy

    def to_dict(self) -> dict[str, Any]:
        return {"replayed": self.replayed, "duplicates": self.duplicates, "quarantined": self.quarantined,
                "remaining": self.remaining, "errors": self.errors, "busy": self.busy}

    def __repr__(self) -> str:
        return f"ReplayReport({self.to_dict()!r})"


class Spool:
    """The spool of one root."""

    def __init__(self, directory: str, root: str, *, file_mode: int = 0o600, dir_mode: int = 0o700) -> None:
        self.root = os.path.realpath(root)
        self.directory = os.path.realpath(directory)
        if self.directory == self.root or self.directory.startswith(self.root.rstrip(os.sep) + os.sep):
            raise ValueError(f"the spool ({directory}) must be outside the log's root ({root}): it is where "
                             "events wait when the root cannot be written")
        self.path = os.path.join(self.directory, _escape(self.root))
        self.file_mode = file_mode
        self.dir_mode = dir_mode
        self._empty_mtime: int | None = None
        self._auto_after = 0.0

    # --- spooling ---------------------------------------------------------------------------------------

    def put(self, drafts: Sequence[Draft], error: StorageError, attempted_at: str) -> list[Event]:
        """Fsync ``drafts`` into the spool as one file and return them as spooled events; raises
        :class:`StorageError` if the spool cannot take them either."""
        spooled_at = now_ts()
        reason = _json.dumps(str(error))
        lines = b"".join(b'{"id":"%s","attempted_at":"%s","spooled_at":"%s","error":%s,"event":%s}\n'
                         % (d.id.encode(), attempted_at.encode(), spooled_at.encode(), reason, d.body)
                         for d in drafts)
        name = f"{time.time_ns():020d}-{os.getpid()}-{os.urandom(4).hex()}.jsonl"
        dir_fd = self._open("pending", create=True)
        assert dir_fd is not None
        try:
            _write_file(dir_fd, name, lines, self.file_mode, os.path.join(self.path, "pending", name))
        finally:
            os.close(dir_fd)
        events = []
        for d in drafts:
            ev = d.event(0, spooled_at)
            ev.spooled = True
            events.append(ev)
        import logging  # only on this rare path: `agentlog append` must start fast

        logging.getLogger("agentlog").warning(
            "agentlog: warning: %s; %d event(s) spooled to %s; they will be appended on the next successful "
            "append to %s or by `agentlog spool replay`", error, len(drafts), self.path, self.root)
        return events

    def pending(self) -> bool:
        """Whether anything waits to be replayed: one ``stat`` while the spool stays empty."""
        pending_dir = os.path.join(self.path, "pending")
        try:
            mtime = os.stat(pending_dir, follow_symlinks=False).st_mtime_ns
        except OSError:
            return False
        if mtime == self._empty_mtime:
            return False
        if _pending_names(pending_dir):
            return True
        # A directory's mtime has the kernel's clock-tick resolution: trust "empty" only once it is old
        # enough that a file added in the same tick would have been listed.
        if time.time_ns() - mtime > 1_000_000_000:
            self._empty_mtime = mtime
        return False

    def auto_replay(self, log: EventLog) -> None:
        """After a successful append: replay if something waits, without waiting for another replayer.
        Failures leave the records pending and are logged; the append that triggered this has succeeded."""
        if not self.pending() or time.monotonic() < self._auto_after:
            return
        try:
            report = self.replay(log, wait=None)
        except (OSError, AgentlogError) as exc:
            report = ReplayReport()
            report.errors["*"] = str(exc)
            report.remaining = 1
        if report.remaining:
            self._auto_after = time.monotonic() + _AUTO_RETRY_AFTER
            import logging

            logging.getLogger("agentlog").warning(
                "agentlog: warning: %d spooled event(s) could not be replayed yet (%s); they stay in %s",
                report.remaining, "; ".join(f"{k}: {v}" for k, v in report.errors.items()), self.path)

    # --- reading the spool ---------------------------------------------------------------------------

    def status(self) -> SpoolStatus:
        out = SpoolStatus(path=self.path, root=self.root)
        for _name, records in self._load(tidy=False):
            out.files += 1
            for _line_no, rec in records:
                if isinstance(rec, dict):
                    stream = _record_stream(rec) or "?"
                    out.streams[stream] = out.streams.get(stream, 0) + 1
                    at = rec.get("spooled_at")
                    if isinstance(at, str) and (out.oldest is None or at < out.oldest):
                        out.oldest = at
                out.records += 1
        qpath = os.path.join(self.path, "quarantine", "spool.jsonl")
        try:
            with open(qpath, "rb") as fh:
                out.quarantined = sum(1 for line in fh if line.strip())
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError.from_oserror(exc, "cannot read the spool's quarantine", qpath) from None
        return out

    # --- replay -------------------------------------------------------------------------------------------

    def replay(self, log: EventLog, *, wait: float | None = 60.0) -> ReplayReport:
        """Append every pending record to ``log``, in order and at most once per id.

        ``wait`` is how long to wait for another process's replay to finish (``None``: do not wait, and
        return a report with ``busy`` set)."""
        report = ReplayReport()
        spool_fd = self._open(create=False)
        if spool_fd is None:
            return report
        try:
            lock_fd = os.open("lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, self.file_mode,
                              dir_fd=spool_fd)
        except OSError as exc:
            os.close(spool_fd)
            raise StorageError.from_oserror(exc, "cannot open the spool's lock", self.path) from None
        try:
            if wait is None:
                try:
                    fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    report.busy = True
                    return report
            else:
                fs.lock(lock_fd, timeout=wait, display=os.path.join(self.path, "lock"))
            self._replay_locked(log, report)
            return report
        finally:
            os.close(lock_fd)  # releases the flock
            os.close(spool_fd)

    def _replay_locked(self, log: EventLog, report: ReplayReport) -> None:
        files = self._load()
        if not files:
            return
        oldest: dict[str, str] = {}
        for _name, records in files:
            for _line_no, rec in records:
                stream = _record_stream(rec) if isinstance(rec, dict) else None
                at = rec.get("attempted_at") if isinstance(rec, dict) else None
                if stream and isinstance(at, str) and (stream not in oldest or at < oldest[stream]):
                    oldest[stream] = at
        present: dict[str, set[str]] = {}
        failed: dict[str, str] = {}
        dir_fd = self._open("pending", create=False)
        if dir_fd is None:
            return
        try:
            for name, records in files:
                keep = self._replay_file(log, name, records, oldest, present, failed, report)
                path = os.path.join(self.path, "pending", name)
                if keep:
                    _write_file(dir_fd, name, b"".join(keep), self.file_mode, path, replace=True)
                else:
                    try:
                        os.unlink(name, dir_fd=dir_fd)
                    except FileNotFoundError:
                        pass
                fs.fsync_dir(dir_fd, os.path.join(self.path, "pending"))
        finally:
            os.close(dir_fd)
        report.errors.update(failed)

    def _replay_file(self, log: EventLog, name: str, records: list[tuple[int, Any]], oldest: dict[str, str],
                     present: dict[str, set[str]], failed: dict[str, str], report: ReplayReport) -> list[bytes]:
        """Replay one file; return the lines that must stay pending (their stream could not be written)."""
        groups: dict[str, list[tuple[Draft, bytes]]] = {}
        for line_no, rec in records:
            try:
                if not isinstance(rec, dict):
                    raise InvalidEvent("the record is not a JSON object")
                draft = _draft_of(rec, log.max_event_bytes)
            except (InvalidEvent, InvalidStreamName) as exc:
                self._quarantine(name, line_no, rec, str(exc))
                report.quarantined += 1
                continue
            groups.setdefault(draft.stream, []).append((draft, _json.dumps(rec) + b"\n"))
        keep: list[bytes] = []
        for stream, items in groups.items():
            if stream in failed:
                keep.extend(line for _, line in items)
                continue
            try:
                ids = present.get(stream)
                if ids is None:
                    ids = present[stream] = _ids_since(log, stream, oldest.get(stream))
                todo = []
                for draft, _line in items:
                    if draft.id in ids:
                        report.duplicates += 1
                    else:
                        ids.add(draft.id)
                        todo.append(draft)
                if todo:
                    log.backend.append(stream, todo)
                    report.replayed += len(todo)
            except (OSError, AgentlogError) as exc:
                for draft, _line in items:  # not written: they must be found missing next time
                    present.get(stream, set()).discard(draft.id)
                failed[stream] = str(exc)
                keep.extend(line for _, line in items)
        report.remaining += len(keep)
        return keep

    def _quarantine(self, name: str, line_no: int, rec: Any, why: str) -> None:
        dir_fd = self._open("quarantine", create=True)
        assert dir_fd is not None
        try:
            raw = rec if isinstance(rec, str) else _json.dumps(rec).decode()
            fs.append_quarantine(dir_fd, "spool.jsonl",
                                 {"ts": now_ts(), "reason": why, "source": f"pending/{name}", "line": line_no,
                                  "record": raw},
                                 file_mode=self.file_mode, timeout=10.0,
                                 display=os.path.join(self.path, "quarantine", "spool.jsonl"))
        finally:
            os.close(dir_fd)

    def _load(self, *, tidy: bool = True) -> list[tuple[str, list[tuple[int, Any]]]]:
        """Every pending file in order, each as ``(line number, parsed record or the raw text)``."""
        dir_fd = self._open("pending", create=False)
        if dir_fd is None:
            return []
        out = []
        try:
            now = time.time_ns()
            for name in sorted(os.listdir(dir_fd)):
                if tidy and name.startswith(".") and name.endswith(".tmp"):
                    _drop_stale_tmp(dir_fd, name, now)
                    continue
                if not name.endswith(".jsonl") or name.startswith("."):
                    continue
                try:
                    fd = os.open(name, fs.READ_FLAGS, dir_fd=dir_fd)
                except FileNotFoundError:
                    continue  # replayed meanwhile by another process
                with os.fdopen(fd, "rb") as fh:
                    raw = fh.read()
                records: list[tuple[int, Any]] = []
                for line_no, line in enumerate(raw.splitlines(), 1):
                    if not line.strip():
                        continue
                    try:
                        records.append((line_no, _json.loads(line)))
                    except _json.DecodeError:
                        records.append((line_no, line.decode("utf-8", "replace")))
                out.append((name, records))
        except OSError as exc:
            raise StorageError.from_oserror(exc, "cannot read the spool", os.path.join(self.path, "pending")) \
                from None
        finally:
            os.close(dir_fd)
        return out

    def _open(self, *parts: str, create: bool) -> int | None:
        """A descriptor for ``<spool>/parts``; the per-root directory below the spool dir, and everything
        under it, is opened without following symlinks."""
        base_fd = fs.open_root(self.directory, create=create, dir_mode=self.dir_mode)
        if base_fd is None:
            return None
        try:
            key = os.path.basename(self.path)
            top = fs.open_dir(base_fd, [key], create=create, dir_mode=self.dir_mode, display=self.path)
            if top is None:
                return None
            try:
                if create:
                    self._write_root_note(top)
                if not parts:
                    top, fd = -1, top
                    return fd
                return fs.open_dir(top, list(parts), create=create, dir_mode=self.dir_mode,
                                   display=os.path.join(self.path, *parts))
            finally:
                if top >= 0:
                    os.close(top)
        finally:
            os.close(base_fd)

    def _write_root_note(self, dir_fd: int) -> None:
        """``ROOT`` names the root a spool belongs to, for people and for ``agentlog spool status``."""
        try:
            fd = os.open("ROOT", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         self.file_mode, dir_fd=dir_fd)
        except FileExistsError:
            return
        except OSError as exc:
            raise StorageError.from_oserror(exc, "cannot write the spool's ROOT note", self.path) from None
        try:
            os.write(fd, self.root.encode() + b"\n")
        finally:
            os.close(fd)


def _escape(root: str) -> str:
    """The root's path as one readable directory name (``/srv/log`` -> ``%2Fsrv%2Flog``)."""
    name = root.replace("%", "%25").replace("/", "%2F")
    if len(name) > 200:
        import hashlib

        name = name[:100] + "%" + hashlib.sha256(root.encode()).hexdigest()[:32]
    return name


def _pending_names(pending_dir: str) -> list[str]:
    try:
        return [n for n in os.listdir(pending_dir) if n.endswith(".jsonl") and not n.startswith(".")]
    except OSError:
        return []


def _record_stream(rec: dict[str, Any]) -> str | None:
    ev = rec.get("event")
    stream = ev.get("stream") if isinstance(ev, dict) else None
    return stream if isinstance(stream, str) else None


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


def _ids_since(log: EventLog, stream: str, attempted_at: str | None) -> set[str]:
    """Ids the stream already holds from shortly before ``attempted_at`` on (all of them without a time)."""
    since = None
    if attempted_at is not None:
        try:
            since = (datetime.fromisoformat(attempted_at) - _CLOCK_SLACK).isoformat()
        except ValueError:
            since = None
    events = log.read(stream) if since is None else log.query(streams=[stream], since=since)
    return {ev.id for ev in events if ev.id is not None}


def _write_file(dir_fd: int, name: str, data: bytes, file_mode: int, display: str, *,
                replace: bool = False) -> None:
    """Write ``name`` whole or not at all: a private temp file, fsync, rename (no directory fsync here)."""
    tmp = f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, file_mode,
                     dir_fd=dir_fd)
        try:
            os.fchmod(fd, file_mode)
            fs.write_all(fd, data, 0, display)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        if not replace:
            fs.fsync_dir(dir_fd, display)
    except OSError as exc:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        if isinstance(exc, StorageError):
            raise
        raise StorageError.from_oserror(exc, "cannot write to the spool", display) from None


def _drop_stale_tmp(dir_fd: int, name: str, now: int) -> None:
    """Remove a temp file left by a spooler killed mid-write (its events were never acknowledged)."""
    try:
        if now - os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mtime_ns > _STALE_TMP_NS:
            os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass
