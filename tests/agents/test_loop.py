"""The agent loop through the real `anthropic` SDK: only the HTTP transport is replaced, by a scripted
Messages API that streams each response as the API does and keeps every request the loop sent. The tools
run for real, on a tiny project in the real sandbox."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from decimal import Decimal

import anthropic
import httpx2
import pytest

from agents import Attachment, BuildSpec, build
from agents.context import SYSTEM, first_message, system_blocks
from agents.engine import Scrubber
from agents.errors import MAX_NAMED_TESTS, OURS, USER, BuildError, ChangeState, ServiceError, UserError, stop_message
from agents.loop import CUT_TOOL, NUDGE, AgentLoop, LoopLimits
from agents.pricing import PRICE_TABLE, price_for
from agents.providers import ProviderConfig
from agents.providers.replay import ScriptedTransport, scripted, stream_error
from agents.tools import EDITOR

MODEL = "claude-sonnet-5-5"
VERSION = "2026-09-01"
PRICE = price_for(MODEL, PRICE_TABLE, VERSION)
IDEA = "Fix the calculator: adding 2 and 2 should give 4"
CACHE = {"type": "ephemeral"}
USAGE = {"input_tokens": 100, "output_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
_replies = itertools.count(1)


# --- the scripted model -----------------------------------------------------------------------------
def reply(*content, stop="tool_use", **fields) -> dict:
    """One response of the Messages API, as the API sends it."""
    usage = {**USAGE, **fields.pop("usage", {})}
    return {"id": f"msg_{next(_replies):04d}", "type": "message", "role": "assistant", "model": MODEL,
            "content": list(content), "stop_reason": stop, "stop_sequence": None, "usage": usage, **fields}  # fmt: skip


def say(text: str) -> dict:
    return {"type": "text", "text": text}


def use(id: str, name: str, **tool_input) -> dict:
    return {"type": "tool_use", "id": id, "name": name, "input": tool_input}


def error(status: int, kind: str, headers: dict | None = None) -> httpx2.Response:
    body = {"type": "error", "error": {"type": kind, "message": f"{kind} for the test"}}
    return httpx2.Response(status, json=body, headers=headers or {})


def fix(summary: str = "Adding two numbers now gives their sum.") -> list[dict]:
    """The agent fixes the bug, verifies and finishes: three responses."""
    return [
        reply(say("The sign is wrong."),
              use("toolu_fix", EDITOR, command="str_replace", path="calc.py", old_str="a - b", new_str="a + b")),
        reply(use("toolu_verify", "verify")),
        reply(use("toolu_finish", "finish", summary=summary)),
    ]  # fmt: skip


class Conversation:
    """An AgentLoop on a scripted API, with what it emitted and how long it was asked to sleep."""

    def __init__(self, toolbox, system, script, *, limits=None, remaining=600.0):
        self.transport = ScriptedTransport(script)
        client = anthropic.Anthropic(api_key="k", base_url="http://test.invalid", max_retries=0,
                                     http_client=httpx2.Client(transport=self.transport))  # fmt: skip
        self.events: list[tuple[str, dict]] = []
        self.sleeps: list[float] = []
        self.toolbox = toolbox
        self.loop = AgentLoop(
            client, model=MODEL, system=system, toolbox=toolbox, emit=lambda kind, data: self.events.append((kind, data)),
            limits=limits or LoopLimits(), price=PRICE, price_version=VERSION, remaining=lambda: remaining,
            sleep=self.sleeps.append,
        )  # fmt: skip

    def run(self, attachments=()) -> str:
        return self.loop.run([first_message(IDEA, (), attachments)])

    def fails(self) -> BuildError:
        with pytest.raises(BuildError) as caught:
            self.run()
        return caught.value

    @property
    def requests(self) -> list[dict]:
        return self.transport.requests

    def answers(self, request: int) -> dict[str, dict]:
        """The tool results sent with request number `request` (from 0), by tool_use id."""
        last = self.requests[request]["messages"][-1]
        assert last["role"] == "user"
        return {r["tool_use_id"]: r for r in last["content"] if r["type"] == "tool_result"}

    def emitted(self, kind: str) -> list[dict]:
        return [data for k, data in self.events if k == kind]


@pytest.fixture(scope="module")
def system(make_repo, recipe):
    """The system blocks the engine would send for a small repository."""
    repo = make_repo({"calc.py": "def add(a, b):\n    return a - b\n", "AGENTS.md": "Keep it small.\n"})
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    return system_blocks(recipe=recipe, mirror=repo / ".git", commit=commit, target="tiny")


@pytest.fixture
def talk(toolbox, system):
    def start(script, **kwargs) -> Conversation:
        return Conversation(toolbox, system, script, **kwargs)

    return start


# --- the happy path and the protocol -------------------------------------------------------------------
def test_the_agent_fixes_verifies_and_finishes_with_a_summary(talk, tree):
    conversation = talk(fix())

    summary = conversation.run()

    assert summary == "Adding two numbers now gives their sum."
    assert (tree / "calc.py").read_text() == "def add(a, b):\n    return a + b\n"
    assert len(conversation.requests) == 3
    for request in conversation.requests:
        assert request["model"] == MODEL and request["stream"] is True
        assert request["max_tokens"] == LoopLimits().max_output_tokens
    assert [e["text"] for e in conversation.emitted("agent_text")] == ["The sign is wrong."]
    assert [e["tool"] for e in conversation.emitted("tool_call")] == ["edit", "verify", "finish"]


def test_parallel_tool_calls_are_answered_together_in_one_message_in_order(talk):
    calls = [
        say("Let me look around."),
        use("toolu_a", EDITOR, command="view", path="calc.py"),
        use("toolu_b", "search", pattern="def add"),
        use("toolu_c", "run", command="ls tests"),
    ]
    conversation = talk([reply(*calls), *fix()])

    conversation.run()

    second = conversation.requests[1]["messages"]
    assert len(second) == 3
    assert second[1] == {"role": "assistant", "content": calls}
    assert second[2]["role"] == "user"
    results = second[2]["content"]
    assert [r["type"] for r in results] == ["tool_result"] * 3
    assert [r["tool_use_id"] for r in results] == ["toolu_a", "toolu_b", "toolu_c"]
    assert not any(r.get("is_error") for r in results)
    assert "return a - b" in results[0]["content"]
    assert results[1]["content"] == "calc.py:1:def add(a, b):"
    assert results[2]["content"] == "exit code 0\ntest_calc.py\n"


def test_a_paused_turn_is_sent_back_unchanged_without_a_user_message(talk):
    paused = [say("Still reading the code…")]
    conversation = talk([reply(*paused, stop="pause_turn"), *fix()])

    conversation.run()

    first, second = conversation.requests[0]["messages"], conversation.requests[1]["messages"]
    assert second == [*first, {"role": "assistant", "content": paused}]
    assert second[-1]["role"] == "assistant"


def test_a_tool_call_cut_by_the_output_limit_is_not_run_but_earlier_calls_are(talk, tree):
    cut = {"type": "tool_use", "id": "toolu_cut", "name": EDITOR, "input": {},
           "_partial_json": '{"command": "create", "path": "big.txt", "file_text": "aaaa'}  # fmt: skip
    response = reply(say("Two steps."), use("toolu_view", EDITOR, command="view", path="calc.py"), cut,
                     stop="max_tokens")  # fmt: skip
    conversation = talk([response, *fix()])

    conversation.run()

    answers = conversation.answers(1)
    assert list(answers) == ["toolu_view", "toolu_cut"]
    assert "return a - b" in answers["toolu_view"]["content"] and "is_error" not in answers["toolu_view"]
    assert answers["toolu_cut"] == {"type": "tool_result", "tool_use_id": "toolu_cut", "content": CUT_TOOL,
                                    "is_error": True}  # fmt: skip
    assert not (tree / "big.txt").exists()
    # What the model sent is sent back as the SDK read it, the cut call included.
    assert conversation.requests[1]["messages"][1]["content"][2]["input"] == {"command": "create", "path": "big.txt"}


def test_a_complete_tool_call_before_text_cut_by_the_output_limit_is_run(talk):
    response = reply(use("toolu_view", EDITOR, command="view", path="calc.py"), say("Next I will"), stop="max_tokens")
    conversation = talk([response, *fix()])

    conversation.run()

    answer = conversation.answers(1)["toolu_view"]
    assert "is_error" not in answer
    assert "return a - b" in answer["content"]


def test_text_cut_by_the_output_limit_is_continued(talk):
    conversation = talk([reply(say("Here is my long plan"), stop="max_tokens"), *fix()])

    conversation.run()

    assert conversation.requests[1]["messages"][-1] == {"role": "user", "content": [say("Please continue.")]}


def test_a_refusal_ends_the_build_with_the_models_explanation_and_no_further_request(talk):
    details = {"type": "refusal", "category": "cyber", "explanation": "This looks like malware."}
    conversation = talk([reply(say(""), stop="refusal", stop_details=details), *fix()])

    failure = conversation.fails()

    assert isinstance(failure, UserError) and failure.family == USER
    assert failure.code == "refused"
    assert "This looks like malware." in failure.detail
    assert len(conversation.requests) == 1


def test_a_full_context_window_ends_the_build_as_context_exceeded(talk):
    conversation = talk([reply(say("…"), stop="model_context_window_exceeded"), *fix()])

    failure = conversation.fails()

    assert isinstance(failure, UserError) and failure.code == "context_exceeded"
    assert len(conversation.requests) == 1


# --- a busy service ---------------------------------------------------------------------------------
def test_rate_limits_and_overload_are_waited_out_as_the_service_asks(talk):
    script = [
        error(429, "rate_limit_error", {"retry-after": "3"}),
        error(529, "overloaded_error"),
        error(429, "rate_limit_error", {"retry-after-ms": "1500"}),
        *fix(),
    ]
    conversation = talk(script)

    assert conversation.run() == "Adding two numbers now gives their sum."
    assert conversation.sleeps == [3.0, 4.0, 1.5]  # the service's word, else our own backoff
    assert len(conversation.requests) == 6
    assert len(conversation.emitted("model_call")) == 3  # failed attempts are not charged
    busy = [e["text"] for e in conversation.emitted("log")]
    assert len(busy) == 3 and all("busy" in text for text in busy)


def test_a_wait_longer_than_the_build_has_left_fails_at_once_without_sleeping(talk):
    conversation = talk([error(429, "rate_limit_error", {"retry-after": "3600"}), *fix()], remaining=600.0)

    failure = conversation.fails()

    assert isinstance(failure, ServiceError) and failure.family == OURS
    assert failure.code == "model_unavailable"
    assert "3600" in failure.detail
    assert conversation.sleeps == []
    assert len(conversation.requests) == 1


def test_an_overloaded_service_fails_the_build_as_ours_after_the_last_attempt(talk):
    conversation = talk([error(529, "overloaded_error")] * 4 + fix(), limits=LoopLimits(max_attempts=4))

    failure = conversation.fails()

    assert isinstance(failure, ServiceError) and failure.family == OURS
    assert failure.code == "model_unavailable"
    assert "4 attempts" in failure.detail
    assert conversation.sleeps == [2.0, 4.0, 8.0]
    assert len(conversation.requests) == 4


# An error can arrive inside a stream that began with HTTP 200 (an SSE `error` event after message_start):
# it is the same outage as its HTTP equivalent, so it is retried the same way and, if it lasts, is ours.
@pytest.mark.parametrize("kind", ["overloaded_error", "api_error", "rate_limit_error"])
def test_an_error_inside_a_stream_is_retried_like_its_http_equivalent(talk, kind):
    conversation = talk([stream_error(kind, "try again"), *fix()])

    assert conversation.run() == "Adding two numbers now gives their sum."
    assert conversation.sleeps == [2.0]
    assert len(conversation.requests) == 4
    assert len(conversation.emitted("model_call")) == 3  # the interrupted answer is not accounted
    [busy] = [e["text"] for e in conversation.emitted("log")]
    assert kind in busy and "busy" in busy


def test_errors_inside_streams_that_last_fail_the_build_as_ours_not_charged(talk):
    interrupted = [scripted({"type": "error", "status": 200, "error": {"type": "overloaded_error"}})] * 4
    conversation = talk([*interrupted, *fix()], limits=LoopLimits(max_attempts=4))

    failure = conversation.fails()

    assert isinstance(failure, ServiceError) and failure.family == OURS
    assert failure.code == "model_unavailable"
    assert failure.detail == "overloaded_error in mid-answer after 4 attempts"
    assert conversation.sleeps == [2.0, 4.0, 8.0]
    assert conversation.emitted("model_call") == []


def test_a_request_error_inside_a_stream_is_not_retried(talk):
    conversation = talk([stream_error("invalid_request_error", "messages: bad"), *fix()])

    failure = conversation.fails()

    assert isinstance(failure, ServiceError) and failure.code == "internal"
    assert "messages: bad" in failure.detail
    assert conversation.sleeps == [] and len(conversation.requests) == 1


# --- what the model sends is untrusted ---------------------------------------------------------------
def test_malformed_tool_calls_are_answered_as_errors_and_the_loop_goes_on(talk):
    calls = [
        {"type": "tool_use", "id": "toolu_list", "name": "run", "input": ["ls", "-la"]},
        use("toolu_unknown", "delete_everything", really=True),
        use("toolu_no_command", "run"),
        use("toolu_no_old", EDITOR, command="str_replace", path="calc.py", new_str="x"),
        use("toolu_bad_command", EDITOR, command="delete", path="calc.py"),
    ]
    conversation = talk([reply(*calls), *fix()])

    assert conversation.run() == "Adding two numbers now gives their sum."
    answers = conversation.answers(1)
    assert list(answers) == [c["id"] for c in calls]
    assert all(a["is_error"] is True for a in answers.values())
    assert answers["toolu_list"]["content"] == "The tool input must be a JSON object."
    assert answers["toolu_unknown"]["content"].startswith("Unknown tool 'delete_everything'. Available:")
    assert "'command'" in answers["toolu_no_command"]["content"]
    assert "'old_str'" in answers["toolu_no_old"]["content"]
    assert "Unknown editor command 'delete'" in answers["toolu_bad_command"]["content"]


def test_the_same_failing_command_three_times_stops_the_build_as_stuck(talk):
    script = [reply(use(f"toolu_{n}", "run", command="cat missing.txt")) for n in range(3)] + fix()
    conversation = talk(script)

    failure = conversation.fails()

    assert isinstance(failure, UserError) and failure.code == "stuck"
    assert "cat missing.txt" in failure.detail
    assert len(conversation.requests) == 3


def test_the_same_edit_three_times_stops_the_build_as_stuck(talk):
    again = dict(command="create", path="notes.txt", file_text="hello\n")
    conversation = talk([reply(use(f"toolu_{n}", EDITOR, **again)) for n in range(3)] + fix())

    assert conversation.fails().code == "stuck"


def test_finish_is_refused_until_verify_has_passed_since_the_last_change(talk):
    script = [
        reply(use("toolu_early", "finish", summary="Done.")),
        fix()[0],
        reply(use("toolu_unverified", "finish", summary="Done.")),
        reply(use("toolu_verify", "verify")),
        reply(use("toolu_finish", "finish", summary="Adding now adds.")),
    ]
    conversation = talk(script)

    assert conversation.run() == "Adding now adds."
    early, unverified = conversation.answers(1)["toolu_early"], conversation.answers(3)["toolu_unverified"]
    assert early["is_error"] and early["content"].startswith("Nothing has been changed yet.")
    assert unverified["is_error"] and unverified["content"].startswith("Call verify first")
    assert conversation.answers(4)["toolu_verify"]["content"].startswith("PASSED")
    assert len(conversation.requests) == 5


def test_an_agent_that_stops_without_finish_is_nudged_and_can_then_finish(talk):
    conversation = talk([reply(say("I think that's it."), stop="end_turn"), *fix()])

    assert conversation.run() == "Adding two numbers now gives their sum."
    assert conversation.requests[1]["messages"][-1] == {"role": "user", "content": [say(NUDGE)]}


def test_an_agent_that_keeps_stopping_without_finish_fails_as_no_finish(talk):
    conversation = talk([reply(say(f"Done {n}."), stop="end_turn") for n in range(3)] + fix())

    failure = conversation.fails()

    assert isinstance(failure, UserError) and failure.code == "no_finish"
    assert len(conversation.requests) == 3  # the first answer and two nudges


# --- when the agent stops, the message names the real cause ----------------------------------------------
FAILING_TEST = "test_calc.AddTest.test_adds_two_numbers"


def still_wrong() -> dict:
    """An edit that leaves the calculator wrong, so the app's own test keeps failing."""
    return reply(
        use("toolu_wrong", EDITOR, command="str_replace", path="calc.py", old_str="a - b", new_str="a - b + 0")
    )


