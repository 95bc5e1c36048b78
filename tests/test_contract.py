"""The backend contract suite, run against every backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlog import open_log
from agentlog.testing import BackendContract, LogFactory


class TestFileBackend(BackendContract):
    @pytest.fixture
    def log_factory(self, tmp_path: Path) -> LogFactory:
        return lambda **options: open_log(tmp_path / "root", **options)


class TestFileBackendDaily(BackendContract):
    @pytest.fixture
    def log_factory(self, tmp_path: Path) -> LogFactory:
        return lambda **options: open_log(tmp_path / "root", rotate="daily", segment_bytes=2048, **options)


class TestFileBackendWriteDurability(BackendContract):
    @pytest.fixture
    def log_factory(self, tmp_path: Path) -> LogFactory:
        return lambda **options: open_log(tmp_path / "root", durability="write", segment_bytes=4096, **options)


class TestMemoryBackend(BackendContract):
    @pytest.fixture
    def log_factory(self) -> LogFactory:
        return lambda **options: open_log("memory:", **options)
