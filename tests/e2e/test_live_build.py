"""Watching a build live, and cancelling one, as a person does in the browser."""

import os
import re
import time

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import sign_in

pytestmark = pytest.mark.e2e


def start(page, base, suggestion):
    page.goto(base + "/new/")
    page.get_by_role("button", name=re.compile(suggestion)).click()
    page.get_by_role("button", name="Build it").click()
    expect(page).to_have_url(re.compile(r"/builds/\d+/$"))


def sleepers() -> list[int]:
    """Processes on this machine running the slow recording's command."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    if b"sleep\x00239.75" in handle.read():
                        found.append(int(pid))
            except OSError:
                continue
    return found


def describe(pid: int) -> str:
    """What a leftover process is doing, for the failure message."""
    try:
        status = open(f"/proc/{pid}/status").read()
        cgroups = open(f"/proc/{pid}/cgroup").read()
    except OSError:
        return "gone"
    state = next((line for line in status.splitlines() if line.startswith("State:")), "")
    return f"{state}; cgroups: {cgroups.strip()}"


def test_the_build_page_shows_progress_live_without_reloading(live_store, page):
    sign_in(page, live_store, "alice")
    start(page, live_store, "Total playlist duration")
    page.evaluate("window.__sameDocument = true")  # disappears if the page reloads

    expect(page.locator("#live")).to_be_visible(timeout=10_000)  # the websocket is connected
    first_message = page.locator("#activity li.say").first
    expect(first_message).to_be_visible(timeout=20_000)
    assert page.locator("#progress").get_attribute("data-state") in {"running", "preparing"}
    assert page.evaluate("window.__sameDocument") is True
    expect(page.locator(".step.current")).to_have_text(re.compile("Claude makes the change"))
    expect(page.locator("#elapsed")).to_contain_text("elapsed")
    expect(page.locator("#activity li.tool").first).to_be_visible()
    # Usage and the bar follow Claude's turns live (prototypes/progress.summary in every frame).
    expect(page.locator("#usage-line")).to_have_text(re.compile(r"^[1-9]\d* turns? · .* · sample, \$0$"))
    assert int(page.locator("#progressbar").get_attribute("aria-valuenow")) > 10

    # At the end the page loads the finished build: steps done, tests listed, the way to the prototype.
    expect(page.locator("#progress")).to_have_attribute("data-state", "succeeded", timeout=60_000)
    expect(page.get_by_role("link", name="Open the prototype")).to_be_visible(timeout=10_000)
    expect(page.locator(".step:not(.done)")).to_have_count(0)  # 5 steps, 6 with the browser check
    seqs = page.locator("#activity li[data-seq]").evaluate_all("items => items.map(i => Number(i.dataset.seq))")
    assert seqs == sorted(set(seqs))  # every event once, in order


def test_a_running_build_can_be_cancelled_and_its_commands_stop(live_store, page):
    sign_in(page, live_store, "alice")
    start(page, live_store, "A slow build")
    expect(page.locator("#activity li.tool", has_text="sleep 239.75")).to_be_visible(timeout=20_000)
    deadline = time.monotonic() + 10
    while not sleepers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sleepers(), "the slow command never started"

    page.get_by_role("button", name="Cancel build").click()
    expect(page.locator("#progress")).to_have_attribute("data-state", "cancelled", timeout=15_000)
    deadline = time.monotonic() + 15  # "within seconds", on a busy two-core machine
    while sleepers() and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {pid: describe(pid) for pid in sleepers()}
    assert left == {}
    expect(page.get_by_role("button", name="Try again")).to_be_visible()
