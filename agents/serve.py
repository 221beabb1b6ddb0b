"""Running a built version as a live app: `start_app(spec, run_dir, seed=...)`, `stop_app(run_dir)`.

A served app is untrusted code that keeps running. It runs in the bwrap sandbox (`BwrapSandbox.start`:
the same namespaces, seccomp filter, unprivileged user and per-command cgroup as every build command)
with the limits of PREVIEW_LIMITS, and sees:

- /app: the unpacked artifact, read-only (immutable, shared by every instance of the version), the
  working directory of `command` and `seed` (run with `bash -c`);
- /app/<data>: this instance's data, the only writable folder besides the small private tmpfs at /tmp
  and HOME. On a root worker that can make loop devices it is an ext4 image of `limits.data_bytes`
  (`<data_dir>/disk.img`), mounted nosuid/nodev for this app only, in a mount namespace of its
  launcher's own: nothing is mounted on the host, the kernel unmounts it when the app's last process
  ends, the app can never fill the host's disk, and the image file itself is never visible inside
  (the app cannot hand the kernel a crafted filesystem). Elsewhere (an unprivileged worker) it is the
  plain folder `<data_dir>/files`, limited only by the per-file size limit. Either way it persists
  across stops until the caller deletes `data_dir` (`reset_data`).
- a network namespace of its own with only a loopback device: no route anywhere, not to the host's
  127.0.0.1, not to other instances (whose ports and abstract sockets live in their own namespaces).
  The only way in is the Unix socket `<run_dir>/app.sock`, which the worker creates and listens on,
  and hands to the sandbox as an open file: a small forwarder inside (FORWARDER, run by Debian's
  python3) accepts each connection and relays it to 127.0.0.1:<port>. So the app has no writable
  folder on the host besides its data (a socket folder it could write would be a way to fill the
  host's disk). Each backend's socket file is bound read-only at /run/backends/<n>.sock, and the
  forwarder listens on 127.0.0.1:<41000+n> for it, the URL its environment variable names.
- only PATH, HOME, LANG, USER, PORT, the recipe's env, the backend URLs and its services' addresses in
  its environment: the worker's environment (model API key, database, broker) never reaches it.
- with the version's `services` (the recipe's [services] when it was built), PostgreSQL and Redis inside
  the same sandbox, started by the services launcher (agents/services.py `wrap`) before the seed and
  again before the app, listening on the sandbox's own loopback, so only the app and its seed reach
  them (DATABASE_URL, REDIS_URL, PG*). Their data is in the instance's data, at /app/<data>/.services:
  on its disk image, counted against `data_bytes`, kept across stops, gone with `reset_data`. The
  servers are children of the launcher inside the sandbox's pid namespace: when the app is stopped,
  they stop with it, and nothing of them can outlive the namespace.

The app's stdout and stderr go to `<run_dir>/app.log`, of which only the last LOG_BYTES or so are
kept. `<run_dir>/app.json` records the launcher's pid and start time, its pid namespace and its cgroup,
so that `app_alive` and `stop_app` work from any process on this host (the web process, a periodic
task). The launcher is started by a thread that lives exactly as long as the app (bwrap's
--die-with-parent is tied to the thread that started it), so when the worker process dies, so does
every app it started.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import http.client
import json
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from agents.errors import ServiceError
from agents.recipe import Services
from agents.sandbox.base import BASE_PATH, MiB, SandboxError, SandboxLimits, give_tree, is_root
from agents.sandbox.bwrap import Bind, BwrapSandbox, LoopMount, SandboxProcess, started_alive, stop_started
from agents.sandbox.process import strip_ansi
from agents.services import NO_SERVICES, SERVED_DATA, Servers, environment, find_servers, path_entries, wrap

log = logging.getLogger(__name__)

PREVIEW_LIMITS = SandboxLimits(
    memory_bytes=512 * MiB,
    pids=128,
    cpus=1.0,
    cpu_seconds=6 * 3600,  # per process: a busy loop ends after 6 h; the cgroup quota bounds the rate
    file_size_bytes=256 * MiB,
    open_files=1024,
    tmp_bytes=64 * MiB,
    home_bytes=16 * MiB,
    data_bytes=256 * MiB,
)
INSIDE_APP = PurePosixPath("/app")
INSIDE_RUN = "/run/app"
INSIDE_BACKENDS = "/run/backends"
SOCKET_NAME = "app.sock"
BACKEND_PORT_BASE = 41000
LOG_BYTES = 256 * 1024  # of the app's output kept in app.log (its tail)
TAIL_LINES = 40
STOP_GRACE = 5.0
HEALTH_EVERY = 0.1  # seconds between health checks while starting
SEED_TIMEOUT_MIN = 60  # seconds a seed command has at least
LOCK_WAIT = 10.0  # seconds to wait for the previous start of the same data to let go of it
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DATA_NAME = re.compile(r"^[A-Za-z0-9._-]+$")

# Run by Debian's python3 inside the sandbox, beside the app: relays connections accepted on the
# store's socket (inherited as fd argv[1]) to the app's port (argv[2]), and connections to 127.0.0.1:
# argv[3+n] to backend n's socket. Prints "ready" once every listener is up. A thread per direction of
# each connection; they count against the app's process limit like the app's own threads.
FORWARDER = f"""
import socket, sys, threading, time