def silence(count: int = 3) -> list[dict]:
    return [reply(say(f"I am done {n}."), stop="end_turn") for n in range(count)]


def test_an_agent_that_stops_before_checking_its_change_says_so_not_to_describe_the_idea_again(talk):
    failure = talk([fix()[0], *silence()]).fails()

    assert failure.code == "no_finish"
    assert failure.message.startswith("Claude stopped before checking its change with the app's own build and tests")
    assert "concretely" not in failure.message


def test_an_agent_that_stops_while_the_apps_tests_fail_names_the_failing_tests(talk):
    failure = talk([still_wrong(), reply(use("toolu_verify", "verify")), *silence()]).fails()

    assert failure.code == "no_finish"
    assert failure.message.startswith(f"The app's own tests failed after Claude's change: {FAILING_TEST}. Claude "
                                      "stopped before fixing them, so nothing was published.")  # fmt: skip


@pytest.mark.parametrize(
    ("code", "reason", "ending"),
    [
        ("turns_exhausted", "it used all the steps a build may take", [reply(use("toolu_v", EDITOR, command="view",
                                                                                  path="calc.py"))]),
        ("budget_reached", "the build reached its spending limit", []),
        ("stuck", "it kept repeating the same step without progress",
         [reply(use(f"toolu_{n}", "run", command="cat missing.txt")) for n in range(3)]),
        ("tests_failed", "it used all the checks a build may run",
         [reply(use(f"toolu_again{n}", "verify")) for n in range(2)]),
    ],
)  # fmt: skip
def test_a_build_stopped_by_a_limit_while_the_tests_fail_names_them_with_the_limit(talk, code, reason, ending):
    verify = reply(use("toolu_verify", "verify"),
                   usage={"cache_read_input_tokens": 60_000} if code == "budget_reached" else {})  # fmt: skip
    limits = LoopLimits(max_turns=3 if code == "turns_exhausted" else 40, max_tokens=100_000)
    conversation = talk([still_wrong(), verify, *ending, *fix()], limits=limits)

    failure = conversation.fails()

    assert failure.code == code
    assert failure.message.startswith(f"The app's own tests failed after Claude's change: {FAILING_TEST}. Claude "
                                      f"stopped before fixing them ({reason}), so nothing was published.")  # fmt: skip
    assert failure.detail  # what the limit was, for the curious, is kept


