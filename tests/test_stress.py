"""``agentlog stress`` and :func:`agentlog.stress.run_stress`: many real writer processes, one stream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import agentlog
from agentlog.stress import STREAM, payload, run_stress


def stress(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentlog", "stress", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, check=False)


def test_stress_10_procs_100_events_of_10k_exits_0(tmp_path: Path) -> None:
    """The issue's run (10 processes x 100 events x 10 KiB) loses, duplicates and corrupts nothing."""
    done = stress("--procs", "10", "--events", "100", "--size", "10240", "--dir", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "acknowledged 1000/1000, found 1000, missing 0, duplicated 0, unacknowledged 0, corrupt 0" in out
    assert "seq gapless 1..1000" in out and "verify ok" in out and "events/s" in out
    assert out.splitlines()[-1] == "OK"
    assert os.listdir(tmp_path) == []  # the temporary log was removed


def test_stress_with_rotation_during_the_run(tmp_path: Path) -> None:
    """With small segments the writers rotate under each other many times, and still nothing is lost."""
    done = stress("--procs", "10", "--events", "100", "--size", "10240", "--segment-bytes", "200000",
                  "--json", "--dir", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    [result] = [json.loads(line) for line in done.stdout.splitlines()]
    assert result["ok"] is True
    assert (result["acknowledged"], result["found"], result["missing"], result["duplicated"],
            result["corrupt"], result["gapless"]) == (1000, 1000, 0, 0, 0, True)
    # 1000 records of ~10.3 KB in 200 KB segments: about 50 segments, so about 50 rotations under contention.
    assert result["segments"] >= 40
    assert result["problems"] == [] and result["worker_errors"] == []


def test_stress_keep_leaves_a_log_that_verifies(tmp_path: Path) -> None:
    """--keep leaves the log in place; it passes `agentlog verify` and holds every event once."""
    done = stress("--procs", "3", "--events", "20", "--size", "100", "--keep", "--json", "--dir", str(tmp_path),
                  cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    root = json.loads(done.stdout)["root"]
    assert root.startswith(str(tmp_path)) and os.path.isdir(root)
    check = subprocess.run([sys.executable, "-m", "agentlog", "--root", root, "verify"], capture_output=True,
                           text=True, check=False)
    assert check.returncode == 0 and check.stdout.startswith("ok: 1 stream, 60 events")


def test_stress_fails_when_writers_fail(tmp_path: Path) -> None:
    """When writers cannot append (events over the 16 MiB limit), stress reports it and exits 1."""
    done = stress("--procs", "2", "--events", "1", "--size", str(17 * 2**20), "--dir", str(tmp_path),
                  cwd=tmp_path)
    assert done.returncode == 1, done.stdout
    assert "writer error: writer 0 exited with status 1: InvalidEvent" in done.stdout
    assert done.stdout.splitlines()[-1] == "FAILED"


def test_run_stress_with_spawned_processes(tmp_path: Path) -> None:
    """run_stress works with the spawn start method (fresh interpreters) and reports every count."""
    result = run_stress(procs=3, events=10, size=2000, segment_bytes=8000, start_method="spawn",
                        temp_dir=str(tmp_path))
    assert result.ok, result
    assert (result.expected, result.acknowledged, result.found) == (30, 30, 30)
    assert result.segments > 1 and result.events_per_second > 0 and not result.kept
    assert not os.path.exists(result.root)


def test_run_stress_on_a_given_root_keeps_it(tmp_path: Path) -> None:
    """A root passed in is used and left in place, with the stream holding each writer's exact payloads."""
    root = tmp_path / "log"
    result = run_stress(procs=2, events=5, size=50, root=root)
    assert result.ok and result.kept and result.root == str(root)
    with agentlog.open_log(root) as log:
        events = list(log.read(STREAM))
    assert sorted((e.data["worker"], e.data["i"]) for e in events) == [(w, i) for w in range(2) for i in range(5)]
    assert all(e.data["payload"] == payload(e.data["worker"], e.data["i"], 50) for e in events)


def test_run_stress_refuses_a_root_that_already_has_the_stream(tmp_path: Path) -> None:
    """Reusing a root with a stress stream would make the counts meaningless, so it is refused."""
    root = tmp_path / "log"
    with agentlog.open_log(root) as log:
        log.append(STREAM, "leftover")
    with pytest.raises(ValueError, match="already holds"):
        run_stress(procs=1, events=1, size=1, root=root)


def test_payloads_differ_per_event_and_have_the_requested_size() -> None:
    """Every (writer, index) gets its own payload of exactly the requested size."""
    seen = {payload(w, i, 300) for w in range(5) for i in range(50)}
    assert len(seen) == 250 and {len(p) for p in seen} == {300}
    assert payload(0, 0, 0) == ""


@pytest.mark.parametrize("kwargs", [{"procs": 0}, {"events": 0}, {"size": -1}, {"segment_bytes": 0}])
def test_run_stress_rejects_bad_arguments(kwargs: dict[str, int]) -> None:
    """Nonsense sizes and counts are a ValueError before any process starts."""
    with pytest.raises(ValueError):
        run_stress(**kwargs)


def test_no_temporary_files_left_behind(tmp_path: Path) -> None:
    """A run without --keep removes its working directory even when it fails."""
    run_stress(procs=1, events=1, size=17 * 2**20, temp_dir=str(tmp_path))
    assert os.listdir(tmp_path) == []
