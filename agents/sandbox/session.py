"""One long-lived bwrap sandbox per build, which later commands enter: the cheap path of `BwrapSandbox.run`.

Why: making a sandbox (a user, pid, network, mount, ipc, uts and cgroup namespace, some twenty mounts,
the seccomp filter, and the launcher's exec chain sh → setpriv → prlimit → bwrap) costs 10-30 ms on the
2-core machine, and a build runs tens to hundreds of commands. So the sandbox is made once per build,
by the same code and with exactly the view, limits and user of a fresh one, and runs a small executor
(EXECUTOR, Debian's python3) under bwrap's init. For each command the worker (root) has already made a
fresh cgroup with the command's limits and moved the executor into it ("staged" it, in the background
after the previous command: moving a process between cgroups waits for an RCU grace period, a few ms);
the executor starts the command there (posix_spawn), so the command and everything it starts are in the
command's own cgroup from its first instruction. When the command ends, the worker freezes that cgroup
and kills everything in it but the executor, then moves the executor on to the next command's cgroup and
removes this one: nothing a command started survives into the next.

The same as a fresh sandbox per command: the namespaces and the read-only view, the host uid (65534)
and the uid inside, no capabilities, no_new_privs, the seccomp filter (the executor and every command run
under it), the rlimits (set on the launcher and inherited; RLIMIT_CPU counts per process, so each command
starts from zero), the per-command cgroup and its limits, the output cap, the clock and cancel (enforced
by the worker, which kills the command's cgroup), no network unless asked. /tmp, HOME and /dev/shm are
emptied and System V IPC objects (shared memory, semaphores, queues) removed before every command, so a
command finds nothing another one left there, and cannot pile up memory beyond its cgroup's life.

What differs, and why it is acceptable: the commands of one build share one pid, network, ipc and mount
namespace over time (never at the same time: one command runs at a time, and its cgroup is emptied before
the next begins). Inside, a command sees bwrap's init (pid 1) and the executor (pid 2). The executor makes
itself non-dumpable, so a command (the same uid) cannot open its /proc files, its memory or its socket to
the worker; ptrace and process_vm_* are refused by the seccomp filter. A command can still signal it
(same uid): the executor then ends, bwrap's init with it, and the whole pid namespace; the command is
reported killed (never run again: it may have started) and the next command gets a new session. The
commands of different builds never share a session.

Network (setup commands of a target with allowed hosts) gets a session of its own, made on the build's
first command with network=True: the egress proxy starts with it, and the forwarder (socat) once inside,
in the session's own cgroup; every later command with network enters that session, and the proxy's
refusals are reported per command. Commands without network never enter it.

Where the worker cannot make cgroups (not root) nothing could end a command's processes short of ending
its pid namespace, so `BwrapSandbox` keeps making a fresh sandbox per command, as it also does for a
command asked for while another one runs in the session (another thread).
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from agents.egress import EgressProxy
from agents.sandbox import cgroup
from agents.sandbox.base import CommandResult, SandboxError, SandboxLimits, with_notes
from agents.sandbox.process import OUTPUT_KILL_FACTOR, TICK, OutputBuffer, _drain, _read_available

READY_WAIT = 10.0  # seconds a new session's executor has to say it is ready
EXIT_WAIT = 2.0  # seconds to wait for the exit status once the command's cgroup was killed

# The executor: the command of the session's sandbox (pid 2 inside), run by the system's python3 (-I -S:
# nothing from the environment or site-packages). argv: the control socket's fd, then the folders to empty
# before each command. It reads a request (a memfd holding {"argv", "cwd", "env"}, and the write end of
# the command's output pipe), starts the command, waits for it and says {"exit": code} (the shell's
# convention: 128+N for signal N): one message per command, so the worker is woken once for it. A
# command that cannot be executed gets 127 (not found) or 126, with one line saying why in its output.
EXECUTOR = r"""
import ctypes, json, os, signal, socket, sys
libc = ctypes.CDLL(None)
libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: commands, the same uid, cannot read us
os.set_inheritable(int(sys.argv[1]), False)  # the socket to the worker is never a command's
control = socket.socket(fileno=int(sys.argv[1]))
scratch = sys.argv[2:]

def remove(path):
    try:
        os.unlink(path)
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    try:
        os.chmod(path, 0o700)  # a folder a command made unreadable (only folders get here: unlink refused)
        for name in os.listdir(path):
            remove(os.path.join(path, name))
        os.rmdir(path)
    except OSError:
        pass

def clear_ipc():
    # System V shared memory, semaphores and message queues outlive their processes (a fresh sandbox's
    # ipc namespace ended with it): removed, or commands could pile up memory no cgroup is left to count.
    for kind, remove in (("shm", lambda i: libc.shmctl(i, 0, None)), ("sem", lambda i: libc.semctl(i, 0, 0)),
                         ("msg", lambda i: libc.msgctl(i, 0, None))):  # 0: IPC_RMID
        try:
            with open("/proc/sysvipc/" + kind) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            remove(int(row.split()[1]))

def reap():
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass

