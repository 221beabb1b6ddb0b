"""A build's events turned into what a person reads: display items, a step timeline, usage.

The build page renders these on the server; the websocket consumer sends the same items to the page
as new events arrive, so both paths read alike.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from decimal import Decimal

from agents.pricing import SAMPLE_VERSION
from prototypes.models import Build, Screenshot

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


# The steps a build goes through, in order: (key, label). "browser" is shown only for builds that open
# the app in a browser (a `smoke` step, or a browser check in a verify event, says so).
STEP_KEYS = [
    ("preparing", "Getting the code"),
    ("running", "Claude makes the change"),
    ("verifying", "Checking build and tests"),
    ("browser", "Checking in a browser"),
    ("packaging", "Packaging"),
    ("succeeded", "Ready"),
]
KEYS = [key for key, _ in STEP_KEYS]
# The engine's `step` events (agents/engine.py) and the build states, as the step they belong to.
ENGINE_STEP = {"workspace": "preparing", "setup": "preparing", "smoke": "preparing", "checklist": "preparing",
               "agent": "running", "verify": "verifying", "package": "packaging"}  # fmt: skip
STATE_STEP = {Build.State.PREPARING: "preparing", Build.State.RUNNING: "running",
              Build.State.VERIFYING: "verifying", Build.State.PACKAGING: "packaging",
              Build.State.SUCCEEDED: "succeeded"}  # fmt: skip
# The step an error stops, whatever step the build had reached: a sample conversation that is missing
# fails before the workspace is made, but it is Claude who could not start.
ERROR_STEP = {
    "no_recording": "running", "sample_does_not_fit": "running", "recording_mismatch": "running",
    "refused": "running", "budget_reached": "running", "turns_exhausted": "running", "stuck": "running",
    "no_finish": "running", "context_exceeded": "running", "model_unavailable": "running",
    "model_unpriced": "running", "judge_rejected": "running",
    "tests_failed": "verifying", "build_failed": "verifying", "smoke_failed": "browser",
    "packaging_failed": "packaging", "signing_failed": "packaging", "unsafe_files": "packaging",
    "workspace_failed": "preparing", "setup_failed": "preparing", "recipe_invalid": "preparing",
}  # fmt: skip
# How much of the bar each step fills (percent at its start); within a step the bar moves with its
# sub-steps (preparing), the model's turns (running) and its checks (verifying).
SPAN = {"preparing": (0, 10), "running": (10, 75), "verifying": (75, 88), "browser": (88, 92),
        "packaging": (92, 99), "succeeded": (100, 100)}  # fmt: skip
PREPARING_PARTS = 4  # workspace, setup, smoke, checklist: not every build has all of them
TURNS_HALFWAY = 8  # turns at which the bar is halfway through Claude's step: it never claims the end early
# The events a build's progress is read from (walk): the feed needs no others to compute a summary.
PROGRESS_KINDS = ("status", "step", "verify", "model_call")


def walk(build: Build, events) -> dict:
    """Read a build's events (in seq order, up to some point) into where it stood then: the step reached,
    how far into it, whether it opens a browser, the final state if it ended, and the usage so far."""
    return _as_of(build, fold(_start(), events))


def _start() -> dict:
    """Where a build stands before its first event, as `fold` reads events into it."""
    return {"state": None, "step": None, "parts": set(), "turns": 0, "checks": 0, "browser": False, "input": 0,
            "output": 0, "write": 0, "read": 0, "cost": Decimal(0), "sample": False}  # fmt: skip


def _copy(seen: dict) -> dict:
    return {**seen, "parts": set(seen["parts"])}


def fold(seen: dict, events) -> dict:
    """Read more events (in seq order, following on from those `seen` was read from) into `seen`, in place.
    Reads the events alone, never the build, so a fold can be kept and continued (summary_as_of)."""
    for event in events:
        data = event.data or {}
        if event.kind == "status":
            seen["state"] = data.get("to")
            step = STATE_STEP.get(data.get("to"))
        elif event.kind == "step":
            step = ENGINE_STEP.get(data.get("step"))
            if data.get("step") == "smoke":
                seen["browser"] = True
            if step == "preparing":
                seen["parts"].add(data.get("step"))
        elif event.kind == "verify":
            step = None
            seen["checks"] += 1
            if data.get("smoke"):
                seen["browser"] = True
                if seen["step"] == "verifying":
                    step = "browser"  # the tests ran, and the browser check with them
        elif event.kind == "model_call":
            step = None
            seen["turns"] = max(seen["turns"], int(data.get("turn") or 0))
            seen["input"] += int(data.get("input_tokens") or 0)
            seen["output"] += int(data.get("output_tokens") or 0)
            seen["write"] += int(data.get("cache_write_tokens") or 0)
            seen["read"] += int(data.get("cache_read_tokens") or 0)
            seen["cost"] += Decimal(str(data.get("cost") or 0))
            seen["sample"] = seen["sample"] or data.get("price_version") == SAMPLE_VERSION
        else:
            step = None
        # Steps only move forward: a late event of an earlier step never takes the bar back.
        if step is not None and (seen["step"] is None or KEYS.index(step) > KEYS.index(seen["step"])):
            seen["step"] = step
    return seen


def _as_of(build: Build, seen: dict) -> dict:
    """A fold completed with what the build row says (a copy: the fold itself stays events-only)."""
    seen = _copy(seen)
    seen["browser"] = seen["browser"] or bool(build.smoke)
    if seen["state"] is None:
        seen["state"] = build.state  # no status event yet (or a build made without the pipeline)
        seen["step"] = seen["step"] or STATE_STEP.get(build.state)
    return seen


def timeline(build: Build, events=None) -> list[dict]:
    """The steps with done / current / failed / todo, from the build's events: every step the build
    reached is current or done, in order, however many events arrived at once. A failed build marks the
    step its error belongs to (ERROR_STEP), else the step it stopped in."""
    return _timeline(build, walk(build, _events(build, events)))


def _events(build: Build, events):
    return list(build.events.order_by("seq")) if events is None else events


def _keys(seen: dict) -> list[str]:
    return [key for key in KEYS if key != "browser" or seen["browser"]]


def _failed_step(build: Build, seen: dict) -> str | None:
    if seen["state"] not in (Build.State.FAILED, Build.State.CANCELLED):
        return None
    keys = _keys(seen)
    step = ERROR_STEP.get(build.error_code) if seen["state"] == Build.State.FAILED else None
    if step == "browser" and "browser" not in keys:
        step = "verifying"
    return step or seen["step"] or "preparing"


def _timeline(build: Build, seen: dict) -> list[dict]:
    keys = _keys(seen)
    failed = _failed_step(build, seen)
    reached = keys.index(seen["step"]) if seen["step"] in keys else -1
    labels = dict(STEP_KEYS)
    steps = []
    for position, key in enumerate(keys):
        if seen["state"] == Build.State.SUCCEEDED:
            status = "done"
        elif failed is not None:
            stop = keys.index(failed)
            status = "failed" if position == stop else "done" if position < stop and position <= reached else "todo"
        elif position < reached:
            status = "done"
        elif position == reached:
            status = "current"
        else:
            status = "todo"
        steps.append({"key": key, "label": labels[key], "status": status})
    return steps


def _percent(seen: dict) -> int:
    if seen["state"] == Build.State.SUCCEEDED:
        return 100
    step = seen["step"]
    if step is None:
        return 0
    low, high = SPAN[step]
    if step == "browser" and not seen["browser"]:
        low, high = SPAN["verifying"]
    if step == "verifying" and not seen["browser"]:
        high = SPAN["browser"][1]
    if step == "preparing":
        share = len(seen["parts"]) / PREPARING_PARTS
    elif step == "running":
        share = seen["turns"] / (seen["turns"] + TURNS_HALFWAY)
    elif step == "verifying":
        share = 0.5 if seen["checks"] else 0.0
    else:
        share = 0.0
    return int(low + (high - low) * min(share, 1.0))


def usage(build: Build, seen: dict) -> dict:
    """Turns, tokens and cost: counted from the `model_call` events while the build runs, the stored totals
    once it ended. A replayed sample conversation spends nothing: its counts are the sample's own."""
    if seen["state"] in Build.FINAL_STATES:
        counts = {"turns": build.turns, "input": build.input_tokens, "output": build.output_tokens,
                  "write": build.cache_write_tokens, "read": build.cache_read_tokens, "cost": build.cost,
                  "sample": build.replayed or seen["sample"]}  # fmt: skip
    else:
        counts = {key: seen[key] for key in ("turns", "input", "output", "write", "read", "cost", "sample")}
    total = counts["input"] + counts["write"] + counts["read"]
    share = counts["read"] / total if total else 0.0
    cost = float(counts["cost"] or 0)
    text = (
        f"{counts['turns']} turn{'s' if counts['turns'] != 1 else ''} · {total} input tokens, {share * 100:.0f}% "
        f"read from cache ({counts['read']} read, {counts['write']} written, {counts['input']} uncached) · "
        f"{counts['output']} output tokens"
    )
    text += " · sample, $0" if counts["sample"] else f" · cost ${cost:.4f}" if cost < 1 else f" · cost ${cost:.2f}"
    return {"turns": counts["turns"], "input_tokens": total, "output_tokens": counts["output"],
            "cost": f"{cost:.4f}", "sample": counts["sample"], "text": text}  # fmt: skip