def test_a_limit_reached_before_any_check_says_the_change_was_not_checked(talk):
    failure = talk([fix()[0], fix()[0]], limits=LoopLimits(max_turns=1)).fails()

    assert failure.code == "turns_exhausted"
    assert failure.message.startswith("Claude stopped before checking its change with the app's own build and "
                                      "tests (it used all the steps a build may take)")  # fmt: skip


def test_tests_that_fail_before_any_edit_are_not_blamed_on_claudes_change(talk):
    failure = talk([reply(use("toolu_verify", "verify")), *silence()]).fails()

    assert failure.message.startswith(f"The app's own tests failed before Claude edited any file: {FAILING_TEST}.")
    assert "If that also happens on the app as it is, ask the app's admin to check its recipe." in failure.message


def test_a_broken_build_a_later_unchecked_edit_and_a_passing_check_each_get_their_own_words():
    broken = ChangeState(edited=True, checked=True, broken_step="build")
    unchecked = ChangeState(edited=True, checked=True, passed=True, edited_since=True)
    passed = ChangeState(edited=True, checked=True, passed=True)

    assert stop_message("stuck", broken).startswith("The app no longer built after Claude's change. Claude stopped "
                                                    "before fixing it (it kept repeating")  # fmt: skip
    assert stop_message("no_finish", unchecked).startswith("Claude stopped before checking its latest change")
    assert stop_message("no_finish", passed).startswith("Claude stopped without handing over its change, although")
    assert stop_message("budget_reached", passed) is None  # the limit's own message says it best
    assert stop_message("refused", broken) is None


