"""Case c: batched / asynchronous writers, events/s, every one writing the same events to a file.

agentlog: ``EventWriter(log, mode=WriteMode.ASYNC)`` when the installed agentlog has it (group commit: one
lock, one write, one fsync per batch), timed from the first ``emit`` until ``flush()`` returns, i.e. until
every event is durable; otherwise ``log.append_many`` in batches of 1,000 (one fsync per batch), and the row
says so.

Peers, each given the same event (type, actor, visibility, interaction, data.content) and adding its own
envelope (timestamp, level, ...): stdlib ``logging.FileHandler`` with a JSON formatter, structlog with
orjson, loguru ``serialize=True``, concurrent-log-handler, and SQLite in WAL mode. Only agentlog and SQLite
with ``synchronous=FULL`` fsync; the logging peers stop at the page cache, and the note column says so.
Each peer is timed until its handler is closed (everything handed to the kernel).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sqlite3
from collections.abc import Callable
from typing import Any

import orjson
from common import STREAM, Clock, Row, event_dict, event_fields, file_bytes, log, scratch

import agentlog

BATCH = 1_000


def writer_api() -> tuple[Any, Any] | None:
    """``(EventWriter, WriteMode)`` if this agentlog has an ASYNC EventWriter, else ``None``."""
    try:
        from agentlog import EventWriter, WriteMode

        WriteMode.ASYNC  # noqa: B018 - the mode must exist, not just the class
    except (ImportError, AttributeError):
        return None
    return EventWriter, WriteMode


# --- agentlog ---------------------------------------------------------------------------------------------

def _ours_writer(base: str, n: int) -> tuple[float, float]:
    api = writer_api()
    assert api is not None
    event_writer, write_mode = api
    with scratch(base, "c-ours-") as root, agentlog.open_log(root) as lg:
        lg.append(STREAM, "question", **event_fields(0))
        w = event_writer(lg, mode=write_mode.ASYNC)
        try:
            with Clock() as c:
                for i in range(n):
                    w.emit(STREAM, "question", **event_fields(i))
                w.flush()  # every event emitted is durable when this returns
        finally:
            w.stop()
        info = lg.stat(STREAM)
        assert info.events == n + 1, (info.events, n + 1)
        return n / c.seconds, info.bytes / (n + 1)


def _ours_batches(base: str, n: int) -> tuple[float, float]:
    with scratch(base, "c-ours-") as root, agentlog.open_log(root) as lg:
        lg.append(STREAM, "question", **event_fields(0))
        with Clock() as c:
            for start in range(0, n, BATCH):
                lg.append_many(STREAM, [event_dict(i) for i in range(start, min(n, start + BATCH))])
        info = lg.stat(STREAM)
        assert info.events == n + 1
        return n / c.seconds, info.bytes / (n + 1)


# --- logging peers ----------------------------------------------------------------------------------------

class JsonFormatter(logging.Formatter):
    """One JSON object per record with the stdlib's json: the usual way to get JSON lines out of logging."""

    def format(self, record: logging.LogRecord) -> str:
        ts = dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat().replace("+00:00", "Z")
        return json.dumps({"ts": ts, "level": record.levelname, "logger": record.name,
                           "type": record.getMessage(), **record.__dict__["ev"]})


def _stdlib_logger(name: str, handler: logging.Handler) -> logging.Logger:
    handler.setFormatter(JsonFormatter())
    lg = logging.getLogger(name)
    lg.handlers[:] = [handler]
    lg.propagate = False
    lg.setLevel(logging.INFO)
    return lg


def _run_stdlib(n: int, handler: logging.Handler, name: str) -> float:
    lg = _stdlib_logger(name, handler)
    with Clock() as c:
        for i in range(n):
            lg.info("question", extra={"ev": event_fields(i)})
        handler.close()
    lg.handlers[:] = []
    return c.seconds


def _logging_filehandler(base: str, n: int) -> tuple[float, float]:
    with scratch(base, "c-logging-") as d:
        path = os.path.join(d, "events.jsonl")
        secs = _run_stdlib(n, logging.FileHandler(path, encoding="utf-8"), "bench.filehandler")
        return n / secs, file_bytes(path) / n


def _concurrent_log_handler(base: str, n: int) -> tuple[float, float]:
    from concurrent_log_handler import ConcurrentRotatingFileHandler

    with scratch(base, "c-clh-") as d:
        path = os.path.join(d, "events.jsonl")
        handler = ConcurrentRotatingFileHandler(path, "a", maxBytes=0, backupCount=0, encoding="utf-8")
        secs = _run_stdlib(n, handler, "bench.clh")
        return n / secs, file_bytes(path) / n


def _structlog(base: str, n: int) -> tuple[float, float]:
    import structlog

    with scratch(base, "c-structlog-") as d:
        path = os.path.join(d, "events.jsonl")
        f = open(path, "ab")  # noqa: SIM115 - closed inside the timing, on purpose
        lg = structlog.wrap_logger(
            structlog.BytesLogger(f),
            processors=[structlog.processors.add_log_level,
                        structlog.processors.TimeStamper(fmt="iso", utc=True),
                        structlog.processors.JSONRenderer(serializer=orjson.dumps)],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            cache_logger_on_first_use=True,
        )
        with Clock() as c:
            for i in range(n):
                lg.info("question", **event_fields(i))
            f.close()
        return n / c.seconds, file_bytes(path) / n


