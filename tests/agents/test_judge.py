"""The judge (agents/judge.py) through the real `anthropic` SDK: the agent's conversation and the judge's
requests each go to a scripted Messages API (ScriptedTransport), which streams the responses as the API
does and keeps every request. The tools run for real on the tiny project in the real sandbox."""

from __future__ import annotations

import base64
import io
import itertools
import json
import time
from decimal import Decimal
from pathlib import Path

import anthropic
import httpx2
import pytest
from PIL import Image

from agents import Attachment, BuildSpec, PriorRevision, build
from agents.browser import PageReport, Shot, SmokeReport
from agents.errors import USER, BuildError, JudgeRejected, UserError
from agents.judge import (
    CHECKLIST_MAX_TOKENS,
    CHECKLIST_SYSTEM,
    GRADE_MAX_TOKENS,
    GRADE_SYSTEM,
    JUDGE_ROUNDS,
    Judge,
    parse_checklist,
    parse_grade,
    rank,
)
from agents.loop import AgentLoop, LoopLimits
from agents.pricing import PRICE_TABLE, price_for
from agents.providers import ProviderConfig
from agents.providers.replay import ReplayProvider, ScriptedTransport, list_recordings
from agents.spec import BuildResult
from agents.tools import EDITOR
from tests.agents.sinks import Sink

MODEL = "claude-sonnet-5-5"
VERSION = "2026-09-01"
PRICE = price_for(MODEL, PRICE_TABLE, VERSION)
IDEA = "Fix the calculator: adding 2 and 2 should give 4"
DIFF = "--- a/calc.py\n+++ b/calc.py\n-    return a - b\n+    return a + b\n"
USAGE = {"input_tokens": 100, "output_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RECORDINGS = EXAMPLES / "recordings"
ITEMS = ["Adding 2 and 2 gives 4", "Adding a negative number gives the right sum"]
_replies = itertools.count(1)


# --- the scripted model (the same wire format as tests/agents/test_loop.py) -----------------------------
def reply(*content, stop="tool_use", **fields) -> dict:
    usage = {**USAGE, **fields.pop("usage", {})}
    return {"id": f"msg_j{next(_replies):04d}", "type": "message", "role": "assistant", "model": MODEL,
            "content": list(content), "stop_reason": stop, "stop_sequence": None, "usage": usage, **fields}  # fmt: skip


def say(text: str) -> dict:
    return {"type": "text", "text": text}


def use(id: str, name: str, **tool_input) -> dict:
    return {"type": "tool_use", "id": id, "name": name, "input": tool_input}


def answer(data, **fields) -> dict:
    """A judge's answer: JSON text, as the judge is asked to give it."""
    return reply(say(json.dumps(data)), stop="end_turn", **fields)


def checklist(*items: str, **fields) -> dict:
    return answer({"checklist": list(items or ITEMS)}, **fields)


def grade(*passed: bool, objections=(), **fields) -> dict:
    items = [{"number": n, "passed": p, "note": f"note {n}"} for n, p in enumerate(passed, 1)]
    return answer({"items": items, "objections": list(objections), "verdict": "Checked."}, **fields)


def fix(summary: str = "Adding two numbers now gives their sum.") -> list[dict]:
    """The agent fixes the bug, verifies and finishes: three responses."""
    return [
        reply(use("toolu_fix", EDITOR, command="str_replace", path="calc.py", old_str="a - b", new_str="a + b")),
        reply(use("toolu_verify", "verify")),
        reply(use("toolu_finish", "finish", summary=summary)),
    ]


def client_on(transport: ScriptedTransport) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="k", base_url="http://test.invalid", max_retries=0,
                               http_client=httpx2.Client(transport=transport))  # fmt: skip


