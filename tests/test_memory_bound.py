"""Readers keep memory bounded: scanning a 1 GB stream stays under 64 MB of resident memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# VmHWM, not getrusage: ru_maxrss survives exec, so a child of a big pytest process would report the parent's
# size at fork time. VmHWM is the high-water mark of this process's own address space.
SCAN = """
import sys, agentlog
log = agentlog.open_log(sys.argv[1])
count = sum(1 for _ in log.read("big"))
report = log.verify("big")
tail = log.tail("big", 20)
hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(count, report.ok, report.counts["big"], tail[-1].seq, hwm_kb // 1024)
"""


def _write_gigabyte(path: Path) -> int:
    """Write ~1 GiB of valid events of ~4 KB each, directly, and return how many."""
    pad = "x" * 4000
    lines_per_block = 256
    target = 1 << 30
    seq = 0
    written = 0
    with path.open("w") as f:
        while written < target:
            block = []
            for _ in range(lines_per_block):
                seq += 1
                block.append(json.dumps({"seq": seq, "id": f"id-{seq}", "ts": "2026-11-22T10:00:00.000000Z",
                                         "stream": "big", "type": "t", "data": {"pad": pad}},
                                        separators=(",", ":")) + "\n")
            text = "".join(block)
            f.write(text)
            written += len(text)
    return seq


@pytest.mark.slow
def test_scanning_a_gigabyte_stream_stays_under_64_mb(tmp_path: Path) -> None:
    """read, verify and tail over a 1 GiB stream finish with a peak RSS under 64 MB."""
    logs = tmp_path / "logs"
    logs.mkdir()
    total = _write_gigabyte(logs / "big.jsonl")
    out = subprocess.run([sys.executable, "-c", SCAN, str(tmp_path)], capture_output=True, text=True,
                         check=True, timeout=300).stdout.split()
    count, ok, verified, last, rss_mb = int(out[0]), out[1], int(out[2]), int(out[3]), int(out[4])
    assert (count, ok, verified, last) == (total, "True", total, total)
    assert rss_mb < 64, f"peak RSS {rss_mb} MB"
