"""``verify`` for the file backend: the checker of 000, for every stream and segment.

It proves what the write path promises: every line is a JSON object, ``seq`` runs 1, 2, 3 ... with no gap or
repeat across segments, ``ts`` never goes backwards, and no file ends in a torn record. It reads without the
writers' lock, except for a brief shared lock to tell a dead writer's torn tail from a write in flight.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import StorageError
from ..event import parse_ts
from ..report import Problem, Report
from . import _fs as fs
from ._scan import lines_forward, parse_line

if TYPE_CHECKING:
    from .file import FileBackend


def verify(backend: FileBackend, streams: Sequence[str] | None) -> Report:
    report = Report()
    names = list(streams) if streams else backend.streams()
    if not streams:
        _find_symlinks(backend, report)
    for stream in names:
        try:
            _verify_stream(backend, stream, report)
        except StorageError as exc:
            report.problems.append(Problem(exc.path or backend.root, 0, str(exc)))
    return report


def _verify_stream(backend: FileBackend, stream: str, report: Report) -> None:
    for _attempt in range(10):
        attempt = Report()
        if _verify_listing(backend, stream, attempt):
            break
        # The active segment was rotated between listing and opening: checking what we opened would skip
        # its events and report a false gap, so list again and start over.
    report.merge(attempt)


def _verify_listing(backend: FileBackend, stream: str, report: Report) -> bool:
    """Check one listing of the stream; False when a segment moved while we read (caller retries)."""
    listing = backend.listing(stream)
    if listing is None:
        report.problems.append(Problem(backend.segment_path(stream, stream.rsplit("/", 1)[-1] + ".jsonl"), 0,
                                       f"no such stream: {stream}"))
        report.counts[stream] = 0
        return True
    dir_fd, segments = listing
    state: dict[str, Any] = {"seq": 0, "ts": None, "count": 0}
    try:
        for index, seg in enumerate(segments):
            path = backend.segment_path(stream, seg.name)
            fd = fs.open_read(dir_fd, seg.name, path)
            if fd is None:
                return False
            try:
                if os.fstat(fd).st_ino != seg.ino:
                    return False
                _verify_segment(backend, stream, fd, path, index == len(segments) - 1, state, report)
            finally:
                os.close(fd)
    finally:
        os.close(dir_fd)
    report.counts[stream] = state["count"]
    return True


def _verify_segment(backend: FileBackend, stream: str, fd: int, path: str, last: bool,
                    state: dict[str, Any], report: Report) -> None:
    st = os.fstat(fd)
    end = fs.find_last_newline(fd, st.st_size)
    if end < st.st_size and _still_torn(backend, fd, last, path):
        report.problems.append(Problem(path, 0, f"torn tail: {st.st_size - end} bytes after the last newline "
                                                "(a writer died mid-record; the next append quarantines it)"))
    problems = report.problems
    line_no = 0
    for _start, raw in lines_forward(fd, 0, end):
        line_no += 1
        rec, why = parse_line(raw)
        if rec is None:
            problems.append(Problem(path, line_no, f"malformed line: {why}"))
            continue
        seq = rec.get("seq")
        expected = state["seq"] + 1
        if type(seq) is not int or not isinstance(rec.get("id"), str):
            if type(seq) is not int:
                seq = expected
            report.warnings.append(Problem(path, line_no, f"no seq or id: a line from another writer, read "
                                                          f"as seq {seq}"))
        else:
            if seq != expected:
                kind = "gap" if seq > expected else "repeated or out of order"
                problems.append(Problem(path, line_no, f"seq {seq} where {expected} was expected ({kind})"))
            if not isinstance(rec.get("type"), str) or not rec["type"]:
                problems.append(Problem(path, line_no, "no type"))
            if rec.get("stream", stream) != stream:
                problems.append(Problem(path, line_no, f"stream field {rec.get('stream')!r} in {stream!r}"))
        state["seq"] = seq
        if "ts" in rec and isinstance(rec.get("id"), str):
            # Only agentlog's own timestamps are promised to be ordered; another writer's clock is its own.
            ts = rec["ts"]
            try:
                canonical = parse_ts(ts) if isinstance(ts, str) else None
            except ValueError:
                canonical = None
            if canonical is None:
                problems.append(Problem(path, line_no, f"ts {ts!r} is not an RFC 3339 timestamp"))
            else:
                if state["ts"] is not None and canonical < state["ts"]:
                    problems.append(Problem(path, line_no, f"ts {ts} is earlier than the line before"))
                state["ts"] = canonical
        state["count"] += 1


def _still_torn(backend: FileBackend, fd: int, active: bool, path: str) -> bool:
    """True unless the unterminated bytes turn out to be a write in flight."""
    if not active:
        return True
    try:
        fs.lock(fd, timeout=min(backend.lock_timeout, 2.0), display=path, shared=True)
    except StorageError:
        return True  # a writer holds it for that long: report what we saw
    try:
        size = os.fstat(fd).st_size
        return fs.last_byte(fd, size) != b"\n"
    finally:
        fs.unlock(fd)


def _find_symlinks(backend: FileBackend, report: Report) -> None:
    root = os.path.join(backend.root, "logs")
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                report.problems.append(Problem(full, 0, "symlink inside the log tree (never followed)"))