class Judged:
    """An AgentLoop on a scripted conversation, with a Judge on a scripted review of its own, wired to the
    toolbox as the engine wires it."""

    def __init__(self, toolbox, script, reviews, *, limits=None, shots=()):
        self.agent = ScriptedTransport(script)
        self.review = ScriptedTransport(reviews, source="review")
        self.events: list[tuple[str, dict]] = []
        self.toolbox = toolbox
        self.loop = AgentLoop(
            client_on(self.agent), model=MODEL, system=[{"type": "text", "text": "You change apps."}],
            toolbox=toolbox, emit=self.emit, limits=limits or LoopLimits(), price=PRICE, price_version=VERSION,
            remaining=lambda: 600.0, sleep=lambda seconds: None,
        )  # fmt: skip
        self.judge = Judge(self.loop, IDEA, client=client_on(self.review), emit=self.emit, app="Tiny (backend)",
                           shots=lambda: list(shots))  # fmt: skip
        toolbox.judge = lambda summary, report: self.judge.review(summary, DIFF, report)

    def emit(self, kind: str, data: dict) -> None:
        self.events.append((kind, data))

    def run(self) -> str:
        self.judge.write_checklist()
        return self.loop.run([{"role": "user", "content": [{"type": "text", "text": IDEA}]}])

    def emitted(self, kind: str) -> list[dict]:
        return [data for k, data in self.events if k == kind]

    def tool_result(self, request: int, tool_use_id: str) -> dict:
        """The tool result sent to the agent with its request number `request` (from 0)."""
        last = self.agent.requests[request]["messages"][-1]
        return next(r for r in last["content"] if r.get("tool_use_id") == tool_use_id)


# --- the checklist ---------------------------------------------------------------------------------------
def test_the_checklist_is_written_from_the_idea_in_a_context_of_its_own(toolbox):
    judged = Judged(toolbox, [], [checklist("A 'Dark mode' button is in the top bar", "Clicking it turns the "
                                           "background dark", "The choice is kept after a reload")])  # fmt: skip

    items = judged.judge.write_checklist()

    assert items == ["A 'Dark mode' button is in the top bar", "Clicking it turns the background dark",
                     "The choice is kept after a reload"]  # fmt: skip
    [request] = judged.review.requests
    assert judged.agent.requests == []  # nothing of it reaches the agent's conversation
    assert request["system"] == [{"type": "text", "text": CHECKLIST_SYSTEM}]
    assert "tools" not in request and "cache_control" not in request  # a one-off prompt is not cached
    assert request["max_tokens"] == CHECKLIST_MAX_TOKENS and request["stream"] is True
    [question] = request["messages"]
    assert IDEA in question["content"][0]["text"] and "Tiny (backend)" in question["content"][0]["text"]
    assert judged.emitted("checklist") == [{"items": items, "replayed": False, "fallback": False}]
    assert judged.judge.checklist == [{"item": item, "passed": None, "note": ""} for item in items]
    assert judged.judge.outcome() == {}  # nothing graded yet


def test_the_checklist_follows_the_images_attached_to_the_idea_and_what_earlier_versions_did(toolbox, tmp_path):
    mockup = tmp_path / "mockup.png"
    mockup.write_bytes(png("navy"))
    judged = Judged(toolbox, [], [checklist()])
    judged.judge.attachments = (Attachment(mockup, "image/png"),)
    judged.judge.history = (PriorRevision("Add a calculator page", "There is a calculator page."),)

    judged.judge.write_checklist()

    [image, text] = judged.review.requests[0]["messages"][0]["content"]
    assert image["type"] == "image" and base64.b64decode(image["source"]["data"]) == mockup.read_bytes()
    assert "attached 1 image above" in text["text"]
    assert (
        "Earlier versions of this prototype already did (not part of this change):\n- Add a calculator page"
        in (text["text"])
    )


@pytest.mark.parametrize(
    ("text", "items"),
    [
        ('```json\n{"checklist": ["One", "Two", "Three"]}\n```', ["One", "Two", "Three"]),
        ('Here it is: ["One", "Two", "One", "  ", 7]', ["One", "Two"]),
        ('{"checklist": [{"item": "One"}, "Two"]}', ["One", "Two"]),
        (json.dumps({"checklist": [f"Item {n}" for n in range(9)]}), [f"Item {n}" for n in range(6)]),
        ("ACCEPT", []),
        ('{"checklist": "One, two"}', []),
        ('{"checklist": [', []),
    ],
)  # fmt: skip
def test_a_checklist_answer_is_read_defensively(text, items):
    assert parse_checklist(text) == items


