"""Shared fixtures: the named personas. (The test run's own var/ folder is set up by tests/environment.py.)"""

import os
from pathlib import Path

import pytest

PASSWORD = "correct horse battery staple"

# `make test` runs the suite in parts at the same time (scripts/test-suite.sh): TEST_PART names one, and
# the files of the other parts are not even imported. Unset, every test runs.
PARTS = {
    "engine": ("agents", "sandbox", "onboarding"),  # the engine never imports Django: no database
    "browser": ("e2e",),  # Chromium against a running store
}


def _part_of(path: Path) -> str:
    folder = path.relative_to(Path(__file__).parent).parts[0]
    return next((part for part, folders in PARTS.items() if folder in folders), "store")


def pytest_ignore_collect(collection_path, config):
    part = os.environ.get("TEST_PART")
    if not part or collection_path == Path(__file__).parent:
        return None
    if part not in {*PARTS, "store"}:
        raise pytest.UsageError(f"TEST_PART={part}: the parts are {', '.join([*PARTS, 'store'])}")
    try:
        return _part_of(collection_path) != part or None
    except ValueError:  # outside tests/ (the checkout's root while pytest walks down to tests/)
        return None


def pytest_collection_modifyitems(config, items):
    """Files named on the command line are collected whatever the hook above says: leave out those of
    other parts here, so that each test still runs in exactly one part."""
    part = os.environ.get("TEST_PART")
    if not part:
        return
    kept = [item for item in items if _part_of(item.path) == part]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if _part_of(item.path) != part])
        items[:] = kept


def _person(django_user_model, username, role, **extra):
    from prototypes.access import role_group

    user = django_user_model.objects.create_user(
        username=username, password=PASSWORD, email=f"{username}@example.com",
        first_name=username.title(), **extra,
    )  # fmt: skip
    user.groups.add(role_group(role))  # with the role table's permissions, like seed and sign-in give
    return user


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Rate-limit counters live in the cache: each test starts with none (user ids repeat across tests)."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def eager_celery():
    """Celery tasks run inside the call that sends them (a build runs to its end in the test's thread)."""
    from store.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture
def alice(django_user_model):
    """A maker."""
    return _person(django_user_model, "alice", "maker")


@pytest.fixture
def bob(django_user_model):
    """Alice's colleague: sees company prototypes."""
    return _person(django_user_model, "bob", "maker")


@pytest.fixture
def carol(django_user_model):
    """Has no access to Alice's private work."""
    return _person(django_user_model, "carol", "viewer")


@pytest.fixture
def mo(django_user_model):
    """A moderator."""
    from django.contrib.auth.models import Permission

    user = _person(django_user_model, "mo", "moderator")
    user.user_permissions.add(Permission.objects.get(codename="moderate_prototype"))
    return user


@pytest.fixture
def ada(django_user_model):
    """An admin."""
    return _person(django_user_model, "ada", "admin", is_staff=True, is_superuser=True)
