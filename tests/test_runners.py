"""Build runners, the store's side: tokens stored hashed, scoped to labels and revocable; jobs claimed only
by runners with their labels, re-queued once when their runner goes silent and then failed (ours, not
charged), timed out by the build's deadline; and real `python -m agents runner` processes on loopback
against a live store — taking labelled jobs, killed in the middle of one, refused once revoked, and
building an iOS app (with the STAND-IN xcodebuild of tests/runner_repos/pocket-notes-ios) whose install page the
store then offers.

Real store (pytest-django's live server), real runner processes, real git and the real sandbox."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from agents.errors import ServiceError, describe
from agents.runner import RemoteJob
from prototypes import builds, pipeline
from prototypes.models import Artifact, Build, BuildEvent, Target
from prototypes.runners import BuildRunners, Runner, RunnerJob, claim_job, release_lost_jobs
from prototypes.targets import check_target
from prototypes.tokens import hash_token
from tests.agents.conftest import make_repo, scratch_dir
from tests.test_install import IPHONE, href, page

ROOT = Path(__file__).resolve().parents[1]
IOS_REPO = ROOT / "tests" / "runner_repos" / "pocket-notes-ios"
RECORDINGS = ROOT / "tests" / "recordings"
State = RunnerJob.State


def job(labels=("macos",), **fields) -> RunnerJob:
    defaults = {"step": "build", "command": "true", "repo_url": "/nowhere", "base_commit": "0" * 40,
                "deadline_at": timezone.now() + timedelta(minutes=10)}  # fmt: skip
    return RunnerJob.objects.create(labels=list(labels), **(defaults | fields))


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


# --- tokens --------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_registering_a_runner_in_the_admin_shows_its_token_once_and_keeps_only_its_hash(client, ada):
    client.force_login(ada)
    response = client.post("/admin/prototypes/runner/add/", {"name": "mac-mini-1", "labels_text": "macos, xcode"},
                           follow=True)  # fmt: skip
    shown = re.search(r"Its token, shown only now: ([A-Za-z0-9_-]+)", response.content.decode())
    assert shown, "the admin page must show the new runner's token"
    token = shown.group(1)
    runner = Runner.objects.get()
    assert (runner.name, runner.labels) == ("mac-mini-1", ["macos", "xcode"])
    assert runner.token_hash == hash_token(token) and runner.hint == token[:6]
    assert token not in str(Runner.objects.values().get()), "the token itself is never stored"
    page_again = client.get(f"/admin/prototypes/runner/{runner.pk}/change/").content.decode()
    assert token not in page_again, "the token is shown once, when the runner is registered"


@pytest.mark.django_db
def test_revoking_a_runner_in_the_admin_refuses_its_token_with_401_saying_why(client, ada):
    runner, token = Runner.register(name="mac-mini-1", labels=["macos"])
    assert client.post("/api/runner/claim", {"labels": ["macos"]}, content_type="application/json",
                       **bearer(token)).status_code == 204  # fmt: skip
    client.force_login(ada)
    client.post("/admin/prototypes/runner/", {"action": "revoke", "_selected_action": [runner.pk]})
    client.logout()
    response = client.post("/api/runner/claim", {"labels": ["macos"]}, content_type="application/json",
                           **bearer(token))  # fmt: skip
    assert response.status_code == 401, response.content
    assert "revoked" in response.json()["detail"], response.json()


@pytest.mark.django_db
def test_the_runner_api_takes_no_session_and_no_unknown_token(client, ada):
    client.force_login(ada)  # an admin's session is not a runner's token
    response = client.post("/api/runner/claim", {"labels": ["macos"]}, content_type="application/json")
    assert response.status_code == 401 and "runner's token" in response.json()["detail"], response.content
    response = client.post("/api/runner/claim", {"labels": ["macos"]}, content_type="application/json",
                           **bearer("not-a-token"))  # fmt: skip
    assert response.status_code == 401 and "not valid" in response.json()["detail"], response.content


@pytest.mark.django_db
def test_a_runner_cannot_offer_labels_beyond_its_tokens_scope(client):
    _, token = Runner.register(name="linux-1", labels=["linux"])
    response = client.post("/api/runner/register", {"labels": ["linux", "macos"]}, content_type="application/json",
                           **bearer(token))  # fmt: skip
    assert response.status_code == 403 and "not for macos" in response.json()["detail"], response.content


# --- jobs ----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_runner_claims_only_jobs_whose_labels_are_all_among_its_own():
    mac, _ = Runner.register(name="mac", labels=["macos", "xcode"])
    needs_more = job(labels=("macos", "gpu"))
    mine = job(labels=("macos",))
    assert claim_job(mac, ["macos", "xcode"]) == mine
    assert claim_job(mac, ["macos", "xcode"]) is None, "the job needing a gpu is not for this runner"
    needs_more.refresh_from_db()
    assert needs_more.state == State.QUEUED
    # A runner started with fewer labels than its token allows takes only what it says it offers.
    only_xcode = job(labels=("macos",))
    assert claim_job(mac, ["xcode"]) is None
    assert claim_job(mac, ["macos"]) == only_xcode


@pytest.mark.django_db
def test_a_job_whose_runner_goes_silent_is_requeued_once_then_failed_as_ours(settings):
    settings.RUNNER_LEASE_SECONDS = 30
    first, _ = Runner.register(name="first", labels=["macos"])
    second, _ = Runner.register(name="second", labels=["macos"])
    lost = job()
    assert claim_job(first, ["macos"]) == lost
    RunnerJob.objects.filter(pk=lost.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=31))
    assert release_lost_jobs() == 1
    lost.refresh_from_db()
    assert (lost.state, lost.runner, lost.attempts) == (State.QUEUED, None, 1)
    assert claim_job(second, ["macos"]) == lost
    RunnerJob.objects.filter(pk=lost.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=31))
    release_lost_jobs()
    lost.refresh_from_db()
    assert (lost.state, lost.error_code) == (State.FAILED, "runner_lost"), lost.error
    assert "runner second stopped answering" in lost.error and "attempt 2 of 2" in lost.error, lost.error
    # The build waiting for it fails with a message of ours: not charged to the person.
    with pytest.raises(ServiceError) as failed:
        BuildRunners(None)._wait(lost, cancel=lambda: False)
    assert failed.value.code == "runner_lost" and describe("runner_lost").family == "ours"
    assert "not charged" in describe("runner_lost").message


@pytest.mark.django_db
def test_a_job_no_runner_takes_before_the_builds_deadline_fails_as_runner_unavailable():
    waiting = job(labels=("windows",), deadline_at=timezone.now() + timedelta(seconds=1))
    with pytest.raises(ServiceError) as failed:
        BuildRunners(None)._wait(waiting, cancel=lambda: False)
    assert failed.value.code == "runner_unavailable" and "labelled windows" in failed.value.detail
    waiting.refresh_from_db()
    assert waiting.state == State.FAILED


@pytest.mark.django_db
def test_a_running_job_past_the_builds_deadline_times_out():
    runner, _ = Runner.register(name="slow", labels=["macos"])
    late = job(deadline_at=timezone.now() + timedelta(seconds=1))
    assert claim_job(runner, ["macos"]) == late
    outcome = BuildRunners(None)._wait(late, cancel=lambda: False)
    assert (outcome.killed_reason, outcome.exit_code) == ("timeout", 137), outcome


@pytest.mark.django_db
def test_a_runner_may_report_only_on_its_own_running_job(client):
    _, mine = Runner.register(name="mine", labels=["macos"])
    other, _ = Runner.register(name="other", labels=["macos"])
    taken = job()
    claim_job(other, ["macos"])
    response = client.post(f"/api/runner/jobs/{taken.pk}/finish", {"exit_code": 0}, content_type="application/json",
                           **bearer(mine))  # fmt: skip
    assert response.status_code == 409 and "no longer this runner's" in response.json()["detail"]
    taken.refresh_from_db()
    assert taken.state == State.RUNNING


@pytest.mark.django_db
def test_a_runner_uploads_an_app_larger_than_other_requests_may_be_but_only_what_the_job_asked_for(client):
    from store.request_size import max_request_bytes

    runner, token = Runner.register(name="mac", labels=["macos"])
    taken = job(collect=["build/App.ipa"])
    claim_job(runner, ["macos"])
    app = os.urandom(1024) * (max_request_bytes() // 1024 + 1024)  # over the limit of every other request
    response = client.put(f"/api/runner/jobs/{taken.pk}/files/build/App.ipa", app,
                          content_type="application/octet-stream", **bearer(token))  # fmt: skip
    assert response.status_code == 200, response.content[:300]
    taken.refresh_from_db()
    ((entry),) = taken.files
    assert entry["path"] == "build/App.ipa" and entry["size"] == len(app)
    with default_storage.open(entry["name"], "rb") as stored:
        assert stored.read() == app
    response = client.put(f"/api/runner/jobs/{taken.pk}/files/secrets.txt", b"x",
                          content_type="application/octet-stream", **bearer(token))  # fmt: skip
    assert response.status_code == 400 and "was not asked for" in response.json()["detail"], response.content
    default_storage.delete(entry["name"])


@pytest.mark.django_db
def test_a_cancelled_build_tells_its_runner_to_stop_through_the_heartbeat(client, alice):
    from tests.test_install import make_app

    build = make_app(alice).build
    runner, token = Runner.register(name="mac", labels=["macos"])
    taken = job(build=build)
    claim_job(runner, ["macos"])
    beat = client.post(f"/api/runner/jobs/{taken.pk}/heartbeat", **bearer(token))
    assert beat.status_code == 200 and beat.json()["cancel"] is False, beat.content
    Build.objects.filter(pk=build.pk).update(cancel_requested=True)
    assert client.post(f"/api/runner/jobs/{taken.pk}/heartbeat", **bearer(token)).json()["cancel"] is True


# --- runner processes against a live store -------------------------------------------------------------


class RunnerProcess:
    """`python -m agents runner` against the live store, its output in a file (read on failure)."""

    def __init__(self, url: str, token: str, labels: str, name: str):
        self.work = scratch_dir(f"runner-{name}-")
        self.log = self.work / "runner.log"
        env = {**os.environ, "RUNNER_TOKEN": token}
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agents", "runner", "--store", url, "--labels", labels, "--name", name,
                 "--work", str(self.work / "work"), "--poll", "0.2"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text()

    def kill(self) -> None:
        """SIGKILL, the runner and what it started: a machine switched off sends nothing more."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@pytest.fixture
