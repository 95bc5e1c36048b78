"""The spool's files: trust checks, names and paths, and writes that land whole or not at all.

What the spool holds is trusted input: replay appends it to the log as if the caller had just written it. So
every directory and file of a spool is checked before it is used (it must belong to the effective user and be
writable by nobody else), nothing is opened through a symlink, and every file is written temp -> fsync ->
rename, so that a reader never sees half of one. :mod:`agentlog.spool` does the spooling and
:mod:`agentlog._spoolreplay` the replaying; these are the file-system helpers both do it with.
"""

from __future__ import annotations

import errno
import os
import stat

from .backends import _fs as fs
from .errors import StorageError

__all__ = ["check_trusted", "drop_stale_tmp", "entry_key", "errname", "escape", "fsbytes", "pending_names",
           "realpath", "text", "untrusted", "warn_skipped", "write_file"]

# A temp file older than this was left by a spooler killed mid-write: replay removes it.
_STALE_TMP_NS = 3600 * 10**9


def check_trusted(fd: int, display: str) -> None:
    try:
        st = os.fstat(fd)
    except OSError as exc:
        raise StorageError.from_oserror(exc, "cannot check the spool", display) from None
    why = untrusted(st)
    if why:
        raise StorageError(f"refusing the spool: {display} {why}; what a spool holds is appended to the log, so "
                           "only its owner may be able to write it", path=display)


def untrusted(st: os.stat_result) -> str | None:
    """Why a spool entry with this ``stat`` cannot be trusted, or ``None``: it must belong to the effective
    user and be writable by nobody else."""
    uid = os.geteuid()
    if st.st_uid != uid:
        return f"is owned by uid {st.st_uid}, not by this user (uid {uid})"
    if st.st_mode & 0o022:
        return f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def warn_skipped(path: str, why: str) -> None:
    import logging

    logging.getLogger("agentlog").warning("agentlog: warning: skipping %s in the spool: %s", text(path), why)


def errname(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return f"{name}: {os.strerror(exc.errno)}" if exc.errno else str(exc)


def text(value: str) -> str:
    """``value`` as valid UTF-8 text (undecodable bytes of a path as ``\\udcXX`` escapes), for JSON and
    messages."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def entry_key(name: str) -> str:
    """A directory entry's name as JSON can hold it, whatever its bytes (one character per byte)."""
    return fsbytes(name).decode("latin-1")


def fsbytes(value: str) -> bytes:
    try:
        return os.fsencode(value)
    except UnicodeEncodeError:  # a lone surrogate that no file name decodes to
        return value.encode("utf-8", "backslashreplace")


def realpath(path: str | os.PathLike[str]) -> str:
    try:
        return os.path.realpath(path)
    except (UnicodeEncodeError, ValueError):
        return os.path.abspath(path)


def escape(root: str) -> str:
    """The root's path as one readable directory name (``/srv/log`` -> ``%2Fsrv%2Flog``).

    Bytes of the path that are not UTF-8 (``\\udcXX`` after decoding) and control characters are escaped as
    ``%XX`` too; a name too long for a directory entry keeps its start and ends in a hash of the whole."""
    out = []
    for ch in root:
        code = ord(ch)
        if ch == "%":
            out.append("%25")
        elif ch == "/":
            out.append("%2F")
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, as os.fsdecode carries it
            out.append(f"%{code - 0xDC00:02X}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"%u{code:04X}")
        elif code < 0x20 or code == 0x7F:
            out.append(f"%{code:02X}")
        else:
            out.append(ch)
    name = "".join(out)
    if len(name) > 200 or len(name.encode()) > 255:
        import hashlib

        prefix = name[:100]
        while len(prefix.encode()) > 200:
            prefix = prefix[:-1]
        name = prefix + "%" + hashlib.sha256(root.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return name


def pending_names(pending_dir: str) -> list[str]:
    try:
        return [n for n in os.listdir(pending_dir) if not n.startswith(".")]
    except OSError:
        return []


def write_file(dir_fd: int, name: str, data: bytes, file_mode: int, display: str, *,
               replace: bool = False, sync: bool = True) -> None:
    """Write ``name`` whole or not at all: a private temp file, fsync, rename (and, for a new name, fsync the
    directory; ``replace`` leaves that to the caller). ``sync=False`` skips both fsyncs."""
    tmp = f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fs.write_new(dir_fd, tmp, data, file_mode, display, sync=sync)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        if sync and not replace:
            fs.fsync_dir(dir_fd, display)
    except OSError as exc:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        if isinstance(exc, StorageError):
            raise
        raise StorageError.from_oserror(exc, "cannot write to the spool", display) from None


def drop_stale_tmp(dir_fd: int, name: str, now: int) -> None:
    """Remove a temp file left by a spooler killed mid-write (its events were never acknowledged)."""
    try:
        if now - os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mtime_ns > _STALE_TMP_NS:
            os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass
