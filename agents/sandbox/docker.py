"""The docker backend: every command in a fresh, locked-down container, for hosts with a Docker engine.

What a command sees: the container's image (`image`, Debian's slim image unless told otherwise) with a
read-only root; the workspace at /workspace, read-write (its `.git`, if any, read-only); `ro_binds`
read-only at their own paths; size-limited tmpfs at /tmp and at HOME; no network (`--network none`);
uid 1000 with no capabilities and no_new_privs; docker's default seccomp profile. The engine's cgroup
limits memory (swap included), processes and CPU for the whole container, and rlimits the rest. Output
is not logged by the engine (`--log-driver none`), so a flood of output cannot fill its disk.

The command's own environment is handed to the docker client by name (`--env NAME`, value in the
client's environment), never as `NAME=value` in an argv that `ps` shows, except for the few names the
client needs itself (PATH, HOME, DOCKER_*), whose values are not secrets.

Stopping: a timeout or cancel kills the docker client (through process.py) and then the container by
its name (`docker rm -f`); the container's pid namespace takes every process with it.

With `network=True` the proxy's directory is bound at /run/egress and the forwarder of egress.py runs
first: the image must then have socat (Debian: apt-get install socat), or the command fails saying so.

When the worker is root, the workspace is given to uid 1000 (the container's user); otherwise the
container runs as the worker's own uid and gid, so that it can write the worker's files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath

from agents.egress import INSIDE_DIR, PROXY_ENV, forwarder_argv
from agents.sandbox.base import (
    DEFAULT_LIMITS,
    INSIDE_HOME,
    CommandResult,
    Sandbox,
    SandboxError,
    SandboxLimits,
    give_tree,
    is_root,
    with_notes,
)
from agents.sandbox.process import run_process

CLIENT_TIMEOUT = 30  # seconds for `docker info`, `docker rm`
PULL_TIMEOUT = 600


class DockerSandbox(Sandbox):
    name = "docker"
    executable = "docker"
    inside_uid = 1000
    inside_gid = 1000
    default_image = "debian:bookworm-slim"

    def __init__(
        self,
        workspace: Path,
        *,
        limits: SandboxLimits = DEFAULT_LIMITS,
        ro_binds: Sequence[Path] = (),
        debug: bool = False,
        egress_hosts: Sequence[str] = (),
        owned: bool = False,
        image: str = default_image,
    ) -> None:
        super().__init__(
            workspace, limits=limits, ro_binds=ro_binds, debug=debug, egress_hosts=egress_hosts, owned=owned
        )
        self.image = image
        self._docker = shutil.which(self.executable)
        if not self._docker:
            raise SandboxError(
                "The docker CLI is not installed, so the docker sandbox cannot run commands: install Docker, "
                "or use the bwrap sandbox."
            )
        for path in (self.workspace, *self.ro_binds):
            if "," in str(path) or "\n" in str(path):
                raise SandboxError(f"The docker sandbox cannot mount {path}: its name contains a comma.")
        self._check_engine()
        self.owner = (self.inside_uid, self.inside_gid) if is_root() else None
        self.user = self.owner or (os.getuid(), os.getgid())
        if self.owner and not self.owned:
            give_tree(self.workspace, *self.owner)
        self._check_image()
        self._check_it_starts()

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str = "/workspace",
        timeout: float = 300,
        env: Mapping[str, str] | None = None,
        network: bool = False,
        cancel: Callable[[], bool] | None = None,
    ) -> CommandResult:
        network = self._check_network(network)
        argv = self._check_argv(argv)
        inside_cwd = self._inside_cwd(cwd)
        command_env = self._command_env(env, home=INSIDE_HOME)
        container = f"prototype-store-{uuid.uuid4().hex[:16]}"
        proxy = None
        finished = False
        try:
            if network:
                try:
                    proxy = self.make_proxy(self.user).start()
                except OSError as exc:
                    raise SandboxError(f"The sandbox's network proxy could not start: {exc}.") from exc
                command_env.update(PROXY_ENV)
                argv = forwarder_argv(argv)
            client_env = self._client_env()
            launcher = docker_run_argv(
                self._docker, self.image, container, argv, workspace=self.workspace, cwd=inside_cwd,
                env=command_env, client_env=client_env, limits=self.limits, user=self.user,
                ro_binds=self.ro_binds, proxy_dir=proxy.dir if proxy else None,
            )  # fmt: skip
            result = run_process(
                launcher,
                env=client_env,
                timeout=timeout,
                output_bytes=self.limits.output_bytes,
                cancel=cancel,
            )
            finished = result.killed_reason is None
            refused = proxy.refusals() if proxy else None
            return with_notes(result, [refused]) if refused else result
        finally:
            if not finished:  # we killed the client: the container may still run
                self._client(["rm", "--force", container], timeout=CLIENT_TIMEOUT)
            if proxy:
                proxy.stop()

    # --- the engine ---------------------------------------------------------------------------------
    def _client_env(self) -> dict[str, str]:
        """What the docker client needs from the worker's environment (its config and engine address)."""
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
        env.update({k: v for k, v in os.environ.items() if k.startswith("DOCKER_")})
        return env

    def _client(self, args: list[str], *, timeout: float) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(
                [self._docker, *args], capture_output=True, text=True, timeout=timeout, env=self._client_env()
            )
        except (OSError, subprocess.TimeoutExpired):
            return None

    def _check_engine(self) -> None:
        answer = self._client(["info", "--format", "{{.ServerVersion}}"], timeout=CLIENT_TIMEOUT)
        if answer is None or answer.returncode != 0 or not answer.stdout.strip():
            said = (answer.stderr.strip().splitlines() or ["nothing"])[-1] if answer else "no answer"
            raise SandboxError(
                "No Docker engine answers, so the docker sandbox cannot run commands. Start the engine "
                f"(systemctl start docker), set DOCKER_HOST, or use the bwrap sandbox. docker said: {said}"
            )

    def _check_image(self) -> None:
        found = self._client(["image", "inspect", "--format", "{{.Id}}", self.image], timeout=CLIENT_TIMEOUT)
        if found is not None and found.returncode == 0:
            return
        pulled = self._client(["pull", "--quiet", self.image], timeout=PULL_TIMEOUT)
        if pulled is None or pulled.returncode != 0:
            said = (pulled.stderr.strip().splitlines() or ["nothing"])[-1] if pulled else "no answer"
            raise SandboxError(f"The docker sandbox's image {self.image} is not here and could not be pulled: {said}")

    def _check_it_starts(self) -> None:
        result = self.run(["true"], timeout=120)
        if result.exit_code != 0:
            raise SandboxError(
                f"The docker sandbox could not start a container of {self.image}. docker said: "
                f"{result.output.strip()[-500:] or 'nothing'}"
            )


