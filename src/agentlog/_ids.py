"""Event ids: UUIDv7s (RFC 9562), one at a time (:func:`uuid7`) or a batch's worth (:func:`uuid7_block`).

Every event gets an id, so this is on the hot path of ``log.append`` and of ``EventWriter``'s committing
thread, and it is built for that: the millisecond's text is kept until the clock moves on, and the random
parts are made in chunks from one call of a CSPRNG that keeps the GIL (:func:`prepare_random`). The state
that makes this cheap (the current millisecond, the unused random parts) is module-global and read only here;
threads may share it (each part is handed out once), and a forked child drops the parent's unused parts
(:func:`_forget_ids`, registered with :func:`os.register_at_fork`), or both processes would hand out the
same ids.

A module of its own because ids are a concern apart from the event envelope; :mod:`agentlog.event`
re-exports the public names, and the rest of the package imports them from there. Only the standard library
is imported (``_ssl`` lazily), so ``agentlog append`` stays light.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import overload

__all__ = ["IdBlock", "prepare_random", "uuid7", "uuid7_block"]


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then randomness; sorts by creation time.

    Every event gets one, so the work is shared: the text of the millisecond is kept until the clock moves
    on, and the random part ("aaa-Vbbb-bbbbbbbbbbbb", 74 random bits with the variant) is made for
    :data:`_ID_CHUNK` ids at a time from one ``os.urandom`` call. ``next`` on the list iterator hands each
    out once, even to threads; a forked child drops the parent's unused ones (:func:`_forget_ids`), or both
    processes would hand out the same ids."""
    ms = _time_ns() // 1_000_000
    stamp = _id_stamp
    if stamp[0] != ms:
        stamp = _stamp(ms)
    suffix = next(_id_suffixes, None)
    return stamp[1] + (suffix if suffix is not None else _next_suffix()).decode()


class IdBlock(Sequence[bytes]):
    """``n`` UUIDv7s of one millisecond, as ASCII bytes, kept as one block of text: ``prefix`` (the
    millisecond's part, "tttttttt-tttt-7") and ``suffixes``, each id's random part ("aaa-Vbbb-bbbbbbbbbbbb")
    followed by a comma. Indexing and slicing give the ids (and blocks); the file backend formats a batch's
    records from the block itself, without an object per id."""

    __slots__ = ("prefix", "suffixes")

    WIDTH = 22  # one suffix and its comma

    def __init__(self, prefix: bytes, suffixes: bytes) -> None:
        self.prefix = prefix
        self.suffixes = suffixes

    def __len__(self) -> int:
        return len(self.suffixes) // self.WIDTH

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> IdBlock: ...

    def __getitem__(self, index: int | slice) -> bytes | IdBlock:
        width = self.WIDTH
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError("an IdBlock slices with step 1 only")
            return IdBlock(self.prefix, self.suffixes[start * width:max(start, stop) * width])
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("IdBlock index out of range")
        return self.prefix + self.suffixes[index * width:index * width + width - 1]


