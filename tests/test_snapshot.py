"""Communication snapshots: content, determinism, atomic replacement with .bak, and watch mode."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import agentlog
from agentlog import StorageError
from agentlog.event import Event
from agentlog.snapshot import ARCHIVE, BEGIN, COMMUNICATION, END, body_of, render, snapshot
from conftest import FaultTmpfs


def conversation(log: agentlog.EventLog, stream: str = "conv", interactions: int = 5) -> None:
    """alice asks, bob answers, carol's heartbeat (no interaction number) follows each turn."""
    for i in range(1, interactions + 1):
        log.append(stream, "question", actor="alice", interaction=i, data={"content": f"Q{i}: how?"})
        log.append(stream, "answer", actor="bob", interaction=i,
                   data={"content": f"A{i}: like this\nsecond line", "confidence": 0.5})
        log.append(stream, "heartbeat", actor="carol")


def sections(text: str, level: str) -> list[int]:
    return [int(n) for n in re.findall(rf"^{level} Interaction #(\d+)$", text, flags=re.M)]


def test_a_scripted_conversation_renders_the_last_k_and_archives_the_rest(tmp_path: Path) -> None:
    log = agentlog.open_log(tmp_path)
    conversation(log)
    result = snapshot(log, "conv", keep=3)
    comm = Path(result.communication).read_text()
    arch = Path(result.archive).read_text()
    assert Path(result.communication) == tmp_path / "snapshots" / "conv" / COMMUNICATION
    assert (result.recent, result.archived, result.through_seq) == ([3, 4, 5], [1, 2], 15)
    assert sections(comm, "###") == [3, 4, 5] and sections(arch, "##") == [1, 2]
    assert comm.count(BEGIN) == 1 and comm.count(END) == 1 and comm.index(BEGIN) < comm.index(END)
    block = comm[comm.index("### Interaction #4"):comm.index("### Interaction #5")]
    headings = re.findall(r"^#### (.+)$", block, flags=re.M)
    assert headings == ["alice → bob · question", "bob → alice · answer", "carol · heartbeat"]
    assert "> A4: like this\n> second line\n" in block and '`{"confidence":0.5}`' in block
    arch_block = arch[arch.index("## Interaction #1"):arch.index("## Interaction #2")]
    lines = arch_block.splitlines()
    first = next(ev for ev in log.read("conv") if ev.seq == 1)
    assert lines[2] == f"- [alice question {first.ts}]" and lines[3] == "  Q1: how?"
    assert "- [carol heartbeat " in arch_block, "the unnumbered heartbeat belongs to its turn"


def test_addressees_come_from_to_or_the_other_speaker(tmp_path: Path) -> None:
    log = agentlog.open_log(tmp_path)
    log.append("c", "note", actor="carol", interaction=1)  # alone in its interaction: nobody to address
    log.append("c", "question", actor="alice", interaction=2, to="dave", data={"content": "hi dave"})
    log.append("c", "followup", actor="alice", interaction=2, data={"content": "and?", "to": "erin"})
    log.append("c", "answer", actor="bob", interaction=2)
    comm = Path(snapshot(log, "c", keep=5).communication).read_text()
    assert re.findall(r"^#### (.+)$", comm, flags=re.M) == [
        "carol · note", "alice → dave · question", "alice → erin · followup", "bob → alice · answer"]


def test_events_before_the_first_interaction_are_counted_not_shown(tmp_path: Path) -> None:
    log = agentlog.open_log(tmp_path)
    log.append("c", "boot", actor="sys", data={"content": "starting"})
    log.append("c", "boot", actor="sys", data={"content": "ready"})
    log.append("c", "question", actor="alice", interaction=7, data={"content": "first"})
    result = snapshot(log, "c")
    comm = Path(result.communication).read_text()
    assert result.unattached == 2 and "unattached=2" in comm.splitlines()[0]
    assert "starting" not in comm and "first" in comm


