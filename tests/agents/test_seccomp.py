"""The sandbox's seccomp filter: made by libseccomp for the machine's architecture (and others'),
checked two ways.

- The BPF program itself, run here by a small classic-BPF interpreter on made-up system calls, for
  x86_64 and aarch64 whatever this machine is: system call numbers differ between the two, and the
  old hand-written filter had none for aarch64.
- The filter inside the real bubblewrap sandbox on this machine: each listed call fails with EPERM,
  and for the calls an unprivileged process may normally make, the same probe under an allow-all
  filter shows that the refusal is the filter's doing.

Without libseccomp, or on an architecture it does not know, the sandbox refuses to start.
"""

from __future__ import annotations

import errno
import json
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from agents.sandbox import SandboxError, seccomp
from agents.sandbox.bwrap import BwrapSandbox

RET_ALLOW = 0x7FFF0000
RET_EPERM = 0x00050000 | errno.EPERM
RET_KILL_PROCESS = 0x80000000

# The kernel's own numbers (arch/x86/entry/syscalls/syscall_64.tbl; include/uapi/asm-generic/unistd.h
# for aarch64), written down here rather than asked of libseccomp, so the filter is checked against
# something it did not produce. AUDIT_ARCH_* from include/uapi/linux/audit.h.
ARCHES = {
    "x86_64": {
        "token": 0xC000003E,
        "blocked": {"ptrace": 101, "process_vm_readv": 310, "mount": 165, "unshare": 272, "setns": 308,
                    "keyctl": 250, "bpf": 321, "perf_event_open": 298, "io_uring_setup": 425,
                    "init_module": 175, "fsopen": 430, "mount_setattr": 442},
        "allowed": {"read": 0, "write": 1, "getpid": 39, "clone": 56, "execve": 59, "openat": 257},
        "ioctl": 16,
        "foreign": (0x40000003, 0xC00000B7),  # i386 (int 0x80), aarch64
    },
    "aarch64": {
        "token": 0xC00000B7,
        "blocked": {"ptrace": 117, "process_vm_readv": 270, "mount": 40, "unshare": 97, "setns": 268,
                    "keyctl": 219, "bpf": 280, "perf_event_open": 241, "io_uring_setup": 425,
                    "init_module": 105, "fsopen": 430, "mount_setattr": 442},
        "allowed": {"read": 63, "write": 64, "getpid": 172, "clone": 220, "execve": 221, "openat": 56},
        "ioctl": 29,
        "foreign": (0x40000028, 0xC000003E),  # 32-bit arm (compat), x86_64
    },
}  # fmt: skip
TIOCSTI, TCGETS = 0x5412, 0x5401


def run_bpf(program: bytes, *, arch: int, nr: int, args: tuple[int, ...] = ()) -> int:
    """What `program` answers for one system call: a classic-BPF interpreter for the instructions a
    seccomp filter uses, on a little-endian struct seccomp_data. Unknown instructions fail the test."""
    args = (*args, 0, 0, 0, 0, 0, 0)[:6]
    data = struct.pack("<iIQ6Q", nr, arch, 0, *args)
    code = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    acc = pc = 0
    while True:
        op, jt, jf, k = code[pc]
        pc += 1
        if op == 0x20:  # ld [k]
            acc = struct.unpack_from("<I", data, k)[0]
        elif op == 0x54:  # and #k
            acc &= k
        elif op == 0x06:  # ret #k
            return k
        elif op == 0x05:  # ja
            pc += k
        elif op in (0x15, 0x25, 0x35, 0x45):  # jeq, jgt, jge, jset #k
            taken = {0x15: acc == k, 0x25: acc > k, 0x35: acc >= k, 0x45: bool(acc & k)}[op]
            pc += jt if taken else jf
        else:
            raise AssertionError(f"instruction {op:#x} at {pc - 1} is not one a seccomp filter should need")


