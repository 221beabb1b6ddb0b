"""Replay: sample Messages API conversations played back through the real SDK.

The samples under examples/recordings/ were written by hand in the API's wire format for the offline
demo and the tests; they were not recorded from Claude (`--record` can record a live build, in the same
format). Their token counts are made up to look realistic: a replayed build is priced at nothing (the
engine uses agents.pricing.FREE) and is marked replayed wherever it is shown. A sample may also carry the
judge's responses (agents/judge.py: its checklist, then its grade, as a "judge" list), written by hand the
same way and shown as a sample review; they play on a transport of their own (`judge_client`).

The SDK talks to an `httpx2.MockTransport` that answers the N-th request of a build with the N-th
response, streamed as server-sent events exactly as the API sends them. The transport also
checks what a real server checks (every tool_use answered by a tool_result in the next message), so a
loop that breaks the protocol fails here as it would against the API.
"""

from __future__ import annotations

import json
import posixpath
import re
import time
from dataclasses import dataclass
from pathlib import Path

import anthropic
import httpx2

from agents import workspace as git
from agents.errors import SampleDoesNotFit, ServiceError, UserError
from agents.providers import ProviderConfig
from agents.tools import EDITOR


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
    # The judge's own responses (agents/judge.py), in the order it asks: the checklist, then each grade.
    # Played on a transport of their own, since the judge's requests are not part of the conversation.
    judge: tuple[dict, ...] = ()

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
            judge=tuple(data.get("judge") or ()),
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


# --- Does a sample conversation fit the code it is about to be replayed on? --------------------------
# A sample is a script of edits written for one state of the code (its target's default branch, or the
# code a live build was recorded on). Replayed on other code — a remix or a follow-up of a version that
# already has the change — the same edits silently overwrite files and insert code twice, and the build
# that comes out is broken. So before anything runs, the sample's editor calls are tried in memory against
# the files at the start commit, as the Toolbox would apply them; nothing is written anywhere.

FOLDER = object()  # a path that is a folder at the commit (or one made by a file the sample created)
BINARY = object()  # a file that is not text: the Toolbox neither views nor edits it