def test_content_kept_top_level_is_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """append_event (the seed API) and 002's shell writer keep content at the top level, not in data."""
    monkeypatch.setenv("AGENTLOG_ROOT", str(tmp_path))
    agentlog.append_event({"conversation_id": "c", "type": "question", "content": "seed api", "actor": "a",
                           "interaction": 1})
    with (tmp_path / "logs" / "c.jsonl").open("ab") as fh:
        fh.write(b'{"type": "answer", "actor": "b", "content": "from the shell", "data": {"n": 1}}\n')
    comm = Path(snapshot(agentlog.open_log(tmp_path), "c").communication).read_text()
    assert "> seed api\n" in comm and "> from the shell\n" in comm and '`{"n":1}`' in comm
    assert "(no content)" not in comm


def test_content_cannot_forge_the_markers_or_the_header(tmp_path: Path) -> None:
    log = agentlog.open_log(tmp_path)
    evil = f"{END}\n<!-- agentlog snapshot stream=x through_seq=999999 -->\r\n# fake\x00"
    log.append("c", "answer", actor="mallory", interaction=1, data={"content": evil})
    comm = Path(snapshot(log, "c").communication).read_text()
    assert comm.count(END) == 1 and comm.count("<!-- agentlog snapshot") == 1
    assert "\r" not in comm and "\x00" not in comm


def test_output_is_deterministic_and_headed_by_through_seq_and_body_hash(tmp_path: Path) -> None:
    """Rendering twice, or from a byte-for-byte copy of the log elsewhere, gives the same bytes."""
    log = agentlog.open_log(tmp_path / "a")
    conversation(log, interactions=6)
    first = snapshot(log, "conv", keep=2, out=tmp_path / "out1")
    second = snapshot(log, "conv", keep=2, out=tmp_path / "out2")
    shutil.copytree(tmp_path / "a" / "logs", tmp_path / "b" / "logs")
    third = snapshot(agentlog.open_log(tmp_path / "b"), "conv", keep=2, out=tmp_path / "out3")
    for name in (COMMUNICATION, ARCHIVE):
        blobs = {(tmp_path / d / name).read_bytes() for d in ("out1", "out2", "out3")}
        assert len(blobs) == 1, name
        data = blobs.pop()
        body, digest = body_of(data)
        assert digest == hashlib.sha256(body).hexdigest()
        assert data.startswith(b"<!-- agentlog snapshot stream=conv through_seq=18 ")
    assert first.changed and second.changed and third.changed


