"""A recipe's [services]: real PostgreSQL and Redis (Debian's packages) started inside each command's own
bwrap sandbox, on the build's own data folder (agents/services.py).

Real servers, real sandbox: as root here and in CI, the launcher drops to the sandbox's user.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from agents import services as services_module
from agents.engine import baseline_commit, build_baseline
from agents.errors import ServiceError
from agents.recipe import Services
from agents.sandbox import SandboxError
from agents.sandbox.bwrap import BwrapSandbox
from agents.spec import BaselineSpec

POSTGRES = Services(postgresql=True)
REDIS = Services(redis=True)
BOTH = Services(postgresql=True, redis=True)

pytestmark = pytest.mark.skipif(
    services_module.postgres_bin() is None or not services_module.REDIS_SERVER.exists(),
    reason="needs Debian's postgresql and redis-server packages (CI installs them)",
)


@pytest.fixture
def scratch():
    # Not pytest's tmp_path: when the worker is root the sandbox's user must reach the workspace.
    path = Path(tempfile.mkdtemp(prefix="services-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_build(scratch: Path, name: str, services: Services = BOTH) -> BwrapSandbox:
    """The sandbox of one build: its own workspace and its own services folder."""
    root = scratch / name
    (root / "ws").mkdir(parents=True)
    root.chmod(0o711)
    return BwrapSandbox(root / "ws", services=services, services_dir=root / "services")


def sh(sandbox: BwrapSandbox, script: str, timeout: float = 60):
    return sandbox.run(["bash", "-c", script], timeout=timeout)


def test_a_command_gets_database_url_and_can_create_a_table_and_read_it_back(scratch):
    sandbox = make_build(scratch, "b1", POSTGRES)

    result = sh(sandbox, 'echo "$DATABASE_URL"; psql "$DATABASE_URL" -qc "create table t (x int); insert into t '
                         'values (42)" && psql -tAc "select x from t"')  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["postgresql://sandbox@127.0.0.1:5432/app", "42"]


def test_data_written_by_one_command_is_there_for_the_next_of_the_same_build(scratch):
    sandbox = make_build(scratch, "b1", POSTGRES)
    assert sh(sandbox, "psql -qc 'create table migrated (name text); insert into migrated values (1)'").exit_code == 0

    result = sh(sandbox, "psql -tAc 'select count(*) from migrated'")

    assert (result.exit_code, result.output.strip()) == (0, "1"), result.output


def test_two_builds_do_not_see_each_others_data(scratch):
    first, second = make_build(scratch, "b1", POSTGRES), make_build(scratch, "b2", POSTGRES)
    assert sh(first, "psql -qc 'create table secret (x int)'").exit_code == 0

    result = sh(second, "psql -tAc \"select count(*) from pg_tables where tablename = 'secret'\"")

    assert (result.exit_code, result.output.strip()) == (0, "0"), result.output


def test_redis_url_answers_ping(scratch):
    sandbox = make_build(scratch, "b1", REDIS)

    result = sh(sandbox, 'echo "$REDIS_URL"; redis-cli -u "$REDIS_URL" ping')

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["redis://127.0.0.1:6379/0", "PONG"]


def test_nothing_keeps_running_after_the_command(scratch):
    sandbox = make_build(scratch, "b1", BOTH)

    # The command names its pid namespace (the servers' too): afterwards no host process may be in it.
    result = sh(sandbox, "pg_isready -q && redis-cli ping >/dev/null && readlink /proc/self/ns/pid")
    ended = _uptime_ticks()

    assert result.exit_code == 0, result.output
    namespace = result.output.strip()
    assert namespace.startswith("pid:[")
    # The build's sandbox itself (bwrap and the executor that starts each command, see
    # agents/sandbox/session.py) stays for the next command, by design; nothing the command started may.
    sandbox_itself = sandbox.session_processes()
    left = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in sandbox_itself:
            try:
                # A freed namespace's number is soon given to another one (other sandboxes run on this
                # host): only a process that already existed when the command ended can be ours.
                # A zombie (the namespace's killed init, waiting for the host's pid 1) runs nothing.
                fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
                state, started = fields[0], int(fields[19])
                if os.readlink(f"/proc/{entry}/ns/pid") == namespace and started <= ended and state != "Z":
                    left.append(Path(f"/proc/{entry}/comm").read_text().strip())
            except OSError:
                pass  # ended meanwhile
    assert left == []


def test_the_services_cannot_be_reached_from_the_hosts_network(scratch):
    sandbox = make_build(scratch, "b1", BOTH)
    host_had = {port: _answers(port) for port in (5432, 6379)}  # a server of the host's own, if any
    marker = os.urandom(8).hex()
    seen = {}

    def look_from_the_host():
        time.sleep(1.5)  # the command below is sleeping with both servers up
        seen.update({port: _answers(port) for port in (5432, 6379)})
        seen["marker"] = _redis_get("sandbox-marker") if host_had[6379] else None

    looker = threading.Thread(target=look_from_the_host)
    looker.start()
    result = sh(sandbox, f"redis-cli set sandbox-marker {marker} >/dev/null && readlink /proc/self/ns/net && "
                         "sleep 3 && pg_isready -q")  # fmt: skip
    looker.join()

    assert result.exit_code == 0, result.output
    assert result.output.strip() != os.readlink("/proc/self/ns/net")  # a network namespace of its own
    for port, answered in host_had.items():
        assert seen[port] == answered  # nothing new listens on the host while the servers run
    assert seen["marker"] != marker


def test_a_command_killed_at_its_timeout_leaves_the_data_usable(scratch):
    sandbox = make_build(scratch, "b1", POSTGRES)
    killed = sh(sandbox, "psql -qc 'create table t (x int); insert into t values (7)' && sleep 60", timeout=4)
    assert killed.killed_reason == "timeout"

    result = sh(sandbox, "psql -tAc 'select x from t'")

    assert (result.exit_code, result.output.strip()) == (0, "7"), result.output


def test_a_server_that_cannot_start_says_so_in_one_line(scratch):
    sandbox = make_build(scratch, "b1", POSTGRES)
    assert sh(sandbox, "true").exit_code == 0
    # The data folder is damaged (as if a command had deleted its files): the server exits at once.
    shutil.rmtree(scratch / "b1" / "services" / "postgresql" / "global")

    result = sh(sandbox, "echo the command ran")

    assert result.exit_code == 125
    assert "the command ran" not in result.output
    assert result.output.startswith("[sandbox: PostgreSQL did not start: it exited. Its log ends: ")


def test_a_missing_server_is_named_with_the_package_to_install(scratch, monkeypatch):
    monkeypatch.setattr(services_module, "POSTGRES_ROOT", scratch / "no-postgresql")

    with pytest.raises(ServiceError) as caught:
        services_module.find_servers(BOTH)
    assert caught.value.code == "service_missing"
    assert caught.value.detail == (
        "this recipe needs PostgreSQL, which is not installed on the workers: apt-get install postgresql"
    )
    with pytest.raises(SandboxError, match="this recipe needs PostgreSQL, which is not installed"):
        make_build(scratch, "b1", POSTGRES)


# --- the engine ---------------------------------------------------------------------------------------
RECIPE = """\
[prototype]
name = "Needs a database"
kind = "backend"