def test_many_failing_tests_are_named_up_to_a_limit():
    failing = tuple(f"test_{n}" for n in range(MAX_NAMED_TESTS + 5))
    error = UserError("no_finish")
    error.change = ChangeState(edited=True, checked=True, broken_step="test", failing=failing)

    assert f"test_{MAX_NAMED_TESTS - 1} and 5 more." in error.message
    assert f"test_{MAX_NAMED_TESTS}," not in error.message


# --- budgets are checked before a request is sent ------------------------------------------------------
def test_a_request_that_could_pass_the_cost_limit_is_not_sent(talk):
    expensive = reply(use("toolu_view", EDITOR, command="view", path="calc.py"),
                      usage={"cache_creation_input_tokens": 200_000})  # fmt: skip
    conversation = talk([expensive, *fix()], limits=LoopLimits(max_cost=Decimal("0.55")))

    failure = conversation.fails()

    assert isinstance(failure, UserError) and failure.code == "budget_reached"
    assert "cost limit" in failure.detail
    assert len(conversation.requests) == 1
    assert conversation.loop.state.cost == Decimal("0.5004")  # 100×2 + 20×10 + 200000×2.5 per million


def test_a_build_whose_first_request_could_pass_the_cost_limit_sends_nothing(talk):
    conversation = talk(fix(), limits=LoopLimits(max_cost=Decimal("0.01")))

    assert conversation.fails().code == "budget_reached"
    assert conversation.requests == []