def pipe(source, target):
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    try:
        target.shutdown(socket.SHUT_WR)
    except OSError:
        pass

def relay(client, connect):
    try:
        upstream = connect()
        back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
        back.start()
    except (OSError, RuntimeError):
        client.close()
        return
    pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()

def serve(listener, connect):
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            time.sleep(0.05)  # out of file descriptors: try again soon
            continue
        try:
            threading.Thread(target=relay, args=(client, connect), daemon=True).start()
        except RuntimeError:  # the process limit: refuse this connection, keep serving
            client.close()

def tcp(port):
    def connect():
        upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
        upstream.settimeout(None)
        return upstream
    return connect

def unix(path):
    def connect():
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(path)
        return upstream
    return connect

front = socket.socket(fileno=int(sys.argv[1]))
for n, port in enumerate(sys.argv[3:]):
    listener = socket.create_server(("127.0.0.1", int(port)))
    threading.Thread(target=serve, args=(listener, unix(f"{INSIDE_BACKENDS}/{{n}}.sock")), daemon=True).start()
print("ready", flush=True)
serve(front, tcp(int(sys.argv[2])))
"""

# Run by bash inside the sandbox: the forwarder in the background (its "ready" read through a pipe, so
# the backends answer before the app starts), then the app itself, which does not keep the store's
# socket open. The forwarder is a child of the app's shell and ends with the sandbox's pid namespace.
_FRONT = """
fd=$1; shift
exec 9< <(exec /usr/bin/python3 -I -c "$1" "$fd" "${@:3}")
read -r ready <&9 || { echo "sandbox: the forwarder to the app did not start" >&2; exit 125; }
exec 9<&- {fd}<&-
exec bash -c "$2"
"""


@dataclass(frozen=True)
class AppSpec:
    """One instance of a served version. Every host path's parents must be searchable by the sandbox's
    user (chmod o+x) when the worker is root."""

    app_dir: Path  # the unpacked artifact: immutable, shared by instances, mounted read-only at /app
    data_dir: Path  # this instance's data (host folder, see the module docstring), at /app/<data>
    command: str  # the recipe's [serve] command, run by bash -c in /app
    port: int  # the port the app listens on inside its own network namespace
    health: str = "/"
    startup_timeout: float = 30
    seed: str | None = None  # run once (to completion, same sandbox) before the first start
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # the recipe's non-secret env
    data: str = "data"  # the folder under /app where the data is mounted
    # env var name -> host Unix socket of a running backend instance (its RunningApp.socket_path)
    backends: Mapping[str, Path] = field(default_factory=lambda: MappingProxyType({}))
    limits: SandboxLimits = PREVIEW_LIMITS
    ro_binds: tuple[Path, ...] = ()  # toolchains outside /usr (SANDBOX_RO_BINDS), read-only
    services: Services = NO_SERVICES  # the recipe's [services] the version was built with

    @classmethod
    def from_serve(
        cls, serve, *, app_dir: Path, data_dir: Path, backends: Mapping[str, Path] | None = None,
        services: Services = NO_SERVICES,
    ) -> AppSpec:  # fmt: skip
        """The spec of a recipe's `[serve]` (agents.recipe.Serve) for one instance."""
        return cls(
            app_dir=app_dir, data_dir=data_dir, command=serve.command, port=serve.port, health=serve.health,
            startup_timeout=serve.startup_timeout, seed=serve.seed or None, env=serve.environment, data=serve.data,
            backends=MappingProxyType(dict(backends or {})), services=services,
        )  # fmt: skip


