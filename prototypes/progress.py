"""A build's events turned into what a person reads: display items, a step timeline, usage.

The build page renders these on the server; the websocket consumer sends the same items to the page
as new events arrive, so both paths read alike.
"""

from __future__ import annotations

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


def describe(event) -> dict | None:
    """One event as a display item, or as an update to an earlier item ("result"); None when the
    event is not shown in the activity list (status changes, model calls)."""
    data, kind, seq = event.data, event.kind, event.seq
    if kind == "agent_text":
        return {"seq": seq, "kind": "say", "text": data.get("text", "")}
    if kind == "tool_call":
        return {
            "seq": seq,
            "kind": "tool",
            "id": data.get("id", ""),
            "text": _tool_text(data),
            "ok": True,
            "detail": "",
        }
    if kind == "tool_result":
        return {"seq": seq, "kind": "result", "id": data.get("id", ""), "ok": data.get("ok", True),
                "detail": data.get("output", "")}  # fmt: skip
    if kind == "verify":
        steps = data.get("steps", [])
        return {"seq": seq, "kind": "verify", "text": data.get("headline", ""), "ok": data.get("passed", False),
                "tests": data.get("tests", []),
                "detail": "\n\n".join(f"$ {s['command']}\n{s['tail']}" for s in steps)}  # fmt: skip
    if kind in {"step", "log"}:
        return {"seq": seq, "kind": "note", "text": data.get("text", "")}
    if kind == "judge":
        verdict = "accepted the change" if data.get("accepted") else "asked for changes"
        return {"seq": seq, "kind": "note", "text": f"A reviewer compared the change with the idea and {verdict}.",
                "detail": data.get("text", "")}  # fmt: skip
    if kind == "diffstat":
        files = ", ".join(f["path"] for f in data.get("files", [])[:12])
        return {"seq": seq, "kind": "files", "text": f"Files changed: {files}",
                "detail": f"+{data.get('added', 0)} −{data.get('deleted', 0)} lines"}  # fmt: skip
    return None


def describe_or_hide(event) -> dict:
    """Like describe, but every event yields an item, so a page can count what it has seen."""
    return describe(event) or {"seq": event.seq, "kind": "hidden", "event": event.kind}


def activity(events) -> list[dict]:
    """The display items of a build's events, each tool call merged with its result."""
    items: list[dict] = []
    calls: dict[str, dict] = {}
    for event in events:
        item = describe(event)
        if item is None:
            continue
        if item["kind"] == "result":
            call = calls.get(item["id"])
            if call is not None:
                call["ok"], call["detail"] = item["ok"], item["detail"]
            continue
        if item["kind"] == "tool":
            calls[item["id"]] = item
        items.append(item)
    return items


def timeline(build: Build, status_events=None) -> list[dict]:
    """The steps with done / current / failed / todo. For a failed or cancelled build, the step it
    stopped in is found from its status events."""
    state = build.state
    if state in ORDER:
        reached = ORDER.index(state)
    else:
        if status_events is None:
            status_events = build.events.filter(kind="status")
        moves = [e.data.get("from") for e in status_events if e.data.get("to") == state]
        last = moves[0] if moves else Build.State.QUEUED
        reached = ORDER.index(last) if last in ORDER else 0
    steps = []
    for state_value, label in STEPS:
        position = ORDER.index(state_value)
        if state == Build.State.SUCCEEDED or position < reached:
            status = "done"
        elif position == reached:
            status = "failed" if state in (Build.State.FAILED, Build.State.CANCELLED) else "current"
        else:
            status = "todo"
        steps.append({"label": label, "status": status})
    return steps


def percent(steps: list[dict], build: Build) -> int:
    if build.state == Build.State.SUCCEEDED:
        return 100
    return int(sum(step["status"] == "done" for step in steps) * 100 / len(STEPS))


def summary(build: Build) -> dict:
    """The build's state as the live page shows it."""
    steps = timeline(build)
    return {
        "state": build.state,
        "label": build.get_state_display(),
        "final": build.is_final,
        "steps": steps,
        "percent": percent(steps, build),
        "started_at": build.started_at.isoformat() if build.started_at else None,
        "finished_at": build.finished_at.isoformat() if build.finished_at else None,
        "turns": build.turns,
    }


def build_progress(build: Build) -> dict:
    events = list(build.events.order_by("seq"))
    steps = timeline(build, [e for e in events if e.kind == "status"])
    return {
        "steps": steps,
        "percent": percent(steps, build),
        "items": activity(events),
        "last_seq": events[-1].seq if events else 0,
        "verify": build.verify or next((e.data for e in reversed(events) if e.kind == "verify"), None),
    }
