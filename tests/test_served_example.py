"""The notes app, the example served as a live preview: seeded as a third target, built from a sample idea
by the real pipeline (replay through the real SDK, real git, the real sandbox, the app's own tests), and
the artifact it produces starts with its recipe's [serve] commands and shows the change."""

import http.client
import re
import shutil
import socket
import subprocess
import time
from io import StringIO
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.core.management import call_command

from agents.recipe import parse_recipe
from prototypes.builds import create_prototype
from prototypes.models import Artifact, Build, Target
from prototypes.targets import import_example

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]


def build_idea(owner, idea, capture):
    target = import_example(settings.EXAMPLES_DIR / "targets" / "notes-app", settings.TARGET_REPO_ROOT)
    with capture(execute=True):
        build = create_prototype(owner=owner, target=target, idea=idea)
    build.refresh_from_db()
    return build


def test_seed_registers_the_notes_app_beside_the_other_examples(settings):
    settings.DEMO_USERS = False
    call_command("seed", stdout=StringIO())
    assert set(Target.objects.values_list("slug", flat=True)) >= {"web-player", "podcast-api", "notes-app"}
    notes = Target.objects.get(slug="notes-app")
    assert (notes.name, notes.kind) == ("Notes", "backend")
    serve = parse_recipe(notes.recipe).serve
    assert serve.instances == "per-person" and serve.health == "/health" and serve.seed
    assert parse_recipe(Target.objects.get(slug="podcast-api").recipe).serve.instances == "shared"
    # A web bundle with a small server in front of the podcast API it talks to (prototypes/pairing.py).
    assert [b.target for b in parse_recipe(Target.objects.get(slug="web-player").recipe).serve.backends] == [
        "podcast-api"
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_health(port: int, path: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the app exited with {process.returncode}: {process.stdout.read()}"
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing answered {path} on port {port} within 30 s")


def request(port, method, path, form=None, cookie=""):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Cookie": cookie} if cookie else {}
    body = None
    if form is not None:
        body = urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, response.headers, response.read().decode()


def test_a_pinning_idea_builds_a_pyz_that_serves_the_change(alice, django_capture_on_commit_callbacks, tmp_path):
    build = build_idea(alice, "Let people pin a note to the top", django_capture_on_commit_callbacks)

    assert build.state == Build.State.SUCCEEDED, (build.error_code, build.error_detail)
    assert build.verify["passed"] is True and build.verify["counts"]["passed"] >= 35
    assert any("pin" in t["name"] for t in build.verify["tests"])
    artifact = build.artifacts.exclude(kind=Artifact.Kind.PATCH).get()
    assert (artifact.kind, artifact.filename) == (Artifact.Kind.PYZ, "notes-app.pyz")

    # Run the artifact the way the recipe's [serve] says: in a folder holding only the artifact, the seed
    # first, then the command. Only the port differs: the recipe's fixed port is meant for a network
    # namespace of its own, and this test shares the host's.
    serve = parse_recipe(build.revision.prototype.target.recipe).serve
    folder = tmp_path / "instance"
    folder.mkdir()
    shutil.copy(artifact.file.path, folder / artifact.filename)
    seeded = subprocess.run(["bash", "-c", serve.seed], cwd=folder, capture_output=True, text=True, timeout=60)
    assert seeded.returncode == 0, seeded.stderr
    assert (folder / serve.data).is_dir()
    port = free_port()
    command = re.sub(rf"--port {serve.port}\b", f"--port {port}", serve.command)
    assert command != serve.command
    app = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=folder, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        wait_for_health(port, serve.health, app)
        status, headers, _ = request(port, "POST", "/sign-in", {"username": "demo", "password": "demo-notes"})
        assert status == 303
        cookie = headers["Set-Cookie"].split(";")[0]
        page = request(port, "GET", "/", cookie=cookie)[2]
        assert "Call the dentist" in page and "Pin to top" in page
        last = re.findall(r'action="notes/(\d+)/pin"', page)[-1]
        assert request(port, "POST", f"/notes/{last}/pin", {"pinned": "1"}, cookie)[0] == 303
        page = request(port, "GET", "/", cookie=cookie)[2]
        assert page.index("Call the dentist") < page.index("Groceries")  # the oldest note, pinned, comes first
        assert '<span class="badge">Pinned</span>' in page
    finally:
        app.terminate()
        app.wait(10)
