"""A seccomp filter for sandboxed commands: a small classic-BPF program assembled here, given to bwrap
with `--seccomp FD`.

It is a blocklist in the spirit of Flatpak's: the system calls a build never needs and an attacker
wants — tracing other processes (ptrace once hung a whole run), mounting, entering or making
namespaces, the kernel keyring, perf and eBPF, userfaultfd and io_uring (favourite exploit building
blocks), module and kexec loading, and the TIOCSTI/TIOCLINUX ioctls that push keystrokes into a
terminal. Blocked calls fail with EPERM, which programs handle like any refusal.

Only x86_64 has a table so far; on other machines `build_filter()` returns None and the sandbox runs
without this extra layer (namespaces, rlimits and the dropped uid still apply).

Two x86_64 traps are closed: system calls made under another ABI (32-bit `int 0x80`) carry a different
architecture number and numbering, so the process is killed; and x32 calls are the x86_64 numbers with
bit 30 set, so every number at or above that bit is refused.
"""

from __future__ import annotations

import errno
import platform
import struct

# classic BPF opcodes
_LD_W_ABS = 0x20  # A = 32-bit word at offset k of struct seccomp_data
_JEQ_K = 0x15  # if A == k goto jt else jf
_JGE_K = 0x35  # if A >= k goto jt else jf
_RET_K = 0x06

_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000

# struct seccomp_data { int nr; u32 arch; u64 instruction_pointer; u64 args[6]; }
_NR = 0
_ARCH = 4
_ARG1_LOW = 16 + 8  # low 32 bits of args[1] on little-endian; the kernel reads ioctl's cmd as 32 bits

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000

BLOCKED_X86_64 = {
    "ptrace": 101,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "mount": 165,
    "umount2": 166,
    "pivot_root": 155,
    "chroot": 161,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
    "unshare": 272,
    "setns": 308,
    "keyctl": 250,
    "add_key": 248,
    "request_key": 249,
    "perf_event_open": 298,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_by_handle_at": 304,
    "kexec_load": 246,
    "kexec_file_load": 320,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "syslog": 103,
    "acct": 163,
    "quotactl": 179,
    "uselib": 134,
}
IOCTL_X86_64 = 16
BLOCKED_IOCTLS = {"TIOCSTI": 0x5412, "TIOCLINUX": 0x541C}


def build_filter() -> bytes | None:
    """The compiled filter (an array of struct sock_filter), or None when this machine has no table."""
    if platform.machine() != "x86_64":
        return None
    program: list[tuple[int, str | int, str | int, int]] = [
        (_LD_W_ABS, 0, 0, _ARCH),
        (_JEQ_K, 0, "kill", _AUDIT_ARCH_X86_64),
        (_LD_W_ABS, 0, 0, _NR),
        (_JGE_K, "deny", 0, _X32_SYSCALL_BIT),
        *((_JEQ_K, "deny", 0, nr) for nr in BLOCKED_X86_64.values()),
        (_JEQ_K, 0, "allow", IOCTL_X86_64),
        (_LD_W_ABS, 0, 0, _ARG1_LOW),
        *((_JEQ_K, "deny", 0, cmd) for cmd in BLOCKED_IOCTLS.values()),
    ]
    labels = {"allow": len(program), "deny": len(program) + 1, "kill": len(program) + 2}
    program += [
        (_RET_K, 0, 0, _RET_ALLOW),
        (_RET_K, 0, 0, _RET_ERRNO | errno.EPERM),
        (_RET_K, 0, 0, _RET_KILL_PROCESS),
    ]

    def offset(target: str | int, index: int) -> int:
        if isinstance(target, int):
            return target
        jump = labels[target] - index - 1
        assert 0 <= jump <= 255, "BPF jumps are one byte: the program grew too long"
        return jump

    return b"".join(
        struct.pack("=HBBI", code, offset(jt, i), offset(jf, i), k) for i, (code, jt, jf, k) in enumerate(program)
    )
