"""A live preview of a version whose recipe has [services]: the real PostgreSQL (Debian's package) started
beside the served app in its own sandbox (agents/serve.py with agents/services.py), seeded by the recipe's
seed, its data in the instance's own data, and nothing of it left when the app stops.

Real servers, real sandbox: as root here and in CI, on the loop-mounted data disk of root workers."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from agents import BuildSpec, build
from agents import services as services_module
from agents.providers import ProviderConfig
from agents.providers.replay import list_recordings
from agents.recipe import Services
from agents.serve import AppFailed, AppSpec, UnixHTTPConnection, reset_data, start_app, stop_app
from tests.agents.test_serve import nothing_left, sandbox_processes

pytestmark = pytest.mark.skipif(
    services_module.postgres_bin() is None or not os.path.exists("/usr/lib/python3/dist-packages/psycopg2"),
    reason="needs Debian's postgresql and python3-psycopg2 packages (CI installs them)",
)

# A backend that keeps its greetings in PostgreSQL: GET / answers how many there are (read from the
# database named by DATABASE_URL), POST / adds one, GET /where says where its services keep their data
# and whether PostgreSQL ever had to recover from being killed.
APP = r"""
import http.server, json, os, psycopg2

def count():
    with psycopg2.connect(os.environ["DATABASE_URL"]) as db, db.cursor() as cursor:
        cursor.execute("select count(*) from greetings")
        return cursor.fetchone()[0]

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/where":
            log = open("data/.services/postgresql.log").read()
            body = {"services": sorted(os.listdir("data/.services")), "url": os.environ["DATABASE_URL"],
                    "recovered": "not properly shut down" in log}
        else:
            body = {"greetings": count()}
        self.answer(200, body)

    def do_POST(self):
        with psycopg2.connect(os.environ["DATABASE_URL"]) as db, db.cursor() as cursor:
            cursor.execute("insert into greetings values ('typed by a visitor')")
        self.answer(201, {"greetings": count()})

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""
# psql from PATH: the server's own client programs, as build commands get them.
SEED = (
    "psql -v ON_ERROR_STOP=1 -qc \"create table greetings (word text); insert into greetings values ('hello'), ('hi')\""
)
POSTGRES = Services(postgresql=True)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def app(scratch_dir):
    """The app unpacked the way instances get it (read-only for the sandbox, an empty data folder)."""
    work = scratch_dir("served-services-")
    app_dir = work / "app"
    (app_dir / "data").mkdir(parents=True)
    (app_dir / "greetings.py").write_text(APP)
    for path in [app_dir, *app_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return AppSpec(
        app_dir=app_dir, data_dir=work / "instance-data", command="/usr/bin/python3 -u greetings.py", port=8080,
        seed=SEED, startup_timeout=30, services=POSTGRES,
    )  # fmt: skip


@pytest.fixture
def run_dirs(scratch_dir):
    made = []

    def make() -> Path:
        made.append(scratch_dir("run-"))
        return made[-1]

    yield make
    for run_dir in made:
        stop_app(run_dir, timeout=0)


def call(socket_path: Path, method: str = "GET", path: str = "/") -> tuple[int, dict]:
    connection = UnixHTTPConnection(socket_path, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def postgres_processes(run_dir: Path) -> list[int]:
    """Host pids of the PostgreSQL server processes in the app's sandbox."""
    namespace = json.loads((run_dir / "app.json").read_text())["namespace"]
    return [pid for pid in sandbox_processes(namespace) if is_postgres(pid)]


def is_postgres(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return command.startswith(("postgres:", f"{services_module.postgres_bin()}/postgres\0"))


def gone(pids: list[int], within: float = 5) -> bool:
    until = time.monotonic() + within
    while any(map(is_postgres, pids)) and time.monotonic() < until:
        time.sleep(0.05)
    return not any(map(is_postgres, pids))


def test_a_served_app_reads_what_its_seed_wrote_to_postgresql_keeps_it_across_a_stop_and_loses_it_on_reset(
    app, run_dirs
):
    first = start_app(app, run_dirs(), seed=True)

    assert call(first.socket_path) == (200, {"greetings": 2})  # what the seed inserted
    assert call(first.socket_path, "POST") == (201, {"greetings": 3})
    status, where = call(first.socket_path, "GET", "/where")
    assert status == 200 and where["url"] == "postgresql://sandbox@127.0.0.1:5432/app"
    assert "postgresql" in where["services"]  # in the instance's own data
    servers = postgres_processes(first.run_dir)
    assert len(servers) > 1, "PostgreSQL (its postmaster and its workers) does not run beside the app"

    stop_app(first.run_dir)
    nothing_left(first.run_dir)
    assert gone(servers), f"PostgreSQL processes outlived the app: {servers}"

    second = start_app(app, run_dirs(), seed=False)  # a stopped instance, started again, finds its data
    assert call(second.socket_path) == (200, {"greetings": 3})
    _, where = call(second.socket_path, "GET", "/where")
    assert where["recovered"] is False, "PostgreSQL was killed rather than shut down when the app stopped"
    stop_app(second.run_dir)
    nothing_left(second.run_dir)

    reset_data(app.data_dir)  # the owner's "reset demo data": the database goes with the rest
    third = start_app(app, run_dirs(), seed=True)
    assert call(third.socket_path) == (200, {"greetings": 2})


def test_the_database_lives_on_the_instances_data_disk_and_each_instance_has_its_own(app, run_dirs):
    other = replace(app, data_dir=app.data_dir.with_name("other-instance-data"))
    mine, theirs = start_app(app, run_dirs(), seed=True), start_app(other, run_dirs(), seed=True)

    assert call(mine.socket_path, "POST") == (201, {"greetings": 3})
    assert call(theirs.socket_path) == (200, {"greetings": 2})
    if (app.data_dir / "disk.img").exists():
        # Root workers: on the size-limited image only the sandbox mounts, never in a folder of the host.
        assert list((app.data_dir / "mnt").iterdir()) == []
    else:
        assert (app.data_dir / "files" / ".services" / "postgresql").is_dir()


def test_a_version_whose_server_is_not_installed_on_the_worker_fails_saying_what_to_install(
    app, run_dirs, monkeypatch, scratch_dir
):
    monkeypatch.setattr(services_module, "POSTGRES_ROOT", scratch_dir("no-postgresql-"))
    run_dir = run_dirs()

    with pytest.raises(AppFailed) as failed:
        start_app(app, run_dir, seed=True)

    assert "needs PostgreSQL, which is not installed on the workers: apt-get install postgresql" in failed.value.message
    assert not (run_dir / "app.json").exists()


class Sink:
    def emit(self, kind: str, data: dict) -> None:
        pass

    def stage(self, name: str) -> None:
        pass

    def cancelled(self) -> bool:
        return False


def test_a_build_hands_back_its_recipes_services_with_its_serve(make_repo, scratch_dir):
    # The notes app as it is, its recipe asking for PostgreSQL too: the recorded idea replays as usual.
    notes = EXAMPLES / "targets" / "notes-app"
    recipe = (notes / "prototype.toml").read_text() + "\n[services]\npostgresql = true\n"
    repo = make_repo(files={"prototype.toml": recipe}, source=notes)
    [recording, *_] = [r for r in list_recordings(EXAMPLES / "recordings") if r.target == "notes-app"]
    work = scratch_dir("build-")
    spec = BuildSpec(
        target="notes-app", repo_url=str(repo), base_ref="main", idea=recording.idea, mirror=work / "mirror.git", browser_check=False,
        work_dir=work / "work", output_dir=work / "out", result_ref="refs/prototypes/test/1",
        provider=ProviderConfig(name="replay", recordings=EXAMPLES / "recordings"),
    )  # fmt: skip

    result = build(spec, Sink())

    assert result.ok, result.error
    assert result.serve is not None and result.services == POSTGRES
