"""The default sandbox: bubblewrap (bwrap), unprivileged Linux namespaces.

What a command sees (see reference/sandbox.md for why each piece is there):

- /workspace: the workspace, read-write (its `.git`, if any, read-only); the starting cwd.
- /usr and the /bin, /sbin, /lib, /lib64 links, read-only; `ro_binds` read-only at the same paths.
- a minimal /etc: a synthetic passwd/group with one `sandbox` user (uid 1000), hosts and nsswitch.conf,
  and from the host only ld.so.cache, alternatives, ssl and ca-certificates, localtime/timezone and
  os-release. /etc/shadow, /root, /home, /var, /run, /sys and the host's /tmp do not exist.
- a fresh /proc (its own pid namespace), a minimal read-only /dev with a size-limited /dev/shm, and
  size-limited tmpfs at /tmp and at HOME (/home/sandbox). Everything else is read-only.
- no network: its own network namespace with only a loopback device. With `network=True` (setup
  commands of a target with allowed hosts) the namespace stays the same; the directory of an egress
  proxy's Unix socket is bound read-only at /run/egress, socat forwards 127.0.0.1:3128 to it, and
  HTTP(S)_PROXY point there (see agents/egress.py). Only the allowed host names get through.
- with `toolchains`, each one read-only at /opt/toolchains/<name>/<version>, its bin first on PATH.
- with `services`, the build's services data folder read-write at /services, and the servers started
  beside each command by a launcher inside the sandbox (agents/services.py): they listen on the
  sandbox's own loopback, so only the command reaches them, and they end with it. PostgreSQL needs
  nothing the seccomp filter refuses; its shared memory is anonymous (shared_buffers) plus small
  segments in the size-limited /dev/shm, and its processes count against the command's limits.
- its own user, ipc, uts and cgroup namespaces; no capabilities; no nested user namespaces; the
  seccomp filter of seccomp.py (built by libseccomp; without it the sandbox refuses to start).

When the worker runs as root, bwrap does not: the launcher switches to `host_uid`/`host_gid` (no
supplementary groups, no capabilities, no_new_privs) first, so the sandbox user is an ordinary host
user. The workspace is given to that user when the sandbox is made; host code that writes files into
it later should give them the workspace's owner too. Every parent directory of the workspace must be
searchable by that user.

Each command runs in a cgroup of its own (cgroup.py), joined by the root launcher before it drops
privileges: the process, memory and CPU limits count the command and everything it starts, and when it
ends the cgroup is frozen and emptied, so nothing survives. Where cgroups are not available the
sandbox falls back to rlimits and says so once in the log; processes (RLIMIT_NPROC) are then counted
per host uid, so sandboxes running at the same time share the `pids` budget.

Where the worker can make cgroups (root), `run` does not make a new sandbox per command: the build's
commands enter one long-lived sandbox made by the same code (`_start_session`), each in a cgroup of its
own, with /tmp, HOME and /dev/shm emptied before each; commands with network enter a second one, with
the egress proxy and its forwarder started once. session.py says what is the same and what differs.
A command asked for while another one runs there gets a fresh sandbox, as does every command where
cgroups cannot be made. `close()` ends the long-lived sandboxes (the engine calls it when a build ends;
otherwise they end when the object goes, or with the worker).

`start` is `run`'s long-running sibling (served apps, agents/serve.py): the same options, limits, cgroup,
seccomp filter and user, built by the same code (`_launch`), but it returns at once with a
`SandboxProcess` whose `record` lets any process on the host check (`started_alive`) or end
(`stop_started`) it later. Instead of the workspace it shows exactly the binds it is given, and it may
mount filesystem images for the command alone, in a mount namespace of the launcher's own.

Secrets: bwrap's own argv is readable inside the sandbox (/proc/1/cmdline) and on the host (ps), so
every bwrap option — the environment included — is passed through a memfd with `--args FD`; argv
shows only `bwrap --args N -- COMMAND`. Generated /etc files and the seccomp program go in memfds too,
so nothing is left on disk.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agents.egress import INSIDE_DIR, PROXY_ENV, forwarder_argv
from agents.recipe import Services
from agents.sandbox import cgroup
from agents.sandbox.base import (
    DEFAULT_LIMITS,
    INSIDE_HOME,
    Bind,
    CommandResult,
    Sandbox,
    SandboxError,
    SandboxLimits,
    give_tree,
    is_root,
    with_notes,
)
from agents.sandbox.process import _descendants, end_pid_namespace, prlimit_argv, run_process, start_time
from agents.sandbox.seccomp import SYSTEM_PYTHON, build_filter
from agents.sandbox.session import EXECUTOR, Session, SessionBroken, start_failed
from agents.services import INSIDE_SERVICES, NO_SERVICES, wrap
from agents.toolchains import Toolchain

__all__ = ["Bind", "BwrapSandbox", "LoopMount", "SandboxProcess", "give_tree", "started_alive", "stop_started"]

INSIDE_UID = 1000
ETC_FROM_HOST = (
    "/etc/ld.so.cache",
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/os-release",
    # Debian's JDK keeps its configuration here (java.security, policies: no secrets), linked from
    # /usr/lib/jvm; without it every JVM in /usr (smali, Maven, Gradle) stops at start-up.
    "/etc/java-17-openjdk",
)
ETC_FILES = {
    "/etc/passwd": (
        f"sandbox:x:{INSIDE_UID}:{INSIDE_UID}:sandbox:{INSIDE_HOME}:/bin/bash\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    ),
    "/etc/group": f"sandbox:x:{INSIDE_UID}:\nnogroup:x:65534:\n",
    "/etc/hosts": "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    "/etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files\n",
}
LAUNCHER_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
INFO_WAIT = 10.0  # seconds bwrap has to make the sandbox's namespaces (start)
log = logging.getLogger("agents.sandbox")

# Run as root in the launcher's own mount namespace: mount each image at its target, then exec the rest.
# nosuid and nodev: nothing on the image is ever setuid or a device. 125 when a mount fails.
_MOUNT_LOOPS = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do '
    'mount -o loop,nosuid,nodev,noatime -- "$1" "$2" || exit 125; shift 2; n=$((n - 1)); done; exec "$@"'
)


@dataclass(frozen=True)
class LoopMount:
    """A filesystem image (`image`, a host file the sandbox never sees) mounted at the host folder
    `target` for one started command only; a `Bind` then shows `target` inside."""

    image: Path
    target: Path


@dataclass(frozen=True)
class _Launch:
    argv: list[str]
    user: tuple[int, int] | None  # switch to this uid/gid when starting argv (no cgroup, no loops)
    group: cgroup.RunCgroup | None
    info: int  # read end of bwrap's --info-fd
    pass_fds: list[int]


class BwrapSandbox(Sandbox):
    name = "bwrap"
    executable = "bwrap"
    # The host user sandboxed commands run as when the worker is root. 65534 (nobody) by default; a
    # dedicated unused uid is better on hosts where other services run as nobody (subclass to change).
    host_uid = 65534
    host_gid = 65534

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
        super().__init__(
            workspace, limits=limits, ro_binds=ro_binds, debug=debug, egress_hosts=egress_hosts,
            egress_networks=egress_networks, owned=owned, services=services, services_dir=services_dir,
            toolchains=toolchains,
        )  # fmt: skip
        self._bwrap = shutil.which(self.executable)
        if not self._bwrap:
            raise SandboxError(
                "bubblewrap is not installed, and every command must run in its sandbox: "
                "apt-get install bubblewrap (or dnf install bubblewrap)."
            )
        self._prlimit = shutil.which("prlimit")
        if not self._prlimit:
            raise SandboxError("prlimit is missing, so command limits cannot be set: apt-get install util-linux.")
        self._seccomp = build_filter()  # raises SandboxError rather than run anything unfiltered
        self._setpriv = shutil.which("setpriv")
        self._unshare = shutil.which("unshare") or "unshare"
        self.owner = (self.host_uid, self.host_gid) if is_root() else None
        if self.owner and not self._setpriv:
            raise SandboxError("setpriv is missing, so the sandbox cannot drop root: apt-get install util-linux.")
        if self.owner and not self.owned:
            give_tree(self.workspace, *self.owner)
        self._prepare_services(self.owner)
        self._check_it_starts()
        # The build's long-lived sandboxes (session.py), one without network and one with, made on first
        # use; ended by close(), or when this object goes, or with the worker (--die-with-parent).
        self._sessions: dict[bool, Session] = {}
        self._sessions_lock = threading.Lock()
        self._use_sessions = True
        self._finalizer = weakref.finalize(self, _close_sessions, self._sessions)

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
        # One command at a time enters the build's session; a second one at the same moment (another
        # thread), or any command where sessions cannot work, gets a fresh sandbox of its own.
        if self._use_sessions and self._sessions_lock.acquire(blocking=False):
            try:
                session = self._session(network)
                if session is not None:
                    return self._run_in_session(session, argv, cwd=cwd, timeout=timeout, env=env,
                                                network=network, cancel=cancel)  # fmt: skip
            except SessionBroken as exc:
                log.info("A sandbox session could not take a command (%s); it runs in a fresh sandbox.", exc)
                self._drop_session(network)
            except BaseException:
                # cancel() raised, KeyboardInterrupt...: session.run killed the command, and the session
                # with it (its executor would still answer for that command); nothing may outlive us.
                self._drop_session(network)
                raise
            finally:
                self._sessions_lock.release()
        return self._run(argv, cwd=cwd, timeout=timeout, env=env, network=network, cancel=cancel, services=True)

    def close(self) -> None:
        """End the build's sessions (their sandboxes and everything in them); `run` still works after,
        starting new ones. Call it when the build is done with the sandbox."""
        with self._sessions_lock:
            _close_sessions(self._sessions)

    def session_processes(self) -> set[int]:
        """Host pids of the build's sessions' own processes (bwrap, its init, the executor, the network
        forwarder): what stays between commands by design. Nothing a command started is among them."""
        with self._sessions_lock:
            return {pid for session in self._sessions.values() for pid in session.own_processes()}

    def _run_in_session(
        self,
        session: Session,
        argv: Sequence[str],
        *,
        cwd: str,
        timeout: float,
        env: Mapping[str, str] | None,
        network: bool,
        cancel: Callable[[], bool] | None,
    ) -> CommandResult:
        argv = self._check_argv(argv)
        command_env = self._command_env(env, home=INSIDE_HOME)
        inside_cwd = str(self._inside_cwd(cwd))
        if self.services_dir is not None:
            argv = wrap(self.servers, argv, INSIDE_SERVICES)
        if network:
            command_env.update(PROXY_ENV)
        return session.run(argv, cwd=inside_cwd, env=command_env, timeout=timeout, cancel=cancel)

    def _session(self, network: bool) -> Session | None:
        """The build's live session for commands with or without network, started if need be; None
        where sessions cannot work here (no cgroups: see session.py), after which `run` stops trying."""
        session = self._sessions.get(network)
        if session is not None and session.alive():
            return session
        self._drop_session(network)
        try:
            session = self._start_session(network)
        except SandboxError as exc:
            # Said at info level: where cgroups are missing, cgroup.py has already warned once.
            log.info("Sandbox sessions are off for this sandbox, every command gets a fresh one: %s", exc)
            self._use_sessions = False
            return None
        if session is not None:
            self._sessions[network] = session
        else:
            self._use_sessions = False
        return session

    def _drop_session(self, network: bool) -> None:
        session = self._sessions.pop(network, None)
        if session is not None:
            session.close()

    def _start_session(self, network: bool) -> Session | None:
        """A new long-lived sandbox running session.py's executor: the same view, limits, user and filter
        as `_run` gives one command, plus the services' folder and, with `network`, the egress proxy's
        socket and its forwarder. None when there are no cgroups to end each command with: a root worker
        makes them (an unprivileged one keeps a fresh sandbox per command, whose pid namespace ends it)."""
        if self.owner is None:
            return None
        args = [*self._mount_args(), *self._workspace_args(), "--chdir", "/workspace"]
        if self.services_dir is not None:
            args += ["--bind", str(self.services_dir), INSIDE_SERVICES]
        proxy = None
        if network:
            try:
                proxy = self.make_proxy(self.owner).start()
            except OSError as exc:
                raise SandboxError(f"The sandbox's network proxy could not start: {exc}.") from exc
            args += ["--ro-bind", str(proxy.dir), INSIDE_DIR]
        control, inside = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fds: list[int] = []
        launch = process = None
        try:
            executor = [
                SYSTEM_PYTHON,
                "-I",
                "-S",
                "-c",
                EXECUTOR,
                str(inside.fileno()),
                "/tmp",
                INSIDE_HOME,
                "/dev/shm",
            ]
            env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": INSIDE_HOME}
            launch = self._launch(args, executor, env, fds)
            if launch.group is None:
                raise SandboxError("no cgroup could be made for the session")
            try:
                process = subprocess.Popen(
                    launch.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                    env=LAUNCHER_ENV, pass_fds=[*launch.pass_fds, inside.fileno()], start_new_session=True,
                )  # fmt: skip
            except OSError as exc:
                raise SandboxError(f"The sandbox could not start {launch.argv[0]}: {exc.strerror}.") from exc
            inside.close()
            for fd in fds:
                if fd != launch.info:
                    os.close(fd)
            fds = [launch.info]
            info = _read_info(launch.info, process)
            session = Session(process, launch.group, control, -1, self.limits, proxy)
            try:
                if info is None:
                    raise SessionBroken(start_failed(process) or "bwrap did not start")
                session.wait_ready()
                # The executor is the only process below bwrap's init (pid 1 inside) until it is asked for
                # something: its host pid is what the worker moves between cgroups.
                below = _descendants(info[0])
                if len(below) != 1:
                    raise SessionBroken(f"the session has {len(below)} processes instead of its executor")
                session.executor = below[0][0]
                if network:  # the forwarder, once, in the session's own cgroup
                    # Its stdout to /dev/null: socat would otherwise hold the output pipe open for good.
                    boot = ["/bin/sh", "-c", 'exec "$@" >/dev/null', "sandbox-boot", *forwarder_argv(["true"])]
                    booted = session.run(boot, cwd="/workspace", env=env, timeout=INFO_WAIT, own_cgroup=False)
                    if booted.exit_code != 0:
                        raise SessionBroken(booted.output.strip() or "the network forwarder did not start")
            except SessionBroken as exc:
                session.close()
                proxy = None  # closed with the session
                raise SandboxError(f"The sandbox session could not start: {exc}") from exc
            return session
        except BaseException:
            if process is None:
                control.close()
                if launch and launch.group:
                    launch.group.close()
            if proxy:
                proxy.stop()
            raise
        finally:
            inside.close()
            for fd in fds:
                os.close(fd)

    def _run(
        self,
        argv: Sequence[str],
        *,
        cwd: str,
        timeout: float,
        env: Mapping[str, str] | None,
        network: bool,
        cancel: Callable[[], bool] | None,
        services: bool,
    ) -> CommandResult:
        network = self._check_network(network)
        argv = self._check_argv(argv)
        command_env = self._command_env(env, home=INSIDE_HOME)
        args = [*self._mount_args(), *self._workspace_args(), "--chdir", str(self._inside_cwd(cwd))]
        if services and self.services_dir is not None:
            # The servers start inside this command's own sandbox (its network namespace has only a
            # loopback device), on the build's data folder.
            args += ["--bind", str(self.services_dir), INSIDE_SERVICES]
            argv = wrap(self.servers, argv, INSIDE_SERVICES)
        fds: list[int] = []
        proxy = group = None
        try:
            if network:
                try:
                    proxy = self.make_proxy(self.owner).start()
                except OSError as exc:
                    raise SandboxError(f"The sandbox's network proxy could not start: {exc}.") from exc
                args += ["--ro-bind", str(proxy.dir), INSIDE_DIR]
                command_env.update(PROXY_ENV)
                argv = forwarder_argv(argv)
            launch = self._launch(args, argv, command_env, fds)
            group = launch.group
            result = run_process(
                launch.argv,
                env=LAUNCHER_ENV,
                timeout=timeout,
                output_bytes=self.limits.output_bytes,
                cancel=cancel,
                pass_fds=launch.pass_fds,
                user=launch.user[0] if launch.user else None,
                group=launch.user[1] if launch.user else None,
            )
            _end_namespace(launch.info)
            if group:
                group.kill()
                result = cgroup.explain(result, group, self.limits)
            refused = proxy.refusals() if proxy else None
            return with_notes(result, [refused]) if refused else result
        finally:
            if group:
                group.close()
            if proxy:
                proxy.stop()
            for fd in fds:
                os.close(fd)

    def start(
        self,
        argv: Sequence[str],
        *,
        cwd: str,
        env: Mapping[str, str] | None = None,
        binds: Sequence[Bind] = (),
        loops: Sequence[LoopMount] = (),
        pass_fds: Sequence[int] = (),
    ) -> SandboxProcess:
        """Start `argv` (no shell) in the background and return at once: a long-running command (a served
        app), the sibling of `run`. Same sandbox, same limits, cgroup, seccomp filter and user, except
        for the files: the workspace is not mounted; the command sees exactly `binds` (in order, so a
        writable folder may be bound inside a read-only one) and starts in `cwd`, one of their paths.
        `loops` are filesystem images mounted (nosuid, nodev) for this command only, in a mount
        namespace of its launcher's own: nothing is mounted on the host, and the kernel unmounts them
        when the command's last process ends, however it ends. Root workers only. `pass_fds` are
        open files of the caller the command inherits under the same numbers (a listening socket).

        The caller reads `SandboxProcess.output` (stdout and stderr) to its end, and must `stop()` the
        command (or `stop_started(record)` from another process) when done with it."""
        argv = self._check_argv(argv)
        if loops and not self.owner:
            raise SandboxError("Filesystem images can only be mounted for a sandbox when the worker runs as root.")
        command_env = self._command_env(env, home=INSIDE_HOME)
        args = self._mount_args()
        for bind in binds:
            if not Path(bind.host).exists():
                raise SandboxError(f"The folder {bind.host} to show the sandbox at {bind.inside} does not exist.")
            args += ["--bind" if bind.writable else "--ro-bind", str(bind.host), bind.inside]
        args += ["--chdir", cwd]
        fds: list[int] = []
        launch = None
        try:
            launch = self._launch(args, argv, command_env, fds, loops)
            try:
                proc = subprocess.Popen(
                    launch.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=LAUNCHER_ENV,
                    pass_fds=[*launch.pass_fds, *pass_fds],
                    start_new_session=True,
                    user=launch.user[0] if launch.user else None,
                    group=launch.user[1] if launch.user else None,
                    extra_groups=[] if launch.user else None,
                )
            except OSError as exc:
                raise SandboxError(f"The sandbox could not start {launch.argv[0]}: {exc.strerror}.") from exc
            # Our copy of the info pipe's write end goes, so reading it ends when bwrap has written it.
            for fd in fds:
                if fd != launch.info:
                    os.close(fd)
            fds = [launch.info]
            return SandboxProcess(proc, launch.group, _read_info(launch.info, proc))
        except BaseException:
            if launch and launch.group:
                launch.group.close()
            raise
        finally:
            for fd in fds:
                os.close(fd)

    def _launch(
        self, args: list[str], argv: list[str], env: dict[str, str], fds: list[int], loops: Sequence[LoopMount] = ()
    ) -> _Launch:
        """The launcher of one command, shared by `run` and `start`: bwrap's options (the environment,
        the /etc files, the seccomp program) in memfds appended to `fds` (the caller closes them), the
        rlimits, the cgroup, and the drop from root to the sandbox's user."""
        args.append("--clearenv")
        for key, value in env.items():
            args += ["--setenv", key, value]
        for path, content in ETC_FILES.items():
            fds.append(_memfd(content.encode()))
            args += ["--perms", "0644", "--file", str(fds[-1]), path]
        args += ["--remount-ro", "/"]
        fds.append(_memfd(self._seccomp))  # always: build_filter() raised if it had none
        args += ["--seccomp", str(fds[-1])]
        args_fd = _memfd(b"".join(a.encode() + b"\0" for a in args))
        info, info_w = os.pipe()
        fds += [args_fd, info, info_w]
        group = cgroup.create(self.limits)
        launcher = [
            self._prlimit, *prlimit_argv(self.limits, group.enforced if group else frozenset())[1:],
            self._bwrap, "--args", str(args_fd), "--info-fd", str(info_w), "--", *argv,
        ]  # fmt: skip
        user = self.owner
        if loops:  # as root, in a mount namespace of its own: mount the images, then become the user
            targets = [str(part) for loop in loops for part in (loop.image, loop.target)]
            launcher = [
                self._unshare, "--mount", "--propagation", "private", "/bin/sh", "-c", _MOUNT_LOOPS,
                "sandbox-mount", str(len(loops)), *targets, *cgroup.drop_argv(user, self._setpriv), *launcher,
            ]  # fmt: skip
            user = None
        if group:  # root joins the cgroup first, then becomes the sandbox's user (setpriv)
            launcher, user = group.join_argv(launcher, user=user, setpriv=self._setpriv), None
        return _Launch(launcher, user, group, info, [fd for fd in fds if fd != info])

    def _workspace_args(self) -> list[str]:
        args = ["--bind", str(self.workspace), "/workspace"]
        git = self.workspace / ".git"
        if git.exists() and not git.is_symlink():  # a symlink would be followed on the host
            args += ["--ro-bind", str(git), "/workspace/.git"]
        return args

    def _mount_args(self) -> list[str]:
        """The sandbox's view of the system (everything but the workspace), up to (not including) the
        final read-only remount."""
        args = [
            "--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL",
            "--uid", str(INSIDE_UID), "--gid", str(INSIDE_UID), "--hostname", "sandbox",
            "--die-with-parent", "--new-session",
            "--ro-bind", "/usr", "/usr",
            "--perms", "0755", "--dir", "/etc",
        ]  # fmt: skip
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            host = Path("/", name)
            if host.is_symlink():
                args += ["--symlink", os.readlink(host), str(host)]
            elif host.is_dir():
                args += ["--ro-bind", str(host), str(host)]
        for path in ETC_FROM_HOST:
            args += ["--ro-bind-try", path, path]
        limits = self.limits
        args += [
            "--proc", "/proc",
            "--dev", "/dev", "--remount-ro", "/dev",  # or /dev, an unlimited tmpfs, takes any file
            "--size", str(limits.tmp_bytes), "--tmpfs", "/dev/shm",
            "--perms", "1777", "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp",
            "--size", str(limits.home_bytes), "--tmpfs", INSIDE_HOME,
        ]  # fmt: skip
        for path in self.ro_binds:
            args += ["--ro-bind", str(path), str(path)]
        for toolchain in self.toolchains:
            args += ["--ro-bind", str(toolchain.host), toolchain.inside]
        return args

    def _check_it_starts(self) -> None:
        # Without the services: this checks the sandbox alone, in a moment; a server that cannot start
        # says so in the first command's output.
        result = self._run(["true"], cwd="/workspace", timeout=30, env=None, network=False, cancel=None, services=False)
        if result.exit_code != 0 or result.output.strip():
            raise SandboxError(self._explain(result.output.strip()))

    def _explain(self, message: str) -> str:
        """bwrap's own complaint (nothing untrusted has run yet) in plain words, with what to do."""
        if "namespace" in message or "uid map" in message or "Operation not permitted" in message:
            return (
                "The sandbox could not start because this kernel does not let ordinary users create user "
                "namespaces, which bubblewrap needs. Allow them: `sysctl -w user.max_user_namespaces=15000`, "
                "on Debian kernels also `sysctl -w kernel.unprivileged_userns_clone=1`, on Ubuntu 24.04+ "
                "`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` (or an AppArmor profile for "
                f"bwrap). In containers, run with a seccomp profile that allows unshare. bwrap said: {message}"
            )
        if "Permission denied" in message and self.owner:
            return (
                f"The sandbox could not start because its user (uid {self.owner[0]}) cannot reach the "
                f"workspace {self.workspace}: every parent directory must be searchable by others "
                f"(chmod o+x), or keep workspaces elsewhere. bwrap said: {message}"
            )
        return f"The sandbox could not start. bwrap said: {message or 'nothing'}"


