"""The judge: a checklist of observable outcomes written from the idea before the agent starts, and a grade
of the finished change against it, each in a context of its own.

The agent's own view of its work is its conversation; the judge sees none of it. It reads the idea, writes
3-6 things someone could check by looking at or using the app, and when the agent calls `finish` (after
verify, the browser check included, has passed) it grades the evidence: the diff, the tests, what the browser
saw and the latest screenshots. Objections go back to the agent as a refused `finish`, at most JUDGE_ROUNDS
grades in all (Stripe stops at two); a change the last grade still rejects fails the build ("judge_rejected").

Every call goes through the agent loop's budget check, request (retries, cancellation) and accounting, with
purpose "judge", so it is limited and priced like the agent's own calls. A replayed sample conversation may
carry the judge's responses too (a recording's "judge" list): they are played through the real SDK on a
transport of their own, priced at nothing like the rest of the sample, and the result says `replayed`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from agents.browser import image_block
from agents.context import image_blocks as attachment_blocks
from agents.errors import JudgeRejected
from agents.tools import clip

JUDGE_ROUNDS = 2  # grades per build: a rejection after the last one fails the build
MAX_ITEMS = 6  # the checklist asks for 3 to 6
ITEM_CHARS = 200
NOTE_CHARS = 300
CHECKLIST_MAX_TOKENS = 1024
GRADE_MAX_TOKENS = 2048
DIFF_CHARS = 60_000
MAX_SHOTS = 4  # images per grade: each costs about 1,600 input tokens
MAX_TESTS_NAMED = 60

CHECKLIST_SYSTEM = (
    "You write acceptance checklists for changes to an app. Someone who is not an engineer described a change in "
    "plain words. Write 3 to 6 short outcomes that a person could check by looking at or using the app after the "
    "change, each one concrete and observable (what is shown, where, what happens when something is clicked or "
    'typed, what is kept after a reload), for example: "A \'Dark mode\' button is in the top bar", "Clicking it '
    'turns the background dark", "The choice is kept after a reload". For an app without a screen (an API), the '
    "outcomes are what a request returns. Cover only what the words ask for, nothing extra, and nothing about how "
    'the code is written. Answer with one JSON object and nothing else: {"checklist": ["...", "..."]}'
)
CHECKLIST_REQUEST = "The app: {app}\n\nThe change asked for:\n{idea}"
CHECKLIST_HISTORY = "\n\nEarlier versions of this prototype already did (not part of this change):\n{history}"

GRADE_SYSTEM = (
    "You review a change to an app against a checklist that was written from the idea before the work began. "
    "You get the idea, the checklist, the engineer's summary, the result of the app's own tests, what a browser "
    "saw when it opened the app, screenshots after the change when there are any, and the diff. For each item, "
    "decide whether the evidence shows it done: passed is true only when the diff (and the screenshots, when "
    "there are any) show it; the engineer's summary alone is not evidence. Also object to anything the change "
    "broke that worked before. Answer with one JSON object and nothing else: "
    '{"items": [{"number": 1, "passed": true, "note": "one short sentence"}], "objections": ["what the engineer '
    'must still do"], "verdict": "one plain sentence for the person who asked"}. Grade every item, in order; '
    "objections is empty when every item passed."
)
GRADE_REQUEST = """The idea:
{idea}

The checklist:
{checklist}

The engineer's summary:
{summary}

The app's own build and tests:
{tests}

The browser check:
{smoke}

Screenshots: {shots}