def code_of(status):
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code

signal.signal(signal.SIGINT, signal.SIG_IGN)
control.send(b'{"ready": true}')
while True:
    try:
        message, fds, _, _ = socket.recv_fds(control, 64, 2)
    except OSError:
        break
    if not message or len(fds) != 2:
        break
    request_fd, out = fds
    with os.fdopen(request_fd, "rb") as f:
        request = json.loads(f.read())
    reap()
    clear_ipc()
    for top in scratch:
        try:
            names = os.listdir(top)
        except OSError:
            names = []
        for name in names:
            remove(os.path.join(top, name))
    argv = request["argv"]
    # posix_spawn (a vfork) is much cheaper than fork for a Python process; the command inherits the
    # cwd, so the executor steps into it for the moment of the spawn.
    pid = 0
    try:
        os.chdir(request["cwd"])
        pid = os.posix_spawnp(
            argv[0], argv, request["env"],
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out, 1),
                (os.POSIX_SPAWN_DUP2, out, 2),
                (os.POSIX_SPAWN_CLOSE, out),
            ],
            setsid=True,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT),  # ignored here, not in commands
        )
    except OSError as exc:
        os.write(out, ("sandbox: cannot run %s: %s\n" % (argv[0], exc.strerror)).encode())
        failed = 127 if isinstance(exc, FileNotFoundError) else 126
    finally:
        os.close(out)
        os.chdir("/")
    if not pid:
        control.send(json.dumps({"exit": failed}).encode())
        continue
    code = 137
    while True:
        try:
            done, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if done == pid:
            code = code_of(status)
            break
    control.send(json.dumps({"exit": code}).encode())
