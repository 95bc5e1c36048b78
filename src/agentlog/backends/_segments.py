"""Where a stream's segments live and in which order they are read.

Two layouts, fixed when a stream is created:

``size`` (the default)
    ``logs/<stream>.jsonl`` is the active segment; sealed ones sit beside it as ``<stream>.jsonl.000001``,
    ``.000002``, ... (oldest first), so ``tail -f logs/conv-7.jsonl`` and ``cat logs/conv-7.jsonl*`` work.
``daily``
    ``logs/<stream>/YYYY-MM-DD.jsonl``, one per UTC date (the ledgers of 003 read
    ``ledger/<agent>/YYYY-MM-DD.jsonl``); a day that passes ``segment_bytes`` is sealed into pieces the same
    way, ``YYYY-MM-DD.jsonl.000001``.

A segment is finished once a later one exists: the later one is created under the earlier one's lock,
after its last write. A writer that waited for the lock learns it must move on from the inode now at the
active path (size) or from a newer date in the directory (daily); a follower at end of file, from the
listing.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

SIZE = "size"
DAILY = "daily"
ROTATIONS = (SIZE, DAILY)

_PIECE = re.compile(r"\.(\d{6,})")
_DAILY = re.compile(r"(\d{4}-\d{2}-\d{2})\.jsonl(?:\.(\d{6,}))?")
_ACTIVE_LAST = 1 << 62  # sorts the active file after its sealed pieces


class Segment(NamedTuple):
    name: str
    ino: int


def size_dir(stream: str) -> list[str]:
    return ["logs", *stream.split("/")[:-1]]


def daily_dir(stream: str) -> list[str]:
    return ["logs", *stream.split("/")]


def base_name(stream: str) -> str:
    return stream.rsplit("/", 1)[-1] + ".jsonl"


def piece_name(name: str, number: int) -> str:
    return f"{name}.{number:06d}"


def list_size(dir_fd: int, base: str) -> list[Segment]:
    """The segments of a size-rotated stream in read order: sealed pieces by number, then the active file."""
    found: list[tuple[int, Segment]] = []
    with os.scandir(dir_fd) as entries:
        for entry in entries:
            name = entry.name
            if not name.startswith(base):
                continue
            rest = name[len(base):]
            if not rest:
                found.append((_ACTIVE_LAST, Segment(name, entry.inode())))
            elif (m := _PIECE.fullmatch(rest)) is not None:
                found.append((int(m.group(1)), Segment(name, entry.inode())))
    found.sort()
    return [seg for _, seg in found]


def list_daily(dir_fd: int) -> list[Segment]:
    """The segments of a daily stream in read order: by date, each date's pieces before its active file."""
    found: list[tuple[str, int, Segment]] = []
    with os.scandir(dir_fd) as entries:
        for entry in entries:
            m = _DAILY.fullmatch(entry.name)
            if m is not None:
                piece = int(m.group(2)) if m.group(2) else _ACTIVE_LAST
                found.append((m.group(1), piece, Segment(entry.name, entry.inode())))
    found.sort()
    return [seg for _, _, seg in found]


def active_of(segments: list[Segment]) -> str:
    """The active file's name for a listing: the base of the newest segment (a piece's base, if a crash left
    a rename without its new file)."""
    name = segments[-1].name
    return name if name.endswith(".jsonl") else name.rsplit(".", 1)[0]


def next_piece(segments: list[Segment], name: str) -> int:
    numbers = [int(seg.name[len(name) + 1:]) for seg in segments
               if seg.name.startswith(name + ".") and seg.name[len(name) + 1:].isdigit()]
    return max(numbers, default=0) + 1


def stream_of_file(rel_dir: list[str], name: str) -> str | None:
    """The stream a file under ``logs/`` belongs to, or ``None`` if it is not a segment."""
    m = _DAILY.fullmatch(name)
    if m is not None:
        return "/".join(rel_dir) if rel_dir else None
    if name.endswith(".jsonl"):
        stem = name[: -len(".jsonl")]
    else:
        idx = name.rfind(".jsonl.")
        if idx <= 0 or not _PIECE.fullmatch(name[idx + len(".jsonl"):]):
            return None
        stem = name[:idx]
    return "/".join([*rel_dir, stem]) if stem else None