def test_a_malformed_checklist_falls_back_to_the_idea_without_a_second_call_and_says_so(toolbox):
    judged = Judged(toolbox, [], [reply(say("Sure! Here are some things to check: it works."), stop="end_turn")])

    assert judged.judge.write_checklist() == [IDEA]

    assert len(judged.review.requests) == 1
    [log] = judged.emitted("log")
    assert "checklist could not be read" in log["text"] and "idea itself" in log["text"]
    assert judged.emitted("checklist")[0]["fallback"] is True


# --- grading ---------------------------------------------------------------------------------------------
def test_an_accepted_grade_lets_finish_through_and_fills_the_result(toolbox):
    judged = Judged(toolbox, fix(), [checklist(), grade(True, True)])

    assert judged.run() == "Adding two numbers now gives their sum."

    assert len(judged.agent.requests) == 3  # the agent is never sent back
    grade_request = judged.review.requests[1]
    assert grade_request["system"] == [{"type": "text", "text": GRADE_SYSTEM}]
    assert grade_request["max_tokens"] == GRADE_MAX_TOKENS and "tools" not in grade_request
    text = grade_request["messages"][0]["content"][0]["text"]
    assert IDEA in text and DIFF.strip() in text and "Adding two numbers now gives their sum." in text
    assert "1. Adding 2 and 2 gives 4\n2. Adding a negative number gives the right sum" in text
    # The tests by count and by name, as the app's own run reported them.
    assert "1 tests passed" in text and "test_adds_two_numbers" in text
    [event] = judged.emitted("judge")
    assert event["accepted"] is True and event["round"] == 1 and event["score"] == 1.0
    assert judged.judge.checklist == [{"item": ITEMS[0], "passed": True, "note": "note 1"},
                                      {"item": ITEMS[1], "passed": True, "note": "note 2"}]  # fmt: skip
    assert judged.judge.outcome() == {"accepted": True, "rounds": 1, "score": 1.0, "verdict": "Checked.",
                                      "replayed": False}  # fmt: skip


def test_objections_go_back_to_the_agent_and_the_second_round_accepts(toolbox):
    script = [
        *fix("Adding now adds."),
        reply(use("toolu_verify_again", "verify")),
        reply(use("toolu_finish_again", "finish", summary="Adding now adds, negative numbers too.")),
    ]
    reviews = [checklist(), grade(True, False, objections=["Add a test with a negative number."]), grade(True, True)]
    judged = Judged(toolbox, script, reviews)

    assert judged.run() == "Adding now adds, negative numbers too."

    refused = judged.tool_result(3, "toolu_finish")
    assert refused["is_error"] is True
    assert "checklist written from the idea and objects:\n- Add a test with a negative number." in refused["content"]
    assert "call verify, then call finish again" in refused["content"]
    assert [e["accepted"] for e in judged.emitted("judge")] == [False, True]
    assert judged.judge.outcome()["rounds"] == 2 and judged.judge.outcome()["accepted"] is True
    # The second grade saw the agent's new summary.
    assert "Adding now adds, negative numbers too." in judged.review.requests[2]["messages"][0]["content"][0]["text"]


def test_an_objection_without_words_names_the_unmet_items_to_the_agent(toolbox):
    script = [*fix(), reply(use("toolu_finish_again", "finish", summary="Done again."))]
    judged = Judged(toolbox, script, [checklist(), grade(True, False), grade(True, True)])

    judged.run()

    assert f"- {ITEMS[1]}: note 2" in judged.tool_result(3, "toolu_finish")["content"]


def test_a_change_still_rejected_after_the_last_round_fails_with_the_unmet_items(toolbox):
    script = [*fix(), reply(use("toolu_finish_again", "finish", summary="Done, really."))]
    reviews = [checklist(), grade(True, False, objections=["Negative numbers."]),
               grade(True, False, objections=["Still no negative numbers."])]  # fmt: skip
    judged = Judged(toolbox, script, reviews)

    with pytest.raises(BuildError) as caught:
        judged.run()

    error = caught.value
    assert isinstance(error, JudgeRejected) and error.code == "judge_rejected" and error.family == USER
    assert JUDGE_ROUNDS == 2 and len(judged.review.requests) == 3  # the checklist and two grades, no more
    assert "“Adding a negative number gives the right sum”" in error.message
    assert "Adding 2 and 2 gives 4" not in error.message  # only what is unmet
    assert "Still no negative numbers." in error.detail
    assert judged.judge.outcome() == {"accepted": False, "rounds": 2, "score": 0.5, "verdict": "Checked.",
                                      "replayed": False}  # fmt: skip