def test_an_attached_screenshot_is_budgeted_as_an_image_not_as_its_base64_text(talk, scratch_dir):
    screenshot = scratch_dir("images-") / "screenshot.png"
    screenshot.write_bytes(os.urandom(5 * 1024 * 1024))  # as large as the store accepts; the API scales it down
    conversation = talk(fix())

    assert conversation.run([Attachment(screenshot, "image/png")]) == "Adding two numbers now gives their sum."
    assert conversation.requests[0]["messages"][0]["content"][0]["type"] == "image"


def test_a_request_that_could_pass_the_token_limit_is_not_sent(talk):
    large = reply(use("toolu_view", EDITOR, command="view", path="calc.py"), usage={"cache_read_input_tokens": 50_000})
    conversation = talk([large, *fix()], limits=LoopLimits(max_tokens=100_000))

    failure = conversation.fails()

    assert failure.code == "budget_reached" and "token limit" in failure.detail
    assert len(conversation.requests) == 1


def test_the_turn_limit_stops_the_build_before_the_next_request(talk):
    conversation = talk(fix(), limits=LoopLimits(max_turns=2))

    failure = conversation.fails()

    assert isinstance(failure, UserError) and failure.code == "turns_exhausted"
    assert len(conversation.requests) == 2


# --- prompt caching -------------------------------------------------------------------------------
def test_every_request_starts_with_exactly_the_bytes_of_the_previous_one(talk):
    script = [
        reply({"type": "thinking", "thinking": "The sign looks wrong.", "signature": "c2lnbmF0dXJl"},
              use("toolu_a", EDITOR, command="view", path="calc.py"), use("toolu_b", "run", command="seq 1 50000")),
        reply(say("Still reading…"), stop="pause_turn"),
        reply(say("Found it."), stop="end_turn"),
        *fix(),
    ]  # fmt: skip
    conversation = talk(script)

    conversation.run()

    requests = conversation.requests
    assert len(requests) == 6
    for previous, request in zip(requests, requests[1:], strict=False):
        shared = len(previous["messages"])
        before = json.dumps([previous["tools"], previous["system"], previous["messages"]])
        now = json.dumps([request["tools"], request["system"], request["messages"][:shared]])
        assert now == before
        assert len(request["messages"]) > shared