def test_render_is_pure(tmp_path: Path) -> None:
    events = [Event(seq=i, id=f"id{i}", ts=f"2026-11-22T10:00:0{i}.000000Z", stream="s", type="say",
                    actor="a" if i % 2 else "b", interaction=i // 2, data={"content": f"m{i}"}) for i in range(1, 8)]
    assert render("s", events, keep=2) == render("s", list(events), keep=2)
    comm, arch, info = render("s", events, keep=2)
    assert info["recent"] == [2, 3] and info["archived"] == [0, 1] and info["through_seq"] == 7
    assert sections(comm.decode(), "###") == [2, 3] and sections(arch.decode(), "##") == [0, 1]


def test_a_new_rendering_keeps_the_previous_as_bak_and_an_unchanged_one_is_not_rewritten(tmp_path: Path) -> None:
    log = agentlog.open_log(tmp_path)
    conversation(log, interactions=2)
    result = snapshot(log, "conv")
    comm = Path(result.communication)
    before = comm.read_bytes()
    inode = comm.stat().st_ino
    again = snapshot(log, "conv")
    assert not again.changed and comm.stat().st_ino == inode and not Path(f"{comm}.bak").exists()
    log.append("conv", "question", actor="alice", interaction=3, data={"content": "new"})
    assert snapshot(log, "conv").changed
    assert Path(f"{comm}.bak").read_bytes() == before and b"new" in comm.read_bytes()
    assert oct(comm.stat().st_mode & 0o777) == "0o600"
    leftovers = [p.name for p in comm.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_when_writing_fails_the_last_good_files_stay(tmp_path: Path, fault_tmpfs: FaultTmpfs) -> None:
    """A full disk under --out: the new rendering is refused with StorageError, and the files already there
    are intact (no truncated communication.md, no temp file left)."""
    out = fault_tmpfs.mount("64k")
    log = agentlog.open_log(tmp_path / "root")
    conversation(log, interactions=2)
    snapshot(log, "conv", out=out)
    good = {name: (out / name).read_bytes() for name in (COMMUNICATION, ARCHIVE)}
    fill(out / "filler")
    for i in range(3, 40):
        log.append("conv", "answer", actor="bob", interaction=i, data={"content": "y" * 500})
    with pytest.raises(StorageError):
        snapshot(log, "conv", out=out)
    for name, data in good.items():
        assert (out / name).read_bytes() == data
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    (out / "filler").unlink()
    assert snapshot(log, "conv", out=out).changed


def fill(path: Path) -> None:
    """Write to ``path`` until the file system is full."""
    with open(path, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"x" * 4096)
        except OSError:
            pass


def test_many_runs_never_duplicate_an_interaction_in_the_archive(tmp_path: Path) -> None:
    log = agentlog.open_log(tmp_path)
    for i in range(1, 21):
        log.append("c", "question", actor="alice", interaction=i, data={"content": f"q{i}"})
        if i % 3 == 0:
            log.append("c", "answer", actor="bob", interaction=i - 2, data={"content": "late answer"})
        snapshot(log, "c", keep=3)
        snapshot(log, "c", keep=3)
    arch = (tmp_path / "snapshots" / "c" / ARCHIVE).read_text()
    assert sections(arch, "##") == list(range(1, 18))
    assert arch.count("late answer") == 6


def test_a_symlink_planted_in_the_snapshot_tree_is_not_followed(tmp_path: Path) -> None:
    log = agentlog.open_log(tmp_path / "root")
    log.append("c", "q", actor="a", interaction=1)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "root" / "snapshots").symlink_to(outside)
    with pytest.raises(StorageError):
        snapshot(log, "c")
    assert list(outside.iterdir()) == []


def test_a_memory_log_needs_an_out_directory(tmp_path: Path) -> None:
    log = agentlog.open_log("memory:")
    log.append("c", "q", interaction=1)
    with pytest.raises(ValueError, match="out="):
        snapshot(log, "c")
    assert Path(snapshot(log, "c", out=tmp_path).communication).exists()


# --- command line and watch mode -------------------------------------------------------------------------


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentlog", "--root", str(root), *args], capture_output=True,
                          text=True, timeout=60)


def test_the_cli_renders_and_refuses_an_unknown_stream(tmp_path: Path) -> None:
    conversation(agentlog.open_log(tmp_path), interactions=4)
    res = cli(tmp_path, "snapshot", "conv", "--keep", "1", "--out", str(tmp_path / "o"))
    assert res.returncode == 0 and "through seq 12" in res.stdout
    assert sections((tmp_path / "o" / COMMUNICATION).read_text(), "###") == [4]
    assert "up to date" in cli(tmp_path, "snapshot", "conv", "--keep", "1", "--out", str(tmp_path / "o")).stdout
    res = cli(tmp_path, "snapshot", "nope")
    assert res.returncode == 1 and "no such stream" in res.stderr


def wait_for(predicate: object, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_watch_picks_up_appends_from_another_process_across_rotation_and_stops_on_ctrl_c(
        tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]]) -> None:
    root = tmp_path / "root"
    writer = agentlog.open_log(root, segment_bytes=2000)
    writer.append("live", "question", actor="alice", interaction=1, data={"content": "hello?"})
    comm = root / "snapshots" / "live" / COMMUNICATION
    proc = subprocess.Popen([sys.executable, "-m", "agentlog", "--root", str(root), "snapshot", "live", "--watch"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    fault_procs.append(proc)
    assert wait_for(lambda: comm.exists() and b"hello?" in comm.read_bytes()), "no first rendering"
    res = cli(root, "append", "live", "answer", "from another process", "--actor", "bob", "--interaction", "1")
    assert res.returncode == 0
    assert wait_for(lambda: b"from another process" in comm.read_bytes()), "the append was not picked up"
    for i in range(2, 12):  # ~300-byte events into 2000-byte segments: several rotations
        writer.append("live", "question", actor="alice", interaction=i, data={"content": f"turn {i} " + "x" * 200})
    assert writer.stat("live").segments > 2
    assert wait_for(lambda: b"turn 11" in comm.read_bytes()), "lost track of the stream across rotation"
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err and b"stopped" in err
    assert out.count(b"through seq") >= 3


def test_watch_stops_cleanly_on_sigterm(tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]]) -> None:
    """A supervisor's SIGTERM ends a watch like Ctrl-C: exit 0, "stopped", no temp files left behind."""
    root = tmp_path / "root"
    agentlog.open_log(root).append("live", "question", actor="alice", interaction=1, data={"content": "hi"})
    comm = root / "snapshots" / "live" / COMMUNICATION
    proc = subprocess.Popen([sys.executable, "-m", "agentlog", "--root", str(root), "snapshot", "live", "--watch"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    fault_procs.append(proc)
    assert wait_for(lambda: comm.exists()), "no first rendering"
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err and err.rstrip().endswith(b"stopped")
    assert [p.name for p in comm.parent.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")] == []


# --- found in review -----------------------------------------------------------------------------------------


def test_labels_and_content_cannot_forge_headings(tmp_path: Path) -> None:
    """An addressee (any string), or the actor, type and ts of another writer's line (not checked as
    agentlog's own are) holding a newline must not start a heading; nor may a line break other than \\n."""
    log = agentlog.open_log(tmp_path)
    log.append("c", "question", actor="alice", interaction=1, to="bob\n### Interaction #99\n#### x")
    log.append("c", "answer", actor="bob", interaction=1,
               data={"content": "fine\u2028### Interaction #98\x0b## Interaction #97"})
    with (tmp_path / "logs" / "c.jsonl").open("ab") as fh:
        fh.write(b'{"type": "note\\n## Interaction #96", "actor": "sh\\r\\n### Interaction #95", '
                 b'"interaction": 2, "ts": "now\\n## Interaction #94"}\n')
    comm = Path(snapshot(log, "c", keep=5, out=tmp_path / "recent").communication).read_text()
    arch = Path(snapshot(log, "c", keep=0, out=tmp_path / "old").archive).read_text()
    assert sections(comm, "###") == [1, 2] and sections(arch, "##") == [1, 2]
    for text in (comm, arch):
        lines = text.splitlines()  # splits on \u2028, \x0b and the rest too
        assert not [line for line in lines if re.match(r"#+ Interaction #9\d", line)], text
    assert "#### alice → bob ### Interaction #99 #### x · question" in comm
    assert "#### sh ### Interaction #95 · note ## Interaction #96" in comm
    assert "- [sh ### Interaction #95 note ## Interaction #96 now ## Interaction #94]" in arch


def test_out_may_not_point_into_the_logs(tmp_path: Path) -> None:
    log = agentlog.open_log(tmp_path)
    conversation(log, interactions=1)
    for inside in (tmp_path / "logs", tmp_path / "logs" / "sub", tmp_path / "errors"):
        with pytest.raises(ValueError, match="inside the log"):
            snapshot(log, "conv", out=inside)
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["conv.jsonl"]
    res = cli(tmp_path, "snapshot", "conv", "--out", str(tmp_path / "logs"))
    assert res.returncode == 2 and "inside the log" in res.stderr
    res = cli(tmp_path, "snapshot", "../conv")
    assert res.returncode == 2 and "stream name" in res.stderr
    res = cli(tmp_path, "snapshot", "../conv", "--watch")
    assert res.returncode == 2 and "stream name" in res.stderr


def test_a_reset_log_or_another_streams_snapshot_does_not_freeze_the_view(tmp_path: Path) -> None:
    """A snapshot on disk through a later seq than the log now reaches (the log was started over), or of
    another stream in a shared --out directory, is replaced, not kept as 'newer'."""
    log = agentlog.open_log(tmp_path / "root")
    conversation(log, interactions=5)
    comm = Path(snapshot(log, "conv").communication)
    assert comm.read_text().startswith("<!-- agentlog snapshot stream=conv through_seq=15 ")
    shutil.rmtree(tmp_path / "root" / "logs")
    log = agentlog.open_log(tmp_path / "root")
    log.append("conv", "question", actor="alice", interaction=1, data={"content": "a fresh start"})
    again = snapshot(log, "conv")
    assert again.changed and "a fresh start" in comm.read_text() and "through_seq=1 " in comm.read_text()
    out = tmp_path / "shared"
    big = agentlog.open_log(tmp_path / "big")
    conversation(big, "other", interactions=5)
    snapshot(big, "other", out=out)
    small = snapshot(log, "conv", out=out)
    assert small.changed and "stream=conv through_seq=1 " in (out / COMMUNICATION).read_text()


def test_a_full_disk_replaces_neither_file_of_the_pair(tmp_path: Path, fault_tmpfs: FaultTmpfs) -> None:
    """Room for the new archive.md but not the new communication.md: the archive must not move on alone
    (the pair would then disagree about which interactions are recent)."""
    out = fault_tmpfs.mount("64k")
    log = agentlog.open_log(tmp_path / "root")
    for i in range(1, 5):
        log.append("conv", "question", actor="alice", interaction=i, data={"content": f"small {i}"})
    snapshot(log, "conv", keep=1, out=out)
    good = {name: (out / name).read_bytes() for name in (COMMUNICATION, ARCHIVE)}
    log.append("conv", "answer", actor="bob", interaction=5, data={"content": "big " * 5000})
    fill(out / "filler")
    size = (out / "filler").stat().st_size
    os.truncate(out / "filler", size - 3 * 4096)  # three pages free: the archive fits, communication not
    with pytest.raises(StorageError):
        snapshot(log, "conv", keep=1, out=out)
    for name, data in good.items():
        assert (out / name).read_bytes() == data, name
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    (out / "filler").unlink()
    result = snapshot(log, "conv", keep=1, out=out)
    assert result.changed and result.recent == [5] and result.archived == [1, 2, 3, 4]


def test_leftovers_of_a_killed_writer_are_swept(tmp_path: Path) -> None:
    log = agentlog.open_log(tmp_path / "root")
    conversation(log, interactions=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / f".{COMMUNICATION}.12345.deadbeef.tmp").write_text("half a rendering")
    (out / f".{ARCHIVE}.bak.12345.deadbeef.tmp").write_text("half a backup")
    (out / ".notes.md.1.tmp").write_text("not ours")
    assert snapshot(log, "conv", out=out).changed
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == [".notes.md.1.tmp"]


def test_watch_from_a_relative_root_beside_a_busy_stream(
        tmp_path: Path, fault_procs: list[subprocess.Popen[bytes]]) -> None:
    """watchfiles reports absolute paths; a relative --root must still match them, and a neighbouring stream
    that never stops changing must not hide this one's appends."""
    root = tmp_path / "rel"
    writer = agentlog.open_log(root, durability="write")
    writer.append("live", "question", actor="alice", interaction=1, data={"content": "first"})
    writer.append("busy", "tick")
    comm = root / "snapshots" / "live" / COMMUNICATION
    proc = subprocess.Popen([sys.executable, "-m", "agentlog", "--root", "rel", "snapshot", "live", "--watch"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    fault_procs.append(proc)
    assert wait_for(lambda: comm.exists() and b"first" in comm.read_bytes()), "no first rendering"
    writer.append("live", "answer", actor="bob", interaction=1, data={"content": "second"})
    deadline = time.monotonic() + 10
    seen = False
    while time.monotonic() < deadline and not seen:
        writer.append("busy", "tick")  # a change every 20 ms, in the same directory
        time.sleep(0.02)
        seen = b"second" in comm.read_bytes()
    assert seen, "the append was not picked up while another stream kept changing"
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0 and b"Traceback" not in err
