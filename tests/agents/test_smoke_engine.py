"""The browser check inside whole builds (agents.build): real git, the real SDK on the replay transport,
the real sandbox, real Chromium. The broken remix of issue 15: the dark-mode sample conversation replayed
on a version that already has dark mode imports `browserStorage` twice; the app's tests still pass, the
page throws on load, and the build must fail saying what the browser saw instead of being published."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from agents import BuildSpec, build
from agents.providers import ProviderConfig
from agents.providers.replay import list_recordings
from agents.sandbox.chromium import CHROMIUM_BINARY
from tests.agents.sinks import Sink

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM_BINARY, os.X_OK) or shutil.which("bwrap") is None, reason="needs Chromium and bubblewrap"
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RECORDINGS = EXAMPLES / "recordings"
[DARK_MODE] = [r for r in list_recordings(RECORDINGS, "web-player") if r.path.stem == "dark-mode"]
DUPLICATE = "SyntaxError: Identifier 'browserStorage' has already been declared"


def test_a_sample_replayed_on_a_version_that_has_its_change_fails_with_what_the_browser_saw(make_repo, scratch_dir):
    repo = make_repo(source=EXAMPLES / "targets" / "web-player")
    work = scratch_dir("build-")

    def run(number: int, *, start: str | None = None, check_fit: bool = True):
        spec = BuildSpec(
            target="web-player", repo_url=str(repo), base_ref="main", idea=DARK_MODE.idea, mirror=work / "mirror.git",
            work_dir=work / f"work{number}", output_dir=work / f"out{number}",
            result_ref=f"refs/prototypes/dark/{number}", start_commit=start,
            provider=ProviderConfig(name="replay", recordings=RECORDINGS, check_fit=check_fit),
        )  # fmt: skip
        sink = Sink()
        return build(spec, sink), sink

    # The first version: dark mode on the app as it is. The page is checked and pictured before and after.
    first, sink = run(1)
    assert first.ok, (first.error, first.error and first.error.detail)
    assert first.smoke["passed"] and not first.smoke["skipped"]
    assert first.smoke["pages"][0]["title"] == "Web Player" and "Dark mode" in first.smoke["pages"][0]["text"]
    assert [(s.moment, s.size, s.page) for s in first.screenshots] == [
        ("before", "desktop", "/"), ("before", "phone", "/"), ("after", "desktop", "/"), ("after", "phone", "/"),
    ]  # fmt: skip
    for shot in first.screenshots:
        assert shot.path.parent == work / "out1" / "screenshots"
        assert Image.open(shot.path).format == "PNG"
    [verify] = [data for kind, data in sink.events if kind == "verify"]
    assert verify["smoke"]["passed"] and [s["step"] for s in verify["steps"]] == ["build", "test", "smoke"]

    # The broken remix: the same sample replayed on that version (as happened before samples were checked
    # for fit). Its edits add a second import of browserStorage; its tests pass; its page throws.
    second, sink = run(2, start="refs/prototypes/dark/1", check_fit=False)

    assert not second.ok and second.error.code == "smoke_failed"
    assert DUPLICATE in second.error.detail
    assert "opened in a browser" in second.error.message
    assert not second.artifacts and not second.result_commit  # nothing is published
    verifies = [data for kind, data in sink.events if kind == "verify"]
    assert verifies and not verifies[-1]["passed"]
    assert verifies[-1]["counts"]["failed"] == 0  # the app's own tests passed
    assert DUPLICATE in verifies[-1]["smoke"]["pages"][0]["exceptions"]


def test_the_agent_is_offered_the_screenshot_tool_and_gets_the_image_back_unchanged(scratch_dir):
    import anthropic
    import httpx2

    from agents.browser import PageCheck
    from agents.errors import BuildError
    from agents.loop import AgentLoop, LoopLimits
    from agents.pricing import FREE
    from agents.providers.replay import ScriptedTransport
    from agents.recipe import parse_recipe
    from agents.sandbox import load_backend
    from agents.tools import Toolbox

    tree = scratch_dir("tree-")
    shutil.copytree(EXAMPLES / "targets" / "web-player", tree, dirs_exist_ok=True)
    recipe = parse_recipe((tree / "prototype.toml").read_text())
    page_check = PageCheck(tree, recipe)
    toolbox = Toolbox(tree, load_backend("bwrap")(tree), recipe, max_verify_rounds=3, command_timeout=60,
                      remaining=lambda: 600.0, smoke=page_check.run, browser=page_check.picture)  # fmt: skip
    # A sample response written for this test: the model asks for a picture of the phone layout.
    ask = {"id": "msg_1", "type": "message", "role": "assistant", "model": "sample", "stop_reason": "tool_use",
           "stop_sequence": None, "content": [{"type": "tool_use", "id": "toolu_shot", "name": "screenshot",
                                                "input": {"path": "/", "size": "phone"}}],
           "usage": {"input_tokens": 10, "output_tokens": 5}}  # fmt: skip
    transport = ScriptedTransport([ask])
    client = anthropic.Anthropic(api_key="k", base_url="http://test.invalid", max_retries=0,
                                 http_client=httpx2.Client(transport=transport))  # fmt: skip
    events = []
    loop = AgentLoop(client, model="sample", system=[{"type": "text", "text": "sample system prompt"}],
                     toolbox=toolbox, emit=lambda kind, data: events.append((kind, data)), limits=LoopLimits(),
                     price=FREE, price_version="sample", remaining=lambda: 600.0, live=False)  # fmt: skip

    with pytest.raises(BuildError):  # the script has no second response
        loop.run([{"role": "user", "content": [{"type": "text", "text": "Show me the player on a phone."}]}])

    names = [tool["name"] for tool in transport.requests[0]["tools"]]
    assert "screenshot" in names and names == sorted(names)
    [result] = transport.requests[1]["messages"][-1]["content"]
    image, text = result["content"]
    assert image["type"] == "image" and image["source"]["media_type"] == "image/jpeg"
    assert text["text"].startswith("The page / at phone size, title 'Web Player'.")
    [logged] = [data for kind, data in events if kind == "tool_result"]
    assert logged["output"].startswith("[image]\nThe page / at phone size")
