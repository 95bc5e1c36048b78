"""Low-level file operations shared by the file backend and ``safe_log_event``.

Everything here follows three rules learnt the hard way by logging and storage projects:

* Inside the log tree nothing is opened through a symlink. Directories are walked one component at a time
  with ``O_NOFOLLOW | O_DIRECTORY`` relative to their parent's descriptor, so a symlink planted anywhere in
  the tree (not only at the last component) is refused instead of followed outside the root.
* Locks are ``flock`` on the log file itself, never ``fcntl.lockf``: POSIX record locks are dropped when *any*
  descriptor of the file is closed anywhere in the process, which silently breaks mutual exclusion. ``flock``
  is also what ``flock(1)`` takes, so shell writers and agentlog exclude each other.
* A write is all or nothing: one ``write()`` of whole records; if it comes up short, the file is truncated back
  to where it was, so the file never ends in half a record written by a live process.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .. import _json
from ..errors import LockTimeout, StorageError
from ..event import now_ts

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted at a log path must not block the open; _regular() then refuses it. It has no
# effect on regular files.
APPEND_FLAGS = os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_SYMLINK_ERRNOS = (errno.ELOOP, errno.ENOTDIR)


def storage_error(exc: OSError, what: str, path: str) -> StorageError:
    if exc.errno in _SYMLINK_ERRNOS:
        return StorageError(f"{what}: refusing to follow a symlink or non-directory inside the log tree",
                            path=path, errno=exc.errno)
    return StorageError.from_oserror(exc, what, path)


def open_root(root: str, *, create: bool, dir_mode: int) -> int | None:
    """A descriptor for the root directory, or ``None`` when it does not exist and ``create`` is false."""
    try:
        created = False
        if create and not os.path.isdir(root):
            # The root's own path is the caller's choice, so symlinks above and at it are followed.
            os.makedirs(root, mode=dir_mode, exist_ok=True)
            created = True
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if created:
            os.fchmod(fd, dir_mode)  # exact mode, whatever the umask, as for every directory below it
        return fd
    except FileNotFoundError:
        if create:
            raise StorageError("cannot create the log root", path=root, errno=errno.ENOENT) from None
        return None
    except OSError as exc:
        raise StorageError.from_oserror(exc, "cannot open the log root", root) from None


def open_dir(parent_fd: int, parts: list[str] | tuple[str, ...], *, create: bool, dir_mode: int,
             display: str) -> int | None:
    """Open ``parent/parts...`` without following symlinks; ``None`` if missing and not ``create``."""
    cur = os.dup(parent_fd)
    try:
        for part in parts:
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=cur)
            except FileNotFoundError:
                if not create:
                    return None
                try:
                    os.mkdir(part, dir_mode, dir_fd=cur)
                    created = True
                except FileExistsError:
                    created = False  # another process won the race; fine
                nxt = os.open(part, _DIR_FLAGS, dir_fd=cur)
                if created:
                    os.fchmod(nxt, dir_mode)  # exact mode, whatever the umask
                    os.fsync(cur)  # the new entry must survive a crash, or its files vanish with it
            os.close(cur)
            cur = nxt
        result, cur = cur, -1
        return result
    except OSError as exc:
        raise storage_error(exc, "cannot open directory", display) from None
    finally:
        if cur >= 0:
            os.close(cur)


def open_append(dir_fd: int, name: str, *, create: bool, file_mode: int, display: str) -> int | None:
    """Open a log file for appending (never through a symlink); creating it fsyncs its directory."""
    try:
        for _attempt in range(100):
            try:
                return _regular(os.open(name, APPEND_FLAGS, dir_fd=dir_fd), display)
            except FileNotFoundError:
                if not create:
                    return None
            fd = _create(dir_fd, name, file_mode)
            if fd is not None:
                return fd
            # Someone else created it first, and it may already have been rotated away again: look again.
        raise StorageError("the file keeps disappearing while being opened", path=display)
    except OSError as exc:
        if isinstance(exc, StorageError):
            raise
        raise storage_error(exc, "cannot open log file", display) from None


def _create(dir_fd: int, name: str, file_mode: int) -> int | None:
    """Create ``name`` with exactly ``file_mode``; ``None`` if another process created it first.

    The umask may strip bits from the mode given to ``open``, so the mode is set with ``fchmod``. Doing that
    after the file is visible would race: another writer could fill and seal it (clear its write bits, under
    its lock) before our ``fchmod`` made it writable again. So the file is made under a private name, given
    its mode, then linked into place; ``link`` fails if someone else's file got there first.
    """
    tmp = f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, APPEND_FLAGS | os.O_CREAT | os.O_EXCL, file_mode, dir_fd=dir_fd)
    try:
        os.fchmod(fd, file_mode)
        try:
            os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError:
            return None
        os.fsync(dir_fd)
        result, fd = fd, -1
        return result
    finally:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass


def open_read(dir_fd: int, name: str, display: str) -> int | None:
    try:
        return _regular(os.open(name, READ_FLAGS, dir_fd=dir_fd), display)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if isinstance(exc, StorageError):
            raise
        raise storage_error(exc, "cannot open log file", display) from None


def _regular(fd: int, display: str) -> int:
    """Refuse a FIFO, device or directory planted where a log file belongs (a FIFO would swallow events)."""
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return fd
    os.close(fd)
    raise StorageError("not a regular file", path=display)


def lock(fd: int, *, timeout: float, display: str, shared: bool = False) -> None:
    """``flock`` with a deadline; raises :class:`LockTimeout` naming the file.

    A blocking ``flock`` cannot be given a timeout without signals (unusable off the main thread), so we poll
    with a short exponential backoff. Lock hold times are a single ``write()``, so waits are short: the
    backoff stops at 1 ms, since a waiter asleep for longer leaves the lock idle while others queue.
    """
    op = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
    try:
        fcntl.flock(fd, op)
        return
    except BlockingIOError:
        pass
    except OSError as exc:
        raise StorageError.from_oserror(exc, "cannot lock", display) from None
    start = time.monotonic()
    delay = 0.00005
    while True:
        waited = time.monotonic() - start
        if waited >= timeout:
            raise LockTimeout(f"timed out after {waited:.1f}s waiting for the lock on {display}",
                              path=display, waited=waited)
        time.sleep(min(delay, timeout - waited))
        delay = min(delay * 2, 0.001)
        try:
            fcntl.flock(fd, op)
            return
        except BlockingIOError:
            continue


def unlock(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:
        pass  # closing the descriptor releases it anyway


@contextmanager
def locked(fd: int, *, timeout: float, display: str) -> Iterator[None]:
    lock(fd, timeout=timeout, display=display)
    try:
        yield
    finally:
        unlock(fd)


def write_new(dir_fd: int, name: str, data: bytes, file_mode: int, display: str, *,
              what: str = "write failed", sync: bool = True) -> None:
    """Create ``name`` in ``dir_fd`` holding ``data``: never an existing file, never through a symlink, with
    exactly ``file_mode`` whatever the umask, fsynced unless ``sync`` is false. The first step of every
    temp -> fsync -> rename (or link) in the tree; the caller names the temp file and removes it on failure."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, file_mode,
                 dir_fd=dir_fd)
    try:
        os.fchmod(fd, file_mode)
        write_all(fd, data, 0, display, what)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes, size: int, display: str,
              what: str = "write failed; nothing was appended") -> None:
    """Append ``data`` at ``size`` (the file's size under the lock); on any failure, truncate back."""
    try:
        written = os.write(fd, data)
        while written < len(data):
            # A short write on a regular file means the disk filled up (or a signal landed); trying the rest
            # either finishes the job or surfaces the real errno for the error message.
            n = os.write(fd, memoryview(data)[written:])
            if n == 0:
                raise OSError(errno.ENOSPC, "short write")
            written += n
    except OSError as exc:
        rollback(fd, size)
        raise StorageError.from_oserror(exc, what, display) from None


