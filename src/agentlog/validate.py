"""Schema validation of files (``agentlog validate``): event and ledger lines, and ``status.json`` files.

Uses ``jsonschema`` (imported here only) with the schemas of :mod:`agentlog.schemas`, and a strict check of
``date-time``: RFC 3339 with an offset, which jsonschema leaves unchecked unless told how.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from . import _json
from .report import Problem
from .schemas import SCHEMAS

__all__ = ["is_rfc3339", "validate_files", "validate_record"]

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})")


def is_rfc3339(value: object) -> bool:
    """An RFC 3339 timestamp with an offset (``Z`` or ``±hh:mm``) naming a real instant."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    except ValueError:
        return False
    return True


_VALIDATORS: dict[str, Any] = {}


def _validator(kind: str) -> Any:
    if kind not in _VALIDATORS:
        import jsonschema  # type: ignore[import-untyped]  # no stubs shipped; used through Any
        from referencing import Registry, Resource

        checker = jsonschema.FormatChecker(formats=())
        checker.checks("date-time")(is_rfc3339)
        registry: Registry[Any] = Registry().with_resources(
            (schema["$id"], Resource.from_contents(schema)) for schema in SCHEMAS.values())
        _VALIDATORS[kind] = jsonschema.Draft202012Validator(SCHEMAS[kind], format_checker=checker,
                                                            registry=registry)
    return _VALIDATORS[kind]


def validate_record(record: Any, kind: str) -> list[str]:
    """What is wrong with ``record`` against the schema ``kind`` (``event``, ``ledger``, ``status``)."""
    problems = []
    for error in sorted(_validator(kind).iter_errors(record), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in error.absolute_path)
        problems.append(f"{where}: {error.message}" if where else error.message)
    return problems


def validate_files(paths: Iterable[str | os.PathLike[str]], *, status: bool = False) -> Iterator[Problem]:
    """Every problem in ``paths``: JSONL files of events (lines of a ``ledger/`` stream are checked as ledger
    events), or with ``status`` true, ``status.json`` files."""
    for raw_path in paths:
        path = os.fspath(raw_path)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            yield Problem(path, 0, f"cannot read: {exc.strerror or exc}")
            continue
        if status:
            yield from _check_status(path, data)
            continue
        if data and not data.endswith(b"\n"):
            yield Problem(path, data.count(b"\n") + 1, "the last line has no newline (torn or still being written)")
        for line_no, line in enumerate(data.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                record = _json.loads(line)
            except _json.DecodeError as exc:
                yield Problem(path, line_no, f"not valid JSON: {exc}")
                continue
            kind = "ledger" if _is_ledger(record) else "event"
            for what in validate_record(record, kind):
                yield Problem(path, line_no, what)


def _check_status(path: str, data: bytes) -> Iterator[Problem]:
    try:
        record = _json.loads(data)
    except _json.DecodeError as exc:
        yield Problem(path, 0, f"not valid JSON: {exc}")
        return
    for what in validate_record(record, "status"):
        yield Problem(path, 0, what)


def _is_ledger(record: Any) -> bool:
    stream = record.get("stream") if isinstance(record, dict) else None
    return isinstance(stream, str) and stream.startswith("ledger/")
