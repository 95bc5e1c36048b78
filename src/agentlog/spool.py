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
        backoff.json           streams (and unreadable entries) whose replay keeps failing, and until when
                               the automatic replay leaves them alone
        pending/<ns>-<pid>-<rand>.jsonl   one file per spooled batch, written temp -> fsync -> rename
        quarantine/spool.jsonl records that can never be replayed, with the reason

The spool is trusted input: what it holds is appended to the log. So the per-root directory and everything
in it must belong to the effective user and be writable by nobody else (directories are made 0700, files
0600); a spool that is not is refused with a :class:`~agentlog.StorageError`, and a pending file that is not
is skipped. Nothing below the spool dir itself is opened through a symlink.

Replay appends the pending records in order, one batch per stream and file, keeping their ids, and adds
``spooled_at`` (when the event was first written) to each. It is idempotent by id: before appending to a
stream it collects the ids that stream already holds since shortly before the records' first attempt, so a
record is never written twice, whether an earlier replay was killed half-way, two processes replay at once
(the lock makes one wait or skip) or the original append did land before its fsync failed. A record leaves
the spool only once it is durable in the log, whatever the log's ``durability``. A record that cannot be
replayed at all (not JSON, no id, an invalid name or event) is quarantined and replay goes on; an entry that
cannot be read or trusted is skipped with a warning and left where it is.

A stream that still cannot be written keeps its records (a pending file is rewritten only when some of its
records left it). The automatic replay, which runs after every successful append, then leaves that stream
alone for 5 s, 10 s, 20 s, ... at most :data:`BACKOFF_CAP` seconds; the state lives in ``backoff.json`` so
that every process (each ``agentlog append`` is one) honours it. An explicit replay ignores it.

This module is the spool as its callers see it: where it lives, :meth:`Spool.put`, the cheap checks that run
after every append (:meth:`Spool.pending`, :meth:`Spool.auto_replay`), :meth:`Spool.status` and
:meth:`Spool.replay`. How a replay is done lives in :mod:`agentlog._spoolreplay`, the file-system helpers in
:mod:`agentlog._spoolfiles` and the backoff state in :mod:`agentlog._spoolstate`, each its own concern so
that none grows past a few hundred lines.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from . import _json
from ._spoolfiles import (
    check_trusted,
    entry_key,
    escape,
    fsbytes,
    pending_names,
    realpath,
    text,
    warn_skipped,
    write_file,
)
from ._spoolstate import BACKOFF_BASE, BACKOFF_CAP, backoff_delay, due, next_due, read_state
from ._spoolstate import backoff_delay as _backoff_delay  # noqa: F401  (the tests' name for it)
from .backends import _fs as fs
from .errors import StorageError
from .event import Draft, Event, format_ts, now_ts

if TYPE_CHECKING:
    from ._spoolreplay import ReplayReport
    from .log import EventLog

__all__ = ["BACKOFF_BASE", "BACKOFF_CAP", "LOCK_ATTEMPTS", "SPOOL_ENV", "ReplayReport", "Spool", "SpoolStatus",
           "resolve_spool_dir"]


def __getattr__(name: str) -> object:
    # The replay engine (and its report) is imported when first needed: every append imports this module,
    # few ever replay.
    if name == "ReplayReport":
        from ._spoolreplay import ReplayReport

        return ReplayReport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

#: Names the spool directory; ``off`` (or ``0``, ``false``, ``no``, ``none``) turns spooling off.
SPOOL_ENV = "AGENTLOG_SPOOL"
#: A lock timeout is retried this many times in all (with a short backoff) before the event is spooled.
LOCK_ATTEMPTS = 3
LOCK_BACKOFF = 0.1
# BACKOFF_BASE and BACKOFF_CAP (how long the automatic replay leaves a failing stream alone) are defined with the
# backoff state, in _spoolstate, and are public here.
_OFF = frozenset(("off", "0", "false", "no", "none"))
# The last pending-file timestamp this process used: its own spooled batches are named in order even if the
# wall clock steps back.
_LAST_NS = [0]


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
        #: Entries of ``pending/`` that were not read, and why (not a spool file, unreadable, not trusted).
        self.skipped: dict[str, str] = {}
        #: Streams whose replay keeps failing: ``{"failures": n, "retry_at": ts, "error": text}``.
        self.backoff: dict[str, dict[str, Any]] = {}

    def to_dict(self) -> dict[str, Any]:
        return {"path": text(self.path), "root": text(self.root), "records": self.records, "files": self.files,
                "streams": self.streams, "oldest": self.oldest, "quarantined": self.quarantined,
                "skipped": self.skipped, "backoff": self.backoff}

    def __repr__(self) -> str:
        return f"SpoolStatus({self.to_dict()!r})"


