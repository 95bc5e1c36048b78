"""``agentlog task``: the task graph from the command line (add, list, ready, claim, done, update, show, graph,
rebuild)."""

from __future__ import annotations

import argparse
from typing import Any

from .. import _json
from ..log import open_log
from ..tasks import TaskGraph
from ._errors import Failure, UsageError, json_object_option
from ._output import clean, dumps, write_line

__all__ = ["task"]


_NEEDS = {"add": "TITLE", "claim": "ID", "done": "ID", "update": "ID", "show": "ID"}


def task(args: argparse.Namespace) -> int:
    needs = _NEEDS.get(args.action)
    if needs and args.target is None:
        raise UsageError(f"task {args.action} needs {needs}")
    if not needs and args.target is not None:
        raise UsageError(f"task {args.action} takes no TITLE or ID (got {args.target!r})")
    if args.action == "claim" and not args.agent:
        raise UsageError("task claim needs --agent A")
    args.title = args.id = args.target
    with open_log(args.root) as log:
        graph = TaskGraph(log)
        try:
            return _ACTIONS[args.action](graph, args)
        except KeyError as exc:  # an unknown task id
            raise Failure(str(exc.args[0]) if exc.args else "no such task") from None


def _add(graph: TaskGraph, args: argparse.Namespace) -> int:
    node = graph.create_task({"title": args.title, "type": args.type, "dependency_ids": args.dep or [],
                              "parent_id": args.parent, "inputs": json_object_option(args.input, "--input")})
    write_line(dumps(node) if args.json else node["id"])
    return 0


def _list(graph: TaskGraph, args: argparse.Namespace) -> int:
    _print_tasks(graph.list_active(args.status or None), args.json)
    return 0


def _ready(graph: TaskGraph, args: argparse.Namespace) -> int:
    _print_tasks(graph.ready(), args.json)
    return 0


def _claim(graph: TaskGraph, args: argparse.Namespace) -> int:
    token = graph.claim(args.id, args.agent)
    write_line(dumps({"id": args.id, "owner": args.agent, "token": token}) if args.json else str(token))
    return 0


def _done(graph: TaskGraph, args: argparse.Namespace) -> int:
    token = args.token
    if token is None:
        current = graph.get(args.id)
        if current["status"] != "claimed":
            raise Failure(f"task {args.id!r} is {current['status']}, not claimed: claim it first")
        if args.agent is not None and current["owner"] != args.agent:
            # The fencing --token gives, for a caller that kept only its name: it may finish only its own claim.
            raise Failure(f"task {args.id!r} is held by {current['owner']}, not {args.agent}")
        token = current["token"]  # this claim's token: if the claim changes before complete(), it is refused
    node = graph.complete(args.id, token=token, outputs=json_object_option(args.output, "--output"))
    write_line(dumps(node) if args.json else f"{node['id']} done")
    return 0


_TEXT_FIELDS = ("title", "type", "status")  # always strings: taken as written, never as JSON


def _update(graph: TaskGraph, args: argparse.Namespace) -> int:
    patch: dict[str, Any] = {}
    for item in args.set or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set takes key=value, got {item!r}")
        if key in _TEXT_FIELDS:
            patch[key] = raw  # `--set title=42` means the title "42", not the number
            continue
        try:
            patch[key] = _json.loads(raw)
        except _json.DecodeError:
            patch[key] = raw  # a bare word is a string
    node = graph.update_task(args.id, expected_version=args.expect_version, **patch)
    write_line(dumps(node) if args.json else f"{node['id']} version {node['version']}")
    return 0


def _show(graph: TaskGraph, args: argparse.Namespace) -> int:
    node = graph.get(args.id)
    history = graph.history(args.id)
    if args.json:
        write_line(dumps({"task": node, "history": [ev.to_dict() for ev in history]}))
        return 0
    for key in ("id", "title", "type", "status", "owner", "token", "version", "parent_id", "dependency_ids",
                "inputs", "outputs", "created_at", "updated_at"):
        value = node.get(key)
        write_line(clean(f"{key + ':':<15} {value if isinstance(value, str) else dumps(value)}"))
    write_line("history:")
    for ev in history:
        detail = {k: v for k, v in ev.data.items() if k not in ("id", "task")}
        write_line(clean(f"  {ev.ts} #{ev.seq} {ev.type}" + (f" {dumps(detail)}" if detail else "")))
    return 0


