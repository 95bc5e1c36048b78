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
    it created (empty when everything was already there). Of several processes running it at once, each
    path is reported by the one that created it."""
    from .log import default_root

    base = default_root() if root is None else os.fspath(root)
    created = [base] if _make_root(base, dir_mode) else []
    root_fd = fs.open_root(base, create=True, dir_mode=dir_mode)
    assert root_fd is not None
    try:
        if created:
            os.fchmod(root_fd, dir_mode)  # exact mode, whatever the umask
        for name in LAYOUT:
            if _mkdir_once(root_fd, name, os.path.join(base, name), dir_mode):
                created.append(os.path.join(base, name))
        if _create_once(root_fd, TASKS_GRAPH, _EMPTY_GRAPH, file_mode):
            created.append(os.path.join(base, TASKS_GRAPH))
    finally:
        os.close(root_fd)
    return created


def _make_root(base: str, dir_mode: int) -> bool:
    """Create the root directory itself if missing (its parents too); true if this call made it. The root's
    own path is the caller's choice, so symlinks above and at it are followed."""
    for _attempt in range(2):
        try:
            os.mkdir(base, dir_mode)
            return True
        except FileExistsError:
            return False
        except FileNotFoundError:
            parent = os.path.dirname(os.path.abspath(base))
            try:
                os.makedirs(parent, mode=dir_mode, exist_ok=True)
            except OSError:
                return False  # open_root reports it
        except OSError:
            return False  # open_root reports it
    return False


def _mkdir_once(root_fd: int, name: str, path: str, dir_mode: int) -> bool:
    """Create the directory ``name`` unless something is there; true only for the process that made it (of
    several running at once). What is there must be a directory, not a symlink or a file."""
    try:
        os.mkdir(name, dir_mode, dir_fd=root_fd)
        made = True
    except FileExistsError:
        made = False
    except OSError as exc:
        raise fs.storage_error(exc, "cannot create directory", path) from None
    fd = fs.open_dir(root_fd, [name], create=False, dir_mode=dir_mode, display=path)
    if fd is None:
        raise StorageError("the directory vanished while it was being created", path=path)
    try:
        if made:
            os.fchmod(fd, dir_mode)  # exact mode, whatever the umask
            fs.fsync_dir(root_fd, path)
    except OSError as exc:
        if isinstance(exc, StorageError):
            raise
        raise fs.storage_error(exc, "cannot set the mode of", path) from None
    finally:
        os.close(fd)
    return made


def _create_once(dir_fd: int, name: str, data: bytes, file_mode: int) -> bool:
    """Create ``name`` holding ``data`` if nothing is there; never replaces an existing file (or symlink)."""
    tmp = f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fs.write_new(dir_fd, tmp, data, file_mode, name)
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
