"""The agent loop: a hand-written tool-use loop on the Messages API, streaming.

Prompt caching depends on every request starting with exactly the bytes of the previous one: tools and
system blocks never change within a build, assistant turns are appended as minimal dicts built the same
way every time, tool results are clipped deterministically, and the rolling breakpoint is the request's
top-level `cache_control`, so no earlier message is ever edited.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import anthropic

from agents.errors import STOP_REASONS, Cancelled, ChangeState, ServiceError, UserError
from agents.pricing import Price, Usage, cost
from agents.tools import EDITOR, Toolbox, tool_list
from agents.verify import failure_code

CACHE = {"type": "ephemeral"}
# Worth another attempt, as the SDK's own retries judge it: timeouts, conflicts, rate limits, the service failing.
RETRY_STATUSES = frozenset({408, 409, 429})
# An error can also arrive inside a stream that began with HTTP 200 (an SSE `error` event, or an exception
# frame of Bedrock's event stream): the SDK raises a plain APIStatusError whose status is that 200. Its type
# says what it is, so it is judged like the HTTP status that type comes with. An unknown type in the middle
# of an answer is the service failing, like a 500.
STREAM_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
    # Bedrock's names for the same things
    "validationException": 400,
    "accessDeniedException": 403,
    "modelTimeoutException": 408,
    "throttlingException": 429,
    "internalServerException": 500,
    "modelStreamErrorException": 500,
    "serviceUnavailableException": 503,
}
NUDGE = "Please continue: make the change, call verify, and call finish with a short summary when verify passes."
IMAGE_TOKENS = 5_000  # above what one image costs (about 1,600 tokens once the API has scaled it down)
CUT_TOOL = (
    "Your response hit the output limit before this tool call was complete, so it was not run. "
    "Send it again in smaller pieces (several small edits rather than one large one)."
)


@dataclass
class LoopLimits:
    max_turns: int = 40
    max_tokens: int = 3_000_000  # input (cached or not) plus output, summed over the build
    max_cost: Decimal = Decimal("5")
    max_output_tokens: int = 8192  # per request
    max_attempts: int = 4  # per request, for overload, rate limits and connection errors
    max_nudges: int = 2


@dataclass
class LoopState:
    turns: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: Decimal = Decimal(0)
    last_input: int = 0  # total input tokens of the previous request: the cacheable prefix of the next


def estimate_tokens(content) -> int:
    """A generous token count for request content: a token per 3 characters of its JSON, and a fixed
    IMAGE_TOKENS per image, whose base64 size says nothing of its cost (the API scales images down)."""
    images = 0

    def without_images(value):
        nonlocal images
        if isinstance(value, dict):
            if value.get("type") == "image":
                images += 1
                return None
            return {k: without_images(v) for k, v in value.items()}
        if isinstance(value, list):
            return [without_images(v) for v in value]
        return value

    chars = len(json.dumps(without_images(content)))
    return chars // 3 + 1 + images * IMAGE_TOKENS


def error_status(exc: anthropic.APIStatusError) -> int:
    """The HTTP status an API error stands for, also when it arrived inside a stream under HTTP 200."""
    if exc.status_code >= 400:
        return exc.status_code
    return STREAM_ERROR_STATUS.get(exc.type or "", 500)


def tool_schemas(*, screenshot: bool = False) -> list[dict]:
    tools = [dict(t) for t in tool_list(screenshot=screenshot)]
    tools[-1] = {**tools[-1], "cache_control": CACHE}
    return tools


def assistant_blocks(content) -> list[dict]:
    """The assistant's content as it must be sent back: unchanged, in a stable minimal form."""
    blocks = []
    for block in content:
        kind = block.type
        if kind == "text":
            blocks.append({"type": "text", "text": block.text})
        elif kind == "tool_use":
            blocks.append({"type": "tool_use", "id": block.id, "name": block.name, "input": block.input})
        elif kind == "thinking":
            blocks.append({"type": "thinking", "thinking": block.thinking, "signature": block.signature})
        elif kind == "redacted_thinking":
            blocks.append({"type": "redacted_thinking", "data": block.data})
        else:
            blocks.append(block.model_dump(exclude_none=True))
    return blocks


