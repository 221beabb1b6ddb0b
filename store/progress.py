"""A build's events turned into what a person reads: a step timeline and an activity list."""

from __future__ import annotations

from dataclasses import dataclass, field

from prototypes.models import Build

STEPS = [
    (Build.State.PREPARING, "Getting the code"),
    (Build.State.RUNNING, "Claude makes the change"),
    (Build.State.VERIFYING, "Checking build and tests"),
    (Build.State.PACKAGING, "Packaging"),
    (Build.State.SUCCEEDED, "Ready"),
]
ORDER = [Build.State.QUEUED] + [state for state, _ in STEPS]
EDIT_WORDS = {"view": "Read", "create": "Created", "str_replace": "Changed", "insert": "Added to"}


@dataclass
class Item:
    kind: str  # "say", "tool", "verify", "note", "files"
    text: str = ""
    detail: str = ""
    ok: bool = True
    tests: list = field(default_factory=list)
    seq: int = 0


def _tool_text(data: dict) -> str:
    tool = data.get("tool")
    if tool == "edit":
        return f"{EDIT_WORDS.get(data.get('command'), 'Opened')} {data.get('path') or 'a file'}"
    if tool == "run":
        return f"Ran: {data.get('command', '')}"
    if tool == "search":
        where = f" in {data['path']}" if data.get("path") else ""
        return f"Searched for “{data.get('pattern', '')}”{where}"
    if tool == "verify":
        return "Ran the app's own build and tests"
    if tool == "finish":
        return "Said it is done"
    return f"Used {tool}"


def activity(events) -> list[Item]:
    items: list[Item] = []
    calls: dict[str, Item] = {}
    for event in events:
        data, kind = event.data, event.kind
        if kind == "agent_text":
            items.append(Item("say", data.get("text", ""), seq=event.seq))
        elif kind == "tool_call":
            item = Item("tool", _tool_text(data), seq=event.seq)
            calls[data.get("id", "")] = item
            items.append(item)
        elif kind == "tool_result":
            item = calls.get(data.get("id", ""))
            if item is not None:
                item.ok = data.get("ok", True)
                item.detail = data.get("output", "")
        elif kind == "verify":
            items.append(Item("verify", data.get("headline", ""), ok=data.get("passed", False),
                              tests=data.get("tests", []), seq=event.seq,
                              detail="\n\n".join(f"$ {s['command']}\n{s['tail']}" for s in data.get("steps", []))))  # fmt: skip
        elif kind in {"step", "log"}:
            items.append(Item("note", data.get("text", ""), seq=event.seq))
        elif kind == "diffstat":
            files = ", ".join(f["path"] for f in data.get("files", [])[:12])
            items.append(Item("files", f"Files changed: {files}", seq=event.seq,
                              detail=f"+{data.get('added', 0)} −{data.get('deleted', 0)} lines"))  # fmt: skip
    return items


def timeline(build: Build) -> list[dict]:
    state = build.state
    reached = ORDER.index(state) if state in ORDER else None
    if reached is None:  # failed or cancelled: find how far it got from its status events
        moves = [e.data.get("from") for e in build.events.filter(kind="status") if e.data.get("to") == state]
        last = moves[0] if moves else Build.State.QUEUED
        reached = ORDER.index(last) if last in ORDER else 0
    steps = []
    for state_value, label in STEPS:
        position = ORDER.index(state_value)
        if build.state == Build.State.SUCCEEDED or position < reached:
            status = "done"
        elif position == reached:
            status = "failed" if build.state in (Build.State.FAILED, Build.State.CANCELLED) else "current"
        else:
            status = "todo"
        steps.append({"label": label, "status": status})
    return steps


def build_progress(build: Build) -> dict:
    events = list(build.events.order_by("seq"))
    done = sum(step["status"] == "done" for step in timeline(build))
    return {
        "steps": timeline(build),
        "percent": 100 if build.state == Build.State.SUCCEEDED else int(done * 100 / len(STEPS)),
        "items": activity(events),
        "verify": build.verify or next((e.data for e in reversed(events) if e.kind == "verify"), None),
    }
