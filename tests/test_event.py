"""The envelope helpers: ids, timestamps and stream names."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from agentlog import InvalidStreamName, uuid7, validate_stream_name
from agentlog.event import format_ts, parse_ts


def test_uuid7_is_versioned_and_time_ordered() -> None:
    """uuid7 gives version-7, variant-10 UUIDs whose order follows creation time across milliseconds."""
    first = uuid7()
    time.sleep(0.002)
    second = uuid7()
    assert first[14] == "7" and first[19] in "89ab"
    assert first < second
    assert len({uuid7() for _ in range(10000)}) == 10000


def test_format_ts_is_canonical() -> None:
    """Timestamps are RFC 3339 UTC with exactly six fractional digits and Z."""
    assert format_ts(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456Z"
    assert format_ts(0) == "1970-01-01T00:00:00.000000Z"


@pytest.mark.parametrize(("given", "canonical"), [
    ("2026-11-22T10:00:00Z", "2026-11-22T10:00:00.000000Z"),
    ("2026-11-22T12:00:00.5+02:00", "2026-11-22T10:00:00.500000Z"),
    ("2026-11-22", "2026-11-22T00:00:00.000000Z"),
    (datetime(2026, 11, 22, 11, tzinfo=timezone(timedelta(hours=1))), "2026-11-22T10:00:00.000000Z"),
    (datetime(2026, 11, 22, 10, tzinfo=UTC), "2026-11-22T10:00:00.000000Z"),
])
def test_parse_ts_normalises_to_utc(given: object, canonical: str) -> None:
    """Any RFC 3339 instant (or datetime) becomes the canonical UTC form, so strings compare correctly."""
    assert parse_ts(given) == canonical  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["yesterday", "", "2026-13-01", 12])
def test_parse_ts_refuses_garbage(bad: object) -> None:
    """Non-timestamps raise ValueError."""
    with pytest.raises(ValueError):
        parse_ts(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["conv-7", "ledger/andy", "a.b_c-d", "A1", "x" * 200, "a/b/c/d"])
def test_valid_stream_names(name: str) -> None:
    """Names of alphanumeric-led segments joined by / are accepted unchanged."""
    assert validate_stream_name(name) == name


@pytest.mark.parametrize(("name", "why"), [
    ("..", "'..'"), ("/abs", "absolute"), ("a\\b", "backslash"), ("a\0b", "NUL"), ("-rf", "'-'"),
    ("a//b", "empty segment"), ("", "empty"), ("x" * 201, "200"), ("x/2026-01-01", "reserved"),
])
def test_invalid_stream_names_say_why(name: str, why: str) -> None:
    """Each kind of bad name raises InvalidStreamName whose message names the reason."""
    with pytest.raises(InvalidStreamName, match=why):
        validate_stream_name(name)