def text_of(blocks: list[dict]) -> str:
    """The text of a tool result's content blocks, an image standing as "[image]"."""
    return "\n".join(block.get("text", "") if block.get("type") == "text" else "[image]" for block in blocks)


def change_state(toolbox: Toolbox) -> ChangeState:
    """What the toolbox knows of the agent's change: edited, checked by verify, and how that went."""
    report = toolbox.last_verify
    if report is None:
        return ChangeState(edited=toolbox.edited, checked=False)
    failed = report.failed_step
    return ChangeState(
        edited=toolbox.edited, checked=True, passed=report.passed,
        # dirty: edits since a passing verify (after a failing one it stays set, and `passed` says it)
        edited_since=report.passed and toolbox.dirty, broken_step=failed.step if failed else "",
        failing=tuple(t.name for t in report.tests if not t.passed),
    )  # fmt: skip


def describe_call(name: str, tool_input) -> dict:
    """A short, readable form of a tool call for the build log."""
    if not isinstance(tool_input, dict):
        return {"tool": name}
    if name == EDITOR:
        return {"tool": "edit", "command": tool_input.get("command"), "path": tool_input.get("path")}
    if name == "run":
        return {"tool": "run", "command": str(tool_input.get("command", ""))[:500]}
    if name == "search":
        return {"tool": "search", "pattern": str(tool_input.get("pattern", ""))[:200], "path": tool_input.get("path")}
    return {"tool": name}