def runners():
    started: list[RunnerProcess] = []

    def start(url, token, labels="macos", name="mac-mini"):
        started.append(RunnerProcess(url, token, labels, name))
        return started[-1]

    yield start
    for process in started:
        process.kill()


def wait_for(condition, what: str, timeout: float = 60, processes=()) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            logs = "\n".join(p.output() for p in processes)
            pytest.fail(f"{what} did not happen within {timeout} s; runner output:\n{logs}")
        time.sleep(0.1)


def in_thread(function):
    """Run `function` beside the test (as a build waits for its job on a worker); .result or .error after."""
    box = {}

    def target():
        try:
            box["result"] = function()
        except Exception as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc
        finally:
            from django.db import connection

            connection.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


@pytest.fixture
def repo():
    return make_repo({"README.md": "An app.\n"})


def remote(repo, command: str, labels=("macos",), collect=()) -> RemoteJob:
    base = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    patch = ("diff --git a/hello.txt b/hello.txt\nnew file mode 100644\n--- /dev/null\n+++ b/hello.txt\n@@ -0,0 +1 @@\n"
             "+hello from the change\n")  # fmt: skip
    return RemoteJob(step="build", command=command, labels=tuple(labels), repo_url=str(repo), base_commit=base,
                     patch=patch, collect=tuple(collect))  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_a_runner_process_takes_the_jobs_labelled_for_it_and_sends_back_output_and_files(live_server, runners, repo):
    _, token = Runner.register(name="mac-mini", labels=["macos", "xcode"])
    mac = runners(live_server.url, token, labels="macos,xcode")
    not_for_it = job(labels=("windows",))
    command = "mkdir -p out && cat hello.txt | tr a-z A-Z > out/shout.txt && echo built on the runner"
    try:
        outcome = BuildRunners(None).run(remote(repo, command, collect=("out",)), timeout=120, cancel=lambda: False)
    except ServiceError as exc:
        pytest.fail(f"{exc.detail}; runner output:\n{mac.output()}")
    assert outcome.exit_code == 0, mac.output()
    assert "built on the runner" in outcome.output and outcome.runner == "mac-mini"
    assert outcome.files == {"out/shout.txt": b"HELLO FROM THE CHANGE\n"}, "the patch was applied on the runner"
    not_for_it.refresh_from_db()
    assert not_for_it.state == State.QUEUED, "a job labelled windows is not for a macos runner"
    assert Runner.objects.get().last_seen_at is not None


