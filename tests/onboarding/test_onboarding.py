"""Onboarding real repositories, end to end: two repositories shaped like a company's (tests/repos/: lockfiles,
an internal package, a test runner with its own output, PostgreSQL in the tests) are registered with one command,
built through the pipeline (Celery task, replayed conversation through the real SDK, real git, the real bubblewrap
sandbox), and built again: the second build takes its dependencies from the target's layer, runs no setup and
never asks for the network."""

from pathlib import Path

import pytest
from django.core.management import call_command

from agents.sandbox.bwrap import BwrapSandbox
from prototypes.builds import create_prototype
from prototypes.models import Build, Target
from prototypes.targets import example_repository

pytestmark = pytest.mark.django_db

REPOS = Path(__file__).resolve().parents[1] / "repos"
RECORDINGS = Path(__file__).resolve().parents[1] / "recordings"


@pytest.fixture(autouse=True)
def eager_celery(settings):
    from store.celery import app

    settings.RECORDINGS_DIR = RECORDINGS
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture
def network_asked(monkeypatch):
    """Every sandboxed command, with whether it asked for the network (only setup commands may)."""
    asked: list[tuple[str, bool]] = []
    real_run = BwrapSandbox.run

    def run(self, argv, **kwargs):
        asked.append((" ".join(argv)[-200:], bool(kwargs.get("network"))))
        return real_run(self, argv, **kwargs)

    monkeypatch.setattr(BwrapSandbox, "run", run)
    return asked


def onboard(name: str, tmp_path, *hosts: str) -> Target:
    repo = example_repository(REPOS / name, tmp_path / "repos")
    allow = [arg for host in hosts for arg in ("--allow-host", host)]
    call_command("target", "add", "--git", str(repo), "--slug", name, *allow)
    target = Target.objects.get(slug=name)
    assert target.enabled and not target.recipe_error, target.recipe_error
    return target


def build(owner, target, idea, capture) -> Build:
    with capture(execute=True):
        result = create_prototype(owner=owner, target=target, idea=idea)
    result.refresh_from_db()
    assert result.state == Build.State.SUCCEEDED, (result.error_code, result.error_message, result.error_detail)
    return result


def texts(build: Build, kind: str) -> list[str]:
    return [e.data.get("text", "") for e in build.events.filter(kind=kind).order_by("seq")]


def setup_ran(build: Build) -> bool:
    return any(e.data.get("step") == "setup" for e in build.events.filter(kind="step"))


def test_a_node_app_with_a_lockfile_and_its_own_test_runner(alice, tmp_path, network_asked,
                                                            django_capture_on_commit_callbacks):  # fmt: skip
    target = onboard("orders-web", tmp_path, "registry.npmjs.org")
    idea = "Show how many items each order has"

    first = build(alice, target, idea, django_capture_on_commit_callbacks)
    assert setup_ran(first)
    assert any(asked for _, asked in network_asked), "setup of the first build may use the target's allowed hosts"
    # The runner's coloured "PASS name" lines, read by the recipe's pass pattern, without their colour codes.
    names = {t["name"]: t["passed"] for t in first.verify["tests"]}
    assert names == {
        "orders › itemsCountEveryQuantity": True,
        "orders › amountsAreFormattedInDollars": True,
        "orders › dayTotalAddsEveryOrder": True,
        "orders › totalsMultiplyQuantity": True,
    }
    assert first.verify["counts"] == {"passed": 4, "failed": 0, "skipped": 0}
    assert not any("\x1b" in step["tail"] for step in first.verify["steps"])

    network_asked.clear()
    second = build(alice, target, idea, django_capture_on_commit_callbacks)
    assert not setup_ran(second)
    assert network_asked and not any(asked for _, asked in network_asked), network_asked
    assert any("setup skipped" in text for text in texts(second, "log")), texts(second, "log")
    assert second.verify["counts"]["passed"] == 4


def test_a_python_service_whose_tests_need_postgresql(alice, tmp_path, network_asked,
                                                      django_capture_on_commit_callbacks):  # fmt: skip
    target = onboard("inventory-api", tmp_path)
    idea = "Say which warehouses are running low on an item"

    first = build(alice, target, idea, django_capture_on_commit_callbacks)
    assert setup_ran(first)
    tests = {t["name"]: t["passed"] for t in first.verify["tests"]}
    # unittest -v names, against a real PostgreSQL inside the build's sandbox.
    assert tests["tests.test_stock.StockTest.test_warehouses_running_low_are_named"] is True
    assert tests["tests.test_stock.StockTest.test_the_database_is_postgresql"] is True
    assert first.verify["counts"] == {"passed": 5, "failed": 0, "skipped": 0}

    network_asked.clear()
    second = build(alice, target, idea, django_capture_on_commit_callbacks)
    assert not setup_ran(second)
    assert not any(asked for _, asked in network_asked)
    assert second.verify["counts"]["passed"] == 5