def test_tools_are_sorted_by_name_with_one_cache_breakpoint_on_the_last(talk):
    conversation = talk(fix())

    conversation.run()

    tools = conversation.requests[0]["tools"]
    names = [t["name"] for t in tools]
    assert names == sorted(names) == ["finish", "run", "search", "str_replace_based_edit_tool", "verify"]
    assert [t.get("cache_control") for t in tools] == [None, None, None, None, CACHE]
    assert tools[3] == {"type": "text_editor_20250728", "name": EDITOR}


def test_the_static_prompt_comes_first_and_the_conversation_has_a_rolling_breakpoint(talk, system):
    conversation = talk(fix())

    conversation.run()

    for request in conversation.requests:
        assert request["system"] == system
        assert request["system"][0] == {"type": "text", "text": SYSTEM, "cache_control": CACHE}
        assert request["cache_control"] == CACHE


# --- accounting -----------------------------------------------------------------------------------
def test_every_model_call_is_reported_with_its_four_token_counts_and_cost(talk):
    usages = [
        {"input_tokens": 3000, "output_tokens": 200, "cache_creation_input_tokens": 4000, "cache_read_input_tokens": 0},
        {"input_tokens": 50, "output_tokens": 30, "cache_creation_input_tokens": 600, "cache_read_input_tokens": 4000},
        {"input_tokens": 10, "output_tokens": 40, "cache_creation_input_tokens": 200, "cache_read_input_tokens": 4600},
    ]
    script = fix()
    for response, usage in zip(script, usages, strict=True):
        response["usage"] = usage
    conversation = talk(script)

    conversation.run()

    calls = conversation.emitted("model_call")
    assert [(c["input_tokens"], c["output_tokens"], c["cache_write_tokens"], c["cache_read_tokens"]) for c in calls] == [
        (3000, 200, 4000, 0), (50, 30, 600, 4000), (10, 40, 200, 4600),
    ]  # fmt: skip
    # 3000×2 + 200×10 + 4000×2.5 = 18000; 50×2 + 30×10 + 600×2.5 + 4000×0.1 = 2300; 20 + 400 + 500 + 460 = 1380
    assert [c["cost"] for c in calls] == ["0.018000", "0.002300", "0.001380"]
    assert [c["turn"] for c in calls] == [1, 2, 3]
    assert all(c["purpose"] == "agent" and c["model"] == MODEL and c["price_version"] == VERSION for c in calls)
    assert [c["stop_reason"] for c in calls] == ["tool_use"] * 3
    state = conversation.loop.state
    assert state.cost == Decimal("0.021680")
    assert (state.usage.input_tokens, state.usage.cache_read_tokens, state.turns) == (3060, 8600, 3)


