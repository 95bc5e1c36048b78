"""Fast reads (issue 3 §3): tail from the end, since by bisection, by_type by byte search before parsing.

Every fast path is checked against the plain answer: ``read`` the whole stream and filter it in Python.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentlog import open_log
from agentlog.backends import _query, _reader
from agentlog.backends._query import PROBE_SPAN, AtOrAfter
from agentlog.event import ENVELOPE_FIELDS, Event, comparable_ts, parse_ts
from agentlog.log import EventLog
from agentlog.testing import json_values

# --- helpers ----------------------------------------------------------------------------------------------


def reference(log: EventLog, stream: str, *, since: str | None = None,
              types: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The slow, obviously right answer: every event of ``read``, filtered here."""
    lo = None if since is None else parse_ts(since)
    wanted = None if types is None else set(types)
    out = []
    for ev in log.read(stream):
        if wanted is not None and ev.type not in wanted:
            continue
        if lo is not None:
            ts = None if ev.ts is None else comparable_ts(ev.ts)
            if ts is None or ts < lo:
                continue
        out.append(ev.to_dict())
    return out


def oracle(root: Path, stream: str) -> list[dict[str, Any]]:
    """A size-rotated stream read without agentlog's reader: whole files, split on newlines, seq inferred
    as one more than the line before; it checks ``read`` itself, which ``reference`` trusts."""
    logs = root / "logs"
    pieces = sorted(logs.glob(f"{stream}.jsonl.*"))
    out = []
    prev = 0
    for path in [*pieces, logs / f"{stream}.jsonl"]:
        for raw in path.read_bytes().split(b"\n")[:-1]:
            try:
                rec = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(rec, dict):
                continue
            seq = rec["seq"] if type(rec.get("seq")) is int else prev + 1
            prev = seq
            if seq > 0:
                out.append(Event.from_record(rec, stream=stream, seq=seq).to_dict())
    return out


def dicts(events: Iterable[Event]) -> list[dict[str, Any]]:
    return [ev.to_dict() for ev in events]


BASE = datetime(2026, 3, 1, 10, tzinfo=UTC)


