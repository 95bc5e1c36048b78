"""Writers that are not root: permission bits are enforced for them, so rotation must not rely on any.

The rest of the suite runs as root, which ignores permission bits; these tests fork children that drop to
``nobody`` before touching the log, as an ordinary user's agents would run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import agentlog
from conftest import require_privilege

NOBODY = 65534


@pytest.fixture
def shared_root() -> Iterator[Path]:
    """A log root that user nobody can reach and write (tmp_path's parents are root-only)."""
    require_privilege(os.geteuid() == 0, "dropping to another user needs root")
    base = Path(tempfile.mkdtemp(prefix="agentlog-unpriv-"))
    os.chmod(base, 0o755)
    root = base / "root"
    root.mkdir()
    os.chown(root, NOBODY, NOBODY)
    yield root
    shutil.rmtree(base)


def as_nobody(work: Callable[[], None], uid: int = NOBODY) -> int:
    """Run ``work`` in a forked child as ``uid`` (nobody by default) in group nogroup; return the child's exit
    status (0 when it passed)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        status = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(uid)
            work()
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_non_root_writers_rotate_without_permission_errors(shared_root: Path) -> None:
    """Many short-lived non-root processes appending across frequent rotations never fail and lose nothing."""

    def burst(tag: int) -> Callable[[], None]:
        def work() -> None:
            for n in range(5):
                log = agentlog.open_log(shared_root, segment_bytes=1500)  # a fresh open each time
                log.append("s", "e", data={"tag": tag, "n": n, "pad": "x" * 200})
                log.close()
        return work

    pids = []
    for tag in range(24):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            os._exit(as_nobody(burst(tag)))
        pids.append(pid)
    statuses = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    assert statuses == [0] * 24
    log = agentlog.open_log(shared_root)
    events = list(log.read("s"))
    assert [e.seq for e in events] == list(range(1, 121))
    assert sorted((e.data["tag"], e.data["n"]) for e in events) == [(t, n) for t in range(24) for n in range(5)]
    assert log.stat("s").segments > 10
    assert log.verify().ok


def test_a_crash_between_rename_and_create_does_not_lock_out_non_root_writers(shared_root: Path) -> None:
    """With the active file renamed away and not recreated (a writer killed mid-rotation), the next non-root
    writer creates it and seq continues."""

    def first() -> None:
        agentlog.open_log(shared_root).append("s", "e")

    assert as_nobody(first) == 0
    logs = shared_root / "logs"
    os.rename(logs / "s.jsonl", logs / "s.jsonl.000001")  # the state such a crash leaves

    def second() -> None:
        assert agentlog.open_log(shared_root).append("s", "e").seq == 2

    assert as_nobody(second) == 0
    assert [e.seq for e in agentlog.open_log(shared_root).read("s")] == [1, 2]


def test_group_writers_who_do_not_own_the_file_can_rotate(shared_root: Path) -> None:
    """A group-writable log (file_mode 0o660) rotates when a writer other than the file's owner fills it."""
    os.chmod(shared_root, 0o777)

    def owner() -> None:
        log = agentlog.open_log(shared_root, segment_bytes=1000, file_mode=0o660, dir_mode=0o777)
        log.append("s", "e", data={"pad": "x" * 600})

    def other() -> None:  # same group, different user: may write the file, may not chmod it
        log = agentlog.open_log(shared_root, segment_bytes=1000, file_mode=0o660, dir_mode=0o777)
        for _ in range(3):
            log.append("s", "e", data={"pad": "y" * 600})

    assert as_nobody(owner) == 0
    assert as_nobody(other, uid=NOBODY - 1) == 0
    log = agentlog.open_log(shared_root)
    assert log.stat("s").segments == 4
    assert [e.seq for e in log.read("s")] == [1, 2, 3, 4]
