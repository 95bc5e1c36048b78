"""agentlog demo: several agent processes share one log at once, then we look at it.

Run it with::

    .venv/bin/python examples/demo.py            # a fresh temporary log, removed afterwards
    .venv/bin/python examples/demo.py --root DIR # or a log directory of your choice (kept)

Four agents run at the same time, each in its own process:

* ``alice`` and ``bob`` use the ``agentlog`` command line: they ask questions in the shared stream
  ``team-chat`` (alice the odd interaction numbers, bob the even ones), post a heartbeat to ``status``,
  and finally write their ledger as one batch piped into ``agentlog append ledger/<name> -``.
* ``helper-odd`` and ``helper-even`` use the Python library: they ``follow`` ``team-chat`` live and answer
  each question of their parity with the same interaction number, noting each answer in their ledger.

Then the demo runs ``agentlog tail``, ``agentlog query --type``, ``agentlog streams``, ``agentlog verify``,
``agentlog snapshot`` (communication.md / archive.md) and ``agentlog summary`` on the result, printing each
command first so you can run them yourself.

Last, the task graph: the demo adds five tasks (two waiting for another), three worker processes pull work
with ``ready`` / ``claim`` / ``complete`` at once, each task is done exactly once, and ``agentlog run`` wraps
a command in an agent's ledger before ``agentlog status`` shows the agents.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

try:
    import agentlog
except ImportError:  # run from a checkout without installing: use ../src
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [sys.path[0], os.environ.get("PYTHONPATH")]))
    import agentlog

CHAT = "team-chat"
QUESTIONS = {
    "alice": ["Do I need a server to share a log?", "Where do the logs live?", "Can two agents append at once?"],
    "bob": ["What does verify check?", "How big can an event be?", "Does tail -f survive rotation?"],
}
ANSWERS = {
    1: "No: point every agent at the same --root (or AGENTLOG_ROOT); it is plain files.",
    2: "It checks strict JSON, gapless seq, ts order and torn tails.",
    3: "Under ROOT/logs/<stream>.jsonl, one JSON object per line.",
    4: "Up to max_event_bytes, 16 MiB by default.",
    5: "Yes: every append takes the stream file's flock, so records never interleave.",
    6: "Yes: a follower drains the sealed segment before moving to the new one.",
}


def say(who: str, text: str) -> None:
    print(f"  [{who:>11}] {text}", flush=True)


def cli(root: str, *args: str, stdin: str | None = None) -> str:
    """Run ``agentlog --root ROOT ARGS...`` in a new process and return its stdout."""
    done = subprocess.run([sys.executable, "-m", "agentlog", "--root", root, *args], input=stdin,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"agentlog {shlex.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


# --- the agents ---------------------------------------------------------------------------------------

def cli_agent(name: str, root: str) -> None:
    """An agent that talks to the log only through the ``agentlog`` command line."""
    first = 1 if name == "alice" else 2
    cli(root, "append", "status", "heartbeat", "--actor", name, "--data", '{"state": "asking"}')
    for k, question in enumerate(QUESTIONS[name]):
        interaction = first + 2 * k
        event_id = cli(root, "append", CHAT, "question", question, "--actor", name,
                       "--interaction", str(interaction), "--visibility", "public").strip()
        say(name, f"asked  i={interaction} via the CLI  -> id {event_id[:13]}...")
        time.sleep(0.05)
    ledger = "".join(
        f'{{"type": "asked", "interaction": {first + 2 * k}, "data": {{"chars": {len(q)}}}}}\n'
        for k, q in enumerate(QUESTIONS[name]))
    ids = cli(root, "append", f"ledger/{name}", "-", "--actor", name, stdin=ledger).split()
    say(name, f"wrote its ledger: {len(ids)} events in one batch from stdin")
    cli(root, "append", "status", "heartbeat", "--actor", name, "--data", '{"state": "done"}')


def library_agent(name: str, root: str, parity: int, count: int) -> None:
    """An agent that uses the Python library: follow the chat live and answer its share of questions."""
    with agentlog.open_log(root) as log:
        log.append("status", "heartbeat", actor=name, data={"state": "listening"})
        answered = 0
        # follow() yields what is there, then waits for more; timeout ends it if the askers go quiet.
        for ev in log.follow(CHAT, timeout=15):
            if ev.type != "question" or ev.interaction is None or ev.interaction % 2 != parity:
                continue
            answer = log.append(CHAT, "answer", actor=name, interaction=ev.interaction, visibility="public",
                                data={"content": ANSWERS.get(ev.interaction, "I don't know."),
                                      "in_reply_to": ev.id})
            log.append(f"ledger/{name}", "answered", actor=name, interaction=ev.interaction,
                       data={"question_seq": ev.seq, "answer_seq": answer.seq})
            say(name, f"answered i={ev.interaction} via the library (seq {answer.seq})")
            answered += 1
            if answered == count:
                break
        log.append("status", "heartbeat", actor=name, data={"state": "done", "answered": answered})


def task_worker(name: str, root: str) -> None:
    """Pull work until nothing is ready: claim (exactly one claimer wins), do it, complete with the token."""
    from agentlog.tasks import TaskGraph

    with agentlog.open_log(root) as log:
        graph = TaskGraph(log)
        while True:
            ready = graph.ready()
            if not ready:
                if not graph.list_active():
                    return
                time.sleep(0.05)  # something is still being worked on, and may unblock a dependent task
                continue
            try:
                token = graph.claim(ready[0]["id"], name)
            except agentlog.Conflict:
                continue  # another worker got it first
            say(name, f"claimed {ready[0]['title']!r} (token {token})")
            time.sleep(0.3)  # the work itself
            graph.complete(ready[0]["id"], token=token, outputs={"by": name})


# --- the show -------------------------------------------------------------------------------------------

def show(root: str, *args: str) -> int:
    """Print a command as a user would type it, then run it and print its output."""
    print(f"\n$ agentlog --root {shlex.quote(root)} {shlex.join(args)}", flush=True)
    done = subprocess.run([sys.executable, "-m", "agentlog", "--root", root, *args], check=False)
    return done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="log directory to use (default: a temporary one, removed afterwards)")
    parser.add_argument("--cli-agent", metavar="NAME", help=argparse.SUPPRESS)  # how the CLI agents start
    args = parser.parse_args(argv)

    temp = None
    if args.root is None:
        temp = tempfile.mkdtemp(prefix="agentlog-demo-")
        args.root = os.path.join(temp, "log")
    if args.cli_agent:
        cli_agent(args.cli_agent, args.root)
        return 0

    try:
        print(f"agentlog {agentlog.__version__} demo: a shared log at {args.root}\n")
        print("starting 4 agents at once, each its own process:")
        print("  alice, bob                 ask questions using the `agentlog` command line")
        print("  helper-odd, helper-even    follow the chat and answer using the Python library\n")
        started = time.monotonic()
        helpers = [multiprocessing.Process(target=library_agent, args=(name, args.root, parity, 3))
                   for name, parity in (("helper-odd", 1), ("helper-even", 0))]
        for proc in helpers:
            proc.start()
        askers = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--cli-agent", name,
                                    "--root", args.root]) for name in QUESTIONS]
        failed = [p.args[3] for p in askers if p.wait(timeout=60) != 0]
        for proc in helpers:
            proc.join(timeout=30)
            if proc.exitcode != 0:
                failed.append(proc.name)
        print(f"\nall agents finished in {time.monotonic() - started:.1f} s"
              + (f"; FAILED: {', '.join(map(str, failed))}" if failed else ""))

        status = 1 if failed else 0
        status |= show(args.root, "tail", CHAT, "-n", "8")
        status |= show(args.root, "query", "--type", "question", "--actor", "alice")
        status |= show(args.root, "query", "--type", "answer", "--json", "--stream", CHAT)
        status |= show(args.root, "streams")
        status |= show(args.root, "verify")
        status |= show(args.root, "snapshot", CHAT, "--keep", "2")
        communication = os.path.join(args.root, "snapshots", CHAT, "communication.md")
        print(f"$ head -n 12 {shlex.quote(communication)}")
        with open(communication, encoding="utf-8") as f:
            print("".join(f.readlines()[:12]))
        status |= show(args.root, "summary", CHAT)

        print("\nthe task graph: five tasks, three workers pulling from `ready` and claiming at once")
        first = cli(args.root, "task", "add", "write the parser").strip()
        for title in ("write the docs", "set up CI"):
            cli(args.root, "task", "add", title)
        for title in ("test the parser", "release"):
            cli(args.root, "task", "add", title, "--dep", first)
        status |= show(args.root, "task", "ready")
        workers = [multiprocessing.Process(target=task_worker, args=(f"worker-{n}", args.root)) for n in range(3)]
        for proc in workers:
            proc.start()
        for proc in workers:
            proc.join(timeout=60)
            status |= 1 if proc.exitcode != 0 else 0
        status |= show(args.root, "task", "list", "--status", "done")
        status |= show(args.root, "task", "graph")
        status |= show(args.root, "run", "--agent", "builder", "--task", "build", "--",
                       sys.executable, "-c", "print('building...')")
        status |= show(args.root, "status")
        print("\nthe log is plain JSONL; look at it with any tool, e.g.:")
        print(f"$ tail -n 2 {shlex.quote(os.path.join(args.root, 'logs', CHAT + '.jsonl'))}")
        with open(os.path.join(args.root, "logs", CHAT + ".jsonl"), encoding="utf-8") as f:
            for line in f.readlines()[-2:]:
                print(line, end="")
        print("\ndemo " + ("finished: every command exited 0" if status == 0 else "FAILED"))
        return status
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