class Spool:
    """The spool of one root."""

    def __init__(self, directory: str, root: str, *, file_mode: int = 0o600, dir_mode: int = 0o700) -> None:
        self.root = realpath(root)
        self.directory = realpath(directory)
        if self.directory == self.root or self.directory.startswith(self.root.rstrip(os.sep) + os.sep):
            raise ValueError(f"the spool ({directory}) must be outside the log's root ({root}): it is where "
                             "events wait when the root cannot be written")
        self.key = escape(self.root)
        self.path = os.path.join(self.directory, self.key)
        # The spool is private to its user whatever modes the log's files get: others may not plant records.
        self.file_mode = (file_mode & 0o700) | 0o600
        self.dir_mode = 0o700  # ``dir_mode`` too: only the owner's bits would count
        #: Seconds the automatic replay first leaves a failing stream alone, and the most it ever does.
        self.backoff_base = BACKOFF_BASE
        self.backoff_cap = BACKOFF_CAP
        self._empty_mtime: int | None = None
        self._held: tuple[int, float] | None = None  # (pending/'s mtime, wall time) nothing is due before
        self._auto_after = 0.0  # monotonic; after a replay that failed as a whole (no per-stream state)
        self._auto_failures = 0

    # --- spooling ---------------------------------------------------------------------------------------

    def put(self, drafts: Sequence[Draft], error: StorageError, attempted_at: str) -> list[Event]:
        """Fsync ``drafts`` into the spool as one file and return them as spooled events; raises
        :class:`StorageError` if the spool cannot take them either."""
        spooled_at = now_ts()
        reason = _json.dumps(text(str(error)))
        lines = b"".join(b'{"id":"%s","attempted_at":"%s","spooled_at":"%s","error":%s,"event":%s}\n'
                         % (d.id.encode(), attempted_at.encode(), spooled_at.encode(), reason, d.body)
                         for d in drafts)
        ns = _LAST_NS[0] = max(time.time_ns(), _LAST_NS[0] + 1)
        name = f"{ns:020d}-{os.getpid()}-{os.urandom(4).hex()}.jsonl"
        top = self._open_top(create=True)
        assert top is not None
        try:
            dir_fd = self._open_sub(top, "pending", create=True)
            assert dir_fd is not None
        finally:
            os.close(top)
        try:
            write_file(dir_fd, name, lines, self.file_mode, os.path.join(self.path, "pending", name))
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
        return self._waiting() is not None

    def _waiting(self) -> tuple[int, list[str]] | None:
        """``(mtime of pending/, the names in it)`` when something is there, else ``None``."""
        pending_dir = os.path.join(self.path, "pending")
        try:
            mtime = os.stat(pending_dir, follow_symlinks=False).st_mtime_ns
        except OSError:
            return None
        if mtime == self._empty_mtime:
            return None
        names = pending_names(pending_dir)
        if names:
            return mtime, names
        # A directory's mtime has the kernel's clock-tick resolution: trust "empty" only once it is old
        # enough that a file added in the same tick would have been listed.
        if time.time_ns() - mtime > 1_000_000_000:
            self._empty_mtime = mtime
        return None

    def auto_replay(self, log: EventLog) -> None:
        """After a successful append: replay if something waits and is due, without waiting for another
        replayer. Failures leave the records pending and are logged, never raised: the append that triggered
        this has succeeded."""
        waiting = self._waiting()
        if waiting is None or time.monotonic() < self._auto_after:
            return
        mtime, names = waiting
        now = time.time()
        held = self._held
        if held is not None and held[0] == mtime and now < held[1]:
            return
        import logging

        try:
            until = self._held_until(names, now)
            if until is not None:  # everything waiting is backing off: not even a lock to take
                if time.time_ns() - mtime > 1_000_000_000:  # see _waiting on the mtime's resolution
                    self._held = (mtime, until)
                return
            report = self.replay(log, wait=None, backoff=True)
        except Exception as exc:  # whatever went wrong, the append itself succeeded
            self._auto_failures += 1
            self._auto_after = time.monotonic() + backoff_delay(self._auto_failures, self.backoff_base,
                                                                self.backoff_cap)
            logging.getLogger("agentlog").warning(
                "agentlog: warning: the spooled events could not be replayed (%s); they stay in %s",
                text(str(exc)), self.path)
            return
        self._auto_failures = 0
        if report._failed_now:
            problems = [f"{k}: {v}" for k, v in report.errors.items()]
            problems += [f"pending/{k}: {v}" for k, v in report.skipped.items()]
            logging.getLogger("agentlog").warning(
                "agentlog: warning: %d spooled event(s) could not be replayed yet (%s); they stay in %s",
                report.remaining, "; ".join(problems), self.path)

    def _held_until(self, names: list[str], now: float) -> float | None:
        """When everything in ``names`` was left pending by a replay and is backing off: the wall time the
        first of it is due again. ``None`` when something is due now (or is new)."""
        top = self._open_top(create=False)
        if top is None:
            return None
        try:
            state = read_state(top)
        finally:
            os.close(top)
        held = state["held"]
        if not held or not all(entry_key(name) in held for name in names):
            return None
        until = next_due(state, now, self.backoff_cap)
        return until if until is not None and now < until else None

    # --- reading the spool ---------------------------------------------------------------------------

    def status(self) -> SpoolStatus:
        out = SpoolStatus(path=self.path, root=self.root)
        top = self._open_top(create=False)
        if top is None:
            return out
        try:
            state = read_state(top)
            now = time.time()
            for stream, item in state["streams"].items():
                out.backoff[stream] = {"failures": item["failures"],
                                       "retry_at": format_ts(int(due(item, now, self.backoff_cap) * 1e9)),
                                       "error": item["error"]}
            pending_fd = self._open_sub(top, "pending", create=False)
            if pending_fd is not None:
                try:
                    for _name, records in self._entries(pending_fd, tidy=False, skipped=out.skipped):
                        out.files += 1
                        for _line_no, _raw, rec in records:
                            if isinstance(rec, dict):
                                stream = _record_stream(rec) or "?"
                                out.streams[stream] = out.streams.get(stream, 0) + 1
                                at = rec.get("spooled_at")
                                if isinstance(at, str) and (out.oldest is None or at < out.oldest):
                                    out.oldest = at
                            out.records += 1
                finally:
                    os.close(pending_fd)
            out.quarantined = self._count_quarantined(top)
        finally:
            os.close(top)
        return out

    def _count_quarantined(self, top: int) -> int:
        qdir = self._open_sub(top, "quarantine", create=False)
        if qdir is None:
            return 0
        qpath = os.path.join(self.path, "quarantine", "spool.jsonl")
        try:
            fd = fs.open_read(qdir, "spool.jsonl", qpath)  # never through a symlink, never a FIFO
        finally:
            os.close(qdir)
        if fd is None:
            return 0
        try:
            with os.fdopen(fd, "rb") as fh:
                return sum(1 for line in fh if line.strip())
        except OSError as exc:
            raise StorageError.from_oserror(exc, "cannot read the spool's quarantine", qpath) from None

    # --- replay -------------------------------------------------------------------------------------------

    def replay(self, log: EventLog, *, wait: float | None = 60.0, backoff: bool = False) -> ReplayReport:
        """Append every pending record to ``log``, in order and at most once per id.

        ``wait`` is how long to wait for another process's replay to finish (``None``: do not wait, and
        return a report with ``busy`` set). ``backoff`` leaves alone the streams whose replay keeps failing
        until they are due again (what the automatic replay does); an explicit replay tries them all."""
        from ._spoolreplay import replay

        return replay(self, log, wait=wait, backoff=backoff)

    # --- the files ----------------------------------------------------------------------------------------

    def _entries(self, dir_fd: int, *, tidy: bool,
                 skipped: dict[str, str]) -> Iterator[tuple[str, list[tuple[int, bytes, Any]]]]:
        """Every readable pending file in order, one at a time; entries that are not are noted in
        ``skipped`` (and logged)."""
        from ._spoolreplay import Skip, entry_names, read_entry

        try:
            names = entry_names(dir_fd, tidy=tidy)
        except OSError as exc:
            raise StorageError.from_oserror(exc, "cannot list the spool", os.path.join(self.path, "pending")) \
                from None
        for name in names:
            try:
                records = read_entry(dir_fd, name)
            except Skip as why:
                skipped[text(name)] = str(why)
                warn_skipped(os.path.join(self.path, "pending", name), str(why))
                continue
            if records is not None:
                yield name, records

    def _open_base(self, *, create: bool) -> int | None:
        """The spool dir itself: the caller's choice, so symlinks above and at it are followed. Directories
        made for it are fsynced into their parents: a spooled file must not vanish with its directory."""
        made: list[str] = []
        if create:
            path = self.directory
            while not os.path.isdir(path):
                made.append(path)
                parent = os.path.dirname(path)
                if parent == path:
                    break
                path = parent
        fd = fs.open_root(self.directory, create=create, dir_mode=self.dir_mode)
        for path in made:
            try:
                parent_fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                os.fsync(parent_fd)
            except OSError:
                pass
            finally:
                os.close(parent_fd)
        return fd

    def _open_top(self, *, create: bool) -> int | None:
        """This root's spool directory (checked: ours, and writable by nobody else); ``None`` if missing."""
        base_fd = self._open_base(create=create)
        if base_fd is None:
            return None
        try:
            top = fs.open_dir(base_fd, [self.key], create=create, dir_mode=self.dir_mode, display=self.path)
        finally:
            os.close(base_fd)
        if top is None:
            return None
        try:
            check_trusted(top, self.path)
            if create:
                self._write_root_note(top)
        except BaseException:
            os.close(top)
            raise
        return top

    def _open_sub(self, top: int, name: str, *, create: bool) -> int | None:
        display = os.path.join(self.path, name)
        fd = fs.open_dir(top, [name], create=create, dir_mode=self.dir_mode, display=display)
        if fd is not None:
            try:
                check_trusted(fd, display)
            except BaseException:
                os.close(fd)
                raise
        return fd

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
            os.write(fd, fsbytes(self.root) + b"\n")
        finally:
            os.close(fd)


def _record_stream(rec: dict[str, Any]) -> str | None:
    ev = rec.get("event")
    stream = ev.get("stream") if isinstance(ev, dict) else None
    return stream if isinstance(stream, str) else None
