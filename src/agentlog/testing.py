"""Public test helpers: the backend contract suite.

Every backend must behave the same through :class:`agentlog.EventLog`. To check a backend, subclass
:class:`BackendContract` in a test module and provide a ``log_factory`` fixture::

    class TestMyBackend(BackendContract):
        @pytest.fixture
        def log_factory(self, tmp_path):
            return lambda **options: open_log(f"mybackend://{tmp_path}", **options)

``log_factory(**options)`` receives ``open_log`` keyword options (``max_event_bytes``, ...). Requires pytest
and hypothesis (``pip install agentlog[test]``).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .errors import Conflict, InvalidEvent, InvalidStreamName
from .event import MAX_DEPTH, Event, make_draft
from .log import EventLog

__all__ = ["BackendContract", "LogFactory", "json_values"]

UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
TS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")

#: Strict JSON values: what an event's data may hold (finite floats, valid Unicode, 64-bit integers).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)

LogFactory = Callable[..., EventLog]


class BackendContract:
    """The behaviour every backend owes its users; subclasses supply ``log_factory``."""

    @pytest.fixture
    def log_factory(self) -> LogFactory:
        raise NotImplementedError("a backend's test class provides the log_factory fixture")

    @pytest.fixture
    def log(self, log_factory: LogFactory) -> Iterator[EventLog]:
        log = log_factory()
        yield log
        log.close()

    # --- append ---------------------------------------------------------------------------------------

    def test_append_assigns_envelope(self, log: EventLog) -> None:
        """append returns the event with seq 1, a UUIDv7 id, a canonical UTC ts and the given fields."""
        ev = log.append("conv-1", "question", data={"content": "hi"}, actor="agent-a", interaction=3,
                        visibility="public", level="info")
        assert ev.seq == 1 and ev.stream == "conv-1" and ev.type == "question" and ev.actor == "agent-a"
        assert ev.id is not None and UUID7.fullmatch(ev.id)
        assert ev.ts is not None and TS.fullmatch(ev.ts)
        assert ev.to_dict() == {"seq": 1, "id": ev.id, "ts": ev.ts, "stream": "conv-1", "type": "question",
                                "actor": "agent-a", "level": "info", "visibility": "public", "interaction": 3,
                                "data": {"content": "hi"}}

    def test_seq_is_gapless_and_ts_never_decreases(self, log: EventLog) -> None:
        """Consecutive appends get seq 1, 2, 3 ... and non-decreasing timestamps."""
        events = [log.append("s", "t", data={"i": i}) for i in range(50)]
        assert [e.seq for e in events] == list(range(1, 51))
        stamps = [e.ts for e in log.read("s")]
        assert stamps == sorted(stamps)  # type: ignore[type-var]

    def test_streams_are_numbered_independently(self, log: EventLog) -> None:
        """Each stream has its own seq starting at 1."""
        log.append("a", "t")
        log.append("a", "t")
        assert log.append("b", "t").seq == 1
        assert log.append("a", "t").seq == 3

    def test_append_many_is_one_gapless_batch(self, log: EventLog) -> None:
        """append_many stores every item, in order, with consecutive seqs and one timestamp."""
        log.append("s", "first")
        evs = log.append_many("s", [{"type": "a", "data": {"n": 1}}, {"type": "b", "actor": "x"},
                                    {"type": "c", "interaction": 2, "custom": [1, 2]}])
        assert [e.seq for e in evs] == [2, 3, 4]
        assert len({e.ts for e in evs}) == 1
        assert [(e.type, e.actor, e.interaction) for e in log.read("s", after=1)] == [
            ("a", None, None), ("b", "x", None), ("c", None, 2)]
        assert log.tail("s", 1)[0].extra == {"custom": [1, 2]}

    def test_append_if_is_a_compare_and_set_on_the_last_seq(self, log: EventLog) -> None:
        """``append_if`` stores the batch only while the stream's last seq is the one the caller saw, and a
        refused call stores nothing; threads racing on one expected seq leave exactly one winner."""
        assert [e.seq for e in log.append_if("s", [{"type": "a"}, {"type": "b"}], last_seq=0)] == [1, 2]
        with pytest.raises(Conflict):
            log.append_if("s", [{"type": "late"}], last_seq=1)
        with pytest.raises(Conflict):
            log.append_if("fresh", [{"type": "late"}], last_seq=3)
        assert [e.type for e in log.read("s")] == ["a", "b"] and list(log.read("fresh")) == []
        with pytest.raises(TypeError):
            log.append_if("s", [{"type": "x"}], last_seq=-1)
        with pytest.raises(InvalidEvent):
            log.append_if("s", [{"type": "ok"}, {"type": "bad", "data": {"x": math.nan}}], last_seq=2)

        winners: list[int] = []
        barrier = threading.Barrier(8)

        def race(n: int) -> None:
            barrier.wait()
            try:
                log.append_if("s", [{"type": "race", "data": {"n": n}}], last_seq=2)
                winners.append(n)
            except Conflict:
                pass

        threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(winners) == 1
        assert [e.data for e in log.read("s", after=2)] == [{"n": winners[0]}]

    def test_append_records_is_append(self, log: EventLog) -> None:
        """A backend's optional ``append_records`` (:class:`~agentlog.backends.RecordAppender`) stores
        exactly what ``append`` would, and returns the first seq and the batch's ts."""
        append_records = getattr(log.backend, "append_records", None)
        if append_records is None:
            pytest.skip("this backend has no append_records")
        log.append("s", "first")
        drafts = [make_draft("s", "t", data={"n": n}, actor="a", fields={"tag": n}) for n in range(3)]
        first, ts = append_records("s", [d.id.encode() for d in drafts], [d.body[1:] for d in drafts])
        assert first == 2 and TS.fullmatch(ts)
        stored = list(log.read("s", after=1))
        assert [e.to_dict() for e in stored] == [d.event(first + i, ts).to_dict() for i, d in enumerate(drafts)]
        assert log.append("s", "next").seq == 5 and log.verify("s").ok
        with pytest.raises(ValueError):
            append_records("s", [], [])
        with pytest.raises(ValueError):
            append_records("s", [drafts[0].id.encode()], [])
        assert log.stat("s").events == 5  # nothing of a refused call stayed

    def test_store_records_is_append_drafts(self, log: EventLog) -> None:
        """``EventLog.store_records`` (what ``EventWriter`` commits) stores the batch like ``append_drafts``
        and says where it landed: ``(first seq, ts)``, or the events themselves."""
        drafts = [make_draft("s", "t", data={"n": n}) for n in range(4)]
        stored = log.store_records("s", [d.id.encode() for d in drafts], [d.body[1:] for d in drafts])
        events = list(log.read("s"))
        if isinstance(stored, tuple):
            assert stored == (1, events[0].ts) and len({e.ts for e in events}) == 1
        else:
            assert stored == events
        assert [(e.seq, e.id, e.data) for e in events] == [(n + 1, d.id, {"n": n}) for n, d in enumerate(drafts)]
        assert log.store_records("s", [], []) == []

    def test_append_many_refuses_whole_batch_on_one_bad_item(self, log: EventLog) -> None:
        """One invalid item in a batch refuses all of it and writes nothing."""
        with pytest.raises(InvalidEvent, match="batch item 1"):
            log.append_many("s", [{"type": "ok"}, {"type": "bad", "data": {"x": math.nan}}])
        assert list(log.read("s")) == []
        assert log.append_many("s", []) == []

    def test_unknown_top_level_fields_are_preserved(self, log: EventLog) -> None:
        """Fields the envelope does not know survive a round trip at the top level."""
        log.append("s", "t", data={"k": 1}, trace_id="abc", tags=["x"])
        ev = next(log.read("s"))
        assert ev.extra == {"trace_id": "abc", "tags": ["x"]}
        assert ev.to_dict()["trace_id"] == "abc"

    @pytest.mark.parametrize("field", ["seq", "id", "ts", "stream"])
    def test_payload_cannot_overwrite_envelope(self, log: EventLog, field: str) -> None:
        """Assigned envelope fields cannot be given by the caller, one at a time or in a batch."""
        if field != "stream":  # Python itself refuses a second `stream` keyword
            with pytest.raises(InvalidEvent, match=field):
                log.append("s", "t", **{field: 99})  # type: ignore[arg-type]
        with pytest.raises(InvalidEvent, match=field):
            log.append_many("s", [{"type": "t", field: 99}])
        assert log.tail("s") == []

    def test_data_keys_named_like_envelope_stay_in_data(self, log: EventLog) -> None:
        """A data object may hold keys called seq or ts; they never reach the envelope."""
        ev = log.append("s", "t", data={"seq": 1000, "ts": "yesterday", "stream": "other"})
        back = log.tail("s", 1)[0]
        assert (back.seq, back.stream, back.ts) == (1, "s", ev.ts)
        assert back.data == {"seq": 1000, "ts": "yesterday", "stream": "other"}

    @pytest.mark.parametrize("bad", [
        {"x": math.nan}, {"x": math.inf}, {"x": -math.inf}, {"x": "\ud800"}, {"x": b"bytes"}, {"x": {1, 2}},
        {"x": object()}, {1: "int key"}, {"x": 2**64},
    ], ids=["nan", "inf", "-inf", "lone-surrogate", "bytes", "set", "object", "int-key", "huge-int"])
    def test_values_json_cannot_represent_are_refused(self, log: EventLog, bad: dict[str, Any]) -> None:
        """NaN, Infinity, lone surrogates, bytes, sets and arbitrary objects raise InvalidEvent."""
        with pytest.raises(InvalidEvent):
            log.append("s", "t", data=bad)
        with pytest.raises(ValueError):  # InvalidEvent is a ValueError for callers who do not know us
            log.append("s", "t", extra_field=bad)
        assert list(log.read("s")) == []

    def test_nesting_limit(self, log: EventLog) -> None:
        """Data nested up to MAX_DEPTH levels is accepted; one level deeper is refused."""
        def nest(levels: int) -> dict[str, Any]:
            value: dict[str, Any] = {}
            for _ in range(levels - 1):
                value = {"k": value}
            return value
        log.append("s", "ok", data=nest(MAX_DEPTH))
        with pytest.raises(InvalidEvent, match="deeper"):
            log.append("s", "deep", data=nest(MAX_DEPTH + 1))
        assert [e.type for e in log.read("s")] == ["ok"]

    def test_events_over_max_event_bytes_are_refused(self, log_factory: LogFactory) -> None:
        """An event larger than max_event_bytes raises InvalidEvent and writes nothing."""
        log = log_factory(max_event_bytes=4096)
        try:
            log.append("s", "t", data={"x": "a" * 3000})
            with pytest.raises(InvalidEvent, match="max_event_bytes"):
                log.append("s", "t", data={"x": "a" * 5000})
            assert log.stat("s").events == 1
        finally:
            log.close()

    @pytest.mark.parametrize("kwargs", [
        {"type": ""}, {"type": 5}, {"type": None}, {"data": [1]}, {"data": "text"}, {"interaction": -1},
        {"interaction": True}, {"interaction": "3"}, {"actor": 7}, {"visibility": ["x"]}, {"type": "a\nb"},
    ])
    def test_bad_fields_are_refused(self, log: EventLog, kwargs: dict[str, Any]) -> None:
        """Malformed envelope fields raise InvalidEvent naming the problem."""
        args = {"type": "t", **kwargs}
        etype = args.pop("type")
        with pytest.raises(InvalidEvent):
            log.append("s", etype, **args)
        assert log.tail("s") == []

    @pytest.mark.parametrize("name", ["", "..", "../x", "/abs", "a\\b", "a\0b", "-rf", "a//b", "a/", "x" * 201,
                                      "x/2026-01-01", ".hidden", "a/../b", 7])
    def test_bad_stream_names_are_refused(self, log: EventLog, name: Any) -> None:
        """Names that are empty, escape the root, or are malformed raise InvalidStreamName everywhere."""
        with pytest.raises(InvalidStreamName):
            log.append(name, "t")
        with pytest.raises(InvalidStreamName):
            log.tail(name)
        with pytest.raises(ValueError):
            list(log.read(name))
        assert log.streams() == []

    # differing_executors: every backend's subclass runs this same method; each run is self-contained.
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                         HealthCheck.differing_executors])
    @given(data=st.dictionaries(st.text(max_size=10), json_values, max_size=5))
    def test_round_trip_any_json_object(self, log: EventLog, data: dict[str, Any]) -> None:
        """Whatever strict-JSON object is appended is read back equal."""
        ev = log.append("prop", "t", data=data)
        back = log.tail("prop", 1)[0]
        assert back.seq == ev.seq and back.data == data and back == ev

    # --- queries --------------------------------------------------------------------------------------

    def test_read_after(self, log: EventLog) -> None:
        """read(after=N) yields exactly the events with seq > N, in order."""
        for i in range(10):
            log.append("s", "t", data={"i": i})
        assert [e.seq for e in log.read("s", after=7)] == [8, 9, 10]
        assert list(log.read("s", after=10)) == []
        assert list(log.read("missing")) == []

    def test_tail(self, log: EventLog) -> None:
        """tail gives the newest `limit` events oldest first; more than exist gives all; 0 gives none."""
        for i in range(30):
            log.append("s", "t", data={"i": i})
        assert [e.data["i"] for e in log.tail("s", 3)] == [27, 28, 29]
        assert len(log.tail("s")) == 20
        assert [e.seq for e in log.tail("s", 100)] == list(range(1, 31))
        assert log.tail("s", 0) == []
        assert log.tail("missing", 5) == []

    def test_since_merges_streams_in_time_order(self, log: EventLog) -> None:
        """since(ts) yields events at or after ts from every stream, in time order."""
        log.append("a", "old")
        time.sleep(0.002)
        cut = log.append("b", "mid").ts
        assert cut is not None
        time.sleep(0.002)
        log.append("a", "new")
        got = [(e.stream, e.type) for e in log.since(cut)]
        assert got == [("b", "mid"), ("a", "new")]
        assert [e.type for e in log.since(cut, streams=["a"])] == ["new"]
        assert [e.type for e in log.since("2000-01-01T00:00:00+02:00")] == ["old", "mid", "new"]

    def test_since_refuses_a_bad_timestamp(self, log: EventLog) -> None:
        """A timestamp that is not RFC 3339 raises ValueError."""
        with pytest.raises(ValueError):
            list(log.since("yesterday"))

    def test_by_type_and_visibility(self, log: EventLog) -> None:
        """by_type filters by one or several types and optionally by visibility, across streams."""
        log.append("a", "question", visibility="public")
        log.append("b", "question", visibility="private")
        log.append("a", "answer", visibility="public")
        log.append("b", "heartbeat")
        assert sorted(e.type for e in log.by_type(["question", "answer"])) == ["answer", "question", "question"]
        assert [(e.stream, e.type) for e in log.by_type("question", visibility="private")] == [("b", "question")]
        assert [e.stream for e in log.by_type("question", streams=["a"])] == ["a"]

    def test_query_combines_filters(self, log: EventLog) -> None:
        """query applies actor, type and a half-open time range together."""
        first = log.append("s", "t", actor="x")
        time.sleep(0.002)
        second = log.append("s", "t", actor="y")
        time.sleep(0.002)
        log.append("s", "u", actor="x")
        assert [e.seq for e in log.query(actor="x")] == [1, 3]
        assert [e.seq for e in log.query(types="t", since=first.ts, until=second.ts)] == [1]

    def test_streams_and_stat(self, log: EventLog) -> None:
        """streams() lists every stream, nested names included; stat counts events and bytes."""
        assert log.streams() == []
        log.append("conv-7", "t")
        log.append("ledger/andy", "t")
        log.append("ledger/andy", "t")
        assert log.streams() == ["conv-7", "ledger/andy"]
        info = log.stat("ledger/andy")
        assert (info.name, info.events, info.segments) == ("ledger/andy", 2, 1)
        assert info.bytes > 0 and info.last_ts is not None
        assert log.stat("nothing").events == 0

    def test_follow_sees_new_events_live(self, log: EventLog) -> None:
        """follow yields existing events after `after`, then events appended later, then stops on timeout."""
        log.append("s", "t", data={"i": 0})
        log.append("s", "t", data={"i": 1})
        seen: list[int] = []

        def consume() -> None:
            for ev in log.follow("s", after=1, timeout=1.0, poll=0.01):
                seen.append(ev.seq)

        thread = threading.Thread(target=consume)
        thread.start()
        for i in range(2, 6):
            time.sleep(0.02)
            log.append("s", "t", data={"i": i})
        thread.join(10)
        assert not thread.is_alive()
        assert seen == [2, 3, 4, 5, 6]

    def test_follow_waits_for_a_stream_that_does_not_exist_yet(self, log: EventLog) -> None:
        """follow on a missing stream waits for its first event rather than failing."""
        seen: list[Event] = []
        thread = threading.Thread(target=lambda: seen.extend(log.follow("late", timeout=1.0, poll=0.01)))
        thread.start()
        time.sleep(0.1)
        log.append("late", "first")
        thread.join(10)
        assert [e.type for e in seen] == ["first"]

    def test_verify_counts_a_healthy_log(self, log: EventLog) -> None:
        """verify on an intact log is ok and counts every event per stream."""
        log.append("a", "t")
        log.append_many("b", [{"type": "t"}] * 3)
        report = log.verify()
        assert report.ok and report.problems == []
        assert report.counts == {"a": 1, "b": 3}
        assert log.verify("b").counts == {"b": 3}

    def test_returned_events_are_not_live_views(self, log: EventLog) -> None:
        """Mutating a dict after appending it does not change what is stored."""
        data = {"items": [1]}
        log.append("s", "t", data=data)
        data["items"].append(2)
        assert log.tail("s", 1)[0].data == {"items": [1]}

    def test_context_manager_closes(self, log_factory: LogFactory) -> None:
        """EventLog works as a context manager and its data outlives it where the backend persists."""
        with log_factory() as log:
            assert log.append("s", "t").seq == 1