def test_a_grade_that_skips_an_item_is_not_read_as_a_pass():
    partial = json.dumps({"items": [{"number": 1, "passed": True, "note": "ok"}], "objections": []})
    read = parse_grade(partial, ITEMS)
    assert not read.readable and not read.accepted
    assert read.items[1] == {"item": ITEMS[1], "passed": None, "note": ""}
    assert (
        parse_grade('{"items": [{"number": 1, "passed": "yes"}, {"number": 2, "passed": true}]}', ITEMS).readable
        is False
    )
    assert not parse_grade("ACCEPT", ITEMS).readable


def test_an_unreadable_grade_does_not_hold_the_change_back_and_says_so(toolbox):
    judged = Judged(toolbox, fix(), [checklist(), reply(say("Looks fine to me."), stop="end_turn")])

    assert judged.run() == "Adding two numbers now gives their sum."

    assert any("grade could not be read" in log["text"] for log in judged.emitted("log"))
    outcome = judged.judge.outcome()
    assert outcome["accepted"] is False and outcome["score"] == 0.0
    assert "could not be read" in outcome["verdict"]
    assert [item["passed"] for item in judged.judge.checklist] == [None, None]


# --- budget and accounting -------------------------------------------------------------------------------
def test_the_judges_calls_are_accounted_like_the_agents(toolbox):
    judged = Judged(
        toolbox, fix(), [checklist(usage={"input_tokens": 300}), grade(True, True, usage={"input_tokens": 900})]
    )

    judged.run()

    calls = judged.emitted("model_call")
    assert [c["purpose"] for c in calls] == ["judge", "agent", "agent", "agent", "judge"]
    assert [c["turn"] for c in calls] == [1, 2, 3, 4, 5]
    assert calls[0]["cost"] == "0.000800"  # 300 × $2 + 20 × $10 per million
    assert calls[4]["cost"] == "0.002000"  # 900 × $2 + 20 × $10
    assert judged.loop.state.cost == sum(Decimal(c["cost"]) for c in calls)
    assert judged.judge.cost == Decimal("0.0028")
    # The judge's prompts are not the conversation's cached prefix: the agent's budget estimate keeps
    # counting from its own last request.
    assert judged.loop.state.last_input == 100 + 20


def test_a_judge_call_over_the_budget_is_refused_before_it_is_sent(toolbox):
    # The agent's requests may answer in 100 tokens, so each could cost at most about $0.003; the checklist
    # (1,024 tokens out) about $0.011; the grade (2,048 out) over $0.02, more than the build has left.
    limits = LoopLimits(max_cost=Decimal("0.018"), max_output_tokens=100)
    judged = Judged(toolbox, fix(), [checklist()], limits=limits)

    with pytest.raises(UserError) as caught:
        judged.run()

    assert caught.value.code == "budget_reached"
    assert len(judged.review.requests) == 1  # the checklist went; the grade was refused before sending
    assert judged.emitted("judge") == []


def test_the_checklist_itself_is_refused_when_the_build_cannot_afford_it(toolbox):
    judged = Judged(toolbox, fix(), [checklist()], limits=LoopLimits(max_cost=Decimal("0.00001")))

    with pytest.raises(UserError) as caught:
        judged.judge.write_checklist()

    assert caught.value.code == "budget_reached" and judged.review.requests == []


