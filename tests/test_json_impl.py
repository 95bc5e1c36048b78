"""The standard-library JSON path (``agentlog append`` uses it to start fast) accepts and refuses exactly what
orjson does, and writes lines that read back equal."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agentlog
from agentlog import InvalidEvent, _json
from agentlog.event import make_draft
from agentlog.testing import json_values


@pytest.fixture
def stdlib_json() -> Iterator[None]:
    _json.use_stdlib()
    try:
        yield
    finally:
        _json.use_orjson()


def outcome(data: Any) -> tuple[str, Any]:
    try:
        draft = make_draft("s", "t", data={"v": data})
    except InvalidEvent:
        return "refused", None
    return "ok", _json.loads(draft.body)


# Values at and beyond every edge either implementation has: 64-bit limits, NaN, lone surrogates, depth.
edge_values = st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, float("nan"),
                               float("inf"), "\ud800", "a\udfffb", "\x00\x1f\u2028", 1e16, -0.0, 5e-324,
                               [[[[[]]]]], b"bytes", {1, 2}])


@settings(max_examples=200, deadline=None)
@given(data=json_values | edge_values)
def test_both_implementations_agree_on_every_value(data: Any) -> None:
    _json.use_orjson()
    with_orjson = outcome(data)
    _json.use_stdlib()
    try:
        with_stdlib = outcome(data)
    finally:
        _json.use_orjson()
    assert with_orjson[0] == with_stdlib[0], data
    if with_orjson[0] == "ok":
        assert with_orjson[1] == with_stdlib[1]


def test_stdlib_loads_refuses_what_orjson_refuses(stdlib_json: None) -> None:
    for text in [b"NaN", b"[Infinity]", b'{"a": -Infinity}', b"\xff", b"{", b""]:
        with pytest.raises(_json.DecodeError):
            _json.loads(text)
    assert _json.loads(b'{"k":"\xc3\xa9"}') == {"k": "é"}


def test_the_cli_append_writes_lines_the_library_reads(tmp_path: Path) -> None:
    """A CLI append (stdlib JSON) and a library append (orjson) of the same event read back equal."""
    data = '{"f": 1e16, "neg": -0.0, "big": 18446744073709551615, "u": "é\\u2028\\u0000", "n": [null, true]}'
    subprocess.run([sys.executable, "-m", "agentlog", "--root", str(tmp_path), "append", "s", "t",
                    "--data", data], check=True, capture_output=True)
    log = agentlog.open_log(tmp_path)
    log.append("s", "t", data=_json.loads(data))
    cli_event, lib_event = log.read("s")
    assert cli_event.data == lib_event.data == _json.loads(data)
    assert log.verify().ok
    res = subprocess.run([sys.executable, "-m", "agentlog", "--root", str(tmp_path), "append", "s", "t",
                          "--data", '{"big": 18446744073709551616}'], capture_output=True, text=True)
    assert res.returncode == 2 and "64-bit" in res.stderr
