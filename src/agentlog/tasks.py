"""The task graph (004 S25): tasks kept in the log, atomic claims with fencing tokens, ready work.

One source of truth: every mutation is an event on the ``tasks`` stream, appended only if the stream has not
moved since the state its preconditions were checked against (``EventLog.append_if``: a compare-and-set on
the stream's last ``seq``, decided under the stream's lock). Two claimers of one task both see it unowned,
but only the first append lands; the other is told the stream moved, folds the new event, and finds the task
taken. ``tasks.graph.json`` is a view: ``{"tasks": [...], "through_seq": N}``, rewritten atomically after
each mutation and caught up on the next access when a crash left it stale; ``rebuild`` recreates it.

A claim's fencing token is the ``seq`` of its claim event: it grows with every claim (every event, in fact),
so ``release``/``complete``/``fail`` with an older token are refused: an agent that lost its claim cannot
overwrite the next owner's work.

Statuses and transitions::

    open ──claim──> claimed ──complete──> done
      ^               │  └──fail──> failed ──reopen──> open
      └───release─────┘
    open / claimed / failed ──cancel──> cancelled ──reopen──> open

Only ``open`` tasks whose dependencies are all ``done`` can be claimed (``ready()`` lists them).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from . import _json
from ._viewfile import MalformedLines, open_view_dir, read_file, replace_file, view_lock
from .errors import Conflict, CycleError, InvalidEvent
from .event import Event, uuid7

if TYPE_CHECKING:
    from .log import EventLog

__all__ = [
    "ACTIVE", "STATUSES", "STREAM", "TRANSITIONS", "TaskGraph", "claim", "complete", "create_task",
    "list_active", "load_graph", "ready", "release", "save_graph", "update_task",
]

STREAM = "tasks"
VIEW = "tasks.graph.json"
STATUSES = ("open", "claimed", "done", "failed", "cancelled")
ACTIVE = ("open", "claimed")
#: status -> statuses ``update_task(status=...)`` may move it to. Claims, releases, completions and failures
#: change the owner too and go through their own functions, which check the fencing token.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "open": ("cancelled",),
    "claimed": ("cancelled",),
    "failed": ("open", "cancelled"),
    "cancelled": ("open",),
    "done": (),
}
_PATCHABLE = ("title", "type", "inputs", "outputs", "status", "parent_id", "dependency_ids")
_MAX_ATTEMPTS = 1000


class TaskGraph:
    """The task graph of one log."""

    def __init__(self, log: EventLog) -> None:
        self.log = log

    # --- reading ---------------------------------------------------------------------------------------

    def load_graph(self) -> dict[str, Any]:
        """``{"tasks": [...], "through_seq": N}``, caught up with the stream."""
        return _as_graph(self._state())

    def get(self, task_id: str) -> dict[str, Any]:
        tasks = self._state().tasks
        if task_id not in tasks:
            raise KeyError(f"no task {task_id!r}")
        return dict(tasks[task_id])

    def list_active(self, statuses: Iterable[str] | None = None) -> list[dict[str, Any]]:
        wanted = set(ACTIVE if statuses is None else statuses)
        unknown = wanted - set(STATUSES)
        if unknown:
            raise ValueError(f"unknown status {sorted(unknown)[0]!r}; statuses are {', '.join(STATUSES)}")
        return [dict(t) for t in self._state().ordered() if t["status"] in wanted]

    def ready(self) -> list[dict[str, Any]]:
        """Open, unowned tasks whose dependencies are all done: what an agent can claim now."""
        state = self._state()
        return [dict(t) for t in state.ordered() if state.claimable(t) is None]

    def history(self, task_id: str) -> list[Event]:
        """Every event of the stream that concerns ``task_id``, oldest first."""
        self.get(task_id)
        return [ev for ev in self.log.read(STREAM) if task_id in _ids_of(ev)]

    # --- mutations --------------------------------------------------------------------------------------

    def create_task(self, task: Mapping[str, Any]) -> dict[str, Any]:
        """Create a task from ``{title?, type?, inputs?, parent_id?, dependency_ids?, id?}``; return it."""
        node = _new_node(task)

        def plan(state: _State) -> list[dict[str, Any]]:
            if node["id"] in state.tasks:
                raise Conflict(f"task {node['id']!r} already exists")
            state.check_links(node["id"], node["parent_id"], node["dependency_ids"])
            return [{"type": "task_created", "data": {"task": node}}]

        return self._mutate(plan, node["id"])

    def update_task(self, task_id: str, *, expected_version: int | None = None, **patch: Any) -> dict[str, Any]:
        """Change ``title``, ``type``, ``inputs``, ``outputs``, ``status`` (see ``TRANSITIONS``), ``parent_id``
        or ``dependency_ids``; with ``expected_version``, raise :class:`Conflict` if the task has changed."""
        bad = sorted(set(patch) - set(_PATCHABLE))
        if bad:
            raise InvalidEvent(f"cannot update {bad[0]!r}; updatable: {', '.join(_PATCHABLE)} (owner changes by "
                               "claim, release, complete and fail)")
        if not patch:
            raise InvalidEvent("nothing to update")
        clean = _check_patch(patch)

        def plan(state: _State) -> list[dict[str, Any]]:
            task = state.require(task_id)
            if expected_version is not None and task["version"] != expected_version:
                raise Conflict(f"task {task_id!r} is at version {task['version']}, not {expected_version}")
            if "status" in clean and clean["status"] != task["status"] \
                    and clean["status"] not in TRANSITIONS[task["status"]]:
                raise Conflict(f"task {task_id!r} cannot go from {task['status']} to {clean['status']} by update "
                               f"(allowed: {', '.join(TRANSITIONS[task['status']]) or 'none'})")
            if "parent_id" in clean or "dependency_ids" in clean:
                state.check_links(task_id, clean.get("parent_id", task["parent_id"]),
                                  clean.get("dependency_ids", task["dependency_ids"]))
            return [{"type": "task_updated", "data": {"id": task_id, "patch": clean}}]

        return self._mutate(plan, task_id)

    def claim(self, task_id: str, agent: str) -> int:
        """Claim ``task_id`` for ``agent``; return the fencing token. Exactly one of any number of concurrent
        claimers wins; the others get :class:`Conflict` naming the holder."""
        if not isinstance(agent, str) or not agent:
            raise InvalidEvent("agent must be a non-empty string")

        def plan(state: _State) -> list[dict[str, Any]]:
            task = state.require(task_id)
            why = state.claimable(task)
            if why is not None:
                raise Conflict(f"task {task_id!r} {why}")
            return [{"type": "task_claimed", "data": {"id": task_id, "owner": agent}}]

        return int(self._mutate(plan, task_id)["token"])

    def release(self, task_id: str, *, token: int) -> dict[str, Any]:
        """Give a claimed task back (open, unowned); refused with an old token."""
        return self._owner_event(task_id, token, "task_released", {})

    def complete(self, task_id: str, *, token: int, outputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Mark a claimed task done with ``outputs``; refused with an old token."""
        return self._owner_event(task_id, token, "task_completed", {"outputs": _object(outputs, "outputs")})

    def fail(self, task_id: str, *, token: int, error: str = "") -> dict[str, Any]:
        """Mark a claimed task failed; refused with an old token."""
        return self._owner_event(task_id, token, "task_failed", {"error": str(error)})

    def save_graph(self, graph: Mapping[str, Any]) -> None:
        """Replace the whole graph with ``graph["tasks"]`` (checked like creations: links exist, no cycle),
        as one event."""
        items = graph.get("tasks") if isinstance(graph, Mapping) else None
        if not isinstance(items, list):
            raise InvalidEvent('a graph is {"tasks": [...]}')
        nodes = [_saved_node(item) for item in items]
        seen: set[str] = set()
        for node in nodes:
            if node["id"] in seen:
                raise InvalidEvent(f"task {node['id']!r} appears twice in the graph")
            seen.add(node["id"])

        def plan(state: _State) -> list[dict[str, Any]]:
            fresh = _State()
            for saved in nodes:
                node = fresh.tasks[saved["id"]] = dict(saved)
                old = state.tasks.get(node["id"])
                if old is not None:  # a replaced task has changed: a version read before must not match
                    node["version"] = max(node["version"], int(old.get("version", 0)) + 1)
                if node["status"] == "claimed" and (old is None or old["status"] != "claimed"
                                                    or (old["owner"], old["token"]) != (node["owner"], node["token"])):
                    # Not the claim already held: a new one, whose token is this event's seq (append_if puts
                    # it right after through_seq), so tokens keep growing and no older token matches it.
                    node["token"] = state.through_seq + 1
            for node in fresh.tasks.values():
                fresh.check_links(node["id"], node["parent_id"], node["dependency_ids"])
            return [{"type": "graph_replaced", "data": {"tasks": list(fresh.tasks.values())}}]

        self._mutate(plan, None)

    def rebuild(self) -> dict[str, Any]:
        """Recreate ``tasks.graph.json`` from the stream alone."""
        state = self._fold(_State(), after=0)
        self._write_view(state, force=True)
        return _as_graph(state)

    # --- machinery --------------------------------------------------------------------------------------

    def _owner_event(self, task_id: str, token: int, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        def plan(state: _State) -> list[dict[str, Any]]:
            task = state.require(task_id)
            if task["status"] != "claimed" or task["token"] != token:
                holder = f"claimed by {task['owner']} with token {task['token']}" if task["status"] == "claimed" \
                    else task["status"]
                raise Conflict(f"stale token {token} for task {task_id!r} (it is {holder})")
            return [{"type": kind, "data": {"id": task_id, "token": token, **data}}]

        return self._mutate(plan, task_id)

    def _mutate(self, plan: Any, task_id: str | None) -> dict[str, Any]:
        state = self._state()
        rebuilt = False
        for _attempt in range(_MAX_ATTEMPTS):
            events = plan(state)
            try:
                appended = self.log.append_if(STREAM, events, last_seq=state.through_seq)
            except Conflict:
                before = state.through_seq
                self._fold(state, after=before)  # someone else moved first
                if state.through_seq == before:
                    # Nothing after the view's seq, yet the stream is elsewhere: it is behind the view (its
                    # files were replaced or cut). The stream is the truth: start again from it.
                    logging.getLogger(__name__).warning(
                        "tasks.graph.json (through seq %d) is ahead of the %s stream: rebuilt from the stream",
                        before, STREAM)
                    state, rebuilt = self._fold(_State(), after=0), True
                continue
            state.apply(appended)
            # The mutation is in the stream: a failure here only leaves the view stale. A view rebuilt from the
            # stream replaces the one that was ahead of it, whatever seq that one claims.
            self._refresh_view(state, force=rebuilt)
            return dict(state.tasks[task_id]) if task_id is not None else {}
        raise Conflict(f"the {STREAM} stream kept moving: gave up after {_MAX_ATTEMPTS} attempts")

    def _state(self) -> _State:
        """The view on disk as a starting point, caught up with the stream (rewritten if it was stale)."""
        on_disk = self._read_view()
        state = on_disk or _State()
        before = state.through_seq
        self._fold(state, after=before)
        if state.through_seq != before or on_disk is None:  # stale, missing or damaged
            self._refresh_view(state)
        return state

    def _refresh_view(self, state: _State, *, force: bool = False) -> None:
        """Write the view, or warn: the stream is the truth, so a view that cannot be written (full disk, a
        lock held too long) is caught up on a later access rather than failing a read or a landed change."""
        try:
            self._write_view(state, force=force)
        except OSError as exc:
            logging.getLogger(__name__).warning("tasks.graph.json not updated (stale until the next access): %s",
                                                exc)

    def _fold(self, state: _State, *, after: int) -> _State:
        """Apply the stream's events after ``after``; a malformed line is skipped and isolated to
        ``errors/tasks.jsonl`` (a read from the start also drops records of lines repaired since)."""
        malformed = MalformedLines(self.log.root, STREAM, "tasks")
        state.apply(self.log.read(STREAM, after=after, on_malformed=malformed))
        malformed.isolate(through_seq=state.through_seq if after == 0 else None)
        return state

    def _paths(self) -> tuple[str, str]:
        if not self.log.root or self.log.root.startswith("memory:"):
            raise ValueError("the task graph's view lives under the log's root: a memory log has none")
        return self.log.root, os.path.join(self.log.root, VIEW)

    def _read_view(self) -> _State | None:
        root, path = self._paths()
        dir_fd = open_view_dir(root, [])
        try:
            data = read_file(dir_fd, VIEW, path)
        finally:
            os.close(dir_fd)
        return _State.from_view(data)

    def _write_view(self, state: _State, *, force: bool = False) -> None:
        root, path = self._paths()
        dir_fd = open_view_dir(root, [])
        try:
            with view_lock(dir_fd, f".{VIEW}.lock", timeout=30.0, display=path):
                on_disk = _State.from_view(read_file(dir_fd, VIEW, path))
                if not force and on_disk is not None and on_disk.through_seq >= state.through_seq:
                    return  # a newer view is already there
                replace_file(dir_fd, VIEW, _json.dumps(_as_graph(state)) + b"\n", display=path, backup=False)
        finally:
            os.close(dir_fd)


class _State:
    """Tasks folded from the stream, with the seq they reflect."""

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.through_seq = 0

    @classmethod
    def from_view(cls, data: bytes | None) -> _State | None:
        if not data:
            return None
        try:
            value = _json.loads(data)
        except _json.DecodeError:
            return None  # a damaged view is rebuilt from the stream
        if not isinstance(value, dict) or not isinstance(value.get("tasks"), list) \
                or not isinstance(value.get("through_seq"), int):
            return None
        state = cls()
        for node in value["tasks"]:
            if isinstance(node, dict) and isinstance(node.get("id"), str):
                state.tasks[node["id"]] = node
        state.through_seq = value["through_seq"]
        return state

    def ordered(self) -> list[dict[str, Any]]:
        # Stable: tasks sharing a created_seq (one graph_replaced) keep their insertion order.
        return sorted(self.tasks.values(), key=lambda t: t.get("created_seq", 0))

    def require(self, task_id: str) -> dict[str, Any]:
        task = self.tasks.get(task_id)
        if task is None:
            raise KeyError(f"no task {task_id!r}")
        return task

    def claimable(self, task: Mapping[str, Any]) -> str | None:
        """``None`` if ``task`` can be claimed now, else why not."""
        if task["status"] == "claimed":
            return f"is held by {task['owner']}"
        if task["status"] != "open":
            return f"is {task['status']}"
        waiting = [d for d in task["dependency_ids"] if self.tasks.get(d, {}).get("status") != "done"]
        if waiting:
            return "is waiting for " + ", ".join(f"{d} ({self.tasks.get(d, {}).get('status', 'missing')})"
                                                 for d in waiting)
        return None

    def check_links(self, task_id: str, parent_id: str | None, deps: list[str]) -> None:
        if parent_id is not None and parent_id not in self.tasks and parent_id != task_id:
            raise InvalidEvent(f"parent {parent_id!r} does not exist")
        if parent_id == task_id:
            raise CycleError([task_id, task_id], what="parent")
        missing = [d for d in deps if d not in self.tasks and d != task_id]
        if missing:
            raise InvalidEvent(f"dependency {missing[0]!r} does not exist")
        graph = {tid: list(t["dependency_ids"]) for tid, t in self.tasks.items()}
        graph[task_id] = list(deps)
        cycle = _find_cycle(graph, task_id)
        if cycle:
            raise CycleError(cycle)
        parents = {tid: t["parent_id"] for tid, t in self.tasks.items()}
        parents[task_id] = parent_id
        seen, node = [task_id], parent_id
        while node is not None:
            if node in seen:
                raise CycleError([*seen[seen.index(node):], node], what="parent")
            seen.append(node)
            node = parents.get(node)

    def apply(self, events: Iterable[Event]) -> _State:
        for ev in events:
            if ev.seq <= self.through_seq:
                continue
            self.through_seq = ev.seq
            _apply(self, ev)
        return self


def _apply(state: _State, ev: Event) -> None:
    """One event's effect; events the stream should not hold (foreign writers) change nothing."""
    data = ev.data
    if ev.type == "graph_replaced" and isinstance(data.get("tasks"), list):
        nodes = [n for n in data["tasks"] if isinstance(n, dict) and isinstance(n.get("id"), str)]
        # One created_seq for all: the stable sort in ordered() keeps the saved list's order.
        state.tasks = {n["id"]: {"created_at": ev.ts, **n, "updated_at": ev.ts, "created_seq": ev.seq}
                       for n in nodes}
        return
    if ev.type == "task_created" and isinstance(data.get("task"), dict):
        node = dict(data["task"])
        if isinstance(node.get("id"), str) and node["id"] not in state.tasks:
            node.update(created_at=ev.ts, updated_at=ev.ts, created_seq=ev.seq, version=1)
            state.tasks[node["id"]] = node
        return
    task_id = data.get("id")
    task = state.tasks.get(task_id) if isinstance(task_id, str) else None
    if task is None:
        return
    if ev.type == "task_updated" and isinstance(data.get("patch"), dict):
        task.update({k: v for k, v in data["patch"].items() if k in _PATCHABLE})
        if task["status"] != "claimed":
            task["owner"], task["token"] = None, None
    elif ev.type == "task_claimed":
        task.update(status="claimed", owner=data.get("owner"), token=ev.seq)
    elif ev.type in ("task_released", "task_completed", "task_failed"):
        status = {"task_released": "open", "task_completed": "done", "task_failed": "failed"}[ev.type]
        task.update(status=status, owner=None, token=None)
        if ev.type == "task_completed" and isinstance(data.get("outputs"), dict):
            task["outputs"] = data["outputs"]
        if ev.type == "task_failed":
            task["error"] = data.get("error")
    else:
        return
    task["version"] = task.get("version", 0) + 1
    task["updated_at"] = ev.ts


def _find_cycle(graph: Mapping[str, list[str]], start: str) -> list[str] | None:
    """A dependency path from ``start`` back to itself, if there is one (depth-first, iterative)."""
    stack: list[tuple[str, int]] = [(start, 0)]
    path: list[str] = []
    on_path: set[str] = set()
    done: set[str] = set()
    while stack:
        node, index = stack.pop()
        if index == 0:
            path.append(node)
            on_path.add(node)
        deps = graph.get(node, [])
        if index < len(deps):
            stack.append((node, index + 1))
            nxt = deps[index]
            if nxt in on_path:
                return [*path[path.index(nxt):], nxt]
            if nxt not in done:
                stack.append((nxt, 0))
            continue
        on_path.discard(node)
        done.add(node)
        path.pop()
    return None


def _new_node(task: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(task, Mapping):
        raise InvalidEvent("a task is an object (dict)")
    allowed = {"id", "title", "type", "inputs", "parent_id", "dependency_ids", "outputs"}
    extra = sorted(set(task) - allowed - {"status", "owner", "created_at", "updated_at", "version"})
    if extra:
        raise InvalidEvent(f"unknown task field {extra[0]!r}")
    tid = task.get("id") or uuid7()
    if not isinstance(tid, str) or not tid.strip() or len(tid) > 200:
        raise InvalidEvent(f"a task id is a non-empty string of at most 200 characters, got {tid!r}")
    return {"id": tid, "type": _text(task.get("type", "task"), "type"), "title": _text(task.get("title", ""), "title"),
            "status": "open", "owner": None, "token": None, "inputs": _object(task.get("inputs"), "inputs"),
            "outputs": _object(task.get("outputs"), "outputs"), "parent_id": _opt_id(task.get("parent_id")),
            "dependency_ids": _id_list(task.get("dependency_ids"))}


def _saved_node(item: Any) -> dict[str, Any]:
    node = _new_node({k: v for k, v in item.items() if k in {"id", "title", "type", "inputs", "parent_id",
                                                              "dependency_ids", "outputs"}}) \
        if isinstance(item, Mapping) else _new_node(item)
    status = item.get("status", "open")
    if status not in STATUSES:
        raise InvalidEvent(f"unknown status {status!r}")
    if status == "claimed" and not (isinstance(item.get("owner"), str) and item["owner"]):
        raise InvalidEvent(f"task {node['id']!r} is claimed: its owner must be a non-empty string")
    node.update(status=status, owner=item.get("owner") if status == "claimed" else None,
                token=item.get("token") if status == "claimed" else None,
                version=item.get("version", 1))
    if item.get("created_at") is not None:
        node["created_at"] = item["created_at"]
    if isinstance(node["version"], bool) or not isinstance(node["version"], int) or node["version"] < 1:
        raise InvalidEvent(f"task {node['id']!r}: version must be a positive int, got {node['version']!r}")
    return node


def _check_patch(patch: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in patch.items():
        if key in ("title", "type"):
            out[key] = _text(value, key)
        elif key in ("inputs", "outputs"):
            out[key] = _object(value, key)
        elif key == "status":
            if value not in STATUSES:
                raise InvalidEvent(f"unknown status {value!r}; statuses are {', '.join(STATUSES)}")
            out[key] = value
        elif key == "parent_id":
            out[key] = _opt_id(value)
        elif key == "dependency_ids":
            out[key] = _id_list(value)
    return out


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidEvent(f"{name} must be a string, got {type(value).__name__}")
    return value


def _object(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidEvent(f"{name} must be a JSON object")
    return dict(value)


def _opt_id(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value):
        return value
    raise InvalidEvent(f"a task id is a non-empty string, got {value!r}")


def _id_list(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise InvalidEvent("dependency_ids must be a list of task ids")
    return list(dict.fromkeys(value))


def _ids_of(ev: Event) -> set[str]:
    data = ev.data
    if ev.type == "task_created" and isinstance(data.get("task"), dict):
        found = [data["task"].get("id")]
    elif ev.type == "graph_replaced" and isinstance(data.get("tasks"), list):
        found = [n.get("id") for n in data["tasks"] if isinstance(n, dict)]
    else:
        found = [data.get("id")]
    return {i for i in found if isinstance(i, str)}


def _as_graph(state: _State) -> dict[str, Any]:
    return {"tasks": [dict(t) for t in state.ordered()], "through_seq": state.through_seq}


# --- 004's module functions, on the default root -------------------------------------------------------------

def _on_default_root(method: str, *args: Any, **kwargs: Any) -> Any:
    """``TaskGraph(open_log()).<method>(...)``, closing the log afterwards (no descriptor left behind)."""
    from .log import open_log

    with open_log() as log:
        return getattr(TaskGraph(log), method)(*args, **kwargs)


def load_graph() -> dict[str, Any]:
    return _on_default_root("load_graph")  # type: ignore[no-any-return]


def save_graph(graph: Mapping[str, Any]) -> None:
    _on_default_root("save_graph", graph)


def create_task(task: Mapping[str, Any]) -> dict[str, Any]:
    return _on_default_root("create_task", task)  # type: ignore[no-any-return]


def update_task(task_id: str, **patch: Any) -> dict[str, Any]:
    return _on_default_root("update_task", task_id, **patch)  # type: ignore[no-any-return]


def list_active(statuses: Iterable[str] | None = None) -> list[dict[str, Any]]:
    return _on_default_root("list_active", statuses)  # type: ignore[no-any-return]


def ready() -> list[dict[str, Any]]:
    return _on_default_root("ready")  # type: ignore[no-any-return]


def claim(task_id: str, agent: str) -> int:
    return _on_default_root("claim", task_id, agent)  # type: ignore[no-any-return]


def release(task_id: str, *, token: int) -> dict[str, Any]:
    return _on_default_root("release", task_id, token=token)  # type: ignore[no-any-return]


def complete(task_id: str, *, token: int, outputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return _on_default_root("complete", task_id, token=token, outputs=outputs)  # type: ignore[no-any-return]