"""


class SessionBroken(Exception):
    """The session cannot take a command (it ended, or did not answer): the command did not start, and
    the caller runs it in a fresh sandbox instead."""


class Session:
    """A started session: `process` is its launcher (bwrap in the session's cgroup `group`), `executor`
    the executor's host pid, `control` the worker's end of the executor's socket."""

    def __init__(
        self,
        process: subprocess.Popen,
        group: cgroup.RunCgroup,
        control: socket.socket,
        executor: int,
        limits: SandboxLimits,
        proxy: EgressProxy | None = None,
    ) -> None:
        self.process = process
        self.group = group
        self.control = control
        self.executor = executor
        self.limits = limits
        self.proxy = proxy
        self.broken = False
        # The next command's cgroup, with the executor already in it (see _stage), or the error that
        # kept it from being made; prepared by `_stager` after each command.
        self._staged: cgroup.RunCgroup | SessionBroken | None = None
        self._stager: threading.Thread | None = None

    def alive(self) -> bool:
        return not self.broken and self.process.poll() is None

    def own_processes(self) -> set[int]:
        """Host pids of the session's own processes: everything in its cgroup, and the executor."""
        return {*self.group.pids(), self.executor} if self.alive() else set()

    def wait_ready(self) -> None:
        """Wait for the executor's first word; raises SessionBroken with what the launcher printed."""
        if self._reply(READY_WAIT) != {"ready": True}:
            raise SessionBroken("the session's executor did not start")

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str,
        env: Mapping[str, str],
        timeout: float,
        cancel: Callable[[], bool] | None = None,
        own_cgroup: bool = True,
    ) -> CommandResult:
        """Run `argv` (already checked, with the whole environment `env`) in the session, in a cgroup of
        its own (`own_cgroup=False` only for the session's own helpers, which stay in its cgroup).
        Raises SessionBroken when the command could not be started; once started, problems become the
        result (a session that ends under the command reports it killed)."""
        if not self.alive():
            raise SessionBroken("the session ended")
        started = time.monotonic()
        group = self._take_staged() if own_cgroup else None
        refusals_from = len(self.proxy.decisions) if self.proxy else 0
        request = _memfd(json.dumps({"argv": list(argv), "cwd": cwd, "env": dict(env)}).encode())
        read_end, write_end = os.pipe()
        try:
            try:
                # The executor waits in the command's cgroup (see _stage) and starts the command there, so
                # the command is in it from its first instruction. It stays there until the command has
                # ended: killing the command's cgroup spares it (and only it).
                socket.send_fds(self.control, [b"run"], [request, write_end])
            except OSError as exc:
                self.broken = True
                raise SessionBroken(f"the session could not take the command: {exc}") from exc
            os.close(write_end)
            write_end = -1
            try:
                result = self._follow(read_end, group, started, timeout, cancel)
            except BaseException:
                self.broken = True  # the command is killed below, with the executor; the session is done
                raise
            if group:
                result = cgroup.explain(result, group, self.limits)
            if self.proxy:
                refused = self.proxy.refusals(since=refusals_from)
                if refused:
                    result = with_notes(result, [refused])
            return result
        finally:
            os.close(request)
            os.close(read_end)
            if write_end != -1:
                os.close(write_end)
            if group:
                if self.broken:
                    group.close()
                else:
                    self._stage_next(group)

    def _stage(self, done: cgroup.RunCgroup | None = None) -> cgroup.RunCgroup:
        """A fresh cgroup for the next command with the executor moved into it. Moving a process between
        cgroups waits for an RCU grace period when none was asked for lately (a few ms under load; the
        kernel's cgroup_threadgroup_rwsem), so it is done ahead of time, while the build does other
        things, not when the command is asked for."""
        group = cgroup.create(self.limits)
        if group is None:
            raise SessionBroken("no cgroup for the command")
        try:
            group.add(self.executor)
        except OSError as exc:
            group.close()
            raise SessionBroken(f"the executor could not enter the command's cgroup: {exc}") from exc
        finally:
            if done is not None:  # the last command's, empty but for the executor, which just left it
                done.close()
        return group

    def _stage_next(self, done: cgroup.RunCgroup) -> None:
        """Stage the next command's cgroup in the background, then remove `done` (the last command's)."""

        def stage() -> None:
            try:
                self._staged = self._stage(done)
            except SessionBroken as exc:
                self._staged = exc

        self._staged = None
        self._stager = threading.Thread(target=stage, name="sandbox-session-stage", daemon=True)
        self._stager.start()

    def _take_staged(self) -> cgroup.RunCgroup:
        if self._stager is not None:
            self._stager.join()
            self._stager = None
        staged, self._staged = self._staged, None
        if isinstance(staged, SessionBroken):
            self.broken = True
            raise staged
        return staged if staged is not None else self._stage()

    def _follow(self, fd: int, group, started: float, timeout: float, cancel) -> CommandResult:
        """Read the command's output until the executor reports its exit, or until it must be stopped;
        the same rules as process.run_process."""
        deadline = started + timeout
        limit = self.limits.output_bytes
        output = OutputBuffer(limit)
        os.set_blocking(fd, False)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self.control.fileno(), select.POLLIN)
        reading, code, killed_reason, ended = True, None, None, False
        next_cancel_check = started
        keep = self.executor if group else None
        while code is None:
            now = time.monotonic()
            if now >= deadline:
                killed_reason = "timeout"
                break
            if cancel is not None and now >= next_cancel_check:
                next_cancel_check = now + TICK
                if cancel():
                    killed_reason = "cancelled"
                    break
            if output.total > OUTPUT_KILL_FACTOR * limit:
                killed_reason = "output_limit"
                break
            for ready, _ in poller.poll(min(TICK, deadline - now) * 1000):
                if ready == fd and reading:
                    reading = _read_available(fd, output)
                    if not reading:
                        poller.unregister(fd)
                elif ready == self.control.fileno():
                    reply = self._reply(0)
                    if "exit" in reply:
                        code = int(reply["exit"])
                    else:
                        # The executor is gone, and the command with it (bwrap's init ends the pid
                        # namespace). The command may have run (it can kill the executor itself), so it
                        # is never run again.
                        ended, code = True, 137
                        self.broken = True
        if code is None:
            if group:
                group.kill(keep)
            while not ended and code is None:
                reply = self._reply(EXIT_WAIT)
                if "exit" in reply:
                    code = int(reply["exit"])
                else:
                    ended, code = True, 137
                    self.broken = True
        elif group:
            group.kill(keep)  # whatever the command left running in the background
        if reading:  # every writer is gone now: what is left in the pipe, then its end
            _drain(fd, output, until=time.monotonic() + 0.5)
        result = CommandResult(
            exit_code=code,
            output=output.text(),
            truncated=output.truncated,
            duration=time.monotonic() - started,
            killed_reason=killed_reason,
        )
        if ended and not killed_reason:
            result = with_notes(result, ["the command's sandbox ended while it ran, so it was stopped"])
        return result

    def _reply(self, wait: float) -> dict:
        """The executor's next message; {} when it ended or said nothing within `wait` seconds."""
        ready, _, _ = select.select([self.control], [], [], wait)
        if not ready:
            return {}
        try:
            data = self.control.recv(4096)
        except OSError:
            return {}
        if not data:
            return {}
        try:
            reply = json.loads(data)
        except ValueError:
            return {}
        return reply if isinstance(reply, dict) else {}

    def close(self) -> None:
        """End the session and everything in it; never raises."""
        self.broken = True
        if self._stager is not None:
            self._stager.join()
            self._stager = None
        if isinstance(self._staged, cgroup.RunCgroup):
            self._staged.close()  # with the executor in it: the session ends either way
        self._staged = None
        try:
            self.control.close()
        except OSError:
            pass
        self.group.close()  # the launcher, the executor and the session's helpers
        try:
            self.process.wait(EXIT_WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        if self.proxy:
            self.proxy.stop()


def _memfd(content: bytes) -> int:
    fd = os.memfd_create("sandbox-request")
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def start_failed(process: subprocess.Popen) -> str:
    """What a session's launcher printed before it failed (bwrap's own complaint), for the log."""
    try:
        process.wait(1)
    except subprocess.TimeoutExpired:
        return ""
    return process.stderr.read().decode(errors="replace").strip() if process.stderr else ""


__all__ = ["EXECUTOR", "Session", "SessionBroken", "SandboxError"]
