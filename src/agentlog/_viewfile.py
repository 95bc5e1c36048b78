"""Writing the files views are rendered into: whole or not at all, never through a symlink.

Every view (snapshots, summaries, ``status.json``, ``tasks.graph.json``) is a small file that readers open at
any moment, so it is replaced, never rewritten in place: temp file -> fsync -> rename -> fsync the directory.
The previous version is kept as ``<name>.bak`` (a hard link made before the rename, so the current name never
goes missing), and a file whose new content is identical is left alone. Files that belong together (a
snapshot's two) are all written before any is renamed, so a full disk leaves every one as it was.

Malformed lines (002 §6.4): a view that meets a line that is not a JSON object skips it, goes on, and isolates
it to ``<root>/errors/<stream>.jsonl`` with :class:`MalformedLines`. That file holds one JSON record per
line met, keyed by where the line sits in the stream (the seq of the event before it, and its place among the
malformed lines after that event), so rendering again, from several views, or after the segment holding the
line was rotated, never adds a line twice: the record is updated in place (its ``path`` and ``line``, which
agree with ``agentlog verify``, follow the line into its sealed segment). Records of lines a complete read no
longer meets (the log was repaired) are dropped.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeVar

from . import _json
from .backends import MalformedLine
from .backends import _fs as fs
from .errors import StorageError
from .event import now_ts

__all__ = ["ERRORS", "ISOLATE_BYTES", "Isolated", "MalformedLines", "errors_path", "open_view_dir", "read_file",
           "replace_file", "replace_files", "sweep_temps", "view_lock"]

#: The directory under the root that malformed lines are isolated to, as ``errors/<stream>.jsonl``.
ERRORS = "errors"
#: An isolated record keeps at most this many bytes of its line (base64); the log itself keeps them all.
ISOLATE_BYTES = 64 * 1024
_TEXT_BYTES = 200  # the readable excerpt ("text") of an isolated line

_T = TypeVar("_T")


def open_view_dir(root: str, parts: list[str], *, out: str | None = None, dir_mode: int = 0o700) -> int:
    """A descriptor for the directory a view is written to, created if missing.

    Under the root (``out`` is ``None``) every component is opened without following symlinks, like the logs;
    a directory the caller names (``out``) is theirs to point anywhere, symlinks included.
    """
    if out is not None:
        return _open_out(out, dir_mode)
    root_fd = fs.open_root(root, create=True, dir_mode=dir_mode)
    assert root_fd is not None
    try:
        fd = fs.open_dir(root_fd, parts, create=True, dir_mode=dir_mode, display=os.path.join(root, *parts))
        assert fd is not None
        return fd
    finally:
        os.close(root_fd)


def _open_out(out: str, dir_mode: int) -> int:
    if not out:
        raise ValueError("the output directory must not be empty")
    try:
        created = not os.path.lexists(out)
        if created:
            os.makedirs(out, mode=dir_mode, exist_ok=True)
        fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if created:
            os.fchmod(fd, dir_mode)  # exact, whatever the umask
        return fd
    except OSError as exc:
        raise StorageError.from_oserror(exc, "cannot use the output directory", out) from None


def read_file(dir_fd: int, name: str, display: str) -> bytes | None:
    """The file's bytes, ``None`` when it does not exist; a symlink or special file is refused."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise fs.storage_error(exc, "cannot read", display) from None
    try:
        if not _is_regular(fd):
            raise StorageError("not a regular file", path=display)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def replace_file(dir_fd: int, name: str, data: bytes, *, display: str, file_mode: int = 0o600,
                 backup: bool = True) -> bool:
    """Replace ``name`` with ``data`` atomically; keep the old version as ``name.bak``. Returns whether the
    file changed (identical content is not rewritten, so ``.bak`` keeps the last *different* version)."""
    return replace_files(dir_fd, [(name, data, display)], file_mode=file_mode, backup=backup)[0]