class AppFailed(Exception):
    """The app could not be started, or stopped during start-up. `message` says why in plain words;
    `log_tail` holds the app's last lines of output (its own words: untrusted, show them as text)."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.log_tail = log_tail


@dataclass
class RunningApp:
    run_dir: Path
    socket_path: Path
    log_path: Path
    pid: int


# --- talking to an app ------------------------------------------------------------------------------
class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket (the app's socket_path)."""

    def __init__(self, socket_path: Path, timeout: float = 5.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(socket_path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def is_healthy(socket_path: Path, health: str, timeout: float = 1.0) -> bool:
    """True when GET `health` through the socket answers with a status below 500."""
    connection = UnixHTTPConnection(socket_path, timeout=timeout)
    try:
        connection.request("GET", health, headers={"Host": "localhost", "User-Agent": "prototype-store-health"})
        return connection.getresponse().status < 500
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


# --- starting and stopping ----------------------------------------------------------------------------
def start_app(spec: AppSpec, run_dir: Path, *, seed: bool) -> RunningApp:
    """Start the app (after its seed command, when `seed` and the spec has one) with `run_dir`, a fresh
    host folder, for its socket, log and record. Returns once GET `health` through the socket answers;
    raises AppFailed when the seed fails, the app ends or does not answer within `startup_timeout`
    (nothing is left running then), SandboxError when the sandbox itself cannot work."""
    _check(spec)
    servers = _find_servers(spec)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o711)
    log_path, socket_path = run_dir / "app.log", run_dir / SOCKET_NAME
    sandbox = BwrapSandbox(spec.app_dir, limits=spec.limits, ro_binds=spec.ro_binds, owned=True)
    app_log = AppLog(log_path)
    listener = data = None
    try:
        listener = _listen(socket_path, sandbox.owner)
        data = _open_data(spec, sandbox.owner)
        binds = _binds(spec, data.folder)
        env = _environment(spec, servers)
        if seed and spec.seed:
            _run_seed(spec, servers, sandbox, binds, env, data, app_log)
        ports = [str(port) for port in [spec.port, *_backend_ports(spec)]]
        command = _app_command(spec, servers)
        argv = ["bash", "-c", _FRONT, "sandbox-app", str(listener.fileno()), FORWARDER, command, *ports]
        runner = _Runner(sandbox, argv, binds, env, data, app_log, name=run_dir.name, pass_fds=[listener.fileno()])
        process = runner.begin()  # from here on the runner releases the data and closes the log
    except BaseException:
        if data:
            data.release()
        app_log.close()
        raise
    finally:
        if listener:
            listener.close()  # the forwarder inside holds it now
    record = {**process.record, "socket": str(socket_path)}
    _write_json(run_dir / "app.json", record)
    with _lock:
        _runners[run_dir.resolve()] = runner
    running = RunningApp(run_dir=run_dir, socket_path=socket_path, log_path=log_path, pid=process.pid)
    try:
        _wait_healthy(spec, running, runner)
    except BaseException:
        stop_app(run_dir, timeout=0)
        raise
    return running


def app_alive(run_dir: Path) -> bool:
    """True while the app started with `run_dir` runs (from any process on this host)."""
    record = _read_record(Path(run_dir))
    return bool(record) and started_alive(record)


def stop_app(run_dir: Path, timeout: float = STOP_GRACE) -> None:
    """Stop the app started with `run_dir` and everything it started, from any process on this host:
    SIGTERM, up to `timeout` seconds to exit, then SIGKILL to all that is left (its pid namespace and
    cgroup). Returns when nothing of it runs. Does nothing for an app that already ended."""
    run_dir = Path(run_dir)
    record = _read_record(run_dir)
    if record:
        stop_started(record, grace=timeout)
    with _lock:
        runner = _runners.pop(run_dir.resolve(), None)
    if runner is not None:  # started by this process: wait until it has let go of the data
        runner.join(STOP_GRACE)


def reset_data(data_dir: Path) -> None:
    """Delete an instance's data (its image or folder): the next start gets a fresh one, to be seeded.
    Stop the instance first."""
    data_dir = Path(data_dir)
    if data_dir.exists():
        shutil.rmtree(data_dir)


def log_tail(log_path: Path, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of an app's log (at most 16 KiB), "" when there is none, without terminal
    control sequences: the app's output reaches the log through its own pipe, not run_process."""
    try:
        with open(log_path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16 * 1024))
            data = handle.read()
    except OSError:
        return ""
    return "\n".join(strip_ansi(data.decode("utf-8", errors="replace")).splitlines()[-lines:])


# --- the steps --------------------------------------------------------------------------------------
def _check(spec: AppSpec) -> None:
    if not 1 <= int(spec.port) <= 65535:
        raise ValueError(f"port must be 1 to 65535, not {spec.port!r}.")
    if not spec.health.startswith("/") or any(c in spec.health for c in "\r\n "):
        raise ValueError(f"health must be a path starting with /, not {spec.health!r}.")
    if not _DATA_NAME.match(spec.data) or spec.data in (".", ".."):
        raise ValueError(f"data must be one folder name, not {spec.data!r}.")
    if not Path(spec.app_dir).is_dir():
        raise ValueError(f"The app folder {spec.app_dir} does not exist.")
    for name, path in spec.backends.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"Invalid environment variable name for a backend: {name!r}.")
        if not Path(path).is_socket():
            raise AppFailed(f"The backend for {name} is not running (no socket at {path}).")