def elapsed_bounds(build: Build) -> tuple[str | None, str | None]:
    """When the clock starts and stops: started_at to finished_at; a build that ended without starting
    counts from when it was asked for."""
    start = build.started_at or (build.created_at if build.is_final else None)
    return (start.isoformat() if start else None, build.finished_at.isoformat() if build.finished_at else None)


def not_started(build: Build) -> str:
    """The line under "What Claude did" when there is nothing to show yet."""
    if not build.is_final:
        return "Waiting to start…"
    why = build.error_message or ("The build was cancelled." if build.state == Build.State.CANCELLED else "")
    return f"Claude did not start: {why}" if why else "Claude did not start."


def summary(build: Build, events=None) -> dict:
    """The build as the live page shows it, as of `events` (the build's events up to some seq; all of them
    when None): the steps, the bar, the state and the usage move with the events, so a page that gets
    many events at once still sees every step the build reached."""
    return _summary(build, walk(build, _events(build, events)))


def _summary(build: Build, seen: dict) -> dict:
    state = seen["state"]
    started, finished = elapsed_bounds(build)
    use = usage(build, seen)
    return {
        "state": state,
        "label": Build.State(state).label if state in Build.State.values else build.get_state_display(),
        "final": state in Build.FINAL_STATES,
        "steps": _timeline(build, seen),
        "percent": _percent(seen),
        "started_at": started,
        "finished_at": finished if state in Build.FINAL_STATES else None,
        "turns": use["turns"],
        "usage": use,
    }


