"""Replay: sample Messages API conversations played back through the real SDK.

The samples under examples/recordings/ were written by hand in the API's wire format for the offline
demo and the tests; they were not recorded from Claude (`--record` can record a live build, in the same
format). Their token counts are made up to look realistic: a replayed build is priced at nothing (the
engine uses agents.pricing.FREE) and is marked replayed wherever it is shown.

The SDK talks to an `httpx2.MockTransport` that answers the N-th request of a build with the N-th
response, streamed as server-sent events exactly as the API sends them. The transport also
checks what a real server checks (every tool_use answered by a tool_result in the next message), so a
loop that breaks the protocol fails here as it would against the API.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import anthropic
import httpx2

from agents.errors import UserError
from agents.providers import ProviderConfig


def normalize_idea(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


@dataclass(frozen=True)
class Recording:
    path: Path
    target: str
    idea: str
    title: str
    summary: str
    model: str
    responses: tuple[dict, ...]

    @classmethod
    def load(cls, path: Path) -> Recording:
        data = json.loads(path.read_text())
        if data.get("format") != 1 or not data.get("responses"):
            raise ValueError(f"{path} is not a recording (format 1 with responses)")
        return cls(
            path=path,
            target=data["target"],
            idea=data["idea"],
            title=data.get("title", data["idea"]),
            summary=data.get("summary", ""),
            model=data.get("model", ""),
            responses=tuple(data["responses"]),
        )


def list_recordings(folder: Path | None, target: str | None = None) -> list[Recording]:
    """Every recording under `folder` (optionally for one target), sorted by target then title."""
    if folder is None or not folder.is_dir():
        return []
    found = [Recording.load(p) for p in sorted(folder.glob("**/*.json"))]
    return sorted((r for r in found if target in (None, r.target)), key=lambda r: (r.target, r.title))


def find_recording(folder: Path | None, target: str, idea: str) -> Recording | None:
    wanted = normalize_idea(idea)
    for recording in list_recordings(folder, target):
        if normalize_idea(recording.idea) == wanted:
            return recording
    return None


def sse_events(message: dict) -> list[dict]:
    """The server-sent events the API streams for one complete message."""
    usage = dict(message.get("usage") or {})
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**usage, "output_tokens": 1}}  # fmt: skip
    events: list[dict] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            events.append(
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
            )
            text = block["text"]
            for at in range(0, len(text), 80):
                delta = {"type": "text_delta", "text": text[at : at + 80]}
                events.append({"type": "content_block_delta", "index": index, "delta": delta})
        elif kind == "tool_use":
            opening = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            events.append({"type": "content_block_start", "index": index, "content_block": opening})
            raw = block["_partial_json"] if "_partial_json" in block else json.dumps(block["input"])
            for at in range(0, len(raw), 200):
                delta = {"type": "input_json_delta", "partial_json": raw[at : at + 200]}
                events.append({"type": "content_block_delta", "index": index, "delta": delta})
        else:
            events.append({"type": "content_block_start", "index": index, "content_block": block})
        events.append({"type": "content_block_stop", "index": index})
    delta = {"stop_reason": message.get("stop_reason"), "stop_sequence": message.get("stop_sequence")}
    if message.get("stop_details") is not None:
        delta["stop_details"] = message["stop_details"]  # a refusal's category and explanation arrive here
    events.append({"type": "message_delta", "delta": delta, "usage": usage})
    events.append({"type": "message_stop"})
    return events


def encode_sse(events: list[dict]) -> bytes:
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


def _error(status: int, kind: str, message: str, headers: dict | None = None) -> httpx2.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return httpx2.Response(status, json=body, headers=headers or {})


def stream_error(kind: str, message: str = "", *, model: str = "claude-sonnet-5-5") -> httpx2.Response:
    """An error that arrives inside a stream, as the API sends one when it fails after it has begun to
    answer: HTTP 200, the message begins, then an `error` event instead of the rest."""
    start = {"id": "msg_interrupted", "type": "message", "role": "assistant", "model": model, "content": [],
             "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}  # fmt: skip
    events = [
        {"type": "message_start", "message": start},
        {"type": "ping"},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me"}},
        {"type": "error", "error": {"type": kind, "message": message}},
    ]
    return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=encode_sse(events))


def scripted(item: dict) -> dict | httpx2.Response:
    """A response of a sample conversation as the transport serves it: a message, or an error written as
    `{"type": "error", "status": 529, "error": {"type": "overloaded_error", "message": "…"},
    "headers": {"retry-after": "0"}}`, to replay an outage of the model service; with `"status": 200` the
    error arrives inside the stream, after the answer has begun."""
    if item.get("type") != "error":
        return item
    error = item.get("error") or {}
    status = int(item.get("status", 500))
    if status == 200:
        return stream_error(error.get("type", "api_error"), error.get("message", ""))
    return _error(status, error.get("type", "api_error"), error.get("message", ""), item.get("headers"))


def protocol_problem(body: dict) -> str | None:
    """What a real server would reject in a request's conversation, or None."""
    messages = body.get("messages") or []
    if not messages or messages[0].get("role") != "user":
        return "messages: the first message must use the user role"
    for position, message in enumerate(messages):
        content = message.get("content")
        if message.get("role") != "assistant" or not isinstance(content, list):
            continue
        asked = [b["id"] for b in content if b.get("type") == "tool_use"]
        if not asked:
            continue
        if position + 1 >= len(messages):
            return f"messages.{position}: tool_use ids were found without tool_result blocks immediately after"
        reply = messages[position + 1].get("content")
        answered = (
            [b.get("tool_use_id") for b in reply if isinstance(b, dict) and b.get("type") == "tool_result"]
            if isinstance(reply, list)
            else []
        )
        missing = [i for i in asked if i not in answered]
        if missing:
            return f"messages.{position + 1}: tool_use ids were found without tool_result blocks immediately after: {', '.join(missing)}"
    return None