def _find_servers(spec: AppSpec) -> Servers:
    """The servers the version needs, as installed on this worker; AppFailed naming what is missing."""
    try:
        return find_servers(spec.services)
    except ServiceError as exc:
        raise AppFailed(f"The app could not be started: {exc.detail}.") from exc


def _environment(spec: AppSpec, servers: Servers) -> dict[str, str]:
    # The services' addresses first: the recipe's env may override them, as in builds. PATH with the
    # servers' client programs (psql of the server's own version), as build commands have it: the sandbox
    # is made without services here (a Sandbox's services are a build's, on a host folder bound at
    # /services), so its own PATH would leave them out.
    env = {**environment(servers), **spec.env, "PORT": str(spec.port)}
    if path_entries(servers) and "PATH" not in env:
        env["PATH"] = ":".join([*path_entries(servers), BASE_PATH])
    for (name, _), port in zip(spec.backends.items(), _backend_ports(spec), strict=True):
        env[name] = f"http://127.0.0.1:{port}"
    return env


def _backend_ports(spec: AppSpec) -> list[int]:
    ports = [p for p in range(BACKEND_PORT_BASE, BACKEND_PORT_BASE + len(spec.backends) + 1) if p != spec.port]
    return ports[: len(spec.backends)]


def _binds(spec: AppSpec, data_folder: Path) -> list[Bind]:
    app_dir = Path(spec.app_dir).resolve()
    if not (app_dir / spec.data).is_dir():
        # bwrap cannot make a folder inside a read-only bind: the unpacker should have made it.
        raise AppFailed(f"The app folder has no {spec.data}/ folder for the app's data.")
    binds = [Bind(app_dir, str(INSIDE_APP)), Bind(data_folder, str(INSIDE_APP / spec.data), writable=True)]
    for index, path in enumerate(spec.backends.values()):
        binds.append(Bind(Path(path), f"{INSIDE_BACKENDS}/{index}.sock"))
    return binds


def _listen(path: Path, owner: tuple[int, int] | None) -> socket.socket:
    """The store's way into the app. The socket belongs to the sandbox's user, so that a frontend's
    sandbox, where it is bound as a backend, may connect to it; nobody else but root can."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        path.unlink(missing_ok=True)
        listener.bind(str(path))
        os.chmod(path, 0o600)
        if owner:
            os.chown(path, *owner)
        listener.listen(128)
        os.set_inheritable(listener.fileno(), True)
    except OSError:
        listener.close()
        raise
    return listener


def _services_data(spec: AppSpec) -> str:
    """Where the services keep their data, as the app sees it: in the instance's data (see the docstring)."""
    return str(INSIDE_APP / spec.data / SERVED_DATA)


def _app_command(spec: AppSpec, servers: Servers) -> str:
    """The shell command _FRONT runs once the forwarder is up: the app, under the services launcher when
    it has services. Started after the forwarder took the store's socket and the shell closed it, so the
    servers never hold the app's way in (nor could the launcher's lock take its file descriptor)."""
    if not (servers.postgres_bin or servers.redis):
        return spec.command
    return "exec " + shlex.join(wrap(servers, ["bash", "-c", spec.command], _services_data(spec)))