class AgentLoop:
    def __init__(
        self,
        client: anthropic.Anthropic,
        *,
        model: str,
        system: list[dict],
        toolbox: Toolbox,
        emit,
        limits: LoopLimits,
        price: Price,
        price_version: str,
        remaining: Callable[[], float],
        cancelled: Callable[[], bool] = lambda: False,
        sleep=time.sleep,
        live: bool = True,
        on_message: Callable | None = None,
    ):
        self.client = client
        self.model = model
        self.system = system
        self.tools = tool_schemas(screenshot=toolbox.browser is not None)
        self.toolbox = toolbox
        self.emit = emit
        self.limits = limits
        self.price = price
        self.price_version = price_version
        self.remaining = remaining
        self.cancelled = cancelled
        self.sleep = sleep
        self.live = live
        self.on_message = on_message  # (message, purpose) for every response, e.g. to record the conversation
        self.state = LoopState()

    # --- budget -----------------------------------------------------------------------------------
    def _check_budget(self, messages: list[dict], *, fresh: list | None = None, max_output: int | None = None) -> None:
        """Refuse a request that could take the build over its limits, before it is sent. `fresh` is a
        request that shares no prefix with the conversation (the judge's)."""
        limits, state = self.limits, self.state
        if state.turns >= limits.max_turns:
            raise UserError("turns_exhausted", f"{state.turns} turns used of {limits.max_turns}")
        output = max_output or limits.max_output_tokens
        if fresh is not None:
            cached, new_tokens = 0, estimate_tokens(fresh)
        elif state.last_input:
            cached, new_tokens = state.last_input, estimate_tokens(messages[-1])
        else:
            cached, new_tokens = 0, estimate_tokens([self.system, self.tools, messages])
        worst_tokens = cached + new_tokens + output
        if state.usage.total + worst_tokens > limits.max_tokens:
            raise UserError("budget_reached", f"token limit: {state.usage.total} used, the next request could take "
                            f"{worst_tokens} more, the limit is {limits.max_tokens}")  # fmt: skip
        estimate = (
            cached * self.price.cache_read + new_tokens * self.price.cache_write_5m + output * self.price.output
        ) / Decimal(1_000_000)
        if state.cost + estimate > limits.max_cost:
            raise UserError("budget_reached", f"cost limit: ${state.cost:.4f} spent, the next request could cost up "
                            f"to ${estimate:.4f}, the limit is ${limits.max_cost}")  # fmt: skip

    # --- one request ------------------------------------------------------------------------------
    def _request(
        self,
        messages: list[dict],
        *,
        system: list[dict] | None = None,
        tools: list[dict] | None = None,
        max_tokens: int | None = None,
        client: anthropic.Anthropic | None = None,
        cache: bool = True,
    ):
        """One streamed request, retried within the build's time. `client` is another client for the same
        model (a replayed sample's review has its own script); `cache` False for a one-off request (the
        judge's), whose prompt no later request repeats: writing it to the cache would only cost more."""
        attempt = 0
        while True:
            attempt += 1
            if self.cancelled():
                raise Cancelled()
            started = time.monotonic()
            try:
                extra = {"tools": self.tools if tools is None else tools} if tools != [] else {}
                if cache:
                    extra["cache_control"] = CACHE
                with (client or self.client).messages.stream(
                    model=self.model,
                    max_tokens=max_tokens or self.limits.max_output_tokens,
                    system=self.system if system is None else system,
                    messages=messages,
                    **extra,
                ) as stream:
                    message = stream.get_final_message()
                return message, time.monotonic() - started
            except anthropic.APIConnectionError as exc:  # timeouts included
                self._wait_or_fail(exc, attempt, type(exc).__name__)
            except anthropic.APIStatusError as exc:
                status = error_status(exc)
                what = f"HTTP {status}" if exc.status_code >= 400 else f"{exc.type or 'an error'} in mid-answer"
                if status in RETRY_STATUSES or status >= 500:
                    self._wait_or_fail(exc, attempt, what)
                    continue
                if status in (401, 403):
                    raise ServiceError(
                        "model_unavailable", f"the model service refused the credentials ({what})"
                    ) from exc
                if not self.live:
                    raise ServiceError(
                        "recording_mismatch", f"the sample conversation does not fit this build: {exc.message}"
                    ) from exc
                raise ServiceError("internal", f"the model service rejected a request: {exc.message}") from exc

    def _wait_or_fail(self, exc: Exception, attempt: int, what: str) -> None:
        if attempt >= self.limits.max_attempts:
            raise ServiceError("model_unavailable", f"{what} after {attempt} attempts") from exc
        wait = min(2.0**attempt, 30.0)
        response = getattr(exc, "response", None)
        if response is not None:
            seconds = None
            for header, scale in (("retry-after-ms", 1000), ("retry-after", 1)):
                try:
                    seconds = float(response.headers[header]) / scale
                    break
                except (KeyError, ValueError):  # absent, or an HTTP date: our own backoff then
                    continue
            if seconds is not None and seconds >= 0:
                wait = seconds
        left = self.remaining()
        if wait >= left:
            raise ServiceError("model_unavailable",
                               f"{what}: the service asked to wait {wait:.0f} s, longer than the {left:.0f} s "
                               "this build has left")  # fmt: skip
        self.emit("log", {"text": f"Claude's service is busy ({what}); trying again in {wait:.0f} s."})
        self.sleep(wait)

    def _account(self, message, latency: float, purpose: str = "agent") -> None:
        u = message.usage
        usage = Usage(u.input_tokens or 0, u.output_tokens or 0, u.cache_creation_input_tokens or 0,
                      u.cache_read_input_tokens or 0)  # fmt: skip
        spent = cost(usage, self.price)
        state = self.state
        state.turns += 1
        state.usage.add(usage)
        state.cost += spent
        if purpose == "agent":  # the judge's prompt is not the conversation's cached prefix
            state.last_input = usage.total_input + usage.output_tokens
        self.emit("model_call", {
            "turn": state.turns, "model": message.model or self.model, "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens, "cache_write_tokens": usage.cache_write_tokens,
            "cache_read_tokens": usage.cache_read_tokens, "cost": str(spent), "latency_ms": int(latency * 1000),
            "stop_reason": message.stop_reason, "price_version": self.price_version, "purpose": purpose,
        })  # fmt: skip
        if self.on_message is not None:
            self.on_message(message, purpose)

    # --- the loop ---------------------------------------------------------------------------------
    def run(self, messages: list[dict]) -> str:
        """Drive the conversation until `finish` is accepted. Returns the agent's summary.
        Raises UserError/ServiceError when the build cannot finish, Cancelled when cancelled. A UserError
        that stops the agent before its change is done carries `change`, so its message names the real
        cause (the tests that were failing) instead of only the stop."""
        try:
            return self._converse(messages)
        except UserError as exc:
            if exc.code in STOP_REASONS:
                exc.change = change_state(self.toolbox)
            raise
        except ServiceError as exc:
            # A sample conversation written for other code runs out of responses where the real agent would
            # have gone on fixing what verify found (a page that throws in the browser, tests that fail):
            # the real cause is that failed verify, not the sample.
            report = self.toolbox.last_verify
            if exc.code != "recording_mismatch" or report is None or report.passed:
                raise
            error = UserError(failure_code(report), report.for_model())
            error.change = change_state(self.toolbox) if error.code in STOP_REASONS else None
            raise error from exc

    def _converse(self, messages: list[dict]) -> str:
        nudges = 0
        while True:
            if self.cancelled():
                raise Cancelled()
            self._check_budget(messages)
            message, latency = self._request(messages)
            self._account(message, latency)
            for block in message.content:
                if block.type == "text" and block.text.strip():
                    self.emit("agent_text", {"text": block.text})
            reason = message.stop_reason
            if reason == "refusal":
                details = getattr(message, "stop_details", None)
                explanation = getattr(details, "explanation", None) or getattr(details, "category", None) or ""
                raise UserError("refused", str(explanation))
            if reason == "model_context_window_exceeded":
                raise UserError("context_exceeded", f"after {self.state.turns} turns")
            messages.append({"role": "assistant", "content": assistant_blocks(message.content)})
            if reason == "pause_turn":
                continue
            uses = [b for b in message.content if b.type == "tool_use"]
            if uses:
                # Only a tool call that ends the response can have been cut by the output limit.
                cut = reason == "max_tokens" and message.content[-1].type == "tool_use"
                results = self._run_tools(uses, cut_last=cut)
                messages.append({"role": "user", "content": results})
                if self.toolbox.summary is not None:
                    return self.toolbox.summary
                continue
            if reason == "max_tokens":
                messages.append({"role": "user", "content": [{"type": "text", "text": "Please continue."}]})
                continue
            # end_turn or stop_sequence without tool calls: the model thinks it is done.
            if nudges >= self.limits.max_nudges:
                raise UserError("no_finish", "the agent stopped talking without calling finish")
            nudges += 1
            messages.append({"role": "user", "content": [{"type": "text", "text": NUDGE}]})

    def _run_tools(self, uses, *, cut_last: bool) -> list[dict]:
        results = []
        for position, use in enumerate(uses):
            if self.cancelled():
                raise Cancelled()
            call = describe_call(use.name, use.input)
            self.emit("tool_call", {"id": use.id, **call})
            if cut_last and position == len(uses) - 1:
                outcome_text, is_error = CUT_TOOL, True
            else:
                outcome = self.toolbox.call(use.name, use.input)
                outcome_text, is_error = outcome.content, outcome.is_error
            # Content is text, or a list of blocks (the screenshot tool's image and text), sent unchanged;
            # the log shows only the text of it.
            shown = outcome_text if isinstance(outcome_text, str) else text_of(outcome_text)
            self.emit("tool_result", {"id": use.id, "tool": call["tool"], "ok": not is_error,
                                      "output": shown[:4000]})  # fmt: skip
            result = {"type": "tool_result", "tool_use_id": use.id, "content": outcome_text}
            if is_error:
                result["is_error"] = True
            results.append(result)
        return results
