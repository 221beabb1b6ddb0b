"""Shared fixtures: the named personas. (The test run's own var/ folder is set up by tests/environment.py.)"""

import pytest

PASSWORD = "correct horse battery staple"


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