def numbers_from_libseccomp(arch: str, names) -> dict[str, int]:
    """Every listed name's number on `arch`, as libseccomp resolves it (negative: no such call there)."""
    program = (
        "import json, sys, seccomp; a = int(seccomp.Arch(sys.argv[1]));"
        "print(json.dumps({n: seccomp.resolve_syscall(a, n) for n in sys.argv[2:]}))"
    )
    out = subprocess.run([seccomp.SYSTEM_PYTHON, "-I", "-c", program, arch, *names], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def workspace():
    path = Path(tempfile.mkdtemp(prefix="seccomp-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fresh_filters():
    """build_filter() remembers its filters per process: forget them around a test that changes how they
    are made."""
    seccomp.build_filter.cache_clear()
    yield
    seccomp.build_filter.cache_clear()


# --- the program libseccomp makes --------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHES)
def test_the_filter_refuses_the_listed_calls_and_allows_the_rest_on_x86_64_and_aarch64(arch):
    table = ARCHES[arch]
    program = seccomp.build_filter(arch)

    def answer(nr, args=(), token=table["token"]):
        return run_bpf(program, arch=token, nr=nr, args=args)

    assert {name: answer(nr) for name, nr in table["blocked"].items()} == dict.fromkeys(table["blocked"], RET_EPERM)
    assert {name: answer(nr) for name, nr in table["allowed"].items()} == dict.fromkeys(table["allowed"], RET_ALLOW)
    # ioctl: the terminal-injecting requests are refused, also with junk in the upper 32 bits (the kernel
    # ignores them, so a 64-bit comparison would let TIOCSTI through); other requests pass.
    assert answer(table["ioctl"], (0, TIOCSTI)) == RET_EPERM
    assert answer(table["ioctl"], (0, TIOCSTI | 1 << 32)) == RET_EPERM
    assert answer(table["ioctl"], (0, 0x541C)) == RET_EPERM  # TIOCLINUX
    assert answer(table["ioctl"], (0, TCGETS)) == RET_ALLOW
    # any other ABI kills the process: its numbers are not the ones the blocklist names
    for token in table["foreign"]:
        assert answer(table["blocked"]["ptrace"], token=token) == RET_KILL_PROCESS
        assert answer(table["allowed"]["getpid"], token=token) == RET_KILL_PROCESS


def test_on_x86_64_x32_calls_are_killed_too():
    program = seccomp.build_filter("x86_64")

    assert run_bpf(program, arch=0xC000003E, nr=0x40000000 | 39) == RET_KILL_PROCESS  # x32 getpid
    assert run_bpf(program, arch=0xC000003E, nr=0x40000000 | 101) == RET_KILL_PROCESS  # x32 ptrace


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_every_name_on_the_list_is_refused_where_the_architecture_has_it(arch):
    numbers = numbers_from_libseccomp(arch, seccomp.BLOCKED_SYSCALLS)
    program = seccomp.build_filter(arch)
    token = ARCHES[arch]["token"]

    present = {name: nr for name, nr in numbers.items() if nr >= 0}
    answers = {name: run_bpf(program, arch=token, nr=nr) for name, nr in present.items()}

    assert answers == dict.fromkeys(present, RET_EPERM)
    assert set(numbers) - set(present) <= {"uselib"}, numbers  # aarch64 never had uselib


def test_the_filter_is_the_one_for_this_machine_by_default():
    machine = subprocess.run(
        [seccomp.SYSTEM_PYTHON, "-I", "-c", "import seccomp; print(seccomp.system_arch())"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    token = int(machine.stdout)
    program = seccomp.build_filter()

    assert struct.unpack_from("=HBBI", program, 0) == (0x20, 0, 0, 4)  # it starts by loading the ABI
    assert run_bpf(program, arch=token, nr=0xFFFF) == RET_ALLOW  # its own calls get through
    assert run_bpf(program, arch=token ^ 0x1, nr=0xFFFF) == RET_KILL_PROCESS


# --- without a filter, nothing runs ------------------------------------------------------------------
def test_without_the_libseccomp_binding_the_sandbox_refuses_to_start(workspace, monkeypatch, fresh_filters):
    # The virtualenv's interpreter has no `seccomp` module (-I keeps Debian's dist-packages away).
    monkeypatch.setattr(seccomp, "SYSTEM_PYTHON", sys.executable)

    with pytest.raises(SandboxError, match="python3-seccomp") as refused:
        BwrapSandbox(workspace)

    assert "never run without the filter" in str(refused.value)


def test_without_debians_python_the_sandbox_refuses_to_start(workspace, monkeypatch, fresh_filters):
    monkeypatch.setattr(seccomp, "SYSTEM_PYTHON", str(workspace / "no-python3"))

    with pytest.raises(SandboxError, match="missing.*apt-get install python3 python3-seccomp"):
        BwrapSandbox(workspace)


def test_an_architecture_libseccomp_does_not_know_gets_no_filter_and_no_sandbox(workspace, monkeypatch):
    with pytest.raises(SandboxError, match="does not know the architecture 'vax'"):
        seccomp.build_filter("vax")

    # As on a machine libseccomp cannot name: the sandbox asks for this machine's filter and gets none.
    monkeypatch.setattr("agents.sandbox.bwrap.build_filter", lambda: seccomp.build_filter("vax"))
    with pytest.raises(SandboxError, match="does not know the architecture"):
        BwrapSandbox(workspace)


def test_a_name_libseccomp_does_not_know_fails_loudly_rather_than_weakening_the_filter():
    with pytest.raises(SandboxError, match="does not know the system call 'ptarce'"):
        seccomp.compile_filter(None, ["ptarce"], [])


def test_a_failure_is_not_remembered(workspace, monkeypatch, fresh_filters):
    monkeypatch.setattr(seccomp, "SYSTEM_PYTHON", sys.executable)
    with pytest.raises(SandboxError):
        seccomp.build_filter()
    monkeypatch.undo()

    assert seccomp.build_filter()  # once the binding is there, the next sandbox gets its filter


# --- in the real sandbox -----------------------------------------------------------------------------
PROBE = r"""
import ctypes, errno, json, os, seccomp
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
nr = lambda name: seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
args = {  # harmless arguments: with no capabilities and null pointers, none of these changes anything
    "ptrace": (0,),  # PTRACE_TRACEME
    "process_vm_readv": (os.getpid(), 0, 0, 0, 0, 0),
    "unshare": (0,),
    "setns": (-1, 0),
    "keyctl": (0, -3, 0),  # KEYCTL_GET_KEYRING_ID of the session keyring
}
def call(number, *a):
    ok = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(x) for x in a]) >= 0
    return "ok" if ok else errno.errorcode[ctypes.get_errno()]
answers = {}
for name in json.loads(os.environ["NAMES"]):
    if nr(name) >= 0:
        answers[name] = call(nr(name), *args.get(name, (0, 0, 0, 0, 0, 0)))
for label, request in (("TIOCSTI", 0x5412), ("TIOCSTI+junk", 0x5412 | 1 << 32), ("TIOCLINUX", 0x541C)):
    answers["ioctl " + label] = call(nr("ioctl"), 0, request, 0)
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
answers["filters"] = status.get("Seccomp_filters", "?").strip()
print(json.dumps(answers))
"""


def probe(sandbox) -> dict[str, str]:
    result = sandbox.run(["python3", "-c", PROBE], env={"NAMES": json.dumps(seccomp.BLOCKED_SYSCALLS)}, timeout=30)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_each_listed_call_fails_with_eperm_inside_the_sandbox_and_it_is_the_filters_doing(workspace):
    sandbox = BwrapSandbox(workspace)
    filtered = probe(sandbox)
    # The same sandbox with a filter that allows everything (a test-only swap; the sandbox itself has no
    # way to run without its filter), to see which refusals come from the filter and not the kernel.
    sandbox._seccomp = seccomp.compile_filter(None, (), ())
    sandbox.close()  # the build's long-lived sandbox (session.py) was made with the real filter: a new one
    unfiltered = probe(sandbox)

    assert int(filtered.pop("filters")) >= 1 and int(unfiltered.pop("filters")) >= 1
    assert filtered == dict.fromkeys(filtered, "EPERM"), filtered
    assert len(filtered) >= len(seccomp.BLOCKED_SYSCALLS) - 1 + 3  # uselib may not exist here
    by_the_filter = {name for name, answer in unfiltered.items() if answer != "EPERM"}
    core = {"ptrace", "process_vm_readv", "unshare", "setns", "keyctl", "ioctl TIOCSTI", "ioctl TIOCSTI+junk"}
    assert core <= by_the_filter, f"refused without the filter too: {sorted(core - by_the_filter)}; {unfiltered}"


def test_a_call_under_another_abi_kills_the_command_inside_the_sandbox(workspace):
    sandbox = BwrapSandbox(workspace)
    machine = sandbox.run(["uname", "-m"], timeout=20).output.strip()
    if machine != "x86_64":
        pytest.skip("x32 calls exist on x86_64 only")
    script = "import ctypes; print('before', flush=True); ctypes.CDLL(None).syscall(0x40000000 | 39); print('after')"

    result = sandbox.run(["python3", "-c", script], timeout=20)

    assert "before" in result.output and "after" not in result.output
    assert result.exit_code == 128 + 31, result  # SIGSYS