def _loguru(base: str, n: int) -> tuple[float, float]:
    from loguru import logger

    with scratch(base, "c-loguru-") as d:
        path = os.path.join(d, "events.jsonl")
        logger.remove()
        sink = logger.add(path, serialize=True, level="INFO")
        with Clock() as c:
            for i in range(n):
                logger.info("question", **event_fields(i))
            logger.remove(sink)
        return n / c.seconds, file_bytes(path) / n


# --- SQLite -----------------------------------------------------------------------------------------------

def _sqlite(base: str, n: int, per_txn: int) -> tuple[float, float]:
    with scratch(base, "c-sqlite-") as d:
        path = os.path.join(d, "events.db")
        con = sqlite3.connect(path, isolation_level=None)  # explicit BEGIN/COMMIT below
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        total = 0
        with Clock() as c:
            for start in range(0, n, per_txn):
                con.execute("BEGIN")
                for i in range(start, min(n, start + per_txn)):
                    ts = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
                    body = orjson.dumps({"ts": ts, "type": "question", **event_fields(i)}).decode()
                    total += len(body)
                    con.execute("INSERT INTO events (body) VALUES (?)", (body,))
                con.execute("COMMIT")
        (count,) = con.execute("SELECT count(*) FROM events").fetchone()
        con.close()
        assert count == n
        return n / c.seconds, total / n


# --- the case ---------------------------------------------------------------------------------------------

def case_c(base: str, sizes: dict[str, int], runs: int) -> tuple[list[Row], dict[str, Any]]:
    """``sizes`` maps each contender to its events per run (slow peers get fewer, so a run takes ~1 s)."""
    api = writer_api()
    if api is not None:
        ours_fn: Callable[[str, int], tuple[float, float]] = _ours_writer
        ours_label = "`EventWriter` ASYNC, `flush()` at end"
        ours_note = "durable: one fsync per group commit"
    else:
        ours_fn = _ours_batches
        ours_label = f"`log.append_many`, batches of {BATCH:,} (no `EventWriter` ASYNC in this agentlog)"
        ours_note = f"durable: one fsync per {BATCH:,}"
    peers: list[tuple[str, str, Callable[[str, int], tuple[float, float]], str]] = [
        ("logging", "stdlib `logging.FileHandler` + JSON formatter", _logging_filehandler,
         "not durable (page cache), flush per record"),
        ("structlog", "structlog + orjson (`BytesLogger`)", _structlog, "not durable (page cache)"),
        ("loguru", "loguru `serialize=True`", _loguru, "not durable (page cache)"),
        ("clh", "concurrent-log-handler", _concurrent_log_handler,
         "not durable (page cache); lock file per record"),
        ("sqlite1", "SQLite WAL, synchronous=FULL, 1 event/txn", lambda b, n: _sqlite(b, n, 1),
         "durable: fsync per commit"),
        ("sqlite1000", f"SQLite WAL, synchronous=FULL, {BATCH:,} events/txn", lambda b, n: _sqlite(b, n, BATCH),
         "durable: fsync per commit"),
    ]
    n_ours = sizes["ours"]
    log(f"c: agentlog {ours_label}, {n_ours} events/run, {runs} runs")
    ours: list[float] = []
    ours_bytes = 0.0
    results: dict[str, Any] = {"c_writer": api is not None}
    rows: list[Row] = []
    peer_runs: dict[str, list[float]] = {key: [] for key, *_ in peers}
    peer_bytes: dict[str, float] = {}
    for r in range(runs):  # one round = agentlog then every peer, so drift spreads over all of them
        rate, ours_bytes = ours_fn(base, n_ours)
        ours.append(rate)
        for key, _label, fn, _ in peers:
            rate, peer_bytes[key] = fn(base, sizes[key])
            peer_runs[key].append(rate)
        log(f"c: round {r + 1}/{runs} done")
    results["c_ours"] = ours
    for key, label, _, note in peers:
        rows.append(Row("c. batched / async writers", ours_label, ours, label, peer_runs[key], "events/s",
                        f"{note}; {sizes[key]:,} events/run, {peer_bytes[key]:.0f} B/event"))
        results[f"c_{key}"] = peer_runs[key]
    rows[0].note = (f"agentlog {ours_note}, {n_ours:,} events/run, {ours_bytes:.0f} B/event. "
                    f"Peer: {rows[0].note}")
    if api is not None:
        # For reference: the batch path the writer commits through, without the per-event hand-off, beside
        # the one durable batched peer.
        log(f"c: for reference, log.append_many in batches of {BATCH:,}, {runs} runs")
        many = [_ours_batches(base, n_ours)[0] for _ in range(runs)]
        rows.append(Row("c. (reference)", f"`log.append_many`, batches of {BATCH:,}", many,
                        f"SQLite WAL, synchronous=FULL, {BATCH:,} events/txn", peer_runs["sqlite1000"], "events/s",
                        f"both durable: one fsync per {BATCH:,}; not a target row"))
        results["c_many"] = many
    return rows, results
