"""The file backend: plain JSONL files that many processes append to at once.

The write path for one append (or one batch), all under the stream file's own ``flock``:

1. open ``O_APPEND | O_NOFOLLOW`` (cached per stream) and take the lock, with a deadline;
2. if the file was rotated while we waited (another inode at the path, or a newer daily file), reopen;
3. if the file does not end in ``\\n``, a writer died mid-record: quarantine the fragment and truncate it
   (not looked at when the file has the inode and size our last append left: then it ends as we wrote it);
4. read the last ``seq`` and ``ts`` (cached per inode and size), rotate if the segment is full or the day
   changed, assign ``seq`` and ``ts``, and ``write()`` the whole batch once, rolling back a short write;
5. unlock, then ``fdatasync`` (durability ``"fsync"``) so other writers are not held up by our flush and the
   kernel can merge concurrent flushes; only then is the append acknowledged.

``append_records`` is that path for what ``EventWriter`` commits: ids and serialised bodies rather than
drafts, formatted into the batch's lines with one ``%`` for the whole batch, and ``(first seq, ts)``
returned rather than an :class:`~agentlog.Event` per line.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterator, Sequence

from ..errors import Conflict, LockTimeout, StorageError
from ..event import Draft, Event, IdBlock, format_ts
from ..report import Report
from . import OnMalformed, StreamInfo
from . import _fs as fs
from ._query import record_filter, type_needles
from ._reader import Cursor, scan_last, tail
from ._segments import (
    DAILY,
    ROTATIONS,
    SIZE,
    Segment,
    active_of,
    base_name,
    daily_dir,
    list_daily,
    list_size,
    next_piece,
    piece_name,
    size_dir,
    stream_of_file,
)

DURABILITIES = ("fsync", "write")
# Tries to settle on the active segment before giving up, unless the lock deadline is still ahead: with a
# rotation on every append and ten writers, a waiter can find its segment sealed under it many times running.
_MAX_ATTEMPTS = 64


class _Writer:
    """Per-process state for appending to one stream: cached descriptors and the last seq/ts."""

    __slots__ = ("cache", "dir_fd", "display", "fd", "layout", "mutex", "name")

    def __init__(self) -> None:
        # flock excludes other open file descriptions, not threads sharing ours: threads take this first.
        self.mutex = threading.Lock()
        self.layout: str | None = None
        self.dir_fd: int | None = None
        self.fd: int | None = None
        self.name = ""
        self.display = ("", "")  # (name, its path for messages): segment_path, once per segment
        self.cache: tuple[int, int, int, str | None] | None = None  # (inode, size, last_seq, last_ts)

    def drop_file(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def close(self) -> None:
        self.drop_file()
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None


class FileBackend:
    """JSONL segments under ``<root>/logs``; see the module docstring for the write path."""

    def __init__(self, root: str | os.PathLike[str], *, durability: str = "fsync",
                 segment_bytes: int = 500_000_000, lock_timeout: float = 10.0, file_mode: int = 0o600,
                 dir_mode: int = 0o700, rotate: str = SIZE) -> None:
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {DURABILITIES}, got {durability!r}")
        if rotate not in ROTATIONS:
            raise ValueError(f"rotate must be one of {ROTATIONS}, got {rotate!r}")
        if segment_bytes <= 0:
            raise ValueError("segment_bytes must be positive")
        if lock_timeout < 0:
            raise ValueError("lock_timeout must not be negative")
        if not file_mode & 0o200 or file_mode & ~0o777:
            raise ValueError("file_mode must be a permission mode (0o000-0o777) that lets the owner write")
        if dir_mode & 0o700 != 0o700 or dir_mode & ~0o777:
            raise ValueError("dir_mode must give the owner rwx")
        self.root = os.path.abspath(os.fspath(root))
        self.durability = durability
        self.segment_bytes = segment_bytes
        self.lock_timeout = lock_timeout
        self.file_mode = file_mode
        self.dir_mode = dir_mode
        self.rotate = rotate
        self._root_fd: int | None = None
        self._writers: dict[str, _Writer] = {}
        self._writers_lock = threading.Lock()
        self._closed = False
        _LIVE.add(self)

    # --- paths ----------------------------------------------------------------------------------------

    def segment_path(self, stream: str, name: str) -> str:
        parts = daily_dir(stream) if self._looks_daily(name) else size_dir(stream)
        return os.path.join(self.root, *parts, name)

    @staticmethod
    def _looks_daily(name: str) -> bool:
        return len(name) >= 16 and name[4] == "-" and name[7] == "-" and name[10:16] == ".jsonl" \
            and name[:4].isdigit()

    def _root(self, *, create: bool) -> int | None:
        if self._closed:
            raise StorageError("the log is closed", path=self.root)
        if self._root_fd is None:
            with self._writers_lock:  # two threads must not both open (and one leak) the root
                if self._root_fd is None:
                    self._root_fd = fs.open_root(self.root, create=create, dir_mode=self.dir_mode)
        return self._root_fd

    def _dir(self, parts: list[str], *, create: bool) -> int | None:
        root = self._root(create=create)
        if root is None:
            return None
        return fs.open_dir(root, parts, create=create, dir_mode=self.dir_mode,
                           display=os.path.join(self.root, *parts))

    def listing(self, stream: str) -> tuple[int, list[Segment]] | None:
        """An owned descriptor of the stream's directory and its segments in read order, or ``None``."""
        dfd = self._dir(daily_dir(stream), create=False)
        if dfd is not None:
            segments = _owned_listing(dfd, list_daily)
            if segments:
                return dfd, segments
            os.close(dfd)
        sfd = self._dir(size_dir(stream), create=False)
        if sfd is None:
            return None
        segments = _owned_listing(sfd, lambda fd: list_size(fd, base_name(stream)))
        if not segments:
            os.close(sfd)
            return None
        return sfd, segments

    # --- writing --------------------------------------------------------------------------------------

    def append(self, stream: str, drafts: Sequence[Draft], *, expect_last: int | None = None) -> list[Event]:
        if not drafts:
            return []
        first, ts = self.append_records(stream, [d.id.encode() for d in drafts], [d.body[1:] for d in drafts],
                                        expect_last=expect_last)
        return [d.event(first + i, ts) for i, d in enumerate(drafts)]

    def append_records(self, stream: str, ids: Sequence[bytes], tails: Sequence[bytes], *,
                       expect_last: int | None = None) -> tuple[int, str]:
        """``append`` given each event's id and body after its brace; returns ``(seq of the first, ts)``."""
        if not tails or len(ids) != len(tails):
            raise ValueError("append_records needs as many ids as tails, and at least one")
        w = self._writer(stream)
        deadline = time.monotonic() + self.lock_timeout
        if not w.mutex.acquire(timeout=self.lock_timeout):
            raise LockTimeout(f"timed out waiting for another thread appending to {stream!r}",
                              path=os.path.join(self.root, *size_dir(stream), base_name(stream)),
                              waited=self.lock_timeout)
        try:
            fd, first, ts = self._append_locked(w, stream, ids, tails, deadline, expect_last)
            if self.durability == "fsync":
                try:
                    fs.sync(fd, self._display(w, stream))
                except StorageError:
                    w.drop_file()  # do not trust this descriptor's error state again
                    raise
            return first, ts
        finally:
            w.mutex.release()

    def _writer(self, stream: str) -> _Writer:
        with self._writers_lock:
            w = self._writers.get(stream)
            if w is None:
                w = self._writers[stream] = _Writer()
            return w

    def _append_locked(self, w: _Writer, stream: str, ids: Sequence[bytes], tails: Sequence[bytes],
                       deadline: float, expect_last: int | None = None) -> tuple[int, int, str]:
        """Write the batch under the file's lock: ``(fd, seq of the first draft, ts)``."""
        attempt = 0
        while attempt < _MAX_ATTEMPTS or time.monotonic() < deadline:
            attempt += 1
            fd = self._active_fd(w, stream)
            display = self._display(w, stream)
            fs.lock(fd, timeout=max(0.0, deadline - time.monotonic()), display=display)
            action = ""
            try:
                st = os.fstat(fd)
                action = self._check_current(w, st)
                if action:
                    continue
                size = st.st_size
                cache = w.cache
                # The file ends as our last append left it when it has that inode and size: then it ends in
                # "\n" and one read less is done per batch. Anything else is checked for a torn tail.
                if size and not (cache is not None and cache[0] == st.st_ino and cache[1] == size) \
                        and fs.last_byte(fd, size) != b"\n":
                    size = self._repair(stream, fd, size, display)
                last_seq, last_ts = self._last(w, stream, fd, st.st_ino, size)
                if expect_last is not None and last_seq != expect_last:
                    raise Conflict(f"stream {stream!r} is at seq {last_seq}, not {expect_last}")
                ts = format_ts(time.time_ns())
                if last_ts is not None and ts < last_ts:
                    ts = last_ts  # the wall clock stepped back: ts never decreases within a stream
                if w.layout == DAILY and ts[:10] > w.name[:10]:
                    self._seal(w, stream, fd, f"{ts[:10]}.jsonl")
                    action = "rotated"
                    continue
                data = _lines(ids, tails, last_seq + 1, ts)
                if size and size + len(data) > self.segment_bytes:
                    self._seal(w, stream, fd, None)
                    action = "rotated"
                    continue
                n = len(tails)
                if n > 1:
                    # A batch that hits a full disk could land as a prefix of whole records that a reader
                    # sees before the rollback: reserve the space first, so ENOSPC comes before any byte.
                    fs.reserve(fd, size, len(data), display)
                fs.write_all(fd, data, size, display)
                w.cache = (st.st_ino, size + len(data), last_seq + n, ts)
                return fd, last_seq + 1, ts
            finally:
                fs.unlock(fd)
                if action:
                    w.drop_file()  # only after unlocking, so the descriptor number cannot be reused first
        raise StorageError("could not settle on an active segment", path=self.segment_path(stream, w.name))

    def _display(self, w: _Writer, stream: str) -> str:
        """``segment_path(stream, w.name)``, worked out once per segment rather than twice per append."""
        name, path = w.display
        if name != w.name or not path:
            path = self.segment_path(stream, w.name)
            w.display = (w.name, path)
        return path

    def _check_current(self, w: _Writer, st: os.stat_result) -> str:
        """Empty when the locked file is the stream's active segment; else why we must move."""
        assert w.dir_fd is not None
        if st.st_nlink == 0:
            return "removed"
        try:
            at_path = os.stat(w.name, dir_fd=w.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return "moved"
        if (at_path.st_ino, at_path.st_dev) != (st.st_ino, st.st_dev):
            return "moved"
        # A daily segment keeps its name when the next day's file starts, so ask the directory. Ledgers
        # append at human rates, and a listing is exact where a directory's coarse mtime would not be.
        if w.layout == DAILY and active_of(list_daily(w.dir_fd)) != w.name:
            return "moved"
        return ""

    def _active_fd(self, w: _Writer, stream: str) -> int:
        if w.fd is not None:
            return w.fd
        if w.dir_fd is None:
            self._resolve_layout(w, stream)
        assert w.dir_fd is not None
        if w.layout == SIZE:
            name = base_name(stream)
        else:
            segments = list_daily(w.dir_fd)
            if not segments:
                # Two first writers on either side of midnight must not create two first segments.
                fs.lock(w.dir_fd, timeout=self.lock_timeout, display=self._stream_dir_display(stream, w))
                try:
                    segments = list_daily(w.dir_fd)
                    name = active_of(segments) if segments else f"{format_ts(time.time_ns())[:10]}.jsonl"
                    w.fd = self._open_segment(w, stream, name)
                finally:
                    fs.unlock(w.dir_fd)
                w.name = name
                return w.fd
            name = active_of(segments)
        w.fd = self._open_segment(w, stream, name)
        w.name = name
        return w.fd

    def _open_segment(self, w: _Writer, stream: str, name: str) -> int:
        assert w.dir_fd is not None
        fd = fs.open_append(w.dir_fd, name, create=True, file_mode=self.file_mode,
                            display=self.segment_path(stream, name))
        assert fd is not None
        return fd

    def _stream_dir_display(self, stream: str, w: _Writer) -> str:
        return os.path.join(self.root, *(daily_dir(stream) if w.layout == DAILY else size_dir(stream)))

    def _resolve_layout(self, w: _Writer, stream: str) -> None:
        """A stream keeps the layout it was created with; ``rotate`` only decides it for new streams."""
        dfd = self._dir(daily_dir(stream), create=False)
        if dfd is not None and list_daily(dfd):
            w.layout, w.dir_fd = DAILY, dfd
            return
        if dfd is not None:
            os.close(dfd)
        sfd = self._dir(size_dir(stream), create=self.rotate == SIZE)
        if sfd is not None and (self.rotate == SIZE or list_size(sfd, base_name(stream))):
            w.layout, w.dir_fd = SIZE, sfd
            return
        if sfd is not None:
            os.close(sfd)
        w.layout, w.dir_fd = DAILY, self._dir(daily_dir(stream), create=True)

    def _seal(self, w: _Writer, stream: str, fd: int, next_name: str | None) -> None:
        """Finish the current segment and start the next, under the current segment's lock.

        Size rotation renames the active file to the next piece, then creates a new one; a day change just
        creates the next date's file. Either way a writer that waited for the old file's lock sees that it
        is no longer the active segment (another inode at the path, or a newer date in the directory) and
        moves on, and a crash between the steps leaves no active file, which the next writer creates.
        Nothing depends on permission bits, so writers that do not own the files rotate too.
        """
        assert w.dir_fd is not None
        display = os.path.join(self._stream_dir_display(stream, w), w.name)
        if self.durability == "fsync":
            # The next segment's first event must not be durable while this segment's last one is not.
            fs.sync(fd, display)
        try:
            if next_name is None or next_name == w.name:
                segments = list_daily(w.dir_fd) if w.layout == DAILY else list_size(w.dir_fd, w.name)
                sealed = piece_name(w.name, next_piece(segments, w.name))
                os.rename(w.name, sealed, src_dir_fd=w.dir_fd, dst_dir_fd=w.dir_fd)
                next_name = w.name
            new = fs.open_append(w.dir_fd, next_name, create=True, file_mode=self.file_mode, display=display)
            if new is not None:
                os.close(new)
            os.fsync(w.dir_fd)
        except OSError as exc:
            if isinstance(exc, StorageError):
                raise
            raise fs.storage_error(exc, "cannot rotate segment", display) from None

    def _repair(self, stream: str, fd: int, size: int, display: str) -> int:
        parts = stream.split("/")
        qdir = self._dir(["quarantine", *parts[:-1]], create=True)
        assert qdir is not None
        try:
            return fs.repair_torn_tail(fd, size, source=display, quarantine=(qdir, parts[-1] + ".jsonl",
                                                   os.path.join(self.root, "quarantine", stream + ".jsonl")),
                                       file_mode=self.file_mode, timeout=self.lock_timeout,
                                       extra={"stream": stream})
        finally:
            os.close(qdir)

    def _last(self, w: _Writer, stream: str, fd: int, ino: int, size: int) -> tuple[int, str | None]:
        """The last seq and ts of the stream, given its active file of ``size`` bytes."""
        if w.cache is not None and w.cache[0] == ino and w.cache[1] == size:
            return w.cache[2], w.cache[3]
        last, count, ts = scan_last(fd, size)
        if last is None:
            prev_seq, prev_ts = self._before(w, stream)
            last, ts = prev_seq + count, ts or prev_ts
        w.cache = (ino, size, last, ts)
        return last, ts

    def _before(self, w: _Writer, stream: str) -> tuple[int, str | None]:
        """Last seq and ts of the segments before the active one (for an empty or seq-less active file)."""
        assert w.dir_fd is not None
        segments = list_daily(w.dir_fd) if w.layout == DAILY else list_size(w.dir_fd, base_name(stream))
        names = [seg.name for seg in segments]
        older = names[: names.index(w.name)] if w.name in names else names
        count = 0
        newest_ts: str | None = None
        for name in reversed(older):
            rfd = fs.open_read(w.dir_fd, name, self.segment_path(stream, name))
            if rfd is None:
                continue
            try:
                last, n, ts = scan_last(rfd, fs.find_last_newline(rfd, os.fstat(rfd).st_size))
            finally:
                os.close(rfd)
            newest_ts = newest_ts or ts
            if last is not None:
                return last + count, newest_ts
            count += n
        return count, newest_ts

    # --- reading --------------------------------------------------------------------------------------

    def read(self, stream: str, after: int = 0, *, on_malformed: OnMalformed | None = None) -> Iterator[Event]:
        return Cursor(self, stream, after, on_malformed=on_malformed).events(follow=False)

    def follow(self, stream: str, after: int = 0, timeout: float | None = None,
               poll: float = 0.1) -> Iterator[Event]:
        return Cursor(self, stream, after).events(follow=True, timeout=timeout, poll=poll)

    def tail(self, stream: str, limit: int) -> list[Event]:
        return tail(self, stream, limit)

    def scan(self, stream: str, *, since: str | None = None,
             types: Collection[str] | None = None) -> Iterator[Event]:
        """``read(stream)`` restricted to ``ts >= since`` (canonical) and ``type in types``, without parsing
        what cannot match: ``since`` bisects to its start, ``types`` are searched as bytes first (see
        :mod:`._query` for why neither can drop a matching event)."""
        if types is not None and not types:
            return iter(())
        needles = None if types is None else type_needles(types)
        return Cursor(self, stream, 0, since=since, needles=needles,
                      keep=record_filter(since, types)).events(follow=False)

    def open_active(self, stream: str) -> tuple[int, str] | None:
        """``(fd, path)`` of a size-rotated stream's active file, opened for reading; ``None`` when the stream
        is daily, missing or between a rename and the next file (callers then list its segments)."""
        sfd = self._dir(size_dir(stream), create=False)
        if sfd is None:
            return None
        try:
            name = base_name(stream)
            # The same precedence as `listing`: date-named files in <stream>/ make a stream daily.
            try:
                dfd: int | None = os.open(stream.rsplit("/", 1)[-1], fs._DIR_FLAGS, dir_fd=sfd)
            except FileNotFoundError:
                dfd = None
            except OSError as exc:
                raise fs.storage_error(exc, "cannot open directory",
                                       os.path.join(self.root, *daily_dir(stream))) from None
            if dfd is not None:
                daily = _owned_listing(dfd, list_daily)
                os.close(dfd)
                if daily:
                    return None
            display = self.segment_path(stream, name)
            fd = fs.open_read(sfd, name, display)
            return None if fd is None else (fd, display)
        finally:
            os.close(sfd)

    def streams(self) -> list[str]:
        root = self._root(create=False)
        if root is None:
            return []
        logs = fs.open_dir(root, ["logs"], create=False, dir_mode=self.dir_mode,
                           display=os.path.join(self.root, "logs"))
        if logs is None:
            return []
        found: set[str] = set()
        _walk(logs, [], found)
        return sorted(found)

    def stat(self, stream: str) -> StreamInfo:
        listing = self.listing(stream)
        if listing is None:
            return StreamInfo(stream, 0, 0, 0, None)
        dir_fd, segments = listing
        total = 0
        last_seq: int | None = None
        count = 0
        last_ts: str | None = None
        try:
            for seg in reversed(segments):
                fd = fs.open_read(dir_fd, seg.name, self.segment_path(stream, seg.name))
                if fd is None:
                    continue
                try:
                    size = os.fstat(fd).st_size
                    total += size
                    if last_seq is None:
                        seq, n, ts = scan_last(fd, fs.find_last_newline(fd, size))
                        last_ts = last_ts or ts
                        if seq is not None:
                            last_seq = seq + count
                        else:
                            count += n
                finally:
                    os.close(fd)
        finally:
            os.close(dir_fd)
        return StreamInfo(stream, last_seq if last_seq is not None else count, total, len(segments), last_ts)

    def verify(self, streams: Sequence[str] | None = None) -> Report:
        from ._verify import verify

        return verify(self, streams)

    # --- lifecycle ------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._writers_lock:
            for w in self._writers.values():
                with w.mutex:
                    w.close()
            self._writers.clear()
        if self._root_fd is not None:
            os.close(self._root_fd)
            self._root_fd = None
        self._closed = True

    def _after_fork_in_child(self) -> None:
        # A child shares the parent's open file descriptions, and flock locks belong to those: if both used
        # the same description they would each believe they hold the lock. Forget everything; closing our
        # copies does not release the parent's locks (the parent still holds its own references).
        for w in self._writers.values():
            w.close()
        self._writers = {}
        self._writers_lock = threading.Lock()


def _lines(ids: Sequence[bytes], tails: Sequence[bytes], first: int, ts: str) -> bytes:
    """The batch's records, ``{"seq":..,"id":..,"ts":..,`` and the tail, one line each.

    One format for the whole batch, with the arguments interleaved in C: a writer's batch is thousands of
    events, and a call per record costs more than the record. An :class:`~agentlog.event.IdBlock` (what
    writers give) goes into the format itself, each comma of its text becoming the rest of one record and
    the start of the next. ``ts`` goes into the format too (escaped: it can come from a foreign line)."""
    n = len(tails)
    ts_b = ts.encode().replace(b"%", b"%%")
    if isinstance(ids, IdBlock) and n > 1:
        head = b'{"seq":%d,"id":"' + ids.prefix
        fmt = head + ids.suffixes.replace(b",", b'","ts":"' + ts_b + b'",%s\n' + head)
        return fmt[:-len(head)] % _interleaved(range(first, first + n), tails)
    fmt = b'{"seq":%d,"id":"%s","ts":"' + ts_b + b'",%s\n'
    if n == 1:
        return fmt % (first, ids[0], tails[0])
    return (fmt * n) % _interleaved(range(first, first + n), ids, tails)


def _interleaved(*columns: Sequence[object]) -> tuple[object, ...]:
    """``(a[0], b[0], a[1], b[1], ...)`` for equally long ``columns``, by slice assignment (in C)."""
    width = len(columns)
    out: list[object] = [None] * (width * len(columns[0]))
    for i, column in enumerate(columns):
        out[i::width] = column  # raises ValueError unless every column is as long as the first
    return tuple(out)


def _owned_listing(dir_fd: int, lister: Callable[[int], list[Segment]]) -> list[Segment]:
    """``lister(dir_fd)``, closing the descriptor if listing fails (an I/O error must not leak it)."""
    try:
        return lister(dir_fd)
    except OSError as exc:
        os.close(dir_fd)
        raise fs.storage_error(exc, "cannot list directory", "") from None


def _walk(dir_fd: int, rel: list[str], found: set[str]) -> None:
    try:
        with os.scandir(dir_fd) as entries:
            items = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        for name, is_dir in items:
            if is_dir:
                try:
                    sub = os.open(name, fs._DIR_FLAGS, dir_fd=dir_fd)
                except OSError:
                    continue
                _walk(sub, [*rel, name], found)
            else:
                stream = stream_of_file(rel, name)
                if stream is not None:
                    found.add(stream)
    finally:
        os.close(dir_fd)


_LIVE: weakref.WeakSet[FileBackend] = weakref.WeakSet()


def _after_fork() -> None:
    for backend in list(_LIVE):
        backend._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork)

__all__ = ["DURABILITIES", "FileBackend"]
