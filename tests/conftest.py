"""Shared fixtures. The fault-injection ones are prefixed ``fault_``; add others under their own names."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_default_spool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Most tests check what a failing append raises, and none may write into the user's state directory:
    spooling is off unless a test turns it on (tests/test_spool.py does, with a spool under tmp_path)."""
    monkeypatch.setenv("AGENTLOG_SPOOL", "off")


def require_privilege(available: bool, why: str) -> None:
    """Skip a test that needs a privilege this machine lacks, except in CI, which has it: there, fail."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must provide this, but: {why}")
    pytest.skip(why)


@pytest.fixture
def fault_procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """A list to register child processes in; any still running at teardown are killed with their group."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


class FaultTmpfs:
    """Small tmpfs mounts under one directory, for disk-full and read-only faults; unmounted at teardown."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.mounted: list[Path] = []

    def mount(self, size: str, extra: str = "") -> Path:
        """Mount a fresh tmpfs of ``size`` (``"1m"``; ``extra`` options such as ``"nr_inodes=20"``) and return
        its directory."""
        require_privilege(os.geteuid() == 0, "mounting a tmpfs needs root")
        require_privilege(shutil.which("mount") is not None, "the mount command is not installed")
        target = self.base / f"tmpfs{len(self.mounted)}"
        target.mkdir()
        options = ",".join(filter(None, [f"size={size}", "mode=0700", extra]))
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                             capture_output=True, text=True)
        require_privilege(res.returncode == 0, f"cannot mount a tmpfs: {res.stderr.strip()}")
        self.mounted.append(target)
        return target

    def remount_ro(self, target: Path) -> None:
        """Make a mount read-only (the kernel refuses while a file on it is open for writing)."""
        subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True, capture_output=True)

    def unmount_all(self) -> None:
        for target in reversed(self.mounted):
            res = subprocess.run(["umount", str(target)], capture_output=True, text=True)
            if res.returncode != 0:  # a descriptor still open somewhere: detach rather than leak the mount
                subprocess.run(["umount", "-l", str(target)], check=True)
        self.mounted.clear()


def fill_disk(path: Path) -> None:
    """Write ``path`` until its file system is full (ENOSPC, and only that, ends it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


@pytest.fixture
def fault_tmpfs(tmp_path: Path) -> Iterator[FaultTmpfs]:
    """Mount small tmpfs file systems (root only; CI has it); every mount is removed at teardown."""
    mounts = FaultTmpfs(tmp_path)
    try:
        yield mounts
    finally:
        mounts.unmount_all()
