"""The build page shows the app's tests: counts, and names with failing ones first, from the verify event
the engine writes (VerifyReport.as_event) — and says so plainly when the runner printed no names."""

import re

import pytest

from agents.testreports import TestCase
from agents.verify import StepResult, VerifyReport
from prototypes.models import Build, BuildEvent, Prototype, Revision, Target

pytestmark = pytest.mark.django_db


def build_with(owner, verify_event: dict, *, state: str = "failed", on_build: bool = False) -> Build:
    target = Target.objects.create(slug="web", name="Web", git_url="/nowhere")
    prototype = Prototype.objects.create(slug="timer", title="Sleep timer", owner=owner, target=target)
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="add a sleep timer", author=owner)
    build = Build.objects.create(revision=revision, state=state, error_message="The app's tests failed.")
    if on_build:  # the final report the pipeline keeps on the build
        Build.objects.filter(pk=build.pk).update(verify=verify_event)
    else:  # only the live event, as while the build runs
        BuildEvent.objects.create(build=build, seq=1, kind="verify", data=verify_event)
    return build


def event(tests: list[TestCase], output: str = "", summary: dict | None = None, passed: bool = False) -> dict:
    step = StepResult("test", "npm test", 0 if passed else 1, 2.5, output)
    return VerifyReport(passed=passed, steps=[step], tests=tests, summary=summary).as_event()


def text_of(response) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode()))


def test_the_page_shows_counts_and_names_with_the_failing_tests_first(client, alice):
    tests = [
        TestCase("calc › adds two numbers", True),
        TestCase("calc › divides", True, True),
        TestCase("calc › subtracts", False),
        TestCase("TestTable/large_numbers", False),
    ]
    build = build_with(alice, event(tests))
    client.force_login(alice)

    page = text_of(client.get(f"/builds/{build.pk}/"))

    assert "Tests failed: 2 failed, 1 passed." in page
    assert "1 passed · 2 failed · 1 skipped" in page
    listed = page[page.index("1 passed · 2 failed") :]
    order = [listed.index(name) for name in ("calc › subtracts", "TestTable/large_numbers", "calc › adds two numbers")]
    assert order == sorted(order)
    assert "calc › divides (skipped)" in page
    assert "could not be read" not in page


def test_an_older_unsorted_event_on_the_build_still_lists_failures_first(client, alice):
    old_event = {
        "passed": False, "headline": "Tests failed: 1 failed, 1 passed.",
        "counts": {"passed": 1, "failed": 1, "skipped": 0},
        "tests": [{"name": "adds", "passed": True, "skipped": False}, {"name": "subtracts", "passed": False, "skipped": False}],
        "steps": [{"step": "test", "command": "npm test", "exit_code": 1, "duration": 1.0, "killed_reason": None, "tail": ""}],
    }  # fmt: skip
    build = build_with(alice, old_event, on_build=True)
    client.force_login(alice)

    page = text_of(client.get(f"/builds/{build.pk}/"))

    listed = page[page.index("1 passed · 1 failed") :]
    assert listed.index("✗ subtracts") < listed.index("✓ adds")


def test_counts_from_a_runners_summary_show_beside_the_names_it_gave(client, alice):
    summary = {"passed": 11, "failed": 1, "skipped": 0, "total": 12}
    build = build_with(alice, event([TestCase("CalcTest > subtracts()", False)], summary=summary))
    client.force_login(alice)

    page = text_of(client.get(f"/builds/{build.pk}/"))

    assert "11 passed · 1 failed · 0 skipped" in page
    assert "✗ CalcTest &gt; subtracts() (failed)" in page


def test_a_runner_that_printed_no_names_gets_a_clear_line(client, alice):
    build = build_with(alice, event([], output="all good\n", passed=True), state="succeeded")
    client.force_login(alice)

    page = text_of(client.get(f"/builds/{build.pk}/"))

    assert "The tests ran; their names could not be read from the output." in page


def test_no_names_line_when_the_test_step_was_stopped_before_it_ended(client, alice):
    stopped = event([])
    stopped["steps"][0]["killed_reason"] = "timeout"
    build = build_with(alice, stopped)
    client.force_login(alice)

    page = text_of(client.get(f"/builds/{build.pk}/"))

    assert "could not be read" not in page
