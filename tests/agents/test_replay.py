"""Replay: every sample conversation builds its example target end to end through `agents.build` (real
git, the real SDK on the replay transport, the real sandbox, the target's own build and tests), and the
replay transport rejects what the real API would."""

from __future__ import annotations

import zipfile
from pathlib import Path

import anthropic
import httpx2
import pytest

from agents import BuildSpec, build
from agents.providers import ProviderConfig
from agents.providers.replay import ScriptedTransport, list_recordings, protocol_problem

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RECORDINGS = EXAMPLES / "recordings"


class Sink:
    def __init__(self):
        self.events: list[tuple[str, dict]] = []
        self.stages: list[str] = []

    def emit(self, kind: str, data: dict) -> None:
        self.events.append((kind, data))

    def stage(self, name: str) -> None:
        self.stages.append(name)

    def cancelled(self) -> bool:
        return False


@pytest.fixture
def build_idea(make_repo, scratch_dir):
    def run(target: str, idea: str):
        repo = make_repo(source=EXAMPLES / "targets" / target)
        work = scratch_dir("build-")
        spec = BuildSpec(
            target=target, repo_url=str(repo), base_ref="main", idea=idea, mirror=work / "mirror.git",
            work_dir=work / "work", output_dir=work / "out", result_ref="refs/prototypes/test/1",
            provider=ProviderConfig(name="replay", recordings=RECORDINGS),
        )  # fmt: skip
        sink = Sink()
        return build(spec, sink), sink

    return run


def added_lines(diff: str) -> dict[str, list[str]]:
    """The non-blank lines the diff adds, by file."""
    added: dict[str, list[str]] = {}
    path = None
    for line in diff.splitlines():
        if line.startswith("+++ "):
            path = line[6:] if line.startswith("+++ b/") else None
        elif path and line.startswith("+") and line[1:].strip():
            added.setdefault(path, []).append(line[1:].strip())
    return added


RECORDED = list_recordings(RECORDINGS)


def test_there_are_recordings_for_every_example_target():
    assert {r.target for r in RECORDED} == {p.name for p in (EXAMPLES / "targets").iterdir() if p.is_dir()}


@pytest.mark.parametrize("recording", RECORDED, ids=[f"{r.target}/{r.path.stem}" for r in RECORDED])
def test_a_recorded_idea_replays_to_a_tested_artifact_holding_the_change(build_idea, recording):
    result, sink = build_idea(recording.target, recording.idea)

    assert result.ok, (result.error, result.error and result.error.detail)
    assert not result.live_model
    [finish] = [b for b in recording.responses[-1]["content"] if b.get("name") == "finish"]
    assert result.summary == finish["input"]["summary"]
    assert result.turns == len(recording.responses)  # every recorded response was used
    assert result.verify["passed"] and result.verify["counts"]["failed"] == 0
    assert sink.stages == ["running", "verifying", "packaging"]
    # A sample conversation's token counts were written by hand: they stay visible as such, but the build
    # costs nothing and every call says it was priced as a sample.
    assert result.usage.cache_read_tokens > 0 and result.cost == 0
    calls = [data for kind, data in sink.events if kind == "model_call"]
    assert len(calls) == result.turns
    assert {(c["cost"], c["price_version"]) for c in calls} == {("0.000000", "sample")}
    # The artifact holds what the change added to the files it packages.
    artifact = result.artifacts[0]  # an app's web part (recipe web_preview) may follow it
    with zipfile.ZipFile(artifact.path) as bundle:
        members = {n: bundle.read(n).decode("utf-8", "replace") for n in bundle.namelist() if not n.endswith(".wav")}
    added = added_lines(result.diff)
    # A bundle drops the source folder (src/app.js is app.js); an APK adds its own (www/ is assets/www/).
    packaged = {path: member for path in added for member in members
                if path == member or path.endswith("/" + member) or member.endswith("/" + path)}  # fmt: skip
    assert packaged, f"none of {sorted(added)} is in the artifact ({sorted(members)})"
    for path, member in packaged.items():
        missing = [line for line in added[path] if line not in members[member]]
        assert not missing, f"{member} lacks lines the change added to {path}: {missing[:3]}"


def test_an_idea_with_no_recording_fails_plainly_and_points_to_the_api_key(build_idea):
    result, sink = build_idea("web-player", "Make the whole player purple and add karaoke")

    assert result.error is not None and result.error.code == "no_recording"
    assert result.error.family == "user"
    assert "ANTHROPIC_API_KEY" in result.error.message
    assert "Make the whole player purple" in result.error.detail
    assert result.turns == 0 and result.cost == 0 and not result.artifacts
    assert sink.stages == []


# --- the replay transport checks the protocol as the API does ------------------------------------------
ANSWER = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-5-5",
          "content": [{"type": "text", "text": "Hello."}], "stop_reason": "end_turn", "stop_sequence": None,
          "usage": {"input_tokens": 5, "output_tokens": 2}}  # fmt: skip


def conversation(*answered: str) -> list[dict]:
    asked = [{"type": "tool_use", "id": i, "name": "run", "input": {"command": "ls"}} for i in ("toolu_1", "toolu_2")]
    reply = [{"type": "tool_result", "tool_use_id": i, "content": "ok"} for i in answered]
    return [
        {"role": "user", "content": "Look around."},
        {"role": "assistant", "content": asked},
        {"role": "user", "content": reply or [{"type": "text", "text": "Go on."}]},
    ]


def client_for(transport: ScriptedTransport) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="k", base_url="http://test.invalid", max_retries=0,
                               http_client=httpx2.Client(transport=transport))  # fmt: skip


@pytest.mark.parametrize(("answered", "missing"), [((), "toolu_1, toolu_2"), (("toolu_2",), "toolu_1")])
def test_the_replay_transport_refuses_a_request_with_unanswered_tool_calls(answered, missing):
    transport = ScriptedTransport([ANSWER])

    with pytest.raises(anthropic.BadRequestError) as caught:
        client_for(transport).messages.create(model="m", max_tokens=10, messages=conversation(*answered))

    assert caught.value.status_code == 400
    assert caught.value.body["error"]["message"] == (
        f"messages.2: tool_use ids were found without tool_result blocks immediately after: {missing}"
    )
    assert transport.position == 0  # the recorded answer is still there for a correct request
    assert len(transport.requests) == 1


def test_the_replay_transport_serves_a_request_whose_tool_calls_are_all_answered():
    transport = ScriptedTransport([ANSWER])

    with client_for(transport).messages.stream(
        model="m", max_tokens=10, messages=conversation("toolu_2", "toolu_1")
    ) as stream:
        message = stream.get_final_message()

    assert message.content[0].text == "Hello." and message.stop_reason == "end_turn"
    assert transport.requests[0]["messages"] == conversation("toolu_2", "toolu_1")


def test_protocol_problem_names_a_conversation_that_ends_on_unanswered_tool_calls():
    messages = conversation()[:2]

    assert protocol_problem({"messages": messages}) == (
        "messages.1: tool_use ids were found without tool_result blocks immediately after"
    )
    assert protocol_problem({"messages": messages[1:]}) == "messages: the first message must use the user role"
    assert protocol_problem({"messages": conversation("toolu_1", "toolu_2")}) is None
