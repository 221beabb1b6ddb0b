"""The seccomp filter of sandboxed commands, built by libseccomp and given to bwrap with `--seccomp FD`.

It is a blocklist in the spirit of Flatpak's: the system calls a build never needs and an attacker
wants — tracing other processes (ptrace once hung a whole run), mounting, entering or making
namespaces, the kernel keyring, perf and eBPF, userfaultfd and io_uring (favourite exploit building
blocks), module and kexec loading, and the TIOCSTI/TIOCLINUX ioctls that push keystrokes into a
terminal. Blocked calls fail with EPERM, which programs handle like any refusal; everything else is
allowed.

Why libseccomp: system call numbers differ between architectures, and so do the traps (x86_64 also
accepts 32-bit `int 0x80` calls and x32 calls, with other numbers). libseccomp, the library behind
systemd's, Docker's and Flatpak's filters, knows every architecture's table and those traps. We
reach it through its official Python binding from Debian (`python3-seccomp`), which belongs to the
system's own Python, not to the worker's virtualenv (a pyenv build, possibly another version). So the
filter is made by `/usr/bin/python3` in a subprocess, once per worker process and architecture, and
kept in memory: a few tens of milliseconds, before the first command runs.

The filter names one architecture, the machine's own (or the one asked for). A system call made under
any other ABI — a 32-bit call on x86_64 or arm64, an x32 call on x86_64 — kills the process: those
calls come with other numbers, which the blocklist does not cover.

When the filter cannot be built (no /usr/bin/python3, no python3-seccomp, an architecture libseccomp
does not know, a name it cannot resolve) `build_filter()` raises SandboxError, and the bwrap sandbox
refuses to start: untrusted commands never run without the filter.
"""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import Iterable

from agents.sandbox.base import SandboxError

# Debian's Python, whose `seccomp` module (package python3-seccomp) is libseccomp's own binding.
SYSTEM_PYTHON = "/usr/bin/python3"
INSTALL_HINT = "apt-get install python3 python3-seccomp (`make setup` does it when run as root)"

BLOCKED_SYSCALLS = (
    # other processes' memory
    "ptrace", "process_vm_readv", "process_vm_writev",
    # mounts and the root directory
    "mount", "umount2", "pivot_root", "chroot",
    "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    # namespaces
    "unshare", "setns",
    # the kernel keyring
    "keyctl", "add_key", "request_key",
    # exploit building blocks
    "perf_event_open", "bpf", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "open_by_handle_at",
    # the kernel itself, swap, the machine
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "swapon", "swapoff", "reboot", "syslog", "acct", "quotactl", "uselib",
)  # fmt: skip
# ioctl requests refused whatever the file descriptor: they type into, or take over, a terminal.
BLOCKED_IOCTLS = {"TIOCSTI": 0x5412, "TIOCLINUX": 0x541C}

# Run by SYSTEM_PYTHON with -I (no PYTHON* variables, no user site) from / (the directory a Python
# older than 3.11 still puts first on sys.path for -c), so nothing of the worker's own, this module
# included, can shadow the `seccomp` module. Reads what to block as JSON on stdin,
# writes the BPF program (an array of struct sock_filter) on stdout. Exit 3: no binding; 4: a name
# or architecture libseccomp does not know.
_EXPORT_PROGRAM = r"""
import errno, json, sys
try:
    import seccomp
except ImportError as exc:
    print(exc, file=sys.stderr)
    sys.exit(3)
spec = json.load(sys.stdin)
native = seccomp.system_arch()
arch = seccomp.Arch.NATIVE
if spec["arch"]:
    try:
        arch = seccomp.Arch(spec["arch"])
    except ValueError:
        print("libseccomp does not know the architecture %r" % spec["arch"], file=sys.stderr)
        sys.exit(4)
deny = seccomp.ERRNO(errno.EPERM)
f = seccomp.SyscallFilter(seccomp.ALLOW)
# A call under any ABI the filter does not name is killed (default: only the thread).
f.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
if int(arch) & 0xFFFFFFFF not in (0, native):
    f.remove_arch(seccomp.Arch.NATIVE)  # first: one filter cannot mix byte orders
    f.add_arch(arch)
for name in spec["syscalls"]:
    nr = seccomp.resolve_syscall(int(arch), name)
    if nr == -1:  # not a name libseccomp knows on any architecture: a typo must not weaken the filter
        print("libseccomp does not know the system call %r" % name, file=sys.stderr)
        sys.exit(4)
    if nr >= 0:  # below -1: libseccomp knows it, but this architecture has no such call
        f.add_rule(deny, name)
# The kernel reads ioctl's request as 32 bits: compare only those, or TIOCSTI with any of the upper 32
# bits set would pass the filter and still reach the terminal (Flatpak's CVE-2019-10063).
for request in spec["ioctls"]:
    f.add_rule(deny, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, request))
sys.stdout.flush()
f.export_bpf(sys.stdout)
"""


@functools.cache
def build_filter(arch: str | None = None) -> bytes:
    """The filter for `arch` (a libseccomp name: "x86_64", "aarch64", ...; None for this machine's).

    Raises SandboxError when it cannot be built; a failure is not remembered, so installing the
    missing package is enough for the next sandbox to get its filter."""
    return compile_filter(arch, BLOCKED_SYSCALLS, BLOCKED_IOCTLS.values())


def compile_filter(arch: str | None, syscalls: Iterable[str], ioctls: Iterable[int]) -> bytes:
    """A filter that refuses `syscalls` and the ioctl requests `ioctls` with EPERM, allows the rest."""
    spec = json.dumps({"arch": arch, "syscalls": list(syscalls), "ioctls": list(ioctls)})
    try:
        made = subprocess.run(
            [SYSTEM_PYTHON, "-I", "-c", _EXPORT_PROGRAM],
            input=spec.encode(), capture_output=True, timeout=60, cwd="/",
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )  # fmt: skip
    except FileNotFoundError:
        raise SandboxError(
            f"The sandbox's seccomp filter is made by libseccomp through {SYSTEM_PYTHON}, which is missing, "
            f"and commands never run without the filter: {INSTALL_HINT}."
        ) from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxError(f"The sandbox's seccomp filter could not be made ({exc}).") from exc
    said = made.stderr.decode(errors="replace").strip()
    if made.returncode == 3:
        raise SandboxError(
            "The sandbox's seccomp filter is made by libseccomp, whose Python binding is not installed, and "
            f"commands never run without the filter: {INSTALL_HINT}. ({SYSTEM_PYTHON} said: {said})"
        )
    if made.returncode != 0:
        raise SandboxError(f"The sandbox's seccomp filter could not be made: {said or made.returncode}")
    program = made.stdout
    if not program or len(program) % 8:  # struct sock_filter is 8 bytes
        raise SandboxError(f"libseccomp gave a seccomp filter of {len(program)} bytes, not a BPF program.")
    return program
