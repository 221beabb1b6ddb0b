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

Secrets: bwrap's own argv is readable inside the sandbox (/proc/1/cmdline) and on the host (ps), so
every bwrap option — the environment included — is passed through a memfd with `--args FD`; argv
shows only `bwrap --args N -- COMMAND`. Generated /etc files and the seccomp program go in memfds too,
so nothing is left on disk.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from agents.egress import INSIDE_DIR, PROXY_ENV, forwarder_argv
from agents.sandbox import cgroup
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
from agents.sandbox.process import end_pid_namespace, prlimit_argv, run_process
from agents.sandbox.seccomp import build_filter

__all__ = ["BwrapSandbox", "give_tree"]

INSIDE_UID = 1000
ETC_FROM_HOST = (
    "/etc/ld.so.cache",
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/os-release",
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
    ) -> None:
        super().__init__(
            workspace, limits=limits, ro_binds=ro_binds, debug=debug, egress_hosts=egress_hosts,
            egress_networks=egress_networks, owned=owned,
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
        self.owner = (self.host_uid, self.host_gid) if is_root() else None
        if self.owner and not self._setpriv:
            raise SandboxError("setpriv is missing, so the sandbox cannot drop root: apt-get install util-linux.")
        if self.owner and not self.owned:
            give_tree(self.workspace, *self.owner)
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
        command_env = self._command_env(env, home=INSIDE_HOME)
        args = [*self._mount_args(), "--chdir", str(self._inside_cwd(cwd))]
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
            args.append("--clearenv")
            for key, value in command_env.items():
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
            if group:  # root joins the cgroup first, then becomes the sandbox's user (setpriv)
                launcher, user = group.join_argv(launcher, user=self.owner, setpriv=self._setpriv), None
            result = run_process(
                launcher,
                env=LAUNCHER_ENV,
                timeout=timeout,
                output_bytes=self.limits.output_bytes,
                cancel=cancel,
                pass_fds=[fd for fd in fds if fd != info],
                user=user[0] if user else None,
                group=user[1] if user else None,
            )
            _end_namespace(info)
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

    def _mount_args(self) -> list[str]:
        """The sandbox's view of the filesystem, up to (not including) the final read-only remount."""
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
            "--bind", str(self.workspace), "/workspace",
        ]  # fmt: skip
        git = self.workspace / ".git"
        if git.exists() and not git.is_symlink():  # a symlink would be followed on the host
            args += ["--ro-bind", str(git), "/workspace/.git"]
        for path in self.ro_binds:
            args += ["--ro-bind", str(path), str(path)]
        return args

    def _check_it_starts(self) -> None:
        result = self.run(["true"], timeout=30)
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
