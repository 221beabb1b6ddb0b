"""What every sandbox backend shares: its limits, its result, its error, and its interface.

Every command the agent or a recipe runs is untrusted. A backend runs one command at a time in
`workspace` (seen as /workspace by the command) and returns a `CommandResult`; it never raises because
of what the command did, only when the sandbox itself cannot work (`SandboxError`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from agents.egress import EgressProxy, check_hosts, check_networks
from agents.errors import ServiceError
from agents.recipe import Services
from agents.services import NO_SERVICES, Servers, environment, find_servers, path_entries, prepare_data
from agents.toolchains import Toolchain

MiB = 1024 * 1024
GiB = 1024 * MiB

INSIDE_WORKSPACE = PurePosixPath("/workspace")
INSIDE_HOME = "/home/sandbox"
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


class SandboxError(Exception):
    """The sandbox itself could not start or cannot do what was asked. The message says why in plain
    words and what to install or configure; it never contains output of an untrusted command."""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one command. The memory, process and CPU limits are for the command and everything it
    starts together, enforced by a per-run cgroup (cgroup.py). Where cgroups are not available the
    sandbox says so once in the log and falls back to rlimits: memory becomes an address-space limit
    per process (RLIMIT_AS, which breaks node and WebAssembly engines that reserve large address
    ranges), and processes are counted per host user (RLIMIT_NPROC), shared by every sandbox that runs
    at the same time. The other rlimits always apply."""

    memory_bytes: int = 4 * GiB  # memory of the whole command, /tmp and /dev/shm included (cgroup)
    pids: int = 256  # processes and threads of the whole command (cgroup pids.max)
    cpus: float = 2.0  # CPU time per wall-clock second, in cores (cgroup CPU quota); 0 for no quota
    cpu_seconds: int = 600  # CPU time per process (RLIMIT_CPU)
    file_size_bytes: int = 512 * MiB  # largest file a command may write (RLIMIT_FSIZE)
    open_files: int = 1024  # RLIMIT_NOFILE
    tmp_bytes: int = 256 * MiB  # size of the /tmp tmpfs (and of /dev/shm)
    home_bytes: int = 64 * MiB  # size of the HOME tmpfs
    output_bytes: int = 1 * MiB  # output kept in CommandResult.output (head and tail)
    data_bytes: int = 256 * MiB  # a served app's data disk (agents/serve.py), where it can have one


DEFAULT_LIMITS = SandboxLimits()


@dataclass(frozen=True)
class Bind:
    """A host path shown inside a started sandbox (see BwrapSandbox.start) at `inside`."""

    host: Path
    inside: str
    writable: bool = False


@dataclass(frozen=True)
class CommandResult:
    """What one command did.

    `exit_code` follows the shell's convention: the command's own code, or 128+N when it died of
    signal N. A command we killed (timeout, cancel, output limit) therefore reports 137 (SIGKILL), and
    one stopped by its CPU limit 152 (SIGXCPU). `killed_reason` says why it was killed: None,
    "timeout", "cancelled", "output_limit" (it printed more than 50 times `SandboxLimits.output_bytes`)
    or "memory_limit" (the kernel killed it for using more than `SandboxLimits.memory_bytes`).
    `output` is stdout and stderr interleaved; over `output_bytes` it keeps the head and the tail around
    a "[… N bytes cut …]" line and `truncated` is True. When the sandbox refused something the command
    may not notice by itself (its memory or process limit, a host the network proxy refused), a last
    "[sandbox: …]" line says so in plain words.
    """

    exit_code: int
    output: str
    truncated: bool
    duration: float
    killed_reason: str | None = None


def with_notes(result: CommandResult, notes: Sequence[str], killed_reason: str | None = None) -> CommandResult:
    """`result` with "[sandbox: …]" lines added to its output (and `killed_reason` set, if given)."""
    if not notes and killed_reason is None:
        return result
    output = result.output
    if output and not output.endswith("\n"):
        output += "\n"
    output += "".join(f"[sandbox: {note}]\n" for note in notes)
    return replace(result, output=output, killed_reason=killed_reason or result.killed_reason)