def _repo_path(raw: object) -> str | None:
    """A tool's path as the Toolbox reads it (relative to the repository, "/workspace/..." allowed),
    normalized; None when the Toolbox would refuse it whatever the code (empty, or outside the tree)."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    text = raw.strip()
    if text == "/workspace" or text.startswith("/workspace/"):
        text = text.removeprefix("/workspace").lstrip("/") or "."
    if posixpath.isabs(text):
        return None
    normal = posixpath.normpath(text)
    return None if normal == ".." or normal.startswith("../") else normal


def sample_calls(recording: Recording) -> list[tuple[str, dict]]:
    """The tool calls of a sample, in order: (tool name, input)."""
    calls = []
    for response in recording.responses:
        if response.get("type") == "error":  # a replayed outage: no calls in it
            continue
        for block in response.get("content") or ():
            if block.get("type") == "tool_use" and isinstance(block.get("input"), dict):
                calls.append((block.get("name", ""), block["input"]))
    return calls


def read_paths(mirror: Path, commit: str, paths: set[str]) -> dict[str, str | object | None]:
    """What each path is at `commit` in the bare mirror: its text, FOLDER, or None when it does not
    exist. One `git cat-file --batch` for all of them: only the files the sample touches are read, never
    a checkout, so the check costs the same whatever the size of the repository. Raises
    ServiceError("workspace_failed") when the mirror cannot be read or lacks the commit (every file would
    otherwise look missing)."""
    asked = sorted(p for p in paths if "\n" not in p and p != ".")  # a newline would end the batch line
    found: dict[str, str | object | None] = {p: None for p in paths}
    if "." in paths:
        found["."] = FOLDER
    lines = [f"{commit}^{{commit}}", *(f"{commit}:{p}" for p in asked)]  # the commit itself first
    raw = git.git("cat-file", "--batch", git_dir=mirror, input="".join(f"{line}\n" for line in lines))
    data = raw.encode("utf-8", errors="surrogateescape")  # git() decodes losslessly; sizes count bytes
    at = 0
    for path in [None, *asked]:
        end = data.index(b"\n", at)
        header = data[at:end].split()
        at = end + 1
        if len(header) != 3:  # "<name> missing" (or ambiguous): the commit has no such path
            if path is None:
                raise ServiceError("workspace_failed", f"the commit {commit[:12]} is not in the mirror {mirror}")
            continue
        size = int(header[2])
        body = data[at : at + size]
        at += size + 1  # the content is followed by a newline
        if path is None:
            continue
        if header[1] == b"tree":
            found[path] = FOLDER
        elif header[1] == b"blob":
            found[path] = BINARY if b"\0" in body[:8192] else body.decode("utf-8", errors="replace")
    return found


def dry_run(calls: list[tuple[str, dict]], files: dict[str, str | object | None]) -> str | None:
    """Apply a sample's editor calls in order to `files` (path -> text, FOLDER, BINARY, or None for no
    such file; changed in place) and return the first reason they do not fit, in plain
    words, or None when they all apply as they did when the sample was written.

    It fits only when every `create` makes a file that is not there yet (the sample was written creating
    it) or that the sample itself created earlier; every `str_replace` finds its text exactly once; every
    `insert` names a line the file has; every `view` names something that exists. A call the Toolbox would
    refuse on any code (no path, a path outside the repository, input of the wrong type) says nothing
    about this code and is passed over, as the Toolbox leaves the files alone then. A `run` command may
    change any file in ways only running it would tell, so the dry run stops at the first one: what came
    before it fits, what comes after cannot be judged without running it (the build itself then shows).
    """
    created: set[str] = set()

    def kind(path: str):
        if files.get(path) is not None:
            return files[path]
        prefix = path.rstrip("/") + "/"
        return FOLDER if any(p.startswith(prefix) and files[p] is not None for p in files) else None

    for name, tool_input in calls:
        if name == "run":
            return None
        if name != EDITOR:
            continue  # search, verify, finish: they read, or run the recipe's own build and tests
        command, path = tool_input.get("command"), _repo_path(tool_input.get("path"))
        if path is None:
            continue
        current = kind(path)
        if command == "view":
            if current is None:
                return f"it reads {path}, which this version does not have"
            if current is BINARY:
                return f"it reads {path}, which is not a text file in this version"
        elif command == "create":
            if not isinstance(tool_input.get("file_text"), str):
                continue
            if current is FOLDER:
                return f"it creates {path}, which is a folder in this version"
            if current is not None and path not in created:
                return f"it creates {path}, which this version already has"
            files[path] = tool_input["file_text"]
            created.add(path)
        elif command in ("str_replace", "insert"):
            if current is None:
                verb = "changes" if command == "str_replace" else "inserts lines into"
                return f"it {verb} {path}, which this version does not have"
            if not isinstance(current, str):
                return f"it changes {path}, which is not a text file in this version"
            if command == "str_replace":
                old, new = tool_input.get("old_str"), tool_input.get("new_str", "")
                if not isinstance(old, str) or not old or not isinstance(new, str):
                    continue
                count = current.count(old)
                if count != 1:
                    where = "does not have" if count == 0 else f"has {count} times, where the sample expects it once"
                    return f"it changes a passage of {path} that this version {where}"
                files[path] = current.replace(old, new, 1)
            else:
                line, new = tool_input.get("insert_line"), tool_input.get("new_str")
                if not isinstance(line, int) or not isinstance(new, str):
                    continue
                lines = current.splitlines(keepends=True)
                if not 0 <= line <= len(lines):
                    return f"it inserts after line {line} of {path}, which has {len(lines)} lines in this version"
                if lines and not lines[-1].endswith("\n") and line == len(lines):
                    lines[-1] += "\n"
                lines.insert(line, new if new.endswith("\n") else new + "\n")
                files[path] = "".join(lines)
    return None


def fit_problem(recording: Recording, mirror: Path, commit: str) -> str | None:
    """Why `recording` cannot be replayed on the code at `commit` of the bare `mirror` (the first edit that
    would not apply as written, in plain words), or None when it fits. Reads only the files it touches.
    Raises ServiceError("workspace_failed") when the mirror cannot be read."""
    calls = sample_calls(recording)
    paths = {p for name, i in calls if name == EDITOR for p in [_repo_path(i.get("path"))] if p is not None}
    return dry_run(calls, read_paths(mirror, commit, paths))


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
        self.check = config.check_fit
        self.model = recording.model or config.model
        self.transport = ScriptedTransport([scripted(item) for item in recording.responses], pace=config.pace)
        self.judge_transport = (
            ScriptedTransport([scripted(item) for item in recording.judge], source="sample review", pace=config.pace)
            if recording.judge
            else None
        )

    def check_fit(self, mirror: Path, commit: str, *, app: str, on_version: bool) -> None:
        """Refuse to replay the sample on code it was not written for, before any sandbox starts or any
        response is served: raises the "sample_does_not_fit" error (ours, so not charged; nothing was
        spent), naming the first edit that would not apply. `on_version`: the build starts from a
        version (a follow-up or a remix), not from the default branch."""
        if not self.check:
            return
        problem = fit_problem(self.recording, mirror, commit)
        if problem:
            raise SampleDoesNotFit(self.recording.idea, app, problem, on_version=on_version)

    def client(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            api_key="replay-no-key",
            base_url="http://replay.invalid",
            max_retries=0,
            http_client=httpx2.Client(transport=self.transport),
        )

    def judge_client(self) -> anthropic.Anthropic | None:
        """The client the judge's requests go to: the sample's own review, played through the real SDK like
        the conversation; None when the sample has no review part (the judge is then skipped)."""
        if self.judge_transport is None:
            return None
        return anthropic.Anthropic(
            api_key="replay-no-key",
            base_url="http://replay.invalid",
            max_retries=0,
            http_client=httpx2.Client(transport=self.judge_transport),
        )

    def exhausted(self) -> bool:
        return self.transport.position >= len(self.transport.script)