# The newest fold of each build this process summarised: (build id, build created) -> (seq, fold). Every
# broadcast (the worker, once per flush) and every page catching up (the web process) asks for the summary
# as of the newest event; re-reading the build's whole history each time made each ask cost more than the
# one before, over a build (quadratic). Continuing the kept fold reads only the events since, or none when
# the caller hands them over. Events are append-only with consecutive seq, so the fold continued is the
# fold of all of them. The key carries the build's creation time because an id can come back (SQLite
# reuses the highest id after a delete; tests roll back).
FOLDS_KEPT = 512
_folds: OrderedDict[tuple[int, object], tuple[int, dict]] = OrderedDict()
_folds_lock = threading.Lock()


def summary_as_of(build_id: int, last: int, events=None) -> dict:
    """The build's summary as a page that has seen its events up to `last` must show it: the live feed's
    frames carry this, not the build's state of the moment they are sent, so no step is ever skipped.
    `events`, when given, are the build's newest events, consecutive and ending at `last` (a broadcast's):
    with the fold kept from just before them, no event is read from the database."""
    build = Build.objects.get(pk=build_id)
    return _summary(build, _as_of(build, _fold_as_of(build, last, events)))


def _fold_as_of(build: Build, last: int, events) -> dict:
    key = (build.pk, build.created_at)
    with _folds_lock:
        kept = _folds.get(key)
    if kept is not None and kept[0] == last:
        return kept[1]
    if kept is not None and kept[0] < last:
        if events and events[0].seq == kept[0] + 1 and events[-1].seq == last:
            new = [e for e in events if e.kind in PROGRESS_KINDS]
        else:
            new = build.events.filter(seq__gt=kept[0], seq__lte=last, kind__in=PROGRESS_KINDS).order_by("seq")
        seen = fold(_copy(kept[1]), new)
    else:
        seen = fold(_start(), build.events.filter(seq__lte=last, kind__in=PROGRESS_KINDS).order_by("seq"))
    with _folds_lock:
        kept = _folds.get(key)
        if kept is None or kept[0] < last:  # keep the newest: a page catching up on old events asks for less
            _folds[key] = (last, seen)
            _folds.move_to_end(key)
            while len(_folds) > FOLDS_KEPT:
                _folds.popitem(last=False)
    return seen


def build_progress(build: Build) -> dict:
    """Everything the build page shows. While the build runs, the browser check and the checklist come
    from its newest events; once it ended, from what the pipeline stored on the build."""
    events = list(build.events.order_by("seq"))
    live = summary(build, events)
    items = activity(events)
    verify = build.verify or next((e.data for e in reversed(events) if e.kind == "verify"), None)
    checklist = build.checklist or checklist_items(
        next(
            (e.data["items"] for e in reversed(events) if e.kind in ("judge", "checklist") and e.data.get("items")), []
        )
    )
    return {
        "steps": live["steps"],
        "percent": live["percent"],
        "live": live,
        "usage": live["usage"],
        "not_started": not_started(build),
        "items": items,
        "last_seq": events[-1].seq if events else 0,
        "verify": verify,
        "smoke": smoke_view(build.smoke or (verify or {}).get("smoke")),
        "checklist": checklist,
        "score": checklist_score(checklist),
    }