# --- what the grade is shown -----------------------------------------------------------------------------
def png(color: str, size=(64, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def test_the_grade_request_carries_the_after_screenshots_as_image_blocks(toolbox, tmp_path):
    after, before = tmp_path / "after.png", tmp_path / "before.png"
    after.write_bytes(png("black"))
    before.write_bytes(png("white"))
    shots = [Shot(before, "/", "desktop", "before"), Shot(after, "/", "desktop", "after"),
             Shot(tmp_path / "gone.png", "/", "phone", "after")]  # fmt: skip
    judged = Judged(toolbox, fix(), [checklist(), grade(True, True)], shots=shots)

    judged.run()

    content = judged.review.requests[1]["messages"][0]["content"]
    images = [block for block in content if block["type"] == "image"]
    assert len(images) == 1  # the "before" one and the missing file are left out
    [image] = images
    assert image["source"]["type"] == "base64" and image["source"]["media_type"] in {"image/png", "image/jpeg"}
    with Image.open(io.BytesIO(base64.b64decode(image["source"]["data"]))) as picture:
        assert picture.size == (64, 40) and max(picture.convert("RGB").getpixel((10, 10))) < 16  # black, as JPEG
    label = content[content.index(image) - 1]
    assert label == {"type": "text", "text": "After the change: /, desktop"}
    assert "Screenshots: 1 follow the change." in content[0]["text"]


def test_the_grade_request_says_when_there_are_no_screenshots_and_no_browser_check(toolbox):
    judged = Judged(toolbox, fix(), [checklist(), grade(True, True)])

    judged.run()

    [text] = judged.review.requests[1]["messages"][0]["content"]
    assert "Screenshots: none" in text["text"] and "The browser check:\nNot run for this app." in text["text"]


def test_the_grade_request_carries_what_the_browser_saw(toolbox):
    # What the browser check reports for a page that loads (written here as sample data: the tiny project is
    # not a web app), with a problem that was there before the change and is not counted.
    toolbox.smoke = lambda: SmokeReport(
        passed=True,
        pages=[PageReport("/", title="Calculator", text="2 + 2 = 4", console_errors=["favicon.ico: 404"])],
        before=[PageReport("/", title="Calculator", text="2 + 2 = 0", console_errors=["favicon.ico: 404"])],
    )
    judged = Judged(toolbox, fix(), [checklist(), grade(True, True)])

    judged.run()

    [text] = judged.review.requests[1]["messages"][0]["content"]
    assert "The browser check:\nPASSED: The page opened in a browser without new errors (/)." in text["text"]
    assert "Already there before the change (not counted): /: console error: favicon.ico: 404" in text["text"]


# --- ranking attempts ------------------------------------------------------------------------------------
def attempt(*, ok=True, score=None, passed=0, turns=10, cost="1.00") -> BuildResult:
    result = BuildResult(turns=turns, cost=Decimal(cost), verify={"passed": ok, "counts": {"passed": passed}})
    if ok:
        result.artifacts.append(object())
    else:
        result.error = UserError("tests_failed")
    if score is not None:
        result.judge = {"accepted": score == 1.0, "rounds": 1, "score": score, "verdict": "", "replayed": False}
    return result


def test_attempts_rank_succeeded_first_then_score_tests_turns_and_cost():
    results = [
        attempt(ok=False, score=1.0, passed=50),  # 0: failed, whatever its other merits
        attempt(score=0.5, passed=30),  # 1
        attempt(score=1.0, passed=10),  # 2: the best score
        attempt(score=0.5, passed=30, turns=8),  # 3: as 1, in fewer turns
        attempt(score=0.5, passed=30, turns=8, cost="0.50"),  # 4: as 3, for less
        attempt(score=0.5, passed=40, turns=30),  # 5: more tests passed than 1, 3 and 4
        attempt(passed=99),  # 6: no judge ran: a score of 0
    ]

    assert rank(results) == [2, 5, 4, 3, 1, 6, 0]


def test_ranking_is_deterministic_for_equal_attempts():
    results = [attempt(score=0.5), attempt(score=0.5), attempt(ok=False), attempt(ok=False)]
    assert rank(results) == [0, 1, 2, 3]
    assert rank(list(reversed(results))) == [2, 3, 0, 1]  # equal ones keep their order, whatever it is
    assert rank([]) == []


# --- the shipped sample conversations carry a sample review ----------------------------------------------
SAMPLES = list_recordings(RECORDINGS)


@pytest.mark.parametrize("recording", SAMPLES, ids=[f"{r.target}/{r.path.stem}" for r in SAMPLES])
def test_every_shipped_sample_has_a_sample_review_that_accepts_its_change(recording):
    assert len(recording.judge) == 2, "a checklist, then one grade"
    texts = ["".join(b["text"] for b in r["content"] if b["type"] == "text") for r in recording.judge]
    items = parse_checklist(texts[0])
    assert 3 <= len(items) <= 6
    grade_read = parse_grade(texts[1], items)
    assert grade_read.readable and grade_read.accepted and grade_read.verdict
    for response in recording.judge:
        assert response["stop_reason"] == "end_turn"
        assert 0 < response["usage"]["input_tokens"] < 10_000 and 0 < response["usage"]["output_tokens"] < 1_000


def test_a_sample_without_a_review_gives_no_judge_client(tmp_path):
    data = json.loads((RECORDINGS / "web-player" / "total-duration.json").read_text())
    del data["judge"]
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(data))

    assert ReplayProvider(ProviderConfig(cassette=plain)).judge_client() is None
    assert ReplayProvider(ProviderConfig(cassette=RECORDINGS / "web-player" / "total-duration.json")).judge_client()


@pytest.fixture
def build_sample(make_repo, scratch_dir):
    def run(target: str, idea: str, *, judge: bool = True, cassette: Path | None = None, record_to=None):
        repo = make_repo(source=EXAMPLES / "targets" / target)
        work = scratch_dir("judge-build-")
        spec = BuildSpec(
            target=target, repo_url=str(repo), base_ref="main", idea=idea, mirror=work / "mirror.git",
            work_dir=work / "work", output_dir=work / "out", result_ref="refs/prototypes/judge/1",
            provider=ProviderConfig(name="replay", recordings=RECORDINGS, cassette=cassette), judge=judge,
            record_to=record_to,
        )  # fmt: skip
        sink = Sink()
        return build(spec, sink), sink

    return run


def test_a_replayed_dark_mode_build_is_judged_by_its_sample_review_with_every_item_passed(build_sample, tmp_path):
    [recording] = [r for r in SAMPLES if r.path.name == "dark-mode.json"]

    result, sink = build_sample("web-player", "Add a dark mode toggle", record_to=tmp_path / "again.json")

    assert result.ok, (result.error, result.error and result.error.detail)
    assert [item["item"] for item in result.checklist] == [
        "A 'Dark mode' button is in the player's top bar",
        "Clicking it turns the player's background and text colours dark",
        "Clicking it again switches back to the light colours",
        "The choice is kept after the page is reloaded",
    ]
    assert all(item["passed"] is True and item["note"] for item in result.checklist)
    assert result.judge == {
        "accepted": True, "rounds": 1, "score": 1.0, "replayed": True,
        "verdict": "The player has a Dark mode button in its top bar that switches the colours both ways and "
        "remembers the choice.",
    }  # fmt: skip
    calls = [data for kind, data in sink.events if kind == "model_call"]
    assert [c["purpose"] for c in calls].count("judge") == 2
    assert result.turns == len(recording.responses) + 2
    assert {(c["cost"], c["price_version"]) for c in calls} == {("0.000000", "sample")}  # a sample costs nothing
    kinds = [kind for kind, _ in sink.events]
    assert kinds.index("checklist") < kinds.index("tool_call") < kinds.index("judge")
    # The grade saw the change as it looked when the agent finished: desktop and phone, in the real browser.
    [graded] = [data for kind, data in sink.events if kind == "judge"]
    assert graded["screenshots"] == 2
    # Recorded again, the judge's responses are kept apart from the conversation's, so the recording replays.
    again = ReplayProvider(ProviderConfig(cassette=tmp_path / "again.json")).recording
    assert [r["id"] for r in again.responses] == [r["id"] for r in recording.responses]
    assert [(r["id"], r["content"]) for r in again.judge] == [(r["id"], r["content"]) for r in recording.judge]


class TimedSink(Sink):
    """Also notes when each event came (wall-clock, to compare with the screenshots' file times)."""

    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def emit(self, kind, data):
        super().emit(kind, data)
        self.times.append(time.time())


def test_the_pictures_the_judge_graded_are_the_final_after_screenshots(make_repo, scratch_dir):
    repo = make_repo(source=EXAMPLES / "targets" / "web-player")
    work = scratch_dir("judge-build-")
    spec = BuildSpec(
        target="web-player", repo_url=str(repo), base_ref="main", idea="Show the total playlist duration",
        mirror=work / "mirror.git", work_dir=work / "work", output_dir=work / "out",
        result_ref="refs/prototypes/judge/1", provider=ProviderConfig(name="replay", recordings=RECORDINGS),
        judge=True,
    )  # fmt: skip
    sink = TimedSink()

    result = build(spec, sink)

    assert result.ok, result.error
    after = [shot for shot in result.screenshots if shot.moment == "after"]
    assert sorted((shot.page, shot.size) for shot in after) == [("/", "desktop"), ("/", "phone")]
    graded_at = next(at for (kind, _), at in zip(sink.events, sink.times, strict=True) if kind == "judge")
    # Taken for the grade (before the judge answered), not again afterwards: the browser ran once for them.
    assert all(
        shot.path.parent == spec.output_dir / "screenshots" and shot.path.stat().st_mtime <= graded_at for shot in after
    )


def test_a_replayed_change_its_sample_review_rejects_twice_fails_naming_what_is_missing(build_sample, tmp_path):
    data = json.loads((RECORDINGS / "web-player" / "dark-mode.json").read_text())
    # Sample data for this test: the same conversation, whose review finds the choice is not kept, and the
    # agent's second finish, which changes nothing.
    last = data["responses"][-1]
    again = {**last, "id": "msg_test_finish_again",
             "content": [{**last["content"][-1], "id": "toolu_test_finish_again"}]}  # fmt: skip
    data["responses"].append(again)
    checklist_response, accepted = data["judge"]
    rejected = json.loads(accepted["content"][0]["text"])
    rejected["items"][3] = {"number": 4, "passed": False, "note": "Nothing is saved when the page closes."}
    rejected["objections"] = ["Keep the choice after a reload."]
    rejected["verdict"] = "The choice is not kept."
    reject = {**accepted, "content": [{"type": "text", "text": json.dumps(rejected)}]}
    data["judge"] = [checklist_response, reject, {**reject, "id": "msg_test_reject_again"}]
    sample = tmp_path / "rejected.json"
    sample.write_text(json.dumps(data))

    result, sink = build_sample("web-player", data["idea"], cassette=sample)

    assert result.error is not None and result.error.code == "judge_rejected", result.error
    assert result.error.family == USER and not result.artifacts
    assert "“The choice is kept after the page is reloaded”" in result.error.message
    assert "Keep the choice after a reload." in result.error.detail
    # The refused finish told the agent why, and what the maker sees is kept on the failed build.
    [refused] = [d for kind, d in sink.events if kind == "tool_result" and d["tool"] == "finish" and not d["ok"]]
    assert "Keep the choice after a reload." in refused["output"]
    assert [item["passed"] for item in result.checklist] == [True, True, True, False]
    assert result.judge == {"accepted": False, "rounds": 2, "score": 0.75, "verdict": "The choice is not kept.",
                            "replayed": True}  # fmt: skip
    assert sorted(shot.size for shot in result.screenshots if shot.moment == "after") == ["desktop", "phone"]


def test_a_replayed_sample_without_a_review_skips_the_judge_with_a_log_line(build_sample, tmp_path):
    data = json.loads((RECORDINGS / "web-player" / "total-duration.json").read_text())
    del data["judge"]
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(data))

    result, sink = build_sample("web-player", data["idea"], cassette=plain)

    assert result.ok, result.error
    assert result.checklist == [] and result.judge == {}
    assert any("no sample review" in data["text"] for kind, data in sink.events if kind == "log")
    assert "judge" not in {c["purpose"] for kind, c in sink.events if kind == "model_call"}


def test_the_command_line_judges_unless_told_not_to(monkeypatch, tmp_path):
    from agents.__main__ import parse_args

    monkeypatch.delenv("AGENT_JUDGE", raising=False)
    argv = ["build", "--repo", str(tmp_path), "--idea", "Anything", "--out", str(tmp_path)]
    assert parse_args(argv).judge is True
    assert parse_args([*argv, "--no-judge"]).judge is False
    monkeypatch.setenv("AGENT_JUDGE", "off")
    assert parse_args(argv).judge is False
    assert parse_args([*argv, "--judge"]).judge is True