def _run_seed(spec, servers, sandbox, binds, env, data, app_log) -> None:
    app_log.write(b"[store: seeding the app's data]\n")
    # The seed sees the same servers on the same data as the app after it: the launcher stops them
    # cleanly when the seed ends, and the app's launcher starts them again on what the seed left.
    argv = wrap(servers, ["bash", "-c", spec.seed], _services_data(spec))
    runner = _Runner(sandbox, argv, binds, env, data, app_log, name="seed", keep=True)
    runner.begin()
    timeout = max(spec.startup_timeout, SEED_TIMEOUT_MIN)
    runner.join(timeout)
    if runner.is_alive():
        runner.process.stop()
        runner.join(STOP_GRACE)
        raise AppFailed(f"The seed command did not finish within {timeout:g} seconds.", app_log.tail())
    if runner.exit_code != 0:
        raise AppFailed(f"The seed command failed (exit code {runner.exit_code}).", app_log.tail())


def _wait_healthy(spec: AppSpec, running: RunningApp, runner: _Runner) -> None:
    deadline = time.monotonic() + spec.startup_timeout
    while True:
        if runner.done.is_set():
            raise AppFailed(
                f"The app stopped while starting (exit code {runner.exit_code}).", log_tail(running.log_path)
            )
        if is_healthy(running.socket_path, spec.health, timeout=max(0.2, min(2.0, deadline - time.monotonic()))):
            return
        if time.monotonic() >= deadline:
            raise AppFailed(
                f"The app did not answer {spec.health} within {spec.startup_timeout:g} seconds.",
                log_tail(running.log_path),
            )
        time.sleep(HEALTH_EVERY)


# --- the data -------------------------------------------------------------------------------------------
class _Data:
    """An instance's data while one start uses it: the folder bound at /app/<data>, the image mounted
    there (if any), and a lock on it so that two starts never mount one image at once."""

    def __init__(self, folder: Path, loop: LoopMount | None, lock_fd: int | None) -> None:
        self.folder = folder
        self.loops = [loop] if loop else []
        self._lock_fd = lock_fd
        self._users = 1

    def share(self) -> _Data:
        """One more user (the seed, then the app): released when the last one lets go."""
        self._users += 1
        return self

    def release(self) -> None:
        self._users -= 1
        if self._users == 0 and self._lock_fd is not None:
            os.close(self._lock_fd)  # drops the flock
            self._lock_fd = None


def _open_data(spec: AppSpec, owner: tuple[int, int] | None) -> _Data:
    data_dir = Path(spec.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o711)
    if owner and _loops_possible():
        image, mount_point = data_dir / "disk.img", data_dir / "mnt"
        mount_point.mkdir(exist_ok=True)
        lock_fd = os.open(data_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            _lock_data(lock_fd, data_dir)
            if not image.exists():
                _make_image(image, spec.limits.data_bytes, owner)
        except BaseException:
            os.close(lock_fd)
            raise
        return _Data(mount_point, LoopMount(image, mount_point), lock_fd)
    files = data_dir / "files"
    files.mkdir(exist_ok=True)
    if owner:
        give_tree(files, *owner)
    return _Data(files, None, None)


@functools.cache
def _loops_possible() -> bool:
    """Root, loop devices, the tools, and a mount namespace can be made (a container may refuse it)."""
    if not (is_root() and os.path.exists("/dev/loop-control")):
        return False
    if not all(shutil.which(tool) for tool in ("mkfs.ext4", "mount", "unshare", "losetup")):
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        log.info("Served apps keep their data in plain folders: no mount namespace here (%s).", probe.stderr)
    return probe.returncode == 0


def _lock_data(fd: int, data_dir: Path) -> None:
    until = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= until:
                raise AppFailed("The instance's data is in use by another start of it.") from exc
            time.sleep(0.05)


def _make_image(image: Path, size: int, owner: tuple[int, int]) -> None:
    """A sparse ext4 image of `size` bytes (taking only the disk the app uses) whose root belongs to the
    sandbox's user. Made under another name first: a half-made image is never mounted."""
    partial = image.with_name(image.name + ".new")
    try:
        with open(partial, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)  # the raw filesystem is nobody's business but the kernel's
            handle.truncate(size)
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-m", "0", "-E", f"root_owner={owner[0]}:{owner[1]}", str(partial)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        os.replace(partial, image)
    except (OSError, subprocess.SubprocessError) as exc:
        partial.unlink(missing_ok=True)
        raise SandboxError(f"The app's data disk could not be made: {exc}.") from exc


def _wait_image_free(image: Path) -> None:
    """The kernel unmounts an image when the last process of its previous start has ended, and frees the
    loop device a moment later: mounting it again before then would mount one filesystem twice."""
    until = time.monotonic() + LOCK_WAIT
    while time.monotonic() < until:
        found = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True, timeout=10)
        if found.returncode == 0 and not found.stdout.strip():
            return
        time.sleep(0.05)
    raise AppFailed("The instance's data disk is still in use by its previous start.")