class Sandbox:
    """The interface of every backend (see bwrap.py and none.py): same constructor, same `run`.

    `egress_hosts` are the host names (`pypi.org`, or `*.example.com` for any name under it) that
    commands run with `network=True` may reach, through an allowlisting proxy (see egress.py); with
    none, `network=True` is refused. Only recipe setup commands ask for network.

    `services` (a recipe's [services]) run beside every command, inside its own sandbox, on the data in
    `services_dir` (one folder per build, kept between its commands; see agents/services.py), and the
    commands get their addresses (DATABASE_URL, REDIS_URL, …). `toolchains` are shown read-only, their
    `bin` first on PATH in the order given (see agents/toolchains.py).
    """

    name: str = ""

    def __init__(
        self,
        workspace: Path,
        *,
        limits: SandboxLimits = DEFAULT_LIMITS,
        ro_binds: Sequence[Path] = (),
        debug: bool = False,
        egress_hosts: Sequence[str] = (),
        egress_networks: Sequence[str] = (),
        owned: bool = False,
        services: Services = NO_SERVICES,
        services_dir: Path | None = None,
        toolchains: Sequence[Toolchain] = (),
    ) -> None:
        workspace = Path(workspace)
        if not workspace.is_dir():
            raise SandboxError(f"The workspace {workspace} is not a directory.")
        self.workspace = workspace.resolve()
        self.limits = limits
        self.ro_binds = tuple(Path(p) for p in ro_binds)
        for path in self.ro_binds:
            if not path.is_absolute() or not path.exists():
                raise SandboxError(f"The read-only bind {path} must be an absolute path that exists on this machine.")
        self.debug = debug
        # The workspace already belongs to the sandbox's user (an overlay made for it): nothing to hand over.
        self.owned = owned
        try:
            self.egress_hosts = check_hosts(egress_hosts)
            check_networks(egress_networks)
        except ValueError as exc:
            raise SandboxError(f"The allowed hosts for the network are not valid: {exc}") from exc
        # Private networks (a company package mirror) the allowed hosts may resolve into; see egress.py.
        self.egress_networks = tuple(egress_networks)
        self.toolchains = tuple(toolchains)
        for toolchain in self.toolchains:
            if not toolchain.host.is_dir():
                raise SandboxError(f"The toolchain folder {toolchain.host} ({toolchain.name} {toolchain.version}) "
                                   "does not exist on this machine.")  # fmt: skip
        self.servers = Servers()
        self.services_dir: Path | None = None
        if services:
            if services_dir is None:
                raise SandboxError("The recipe's services need a data folder (services_dir) for the build.")
            try:
                self.servers = find_servers(services)
            except ServiceError as exc:
                raise SandboxError(exc.detail) from exc
            self.services_dir = Path(services_dir).absolute()

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
        """Run `argv` (no shell) in `cwd`, a path inside the sandbox's view under /workspace, with only
        PATH, HOME, LANG, USER and `env` in its environment. Kills the command and everything it started
        after `timeout` seconds, or soon after `cancel()` returns True (polled about every 0.2 s).
        With `network=True` (refused unless the sandbox has `egress_hosts`) the command may reach those
        hosts, and only those, through the proxy named by HTTP_PROXY and HTTPS_PROXY."""
        raise NotImplementedError

    def close(self) -> None:
        """End whatever the sandbox keeps between commands (bwrap: the build's long-lived sandboxes, see
        session.py). `run` still works afterwards. Never raises."""

    def make_proxy(self, owner: tuple[int, int] | None = None) -> EgressProxy:
        """The (not yet started) egress proxy for one command with network, whose socket `owner` may
        use. Tests override it to point made-up host names at a local server."""
        return EgressProxy(self.egress_hosts, owner=owner, private_networks=self.egress_networks)

    # --- shared checks ------------------------------------------------------------------------------
    def _check_network(self, network: bool) -> bool:
        if network and not self.egress_hosts:
            raise SandboxError(
                "A command asked for network access, but this sandbox allows no hosts, so commands run "
                "without network. An admin can allow the hosts a target's setup commands need "
                "(for example pypi.org); other commands never have network."
            )
        return network

    def _check_argv(self, argv: Sequence[str]) -> list[str]:
        if isinstance(argv, str) or not argv:
            raise ValueError("argv must be a non-empty list of strings, e.g. ['bash', '-c', 'make'].")
        argv = [str(a) for a in argv]
        if any("\0" in a for a in argv):
            raise ValueError("argv must not contain NUL characters.")
        return argv

    def _inside_cwd(self, cwd: str) -> PurePosixPath:
        """`cwd` as an absolute path under /workspace (relative paths are taken from /workspace)."""
        path = INSIDE_WORKSPACE / cwd
        if ".." in path.parts or not (path == INSIDE_WORKSPACE or INSIDE_WORKSPACE in path.parents):
            raise ValueError(f"cwd must be inside /workspace, not {cwd!r}.")
        host = self.workspace.joinpath(*path.relative_to(INSIDE_WORKSPACE).parts)
        if not host.is_dir():
            raise ValueError(f"cwd {path} is not a directory in the workspace.")
        return path

    def _prepare_services(self, owner: tuple[int, int] | None) -> None:
        """Make the build's services data folder for the user commands run as (once `owner` is known)."""
        if self.services_dir is not None:
            prepare_data(self.services_dir, owner)

    def _toolchain_bin(self, toolchain: Toolchain) -> str:
        """A toolchain's bin folder as commands see it."""
        return toolchain.bin

    def _command_env(self, env: Mapping[str, str] | None, *, home: str) -> dict[str, str]:
        """The command's whole environment: nothing is inherited from the worker (which holds secrets).
        Toolchains come first on PATH, in the recipe's order; the services' addresses can be overridden
        by `env`."""
        path = [*(self._toolchain_bin(t) for t in self.toolchains), *path_entries(self.servers), BASE_PATH]
        result = {"PATH": ":".join(path), "HOME": home, "LANG": "C.UTF-8", "USER": "sandbox"}
        result |= environment(self.servers)
        for key, value in (env or {}).items():
            if not key or "=" in key or "\0" in key or "\0" in str(value):
                raise ValueError(f"Invalid environment variable name or value: {key!r}.")
            result[key] = str(value)
        return result


def is_root() -> bool:
    return os.geteuid() == 0


def give_tree(root: Path, uid: int, gid: int) -> None:
    """Give `root` and everything under it, except a top-level `.git`, to uid:gid. Never follows
    symlinks (works on directory fds, so a swapped-in link cannot redirect it), and skips files with
    several hard links, which might be a file outside the tree. Only entries owned by someone else are
    changed, so a workspace prepared as that user costs one stat per file."""
    _give(root, uid, gid)
    for dirpath, dirnames, filenames, dirfd in os.fwalk(root, follow_symlinks=False):
        if Path(dirpath) == root and ".git" in dirnames:
            dirnames.remove(".git")
        for name in dirnames + filenames:
            _give(name, uid, gid, dir_fd=dirfd)


def _give(path: Path | str, uid: int, gid: int, dir_fd: int | None = None) -> None:
    st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    if (st.st_uid, st.st_gid) == (uid, gid) or (stat.S_ISREG(st.st_mode) and st.st_nlink > 1):
        return
    os.chown(path, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
