"""The README stays in step with the code: every command documented, the quick start is the CI command."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from agentlog.cli._parser import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _command_parsers() -> dict[str, argparse.ArgumentParser]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no sub-commands")


def test_every_command_appears_in_the_readme() -> None:
    """Each agentlog sub-command has at least one example line in the README."""
    for name in _command_parsers():
        assert re.search(rf"^agentlog {name}\b", README, re.MULTILINE), name


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run calls exactly the test command the README's quick start gives."""
    blocks = re.findall(r"```sh\n(.*?)```", README, re.DOTALL)
    test_command = next(b.strip() for b in blocks if "pytest" in b and "[test]" in b)
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_every_public_name_is_exported() -> None:
    """Every name in agentlog.__all__ exists, and nothing is listed twice (ruff keeps the order)."""
    import agentlog

    assert len(set(agentlog.__all__)) == len(agentlog.__all__)
    for name in agentlog.__all__:
        assert hasattr(agentlog, name), name
