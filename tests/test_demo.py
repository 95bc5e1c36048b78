"""examples/demo.py is what a newcomer runs first: it must keep working end to end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.py"


def test_the_demo_runs_and_every_task_is_done_once(tmp_path: Path) -> None:
    root = tmp_path / "log"
    res = subprocess.run([sys.executable, str(DEMO), "--root", str(root)], capture_output=True, text=True,
                         timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.rstrip().endswith("demo finished: every command exited 0")
    claimed = re.findall(r"claimed '([^']+)' \(token (\d+)\)", res.stdout)
    assert sorted(title for title, _ in claimed) == sorted(
        ["write the parser", "write the docs", "set up CI", "test the parser", "release"])
    assert len({token for _, token in claimed}) == 5
    assert (root / "snapshots" / "team-chat" / "communication.md").exists()
    assert '"state":"idle"' in (root / "agents" / "builder" / "status.json").read_text().replace(" ", "")