class SandboxProcess:
    """A command started by `BwrapSandbox.start`. `output` is its stdout and stderr (a pipe the caller
    reads to its end); `record` (JSON-able) lets any process on this host check or stop it later."""

    def __init__(self, proc: subprocess.Popen, group: cgroup.RunCgroup | None, init: tuple[int, int] | None) -> None:
        self.proc = proc
        self.group = group
        self.output = proc.stdout
        # Taken before anyone reaps the launcher, so its pid cannot have been reused yet.
        self.record = {
            "pid": proc.pid,
            "start": start_time(proc.pid),
            "init": init[0] if init else None,
            "namespace": init[1] if init else None,
            "cgroup": group.record() if group else None,
        }

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        """The launcher's exit status in the shell's convention (128+N for signal N)."""
        code = self.proc.wait(timeout)
        return 128 - code if code < 0 else code

    def stop(self, grace: float = 0.0) -> None:
        """Stop everything the command started (see `stop_started`) and reap the launcher."""
        stop_started(self.record, grace)
        self.proc.wait()


def _close_sessions(sessions: dict[bool, Session]) -> None:
    while sessions:
        sessions.popitem()[1].close()


def started_alive(record: dict) -> bool:
    """True while the launcher of a started command (see `SandboxProcess.record`) still runs. Works from
    any process on this host: a pid is trusted only together with its start time."""
    pid, start = record.get("pid"), record.get("start")
    return isinstance(pid, int) and start is not None and start_time(pid) == start


