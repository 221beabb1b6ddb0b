"""The build page's progress tells the truth: every step lights up in order as the engine's events arrive
(one by one or in a batch), the bar moves with steps and turns, usage is live, and a failed build marks
the step that failed, says why and how long it took."""

import re

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import transaction

from prototypes import progress
from prototypes.builds import create_prototype
from prototypes.models import Build, Prototype, Revision, Target, append_events
from prototypes.routing import websocket_urlpatterns
from prototypes.targets import import_example

pytestmark = pytest.mark.django_db

STEP = re.compile(r'<li class="step (\w+)" data-step="(\w+)">')


@pytest.fixture
def build(alice):
    target = Target.objects.create(slug="web", name="Web", git_url="/nowhere")
    prototype = Prototype.objects.create(slug="p", title="P", owner=alice, target=target, visibility="private")
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="idea", author=alice)
    return Build.objects.create(revision=revision)


def call(turn: int, purpose: str = "agent", price_version: str = "2025-01") -> tuple[str, dict]:
    return ("model_call", {"turn": turn, "model": "claude", "input_tokens": 100, "output_tokens": 20,
                           "cache_write_tokens": 0, "cache_read_tokens": 300, "cost": "0.0100", "latency_ms": 5,
                           "stop_reason": "tool_use", "price_version": price_version, "purpose": purpose})  # fmt: skip


def page_steps(client, build) -> dict[str, str]:
    page = client.get(build.get_absolute_url()).content.decode()
    return {key: status for status, key in STEP.findall(page)}


def page_of(client, build) -> str:
    return client.get(build.get_absolute_url()).content.decode()


def move(build: Build, state: str, **fields) -> None:
    build.refresh_from_db()
    assert build.move(state, **fields)


def test_every_step_lights_up_in_order_with_the_engine_events(client, alice, build):
    client.force_login(alice)
    bars = []

    def check(expected: dict[str, str]) -> None:
        assert page_steps(client, build) == expected
        bars.append(progress.summary(build)["percent"])

    todo = {"preparing": "todo", "running": "todo", "verifying": "todo", "packaging": "todo", "succeeded": "todo"}
    check(todo)
    move(build, "preparing")
    append_events(build.pk, [("step", {"step": "workspace", "text": "Getting a fresh copy of the app's code"})])
    check(todo | {"preparing": "current"})
    append_events(build.pk, [("step", {"step": "setup", "text": "Setting up: npm ci"})])
    # A browser check is announced by the "before" look at the app: its step appears, still to do.
    append_events(build.pk, [("step", {"step": "smoke", "text": "Opening the app as it is in a browser"})])
    assert page_steps(client, build)["browser"] == "todo"
    bars.append(progress.summary(build)["percent"])
    move(build, "running")
    append_events(build.pk, [("step", {"step": "agent", "text": "Claude is reading the code"})])
    running = todo | {"preparing": "done", "running": "current", "browser": "todo"}
    check(running)
    for turn in (1, 2, 3):  # the bar moves with Claude's turns, and the usage line with them
        append_events(build.pk, [call(turn), ("agent_text", {"text": f"turn {turn}"})])
        check(running)
    assert "3 turns" in page_of(client, build) and "cost $0.0300" in page_of(client, build)
    move(build, "verifying")
    append_events(build.pk, [("step", {"step": "verify", "text": "Running the app's own build and tests"})])
    check(running | {"running": "done", "verifying": "current"})
    append_events(build.pk, [("verify", {"passed": True, "headline": "All 3 tests passed", "steps": [],
                                         "smoke": {"passed": True, "pages": [{"path": "/"}]}})])  # fmt: skip
    check(running | {"running": "done", "verifying": "done", "browser": "current"})
    move(build, "packaging")
    append_events(build.pk, [("step", {"step": "package", "text": "Packaging the prototype"})])
    check(running | {"running": "done", "verifying": "done", "browser": "done", "packaging": "current"})
    move(build, "succeeded", turns=3)
    check(dict.fromkeys(running, "done"))
    assert bars == sorted(bars) and len(set(bars)) == len(bars), bars  # every event moved the bar forward
    assert bars[-1] == 100 and bars[-2] < 100


@pytest.mark.django_db(transaction=True)
def test_a_frame_shows_the_build_as_of_its_events_with_live_usage(alice, build, settings):
    """Events that reach the page together (a batch, or the polling fallback) still show each step they
    reached, and the usage the model calls carried, not the build's state of some later moment."""
    settings.BUILD_EVENTS_POLL = 30  # only the broadcasts here

    append_events(build.pk, [("log", {"text": "Asked for"})])

    async def scenario():
        communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/builds/{build.pk}/?after=0")
        communicator.scope["user"] = alice
        assert (await communicator.connect())[0]
        await communicator.receive_json_from(timeout=3)  # what happened before the page opened

        def work():
            move(build, "preparing")
            move(build, "running")
            append_events(build.pk, [call(1, price_version="sample"), call(2, price_version="sample")])
            with transaction.atomic():  # both moves commit before the first broadcast leaves
                move(build, "verifying")
                move(build, "packaging")

        await database_sync_to_async(work)()
        frames = [await communicator.receive_json_from(timeout=3) for _ in range(5)]
        await communicator.disconnect()
        return frames

    frames = async_to_sync(scenario)()
    current = [[s["key"] for s in f["build"]["steps"] if s["status"] == "current"] for f in frames]
    assert current == [["preparing"], ["running"], ["running"], ["verifying"], ["packaging"]]
    usage = frames[2]["build"]["usage"]
    assert usage["turns"] == 2 and usage["input_tokens"] == 800
    assert usage["text"].startswith("2 turns · 800 input tokens, 75% read from cache") and "sample, $0" in usage["text"]
    assert frames[3]["build"]["usage"]["turns"] == 2


