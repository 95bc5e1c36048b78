"""The files a run touched: what ``agentlog run`` records as ``files_touched``.

Kept apart from :mod:`agentlog.runner` because it is a concern of its own (git and the file system, before
and after the command) that knows nothing of the ledger, the output or signals: the runner takes a
:class:`TouchedFiles` before it starts the command and asks it for the paths once the command has exited.

In a git work tree: ``git status --porcelain -z --untracked-files=all`` before and after the run, with a
content hash of each listed file; a path whose status or content changed is reported, plus every path changed
by commits the command made. Ignored files are not seen. Elsewhere: a scan of the working directory for files
whose mtime is at or after the start, bounded by :data:`SCAN_MAX_ENTRIES` entries and :data:`SCAN_MAX_SECONDS`,
skipping :data:`SCAN_SKIP`; deletions are not seen. Either way at most :data:`FILES_TOUCHED_MAX` paths are
recorded, relative to the working directory, sorted, and ``truncated`` is set when a bound was hit. The
directories the caller excludes (the log's own root and spool) are never reported.

The bounds are the defaults of :class:`TouchedFiles`' arguments; :mod:`agentlog.runner` re-exports them and
passes its own names at call time, so ``agentlog.runner.SCAN_MAX_ENTRIES`` and friends stay the knobs they
were.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import time
from collections import deque

__all__ = ["FILES_TOUCHED_MAX", "SCAN_MAX_ENTRIES", "SCAN_MAX_SECONDS", "SCAN_SKIP", "TouchedFiles", "text"]

#: Outside git, the scan for files touched stops after this many directory entries ...
SCAN_MAX_ENTRIES = 10_000
#: ... or this many seconds.
SCAN_MAX_SECONDS = 2.0
#: Directories the scan does not enter.
SCAN_SKIP = frozenset({".git", ".hg", ".svn", ".venv", "node_modules", "__pycache__"})
#: At most this many paths are recorded in ``files_touched`` (and git status entries compared).
FILES_TOUCHED_MAX = 1000

_GIT_TIMEOUT = 10.0
_HASH_MAX_BYTES = 1 << 20  # larger files are compared by size and mtime
_HASH_BUDGET = 64 << 20  # bytes hashed before a run, at most


class TouchedFiles:
    """What the working directory looked like before the command; :meth:`after` says what it touched.

    Constructing it finds the git work tree and ``HEAD`` (:attr:`head`, for ``task_start``), takes the git
    status snapshot and notes the start time, in that order: construct it right before the command starts.
    """

    def __init__(self, cwd: str, *, max_entries: int = SCAN_MAX_ENTRIES, max_seconds: float = SCAN_MAX_SECONDS,
                 skip: frozenset[str] = SCAN_SKIP, max_paths: int = FILES_TOUCHED_MAX) -> None:
        self.cwd = cwd
        self.max_entries, self.max_seconds, self.skip, self.max_paths = max_entries, max_seconds, skip, max_paths
        self.top = _git_toplevel(cwd)
        #: The commit checked out when the run began (``None`` outside git or before the first commit).
        self.head = _git_head(cwd) if self.top else None
        self.before = (_git_status(self.top, cwd, hash_budget=_HASH_BUDGET, max_entries=max_entries)
                       if self.top else None)
        self.start_ns = _fs_clock_ns()

    def after(self, excluded: list[str]) -> tuple[list[str], bool, str]:
        """``(paths, truncated, method)``: the paths touched since construction, never under ``excluded``, and
        how they were found (``"git"`` or ``"mtime"``)."""
        if self.top and self.before is not None:
            touched, truncated = _git_touched(self.top, self.cwd, self.before, self.head, excluded,
                                              max_entries=self.max_entries)
            method = "git"
        else:
            touched, truncated = _scan_touched(self.cwd, self.start_ns, excluded, max_entries=self.max_entries,
                                               max_seconds=self.max_seconds, skip=self.skip)
            method = "mtime"
        if len(touched) > self.max_paths:
            touched, truncated = touched[:self.max_paths], True
        return touched, truncated, method


def text(value: str) -> str:
    """A path or argument as storable text: bytes that are not UTF-8 become ``\\xNN``."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# --- git ----------------------------------------------------------------------------------------------

