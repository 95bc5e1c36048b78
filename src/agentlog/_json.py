"""JSON for agentlog: orjson, loaded on first use, or the standard library for one-shot processes.

orjson is fast (every append serialises, every read parses) but importing it costs about 18 ms: it loads
dataclasses, inspect, uuid and more. ``agentlog append`` runs once per event in agents' shell loops and
serialises one event, so it switches to :mod:`json` (2 ms to import) with :func:`use_stdlib` before anything
is serialised. Both are held to the same rules: compact output, UTF-8, no NaN or Infinity, no lone
surrogates, no integer outside 64 bits (``event._check_json`` refuses those before either is called).

Callers use ``_json.dumps`` / ``_json.loads`` as module attributes, never ``from _json import ...``: the
first call rebinds them to orjson's functions, so later calls cost no more than calling orjson directly.
"""

from __future__ import annotations

import json as _stdlib
from collections.abc import Callable
from typing import Any

__all__ = ["DecodeError", "EncodeError", "dumps", "loads", "use_orjson", "use_stdlib"]

#: orjson's decode error subclasses this one, so one ``except`` catches both implementations' errors.
DecodeError = _stdlib.JSONDecodeError
#: What either implementation raises for a value it cannot serialise (orjson.JSONEncodeError is a TypeError).
EncodeError = (TypeError, ValueError, UnicodeEncodeError)


def _orjson_dumps(value: Any) -> bytes:
    _bind_orjson()
    return dumps(value)


def _orjson_loads(data: bytes | bytearray | memoryview | str) -> Any:
    _bind_orjson()
    return loads(data)


dumps: Callable[[Any], bytes] = _orjson_dumps
loads: Callable[[bytes | bytearray | memoryview | str], Any] = _orjson_loads


def _bind_orjson() -> None:
    """Serialise and parse with orjson (the default) from now on."""
    global dumps, loads
    import orjson

    dumps = orjson.dumps
    loads = orjson.loads


use_orjson = _bind_orjson


def use_stdlib() -> None:
    """Serialise and parse with :mod:`json` from now on in this process (see the module docstring)."""
    global dumps, loads
    dumps = _stdlib_dumps
    loads = _stdlib_loads


_ENCODER = _stdlib.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _stdlib_dumps(value: Any) -> bytes:
    # strict UTF-8: a lone surrogate raises UnicodeEncodeError, as orjson refuses it
    return _ENCODER.encode(value).encode("utf-8")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = _stdlib.JSONDecoder(parse_constant=_refuse_constant)


def _stdlib_loads(data: bytes | bytearray | memoryview | str) -> Any:
    try:
        text = data if isinstance(data, str) else bytes(data).decode("utf-8")
        return _DECODER.decode(text)
    except DecodeError:
        raise
    except ValueError as exc:  # invalid UTF-8, NaN or Infinity: one error type for callers, as with orjson
        raise DecodeError(str(exc), "", 0) from None
