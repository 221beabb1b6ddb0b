"""A control group per sandboxed command: its memory, process and CPU limits, and its end.

Why: rlimits are the wrong shape for a build. RLIMIT_NPROC counts the processes of a host user, so
every sandbox running at the same time (all as the same unprivileged user) shares one budget; RLIMIT_AS
limits the address space of each process, which breaks node and WebAssembly engines (they reserve far
more address space than they use) while a build of many processes can still use many times the limit.
A cgroup counts the command and everything it starts, and only them.

How: `create(limits)` makes a fresh cgroup under the worker's own one (in each cgroup v1 hierarchy
that has one of CONTROLLERS, or one cgroup v2 directory) and sets pids.max, the memory limit (swap
included where the kernel accounts it) and a CPU quota. `join_argv()` puts the launcher into it: a
root worker starts `/bin/sh` as root, which writes its own pid into the cgroup and then execs `setpriv`
to become the sandbox's unprivileged user, so nothing the command runs could move itself out or change
its limits. After the command, `kill()` freezes the cgroup, SIGKILLs everything still in it, thaws it and
waits until it is empty, so nothing survives, whatever it did to leave its session or process group;
`remove()` deletes it. `events()` says whether the limits were hit, for the person reading the result.

Where cgroups cannot be made (not root and nothing delegated, a read-only /sys/fs/cgroup in a
container), `create` returns None after one warning in the log, and the sandbox falls back to rlimits.
A missing controller is reported the same way, once.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from agents.sandbox.base import CommandResult, SandboxLimits, with_notes

log = logging.getLogger("agents.sandbox")

CONTROLLERS = ("pids", "memory", "cpu", "freezer")  # cgroup v1 hierarchies we use
V2_CONTROLLERS = ("pids", "memory", "cpu")
PREFIX = "prototype-store-"
CPU_PERIOD_US = 100_000
KILL_WAIT = 2.0  # seconds to wait for a killed cgroup to empty
STALE_AFTER = 3600  # seconds after which an empty leftover cgroup (a crashed worker's) is removed

# Run as root: join every cgroup file given, then exec the rest of the argv. 125 when a join fails.
_JOIN = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n - 1)); done; exec "$@"'

_lock = threading.Lock()
_said: set[str] = set()
_layout: Layout | None | bool = False  # False: not looked at yet; None: no usable cgroups


def say_once(key: str, message: str) -> None:
    """Log a warning the first time only: a sandbox without cgroups is a setting, not an event."""
    with _lock:
        if key in _said:
            return
        _said.add(key)
    log.warning(message)


@dataclass(frozen=True)
class Layout:
    """Where this worker may make cgroups: v1 maps each controller to its own directory; v2 has one
    directory (key "") and the controllers enabled for its children."""

    version: int
    parents: dict[str, Path]
    controllers: frozenset[str]


def create(limits: SandboxLimits) -> RunCgroup | None:
    """A new cgroup with `limits`, or None (after one warning) where cgroups are not available."""
    global _layout
    with _lock:
        if _layout is False:
            _layout = _find_layout()
        layout = _layout
    if layout is None:
        return None
    name = PREFIX + uuid.uuid4().hex[:16]
    try:
        if layout.version == 1:
            return V1Cgroup.make(layout, name, limits)
        return V2Cgroup.make(layout, name, limits)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            with _lock:
                _layout = None
        say_once(
            "create",
            f"The sandbox could not make a cgroup ({exc}), so commands fall back to rlimits: memory is "
            "limited per process and processes per host user.",
        )
        return None


class RunCgroup:
    """One command's cgroup. `enforced` names the limits it carries ("pids", "memory", "cpu"), so the
    caller knows which rlimits must stand in for the others."""

    enforced: frozenset[str] = frozenset()

    def procs_files(self) -> list[Path]:
        raise NotImplementedError

    def join_argv(self, argv: list[str], *, user: tuple[int, int] | None = None, setpriv: str = "setpriv") -> list[str]:
        """`argv` started inside this cgroup, as `user` (uid, gid) with no groups and no capabilities
        when given (the caller is root then)."""
        files = [str(f) for f in self.procs_files()]
        head = ["/bin/sh", "-c", _JOIN, "sandbox-join", str(len(files)), *files]
        if user is not None:
            head += drop_argv(user, setpriv)
        return head + list(argv)

    def add(self, pid: int) -> None:
        """Move the process `pid` (a host pid, all its threads) into this cgroup, in every hierarchy.
        Only for root, on a process that cannot fork meanwhile (session.py's executor, waiting for us)."""
        for procs in self.procs_files():
            _write(procs, pid)

    def record(self) -> dict:
        """What `from_record` needs to find this cgroup again from another process (JSON-able)."""
        raise NotImplementedError

    def pids(self) -> list[int]:
        return _read_pids(self.procs_files()[0])

    def kill(self, keep: int | None = None) -> None:
        """Kill every process in the cgroup and wait until it is empty; with `keep`, every process but
        that one (session.py's executor, which waits in the cgroup of the command it started)."""
        raise NotImplementedError

    def events(self) -> tuple[int, int]:
        """(processes the kernel killed for memory, process starts refused by pids.max)."""
        raise NotImplementedError

    def remove(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Kill what is left and remove the cgroup; never raises."""
        try:
            self.kill()
        except OSError as exc:
            log.warning("Could not kill what was left in a sandbox cgroup: %s", exc)
        self.remove()

    def _wait_empty(self, until: float, keep: int | None = None) -> bool:
        while [pid for pid in self.pids() if pid != keep]:
            if time.monotonic() >= until:
                return False
            time.sleep(0.005)
        return True


def drop_argv(user: tuple[int, int], setpriv: str = "setpriv") -> list[str]:
    """The argv prefix with which root becomes `user` (uid, gid) before exec'ing the rest: no groups,
    no capabilities, no_new_privs."""
    return [
        setpriv, f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups",
        "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
    ]  # fmt: skip


def from_record(record: dict | None) -> RunCgroup | None:
    """The cgroup described by `RunCgroup.record()`, or None when the record names none or names a
    directory that is not one of our cgroups (a record is read from a file: never rmdir anything else)."""
    if not record:
        return None
    try:
        if record.get("version") == 1:
            dirs = {str(c): Path(d) for c, d in record["dirs"].items()}
            if dirs and all(_ours(d) for d in dirs.values()):
                return V1Cgroup(dirs)
        elif record.get("version") == 2 and _ours(Path(record["path"])):
            return V2Cgroup(Path(record["path"]), frozenset(record.get("enforced", ())))
    except (KeyError, TypeError, AttributeError):
        pass
    return None


def _ours(path: Path) -> bool:
    """A cgroup directory of ours, or one already removed (stopping it again then does nothing)."""
    if not (path.is_absolute() and path.name.startswith(PREFIX) and ".." not in path.parts):
        return False
    return not path.exists() or (path / "cgroup.procs").exists()


class V1Cgroup(RunCgroup):
    def __init__(self, dirs: dict[str, Path]) -> None:
        self.dirs = dirs
        self.enforced = frozenset(dirs) & {"pids", "memory", "cpu"}

    @classmethod
    def make(cls, layout: Layout, name: str, limits: SandboxLimits) -> V1Cgroup:
        group = cls({})
        try:
            for controller, parent in layout.parents.items():
                if parent / name not in group.dirs.values():  # co-mounted controllers share a directory
                    (parent / name).mkdir()
                group.dirs[controller] = parent / name
            group.enforced = frozenset(group.dirs) & {"pids", "memory", "cpu"}
            if "pids" in group.dirs:
                _write(group.dirs["pids"] / "pids.max", limits.pids)
            if "memory" in group.dirs:
                memory = group.dirs["memory"]
                _write(memory / "memory.limit_in_bytes", limits.memory_bytes)
                if (memory / "memory.memsw.limit_in_bytes").exists():  # no swapping past the limit
                    _write(memory / "memory.memsw.limit_in_bytes", limits.memory_bytes)
            if "cpu" in group.dirs and limits.cpus > 0:
                _write(group.dirs["cpu"] / "cpu.cfs_period_us", CPU_PERIOD_US)
                _write(group.dirs["cpu"] / "cpu.cfs_quota_us", max(1000, int(limits.cpus * CPU_PERIOD_US)))
        except OSError:
            group.remove()
            raise
        return group

    def record(self) -> dict:
        return {"version": 1, "dirs": {c: str(d) for c, d in self.dirs.items()}}

    def procs_files(self) -> list[Path]:
        # The freezer's first: `pids()` and `kill()` read the first one.
        order = sorted(self.dirs, key=lambda c: c != "freezer")
        return list(dict.fromkeys(self.dirs[c] / "cgroup.procs" for c in order))

    def kill(self, keep: int | None = None) -> None:
        if not [pid for pid in self.pids() if pid != keep]:
            return
        until = time.monotonic() + KILL_WAIT
        freezer = self.dirs.get("freezer")
        while True:
            if freezer:
                # Frozen, nothing can fork between the listing and the kill. SIGKILL is acted on at thaw.
                _write(freezer / "freezer.state", "FROZEN")
                settle = min(until, time.monotonic() + 0.5)
                while _read(freezer / "freezer.state") != "FROZEN" and time.monotonic() < settle:
                    time.sleep(0.002)
            try:
                for pid in self.pids():
                    if pid != keep:
                        _kill(pid)
            finally:
                if freezer:  # never leave anything frozen: a frozen process cannot even die
                    _write(freezer / "freezer.state", "THAWED")
            if self._wait_empty(min(until, time.monotonic() + 0.2), keep) or time.monotonic() >= until:
                break
        if [pid for pid in self.pids() if pid != keep]:
            log.warning("A sandbox cgroup still has processes after being killed: %s", self.dirs)

    def events(self) -> tuple[int, int]:
        oom = refused = 0
        if "memory" in self.dirs:
            oom = _field(self.dirs["memory"] / "memory.oom_control", "oom_kill")
        if "pids" in self.dirs:
            refused = _field(self.dirs["pids"] / "pids.events", "max")
        return oom, refused

    def remove(self) -> None:
        for path in set(self.dirs.values()):
            _rmdir(path)


class V2Cgroup(RunCgroup):
    def __init__(self, path: Path, enforced: frozenset[str]) -> None:
        self.path = path
        self.enforced = enforced

    @classmethod
    def make(cls, layout: Layout, name: str, limits: SandboxLimits) -> V2Cgroup:
        path = layout.parents[""] / name
        path.mkdir()
        group = cls(path, layout.controllers)
        try:
            if "pids" in group.enforced:
                _write(path / "pids.max", limits.pids)
            if "memory" in group.enforced:
                _write(path / "memory.max", limits.memory_bytes)
                if (path / "memory.swap.max").exists():
                    _write(path / "memory.swap.max", 0)
            if "cpu" in group.enforced and limits.cpus > 0:
                _write(path / "cpu.max", f"{max(1000, int(limits.cpus * CPU_PERIOD_US))} {CPU_PERIOD_US}")
        except OSError:
            group.remove()
            raise
        return group

    def record(self) -> dict:
        return {"version": 2, "path": str(self.path), "enforced": sorted(self.enforced)}

    def procs_files(self) -> list[Path]:
        return [self.path / "cgroup.procs"]

    def kill(self, keep: int | None = None) -> None:
        if not [pid for pid in self.pids() if pid != keep]:
            return
        until = time.monotonic() + KILL_WAIT
        if keep is None and (self.path / "cgroup.kill").exists():  # Linux 5.14+: the kernel kills them all
            _write(self.path / "cgroup.kill", 1)
        else:
            _write(self.path / "cgroup.freeze", 1)
            settle = time.monotonic() + 0.5
            while "frozen 1" not in _read(self.path / "cgroup.events") and time.monotonic() < settle:
                time.sleep(0.002)
            for pid in self.pids():
                if pid != keep:
                    _kill(pid)
            _write(self.path / "cgroup.freeze", 0)
        if not self._wait_empty(until, keep):
            log.warning("A sandbox cgroup still has processes after being killed: %s", self.path)

    def events(self) -> tuple[int, int]:
        oom = _field(self.path / "memory.events", "oom_kill") if "memory" in self.enforced else 0
        refused = _field(self.path / "pids.events", "max") if "pids" in self.enforced else 0
        return oom, refused

    def remove(self) -> None:
        _rmdir(self.path)


# --- finding where cgroups can be made --------------------------------------------------------------
def _find_layout() -> Layout | None:
    mounts = _cgroup_mounts()
    own = _own_cgroups()
    v1 = {}
    for controller in CONTROLLERS:
        for root, mount_point, options in mounts.get("cgroup", []):
            if controller in options and controller in own:
                parent = _under(mount_point, root, own[controller])
                if parent is not None:
                    v1[controller] = parent
                break
    if "pids" in v1 or "memory" in v1:
        missing = [c for c in CONTROLLERS if c not in v1]
        if missing:
            say_once("v1-missing", f"The sandbox's cgroups have no {', '.join(missing)} controller here: " + _MISSING)
        _sweep(v1.values())
        return Layout(1, v1, frozenset(v1) & {"pids", "memory", "cpu"})
    for root, mount_point, _ in mounts.get("cgroup2", []):
        parent = _under(mount_point, root, own.get("", "/"))
        if parent is not None:
            return _v2_layout(parent)
    say_once("none", "No cgroup hierarchy is mounted, so sandboxed commands are limited by rlimits only. " + _MISSING)
    return None


_MISSING = (
    "Without the pids controller the process limit is per host user and shared by all sandboxes; without "
    "memory, memory is limited per process (address space); without freezer, leftover processes are "
    "killed one by one."
)


def _v2_layout(parent: Path) -> Layout | None:
    if not os.access(parent, os.W_OK):
        say_once(
            "v2-access",
            f"The sandbox cannot make cgroups under {parent} (not writable by this user), so commands are "
            "limited by rlimits only. Run the worker as root, or in a cgroup delegated to its user.",
        )
        return None
    available = set(_read(parent / "cgroup.controllers").split())
    enabled = set(_read(parent / "cgroup.subtree_control").split())
    for controller in V2_CONTROLLERS:
        if controller in available and controller not in enabled:
            try:
                _write(parent / "cgroup.subtree_control", f"+{controller}")
                enabled.add(controller)
            except OSError:
                pass  # EBUSY: the worker's own cgroup has processes and is not the root
    missing = [c for c in V2_CONTROLLERS if c not in enabled]
    if missing:
        say_once(
            "v2-missing",
            f"The sandbox's cgroups under {parent} cannot use the {', '.join(missing)} controller, so those "
            "limits fall back to rlimits. Run the worker in a cgroup of its own whose parent enables them "
            "(systemd: Delegate=yes), or as root in the root cgroup.",
        )
    _sweep([parent])
    return Layout(2, {"": parent}, frozenset(enabled) & set(V2_CONTROLLERS))


def _cgroup_mounts() -> dict[str, list[tuple[str, Path, set[str]]]]:
    """fstype → [(root inside the hierarchy, mount point, super options)] from /proc/self/mountinfo."""
    found: dict[str, list[tuple[str, Path, set[str]]]] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if len(fields) < dash + 4 or fields[dash + 1] not in ("cgroup", "cgroup2"):
            continue
        root, mount_point = _unescape(fields[3]), Path(_unescape(fields[4]))
        options = set(fields[dash + 3].split(","))
        found.setdefault(fields[dash + 1], []).append((root, mount_point, options))
    return found


def _own_cgroups() -> dict[str, str]:
    """controller → this process's cgroup path ("" for cgroup v2), from /proc/self/cgroup."""
    own: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return own
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path
    return own


def _under(mount_point: Path, root: str, path: str) -> Path | None:
    """The directory of cgroup `path` in a hierarchy whose `root` is mounted at `mount_point`."""
    root, path = root.rstrip("/") + "/", path.rstrip("/") + "/"
    if not path.startswith(root):
        return None
    directory = mount_point / path[len(root) :].strip("/")
    return directory if directory.is_dir() else None


def _sweep(parents) -> None:
    """Remove empty cgroups of ours that a crashed worker left behind long ago (a live one is either
    joined within milliseconds of being made, or not empty)."""
    now = time.time()
    for parent in parents:
        try:
            entries = [e for e in os.scandir(parent) if e.name.startswith(PREFIX) and e.is_dir()]
        except OSError:
            continue
        for entry in entries:
            try:
                if now - entry.stat().st_mtime > STALE_AFTER:
                    os.rmdir(entry.path)
            except OSError:
                pass


def _unescape(text: str) -> str:
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _write(path: Path, value) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def _read_pids(path: Path) -> list[int]:
    return [int(line) for line in _read(path).split()]


def _field(path: Path, name: str) -> int:
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        if key == name and value.strip().isdigit():
            return int(value)
    return 0


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _rmdir(path: Path) -> None:
    """Remove a cgroup directory; killed processes may take a moment to leave it."""
    until = time.monotonic() + KILL_WAIT
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() >= until:
                log.warning("Could not remove the sandbox cgroup %s: %s", path, exc)
                return
            time.sleep(0.005)


# --- telling the person -----------------------------------------------------------------------------
def explain(result: CommandResult, group: RunCgroup, limits: SandboxLimits) -> CommandResult:
    """`result` with a "[sandbox: …]" line for each limit the command hit; a command the kernel killed
    for memory gets killed_reason "memory_limit"."""
    oom, refused = group.events()
    notes, reason = [], None
    if oom:
        victims = "a process" if oom == 1 else f"{oom} processes"
        notes.append(
            f"the command used more than its memory limit of {_size(limits.memory_bytes)}, so the kernel killed {victims}"
        )
        if result.exit_code == 137 and result.killed_reason is None:
            reason = "memory_limit"
    if refused:
        notes.append(
            f"the command reached its limit of {limits.pids} processes and threads; "
            f"starting another was refused {refused} time{'s' if refused > 1 else ''}"
        )
    return with_notes(result, notes, reason)


def _size(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} bytes"
