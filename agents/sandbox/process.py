"""Starting one untrusted command, reading its output and stopping it: shared by every backend.

Everything here is enforced from outside the command, by the worker:

- rlimits are set by `prlimit` between the worker and the command (not in a preexec function, which
  is unsafe in a threaded worker);
- the command starts in a new session, so it has its own process group;
- output comes through one pipe (stdout and stderr together), read incrementally; only the head and the
  tail are kept, and a command that prints more than OUTPUT_KILL_FACTOR times the cap is killed;
- the wall clock and `cancel()` are checked about every TICK seconds; stopping means SIGKILL to every
  descendant of the launched process and to its process group. For bwrap, one descendant is the init of
  the sandbox's pid namespace: when it dies the kernel kills everything left inside, daemons included,
  and `run_process` waits until that init is gone before it returns. Backends that run the command in
  a per-run cgroup (cgroup.py) also freeze and empty it afterwards.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence

from agents.sandbox.base import CommandResult, SandboxError, SandboxLimits

TICK = 0.2  # seconds between checks of the clock and of cancel()
OUTPUT_KILL_FACTOR = 50  # kill a command that printed more than this many times the output cap
READ_CHUNK = 64 * 1024
READS_PER_CHECK = 16  # keep checking the clock even when a command prints without pause
GONE_WAIT = 2.0  # seconds to wait for killed processes to disappear

# Terminal control sequences (ECMA-48), which runners print for colour even without a terminal
# (FORCE_COLOR, CI detection): shown as text they are noise ("[32m✓[39m"), and cursor moves or OSC
# strings could make a log look like something it is not. Each alternative is bounded by a character
# class the next part cannot match, so stripping stays linear in the size of the output.
_ANSI = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]"  # CSI: colours (SGR), cursor moves, erasing
    # OSC, DCS, SOS, PM, APC strings (OSC 8 hyperlinks, window titles), ended by BEL or ST; one cut
    # before its end stops at the end of the line, so a broken sequence never swallows what follows.
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d-\x9f])[^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]"  # the other escapes: character sets, saving the cursor, reset
    r"|\x1b"  # what is left of a sequence cut in half
)


def prlimit_argv(limits: SandboxLimits, in_cgroup: frozenset[str] = frozenset()) -> list[str]:
    """`prlimit` options setting the per-process limits. Soft CPU limit sends SIGXCPU, hard SIGKILL.

    `in_cgroup` names the limits a cgroup already enforces for the whole command ("memory", "pids"):
    those are not repeated as rlimits, because RLIMIT_AS breaks programs that reserve much more address
    space than they use (node, WebAssembly) and RLIMIT_NPROC counts every process of the host user,
    across all sandboxes. Without the cgroup they are the only line, so they stay."""
    argv = ["prlimit", f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 5}"]
    if "memory" not in in_cgroup:
        argv.append(f"--as={limits.memory_bytes}")
    argv += [f"--fsize={limits.file_size_bytes}", f"--nofile={limits.open_files}"]
    if "pids" not in in_cgroup:
        argv.append(f"--nproc={limits.pids}")
    return [*argv, "--core=0", "--"]


class OutputBuffer:
    """Keeps the first and the last `limit // 2` bytes of everything added."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 2)
        self.head_limit = self.limit // 2
        self.tail_limit = self.limit - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > 2 * self.tail_limit:
                del self.tail[: -self.tail_limit]

    @property
    def truncated(self) -> bool:
        return self.total > self.limit

    def text(self) -> str:
        """What the command printed, decoded, without terminal control sequences (see strip_ansi)."""
        if not self.truncated:
            return strip_ansi(bytes(self.head + self.tail).decode("utf-8", errors="replace"))
        tail = self.tail[-self.tail_limit :]
        cut = self.total - len(self.head) - len(tail)
        return (
            strip_ansi(self.head.decode("utf-8", errors="replace"))
            + f"\n[… {cut} bytes cut …]\n"
            + strip_ansi(tail.decode("utf-8", errors="replace"))
        )


def strip_ansi(text: str) -> str:
    """`text` without ANSI colour codes, cursor moves and other terminal control sequences: the one
    place every command's output (and a served app's log) is cleaned before anyone is shown it."""
    return _ANSI.sub("", text)