def replace_files(dir_fd: int, files: Sequence[tuple[str, bytes, str]], *, file_mode: int = 0o600,
                  backup: bool = True) -> list[bool]:
    """Replace each ``(name, data, display)`` in ``dir_fd`` as :func:`replace_file` does, as a set: every new
    version is written and fsynced under a temporary name before any is renamed into place, so an error
    while writing (a full disk, an interrupt) leaves all of them as they were, and no temporary file behind.
    Returns, per file, whether it changed."""
    tag = f"{os.getpid()}.{os.urandom(4).hex()}"
    changed: list[bool] = []
    pending: list[tuple[str, str, bool, str]] = []  # (name, temp name, whether it exists now, display)
    display = ""
    try:
        for name, data, display in files:
            current = read_file(dir_fd, name, display)
            if current == data:
                changed.append(False)
                continue
            tmp = f".{name}.{tag}.tmp"
            pending.append((name, tmp, current is not None, display))
            fs.write_new(dir_fd, tmp, data, file_mode, display, what="write failed; the previous version is kept")
            changed.append(True)
        for name, tmp, had_current, shown in pending:
            display = shown  # for the error message
            if backup and had_current:
                # link, then rename over the old .bak: at every moment both names hold a complete file
                bak_tmp = f".{name}.bak.{tag}.tmp"
                os.link(name, bak_tmp, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
                os.rename(bak_tmp, f"{name}.bak", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        if pending:
            fs.fsync_dir(dir_fd, display)
    except BaseException as exc:  # an interrupt too: never leave a temporary file behind
        for name, tmp, _had, _display in pending:
            for leftover in (tmp, f".{name}.bak.{tag}.tmp"):
                try:
                    os.unlink(leftover, dir_fd=dir_fd)
                except OSError:
                    pass
        if isinstance(exc, OSError) and not isinstance(exc, StorageError):
            raise fs.storage_error(exc, "cannot write", display) from None
        raise
    return changed


def sweep_temps(dir_fd: int, names: Iterable[str]) -> None:
    """Remove the temporary files a writer of ``names`` killed mid-write left (``.<name>.*.tmp``). Call it
    only under the lock that every writer of those names holds, so none of them is a live write's."""
    prefixes = tuple(f".{name}." for name in names)
    try:
        entries = os.listdir(dir_fd)
    except OSError:
        return
    for entry in entries:
        if entry.startswith(prefixes) and entry.endswith(".tmp"):
            try:
                os.unlink(entry, dir_fd=dir_fd)
            except OSError:
                pass


@contextmanager
def view_lock(dir_fd: int, name: str, *, timeout: float, display: str, file_mode: int = 0o600) -> Iterator[None]:
    """Hold ``flock`` on a lock file beside a view while it is read, rendered and replaced, so a slower
    renderer cannot put an older rendering over a newer one."""
    try:
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, file_mode, dir_fd=dir_fd)
    except OSError as exc:
        raise fs.storage_error(exc, "cannot open lock file", display) from None
    try:
        fs.lock(fd, timeout=timeout, display=display)
        yield
    finally:
        os.close(fd)  # releases the flock


def _is_regular(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError as exc:
        raise StorageError.from_oserror(exc, "cannot stat", "") from None


# --- malformed lines ------------------------------------------------------------------------------------


class Isolated(NamedTuple):
    """What :meth:`MalformedLines.isolate` did."""

    path: str  #: the error file, ``<root>/errors/<stream>.jsonl``
    met: int  #: malformed lines the read met (and skipped)
    added: int  #: of those, lines the error file did not hold yet


def errors_path(root: str, stream: str) -> str:
    """Where malformed lines of ``stream`` are isolated: ``<root>/errors/<stream>.jsonl``."""
    return os.path.join(root, ERRORS, *stream.split("/")) + ".jsonl"


class MalformedLines:
    """Collects the malformed lines a view's read skips, then isolates them to the error file.

    Pass it as ``on_malformed`` to :meth:`agentlog.EventLog.read`, then call :meth:`isolate`. ``view`` names
    the view in each record (``"snapshot"``, ``"summary"``). A log without a root on disk (``memory:``)
    never has malformed lines, and nothing is written for it.
    """

    def __init__(self, root: str | None, stream: str, view: str) -> None:
        self.root = root if root and not root.startswith("memory:") else None
        self.stream = stream
        self.view = view
        self.lines: list[MalformedLine] = []
        self._seen: set[tuple[str, int]] = set()

    def __call__(self, line: MalformedLine) -> None:
        key = (line.path, line.offset)
        if key not in self._seen:  # a read that steps back over a rolled-back write may meet a line again
            self._seen.add(key)
            self.lines.append(line)

    def isolate(self, *, through_seq: int | None = None, lock_timeout: float = 30.0,
                dir_mode: int = 0o700, file_mode: int = 0o600) -> Isolated | None:
        """Merge the lines met into ``<root>/errors/<stream>.jsonl`` (atomically, under a lock beside it);
        ``None`` when the read met none.

        ``through_seq``: the read covered the whole stream up to that seq, so a record of a line before it
        that the read did not meet is of a line no longer there (the log was repaired), and is dropped;
        the file is removed when nothing is left in it. Give it only after a read from the start.
        """
        if self.root is None:
            return None
        *parents, leaf = self.stream.split("/")
        name = f"{leaf}.jsonl"
        parts = [ERRORS, *parents]
        display = errors_path(self.root, self.stream)
        if self.lines:
            dir_fd = open_view_dir(self.root, parts, dir_mode=dir_mode)
        else:
            if through_seq is None:
                return None
            found = _open_existing_dir(self.root, parts, dir_mode)
            if found is None:
                return None
            dir_fd = found
        try:
            if not self.lines and read_file(dir_fd, name, display) is None:
                return None  # nothing met, nothing held: the usual case costs no lock
            with view_lock(dir_fd, f".{name}.lock", timeout=lock_timeout, display=display, file_mode=file_mode):
                old = read_file(dir_fd, name, display)
                records, added = self._merge(_parse_records(old), through_seq)
                if records:
                    data = b"".join(_json.dumps(rec) + b"\n" for rec in records)
                    replace_file(dir_fd, name, data, display=display, file_mode=file_mode, backup=False)
                elif old is not None:
                    try:
                        os.unlink(name, dir_fd=dir_fd)
                        fs.fsync_dir(dir_fd, display)
                    except FileNotFoundError:
                        pass
                    except OSError as exc:
                        raise fs.storage_error(exc, "cannot remove", display) from None
        finally:
            os.close(dir_fd)
        return Isolated(display, len(self.lines), added) if self.lines else None

    def _merge(self, old: list[dict[str, Any]], through_seq: int | None) -> tuple[list[dict[str, Any]], int]:
        """The records to keep, in stream order, and how many of the lines met are new."""
        before = _keyed((rec["after_seq"], rec) for rec in old)
        met = _keyed((line.after_seq, line) for line in self.lines)
        merged = dict(before)
        added = 0
        for key, line in met.items():
            rec = _record(self.stream, line)
            prev = before.get(key)
            if prev is not None and prev.get("sha256") == rec["sha256"]:
                views = prev.get("views")
                known = {v for v in views if isinstance(v, str)} if isinstance(views, list) else set()
                rec["views"] = sorted(known | {self.view})
                if isinstance(prev.get("first_seen"), str):
                    rec["first_seen"] = prev["first_seen"]
            else:
                rec["views"] = [self.view]
                added += 1
            merged[key] = rec
        if through_seq is not None:
            for key, rec in before.items():
                # Before through_seq, the read would have met the line were it there. After the last event, a
                # line the read did not meet may have been appended since: kept while its bytes are there.
                if key not in met and (key[0] < through_seq or not self._still_there(rec)):
                    del merged[key]
        return [merged[key] for key in sorted(merged)], added

    def _still_there(self, rec: dict[str, Any]) -> bool:
        """Whether the line a record describes is still where it says, in a file under ``<root>/logs/``
        (opened without following symlinks); when that cannot be told, the record is kept."""
        assert self.root is not None
        path, offset, size = rec.get("path"), rec.get("offset"), rec.get("size")
        if not isinstance(path, str) or type(offset) is not int or type(size) is not int or offset < 0:
            return False
        logs = os.path.join(os.path.abspath(self.root), "logs")
        rel = os.path.relpath(path, logs)
        if rel.startswith(os.pardir) or os.path.isabs(rel):
            return False
        *dirs, name = rel.split(os.sep)
        try:
            root_fd = fs.open_root(self.root, create=False, dir_mode=0o700)
            if root_fd is None:
                return False
            try:
                dir_fd = fs.open_dir(root_fd, ["logs", *dirs], create=False, dir_mode=0o700, display=path)
            finally:
                os.close(root_fd)
            if dir_fd is None:
                return False
            try:
                fd = fs.open_read(dir_fd, name, path)
            finally:
                os.close(dir_fd)
            if fd is None:
                return False
            try:
                before = os.pread(fd, 1, offset - 1) if offset else b"\n"
                data = os.pread(fd, size + 1, offset)
            finally:
                os.close(fd)
        except OSError:
            return True
        return before == b"\n" and data[-1:] == b"\n" and hashlib.sha256(data[:-1]).hexdigest() == rec["sha256"]


def _keyed(items: Iterable[tuple[int, _T]]) -> dict[tuple[int, int], _T]:
    """Key each item by ``(after_seq, its place among the items with that after_seq)``."""
    counts: dict[int, int] = {}
    out: dict[tuple[int, int], _T] = {}
    for after_seq, item in items:
        n = counts.get(after_seq, 0)
        counts[after_seq] = n + 1
        out[(after_seq, n)] = item
    return out


def _record(stream: str, line: MalformedLine) -> dict[str, Any]:
    kept = line.raw[:ISOLATE_BYTES]
    rec: dict[str, Any] = {
        "stream": stream, "path": line.path, "line": line.line, "offset": line.offset,
        "after_seq": line.after_seq, "reason": line.reason, "size": len(line.raw),
        "sha256": hashlib.sha256(line.raw).hexdigest(), "raw_b64": base64.b64encode(kept).decode(),
        "text": kept[:_TEXT_BYTES].decode("utf-8", "backslashreplace"),
    }
    if len(kept) < len(line.raw):
        rec["truncated"] = True
    rec["views"] = []
    rec["first_seen"] = now_ts()
    return rec


def _parse_records(data: bytes | None) -> list[dict[str, Any]]:
    """The error file's records, in file order; lines that are not records of ours are dropped."""
    out = []
    for raw in (data or b"").splitlines():
        try:
            rec = _json.loads(raw)
        except _json.DecodeError:
            continue
        if isinstance(rec, dict) and type(rec.get("after_seq")) is int and isinstance(rec.get("sha256"), str):
            out.append(rec)
    return out


def _open_existing_dir(root: str, parts: list[str], dir_mode: int) -> int | None:
    root_fd = fs.open_root(root, create=False, dir_mode=dir_mode)
    if root_fd is None:
        return None
    try:
        return fs.open_dir(root_fd, parts, create=False, dir_mode=dir_mode, display=os.path.join(root, *parts))
    finally:
        os.close(root_fd)