def _graph(graph: TaskGraph, args: argparse.Namespace) -> int:
    tasks = graph.load_graph()["tasks"]
    write_line(render_graph(tasks, args.format).rstrip("\n"))
    return 0


def _rebuild(graph: TaskGraph, args: argparse.Namespace) -> int:
    result = graph.rebuild()
    write_line(dumps({"tasks": len(result["tasks"]), "through_seq": result["through_seq"]}) if args.json
               else f"rebuilt {len(result['tasks'])} task(s) through seq {result['through_seq']}")
    return 0


_ACTIONS = {"add": _add, "list": _list, "ready": _ready, "claim": _claim, "done": _done, "update": _update,
            "show": _show, "graph": _graph, "rebuild": _rebuild}


def render_graph(tasks: list[dict[str, Any]], fmt: str) -> str:
    """The graph as indented text, a Mermaid flowchart or Graphviz dot; edges run dependency -> dependent."""
    if fmt == "mermaid":
        lines = ["flowchart TD"]
        for t in tasks:
            label = " ".join(_label(t).split()).replace('"', "#quot;")  # a line break would end the statement
            lines.append(f'    {_node(t["id"])}["{label}"]')
        for t in tasks:
            lines += [f"    {_node(d)} --> {_node(t['id'])}" for d in t["dependency_ids"]]
            if t.get("parent_id"):
                lines.append(f"    {_node(t['parent_id'])} -.-> {_node(t['id'])}")
        return "\n".join(lines) + "\n"
    if fmt == "dot":
        lines = ["digraph tasks {", "  rankdir=LR;"]
        for t in tasks:
            lines.append(f"  {_json.dumps(t['id']).decode()} [label={_json.dumps(_label(t)).decode()}];")
        for t in tasks:
            lines += [f"  {_json.dumps(d).decode()} -> {_json.dumps(t['id']).decode()};" for d in t["dependency_ids"]]
            if t.get("parent_id"):
                lines.append(f"  {_json.dumps(t['parent_id']).decode()} -> {_json.dumps(t['id']).decode()} "
                             "[style=dashed];")
        return "\n".join([*lines, "}"]) + "\n"
    children: dict[str | None, list[dict[str, Any]]] = {}
    ids = {t["id"] for t in tasks}
    for t in tasks:
        children.setdefault(t.get("parent_id") if t.get("parent_id") in ids else None, []).append(t)
    lines = []

    def walk(parent: str | None, depth: int) -> None:
        for t in children.get(parent, []):
            deps = f"  (after {', '.join(t['dependency_ids'])})" if t["dependency_ids"] else ""
            lines.append(clean(f"{'  ' * depth}- [{t['status']}] {_label(t)}{deps}"))
            walk(t["id"], depth + 1)

    walk(None, 0)
    return "\n".join(lines) + "\n"


def _label(t: dict[str, Any]) -> str:
    owner = f" @{t['owner']}" if t.get("owner") else ""
    return f"{t['id']}: {t.get('title') or t.get('type')}{owner}"


def _node(task_id: str) -> str:
    """A Mermaid node id: letters, digits and _ only (ids may hold anything else)."""
    return "t_" + "".join(c if c.isalnum() else f"_{ord(c):x}_" for c in task_id)


def _print_tasks(tasks: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for t in tasks:
            write_line(dumps(t))
        return
    for t in tasks:
        owner = f" @{t['owner']}" if t.get("owner") else ""
        deps = f" after {','.join(t['dependency_ids'])}" if t["dependency_ids"] else ""
        write_line(clean(f"{t['id']}  {t['status']:<9} {t.get('title') or t.get('type')}{owner}{deps}"))