[services]
postgresql = true
redis = true

[build]
command = '''psql -qc 'create table built (x int)' && psql -tAc "select count(*) from pg_tables where tablename = 'built'" && redis-cli -u "$REDIS_URL" ping; exit 3'''

[test]
command = "true"

[artifact]
kind = "archive"
path = "app.txt"
"""


def _baseline(scratch: Path, recipe: str) -> BaselineSpec:
    """A target's default branch to build: a real git repository with `recipe`, and its mirror."""
    repo = scratch / "repo"
    repo.mkdir()
    (repo / "prototype.toml").write_text(recipe)
    (repo / "app.txt").write_text("hello\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
           "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "Test",
           "GIT_COMMITTER_EMAIL": "t@example.invalid"}  # fmt: skip
    for argv in (["init", "-q", "-b", "main"], ["add", "--all"], ["commit", "-q", "-m", "The app"]):
        subprocess.run(["git", *argv], cwd=repo, env=env, check=True, capture_output=True)
    mirror = scratch / "mirror.git"
    return BaselineSpec(
        target="db-app", repo_url=str(repo), commit=baseline_commit(str(repo), mirror, "main"), mirror=mirror,
        work_dir=scratch / "work", output_dir=scratch / "out",
    )  # fmt: skip


def test_the_engine_gives_a_builds_commands_the_recipes_services(scratch):
    spec = _baseline(scratch, RECIPE)

    result = build_baseline(spec)

    assert result.error is not None and result.error.code == "build_failed", result.error
    assert "exited with 3: 1\nPONG\n" in result.error.detail
    assert not (scratch / "work").exists()  # the build's services data went with its folder


def test_the_services_data_counts_against_the_builds_disk_quota(scratch):
    if os.geteuid() != 0:
        pytest.skip("only a root worker gives a build a filesystem of its quota's size")
    recipe = RECIPE.replace("postgresql = true", "postgresql = false").replace(
        "command = '''psql", "command = '''dd if=/dev/zero of=/services/big bs=1M count=64 2>&1 | head -1; exit 3; psql"
    )
    spec = _baseline(scratch, recipe)
    spec.disk_quota_bytes = 32 * 2**20

    result = build_baseline(spec)

    assert result.error is not None and result.error.code == "build_failed", result.error
    assert "No space left on device" in result.error.detail


def test_the_engine_stops_before_any_command_when_a_service_is_not_installed(scratch, monkeypatch):
    monkeypatch.setattr(services_module, "POSTGRES_ROOT", scratch / "no-postgresql")
    spec = _baseline(scratch, RECIPE)

    result = build_baseline(spec)

    assert result.error is not None and result.error.code == "service_missing", result.error
    assert result.error.family == "ours"
    assert "apt-get install postgresql" in result.error.detail


def _uptime_ticks() -> int:
    """Now, in the unit of a process's start time in /proc/PID/stat (clock ticks since boot)."""
    return int(float(Path("/proc/uptime").read_text().split()[0]) * os.sysconf("SC_CLK_TCK")) + 1


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _redis_get(key: str) -> str | None:
    with socket.create_connection(("127.0.0.1", 6379), timeout=2) as conn:
        conn.sendall(f"*2\r\n$3\r\nGET\r\n${len(key)}\r\n{key}\r\n".encode())
        reply = conn.recv(4096).decode(errors="replace")
    return reply.split("\r\n")[1] if reply.startswith("$") and not reply.startswith("$-1") else None