class ScriptedTransport(httpx2.MockTransport):
    """Answers each POST /v1/messages with the next item of `script`: a message dict (served as the
    API would, streamed or not) or an `httpx2.Response` (served as is, for errors and retries).
    Every request body is kept in `requests` so tests can assert on exactly what was sent."""

    def __init__(self, script: list, *, strict: bool = True, source: str = "recording", pace: float = 0.0):
        self.script = list(script)
        self.pace = pace
        self.position = 0
        self.requests: list[dict] = []
        self.strict = strict
        self.source = source
        super().__init__(self._handle)

    def _handle(self, request: httpx2.Request) -> httpx2.Response:
        if request.method != "POST" or not request.url.path.endswith("/v1/messages"):
            return _error(404, "not_found_error", f"{request.method} {request.url.path} is not recorded")
        body = json.loads(request.content)
        self.requests.append(body)
        if self.strict:
            problem = protocol_problem(body)
            if problem:
                return _error(400, "invalid_request_error", problem)
        if self.position >= len(self.script):
            return _error(400, "invalid_request_error", f"the {self.source} has no response #{self.position + 1}")
        item = self.script[self.position]
        self.position += 1
        if self.pace:
            time.sleep(self.pace)
        if isinstance(item, httpx2.Response):
            return item
        if body.get("stream"):
            return httpx2.Response(
                200, headers={"content-type": "text/event-stream"}, content=encode_sse(sse_events(item))
            )
        clean = {**item, "content": [{k: v for k, v in b.items() if not k.startswith("_")} for b in item["content"]]}
        return httpx2.Response(200, json=clean)


class ReplayProvider:
    live = False

    def __init__(self, config: ProviderConfig, *, target: str = "", idea: str = ""):
        if config.cassette is not None:
            try:
                recording = Recording.load(config.cassette)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:  # JSONDecodeError is a ValueError
                raise UserError(
                    "no_recording", f"{config.cassette} cannot be replayed: it is not a sample conversation ({exc})"
                ) from None
        else:
            recording = find_recording(config.recordings, target, idea)
        if recording is None:
            raise UserError("no_recording", f"no recording for target '{target}' and idea {idea!r}")
        self.recording = recording
        self.model = recording.model or config.model
        self.transport = ScriptedTransport([scripted(item) for item in recording.responses], pace=config.pace)

    def client(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            api_key="replay-no-key",
            base_url="http://replay.invalid",
            max_retries=0,
            http_client=httpx2.Client(transport=self.transport),
        )

    def exhausted(self) -> bool:
        return self.transport.position >= len(self.transport.script)