# --- one sandboxed command and its output -----------------------------------------------------------
_lock = threading.Lock()
_runners: dict[Path, _Runner] = {}


class _Runner(threading.Thread):
    """Starts one sandboxed command, copies its output to the log, reaps it and cleans up after it.

    The command must be started by this thread, which lives exactly as long as the command: bwrap's
    --die-with-parent fires when the *thread* that started it ends, so a command started by a pool
    thread would be killed when that thread is retired."""

    def __init__(self, sandbox, argv, binds, env, data: _Data, app_log: AppLog, *, name: str, keep: bool = False,
                 pass_fds: list[int] | None = None):  # fmt: skip
        super().__init__(name=f"serve {name}", daemon=True)
        self.sandbox, self.argv, self.binds, self.env = sandbox, argv, binds, env
        self.pass_fds = pass_fds or []
        self.data = data.share() if keep else data
        self.app_log = app_log
        self.keep_log = keep  # the seed's log stays open for the app that follows
        self.process: SandboxProcess | None = None
        self.error: BaseException | None = None
        self.exit_code: int | None = None
        self.started = threading.Event()
        self.done = threading.Event()

    def begin(self) -> SandboxProcess:
        self.start()
        self.started.wait()
        if self.error is not None:
            raise self.error
        return self.process

    def run(self) -> None:
        try:
            for loop in self.data.loops:
                _wait_image_free(loop.image)
            self.process = self.sandbox.start(
                self.argv, cwd=str(INSIDE_APP), env=self.env, binds=self.binds, loops=self.data.loops,
                pass_fds=self.pass_fds,
            )  # fmt: skip
        except BaseException as exc:  # handed to begin(), in the caller's thread
            self.error = exc
            self._finish()
            self.started.set()
            return
        self.started.set()
        try:
            fd = self.process.output.fileno()
            while chunk := os.read(fd, 64 * 1024):
                self.app_log.write(chunk)
            self.exit_code = self.process.wait()
        except OSError as exc:
            log.warning("Reading a served app's output failed: %s", exc)
        finally:
            self.process.stop()  # whatever it left behind: its namespace, its cgroup
            self.process.output.close()
            if self.exit_code is None:
                self.exit_code = self.process.wait()
            self._finish()

    def _finish(self) -> None:
        self.data.release()
        if not self.keep_log:
            self.app_log.close()
        self.done.set()


class AppLog:
    """An app's output in a file, bounded: past twice `limit` bytes, only the last `limit` are kept."""

    def __init__(self, path: Path, limit: int = LOG_BYTES) -> None:
        self.path = Path(path)
        self.limit = limit
        self._handle = self._open()
        self._lock = threading.Lock()

    def _open(self):
        # What the app prints may be what people typed into it: for the worker and the web process only.
        return os.fdopen(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600), "ab")

    def write(self, chunk: bytes) -> None:
        with self._lock:
            if self._handle is None:
                return
            self._handle.write(chunk)
            self._handle.flush()
            if self._handle.tell() > 2 * self.limit:
                self._trim()

    def tail(self) -> str:
        return log_tail(self.path)

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None

    def _trim(self) -> None:
        self._handle.close()
        kept = self.path.read_bytes()[-self.limit :]
        kept = kept[kept.find(b"\n") + 1 :] if b"\n" in kept else kept
        partial = self.path.with_name(self.path.name + ".new")
        partial.write_bytes(b"[store: earlier output cut]\n" + kept)
        partial.chmod(0o600)
        os.replace(partial, self.path)  # readers in other processes see the old file or the new one
        self._handle = self._open()


def _write_json(path: Path, data: dict) -> None:
    partial = path.with_name(path.name + ".new")
    with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "w") as handle:
        handle.write(json.dumps(data))
    os.replace(partial, path)


def _read_record(run_dir: Path) -> dict | None:
    try:
        record = json.loads((run_dir / "app.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