@pytest.mark.django_db(transaction=True)
def test_killing_a_runner_mid_job_requeues_the_job_for_another_runner(live_server, runners, repo, settings):
    settings.RUNNER_LEASE_SECONDS = 3
    _, first_token = Runner.register(name="first", labels=["macos"])
    _, second_token = Runner.register(name="second", labels=["macos"])
    first = runners(live_server.url, first_token, name="first")
    command = "sleep 6; echo finished"
    thread, box = in_thread(lambda: BuildRunners(None).run(remote(repo, command), timeout=180, cancel=lambda: False))
    wait_for(lambda: RunnerJob.objects.filter(state=State.RUNNING).exists(), "the first runner taking the job",
             processes=[first])  # fmt: skip
    time.sleep(1)  # into the command
    first.kill()
    wait_for(lambda: RunnerJob.objects.filter(state=State.QUEUED, attempts=1, runner=None).exists(),
             "the job going back to the queue", timeout=30)  # fmt: skip
    second = runners(live_server.url, second_token, name="second")
    thread.join(timeout=120)
    assert "error" not in box, f"{box.get('error')}; second runner:\n{second.output()}"
    outcome = box["result"]
    done = RunnerJob.objects.get()
    assert (done.state, done.attempts, done.runner.name) == (State.DONE, 2, "second"), second.output()
    assert outcome.exit_code == 0 and "finished" in outcome.output and outcome.runner == "second", outcome