def stop_started(record: dict, grace: float = 0.0) -> None:
    """End a started command and everything it started, from any process on this host. With `grace`,
    its processes first get SIGTERM and that many seconds to exit on their own (a database closing its
    files); then the sandbox's pid namespace is ended (the kernel kills all of it), the launcher is
    killed, and its cgroup emptied and removed. Safe to call again, or after the command ended."""
    init, namespace = record.get("init"), record.get("namespace")
    group = cgroup.from_record(record.get("cgroup"))
    if grace > 0 and started_alive(record):
        members = set(group.pids()) if group else set()
        if isinstance(namespace, int):
            members |= _namespace_members(namespace)
        # Not the namespace's init (bwrap), which ends when its command does, nor the launcher outside it
        # (bwrap too, in the cgroup): it dies of SIGTERM, and with it, at once, the whole sandbox
        # (--die-with-parent), before a database inside has closed its files.
        for member in members - {init, record.get("pid")}:
            _signal(member, signal.SIGTERM)
        until = time.monotonic() + grace
        while started_alive(record) and time.monotonic() < until:
            time.sleep(0.02)
    if isinstance(init, int) and isinstance(namespace, int):
        end_pid_namespace(init, namespace)
        # bwrap exits by itself once its sandbox is gone, reaping the namespace's init on the way; killed
        # first, it would leave that init a zombie for the host's pid 1 to collect.
        until = time.monotonic() + 0.5
        while started_alive(record) and time.monotonic() < until:
            time.sleep(0.005)
    if started_alive(record):
        _signal(record["pid"], signal.SIGKILL)
    if group:
        group.close()


