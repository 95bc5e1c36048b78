"""Writing the files views are rendered into: whole or not at all, never through a symlink.

Every view (snapshots, summaries, later ``status.json`` and ``tasks.graph.json``) is a small file that readers
open at any moment, so it is replaced, never rewritten in place: temp file -> fsync -> rename -> fsync the
directory. The previous version is kept as ``<name>.bak`` (a hard link made before the rename, so the current
name never goes missing), and a file whose new content is identical is left alone.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from .backends import _fs as fs
from .errors import StorageError

__all__ = ["open_view_dir", "read_file", "replace_file", "view_lock"]


def open_view_dir(root: str, parts: list[str], *, out: str | None = None, dir_mode: int = 0o700) -> int:
    """A descriptor for the directory a view is written to, created if missing.

    Under the root (``out`` is ``None``) every component is opened without following symlinks, like the logs;
    a directory the caller names (``out``) is theirs to point anywhere, symlinks included.
    """
    if out is not None:
        fd = fs.open_root(out, create=True, dir_mode=dir_mode)
        assert fd is not None
        return fd
    root_fd = fs.open_root(root, create=True, dir_mode=dir_mode)
    assert root_fd is not None
    try:
        fd = fs.open_dir(root_fd, parts, create=True, dir_mode=dir_mode, display=os.path.join(root, *parts))
        assert fd is not None
        return fd
    finally:
        os.close(root_fd)


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
    current = read_file(dir_fd, name, display)
    if current == data:
        return False
    tag = f"{os.getpid()}.{os.urandom(4).hex()}"
    tmp = f".{name}.{tag}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, file_mode,
                     dir_fd=dir_fd)
        try:
            os.fchmod(fd, file_mode)  # exact, whatever the umask
            fs.write_all(fd, data, 0, display, "write failed; the previous version is kept")
            os.fsync(fd)
        finally:
            os.close(fd)
        if backup and current is not None:
            # link, then rename over the old .bak: at every moment both names hold a complete file
            bak_tmp = f".{name}.bak.{tag}.tmp"
            os.link(name, bak_tmp, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            os.rename(bak_tmp, f"{name}.bak", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        fs.fsync_dir(dir_fd, display)
    except OSError as exc:
        for leftover in (tmp, f".{name}.bak.{tag}.tmp"):
            try:
                os.unlink(leftover, dir_fd=dir_fd)
            except OSError:
                pass
        if isinstance(exc, StorageError):
            raise
        raise fs.storage_error(exc, "cannot write", display) from None
    return True


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