@pytest.mark.django_db(transaction=True)
def test_a_revoked_runner_process_is_refused_and_says_so(live_server, runners):
    runner, token = Runner.register(name="old-mac", labels=["macos"])
    runner.revoke()
    process = runners(live_server.url, token)
    assert process.process.wait(timeout=60) == 2
    assert "the store refused this runner" in process.output() and "revoked" in process.output(), process.output()


@pytest.mark.django_db(transaction=True)
def test_an_ios_prototype_built_by_a_runner_gets_an_install_page(live_server, runners, alice, client, settings,
                                                                 monkeypatch):  # fmt: skip
    settings.RECORDINGS_DIR = RECORDINGS
    settings.SITE_URL = "https://store.example.com"
    monkeypatch.setattr(builds, "_enqueue", lambda build: None)
    target = Target.objects.create(
        slug="pocket-notes-ios", name="pocket-notes-ios", git_url=str(make_repo(source=IOS_REPO))
    )
    assert check_target(target) is None, target.recipe_error
    _, token = Runner.register(name="mac-mini", labels=["macos"])
    mac = runners(live_server.url, token)
    build = builds.create_prototype(owner=alice, target=target, idea="Call the app Pocket Notes Plus, version 1.1")
    pipeline.run_build(build.pk)
    build.refresh_from_db()
    assert build.state == Build.State.SUCCEEDED, (build.error_code, build.error_detail, mac.output())
    steps = list(RunnerJob.objects.filter(build=build).values_list("step", "state", "exit_code"))
    assert steps == [("build", State.DONE, 0), ("test", State.DONE, 0)], steps
    log = " ".join(e.data.get("text", "") for e in BuildEvent.objects.filter(build=build, kind="log"))
    assert "Runner mac-mini took the build step" in log and "ARCHIVE SUCCEEDED" in log, log
    ipa = Artifact.objects.get(build=build, kind=Artifact.Kind.IPA)
    meta = ipa.metadata
    assert (meta["bundle_id"], meta["display_name"], meta["version"]) == (
        "com.example.pocketnotes", "Pocket Notes Plus", "1.1"), meta  # fmt: skip
    client.force_login(alice)
    install = href(page(client, ipa, IPHONE), "install-ios")
    assert install.startswith("itms-services://?action=download-manifest&url=https%3A"), install
    # What the runner uploaded was copied into the build's workspace and packaged: the upload is gone.
    uploads = [f["name"] for j in RunnerJob.objects.filter(build=build) for f in j.files]
    assert uploads and not any(default_storage.exists(name) for name in uploads), uploads


@pytest.mark.django_db(transaction=True)
def test_an_ios_build_no_runner_takes_fails_in_plain_words_and_is_not_charged(alice, settings, monkeypatch):
    settings.RECORDINGS_DIR = RECORDINGS
    settings.BUILD_TIMEOUT = 15  # the job waits within the build's deadline
    monkeypatch.setattr(builds, "_enqueue", lambda build: None)
    target = Target.objects.create(slug="pocket-notes-ios", name="pocket-notes-ios",
                                   git_url=str(make_repo(source=IOS_REPO)))  # fmt: skip
    assert check_target(target) is None, target.recipe_error
    Runner.register(name="windows-box", labels=["windows"])  # a runner, but not one for this app
    build = builds.create_prototype(owner=alice, target=target, idea="Call the app Pocket Notes Plus, version 1.1")
    pipeline.run_build(build.pk)
    build.refresh_from_db()
    assert (build.state, build.error_code, build.charged) == (Build.State.FAILED, "runner_unavailable", False), (
        build.error_code, build.error_detail)  # fmt: skip
    assert "No build machine of the kind this app needs" in build.error_message
    assert "labelled macos" in build.error_detail, build.error_detail