The change:
```diff
{diff}
```"""


@dataclass
class Grade:
    """One grade of the change: every checklist item with passed True/False (None when unread) and a note."""

    items: list[dict]
    objections: list[str] = field(default_factory=list)
    verdict: str = ""
    readable: bool = True

    @property
    def accepted(self) -> bool:
        return self.readable and all(item["passed"] is True for item in self.items)

    @property
    def score(self) -> float:
        return sum(item["passed"] is True for item in self.items) / len(self.items) if self.items else 0.0

    @property
    def unmet(self) -> list[str]:
        return [item["item"] for item in self.items if item["passed"] is not True]


# --- reading the judge's answers ----------------------------------------------------------------------
def read_json(text: str):
    """The first JSON object or array in a model's answer: bare, in a ``` fence, or after a sentence.
    None when there is none."""
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    candidates = [fenced.group(1)] if fenced else []
    candidates.append(text)
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for match in re.finditer(r"[{\[]", candidate):
            try:
                value, _ = decoder.raw_decode(candidate, match.start())
            except ValueError:
                continue
            return value
    return None


def _short(value, limit: int) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_checklist(text: str) -> list[str]:
    """The items of a checklist answer ({"checklist": [...]}, or a bare list), [] when it cannot be read.
    Items are cut to ITEM_CHARS, blanks and repeats dropped, at most MAX_ITEMS kept; fewer than the 3 asked
    for are kept too (a small idea may have only two outcomes worth checking)."""
    data = read_json(text)
    if isinstance(data, dict):
        data = data.get("checklist", data.get("items"))
    if not isinstance(data, list):
        return []
    items: list[str] = []
    for entry in data:
        if isinstance(entry, dict):  # {"item": "..."} is an understandable way to write it
            entry = entry.get("item") or entry.get("text")
        if not isinstance(entry, str) or not entry.strip():
            continue
        item = _short(entry, ITEM_CHARS)
        if item not in items:
            items.append(item)
    return items[:MAX_ITEMS]


def parse_grade(text: str, checklist: Sequence[str]) -> Grade:
    """A grade answer read against the checklist. Readable only when every item got a true/false: an answer
    that skips an item says nothing about it, and a missing grade must never count as a pass."""
    items = [{"item": item, "passed": None, "note": ""} for item in checklist]
    data = read_json(text)
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        return Grade(items, readable=False)
    for position, entry in enumerate(data["items"]):
        if not isinstance(entry, dict):
            continue
        number = entry.get("number")
        index = number - 1 if isinstance(number, int) and not isinstance(number, bool) else position
        if not 0 <= index < len(items) or not isinstance(entry.get("passed"), bool):
            continue
        items[index]["passed"] = entry["passed"]
        items[index]["note"] = _short(entry.get("note") or "", NOTE_CHARS)
    raw = data.get("objections")
    objections = (
        [_short(o, NOTE_CHARS) for o in raw if isinstance(o, str) and o.strip()] if isinstance(raw, list) else []
    )
    verdict = data.get("verdict")
    verdict = _short(verdict, NOTE_CHARS) if isinstance(verdict, str) else ""
    readable = all(item["passed"] is not None for item in items)
    return Grade(items, objections, verdict, readable)


# --- what the grade is shown ----------------------------------------------------------------------------
def describe_tests(report) -> str:
    """The verify report as the judge reads it: the headline, then the tests by name (failed ones first)."""
    if report is None:
        return "Not run."
    lines = [report.headline()]
    failed = [t.name for t in report.tests if not t.passed]
    passed = [t.name for t in report.tests if t.passed and not t.skipped]
    if failed:
        lines.append("Failed: " + "; ".join(failed[:MAX_TESTS_NAMED]))
    if passed:
        more = len(passed) - MAX_TESTS_NAMED
        lines.append("Passed: " + "; ".join(passed[:MAX_TESTS_NAMED]) + (f"; and {more} more" if more > 0 else ""))
    return "\n".join(lines)


def describe_smoke(report) -> str:
    smoke = getattr(report, "smoke", None) if report is not None else None
    if smoke is None:
        return "Not run for this app."
    return clip(smoke.for_model(), 8_000)


def image_blocks(shots: Sequence) -> tuple[list[dict], str]:
    """Image blocks of the latest "after" screenshots (at most MAX_SHOTS, each after a label), made small
    the way the agent's screenshot tool makes them, and a line that says what the judge gets. A file that
    is gone or is not a picture is left out."""
    blocks: list[dict] = []
    for shot in (shot for shot in shots if shot.moment == "after"):
        if len(blocks) >= 2 * MAX_SHOTS:
            break
        try:
            image = image_block(shot.path.read_bytes())
        except (OSError, ValueError):  # Pillow's "cannot identify image file" is an OSError
            continue
        blocks += [{"type": "text", "text": f"After the change: {shot.page}, {shot.size}"}, image]
    count = len(blocks) // 2
    return blocks, f"{count} follow the change." if count else "none (judge from the diff and the browser check)."


# --- the judge ------------------------------------------------------------------------------------------
class Judge:
    """Writes the checklist (`write_checklist`, once, before the agent starts) and grades the change each
    time the agent calls finish (`review`, the toolbox's hook). `loop` is the build's AgentLoop: its budget,
    requests and accounting are the judge's too. `client` is the SDK client the judge's requests go to (the
    agent's for a live model; a replayed sample's review script otherwise). `shots()` returns the latest
    screenshots (agents.browser.Shot) when there are any."""

    def __init__(
        self,
        loop,
        idea: str,
        *,
        client,
        emit: Callable[[str, dict], None],
        app: str = "",
        history: Sequence = (),
        attachments: Sequence = (),
        shots: Callable[[], Sequence] = list,
        replayed: bool = False,
        rounds: int = JUDGE_ROUNDS,
    ):
        self.loop = loop
        self.idea = idea.strip()
        self.client = client
        self.emit = emit
        self.app = app
        self.history = tuple(history)
        self.attachments = tuple(attachments)  # the idea's images (mockups): the checklist follows them too
        self.shots = shots
        self.replayed = replayed
        self.rounds = rounds
        self.items: list[str] = []
        self.grades: list[Grade] = []
        self.pictured: list = []  # the "after" screenshots the latest grade was shown
        self.cost = Decimal(0)

    # --- one request, accounted like the agent's ---
    def _ask(self, system_text: str, content: list[dict], max_tokens: int) -> str:
        loop = self.loop
        messages = [{"role": "user", "content": content}]
        system = [{"type": "text", "text": system_text}]
        loop._check_budget(messages, fresh=[system, messages], max_output=max_tokens)
        spent = loop.state.cost
        message, latency = loop._request(messages, system=system, tools=[], max_tokens=max_tokens,
                                         client=self.client, cache=False)  # fmt: skip
        loop._account(message, latency, purpose="judge")
        self.cost += loop.state.cost - spent
        return "".join(block.text for block in message.content if block.type == "text").strip()

    # --- the checklist ---
    def write_checklist(self) -> list[str]:
        text = CHECKLIST_REQUEST.format(app=self.app or "(not named)", idea=self.idea)
        if self.history:
            earlier = "\n".join(f"- {_short(prior.prompt, 300)}" for prior in self.history)
            text += CHECKLIST_HISTORY.format(history=earlier)
        if self.attachments:
            count = len(self.attachments)
            text += (
                f"\n\n(They attached {count} image{'s' if count > 1 else ''} above: mockups or screenshots to follow.)"
            )
        content = [*attachment_blocks(self.attachments), {"type": "text", "text": text}]
        answer = self._ask(CHECKLIST_SYSTEM, content, CHECKLIST_MAX_TOKENS)
        items = parse_checklist(answer)
        fallback = not items
        if fallback:
            # No second call: the idea itself is then the one thing to check, and the log says why.
            items = [_short(self.idea, ITEM_CHARS) or "The change asked for"]
            self.emit("log", {"text": "The reviewer's checklist could not be read, so the idea itself is the one "
                                      "item it will check."})  # fmt: skip
        self.items = items
        self.emit("checklist", {"items": list(items), "replayed": self.replayed, "fallback": fallback})
        return items

    # --- the grade ---
    def grade(self, summary: str, diff: str, report) -> Grade:
        checklist = "\n".join(f"{n}. {item}" for n, item in enumerate(self.items, 1))
        self.pictured = [shot for shot in self.shots() or () if shot.moment == "after"]
        images, shots_line = image_blocks(self.pictured)
        text = GRADE_REQUEST.format(
            idea=self.idea, checklist=checklist, summary=summary.strip(), tests=describe_tests(report),
            smoke=describe_smoke(report), shots=shots_line, diff=clip(diff, DIFF_CHARS),
        )  # fmt: skip
        answer = self._ask(GRADE_SYSTEM, [{"type": "text", "text": text}, *images], GRADE_MAX_TOKENS)
        grade = parse_grade(answer, self.items)
        if grade.readable and not grade.accepted and not grade.objections:
            grade.objections = [f"{item['item']}: {item['note'] or 'not shown by the change'}"
                                for item in grade.items if item["passed"] is not True]  # fmt: skip
        if not grade.readable or not grade.verdict:
            grade.verdict = self._verdict(grade)
        self.grades.append(grade)
        self.emit("judge", {
            "round": len(self.grades), "accepted": grade.accepted, "readable": grade.readable,
            "score": round(grade.score, 3), "items": grade.items, "objections": grade.objections,
            "verdict": grade.verdict, "replayed": self.replayed, "screenshots": len(images) // 2,
            "text": answer[:4000],
        })  # fmt: skip
        return grade

    @staticmethod
    def _verdict(grade: Grade) -> str:
        if not grade.readable:
            return "The review could not be read, so it did not hold the change back."
        passed = sum(item["passed"] is True for item in grade.items)
        return f"{passed} of {len(grade.items)} checklist items done."

    def review(self, summary: str, diff: str, report) -> str | None:
        """The finish hook: None when the change may be published, else the objections for the agent.
        Raises JudgeRejected when the last round still finds items unmet. An answer that cannot be read
        does not hold the change back: the person would be blamed for the reviewer's failure."""
        grade = self.grade(summary, diff, report)
        if not grade.readable:
            self.emit("log", {"text": "The reviewer's grade could not be read; the change goes on without it."})
            return None
        if grade.accepted:
            return None
        if len(self.grades) >= self.rounds:
            raise JudgeRejected(grade.unmet, detail="\n".join([grade.verdict, *grade.objections]))
        return "\n".join(f"- {objection}" for objection in grade.objections)

    # --- what the build result keeps ---
    @property
    def checklist(self) -> list[dict]:
        """The items with the latest grade ({"item", "passed", "note"}); passed None before any grade."""
        if self.grades:
            return [dict(item) for item in self.grades[-1].items]
        return [{"item": item, "passed": None, "note": ""} for item in self.items]

    def outcome(self) -> dict:
        """BuildResult.judge: {} until a grade was made."""
        if not self.grades:
            return {}
        last = self.grades[-1]
        return {"accepted": last.accepted, "rounds": len(self.grades), "score": round(last.score, 3),
                "verdict": last.verdict, "replayed": self.replayed}  # fmt: skip


# --- ranking attempts -----------------------------------------------------------------------------------
def rank_key(result) -> tuple:
    """The order of attempts, best first: succeeded before failed, then the judge's score, then tests
    passed, then fewer turns, then lower cost. Reads only `ok`, `judge`, `verify`, `turns` and `cost`, so
    anything shaped like a BuildResult can be ranked."""
    judge = getattr(result, "judge", None) or {}
    verify = getattr(result, "verify", None) or {}
    passed = (verify.get("counts") or {}).get("passed", 0)
    return (
        0 if result.ok else 1,
        -float(judge.get("score") or 0.0),
        -int(passed or 0),
        int(result.turns or 0),
        Decimal(str(result.cost or 0)),
    )


def rank(results: Sequence) -> list[int]:
    """The indexes of `results` best first (rank_key); equal attempts keep their order, so the same
    results always rank the same."""
    return sorted(range(len(results)), key=lambda index: (rank_key(results[index]), index))