def test_the_scrubber_replaces_every_secret_wherever_it_appears():
    scrub = Scrubber(["sk-ant-0123456789", "sk-ant-0123456789-admin", "short", ""])

    event = {"text": "key sk-ant-0123456789-admin and sk-ant-0123456789", "n": 3,
             "nested": [{"cmd": "echo sk-ant-0123456789"}, ("short",)]}  # fmt: skip

    assert scrub(event) == {"text": "key [secret] and [secret]", "n": 3,
                            "nested": [{"cmd": "echo [secret]"}, ["short"]]}  # fmt: skip
    assert Scrubber([])("sk-ant-0123456789") == "sk-ant-0123456789"


def test_secrets_never_reach_the_builds_events(make_repo, scratch_dir, recipe):
    secret = "sk-live-4f9a8b7c6d5e"
    files = {
        "calc.py": "def add(a, b):\n    return a - b\n",
        "tests/test_calc.py": "import unittest\nfrom calc import add\n\n\nclass T(unittest.TestCase):\n"
        "    def test_add(self):\n        self.assertEqual(add(2, 2), 4)\n",
        "settings.ini": f"[payments]\ntoken = {secret}\n",
        "prototype.toml": recipe.source,
    }
    repo = make_repo(files)
    work = scratch_dir("build-")
    cassette = work / "cassette.json"
    responses = [
        reply(say("Let me check the settings."), use("toolu_cfg", EDITOR, command="view", path="settings.ini")),
        reply(say(f"The token is {secret}; I will not touch it."), use("toolu_run", "run", command="cat settings.ini")),
        *fix(),
    ]
    cassette.write_text(json.dumps({"format": 1, "target": "tiny", "idea": IDEA, "responses": responses}))
    events: list[tuple[str, dict]] = []

    class Sink:
        def emit(self, kind, data):
            events.append((kind, data))

        def stage(self, name):
            pass

        def cancelled(self):
            return False

    spec = BuildSpec(
        target="tiny", repo_url=str(repo), base_ref="main", idea=IDEA, mirror=work / "mirror.git",
        work_dir=work / "work", output_dir=work / "out", result_ref="refs/prototypes/1/1",
        provider=ProviderConfig(name="replay", cassette=cassette), secrets=(secret,),
    )  # fmt: skip
    result = build(spec, Sink())

    assert result.ok, result.error
    written = json.dumps(events)
    assert secret not in written
    outputs = [data["output"] for kind, data in events if kind == "tool_result"]
    assert "token = [secret]" in outputs[0] and "token = [secret]" in outputs[1]
    assert "The token is [secret]; I will not touch it." in written


def test_the_engines_own_last_check_names_the_tests_that_failed_on_the_finished_change():
    from agents.errors import ChangeState, UserError

    error = UserError("tests_failed", "FAILED: …")
    error.change = ChangeState(edited=True, checked=True, handed_over=True, broken_step="test",
                               failing=("orders › dayTotal", "orders › itemCount"))  # fmt: skip
    assert error.message.startswith(
        "The app's own tests failed on Claude's finished change: orders › dayTotal, orders › itemCount, so nothing"
    )
    assert "more simply" not in error.message
    error = UserError("build_failed", "FAILED: …")
    error.change = ChangeState(edited=True, checked=True, handed_over=True, broken_step="build")
    assert error.message.startswith("The app no longer built with Claude's finished change")
