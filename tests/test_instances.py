"""Live preview instances (prototypes/instances.py): one row per version and viewer, started on a visit by the
preview worker, stopped when idle or over the host's cap, restarted after a crash or a lost worker, reset on
the owner's word. Apps run for real in the sandbox (agents/serve.py): a tiny app made here, and the notes app
built by the real pipeline from its sample conversation."""

import hashlib
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import tarfile
import threading
import time
import zipapp
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import connection
from django.test import TestCase
from django.utils import timezone

from agents import serve as runtime
from agents.recipe import Backend, Serve
from prototypes import instances, retention, tasks
from prototypes.builds import create_prototype
from prototypes.instances import (
    instance_label,
    instance_lost,
    instance_socket,
    open_instance,
    reset_instance,
    restart_instance,
    serve_spec,
    viewer_key,
)
from prototypes.models import Artifact, Build, PreviewInstance, Prototype, Revision, Target
from prototypes.targets import import_example
from store.management.commands.runstore import build_worker_argv, preview_worker_argv
from tests.services import ROOT, shared_database_env, wait_until

pytestmark = pytest.mark.django_db
State = PreviewInstance.State

# A small app: `seed` writes data/greeting.txt; the server lists the .txt files in data/ at any path (/health
# too), POST /<name> writes data/<name>.txt, and /backend shows what its paired backend (API_URL) answers.
TINY_APP = r"""
import http.server, pathlib, sys

args = sys.argv[1:]
if args[:1] == ["seed"]:
    pathlib.Path("data").mkdir(exist_ok=True)
    pathlib.Path("data/greeting.txt").write_text("hello")
    sys.exit(0)
if args[:1] == ["broken"]:
    print("cannot open the database: data/notes.db is locked", flush=True)
    sys.exit(3)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ",".join(sorted(p.name for p in pathlib.Path("data").glob("*.txt"))).encode()
        if self.path == "/backend":  # what the paired backend answers, through the URL the store gave
            import os, urllib.request
            body = b"backend says " + urllib.request.urlopen(os.environ["API_URL"] + "/", timeout=5).read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # what a person types is kept in data/
        pathlib.Path("data", self.path.strip("/") + ".txt").write_text("typed")
        self.send_response(204)
        self.end_headers()

http.server.ThreadingHTTPServer(("127.0.0.1", int(args[args.index("--port") + 1])), Handler).serve_forever()
"""


@pytest.fixture
def tiny_pyz(tmp_path) -> bytes:
    source = tmp_path / "tiny"
    source.mkdir()
    (source / "__main__.py").write_text(TINY_APP)
    zipapp.create_archive(source, tmp_path / "tiny.pyz", interpreter="/usr/bin/env python3")
    return (tmp_path / "tiny.pyz").read_bytes()


@pytest.fixture
def sent(monkeypatch) -> list[int]:
    """The start_instance tasks sent (to the `previews` queue), by instance id; tests run the unit directly."""
    ids: list[int] = []
    monkeypatch.setattr(tasks.start_instance, "apply_async", lambda args, **kw: ids.append(args[0]))
    return ids


@pytest.fixture
def cleanup():
    """Whatever a test started ends with it, even when an assertion failed first."""
    yield
    for run_dir in PreviewInstance.objects.exclude(run_dir="").values_list("run_dir", flat=True):
        runtime.stop_app(Path(run_dir))


def served_artifact(owner, pyz: bytes, *, mode="per-person", command="python3 tiny.pyz --port 8080", slug="tiny",
                    **serve) -> Artifact:  # fmt: skip
    target, _ = Target.objects.get_or_create(
        slug="tiny", defaults={"name": "Tiny", "kind": "backend", "git_url": "/nowhere"}
    )
    prototype = Prototype.objects.create(slug=slug, title="Tiny", owner=owner, target=target, visibility="company",
                                         listing="listed")  # fmt: skip
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="Say hello", author=owner)
    build = Build.objects.create(revision=revision)
    for state in ["preparing", "running", "verifying", "packaging", "succeeded"]:
        build.move(state)
    serve = Serve(command=command, port=8080, health="/health", seed="python3 tiny.pyz seed", instances=mode,
                  startup_timeout=serve.pop("startup_timeout", 20), **serve)  # fmt: skip
    artifact = Artifact(build=build, kind="pyz", filename="tiny.pyz", size=len(pyz), sha256=hashlib.sha256(pyz).hexdigest(),
                        content_type="application/zip", metadata={"serve": asdict(serve)})  # fmt: skip
    artifact.file.save("tiny.pyz", ContentFile(pyz), save=True)
    return artifact


