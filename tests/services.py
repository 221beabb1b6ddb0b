"""Real services for tests: redis-server and PostgreSQL (15) from Debian's packages, each started on a free
loopback port in its own temporary folder and stopped (folder removed) afterwards.

    with redis_server() as redis:        # redis.url, redis.port; redis.stop() / redis.start() restart it
    with postgres_server() as postgres:  # postgres.url("store"), postgres.create_database("store_e2e")
    CeleryWorker("w1", shared_database_env(REDIS_URL=redis.url), log)  # a worker on the test's database

Also a runner for the suite on PostgreSQL (see scripts/test-postgres.sh):

    python -m tests.services postgres -- python -m pytest ...

runs the command with TEST_DATABASE_URL pointing at a fresh server, and stops the server however the
command ends. This module imports Django only inside the functions that need it (the runner has none).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _postgres_bin() -> Path:
    """The newest PostgreSQL server Debian's packages installed (15 on Debian 12)."""
    found = [
        p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists() and p.parent.name.isdigit()
    ]
    return max(found, key=lambda p: int(p.parent.name)) if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _postgres_bin()
STARTUP_SECONDS = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, *, timeout: float = STARTUP_SECONDS, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing answered on 127.0.0.1:{port} within {timeout:.0f} s")
        time.sleep(0.05)


class RedisServer:
    """A redis-server that keeps nothing on disk (no RDB, no AOF): a restart loses every message,
    as a production Redis without persistence does."""

    def __init__(self, folder: Path, port: int):
        self.folder = folder
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.folder), "--logfile", str(self.folder / "redis.log")]  # fmt: skip
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd=self.folder)
        wait_for_port(self.port, process=self.process)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait until its port is closed."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def redis_server():
    folder = Path(tempfile.mkdtemp(prefix="store-redis-"))
    server = RedisServer(folder, free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _as_postgres() -> list[str]:
    """PostgreSQL refuses to run as root: then run its programs as the `postgres` system user (made by
    the Debian package)."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


class PostgresServer:
    """A throwaway PostgreSQL cluster: trust authentication on 127.0.0.1 for the superuser `postgres`,
    its unix socket in its own folder, and no fsync (nothing here needs to survive a crash)."""

    def __init__(self, folder: Path, port: int):
        self.folder = folder
        self.data = folder / "data"
        self.port = port

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str) -> None:
        result = subprocess.run([*_as_postgres(), *argv], cwd=self.folder, stdin=subprocess.DEVNULL,
                                capture_output=True, text=True)  # fmt: skip
        if result.returncode:
            raise RuntimeError(f"{Path(argv[0]).name} failed ({result.returncode}):\n{result.stdout}{result.stderr}")

    def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                      "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")  # fmt: skip
        options = " ".join([
            f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-c unix_socket_directories={self.folder}",
            "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off", "-c max_connections=200",
        ])  # fmt: skip
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "postgres.log"),
                  "-o", options, "-w", "-t", str(STARTUP_SECONDS), "start")  # fmt: skip
        wait_for_port(self.port)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def create_database(self, name: str) -> str:
        """A new empty database (replacing one of that name); returns its URL."""
        return fresh_database(self.url("postgres"), name)


def _server_url(url: str, database: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def fresh_database(url: str, name: str) -> str:
    """Create an empty database `name` on the PostgreSQL server of `url` (dropping one of that name
    first) and return its URL."""
    import psycopg

    with psycopg.connect(_server_url(url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return _server_url(url, name)


def drop_database(url: str) -> None:
    from urllib.parse import urlsplit

    import psycopg

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(_server_url(url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def postgres_server():
    folder = Path(tempfile.mkdtemp(prefix="store-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    server = PostgresServer(folder, free_port())
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


ROOT = Path(__file__).resolve().parents[1]


def shared_database_env(**extra: str) -> dict[str, str]:
    """The environment for another process (a Celery worker) that must work on the running test's own
    database: the test database file on SQLite, the test database (test_store) on PostgreSQL."""
    from django.db import connection

    env = {**os.environ, **extra}
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    else:
        env.pop("DATABASE_URL", None)
        env["SQLITE_PATH"] = str(db["NAME"])
    return env


class CeleryWorker:
    """`celery -A store worker` as production runs it (prefork pool, one build at a time), named
    `<name>@<host>`, with its output in `log`."""

    def __init__(self, name: str, env: dict[str, str], log: Path):
        self.name = name
        self.env = env
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        argv = [sys.executable, "-m", "celery", "-A", "store", "worker", "--concurrency", "1", "-n", f"{self.name}@%h",
                "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(argv, env=self.env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while " ready." not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.name} did not start:\n{self.output()[-3000:]}")
            time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        """A warm shutdown (SIGTERM) for a few seconds, then SIGKILL for the whole process group."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@contextlib.contextmanager
def celery_broker(url: str):
    """This process's Celery app sends its tasks to `url` (as the web process does with REDIS_URL)."""
    from store.celery import app

    def forget_connections():
        # Celery keeps a connection pool and a producer pool made for the broker URL of the time, in kombu's
        # process-wide registries: closed and dropped from there too, or a later send on the same URL (the
        # embedded broker's, after this) would be handed the closed pool ("Acquire on closed pool").
        from kombu import pools

        pools.reset()
        app._pool = None
        app.amqp._producer_pool = None

    saved = app.conf.broker_url, app.conf.broker_transport_options
    forget_connections()
    app.conf.broker_url, app.conf.broker_transport_options = url, {}
    try:
        yield app
    finally:
        forget_connections()
        app.conf.broker_url, app.conf.broker_transport_options = saved


def wait_until(condition, *, timeout: float, what: str, every: float = 0.2):
    """Poll `condition` until it returns something true (which is returned); fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def run_with_postgres(command: list[str]) -> int:
    """Run `command` with TEST_DATABASE_URL set to a fresh server's `store` database; return its exit code."""

    def stop_on_signal(signum, _frame):
        raise SystemExit(128 + signum)  # unwinds through the `with`: the server is stopped

    signal.signal(signal.SIGTERM, stop_on_signal)
    with postgres_server() as server:
        env = {**os.environ, "TEST_DATABASE_URL": server.url("store")}
        print(f"PostgreSQL {PG_BIN.parent.name} on 127.0.0.1:{server.port}: running {' '.join(command)}", flush=True)
        child = subprocess.Popen(command, env=env)
        try:
            return child.wait()
        except BaseException:
            child.terminate()
            child.wait()
            raise


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] != "postgres" or argv[1] != "--":
        print("usage: python -m tests.services postgres -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    return run_with_postgres(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