def _namespace_members(namespace: int) -> set[int]:
    """Host pids of the processes in pid namespace `namespace` (an inode number)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/pid").st_ino == namespace:
                    found.add(int(entry))
            except OSError:
                pass
    return found


def _signal(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except (ProcessLookupError, PermissionError):
        pass


def _read_info(info: int, proc: subprocess.Popen) -> tuple[int, int] | None:
    """(host pid of the sandbox's init, its pid namespace) from bwrap's --info-fd, written once the
    namespaces exist; None when bwrap stopped before (its output says why)."""
    data = b""
    until = time.monotonic() + INFO_WAIT
    while (left := until - time.monotonic()) > 0:
        ready, _, _ = select.select([info], [], [], min(left, 0.2))
        if ready:
            chunk = os.read(info, 65536)
            if not chunk:
                break
            data += chunk
            try:
                sandbox = json.loads(data)
                return int(sandbox["child-pid"]), int(sandbox["pid-namespace"])
            except ValueError:
                continue  # not all of it yet
            except (KeyError, TypeError):
                return None
        elif proc.poll() is not None:
            break
    return None


def _end_namespace(info: int) -> None:
    """bwrap exits as soon as the command does, while its init inside the pid namespace may still be
    waiting for daemons the command left behind (--die-with-parent kills it, but asynchronously). Read
    that init's host pid from bwrap's --info-fd and end the namespace before run() returns."""
    os.set_blocking(info, False)
    try:
        sandbox = json.loads(os.read(info, 65536))
        pid, namespace = int(sandbox["child-pid"]), int(sandbox["pid-namespace"])
    except (OSError, ValueError, KeyError, TypeError):
        return  # bwrap stopped before it made the namespace
    end_pid_namespace(pid, namespace)


def _memfd(content: bytes) -> int:
    fd = os.memfd_create("sandbox")
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