def get(instance: PreviewInstance, path: str = "/", method: str = "GET") -> tuple[int, str]:
    """A request to the app through the instance's socket, the way the store's proxy reaches it."""
    path_to_socket = instance_socket(instance)
    assert path_to_socket is not None, f"the instance does not run: {instance.state} {instance.error}"

    class Connection(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(10)
            self.sock.connect(str(path_to_socket))

    client = Connection("app")
    client.request(method, path)
    response = client.getresponse()
    return response.status, response.read().decode()


def visit(artifact: Artifact, viewer: str) -> PreviewInstance:
    """A visit, as the proxy makes it: what it sends once its transaction commits is sent."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        return open_instance(artifact, viewer)


def start(artifact: Artifact, viewer: str = "u1") -> PreviewInstance:
    """A visit, then the preview worker's task run here; returns the instance as it ends."""
    instance = visit(artifact, viewer)
    instances.start_instance(instance.pk)
    instance.refresh_from_db()
    return instance


def sandbox_record(instance: PreviewInstance) -> dict:
    """What the runtime recorded about the app's sandbox: its launcher pid and pid namespace."""
    return json.loads((Path(instance.run_dir) / "app.json").read_text())


def processes_of(record: dict) -> dict[int, bytes]:
    """The host pids (with their command lines) of every process in the app's sandbox, and its launcher."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            inside = os.stat(f"/proc/{entry}/ns/pid").st_ino == record["namespace"]
            if inside or int(entry) == record["pid"]:
                found[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue  # ended meanwhile
    return {pid: line for pid, line in found.items() if not is_zombie(pid)}


def is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_opening_an_instance_again_reuses_it_and_sends_its_start_once(alice, tiny_pyz, sent):
    artifact = served_artifact(alice, tiny_pyz)

    first = visit(artifact, "shared")
    again = visit(artifact, "shared")

    assert first.pk == again.pk and PreviewInstance.objects.count() == 1
    assert again.state == State.STARTING
    assert sent == [first.pk]


@pytest.mark.django_db(transaction=True)
def test_visits_at_the_same_moment_send_one_start_between_them(alice, tiny_pyz, sent, monkeypatch):
    artifact = served_artifact(alice, tiny_pyz)
    PreviewInstance.objects.create(artifact=artifact, viewer="u7", label=instance_label(artifact.pk, "u7"))
    visitors = 6
    barrier = threading.Barrier(visitors)
    decide = instances._needs_start

    def decide_together(instance, now):
        # Every visitor has read the stopped row and decided to start it before any of them moves it: the
        # worst interleaving, made certain. Only the conditional update can keep the starts to one.
        decision = decide(instance, now)
        barrier.wait(timeout=20)
        return decision

    monkeypatch.setattr(instances, "_needs_start", decide_together)
    errors, seen = [], []

    def arrive():
        try:
            seen.append(open_instance(artifact, "u7").state)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=arrive) for _ in range(visitors)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert not errors
    assert len(sent) == 1, f"{len(sent)} starts were sent for one instance"
    assert seen == [State.STARTING] * visitors  # the losers see the winner's move
    assert PreviewInstance.objects.get(artifact=artifact).state == State.STARTING


def test_a_shared_version_gives_everyone_one_instance_and_a_per_person_one_each_their_own(alice, bob, tiny_pyz):
    shared = serve_spec(served_artifact(alice, tiny_pyz, mode="shared", slug="a"))
    personal = serve_spec(served_artifact(alice, tiny_pyz, mode="per-person", slug="b"))

    assert viewer_key(shared, user=alice) == viewer_key(shared, user=bob) == viewer_key(shared, share_link_id=4)
    assert viewer_key(shared, user=alice) == "shared"
    assert viewer_key(personal, user=alice) == f"u{alice.pk}" != viewer_key(personal, user=bob)
    # Someone who came through a share link without signing in gets the link's instance.
    assert viewer_key(personal, share_link_id=4) == "s4"
    with pytest.raises(ValueError):
        viewer_key(personal)


def test_labels_are_stable_distinct_and_make_a_host_name(settings):
    labels = {instance_label(artifact, viewer) for artifact in (1, 2, 3) for viewer in ("shared", "u1", "u2", "s1")}

    assert len(labels) == 12
    assert instance_label(2, "u1") == instance_label(2, "u1")
    assert all(len(label) == 20 and label.isalnum() and label == label.lower() for label in labels)
    # Derived from the secret key: nobody can compute another person's address.
    settings.SECRET_KEY = "another secret key, at least fifty characters long for django"
    assert instance_label(2, "u1") not in labels


def test_a_started_instance_runs_with_its_run_folder_on_this_host(alice, tiny_pyz, sent, cleanup):
    instance = start(served_artifact(alice, tiny_pyz))

    assert instance.state == State.RUNNING, (instance.error, instance.log_tail)
    assert instance.host == socket.gethostname() and Path(instance.run_dir).is_dir()
    assert instance.seeded and not instance.error
    assert get(instance) == (200, "greeting.txt")  # seeded first, then served from its own data


def test_an_app_that_cannot_start_fails_with_a_plain_error_and_its_last_log_lines(alice, tiny_pyz, sent, cleanup):
    artifact = served_artifact(alice, tiny_pyz, command="python3 tiny.pyz broken", startup_timeout=5)

    instance = start(artifact)

    assert instance.state == State.FAILED
    assert instance.error and "Traceback" not in instance.error
    assert "data/notes.db is locked" in instance.log_tail
    assert instance.run_dir == "" and instance_socket(instance) is None
    # A failed instance is not started again at every request: the next visits within a minute wait.
    assert visit(artifact, "u1").state == State.FAILED and sent == [instance.pk]


def test_an_instance_whose_process_died_starts_again_on_the_next_visit(alice, tiny_pyz, sent, cleanup):
    artifact = served_artifact(alice, tiny_pyz)
    instance = start(artifact)
    assert instance.state == State.RUNNING, (instance.error, instance.log_tail)
    app = [pid for pid, line in processes_of(sandbox_record(instance)).items() if b"tiny.pyz\0--port" in line]
    assert app, "the app's own process was not found in its sandbox"
    os.kill(app[0], signal.SIGKILL)  # a crash
    deadline = time.monotonic() + 10
    while runtime.app_alive(Path(instance.run_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert instance_socket(instance) is None  # the proxy is never handed a dead app's socket

    again = visit(artifact, "u1")

    assert again.state == State.STARTING and sent == [instance.pk, instance.pk]
    instances.start_instance(instance.pk)
    again.refresh_from_db()
    assert again.state == State.RUNNING and again.run_dir != instance.run_dir
    assert not Path(instance.run_dir).exists()  # the dead run's folder is gone
    assert get(again)[0] == 200


def test_a_connection_failure_marks_the_instance_stopped_and_the_next_visit_starts_it(alice, tiny_pyz, sent, cleanup):
    artifact = served_artifact(alice, tiny_pyz)
    instance = start(artifact)
    record = sandbox_record(instance)

    assert instance_lost(instance)

    # The web tier only marks it; the periodic task ends whatever is left of the app (it may hang on).
    assert tasks.stop_idle_instances()["cleaned"] == 1 and processes_of(record) == {}
    assert visit(artifact, "u1").state == State.STARTING and len(sent) == 2
    instances.start_instance(instance.pk)
    instance.refresh_from_db()
    assert instance.state == State.RUNNING and get(instance)[0] == 200


def test_idle_instances_are_stopped_by_the_periodic_task_and_leave_no_process(alice, tiny_pyz, sent, cleanup):
    artifact = served_artifact(alice, tiny_pyz, idle_minutes=15)
    idle, busy = start(artifact, "u1"), start(artifact, "u2")
    assert get(idle, "/kept", "POST")[0] == 204
    record = sandbox_record(idle)
    assert processes_of(record)
    PreviewInstance.objects.filter(pk=idle.pk).update(last_used_at=timezone.now() - timedelta(minutes=16))

    counts = tasks.stop_idle_instances()

    assert counts["idle"] == 1
    idle.refresh_from_db()
    busy.refresh_from_db()
    assert idle.state == State.STOPPED and idle.stopped_at and idle.run_dir == ""
    assert "GET /health" in idle.log_tail  # the app's last output stays readable for its owner
    assert processes_of(record) == {}, "a stopped instance left processes running"
    assert busy.state == State.RUNNING and get(busy)[0] == 200
    # Its data stays for the next visit: started again, it is not seeded a second time.
    assert get(start(artifact, "u1"))[1] == "greeting.txt,kept.txt"
    # Beat sends it every minute, to the preview worker (the host whose instances it stops).
    from store.celery import app

    schedule = {entry["task"]: entry["schedule"] for entry in app.conf.beat_schedule.values()}
    assert schedule["prototypes.tasks.stop_idle_instances"] <= 60
    assert app.amqp.router.route({}, "prototypes.tasks.stop_idle_instances")["queue"].name == "previews"


def test_the_cap_stops_the_least_recently_used_instance_first(alice, tiny_pyz, sent, cleanup, settings):
    settings.PREVIEW_MAX_RUNNING = 2
    artifact = served_artifact(alice, tiny_pyz)
    oldest, recent = start(artifact, "u1"), start(artifact, "u2")
    now = timezone.now()
    PreviewInstance.objects.filter(pk=oldest.pk).update(last_used_at=now - timedelta(minutes=5))
    PreviewInstance.objects.filter(pk=recent.pk).update(last_used_at=now - timedelta(minutes=1))

    third = start(artifact, "u3")

    states = dict(PreviewInstance.objects.values_list("viewer", "state"))
    assert states == {"u1": State.STOPPED, "u2": State.RUNNING, "u3": State.RUNNING}
    assert third.state == State.RUNNING
    assert PreviewInstance.objects.filter(state=State.RUNNING).count() == 2


def test_reset_wipes_the_data_and_seeds_again(alice, tiny_pyz, sent, cleanup):
    artifact = served_artifact(alice, tiny_pyz)
    instance = start(artifact)
    assert get(instance, "/note", "POST")[0] == 204
    assert get(instance)[1] == "greeting.txt,note.txt"
    # A restart keeps the data.
    restart_instance(instance)
    instances.start_instance(instance.pk)
    instance.refresh_from_db()
    assert get(instance)[1] == "greeting.txt,note.txt"

    assert reset_instance(instance)
    instances.start_instance(instance.pk)

    instance.refresh_from_db()
    assert instance.state == State.RUNNING and instance.seeded
    assert get(instance)[1] == "greeting.txt"


def test_instances_of_an_expired_version_go_with_their_data_and_unpacked_app(alice, tiny_pyz, sent, cleanup):
    artifact = served_artifact(alice, tiny_pyz)
    instance = start(artifact)
    record = sandbox_record(instance)
    data, app = settings.LIVE_PREVIEW_ROOT / "data" / instance.label, instances.app_dir(artifact)
    assert data.is_dir() and (app / "tiny.pyz").is_file()

    assert retention.expire(artifact)
    counts = tasks.stop_idle_instances()

    assert counts["removed"] == 1 and not PreviewInstance.objects.exists()
    assert not data.exists() and not app.exists()
    assert processes_of(record) == {}


def tar_artifact(owner, members: list[tarfile.TarInfo], slug="archive") -> Artifact:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for member in members:
            archive.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    artifact = served_artifact(owner, buffer.getvalue(), slug=slug, command="./server")
    Artifact.objects.filter(pk=artifact.pk).update(kind=Artifact.Kind.ARCHIVE, filename="app.tar.gz")
    artifact.refresh_from_db()
    return artifact


def member(name: str, kind: bytes = tarfile.REGTYPE, size: int = 3, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mode = kind, size if kind == tarfile.REGTYPE else 0, link, 0o755
    return info


def test_an_archive_is_unpacked_once_with_an_empty_data_folder_and_links_or_escapes_are_refused(alice):
    good = tar_artifact(alice, [member("server"), member("static", tarfile.DIRTYPE), member("static/app.js")])
    folder = instances.ensure_app(good, serve_spec(good))
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "data", "server", "static", "static/app.js"
    ]  # fmt: skip
    assert instances.ensure_app(good, serve_spec(good)) == folder  # cached

    for n, bad in enumerate([[member("../escape")], [member("etc", tarfile.SYMTYPE, link="/etc")],
                             [member("hard", tarfile.LNKTYPE, link="server")]]):  # fmt: skip
        artifact = tar_artifact(alice, bad, slug=f"bad-{n}")
        with pytest.raises(ValueError):
            instances.ensure_app(artifact, serve_spec(artifact))
        assert not instances.app_dir(artifact).exists()


def test_a_frontend_starts_its_paired_backend_beside_it_and_reaches_it(alice, tiny_pyz, sent, cleanup):
    backend = served_artifact(alice, tiny_pyz, mode="shared", slug="api")
    frontend = served_artifact(alice, tiny_pyz, slug="site", backends=(Backend(target="tiny", env="API_URL"),))
    instance = visit(frontend, "u1")
    PreviewInstance.objects.filter(pk=instance.pk).update(paired={"API_URL": backend.pk})

    instances.start_instance(instance.pk)

    instance.refresh_from_db()
    assert instance.state == State.RUNNING, (instance.error, instance.log_tail)
    companion = PreviewInstance.objects.get(artifact=backend)
    assert companion.viewer == "shared" and companion.state == State.RUNNING
    assert get(instance, "/backend") == (200, "backend says greeting.txt")


def test_a_running_instance_of_a_host_that_no_longer_answers_starts_again_on_the_next_visit(alice, tiny_pyz, sent):
    artifact = served_artifact(alice, tiny_pyz)
    label = instance_label(artifact.pk, "shared")
    gone = settings.LIVE_PREVIEW_ROOT / "run" / f"{label}-gone00"  # its worker died, and its apps with it
    lost = PreviewInstance.objects.create(artifact=artifact, viewer="shared", label=label, state=State.RUNNING,
                                          host="preview-host-that-died", run_dir=str(gone),
                                          socket_path=str(gone / "app.sock"), started_at=timezone.now())  # fmt: skip
    assert instance_socket(lost) is None

    again = visit(artifact, "shared")

    assert again.pk == lost.pk and again.state == State.STARTING and again.host == ""
    assert sent == [lost.pk]
    # A start lost with its worker is sent again once it has had time to finish.
    PreviewInstance.objects.filter(pk=lost.pk).update(started_at=timezone.now() - timedelta(minutes=10))
    visit(artifact, "shared")
    assert sent == [lost.pk, lost.pk]


def build_example(slug, owner, idea, capture) -> Build:
    target = import_example(settings.EXAMPLES_DIR / "targets" / slug, settings.TARGET_REPO_ROOT)
    with capture(execute=True):
        build = create_prototype(owner=owner, target=target, idea=idea)
    build.refresh_from_db()
    assert build.state == Build.State.SUCCEEDED, (build.error_code, build.error_detail)
    return build


def test_a_notes_app_build_records_how_it_runs_and_runs_live_seeded(
    alice, django_capture_on_commit_callbacks, eager_celery, sent, cleanup
):
    build = build_example("notes-app", alice, "Let people pin a note to the top", django_capture_on_commit_callbacks)
    artifact = build.artifacts.exclude(kind=Artifact.Kind.PATCH).get()

    serve = serve_spec(artifact)
    assert serve is not None and artifact.metadata["serve"]["command"].startswith("python3 notes-app.pyz")
    assert (serve.instances, serve.health, serve.port) == ("per-person", "/health", 8080)
    assert serve.seed == "python3 notes-app.pyz seed --data data"
    assert build.artifacts.get(kind=Artifact.Kind.PATCH).metadata.get("serve") is None

    instance = start(artifact, viewer_key(serve, user=alice))
    assert instance.state == State.RUNNING, (instance.error, instance.log_tail)
    assert get(instance, "/health")[0] == 200
    status, page = get(instance, "/sign-in")
    assert status == 200 and "Sign in" in page


def test_a_web_player_build_runs_its_server_beside_the_podcast_api(
    alice, django_capture_on_commit_callbacks, eager_celery
):
    build = build_example("web-player", alice, "Add a dark mode toggle", django_capture_on_commit_callbacks)

    artifact = build.artifacts.get(kind=Artifact.Kind.WEB)  # still a web bundle: its static preview works too
    serve = serve_spec(artifact)
    assert serve is not None and serve.command == "node server.mjs"
    assert serve.backends == (Backend(target="podcast-api", env="PODCAST_API_URL"),)


class Worker:
    """A Celery worker started with the command line runstore uses, its output in `log`."""

    def __init__(self, argv: list[str], log: Path):
        self.log = log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(argv, env=shared_database_env(), cwd=ROOT, stdin=subprocess.DEVNULL,
                                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        wait_until(lambda: " ready." in self.output() or self.process.poll() is not None, timeout=60, what="a worker")
        assert self.process.poll() is None, self.output()[-3000:]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.mark.django_db(transaction=True)  # the workers must see the rows: commit them
def test_a_preview_worker_runs_instances_and_when_it_dies_the_next_visit_starts_them_again(alice, tiny_pyz, tmp_path):
    for folder in ("queue", "queue-done", "queue-control"):  # the embedded broker, as runstore makes it
        (settings.VAR_DIR / folder).mkdir(parents=True, exist_ok=True)
    builds = Worker(build_worker_argv(1), tmp_path / "builds.log")
    previews = Worker(preview_worker_argv(2), tmp_path / "previews.log")
    workers = [builds, previews]
    try:
        artifact = served_artifact(alice, tiny_pyz, mode="shared")
        instance = open_instance(artifact, "shared")  # no transaction here: sent to the broker at once

        def running():
            instance.refresh_from_db()
            return instance.state != State.STARTING

        wait_until(running, timeout=60, what="the preview worker to start the instance")
        assert instance.state == State.RUNNING, (instance.error, instance.log_tail)
        assert get(instance)[0] == 200
        assert "Task prototypes.tasks.start_instance[" in previews.output()
        assert "Task prototypes.tasks.start_instance[" not in builds.output()  # builds never take previews
        record = sandbox_record(instance)

        os.kill(previews.process.pid, signal.SIGKILL)  # the worker is lost: its apps end with it
        previews.process.wait()
        wait_until(lambda: not processes_of(record), timeout=20, what="the lost worker's app to end")
        assert instance_socket(instance) is None

        again = open_instance(artifact, "shared")
        assert again.state == State.STARTING
        workers.append(Worker(preview_worker_argv(2), tmp_path / "previews-2.log"))
        wait_until(running, timeout=60, what="a new preview worker to start it again")
        assert instance.state == State.RUNNING and get(instance)[0] == 200
    finally:
        for run_dir in PreviewInstance.objects.exclude(run_dir="").values_list("run_dir", flat=True):
            runtime.stop_app(Path(run_dir))
        for worker in workers:
            worker.stop()