def _git(cwd: str, *args: str) -> bytes | None:
    """``git ARGS`` in ``cwd``: its stdout, or ``None`` if git is missing, fails or takes too long. Optional
    locks are off, so ``git status`` never takes the index lock from under the command."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, timeout=_GIT_TIMEOUT,
                              env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"}, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _git_toplevel(cwd: str) -> str | None:
    out = _git(cwd, "rev-parse", "--show-toplevel")
    top = os.fsdecode(out.rstrip(b"\n")) if out else ""
    return top if top and os.path.isdir(top) else None


def _git_head(cwd: str) -> str | None:
    out = _git(cwd, "rev-parse", "--verify", "-q", "HEAD")
    return (out.decode("ascii", "replace").strip() or None) if out else None


# {path (relative to the top): (XY, stat key, sha256 or None)}, and whether the list was cut short.
_Snapshot = tuple[dict[bytes, tuple[bytes, str, str | None]], bool]


def _git_status(top: str, cwd: str, *, hash_budget: int, max_entries: int) -> _Snapshot | None:
    """What ``git status`` lists (at most ``max_entries`` paths), each path with its status and a stat key
    (type, size, mtime); files up to 1 MiB also get a content hash while ``hash_budget`` bytes last, so a file
    that was only rewritten with the same content is not reported."""
    out = _git(cwd, "status", "--porcelain=v1", "-z", "--untracked-files=all")
    if out is None:
        return None
    entries: dict[bytes, tuple[bytes, str, str | None]] = {}
    items = out.split(b"\0")
    top_b = os.fsencode(top)
    i, truncated = 0, False
    while i < len(items):
        item = items[i]
        i += 1
        if len(item) < 4:
            continue
        xy, paths = item[:2], [item[3:]]
        if xy[:1] in (b"R", b"C") or xy[1:2] in (b"R", b"C"):  # renamed/copied: the source path follows
            if i < len(items) and items[i]:
                paths.append(items[i])
            i += 1
        for path in paths:
            if len(entries) >= max_entries:
                truncated = True
                break
            full = os.path.join(top_b, path)
            key, size = _stat_key(full)
            digest = None
            if size is not None and size <= min(_HASH_MAX_BYTES, hash_budget):
                digest = _hash(full)
                hash_budget -= size
            entries[path] = (xy, key, digest)
    return entries, truncated


def _stat_key(path: bytes) -> tuple[str, int | None]:
    """``("<type>:<size>:<mtime_ns>", size of a regular file)``, or ``("missing", None)``."""
    try:
        st = os.lstat(path)
    except OSError:
        return "missing", None
    key = f"{stat.S_IFMT(st.st_mode)}:{st.st_size}:{st.st_mtime_ns}"
    return key, st.st_size if stat.S_ISREG(st.st_mode) else None


def _hash(path: bytes) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read(_HASH_MAX_BYTES + 1)).hexdigest()
    except OSError:
        return None


def _git_touched(top: str, cwd: str, before: _Snapshot, head: str | None, excluded: list[str], *,
                 max_entries: int) -> tuple[list[str], bool]:
    after = _git_status(top, cwd, hash_budget=0, max_entries=max_entries)
    if after is None:
        return [], True
    (old, cut_before), (new, cut_after) = before, after
    top_b = os.fsencode(top)
    changed = set()
    for path in old.keys() | new.keys():
        was, now = old.get(path), new.get(path)
        if was is None or now is None or was[0] != now[0]:
            changed.add(path)  # its status changed
        elif was[1] != now[1] and (was[2] is None or _hash(os.path.join(top_b, path)) != was[2]):
            changed.add(path)  # same status, different content
    truncated = cut_before or cut_after
    new_head = _git_head(cwd)
    if new_head and new_head != head:  # the command committed: what its commits changed
        listing = (_git(cwd, "diff", "--name-only", "--no-renames", "-z", head, new_head) if head
                   else _git(cwd, "ls-tree", "-r", "--name-only", "-z", new_head))
        if listing is None:
            truncated = True
        else:
            changed.update(p for p in listing.split(b"\0") if p)
    skip = [prefix for prefix in (_inside(top, d) for d in excluded) if prefix is not None]
    here = os.path.realpath(cwd)
    paths = sorted(text(os.path.relpath(os.fsdecode(os.path.join(top_b, p)), here))
                   for p in changed if not any((p + b"/").startswith(prefix) for prefix in skip))
    return paths, truncated


def _inside(top: str, directory: str) -> bytes | None:
    """``directory`` relative to the repository's top, as a prefix (``b"x/.agentlog/"``), if it is inside."""
    rel = os.path.relpath(os.path.realpath(directory), os.path.realpath(top))
    if rel == os.curdir:
        return b""
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return None
    return os.fsencode(rel) + b"/"


# --- elsewhere: the mtime scan ------------------------------------------------------------------------

def _scan_touched(cwd: str, since_ns: int, excluded: list[str], *, max_entries: int, max_seconds: float,
                  skip: frozenset[str]) -> tuple[list[str], bool]:
    """Files under ``cwd`` modified at or after ``since_ns``, breadth first, within the scan's bounds."""
    skip_ids = set()
    for directory in excluded:
        try:
            st = os.stat(directory)
            skip_ids.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    deadline = time.monotonic() + max_seconds
    found: list[str] = []
    seen = 0
    queue: deque[str] = deque([""])
    while queue:
        rel = queue.popleft()
        try:
            with os.scandir(os.path.join(cwd, rel) if rel else cwd) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > max_entries or time.monotonic() > deadline:
                return sorted(found), True
            path = os.path.join(rel, entry.name) if rel else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if entry.name not in skip and (st.st_dev, st.st_ino) not in skip_ids:
                    queue.append(path)
            elif st.st_mtime_ns >= since_ns:
                found.append(text(path))
    return sorted(found), False


def _fs_clock_ns() -> int:
    """Now, by the clock file systems stamp mtimes with: Linux uses the coarse clock, which can lag
    ``time.time_ns()`` by a tick, so a file written right after the start could otherwise look older."""
    coarse = getattr(time, "CLOCK_REALTIME_COARSE", 5 if sys.platform.startswith("linux") else None)
    now = time.time_ns()
    if coarse is not None:
        try:
            return min(now, time.clock_gettime_ns(coarse))
        except OSError:
            pass
    return now - 10_000_000