def docker_run_argv(
    docker: str,
    image: str,
    container: str,
    argv: Sequence[str],
    *,
    workspace: Path,
    cwd: PurePosixPath,
    env: Mapping[str, str],
    client_env: dict[str, str],
    limits: SandboxLimits,
    user: tuple[int, int],
    ro_binds: Sequence[Path] = (),
    proxy_dir: Path | None = None,
) -> list[str]:
    """The `docker run` command line for one command. Values of `env` are put into `client_env` and
    named with `--env NAME`, except for names the client needs itself, which are passed in full."""
    tmpfs = "rw,nosuid,nodev,mode=1777,size="
    args = [
        docker, "run", "--rm", "--name", container, "--pull", "never", "--init", "--log-driver", "none",
        "--network", "none", "--read-only", "--hostname", "sandbox", "--user", f"{user[0]}:{user[1]}",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--memory", str(limits.memory_bytes), "--memory-swap", str(limits.memory_bytes),
        "--pids-limit", str(limits.pids),
        "--ulimit", f"cpu={limits.cpu_seconds}:{limits.cpu_seconds + 5}",
        "--ulimit", f"fsize={limits.file_size_bytes}:{limits.file_size_bytes}",
        "--ulimit", f"nofile={limits.open_files}:{limits.open_files}",
        "--ulimit", "core=0:0",
        "--tmpfs", f"/tmp:{tmpfs}{limits.tmp_bytes}",
        "--tmpfs", f"{INSIDE_HOME}:{tmpfs}{limits.home_bytes}",
        "--shm-size", str(limits.tmp_bytes),
        "--mount", f"type=bind,source={workspace},target=/workspace",
    ]  # fmt: skip
    if limits.cpus > 0:
        args += ["--cpus", f"{limits.cpus:g}"]
    git = workspace / ".git"
    if git.exists() and not git.is_symlink():
        args += ["--mount", f"type=bind,source={git},target=/workspace/.git,readonly"]
    for path in ro_binds:
        args += ["--mount", f"type=bind,source={path},target={path},readonly"]
    if proxy_dir is not None:
        args += ["--mount", f"type=bind,source={proxy_dir},target={INSIDE_DIR},readonly"]
    args += ["--workdir", str(cwd)]
    for key, value in env.items():
        if key in client_env:
            args += ["--env", f"{key}={value}"]
        else:
            client_env[key] = value
            args += ["--env", key]
    return [*args, "--entrypoint", argv[0], image, *argv[1:]]
