"""The preview runtime (agents/serve.py): real apps in the real sandbox, reached only through their Unix
socket with plain http.client. The notes-app and podcast-api examples are built by their own recipe's
build command with Debian's python3, the way previews will run them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from http.cookies import SimpleCookie
from pathlib import Path

import pytest

from agents.recipe import parse_recipe
from agents.sandbox import cgroup
from agents.serve import (
    AppFailed,
    AppLog,
    AppSpec,
    UnixHTTPConnection,
    app_alive,
    is_healthy,
    log_tail,
    reset_data,
    start_app,
    stop_app,
)

REPO = Path(__file__).resolve().parents[2]
TARGETS = REPO / "examples" / "targets"


def build_example(name: str, scratch_dir) -> tuple[Path, AppSpec]:
    """The example's artifact unpacked the way instances get it (the .pyz under its own name, an empty
    data folder), and a spec made from its recipe's [serve]."""
    recipe = parse_recipe((TARGETS / name / "prototype.toml").read_text())
    work = scratch_dir(f"serve-{name}-")
    tree = work / "tree"
    shutil.copytree(TARGETS / name, tree, ignore=shutil.ignore_patterns("__pycache__", "build", "dist", "data"))
    built = subprocess.run(["bash", "-c", recipe.build.command], cwd=tree, env={"PATH": "/usr/bin:/bin"},
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert built.returncode == 0, built.stderr
    app_dir = work / "app"
    (app_dir / recipe.serve.data).mkdir(parents=True)
    shutil.copy(tree / recipe.artifact.path, app_dir)
    for path in [app_dir, *app_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    serve = recipe.serve
    spec = AppSpec.from_serve(serve, app_dir=app_dir, data_dir=work / "instance-data")
    return work, spec


@pytest.fixture(scope="module")
def notes(scratch_dir):
    return build_example("notes-app", scratch_dir)


@pytest.fixture
def run_dirs(scratch_dir):
    """Fresh run folders; whatever a test left running is stopped at the end."""
    made = []

    def make() -> Path:
        made.append(scratch_dir("run-"))
        return made[-1]

    yield make
    for run_dir in made:
        stop_app(run_dir, timeout=0)


def request(socket_path, method, path, body=None, cookie=""):
    connection = UnixHTTPConnection(socket_path, timeout=10)
    try:
        headers = {"Content-Type": "application/json", "Cookie": cookie}
        connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = connection.getresponse()
        data = response.read()
        cookies = SimpleCookie()
        for header in response.headers.get_all("Set-Cookie") or []:
            cookies.load(header)
        return (
            response.status,
            json.loads(data) if data else None,
            "; ".join(f"{k}={v.value}" for k, v in cookies.items()),
        )
    finally:
        connection.close()


def sandbox_processes(namespace: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                running = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0] not in "ZX"
                if running and os.stat(f"/proc/{entry}/ns/pid").st_ino == namespace:
                    members.append(int(entry))
            except OSError:
                pass
    return members


def nothing_left(run_dir: Path, within: float = 0, removed: bool = True) -> None:
    """Nothing of the app runs (at once, or `within` seconds): its launcher, its sandbox's pid
    namespace, its cgroup."""
    record = json.loads((run_dir / "app.json").read_text())
    until = time.monotonic() + within
    while (app_alive(run_dir) or sandbox_processes(record["namespace"])) and time.monotonic() < until:
        time.sleep(0.05)
    assert not app_alive(run_dir)
    members = sandbox_processes(record["namespace"])
    assert members == [], f"processes of the app's sandbox are still running: {members}"
    group = cgroup.from_record(record["cgroup"])
    if group:
        assert group.pids() == []
        paths = group.dirs.values() if hasattr(group, "dirs") else [group.path]
        assert not removed or not any(Path(p).exists() for p in paths), "the app's cgroup was not removed"
    assert not is_healthy(run_dir / "app.sock", "/health")


# --- the notes app, end to end ---------------------------------------------------------------------
def test_the_notes_app_starts_seeded_keeps_its_data_across_a_stop_and_stops_completely(notes, run_dirs):
    _, spec = notes
    first = start_app(spec, run_dirs(), seed=True)

    assert is_healthy(first.socket_path, "/health")
    status, body, _ = request(first.socket_path, "POST", "/sign-in", {"username": "demo", "password": "demo-notes"})
    assert status == 200, body  # the seed's demo account
    status, body, cookie = request(
        first.socket_path, "POST", "/sign-up", {"username": "alice", "password": "correct horse battery"}
    )
    assert status == 201, body
    status, body, _ = request(first.socket_path, "POST", "/api/notes", {"text": "remember the milk"}, cookie)
    assert status == 201, body
    assert "Demo data added" in first.log_path.read_text()

    stop_app(first.run_dir)
    nothing_left(first.run_dir)

    second = start_app(spec, run_dirs(), seed=False)
    status, body, cookie = request(
        second.socket_path, "POST", "/sign-in", {"username": "alice", "password": "correct horse battery"}
    )
    assert status == 200, body
    status, body, _ = request(second.socket_path, "GET", "/api/notes", cookie=cookie)
    assert [note["text"] for note in body["notes"]] == ["remember the milk"]
    stop_app(second.run_dir)
    nothing_left(second.run_dir)

    reset_data(spec.data_dir)  # the owner's "reset": a fresh start has no accounts but the seeded one
    third = start_app(spec, run_dirs(), seed=True)
    status, _, _ = request(
        third.socket_path, "POST", "/sign-in", {"username": "alice", "password": "correct horse battery"}
    )
    assert status == 401


def test_another_process_sees_the_app_alive_and_stops_it(notes, run_dirs):
    _, spec = notes
    running = start_app(spec, run_dirs(), seed=True)
    script = textwrap.dedent(f"""
        from agents.serve import app_alive, stop_app
        print(app_alive({str(running.run_dir)!r}))
        stop_app({str(running.run_dir)!r})
        print(app_alive({str(running.run_dir)!r}))
    """)
    other = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)

    assert other.stdout.split() == ["True", "False"], other.stderr
    nothing_left(running.run_dir)


def test_the_apps_of_a_worker_that_dies_end_with_it(notes, scratch_dir):
    _, spec = notes
    run_dir = scratch_dir("run-")
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from agents.serve import AppSpec, start_app
        spec = AppSpec(app_dir=Path({str(spec.app_dir)!r}), data_dir=Path({str(spec.data_dir) + "-worker"!r}),
                       command={spec.command!r}, port={spec.port}, health={spec.health!r}, seed={spec.seed!r})
        start_app(spec, Path({str(run_dir)!r}), seed=True)
        print("started", flush=True)
        time.sleep(600)
    """)
    worker = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline().strip() == "started"
        assert app_alive(run_dir) and is_healthy(run_dir / "app.sock", "/health")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        nothing_left(run_dir, within=5, removed=False)  # the kernel ends them (parent-death signals)
        stop_app(run_dir)  # and stopping it later, from elsewhere, removes what is left (its empty cgroup)
        nothing_left(run_dir)
    finally:
        worker.kill()
        worker.wait()
        stop_app(run_dir, timeout=0)


# --- failures -----------------------------------------------------------------------------------------
def tiny_app(scratch_dir, command: str, **kwargs) -> AppSpec:
    work = scratch_dir("tiny-")
    (work / "app" / "data").mkdir(parents=True)
    (work / "app").chmod(0o755)
    (work / "app" / "data").chmod(0o755)
    return AppSpec(app_dir=work / "app", data_dir=work / "data", command=command, port=8080, **kwargs)


def test_a_command_that_crashes_fails_with_its_last_words(run_dirs, scratch_dir):
    spec = tiny_app(scratch_dir, "echo starting; echo 'boom: no database configured' >&2; exit 3")
    run_dir = run_dirs()

    with pytest.raises(AppFailed) as failed:
        start_app(spec, run_dir, seed=False)

    assert "stopped while starting" in failed.value.message and "exit code 3" in failed.value.message
    assert "boom: no database configured" in failed.value.log_tail
    nothing_left(run_dir)


def test_a_failing_seed_fails_the_start_and_the_app_never_runs(run_dirs, scratch_dir):
    spec = tiny_app(scratch_dir, "touch data/app-ran; sleep 600", seed="echo 'seed: demo data missing' >&2; exit 4")
    run_dir = run_dirs()

    with pytest.raises(AppFailed) as failed:
        start_app(spec, run_dir, seed=True)

    assert "seed command failed (exit code 4)" in failed.value.message
    assert "seed: demo data missing" in failed.value.log_tail
    assert not (run_dir / "app.json").exists()


def test_an_app_that_never_answers_fails_after_its_startup_timeout(run_dirs, scratch_dir):
    spec = tiny_app(scratch_dir, "echo listening soon; exec sleep 600", startup_timeout=1.5)
    run_dir = run_dirs()
    started = time.monotonic()

    with pytest.raises(AppFailed) as failed:
        start_app(spec, run_dir, seed=False)

    assert "did not answer / within 1.5 seconds" in failed.value.message
    assert "listening soon" in failed.value.log_tail
    assert time.monotonic() - started < 10
    nothing_left(run_dir)


def test_the_log_keeps_only_the_tail_of_a_chatty_app(scratch):
    log = AppLog(scratch / "app.log", limit=1000)
    for n in range(500):
        log.write(f"line {n}\n".encode())
    log.close()

    text = (scratch / "app.log").read_text()
    assert len(text) <= 2000 + 100
    assert text.endswith("line 499\n") and "line 0\n" not in text
    assert log_tail(scratch / "app.log", lines=2) == "line 498\nline 499"


@pytest.fixture
def scratch(scratch_dir):
    return scratch_dir("log-")


# --- a frontend paired with a live backend -------------------------------------------------------------
FRONTEND = """\
import http.server, os, urllib.request
class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        shows = urllib.request.urlopen(os.environ["PODCAST_API_URL"] + "/shows", timeout=5).read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(shows)
http.server.HTTPServer(("0.0.0.0", 8000), Page).serve_forever()
"""


def test_a_frontend_reaches_its_backend_through_the_forwarded_socket(run_dirs, scratch_dir):
    _, backend_spec = build_example("podcast-api", scratch_dir)
    backend = start_app(backend_spec, run_dirs(), seed=False)
    spec = tiny_app(
        scratch_dir,
        "python3 -u frontend.py",
        backends={"PODCAST_API_URL": backend.socket_path},
        health="/",
        startup_timeout=15,
    )
    (spec.app_dir / "frontend.py").write_text(FRONTEND)
    (spec.app_dir / "frontend.py").chmod(0o644)
    spec = AppSpec(**{**spec.__dict__, "port": 8000})

    frontend = start_app(spec, run_dirs(), seed=False)
    status, body, _ = request(frontend.socket_path, "GET", "/")

    assert status == 200
    direct = request(backend.socket_path, "GET", "/shows")[1]
    assert body == direct and body, "the frontend should show the live backend's shows"
