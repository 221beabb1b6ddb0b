"""The build state machine: one transition function, final states never change, races have one winner."""

import threading

import pytest
from django.db import connection

from prototypes.models import Build, BuildEvent, Prototype, Revision, Target

pytestmark = pytest.mark.django_db


@pytest.fixture
def build(alice):
    target = Target.objects.create(slug="t", name="T", git_url="/nowhere")
    prototype = Prototype.objects.create(slug="p", title="P", owner=alice, target=target)
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="idea", author=alice)
    return Build.objects.create(revision=revision)


def test_it_moves_along_the_happy_path_writing_a_status_event_each_time(build):
    for state in ["preparing", "running", "verifying", "packaging", "succeeded"]:
        assert build.move(state)
    build.refresh_from_db()
    assert build.state == Build.State.SUCCEEDED
    assert build.finished_at is not None
    moves = [(e.data["from"], e.data["to"]) for e in BuildEvent.objects.filter(build=build, kind="status")]
    assert moves == [("queued", "preparing"), ("preparing", "running"), ("running", "verifying"),
                     ("verifying", "packaging"), ("packaging", "succeeded")]  # fmt: skip


def test_it_refuses_to_skip_a_step(build):
    assert not build.move(Build.State.RUNNING)
    assert not build.move(Build.State.SUCCEEDED)
    build.refresh_from_db()
    assert build.state == Build.State.QUEUED


@pytest.mark.parametrize("state", ["queued", "preparing", "running", "verifying", "packaging"])
def test_any_unfinished_state_can_fail_or_be_cancelled(build, state):
    Build.objects.filter(pk=build.pk).update(state=state)
    build.refresh_from_db()
    assert build.can_move(Build.State.FAILED) and build.can_move(Build.State.CANCELLED)
    assert build.move(Build.State.FAILED, error_code="internal")


@pytest.mark.parametrize("final", ["succeeded", "failed", "cancelled"])
def test_final_states_never_change(build, final):
    Build.objects.filter(pk=build.pk).update(state=final)
    build.refresh_from_db()
    for state in Build.State.values:
        assert not build.move(state)
    build.refresh_from_db()
    assert build.state == final


def test_a_stale_copy_loses_to_the_worker_that_moved_first(build):
    other = Build.objects.get(pk=build.pk)
    assert other.move(Build.State.PREPARING)
    assert not build.move(Build.State.PREPARING)  # the same move, from an out-of-date copy
    assert build.state == Build.State.PREPARING  # refreshed
    assert BuildEvent.objects.filter(build=build, kind="status").count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_for_one_transition_have_exactly_one_winner(alice):
    target = Target.objects.create(slug="race", name="Race", git_url="/nowhere")
    prototype = Prototype.objects.create(slug="race", title="Race", owner=alice, target=target)
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="idea", author=alice)
    build = Build.objects.create(revision=revision)
    barrier = threading.Barrier(2)
    results = []

    def worker():
        mine = Build.objects.get(pk=build.pk)
        barrier.wait()
        results.append(mine.move(Build.State.PREPARING))
        connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, True]
    assert BuildEvent.objects.filter(build=build, kind="status").count() == 1