@pytest.mark.parametrize(
    ("code", "reached", "failed"),
    [
        ("tests_failed", "running", "verifying"),  # the agent ran out of checks: it is the tests that failed
        ("smoke_failed", "verifying", "browser"),
        ("packaging_failed", "packaging", "packaging"),
        ("setup_failed", "preparing", "preparing"),
        ("worker_lost", "verifying", "verifying"),  # no step of its own: where the build stopped
    ],
)
def test_a_failed_build_marks_the_step_that_failed(client, alice, build, code, reached, failed):
    client.force_login(alice)
    move(build, "preparing")
    append_events(build.pk, [("step", {"step": "smoke", "text": "Opening the app as it is in a browser"})])
    for state in ("running", "verifying", "packaging")[
        : ["preparing", "running", "verifying", "packaging"].index(reached)
    ]:
        move(build, state)
    move(build, "failed", error_code=code, error_message=f"Why: {code}.")
    steps = page_steps(client, build)
    assert [key for key, status in steps.items() if status == "failed"] == [failed]
    order = list(steps)
    assert all(steps[key] == "done" for key in order[: order.index(failed)])
    page = page_of(client, build)
    assert page.index(f"Why: {code}.") < page.index('id="activity"')  # the reason comes first


def test_an_idea_without_a_sample_fails_at_claude_with_the_sample_ideas(
    client, alice, django_capture_on_commit_callbacks, eager_celery
):
    """A real replayed build of an idea the offline demo has no sample conversation for."""
    player = import_example(settings.EXAMPLES_DIR / "targets" / "web-player", settings.TARGET_REPO_ROOT)
    with django_capture_on_commit_callbacks(execute=True):
        build = create_prototype(owner=alice, target=player, idea="Turn the player into a spaceship")
    build.refresh_from_db()
    assert build.state == Build.State.FAILED and build.error_code == "no_recording"
    client.force_login(alice)
    page = page_of(client, build)
    steps = {key: status for status, key in STEP.findall(page)}
    assert steps["running"] == "failed" and steps["preparing"] != "failed"
    assert "Waiting to start" not in page
    assert f"Claude did not start: {build.error_message}" in page
    ideas = page[page.index('id="sample-ideas"') : page.index("</ul>", page.index('id="sample-ideas"'))]
    assert "Add a dark mode toggle" in ideas
    started = re.search(r'data-started="([^"]*)"', page).group(1)
    finished = re.search(r'data-finished="([^"]*)"', page).group(1)
    assert started == build.started_at.isoformat() and finished == build.finished_at.isoformat()


def test_a_build_that_never_started_counts_its_time_from_the_request(client, alice, build):
    move(build, "cancelled")
    client.force_login(alice)
    page = page_of(client, build)
    assert re.search(r'data-started="([^"]*)"', page).group(1) == build.created_at.isoformat()
    assert "Claude did not start: The build was cancelled." in page


def test_a_replayed_build_reaches_every_step_in_order(client, alice, django_capture_on_commit_callbacks, eager_celery):
    """A real replayed build, read back event by event as a page following it would have seen it."""
    player = import_example(settings.EXAMPLES_DIR / "targets" / "web-player", settings.TARGET_REPO_ROOT)
    with django_capture_on_commit_callbacks(execute=True):
        build = create_prototype(owner=alice, target=player, idea="Add a dark mode toggle")
    build.refresh_from_db()
    assert build.state == Build.State.SUCCEEDED, (build.error_code, build.error_detail)
    events = list(build.events.order_by("seq"))
    first_seen: dict[str, int] = {}
    bars, turns = [], []
    for n in range(1, len(events) + 1):
        seen = progress.summary(build, events[:n])
        for step in seen["steps"]:
            if step["status"] in ("current", "done"):
                first_seen.setdefault(step["key"], n)
        bars.append(seen["percent"])
        turns.append(seen["usage"]["turns"])
    keys = [s["key"] for s in progress.summary(build)["steps"]]
    browser = ["browser"] if build.smoke else []  # the browser check is off on hosts without Chromium
    assert keys == ["preparing", "running", "verifying", *browser, "packaging", "succeeded"]
    assert sorted(first_seen, key=first_seen.get) == keys  # every step reached, in order
    assert bars == sorted(bars) and bars[-1] == 100 and len(set(bars)) > 10  # it moved all along
    assert turns == sorted(turns) and turns[-1] == build.turns == 13
    client.force_login(alice)
    usage = page_of(client, build)
    assert "13 turns" in usage and "sample, $0" in usage
