"""A build's events turned into what a person reads: display items, a step timeline, usage.

The build page renders these on the server; the websocket consumer sends the same items to the page
as new events arrive, so both paths read alike.
"""

from __future__ import annotations

from prototypes.models import Build, Screenshot

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


MAX_SAID = 300  # characters of one browser message as shown


def _clip(text: str, limit: int = MAX_SAID) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _findings(page: dict) -> list[tuple[str, str]]:
    """A page's findings as (key, plain words), the worst first: an uncaught error stops the page's
    script, so it comes before what the console said. The key is what agents.browser compares to
    tell a problem that was already there before the change (same kind, same message)."""
    where = f"the page {page.get('path') or '/'}"
    found = [(f"exception:{m}", f"{where} stopped with an error: {_clip(m)}") for m in page.get("exceptions") or []]
    found += [(f"console:{m}", f"{where} reported an error: {_clip(m)}") for m in page.get("console_errors") or []]
    found += [(f"request:{m}", f"{where} could not load {_clip(m)}") for m in page.get("failed_requests") or []]
    if page.get("blank"):
        found.append(("blank", f"{where} was blank: nothing showed on it"))
    found += [
        (
            f"step:{s.get('step')}:{s.get('note')}",
            f"{_clip(s.get('step', 'a step'))} did not work: {_clip(s.get('note', ''))}",
        )
        for s in page.get("steps") or []
        if not s.get("passed", True)
    ]
    return found


def smoke_view(smoke: dict | None) -> dict | None:
    """The browser check (agents.browser.SmokeReport.as_event(), stored as Build.smoke) as the build
    page, the version page and the pull request show it: a status, a first line saying in plain words
    what the browser saw, and each page's findings. Problems that were already there before the change
    (`before`, same page, same finding) are listed apart: they are not the change's doing and did not
    fail the check. None when no check ran."""
    if not smoke:
        return None
    old = {(p.get("path") or "/", key) for p in smoke.get("before") or [] for key, _ in _findings(p)}
    pages, before = [], []
    for page in smoke.get("pages") or []:
        path = page.get("path") or "/"
        findings = _findings(page)
        steps = [{"text": s.get("step", ""), "ok": bool(s.get("passed", True)), "detail": s.get("note", "")}
                 for s in page.get("steps") or []]  # fmt: skip
        pages.append({"path": path, "title": page.get("title", ""), "steps": steps,
                      "problems": [words for key, words in findings if (path, key) not in old]})  # fmt: skip
        still = [words for key, words in findings if (path, key) in old]
        if still:
            before.append({"path": path, "problems": still})
    problems = [problem for page in pages for problem in page["problems"]]
    if smoke.get("skipped"):
        status, headline = "skipped", f"Not checked in a browser: {smoke['skipped']}"
    elif smoke.get("passed"):
        steps = sum(len(page["steps"]) for page in pages)
        status = "passed"
        headline = f"Checked in a browser: {len(pages)} page{'s' if len(pages) != 1 else ''} opened without errors"
        headline += f" and {steps} step{'s' if steps != 1 else ''} worked." if steps else "."
    else:
        status = "failed"
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            headline = f"The browser saw a problem: {problems[0]}{more}."
        else:
            headline = "The browser check did not pass."
    return {"status": status, "headline": headline, "pages": pages, "before": before}


def checklist_items(items: list) -> list[dict]:
    """A checklist as {"item", "passed", "note"}: the `checklist` event lists the items alone (written,
    not graded yet: passed None), the `judge` event and Build.checklist carry the grades."""
    return [item if isinstance(item, dict) else {"item": str(item), "passed": None, "note": ""} for item in items]


def checklist_score(checklist: list[dict]) -> tuple[int, int]:
    """(items passed, items) of a judge's checklist."""
    return sum(item.get("passed") is True for item in checklist), len(checklist)


def before_after(shots) -> list[dict]:
    """A build's evidence screenshots per page, then per size (desktop first), before beside after:
    [{"page": "/", "rows": [{"size", "label", "before": Screenshot | None, "after": Screenshot | None}]}]."""
    pages: dict[str, dict[str, dict]] = {}
    for shot in shots:
        rows = pages.setdefault(shot.page or "/", {})
        row = rows.setdefault(shot.size, {"size": shot.size, "label": shot.get_size_display(), "before": None,
                                          "after": None})  # fmt: skip
        if shot.moment in (Screenshot.Moment.BEFORE, Screenshot.Moment.AFTER):
            row[shot.moment] = shot
    sizes = [Screenshot.Size.DESKTOP, Screenshot.Size.PHONE]
    return [{"page": page, "rows": [rows[size] for size in sizes if size in rows]} for page, rows in pages.items()]


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
                "tests": data.get("tests", []), "smoke": smoke_view(data.get("smoke")),
                "detail": "\n\n".join(f"$ {s['command']}\n{s['tail']}" for s in steps)}  # fmt: skip
    if kind == "checklist":
        items = checklist_items(data.get("items") or [])
        return {"seq": seq, "kind": "checklist", "items": items,
                "text": f"A reviewer wrote {len(items)} thing{'s' if len(items) != 1 else ''} to check in the result."}  # fmt: skip
    if kind in {"step", "log"}:
        return {"seq": seq, "kind": "note", "text": data.get("text", "")}
    if kind == "judge":
        items = checklist_items(data.get("items") or [])
        passed, total = checklist_score(items)
        verdict = "accepted the change" if data.get("accepted") else "asked for changes"
        score = f" ({passed} of {total} checks passed)" if total else ""
        return {"seq": seq, "kind": "checklist" if items else "note", "items": items,
                "text": f"A reviewer compared the change with the idea and {verdict}{score}.",
                "detail": data.get("verdict") or data.get("text", "")}  # fmt: skip
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
    """Everything the build page shows. While the build runs, the browser check and the checklist come
    from its newest events; once it ended, from what the pipeline stored on the build."""
    events = list(build.events.order_by("seq"))
    steps = timeline(build, [e for e in events if e.kind == "status"])
    verify = build.verify or next((e.data for e in reversed(events) if e.kind == "verify"), None)
    checklist = build.checklist or checklist_items(
        next(
            (e.data["items"] for e in reversed(events) if e.kind in ("judge", "checklist") and e.data.get("items")), []
        )
    )
    return {
        "steps": steps,
        "percent": percent(steps, build),
        "items": activity(events),
        "last_seq": events[-1].seq if events else 0,
        "verify": verify,
        "smoke": smoke_view(build.smoke or (verify or {}).get("smoke")),
        "checklist": checklist,
        "score": checklist_score(checklist),
    }
