#!/usr/bin/env python3
# ruff: noqa: RUF001 - the multiplication sign in ratios and labels is meant
"""agentlog's benchmark suite against its peers (issue 3, sections 4 and 5).

    .venv/bin/pip install -e '.[bench]' && .venv/bin/python bench/run.py            # full run, ~5-10 min
    .venv/bin/python bench/run.py --quick                                          # smoke run, < 60 s

Prints markdown on stdout: the machine, the table (median of >= 5 runs for agentlog and for each peer, and
the ratio agentlog/peer, all measured in this one run), and each target of issue 3 section 5, met or not.
Progress goes to stderr. Not part of CI: a benchmark, not a timed test.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import Row, log, median, table  # noqa: E402

CASES = ("a", "b", "c", "d", "e", "memory")

FULL: dict[str, Any] = {
    "a": {"n": 2_000, "runs": 7},
    "b": {"procs": 10, "n": 300, "runs": 7},
    "c": {"runs": 5, "sizes": {"ours": 200_000, "logging": 50_000, "structlog": 100_000, "loguru": 30_000,
                               "clh": 10_000, "sqlite1": 2_000, "sqlite1000": 100_000}},
    "d": {"n": 1_000_000, "runs": 7, "slow_runs": 5, "last": 10_000},
    "e": {"calls": 40, "runs": 5},
    "memory": {"n": 20_000, "factor": 10, "runs": 5},
}
QUICK: dict[str, Any] = {
    "a": {"n": 200, "runs": 5},
    "b": {"procs": 10, "n": 30, "runs": 5},
    "c": {"runs": 5, "sizes": {"ours": 20_000, "logging": 5_000, "structlog": 10_000, "loguru": 3_000,
                               "clh": 1_000, "sqlite1": 200, "sqlite1000": 10_000}},
    "d": {"n": 50_000, "runs": 5, "slow_runs": 5, "last": 1_000},
    "e": {"calls": 4, "runs": 5},
    "memory": {"n": 12_000, "factor": 3, "runs": 5},
}


def _sh(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.rstrip()
    except FileNotFoundError:
        return "not installed"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def machine(base: str, load_start: str) -> str:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    repo = os.path.dirname(HERE)
    git = _sh(["git", "-C", repo, "describe", "--always", "--dirty"]) or "not a git checkout"
    dirty = _sh(["git", "-C", repo, "status", "--short", "--", "src"]).splitlines()
    free = _sh(["free", "-h"])
    df = _sh(["df", "-T", base])
    jq = shutil.which("jq")
    tools = {
        "jq": _sh([jq, "--version"]) if jq else "**not installed**",
        "grep": _sh(["grep", "--version"]).splitlines()[0] if shutil.which("grep") else "not installed",
        "tail": _sh(["tail", "--version"]).splitlines()[0] if shutil.which("tail") else "not installed",
        "flock": _sh(["flock", "--version"]) if shutil.which("flock") else "**not installed**",
        "bash": _sh(["bash", "-c", "echo $BASH_VERSION"]),
    }
    peers = {dist: _version(dist) for dist in ("agentlog", "orjson", "structlog", "loguru",
                                                "concurrent-log-handler", "portalocker")}
    lines = [
        "## Machine",
        "",
        f"- CPU: {cpu or platform.processor()}; `nproc`: {os.cpu_count()}",
        f"- kernel (`uname -r`): {platform.release()}",
        f"- Python: {platform.python_version()} ({sys.executable})",
        f"- agentlog: {peers['agentlog']} at `{git}`"
        + (f"; measured with uncommitted changes under src/: {', '.join(f'`{d.strip()}`' for d in dirty)}"
           if dirty else ""),
        f"- load average (1, 5, 15 min) at the start: {load_start}; at the end: {_load()}",
        f"- temp dir: `{base}`",
        "",
        "```",
        "$ free -h",
        free,
        f"$ df -T {base}",
        df,
        "```",
        "",
        "## Peer versions",
        "",
        "- " + ", ".join(f"{k} {v}" for k, v in peers.items() if k != "agentlog")
        + f", SQLite {sqlite3.sqlite_version} (Python's sqlite3)",
        "- " + "; ".join(f"{k}: {v}" for k, v in tools.items()),
    ]
    return "\n".join(lines)


# --- targets ----------------------------------------------------------------------------------------------

def _m(results: dict[str, Any], key: str) -> float | None:
    values = results.get(key)
    return median(values) if values else None


def targets(results: dict[str, Any]) -> str:
    out: list[str] = ["## Targets (issue 3, section 5)", ""]

    def say(name: str, ok: bool | None, text: str) -> None:
        mark = "not measured" if ok is None else ("**met**" if ok else "**NOT met**")
        out.append(f"- {name}: {mark}. {text}")

    a_o, a_r = _m(results, "a_ours"), _m(results, "a_raw")
    if a_o and a_r:
        say("a ≥ 0.8× the raw loop", a_o / a_r >= 0.8,
            f"{a_o:,.0f} vs {a_r:,.0f} events/s = {a_o / a_r:.2f}×.")
    else:
        say("a ≥ 0.8× the raw loop", None, "case a was not run.")

    b_o, b_r = _m(results, "b_ours"), _m(results, "b_raw")
    if b_o and b_r:
        say("b ≥ 0.8× the raw fsync-after-unlock processes", b_o / b_r >= 0.8,
            f"{b_o:,.0f} vs {b_r:,.0f} events/s = {b_o / b_r:.2f}×.")
        if a_o:
            say("b ≥ 2× one process", b_o / a_o >= 2,
                f"{b_o:,.0f} vs {a_o:,.0f} events/s (case a) = {b_o / a_o:.2f}×"
                + (f"; the raw processes reach {b_r / a_r:.2f}× the raw loop." if a_r else "."))
    else:
        say("b", None, "case b was not run.")

    c_o = _m(results, "c_ours")
    if c_o:
        how = "`EventWriter` ASYNC" if results.get("c_writer") else \
            "`log.append_many` in batches of 1,000 (this agentlog has no `EventWriter` ASYNC)"
        say("c ≥ 300,000 events/s, durable per batch", c_o >= 300_000, f"{how}: {c_o:,.0f} events/s.")
        not_peers = ("c_ours", "c_writer", "c_many")
        peers = {k[2:]: _m(results, k) for k in results if k.startswith("c_") and k not in not_peers}
        best_key = max(peers, key=lambda k: peers[k] or 0)
        best = peers[best_key] or 0
        say("c ahead of every peer", c_o > best,
            f"fastest peer: {best_key} at {best:,.0f} events/s; agentlog/fastest = {c_o / best:.2f}×.")
    else:
        say("c", None, "case c was not run.")

    tail_ms = _m(results, "d_tail")
    if tail_ms is not None:
        say("d `tail(20)` ≤ 0.1 ms in-process", tail_ms <= 0.1, f"{tail_ms:.3f} ms.")
        bt, grep = _m(results, "d_by_type"), _m(results, "d_grep")
        assert bt is not None and grep is not None
        wrong = " **It returned a wrong number of events** (see the table)." if results.get("d_by_type_wrong") else ""
        say("d `by_type` ≤ 2× `grep -c`", bt <= 2 * grep and not wrong,
            f"{bt:,.0f} ms vs {grep:,.0f} ms = {bt / grep:.1f}×.{wrong}")
        since = _m(results, "d_since")
        assert since is not None
        wrong = " **It returned a wrong number of events** (see the table)." if results.get("d_since_wrong") else ""
        say("d `since` (last 10k) ≤ 30 ms", since <= 30 and not wrong, f"{since:,.1f} ms.{wrong}")
    else:
        say("d", None, "case d was not run.")

    e_o, e_s, e_f = _m(results, "e_ours"), _m(results, "e_shell"), _m(results, "e_fixed")
    if e_o and e_s:
        say("e ≤ 1.5× the shell approach per call (002's script as written)", e_o <= 1.5 * e_s,
            f"{e_o:.1f} vs {e_s:.1f} ms/call = {e_o / e_s:.2f}×.")
        if e_f:
            say("e ≤ 1.5× the shell approach per call (002's script with its bugs fixed)", e_o <= 1.5 * e_f,
                f"{e_o:.1f} vs {e_f:.1f} ms/call = {e_o / e_f:.2f}×.")
    elif e_o:
        say("e ≤ 1.5× the shell approach", None, f"the shell rows were skipped (jq or flock missing); "
            f"`agentlog append` took {e_o:.1f} ms/call.")
    else:
        say("e", None, "case e was not run.")

    big, small = _m(results, "m_big"), _m(results, "m_small")
    if big is not None and small is not None:
        k = results.get("m_factor", 10)
        say("memory: writer RSS bounded under a slow disk", big <= 1.5 * small + 4,
            f"RSS growth {big:.1f} MiB for {k}×N events vs {small:.1f} MiB for N (criterion: at most "
            f"1.5× the N-event growth + 4 MiB; an unbounded queue would grow about {k}×).")
    elif "m_big" in results:
        say("memory: writer RSS bounded under a slow disk", None, "this agentlog has no `EventWriter` ASYNC.")
    return "\n".join(out)


# --- main -------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run in well under a minute")
    p.add_argument("--only", default=",".join(CASES),
                   help=f"comma-separated cases to run (default: all of {','.join(CASES)})")
    p.add_argument("--tmp", default=None, help="where the run's scratch files go (default: the system temp dir); "
                                               "its file system is what is measured")
    p.add_argument("--cache-dir", default=None,
                   help="keep case d's big stream here and reuse it on later runs (default: regenerate)")
    p.add_argument("--out", default=None, help="also write the markdown to this file")
    args = p.parse_args(argv)
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = set(only) - set(CASES)
    if unknown:
        p.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    cfg = QUICK if args.quick else FULL

    import bench_append
    import bench_cli
    import bench_memory
    import bench_reads
    import bench_writers

    base = tempfile.mkdtemp(prefix="agentlog-bench-", dir=args.tmp)
    rows: list[Row] = []
    results: dict[str, Any] = {}
    started = time.perf_counter()
    load_start = _load()
    if os.getloadavg()[0] > 0.5:
        log(f"warning: the machine is busy (load average {load_start}); the numbers will be noisy")
    try:
        if "a" in only or "b" in only:
            r, res = bench_append.case_a(base, cfg["a"]["n"], cfg["a"]["runs"])
            if "a" in only:
                rows += r
            results.update(res)
        if "b" in only:
            c = cfg["b"]
            r, res = bench_append.case_b(base, c["procs"], c["n"], c["runs"], results)
            rows += r
            results.update(res)
        if "e" in only:
            r, res = bench_cli.case_e(base, cfg["e"]["calls"], cfg["e"]["runs"])
            rows += r
            results.update(res)
        if "c" in only:
            r, res = bench_writers.case_c(base, cfg["c"]["sizes"], cfg["c"]["runs"])
            rows += r
            results.update(res)
        if "d" in only:
            c = cfg["d"]
            root = args.cache_dir or os.path.join(base, "big")
            r, res = bench_reads.case_d(root, c["n"], c["runs"], c["slow_runs"], c["last"])
            rows += r
            results.update(res)
        if "memory" in only:
            c = cfg["memory"]
            r, res = bench_memory.case_memory(base, HERE, c["n"], c["factor"], c["runs"],
                                              bench_writers.writer_api() is not None)
            rows += r
            results.update(res)
        info = machine(base, load_start)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    elapsed = time.perf_counter() - started
    doc = "\n\n".join([
        f"# agentlog benchmarks ({'quick smoke run' if args.quick else 'full run'}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {elapsed:.0f} s)",
        info,
        "## Results\n\nMedians; `runs` is agentlog's/the peer's number of runs; ↑ higher is better, ↓ lower is "
        "better; the ratio is always agentlog's median divided by the peer's, in the row's unit.\n\n"
        + table(sorted(rows, key=lambda row: "abcdem".index(row.case[0]))),  # e runs before c, shown after d
        targets(results),
    ]) + "\n"
    sys.stdout.write(doc)
    if args.out:
        with open(args.out, "w") as f:
            f.write(doc)
    log(f"done in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