def uuid7_block(n: int) -> IdBlock:
    """``n`` UUIDv7s of the current millisecond, for a batch numbered at once: about a tenth of the cost of
    ``n`` calls of :func:`uuid7`, and no object per id."""
    ms = _time_ns() // 1_000_000
    stamp = _id_stamp
    if stamp[0] != ms:
        stamp = _stamp(ms)
    count = -(-n // _ID_CHUNK)
    half = len(_ID_RECORD_MASK) * _ID_CHUNK // 2
    randomness = _random_bytes(half * count)
    chunks = [_new_chunk(randomness[i * half:(i + 1) * half]) for i in range(count)]
    return IdBlock(stamp[2], b"".join(chunks)[:n * IdBlock.WIDTH])


def _stamp(ms: int) -> tuple[int, str, bytes]:
    """The millisecond's text, "tttttttt-tttt-7", as str and bytes; one tuple, so threads never see half
    of an update."""
    global _id_stamp
    h = f"{ms & 0xFFFF_FFFF_FFFF:012x}"
    text = f"{h[:8]}-{h[8:]}-7"
    stamp = _id_stamp = (ms, text, text.encode())
    return stamp


def _next_suffix() -> bytes:
    """A new chunk of suffixes (the current one ran out), and its first."""
    global _id_suffixes
    # Several threads may get here at once: each makes its own chunk, and none is handed out twice.
    suffixes = _new_suffixes()
    first = suffixes.pop()
    _id_suffixes = iter(suffixes)
    return first


#: Random id suffixes made per ``os.urandom`` call.
_ID_CHUNK = 512
# A suffix is made from 11 random bytes without a Python loop: as hex they are 22 digits, one byte each
# once translated to their values; a mask and a pattern over the whole chunk then set the variant digit to
# 0b10xx and overwrite three digits with a dash, a dash and a separator (values 16, 16, 17); a second
# translation makes them text, and the chunk is split at the separators.
_ID_RECORD_MASK = bytes([0x0F] * 3 + [0x00] + [0x03] + [0x0F] * 3 + [0x00] + [0x0F] * 12 + [0x00])
_ID_RECORD_SET = bytes([0x00] * 3 + [0x10] + [0x08] + [0x00] * 3 + [0x10] + [0x00] * 12 + [0x11])
_ID_MASK = int.from_bytes(_ID_RECORD_MASK * _ID_CHUNK, "big")
_ID_SET = int.from_bytes(_ID_RECORD_SET * _ID_CHUNK, "big")
_HEX_VALUES = bytes.maketrans(b"0123456789abcdef", bytes(range(16)))
_ID_CHARS = bytes.maketrans(bytes(range(18)), b"0123456789abcdef-,")
_id_stamp: tuple[int, str, bytes] = (-1, "", b"")
_id_suffixes: Iterator[bytes] = iter(())
_time_ns = time.time_ns


def _random_bytes(n: int) -> bytes:
    """``n`` bytes from a CSPRNG that keeps the GIL: OpenSSL's ``RAND_bytes`` (fork-safe), else
    ``os.urandom``. The committing thread ids every batch; ``os.urandom`` releases the GIL for its system
    call, and while another thread is emitting, getting the GIL back takes a switch interval (5 ms) per
    call, which at hundreds of thousands of events a second is most of a batch's time."""
    return (_random_bytes_impl or prepare_random())(n)


def prepare_random() -> Callable[[int], bytes]:
    """Load :func:`_random_bytes`'s source now (OpenSSL takes a few milliseconds to load) rather than in the
    middle of the first batch; ``EventWriter`` calls this when it is made."""
    global _random_bytes_impl
    if _random_bytes_impl is None:
        try:
            from _ssl import RAND_bytes

            _random_bytes_impl = RAND_bytes
        except ImportError:  # a Python built without OpenSSL
            _random_bytes_impl = os.urandom
    return _random_bytes_impl


_random_bytes_impl: Callable[[int], bytes] | None = None


def _new_chunk(randomness: bytes | None = None) -> bytes:
    """:data:`_ID_CHUNK` suffixes, each followed by a comma, from ``randomness`` (11 bytes a suffix) or new."""
    size = len(_ID_RECORD_MASK) * _ID_CHUNK
    digits = (os.urandom(size // 2) if randomness is None else randomness).hex().encode().translate(_HEX_VALUES)
    raw = (int.from_bytes(digits, "big") & _ID_MASK | _ID_SET).to_bytes(size, "big")
    return raw.translate(_ID_CHARS)


def _new_suffixes() -> list[bytes]:
    suffixes = _new_chunk().split(b",")
    suffixes.pop()  # the empty string after the last separator
    return suffixes


def _forget_ids() -> None:
    global _id_suffixes
    _id_suffixes = iter(())


os.register_at_fork(after_in_child=_forget_ids)