def reserve(fd: int, offset: int, length: int, display: str) -> None:
    """Allocate ``length`` bytes at ``offset`` without changing the file size (``FALLOC_FL_KEEP_SIZE``).

    Not ``os.posix_fallocate``: it extends the size, and the next ``O_APPEND`` write would land after the
    reserved zeros. A file system that cannot preallocate is simply written to.
    """
    fallocate = _fallocate()
    if fallocate is None:
        return
    if fallocate(fd, 1, offset, length) == 0:  # 1 = FALLOC_FL_KEEP_SIZE
        return
    import ctypes

    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        return
    raise StorageError("cannot reserve space; nothing was appended", path=display, errno=err)


_FALLOCATE: list[Any] = []


def _fallocate() -> Any:
    # ctypes costs a few milliseconds to import, so only batch writers, which are long-lived, pay for it.
    if not _FALLOCATE:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.fallocate
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            fn.restype = ctypes.c_int
            _FALLOCATE.append(fn)
        except (OSError, AttributeError):
            _FALLOCATE.append(None)
    return _FALLOCATE[0]


def rollback(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass  # the torn tail is repaired by the next writer under the lock


def sync(fd: int, display: str) -> None:
    """``fdatasync``: the data and the size that reading it needs. A failure is never retried: after a
    failed fsync the kernel may have dropped the dirty pages, so a retry that succeeds proves nothing."""
    try:
        os.fdatasync(fd)
    except OSError as exc:
        raise StorageError.from_oserror(exc, "fsync failed; the write may not be durable", display) from None


def last_byte(fd: int, size: int) -> bytes:
    return os.pread(fd, 1, size - 1) if size else b"\n"


def find_last_newline(fd: int, size: int) -> int:
    """Offset just after the last ``\\n`` before ``size`` (0 when there is none)."""
    pos = size
    block = 65536
    while pos > 0:
        start = max(0, pos - block)
        chunk = os.pread(fd, pos - start, start)
        idx = chunk.rfind(b"\n")
        if idx >= 0:
            return start + idx + 1
        pos = start
    return 0


def repair_torn_tail(fd: int, size: int, *, source: str, quarantine: tuple[int, str, str], file_mode: int,
                     timeout: float, extra: dict[str, Any] | None = None) -> int:
    """Move the bytes after the last newline to quarantine and truncate them; return the new size.

    Called under the file's lock, so the fragment belongs to a writer that died mid-write (or a foreign
    writer that left no newline), never to one still writing.
    """
    from base64 import b64encode  # here: only a repair needs it, and appends must start fast

    keep = find_last_newline(fd, size)
    fragment = os.pread(fd, size - keep, keep)
    record = {"ts": now_ts(), "reason": "torn tail", "source": source, "offset": keep, "size": len(fragment),
              "fragment_b64": b64encode(fragment).decode(), **(extra or {})}
    qdir, qname, qdisplay = quarantine
    append_quarantine(qdir, qname, record, file_mode=file_mode, timeout=timeout, display=qdisplay)
    try:
        os.ftruncate(fd, keep)
        os.fsync(fd)
    except OSError as exc:
        raise StorageError.from_oserror(exc, "cannot truncate a torn tail", source) from None
    return keep


def append_quarantine(dir_fd: int, name: str, record: dict[str, Any], *, file_mode: int,
                      timeout: float, display: str | None = None) -> None:
    """Append one record to a quarantine file and fsync it before the caller destroys the original."""
    display = display or name
    fd = open_append(dir_fd, name, create=True, file_mode=file_mode, display=display)
    assert fd is not None
    try:
        with locked(fd, timeout=timeout, display=display):
            size = os.fstat(fd).st_size
            line = _json.dumps(record) + b"\n"
            if last_byte(fd, size) != b"\n":
                line = b"\n" + line
            write_all(fd, line, size, display)
        os.fsync(fd)
    except OSError as exc:
        if isinstance(exc, StorageError):
            raise
        raise StorageError.from_oserror(exc, "cannot write quarantine", display) from None
    finally:
        os.close(fd)


def fsync_dir(dir_fd: int, display: str) -> None:
    try:
        os.fsync(dir_fd)
    except OSError as exc:
        raise StorageError.from_oserror(exc, "cannot fsync directory", display) from None