def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float,
    output_bytes: int,
    cancel: Callable[[], bool] | None = None,
    cwd: str | None = None,
    pass_fds: Sequence[int] = (),
    user: int | None = None,
    group: int | None = None,
) -> CommandResult:
    """Run `argv` to completion or until it must be stopped; see the module docstring.

    `user`/`group` switch the launched process to that host uid/gid (all supplementary groups dropped)
    before it execs: a root worker uses it so that no sandboxed process is host root.
    """
    started = time.monotonic()
    deadline = started + timeout
    output = OutputBuffer(output_bytes)
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env),
            pass_fds=tuple(pass_fds),
            start_new_session=True,
            user=user,
            group=group,
            extra_groups=[] if user is not None else None,
        )
    except OSError as exc:  # the launcher itself (prlimit) could not start, or we may not switch users
        raise SandboxError(f"The sandbox could not start {argv[0]}: {exc.strerror}.") from exc

    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    reading = True
    killed_reason = None
    next_cancel_check = started
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                killed_reason = "timeout"
                break
            if cancel is not None and now >= next_cancel_check:
                next_cancel_check = now + TICK
                if cancel():
                    killed_reason = "cancelled"
                    break
            if output.total > OUTPUT_KILL_FACTOR * output_bytes:
                killed_reason = "output_limit"
                break
            wait = min(TICK, deadline - now)
            if reading:
                if poller.poll(wait * 1000):
                    reading = _read_available(fd, output)
            else:
                try:
                    proc.wait(wait)
                except subprocess.TimeoutExpired:
                    pass
            if proc.poll() is not None:
                if reading:
                    _read_available(fd, output)
                break
    except BaseException:  # cancel() raised, KeyboardInterrupt...: the command must not outlive us
        _wait_gone(_kill_tree(proc))
        proc.wait()
        proc.stdout.close()
        raise
    try:
        # Stop whatever is left: everything when we kill, stragglers (background jobs of the `none`
        # backend) after a normal exit.
        killed = _kill_tree(proc)
        proc.wait()
        if killed_reason:
            _drain(fd, output, until=time.monotonic() + 0.5)
        _wait_gone(killed)
    finally:
        proc.stdout.close()

    code = proc.returncode
    return CommandResult(
        exit_code=128 - code if code < 0 else code,
        output=output.text(),
        truncated=output.truncated,
        duration=time.monotonic() - started,
        killed_reason=killed_reason,
    )


def _read_available(fd: int, output: OutputBuffer) -> bool:
    """Read what is in the pipe now (a bounded amount). Returns False at end of file."""
    for _ in range(READS_PER_CHECK):
        try:
            chunk = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        output.add(chunk)
    return True


def _drain(fd: int, output: OutputBuffer, *, until: float) -> None:
    """After a kill: collect what the dead processes left in the pipe, without waiting on an escaped one."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while (left := until - time.monotonic()) > 0 and output.total <= OUTPUT_KILL_FACTOR * output.limit:
        if poller.poll(left * 1000) and not _read_available(fd, output):
            return


def _kill_tree(proc: subprocess.Popen) -> list[tuple[int, str]]:
    """SIGKILL every descendant of `proc` and its process group. Returns the descendants killed."""
    descendants = _descendants(proc.pid) if proc.returncode is None else []
    for pid, _ in descendants:
        _kill(pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return descendants


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _descendants(root: int) -> list[tuple[int, str]]:
    """(pid, start time) of every process below `root`, found by walking parent links in /proc."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat(int(entry))
        if stat:
            children.setdefault(int(stat[1]), []).append((int(entry), stat[19]))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: [state, ppid, ...]; index 19 is the start time."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    return data[data.rfind(")") + 2 :].split()


def _wait_gone(processes: list[tuple[int, str]]) -> None:
    """Wait (bounded) until the killed processes are dead. A pid-namespace init only turns into a zombie
    after every process in its namespace is gone, so this is what makes "nothing survives" true when
    `run_process` returns, not merely soon after."""
    until = time.monotonic() + GONE_WAIT
    for pid, start in processes:
        while time.monotonic() < until:
            stat = _stat(pid)
            if stat is None or stat[0] in ("Z", "X") or stat[19] != start:
                break
            time.sleep(0.005)


def start_time(pid: int) -> str | None:
    """The start time of a live (not zombie) process `pid`, None when there is none: with the pid, it
    names a process even after the pid is reused."""
    stat = _stat(pid)
    return stat[19] if stat and stat[0] not in ("Z", "X") else None


def end_pid_namespace(init: int, namespace: int) -> None:
    """SIGKILL `init` (host pid) if it is still the init of pid namespace `namespace` (an inode
    number), and wait until it has exited: the kernel kills every other process of a pid namespace
    before its init can turn into a zombie, so afterwards nothing that ran inside is left."""
    until = time.monotonic() + GONE_WAIT
    while time.monotonic() < until:
        stat = _stat(init)
        if stat is None or stat[0] in ("Z", "X"):
            return
        try:
            if os.stat(f"/proc/{init}/ns/pid").st_ino != namespace:
                return  # the pid was reused by another process
            os.kill(init, signal.SIGKILL)
        except OSError:
            return
        time.sleep(0.005)
