"""What every sandbox backend shares: its limits, its result, its error, and its interface.

Every command the agent or a recipe runs is untrusted. A backend runs one command at a time in
`workspace` (seen as /workspace by the command) and returns a `CommandResult`; it never raises because
of what the command did, only when the sandbox itself cannot work (`SandboxError`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

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
    memory_bytes: int = 2 * GiB  # address space per process (RLIMIT_AS)
    pids: int = 256  # processes and threads (RLIMIT_NPROC, counted per host uid)
    cpu_seconds: int = 600  # CPU time per process (RLIMIT_CPU)
    file_size_bytes: int = 512 * MiB  # largest file a command may write (RLIMIT_FSIZE)
    open_files: int = 1024  # RLIMIT_NOFILE
    tmp_bytes: int = 256 * MiB  # size of the /tmp tmpfs (and of /dev/shm)
    home_bytes: int = 64 * MiB  # size of the HOME tmpfs
    output_bytes: int = 1 * MiB  # output kept in CommandResult.output (head and tail)


DEFAULT_LIMITS = SandboxLimits()


@dataclass(frozen=True)
class CommandResult:
    """What one command did.

    `exit_code` follows the shell's convention: the command's own code, or 128+N when it died of
    signal N. A command we killed (timeout, cancel, output limit) therefore reports 137 (SIGKILL), and
    one stopped by its CPU limit 152 (SIGXCPU). `killed_reason` says why we killed it: None, "timeout",
    "cancelled" or "output_limit" (it printed more than 50 times `SandboxLimits.output_bytes`).
    `output` is stdout and stderr interleaved; over `output_bytes` it keeps the head and the tail around
    a "[… N bytes cut …]" line and `truncated` is True.
    """

    exit_code: int
    output: str
    truncated: bool
    duration: float
    killed_reason: str | None = None


class Sandbox:
    """The interface of every backend (see bwrap.py and none.py): same constructor, same `run`."""

    name: str = ""

    def __init__(
        self,
        workspace: Path,
        *,
        limits: SandboxLimits = DEFAULT_LIMITS,
        ro_binds: Sequence[Path] = (),
        debug: bool = False,
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
        after `timeout` seconds, or soon after `cancel()` returns True (polled about every 0.2 s)."""
        raise NotImplementedError

    # --- shared checks ------------------------------------------------------------------------------
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

    def _command_env(self, env: Mapping[str, str] | None, *, home: str) -> dict[str, str]:
        """The command's whole environment: nothing is inherited from the worker (which holds secrets)."""
        result = {"PATH": BASE_PATH, "HOME": home, "LANG": "C.UTF-8", "USER": "sandbox"}
        for key, value in (env or {}).items():
            if not key or "=" in key or "\0" in key or "\0" in str(value):
                raise ValueError(f"Invalid environment variable name or value: {key!r}.")
            result[key] = str(value)
        return result


def is_root() -> bool:
    return os.geteuid() == 0