def ts_at(second: int, micro: int = 0) -> str:
    """A canonical ts ``second`` seconds (and ``micro`` microseconds) after a fixed instant."""
    return (BASE + timedelta(seconds=second, microseconds=micro)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def own(seq: int, ts: str, type: str = "t", **fields: Any) -> bytes:
    """A line as agentlog writes it (seq, id, ts first)."""
    return orjson.dumps({"seq": seq, "id": f"id-{seq}", "ts": ts, "stream": "s", "type": type,
                         "data": fields.pop("data", {}), **fields}) + b"\n"


def write_segments(root: Path, segments: Sequence[bytes], stream: str = "s") -> None:
    """Sealed segments .000001, .000002 ... then the active file, written by hand."""
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for i, content in enumerate(segments[:-1], start=1):
        (logs / f"{stream}.jsonl.{i:06d}").write_bytes(content)
    (logs / f"{stream}.jsonl").write_bytes(segments[-1])


def cut_points(log: EventLog, stream: str) -> list[str]:
    """Every distinct ts in the stream, a microsecond either side of each, and instants outside it."""
    stamps = sorted({ts for ev in log.read(stream) if ev.ts and (ts := comparable_ts(ev.ts))})
    cuts = {"2000-01-01T00:00:00.000000Z", "2100-01-01T00:00:00.000000Z"}
    for ts in stamps:
        cuts.add(ts)
        micro = int(ts[20:26])
        cuts.add(ts[:20] + f"{min(micro + 1, 999999):06d}Z")
        cuts.add(ts[:20] + f"{max(micro - 1, 0):06d}Z")
    return sorted(cuts)


# --- Event construction -------------------------------------------------------------------------------

record_keys = st.sampled_from(["seq", "id", "ts", "timestamp", "stream", "type", "actor", "level", "visibility",
                               "interaction", "data", "content", "x"])


@settings(max_examples=300, deadline=None)
@given(record=st.dictionaries(record_keys, json_values | st.booleans() | st.integers(), max_size=9),
       seq=st.integers(min_value=1, max_value=10**6))
def test_event_from_record_follows_the_envelope_rules_for_any_record(record: dict[str, Any], seq: int) -> None:
    """Event.from_record (built for speed, setting slots directly) agrees slot by slot with the rules written
    out plainly through the constructor, for any parsed record."""
    fast = Event.from_record(dict(record), stream="s", seq=seq)
    expected = _reference_event(dict(record), seq)
    for slot in Event.__slots__:
        assert getattr(fast, slot) == getattr(expected, slot), slot
        assert type(getattr(fast, slot)) is type(getattr(expected, slot)), slot


def _reference_event(record: dict[str, Any], seq: int) -> Event:
    """The envelope rules, one field at a time: wrong types become None, data is always an object."""
    def text(key: str) -> str | None:
        value = record.get(key)
        return value if isinstance(value, str) else None

    ts = text("ts") if text("ts") is not None else text("timestamp")
    interaction = record.get("interaction")
    data = record.get("data")
    rec_seq = record.get("seq")
    return Event(seq=rec_seq if type(rec_seq) is int else seq, id=text("id"), ts=ts, stream="s",
                 type=text("type") or "", actor=text("actor"), level=text("level"), visibility=text("visibility"),
                 interaction=interaction if isinstance(interaction, int) and not isinstance(interaction, bool)
                 else None,
                 data=data if isinstance(data, dict) else ({} if data is None else {"value": data}),
                 extra={k: v for k, v in record.items() if k not in ENVELOPE_FIELDS})


# --- since --------------------------------------------------------------------------------------------


def test_since_equals_a_full_scan_across_many_segments(tmp_path: Path) -> None:
    """since(ts) over a stream of many sealed segments, with batches sharing a ts, equals the full-scan filter
    for every ts in it, a microsecond either side, and instants before the first and after the last."""
    log = open_log(tmp_path, segment_bytes=1500, durability="write")
    for i in range(60):
        size = 1 + i % 7
        log.append_many("s", [{"type": f"t{j % 3}", "data": {"i": i, "j": j}} for j in range(size)])
    assert log.stat("s").segments > 20
    for cut in cut_points(log, "s"):
        assert dicts(log.since(cut, streams=["s"])) == reference(log, "s", since=cut), cut


def test_since_before_the_first_after_the_last_and_at_an_exact_ts(tmp_path: Path) -> None:
    """since before every event gives all of them, after the last gives none, and at an event's exact ts
    includes that event."""
    log = open_log(tmp_path, segment_bytes=800, durability="write")
    events = [log.append("s", "t", data={"i": i}) for i in range(40)]
    assert [e.seq for e in log.since("2000-01-01T00:00:00Z", streams=["s"])] == list(range(1, 41))
    assert list(log.since("2100-01-01T00:00:00Z", streams=["s"])) == []
    middle = events[25]
    assert middle.ts is not None
    got = list(log.since(middle.ts, streams=["s"]))
    assert got[0].ts == middle.ts and got[-1].seq == 40
    assert dicts(got) == reference(log, "s", since=middle.ts)


def test_a_batch_sharing_one_ts_across_probe_points_is_returned_whole(tmp_path: Path) -> None:
    """Batches far larger than the bisect's probe span, each sharing one ts: since at a batch's ts returns
    that whole batch and everything after it."""
    batches = []
    seq = 0
    for b in range(5):
        lines = []
        for _ in range(3 * PROBE_SPAN // 100):
            seq += 1
            lines.append(own(seq, ts_at(b), data={"pad": "p" * 40}))
        batches.append(b"".join(lines))
    write_segments(tmp_path, [batches[0] + batches[1], batches[2] + batches[3] + batches[4]])
    log = open_log(tmp_path)
    per_batch = 3 * PROBE_SPAN // 100
    for b in range(5):
        got = list(log.since(ts_at(b), streams=["s"]))
        assert [e.seq for e in got] == list(range(b * per_batch + 1, seq + 1))
        assert dicts(got) == reference(log, "s", since=ts_at(b))


def _foreign(type: str, **fields: Any) -> bytes:
    return json.dumps({"interaction": 1, "actor": "Agent A", "type": type, "content": "from sh", **fields}) \
        .encode() + b"\n"


def _mixed_stream() -> list[bytes]:
    """Three segments of own lines (ts rising by 0.5 s, a ts shared by pairs) with foreign lines of 002's
    shell writer (whole-second ``timestamp``, stamped before it got the lock, so never later than the next
    own line), foreign lines with a ``ts`` or with no time at all, and malformed lines."""
    segments: list[bytes] = []
    seq = 0
    body = b""
    for i in range(150):
        seq += 1
        second = i // 2
        body += own(seq, ts_at(second, 500000 * (i % 2)), type=("a", "b", "c")[i % 3])
        if i % 11 == 3:
            seq += 1  # a foreign line takes the next seq, as a forward read infers it
            body += _foreign("a", timestamp=ts_at(second)[:19] + "Z")
        if i % 17 == 5:
            seq += 1
            body += _foreign("b", ts=ts_at(max(second - 30, 0)))  # stamped long before it was written
        if i % 13 == 7:
            seq += 1
            body += _foreign("c")  # no time at all: never in a since() result
        if i % 19 == 2:
            body += b"this is not json\n" if i % 2 else b'{"seq": 99, "torn": "\x00"}\n'
        if i in (50, 100):
            segments.append(body)
            body = b""
    segments.append(body)
    return segments


def test_since_equals_a_full_scan_with_foreign_and_malformed_lines(tmp_path: Path) -> None:
    """Foreign seq-less lines (with a whole-second timestamp, an old ts, or no time) and malformed lines
    among agentlog's own: since equals the full-scan filter at every cut, seqs included."""
    write_segments(tmp_path, _mixed_stream())
    log = open_log(tmp_path)
    assert dicts(log.read("s")) == oracle(tmp_path, "s")
    for cut in cut_points(log, "s"):
        assert dicts(log.since(cut, streams=["s"])) == reference(log, "s", since=cut), cut


def test_a_seqless_line_right_after_the_start_gets_the_seq_a_full_read_gives(tmp_path: Path) -> None:
    """A shell writer's line that waited for the lock sits right after the last event older than the cut but
    is stamped at the cut: since yields it first, numbered one after the event before it."""
    lines = []
    seq = 0
    for i in range(1, 4000):
        seq += 1
        lines.append(own(seq, ts_at(i)))
        if i == 3000:
            seq += 1
            lines.append(_foreign("late", timestamp=ts_at(3001)))
    write_segments(tmp_path, [b"".join(lines)])
    log = open_log(tmp_path)
    cut = ts_at(3001)
    got = list(log.since(cut, streams=["s"]))
    assert got[0].type == "late" and got[0].id is None and got[0].seq == 3001
    assert dicts(got) == reference(log, "s", since=cut)


def test_since_keeps_lines_that_carry_only_a_timestamp_wherever_they_are(tmp_path: Path) -> None:
    """Shell-writer lines with a ``timestamp`` and no ``ts`` are kept by since() as first line of the
    stream, first line read after the bisect, and after lines with no time at all."""
    lines = [_foreign("first", timestamp="2026-03-01T09:00:00Z"), _foreign("untimed")]
    lines += [own(i, ts_at(i)) for i in range(3, 2000)]
    lines.insert(1500, _foreign("middle", timestamp=ts_at(1500, 500000)))  # right after own line 1500
    write_segments(tmp_path, [b"".join(lines)])
    log = open_log(tmp_path)
    with mock.patch.object(_query, "PROBE_SPAN", 1):  # bisect down to the line, so "middle" is read first
        for cut in ("2026-03-01T08:00:00Z", "2026-03-01T09:00:00Z", ts_at(1500, 500000)):
            got = dicts(log.since(cut, streams=["s"]))
            assert got == reference(log, "s", since=cut) and got[0]["type"] in ("first", "middle")


def test_since_never_parses_lines_before_where_it_starts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Lines far before the cut, overwritten with x's (newlines kept), are never reported by since(), which
    still returns exactly the right events: they were never parsed. A full read does report them."""
    log = open_log(tmp_path, durability="write")
    for i in range(100):
        log.append_many("s", [{"type": "t", "data": {"i": i, "j": j, "pad": "x" * 50}} for j in range(50)])
    cut = next(e.ts for e in log.read("s", after=4500))
    assert cut is not None
    expected = reference(log, "s", since=cut)
    path = tmp_path / "logs" / "s.jsonl"
    raw = path.read_bytes().split(b"\n")
    for n in range(10, 3000, 7):
        raw[n] = b"x" * len(raw[n])
    path.write_bytes(b"\n".join(raw))
    with caplog.at_level(logging.WARNING, logger="agentlog"):
        assert dicts(log.since(cut, streams=["s"])) == expected
    assert "malformed" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="agentlog"):
        assert len(list(log.read("s"))) == 5000 - len(range(10, 3000, 7))
    assert f"{path}:11: skipping malformed line" in caplog.text


def test_malformed_lines_after_the_start_are_reported_with_their_line_numbers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A malformed line that since() does read is reported with its true line number, though reading
    started in the middle of the file."""
    lines = [own(i, ts_at(i // 10)) for i in range(1, 3001)]
    lines.insert(2900, b"garbage\n")  # line 2901 of the file
    write_segments(tmp_path, [b"".join(lines)])
    log = open_log(tmp_path)
    with caplog.at_level(logging.WARNING, logger="agentlog"):
        got = list(log.since(ts_at(280), streams=["s"]))
    assert got[0].seq == 2800 and len(got) == 201
    assert f"{tmp_path / 'logs' / 's.jsonl'}:2901: skipping malformed line" in caplog.text


def test_since_across_daily_segments_and_a_segment_of_foreign_lines_only(tmp_path: Path) -> None:
    """A daily stream whose newest file holds only a shell writer's lines: since looks past it to the
    dates before, and equals the full-scan filter at every cut."""
    day_dir = tmp_path / "logs" / "ledger" / "andy"
    day_dir.mkdir(parents=True)
    seq = 0
    for day in range(1, 5):
        lines = b""
        for i in range(30):
            seq += 1
            lines += own(seq, f"2026-01-0{day}T00:00:{i:02d}.000000Z")
        (day_dir / f"2026-01-0{day}.jsonl").write_bytes(lines)
    (day_dir / "2026-01-05.jsonl").write_bytes(_foreign("a", timestamp="2026-01-04T23:59:59Z") + _foreign("b"))
    log = open_log(tmp_path)
    assert log.stat("ledger/andy").segments == 5
    for cut in cut_points(log, "ledger/andy"):
        assert dicts(log.since(cut, streams=["ledger/andy"])) == reference(log, "ledger/andy", since=cut), cut


def test_since_merges_streams_and_reads_a_line_longer_than_a_chunk(tmp_path: Path) -> None:
    """since() over several streams, one holding a 2.5 MiB event, equals the per-stream filters merged."""
    log = open_log(tmp_path, durability="write")
    log.append("a", "t")
    log.append("b", "t", data={"big": "y" * (5 << 19)})
    cut = log.append("a", "t").ts
    assert cut is not None
    log.append("b", "t", data={"big": "z" * (5 << 19)})
    log.append("a", "t")
    got = list(log.since(cut))
    assert [(e.stream, e.seq) for e in got] == [("a", 2), ("b", 2), ("a", 3)]
    assert len(got[1].data["big"]) == 5 << 19


def test_since_while_writers_rotate_yields_each_event_once_in_order(tmp_path: Path) -> None:
    """since() running while another thread appends and rotates tiny segments returns, every time, one
    gapless run of seqs starting at the first event at or after the cut."""
    log = open_log(tmp_path, segment_bytes=1200, durability="write")
    first = [log.append("s", "t", data={"i": i}) for i in range(200)]
    cut = first[150].ts
    assert cut is not None
    start = next(e.seq for e in first if e.ts == cut)
    stop = threading.Event()

    def writer() -> None:
        for _ in range(3000):
            if stop.is_set():
                return
            log.append("s", "t", data={"pad": "w" * 30})

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(20):
            # The first 400 events: enough to cross many rotations, without chasing the writer forever.
            seqs = [e.seq for e in itertools.islice(log.since(cut, streams=["s"]), 400)]
            assert seqs == list(range(start, start + len(seqs)))
            assert len(seqs) >= 200 - start + 1
    finally:
        stop.set()
        thread.join(30)
    assert dicts(log.since(cut, streams=["s"])) == reference(log, "s", since=cut)


@pytest.mark.parametrize("how", ["read", "since", "by_type"])
def test_a_rotation_between_listing_and_opening_the_next_segment_loses_nothing(tmp_path: Path, how: str) -> None:
    """A reader that lists the segments, then finds the next one rotated away before it opens it, looks
    again instead of ending the read early: every event already written is read."""
    log = open_log(tmp_path, segment_bytes=700, durability="write")
    while log.stat("s").segments < 2 or (tmp_path / "logs" / "s.jsonl").stat().st_size < 150:
        log.append("s", "t", data={"pad": "p" * 60})
    written = log.stat("s").events
    other = open_log(tmp_path, segment_bytes=700, durability="write")  # another writer, its own descriptors
    real_listing = log.backend.listing  # type: ignore[attr-defined]
    calls: list[int] = []
    rotated = []

    def listing_then_rotate(stream: str) -> Any:
        found = real_listing(stream)
        calls.append(len(found[1]))
        if len(calls) == 2:  # the reader has opened the first segment and now looks for the next one
            rotated.append(other.append("s", "t", data={"pad": "q" * 600}))  # seals s.jsonl, starts a new one
        return found

    log.backend.listing = listing_then_rotate  # type: ignore[attr-defined]
    cut = "2000-01-01T00:00:00Z"
    events = {"read": lambda: list(log.read("s")), "since": lambda: list(log.since(cut, streams=["s"])),
              "by_type": lambda: list(log.by_type("t", streams=["s"]))}[how]()
    assert calls[:2] == [2, 2] and rotated[0].seq == written + 1
    assert [e.seq for e in events] == list(range(1, written + 2))
    other.close()


def _odd_stream() -> bytes:
    """Own lines with one ts each (as single appends write them), among lines whose seq is not a positive
    integer (a float, a bool, a string, null, zero, negative), JSON that is not an object, and garbage."""
    odd = [b'{"seq": 2.5, "ts": "%s"}', b'{"seq": true, "ts": "%s"}', b'{"seq": "7", "ts": "%s"}',
           b'{"seq": null, "ts": "%s"}', b'{"seq": 0, "ts": "%s"}', b'{"seq": -3, "ts": "%s"}',
           b'[1, "%s"]', b'"%s"', b"3", b"null", b"garbage %s"]
    lines = []
    seq = 0
    for i in range(120):
        if i % 9 == 4:
            line = odd[(i // 9) % len(odd)]
            lines.append((line % ts_at(i).encode() if b"%s" in line else line) + b"\n")
            if line.startswith(b"{"):
                seq += 1  # an object without an integer seq takes the next one; anything else takes none
            if i % 2:
                continue
        seq += 1
        lines.append(own(seq, ts_at(i)))
    return b"".join(lines)


@pytest.mark.parametrize("parse_chunk", [40, 300, 2000, _reader.PARSE_CHUNK])
def test_reads_number_odd_seqs_like_the_oracle_in_chunks_of_any_size(tmp_path: Path, parse_chunk: int) -> None:
    """Lines whose seq is not a positive integer, or that are not objects, make their chunk be read line by
    line: read, read(after) and since equal what the oracle finds in the files, whichever chunks hold them."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "s.jsonl").write_bytes(_odd_stream())
    log = open_log(tmp_path)
    expected = oracle(tmp_path, "s")
    assert sum(e["id"] is None for e in expected) >= 4  # objects whose seq is not an integer are there
    logging.getLogger("agentlog").setLevel(logging.ERROR)
    try:
        with mock.patch.object(_reader, "PARSE_CHUNK", parse_chunk):
            assert dicts(log.read("s")) == expected
            for after in (0, 1, 5, 37, 38, 90, 200):
                assert dicts(log.read("s", after=after)) == [e for e in expected if e["seq"] > after], after
            for cut in cut_points(log, "s"):
                want = [e for e in expected if e["ts"] is not None and (c := comparable_ts(e["ts"])) is not None
                        and c >= cut]
                assert dicts(log.since(cut, streams=["s"])) == want, cut
    finally:
        logging.getLogger("agentlog").setLevel(logging.NOTSET)


def test_since_over_single_appends_with_an_old_foreign_stamp_among_them(tmp_path: Path) -> None:
    """Events appended one at a time (a distinct ts each, many per chunk), with foreign lines stamped long
    before their neighbours or in other forms (an offset, no fraction): since equals the oracle's filter at
    every cut."""
    lines = []
    seq = 0
    for i in range(400):
        seq += 1
        lines.append(own(seq, ts_at(i, 1000 * (i % 7))))
        if i % 50 == 25:
            seq += 1
            lines.append(_foreign("old", ts=ts_at(i - 20)))  # among canonical stamps, earlier than most cuts
        if i % 50 == 30:
            seq += 1
            lines.append(_foreign("offset", ts=(BASE + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S+00:00")))
        if i % 50 == 35:
            seq += 1
            lines.append(_foreign("whole", timestamp=ts_at(i)[:19] + "Z"))
    write_segments(tmp_path, [b"".join(lines)])
    log = open_log(tmp_path)
    expected = oracle(tmp_path, "s")
    assert dicts(log.read("s")) == expected
    for cut in cut_points(log, "s")[::3]:
        want = [e for e in expected if e["ts"] is not None and (c := comparable_ts(e["ts"])) is not None
                and c >= cut]
        assert dicts(log.since(cut, streams=["s"])) == want, cut


STAMP_POOL = [ts_at(s, m) for s in (0, 1, 2) for m in (0, 1, 999999)] + [
    "2026-03-01T12:00:01+02:00",  # earlier than it looks as a string
    "2026-03-01T10:00:01Z", "2026-03-01T10:00:01.5Z", "2026-03-01 10:00:01.000000Z", "not a time", "",
    ts_at(1).replace("2", "\u0662"),  # digits \\d takes, and a string compare puts after every ASCII one
    ts_at(1)[:-1], "Z" + ts_at(1),  # 26 and 28 characters: joined in this order, two stamps' worth of shape
    None,
]


@settings(max_examples=300, deadline=None)
@given(stamps=st.lists(st.sampled_from(STAMP_POOL), unique=True, max_size=len(STAMP_POOL)),
       since=st.sampled_from([ts_at(0), ts_at(1), ts_at(1, 1), ts_at(2, 999999)]))
def test_keep_all_agrees_with_each_stamp_alone(stamps: list[str | None], since: str) -> None:
    """AtOrAfter.keep_all, which decides many stamps at once, says yes exactly when every stamp alone is at
    or after since (as comparable_ts has it), whatever forms and lengths the stamps come in and whatever
    their order; so do the record and ts tests."""
    def alone(ts: str | None) -> bool:
        return ts is not None and (c := comparable_ts(ts)) is not None and c >= since

    assert AtOrAfter(since).keep_all(stamps) == all(map(alone, stamps))
    many = [ts_at(3, m) for m in range(20)]  # enough canonical stamps for the joined check to run
    assert AtOrAfter(since).keep_all(many + stamps) == all(map(alone, stamps))
    at = AtOrAfter(since)
    assert [at.ts_ok(ts) for ts in stamps] == [alone(ts) for ts in stamps]
    assert [at({"ts": ts}) for ts in stamps] == [alone(ts) for ts in stamps]


def test_keep_all_refuses_stamps_that_only_line_up_when_joined() -> None:
    """A 26- and a 28-character stamp, joined in this order, spell two canonical stamps: keep_all must not
    take them for canonical (the second is no time at all)."""
    since = ts_at(0)
    odd = [ts_at(1)[:-1], "Z" + ts_at(1)]
    assert "".join(odd) == ts_at(1) * 2
    assert AtOrAfter(since).keep_all([ts_at(2, m) for m in range(10)] + odd) is False


# --- by_type ------------------------------------------------------------------------------------------

# How other writers may spell a type: every one of these parses to the same string as orjson's spelling.
SPELLINGS: dict[str, list[str]] = {
    "a": ['"a"', '"\\u0061"'],
    "x/y": ['"x/y"', '"x\\/y"', '"x\\u002fy"'],
    'q"uote': ['"q\\"uote"', '"q\\u0022uote"'],
    "back\\slash": ['"back\\\\slash"', '"back\\u005Cslash"'],
    "\u00fcber": ['"\u00fcber"', '"\\u00fcber"', '"\\u00FCber"'],
    "\U0001f600": ['"\U0001f600"', '"\\ud83d\\ude00"'],
    "tab\there": ['"tab\\there"', '"tab\\u0009here"'],
}


def _spelled_stream(tmp_path: Path) -> EventLog:
    """Own events of every type in SPELLINGS, rotated, with foreign lines spelling the types every way,
    with spaces, with an escaped key, seq-less (some first in a segment), and malformed lines."""
    log = open_log(tmp_path, segment_bytes=900, durability="write")
    path = tmp_path / "logs" / "s.jsonl"
    for round_ in range(6):
        for etype, spellings in SPELLINGS.items():
            if etype.isprintable():  # agentlog refuses control characters in a type; other writers may not
                log.append("s", etype, data={"round": round_})
            with path.open("ab") as f:
                for spelled in spellings:
                    f.write(b'{"type": ' + spelled.encode() + b', "timestamp": "2026-03-01T10:00:00Z"}\n')
                f.write(b'{"\\u0074ype":' + spellings[0].encode() + b"}\n")
                f.write(b'{"type":"other","note":' + spellings[0].encode() + b"}\n")  # the value elsewhere
                f.write(b"not json " + spellings[0].encode() + b"\n")
    return log


def test_by_type_equals_a_full_scan_for_every_spelling_of_a_type(tmp_path: Path) -> None:
    """Types written with spaces, unicode escapes (either case), escaped slashes, quotes and backslashes, and
    an escaped key: by_type finds every one, with the seqs a full read gives, and nothing else."""
    log = _spelled_stream(tmp_path)
    assert log.stat("s").segments > 5
    for etype in SPELLINGS:
        got = dicts(log.by_type(etype, streams=["s"]))
        assert got == reference(log, "s", types=[etype]), etype
        assert len(got) == 6 * (etype.isprintable() + len(SPELLINGS[etype]) + 1)
    pair = ["a", "\U0001f600"]
    assert dicts(log.by_type(pair, streams=["s"])) == reference(log, "s", types=pair)
    assert list(log.by_type([], streams=["s"])) == []


def test_the_empty_type_matches_lines_without_a_type(tmp_path: Path) -> None:
    """by_type("") returns the lines that have no string type, as a full scan does (no byte test applies)."""
    log = open_log(tmp_path)
    log.append("s", "t")
    with (tmp_path / "logs" / "s.jsonl").open("ab") as f:
        f.write(b'{"note": "no type"}\n{"type": 5}\n')
    log.append("s", "u")
    got = list(log.by_type(["", "u"], streams=["s"]))
    assert [(e.seq, e.type) for e in got] == [(2, ""), (3, ""), (4, "u")]
    assert dicts(got) == reference(log, "s", types=["", "u"])


def test_by_type_numbers_seqless_lines_like_a_full_read(tmp_path: Path) -> None:
    """Seq-less matches get a full read's seq: before any numbered line, after skipped seq-less and malformed
    lines, and first in a segment whose predecessor ends with seq-less lines."""
    seg1 = _foreign("want") + _foreign("skip") + b"junk\n" + _foreign("want") + own(5, ts_at(1)) \
        + _foreign("skip") + _foreign("skip")
    seg2 = _foreign("want") + b"junk\n" + _foreign("skip") + _foreign("want") + own(12, ts_at(2), type="want") \
        + _foreign("skip")
    seg3 = _foreign("skip") * 3 + _foreign("want")
    write_segments(tmp_path, [seg1, seg2, seg3])
    log = open_log(tmp_path)
    got = list(log.by_type("want", streams=["s"]))
    assert [e.seq for e in got] == [1, 3, 8, 10, 12, 17]
    assert dicts(got) == reference(log, "s", types=["want"])


def test_by_type_never_parses_lines_without_the_type(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Malformed lines that do not contain the wanted type's bytes are never reported by by_type; one that
    does is, with its line number."""
    log = open_log(tmp_path)
    path = tmp_path / "logs" / "s.jsonl"
    for i in range(30):
        log.append("s", "want" if i % 10 == 0 else "other")
    with path.open("ab") as f:
        f.write(b"xxxxxxxx broken\n")
        f.write(b'{"type":"want", broken\n')  # line 32
    log.append("s", "want")
    with caplog.at_level(logging.WARNING, logger="agentlog"):
        assert [e.seq for e in log.by_type("want", streams=["s"])] == [1, 11, 21, 31]
    assert "broken" not in caplog.text and f"{path}:32: skipping malformed line" in caplog.text
    assert caplog.text.count("skipping malformed line") == 1


def test_by_type_finds_a_type_in_a_line_longer_than_a_chunk(tmp_path: Path) -> None:
    """A 2.5 MiB event of the wanted type, between smaller ones, is found whole."""
    log = open_log(tmp_path)
    log.append("s", "other", data={"big": "o" * (5 << 19)})
    log.append("s", "want", data={"big": "w" * (5 << 19)})
    log.append("s", "want")
    got = list(log.by_type("want", streams=["s"]))
    assert [e.seq for e in got] == [2, 3] and len(got[0].data["big"]) == 5 << 19


@pytest.mark.parametrize("where", ["file", "memory"])
def test_query_combines_the_pushed_filters_with_the_others(tmp_path: Path, where: str) -> None:
    """query with types, since, until, actor and visibility together equals filtering a full read, on the
    file backend (which applies since and types itself) and the memory backend."""
    log = open_log(tmp_path if where == "file" else "memory:", segment_bytes=700)
    events = []
    for i in range(60):
        events.append(log.append("s", ("q", "a", "n")[i % 3], actor=f"x{i % 2}",
                                 visibility=("public", "private")[i % 5 % 2], data={"i": i}))
    since, until = events[12].ts, events[47].ts
    assert since is not None and until is not None
    got = dicts(log.query(streams=["s"], types=["q", "a"], since=since, until=until, actor="x1",
                          visibility="public"))
    want = [e.to_dict() for e in log.read("s") if e.type in ("q", "a") and since <= (e.ts or "") < until
            and e.actor == "x1" and e.visibility == "public"]
    assert got == want and len(want) > 3
    assert dicts(log.since(since, streams=["s"])) == reference(log, "s", since=since)
    assert dicts(log.by_type(["n"], streams=["s"])) == reference(log, "s", types=["n"])


# --- random streams -----------------------------------------------------------------------------------

TYPES = ["a", "b", "x/y", "\u00fcber"]
operations = st.one_of(
    st.tuples(st.just("batch"), st.lists(st.sampled_from(TYPES), min_size=1, max_size=12)),
    st.tuples(st.just("foreign"), st.sampled_from(TYPES), st.integers(0, 2),
              st.sampled_from(["timestamp", "ts", "timestamp-z", "none"]), st.integers(0, 3)),
    st.tuples(st.just("garbage"), st.sampled_from([b"junk", b'{"type":"a"', b'{"a":\x00}', b"", b"[1]"])),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(operations, min_size=1, max_size=30), segment_bytes=st.sampled_from([400, 1500, 10**6]),
       probe_span=st.sampled_from([1, 64, PROBE_SPAN]), parse_chunk=st.sampled_from([64, 700, _reader.PARSE_CHUNK]),
       data=st.data())
def test_fast_paths_equal_full_scans_on_random_streams(ops: list[tuple[Any, ...]], segment_bytes: int,
                                                        probe_span: int, parse_chunk: int,
                                                        data: st.DataObject) -> None:
    """On random streams of batches, rotations, foreign lines (spelled any way, stamped no later than the
    next event) and garbage, since, by_type and both together equal the full-scan filter, whether the
    bisect narrows down to a line or stops early (small streams are bisected with a tiny probe span), and
    whether a read takes many lines per chunk or a few (some chunks whole, some line by line)."""
    logging.getLogger("agentlog").setLevel(logging.ERROR)  # the garbage lines' warnings are not the point
    try:
        with tempfile.TemporaryDirectory() as tmp, mock.patch.object(_query, "PROBE_SPAN", probe_span), \
                mock.patch.object(_reader, "PARSE_CHUNK", parse_chunk):
            log = open_log(tmp, segment_bytes=segment_bytes, durability="write")
            log.append("s", "seed")
            last_ts = "2026-03-01T10:00:00.000000Z"
            for op in ops:
                if op[0] == "batch":
                    evs = log.append_many("s", [{"type": t} for t in op[1]])
                    last_ts = evs[-1].ts or last_ts
                    continue
                if op[0] == "foreign":
                    _, etype, spelling, clock, behind = op
                    spellings = SPELLINGS.get(etype, [json.dumps(etype)])
                    spelled = spellings[min(spelling, len(spellings) - 1)]
                    stamp = _earlier(last_ts, behind)
                    time_field = {"timestamp": f', "timestamp": "{stamp}"', "ts": f', "ts": "{stamp}"',
                                  "timestamp-z": f', "timestamp": "{stamp[:19]}Z"', "none": ""}[clock]
                    line = f'{{"type": {spelled}{time_field}}}\n'.encode()
                else:
                    line = op[1] + b"\n"
                with open(os.path.join(tmp, "logs", "s.jsonl"), "ab") as f:
                    f.write(line)
            assert dicts(log.read("s")) == oracle(Path(tmp), "s")
            cuts = cut_points(log, "s")
            for cut in data.draw(st.lists(st.sampled_from(cuts), min_size=1, max_size=4)):
                types = data.draw(st.none() | st.lists(st.sampled_from([*TYPES, "seed", ""]), max_size=3))
                got = dicts(log.query(streams=["s"], since=cut, types=types))
                assert got == reference(log, "s", since=cut, types=types)
                if types is not None:
                    assert dicts(log.by_type(types, streams=["s"])) == reference(log, "s", types=types)
                assert dicts(log.since(cut, streams=["s"])) == reference(log, "s", since=cut)
    finally:
        logging.getLogger("agentlog").setLevel(logging.NOTSET)


def _earlier(ts: str, seconds: int) -> str:
    """``ts`` minus some whole seconds (a shell writer stamps before it waits for the lock)."""
    from datetime import datetime, timedelta

    moved = datetime.fromisoformat(ts.replace("Z", "+00:00")) - timedelta(seconds=seconds)
    return moved.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- tail ---------------------------------------------------------------------------------------------


def test_tail_right_after_a_rotation_reads_into_the_sealed_segment(tmp_path: Path) -> None:
    """When the active file holds fewer events than asked for, tail goes on into sealed segments and equals
    the end of a full read."""
    log = open_log(tmp_path, segment_bytes=1000)
    active = tmp_path / "logs" / "s.jsonl"
    i = 0
    while i < 40 or active.read_bytes().count(b"\n") != 1:  # stop just after a rotation
        log.append("s", "t", data={"i": i, "pad": "p" * 40})
        i += 1
    everything = list(log.read("s"))
    for n in (1, 2, 5, 17, 40, 100):
        assert dicts(log.tail("s", n)) == dicts(everything[-n:])


def test_tail_of_a_daily_stream_with_several_dates(tmp_path: Path) -> None:
    """A daily stream (one file per date) is tailed across its dates, not through a size-layout shortcut."""
    day_dir = tmp_path / "logs" / "s"
    day_dir.mkdir(parents=True)
    (day_dir / "2026-01-01.jsonl").write_bytes(b"".join(own(i, "2026-01-01T00:00:00.000000Z") for i in (1, 2)))
    (day_dir / "2026-01-02.jsonl").write_bytes(own(3, "2026-01-02T00:00:00.000000Z"))
    (tmp_path / "logs" / "s.jsonl").write_bytes(own(1, "2020-01-01T00:00:00.000000Z", type="decoy"))
    log = open_log(tmp_path)
    assert [(e.seq, e.type) for e in log.tail("s", 2)] == [(2, "t"), (3, "t")]


def test_tail_numbers_seqless_lines_and_reports_a_malformed_line_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Shell-writer lines at the end of the stream get a full read's seqs, and a malformed line in the
    active file is reported once even when tail must go on into an older segment."""
    write_segments(tmp_path, [own(1, ts_at(1)) + own(2, ts_at(2)),
                              _foreign("x") + b"junk\n" + _foreign("y")])
    log = open_log(tmp_path)
    with caplog.at_level(logging.WARNING, logger="agentlog"):
        got = log.tail("s", 3)
    assert caplog.text.count("skipping malformed line") == 1
    assert [(e.seq, e.type) for e in got] == [(2, "t"), (3, "x"), (4, "y")]
    assert dicts(got) == dicts(list(log.read("s"))[-3:])
