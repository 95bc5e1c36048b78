"""The root's layout (004 S22): ``logs/``, ``summaries/``, ``archive/`` and ``tasks.graph.json``.

``init_root`` creates whatever is missing and touches nothing that exists, so it can run any number of times,
at once from several processes, on a root full of data. ``tasks.graph.json`` starts as ``{"tasks": []}``
and is created whole (written under a private name, then linked into place), so no reader ever sees it empty.
"""

from __future__ import annotations

import os

from .backends import _fs as fs
from .errors import StorageError

__all__ = ["LAYOUT", "TASKS_GRAPH", "init_root"]

#: Directories every root has; ``logs/`` holds the streams, ``summaries/`` the rendered summaries, ``archive/``
#: is kept for material people move out of the live log.
LAYOUT = ("logs", "summaries", "archive")
TASKS_GRAPH = "tasks.graph.json"
_EMPTY_GRAPH = b'{"tasks": []}\n'


def init_root(root: str | os.PathLike[str] | None = None, *, dir_mode: int = 0o700,
              file_mode: int = 0o600) -> list[str]:
    """Create the layout under ``root`` (default: ``$AGENTLOG_ROOT``, else ``./.agentlog``); return the paths
    it created (empty when everything was already there)."""
    from .log import default_root

    base = default_root() if root is None else os.fspath(root)
    created = [] if os.path.isdir(base) else [base]
    root_fd = fs.open_root(base, create=True, dir_mode=dir_mode)
    assert root_fd is not None
    try:
        for name in LAYOUT:
            path = os.path.join(base, name)
            existed = fs.open_dir(root_fd, [name], create=False, dir_mode=dir_mode, display=path)
            if existed is not None:
                os.close(existed)
                continue
            made = fs.open_dir(root_fd, [name], create=True, dir_mode=dir_mode, display=path)
            assert made is not None
            os.close(made)
            created.append(path)
        if _create_once(root_fd, TASKS_GRAPH, _EMPTY_GRAPH, file_mode):
            created.append(os.path.join(base, TASKS_GRAPH))
    finally:
        os.close(root_fd)
    return created


def _create_once(dir_fd: int, name: str, data: bytes, file_mode: int) -> bool:
    """Create ``name`` holding ``data`` if nothing is there; never replaces an existing file (or symlink)."""
    tmp = f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, file_mode,
                     dir_fd=dir_fd)
        try:
            os.fchmod(fd, file_mode)
            fs.write_all(fd, data, 0, name)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError:
            return False
        fs.fsync_dir(dir_fd, name)
        return True
    except OSError as exc:
        if isinstance(exc, StorageError):
            raise
        raise fs.storage_error(exc, "cannot create", name) from None
    finally:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
