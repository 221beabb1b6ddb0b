"""The sandbox, attacked for real: real bubblewrap, real processes, real sockets, no mocks."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from agents.sandbox import SandboxError, SandboxLimits, cgroup, load_backend
from agents.sandbox.bwrap import BwrapSandbox
from agents.sandbox.none import NoneSandbox

MiB = 1024 * 1024
SMALL = SandboxLimits(
    memory_bytes=512 * MiB,
    pids=64,
    cpu_seconds=10,
    file_size_bytes=8 * MiB,
    tmp_bytes=4 * MiB,
    home_bytes=1 * MiB,
    output_bytes=64 * 1024,
)
AS_ROOT = os.geteuid() == 0
CGROUPS = cgroup.create(SMALL)  # None where this machine gives no per-run cgroups (then: rlimits)
if CGROUPS:
    CGROUPS.remove()
needs_cgroups = pytest.mark.skipif(CGROUPS is None, reason="no per-run cgroups here (not root, or no hierarchy)")


@pytest.fixture
def workspace():
    # Not pytest's tmp_path: its parent directories are private to the test user, and the sandbox's
    # own (unprivileged) user must be able to reach the workspace.
    path = Path(tempfile.mkdtemp(prefix="sandbox-test-"))
    (path / "hello.txt").write_text("hello from the repository\n")
    (path / "src").mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sandbox(workspace):
    return BwrapSandbox(workspace, limits=SMALL)


def sh(sandbox, script, timeout=20, **kwargs):
    return sandbox.run(["bash", "-c", script], timeout=timeout, **kwargs)


def processes_with(marker: str) -> list[int]:
    """Host processes (zombies aside) whose command line contains `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry))
    return found


# --- the filesystem ---------------------------------------------------------------------------------
def test_a_command_sees_the_workspace_at_slash_workspace_and_can_write_there(sandbox, workspace):
    result = sh(sandbox, "pwd; cat hello.txt; echo built > /workspace/src/out.txt")

    assert result.exit_code == 0, result.output
    assert result.output == "/workspace\nhello from the repository\n"
    assert (workspace / "src" / "out.txt").read_text() == "built\n"
    assert result.killed_reason is None and not result.truncated and result.duration > 0


def test_stdout_and_stderr_come_back_together_with_the_exit_code(sandbox):
    result = sh(sandbox, "echo one; echo two >&2; echo three; exit 3")

    assert result.exit_code == 3
    assert result.output == "one\ntwo\nthree\n"


def test_writing_anywhere_but_the_workspace_tmp_and_home_fails(sandbox):
    for path in ("/usr/x", "/usr/bin/x", "/etc/x", "/etc/passwd", "/x", "/opt/x", "/var/x", "/dev/x", "/proc/x"):
        result = sh(sandbox, f"echo pwned > {path}")
        assert result.exit_code != 0, path
    result = sh(sandbox, "echo ok > /tmp/a && echo ok > $HOME/a && echo ok > /dev/shm/a && cat /tmp/a $HOME/a")
    assert result.exit_code == 0, result.output
    assert result.output == "ok\nok\n"


def test_tmp_and_home_are_small(sandbox):
    home = sh(sandbox, "head -c 2M /dev/zero > /home/sandbox/big")
    tmp = sh(sandbox, "head -c 6M /dev/zero > /tmp/big")

    assert home.exit_code != 0 and "No space left" in home.output
    assert tmp.exit_code != 0 and "No space left" in tmp.output


def test_a_file_larger_than_the_limit_cannot_be_written(sandbox, workspace):
    result = sh(sandbox, "head -c 16M /dev/zero > big")

    assert result.exit_code != 0
    assert (workspace / "big").stat().st_size <= SMALL.file_size_bytes


def test_host_secrets_and_other_homes_are_not_there(sandbox):
    result = sh(sandbox, "ls -d /etc/shadow /etc/gshadow /root /home/* /var /run /sys /etc/ssh 2>&1; cat /etc/passwd")

    for missing in ("/etc/shadow", "/etc/gshadow", "/root", "/var", "/run", "/sys", "/etc/ssh"):
        assert f"cannot access '{missing}': No such file" in result.output
    assert "\n/home/sandbox\n" in result.output  # the only home
    assert "root:" not in result.output


def test_dot_git_in_the_workspace_is_read_only(workspace):
    (workspace / ".git").mkdir()
    (workspace / ".git" / "config").write_text("[core]\n")
    sandbox = BwrapSandbox(workspace, limits=SMALL)

    result = sh(sandbox, "echo '[core] fsmonitor = evil' >> .git/config; mkdir .git/hooks")

    assert result.exit_code != 0
    assert (workspace / ".git" / "config").read_text() == "[core]\n"
    assert not (workspace / ".git" / "hooks").exists()


def test_extra_read_only_binds_are_visible_but_not_writable(workspace):
    toolchain = Path(tempfile.mkdtemp(prefix="sandbox-toolchain-"))
    try:
        toolchain.chmod(0o755)
        (toolchain / "tool").write_text("a toolchain file\n")
        (toolchain / "tool").chmod(0o644)
        sandbox = BwrapSandbox(workspace, limits=SMALL, ro_binds=[toolchain])

        result = sh(sandbox, f"cat {toolchain}/tool; echo x > {toolchain}/tool")

        assert "a toolchain file" in result.output
        assert result.exit_code != 0
        assert (toolchain / "tool").read_text() == "a toolchain file\n"
    finally:
        shutil.rmtree(toolchain)


def test_cwd_is_a_path_inside_the_workspace(sandbox):
    assert sandbox.run(["pwd"], cwd="/workspace/src").output == "/workspace/src\n"
    assert sandbox.run(["pwd"], cwd="src").output == "/workspace/src\n"
    for outside in ("/etc", "/workspace/../etc", "/workspace/missing"):
        with pytest.raises(ValueError):
            sandbox.run(["pwd"], cwd=outside)


# --- who the command is -----------------------------------------------------------------------------
def test_the_command_runs_as_an_unprivileged_user_without_capabilities(sandbox, workspace):
    result = sh(sandbox, "id -u; grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status; touch mine")

    lines = result.output.split()
    assert lines[0] == "1000"
    assert result.output.count("0000000000000000") == 3
    host_owner = (workspace / "mine").stat().st_uid
    assert host_owner == (BwrapSandbox.host_uid if AS_ROOT else os.geteuid())
    if AS_ROOT:
        assert host_owner != 0


def test_the_workers_environment_is_not_visible_and_passed_variables_stay_out_of_argv(sandbox, monkeypatch):
    monkeypatch.setenv("PROTOTYPE_STORE_FAKE_SECRET", "sk-do-not-leak")

    result = sh(sandbox, "env; tr '\\0' ' ' < /proc/1/cmdline", env={"BUILD_TOKEN": "t0k3n-value"})

    assert "sk-do-not-leak" not in result.output
    assert "BUILD_TOKEN=t0k3n-value" in result.output
    assert result.output.count("t0k3n-value") == 1  # not in bwrap's argv, which /proc/1/cmdline shows
    assert "HOME=/home/sandbox" in result.output and "LANG=C.UTF-8" in result.output


# The seccomp filter itself: tests/agents/test_seccomp.py.
def test_node_still_works_under_the_seccomp_filter_and_default_limits(workspace):
    if not shutil.which("node"):
        pytest.skip("node is not installed")
    sandbox = BwrapSandbox(workspace)  # node reserves ~600 MiB of address space before it starts
    (workspace / "a.mjs").write_text(
        "import fs from 'node:fs/promises'; console.log(await fs.readFile('hello.txt', 'utf8'))"
    )

    result = sandbox.run(["node", "a.mjs"], timeout=20)

    assert result.exit_code == 0, result.output
    assert result.output == "hello from the repository\n\n"


# --- the network ------------------------------------------------------------------------------------
def test_there_is_no_network(sandbox):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    port = server.getsockname()[1]
    script = f"""
import socket
for address in [("127.0.0.1", {port}), ("1.1.1.1", 443), ("8.8.8.8", 53)]:
    try:
        socket.create_connection(address, timeout=2)
        print(address, "connected")
    except OSError as e:
        print(address, "failed", e.errno)
try:
    socket.getaddrinfo("example.com", 443)
    print("dns resolved")
except OSError:
    print("dns failed")
"""
    try:
        result = sandbox.run(["python3", "-c", script], timeout=20)
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()

    assert result.exit_code == 0, result.output
    assert "connected" not in result.output and "resolved" not in result.output
    assert result.output.count("failed") == 4


def test_asking_for_network_without_allowed_hosts_is_refused(sandbox):
    with pytest.raises(SandboxError, match="asked for network access, but this sandbox allows no hosts"):
        sandbox.run(["true"], network=True)


# --- stopping things --------------------------------------------------------------------------------
def test_a_timeout_kills_the_command_and_the_daemon_it_started(sandbox):
    marker = f"daemon-{uuid.uuid4().hex}"
    seen = []

    def watch():
        seen.append(len(processes_with(marker)))
        return False

    result = sh(sandbox, f"setsid nohup bash -c 'sleep 1000; true' {marker} >/dev/null 2>&1 & sleep 1000",
                timeout=1, cancel=watch)  # fmt: skip

    assert result.killed_reason == "timeout"
    assert result.exit_code == 137
    assert 1 <= result.duration < 3
    assert max(seen) >= 2  # the command and its daemon were running
    assert processes_with(marker) == []


def test_a_daemon_does_not_outlive_a_command_that_exits_by_itself(sandbox):
    marker = f"daemon-{uuid.uuid4().hex}"
    seen = []

    def watch():
        seen.append(len(processes_with(marker)))
        return False

    result = sh(sandbox, f"setsid nohup bash -c 'sleep 1000; true' {marker} >/dev/null 2>&1 & sleep 0.5; echo done",
                cancel=watch)  # fmt: skip

    assert result.exit_code == 0 and result.output == "done\n"
    assert result.killed_reason is None
    assert max(seen) >= 1
    assert processes_with(marker) == []


def test_cancel_stops_a_running_command(sandbox):
    asked_at = time.monotonic() + 0.5

    result = sh(sandbox, "echo started; sleep 60", cancel=lambda: time.monotonic() > asked_at)

    assert result.killed_reason == "cancelled"
    assert result.output == "started\n"
    assert result.duration < 1.5


def test_a_failing_cancel_callback_still_leaves_nothing_running(sandbox):
    marker = f"cancel-{uuid.uuid4().hex}"

    def broken():
        if processes_with(marker):
            raise RuntimeError("the database went away")
        return False

    with pytest.raises(RuntimeError):
        sandbox.run(["bash", "-c", "sleep 60; true", marker], timeout=20, cancel=broken)

    assert processes_with(marker) == []


def test_long_output_keeps_the_head_and_the_tail(sandbox):
    result = sh(sandbox, "seq 1 100000")

    assert result.exit_code == 0 and result.killed_reason is None
    assert result.truncated
    assert result.output.startswith("1\n2\n3\n")
    assert result.output.endswith("99999\n100000\n")
    assert "bytes cut …]" in result.output
    assert len(result.output.encode()) < SMALL.output_bytes + 100


def test_endless_output_is_stopped(sandbox):
    result = sandbox.run(["yes", "spam"], timeout=20)

    assert result.killed_reason == "output_limit"
    assert result.truncated
    assert result.output.startswith("spam\nspam\n") and result.output.rstrip().endswith("spam")
    assert result.duration < 5


# --- resources --------------------------------------------------------------------------------------
def test_a_process_count_limit_stops_forking(sandbox):
    script = """
import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        n += 1
except OSError:
    print("stopped after", n)
"""
    result = sandbox.run(["python3", "-c", script], timeout=20)

    assert result.exit_code == 0, result.output
    first, *notes = result.output.splitlines()
    assert first.startswith("stopped after")
    assert int(first.split()[-1]) < SMALL.pids
    if CGROUPS:
        assert notes == [f"[sandbox: the command reached its limit of {SMALL.pids} processes and threads; "
                         "starting another was refused 1 time]"]  # fmt: skip


def test_a_fork_bomb_is_contained_and_leaves_nothing_behind(sandbox):
    marker = f"bomb-{uuid.uuid4().hex}"

    result = sandbox.run(["bash", "-c", "bomb() { bomb | bomb & }; bomb; sleep 60", marker], timeout=2)

    assert result.killed_reason == "timeout"
    assert result.duration < 5
    assert processes_with(marker) == []


def test_a_memory_bomb_fails(sandbox):
    result = sandbox.run(["python3", "-c", "x = bytearray(2 * 1024**3)"], timeout=20)

    assert result.exit_code != 0
    if CGROUPS:  # the kernel kills it when it touches more than the limit
        assert result.exit_code == 137 and result.killed_reason == "memory_limit"
        assert result.output.endswith(
            "[sandbox: the command used more than its memory limit of 512 MiB, so the kernel killed a process]\n"
        )
    else:  # RLIMIT_AS: the allocation itself fails
        assert "MemoryError" in result.output


def test_cpu_time_is_limited(workspace):
    sandbox = BwrapSandbox(workspace, limits=SandboxLimits(cpu_seconds=1, output_bytes=4096))

    result = sandbox.run(["python3", "-c", "while True: pass"], timeout=20)

    assert result.exit_code == 128 + 24  # SIGXCPU
    assert result.killed_reason is None


@needs_cgroups
def test_the_process_limit_is_per_command_not_shared_by_sandboxes_running_at_once(workspace):
    # With RLIMIT_NPROC, counted per host user, the second command could not start 40 processes
    # while the first holds 40 of the same user's 64.
    first = BwrapSandbox(workspace, limits=SMALL)
    second = BwrapSandbox(workspace, limits=SMALL)
    holding = threading.Event()

    def hold():
        first.run(["bash", "-c", "for i in $(seq 40); do sleep 5 & done; touch holding; wait"], timeout=20,
                  cancel=lambda: holding.is_set())  # fmt: skip

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        for _ in range(200):
            if (workspace / "holding").exists():
                break
            time.sleep(0.02)
        result = sh(second, "for i in $(seq 40); do sleep 0.5 & done; wait; echo all started")
    finally:
        holding.set()
        holder.join()

    assert result.exit_code == 0, result.output
    assert result.output == "all started\n"


@needs_cgroups
def test_node_can_use_webassembly_under_the_memory_limit(workspace):
    # RLIMIT_AS (2 GiB by default before cgroups) made V8 fail to reserve a WebAssembly memory.
    if not shutil.which("node"):
        pytest.skip("node is not installed")
    sandbox = BwrapSandbox(workspace, limits=SMALL)

    result = sandbox.run(["node", "-e", "console.log(new WebAssembly.Memory({initial: 1}).buffer.byteLength)"],
                         timeout=20)  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.output == "65536\n"


@needs_cgroups
def test_the_cpu_quota_holds_a_busy_command_back(workspace):
    sandbox = BwrapSandbox(workspace, limits=SandboxLimits(cpus=0.2, output_bytes=4096))
    script = """
import time
start = time.monotonic()
while time.monotonic() - start < 1.5:
    pass
print(round(time.process_time() / (time.monotonic() - start), 2))
"""
    result = sandbox.run(["python3", "-c", script], timeout=20)

    assert result.exit_code == 0, result.output
    assert float(result.output) < 0.5  # unthrottled it would be close to 1.0


@needs_cgroups
def test_each_command_gets_a_cgroup_that_is_gone_afterwards(sandbox, monkeypatch):
    made = []
    create = cgroup.create
    monkeypatch.setattr(cgroup, "create", lambda limits: made.append(create(limits)) or made[-1])

    result = sh(sandbox, "cat /proc/self/cgroup; setsid nohup sleep 1000 >/dev/null 2>&1 & echo started")
    sandbox.close()  # the build's long-lived sandbox too (session.py): it keeps the next command's cgroup

    assert result.exit_code == 0 and "started" in result.output
    # Its own cgroup namespace: it sees itself at the root (a fresh sandbox), or beside the build's
    # long-lived sandbox (session.py), and never a host path above.
    [line] = [line for line in result.output.splitlines() if ":pids:" in line]
    name = line.split(":pids:")[1]
    [group] = [g for g in made if name == "/" or name == f"/../{_name(g)}"]
    assert group.enforced == {"pids", "memory", "cpu"}
    for each in made:
        paths = list(getattr(each, "dirs", {"": getattr(each, "path", None)}).values())
        assert paths and not any(path.exists() for path in paths)


def _name(group) -> str:
    return next(iter(getattr(group, "dirs", {"": getattr(group, "path", None)}).values())).name


def test_without_cgroups_the_sandbox_falls_back_to_rlimits_and_says_so_once(workspace, monkeypatch, caplog):
    def refuse(*args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cgroup, "_layout", False)
    monkeypatch.setattr(cgroup, "_said", set())
    monkeypatch.setattr(cgroup.V1Cgroup, "make", refuse)
    monkeypatch.setattr(cgroup.V2Cgroup, "make", refuse)
    caplog.set_level(logging.WARNING, logger="agents.sandbox")
    sandbox = BwrapSandbox(workspace, limits=SMALL)

    results = [sandbox.run(["python3", "-c", "x = bytearray(2 * 1024**3)"], timeout=20) for _ in range(2)]

    assert all("MemoryError" in r.output for r in results)  # RLIMIT_AS stands in for the cgroup
    warnings = [r.getMessage() for r in caplog.records if "cgroup" in r.getMessage()]
    if CGROUPS:
        assert len(warnings) == 1
        assert "fall back to rlimits" in warnings[0]


@needs_cgroups
def test_a_cgroup_freezes_and_kills_everything_it_holds_even_what_keeps_forking():
    group = cgroup.create(SMALL)
    marker = f"v1-{uuid.uuid4().hex}"
    script = f"setsid nohup bash -c 'while true; do sleep 10 & sleep 0.01; done' {marker} >/dev/null 2>&1 & echo ok"
    try:
        out = subprocess.run(group.join_argv(["bash", "-c", script, marker]), capture_output=True, text=True,
                             timeout=10, start_new_session=True)  # fmt: skip
        assert out.stdout == "ok\n", out.stderr
        time.sleep(0.2)
        assert len(group.pids()) > 3  # the forking daemon and its children, outside any sandbox

        group.kill()

        assert group.pids() == [] and processes_with(marker) == []
    finally:
        group.close()


def test_cgroup_v2_freezes_and_kills_everything_it_holds():
    unified = next((Path(p) for p in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")
                    if (Path(p) / "cgroup.procs").exists() and os.access(p, os.W_OK)), None)  # fmt: skip
    if unified is None or not AS_ROOT:
        pytest.skip("no writable cgroup v2 hierarchy here")
    layout = cgroup.Layout(2, {"": unified}, frozenset())
    group = cgroup.V2Cgroup.make(layout, f"{cgroup.PREFIX}test-{uuid.uuid4().hex[:8]}", SMALL)
    marker = f"v2-{uuid.uuid4().hex}"
    try:
        # The daemon is a plain `sleep 1000` (the marker is bash's $0 only: given to sleep as a second
        # argument it made sleep exit at once, and the test pass or fail by how fast it looked).
        argv = group.join_argv(["bash", "-c", "setsid nohup sleep 1000 >/dev/null 2>&1 & echo ok", marker])
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, start_new_session=True)
        assert out.stdout == "ok\n", out.stderr
        deadline = time.monotonic() + 5  # a loaded machine may still be starting the daemon
        while not group.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(group.pids()) == 1  # the daemon, now alone in the cgroup

        group.kill()

        assert group.pids() == []
    finally:
        group.close()
    assert not group.path.exists()


# --- backends ---------------------------------------------------------------------------------------
def test_the_workspace_is_given_to_the_sandbox_user(workspace):
    if not AS_ROOT:
        pytest.skip("only a root worker switches users")
    BwrapSandbox(workspace, limits=SMALL)

    assert (workspace / "hello.txt").stat().st_uid == BwrapSandbox.host_uid
    assert (workspace / "src").stat().st_uid == BwrapSandbox.host_uid


def test_a_workspace_the_sandbox_user_cannot_reach_is_explained():
    if not AS_ROOT:
        pytest.skip("only a root worker switches users")
    private = Path(tempfile.mkdtemp(prefix="sandbox-private-"))  # mode 0700, owned by root
    try:
        (private / "ws").mkdir()
        with pytest.raises(SandboxError, match="cannot reach the workspace"):
            BwrapSandbox(private / "ws")
    finally:
        shutil.rmtree(private)


def test_a_missing_bubblewrap_is_explained(workspace):
    class NotInstalled(BwrapSandbox):
        executable = "bwrap-that-is-not-installed"

    with pytest.raises(SandboxError, match="apt-get install bubblewrap"):
        NotInstalled(workspace)


def test_the_none_backend_is_refused_without_debug(workspace):
    with pytest.raises(SandboxError, match="debug"):
        NoneSandbox(workspace)


def test_the_none_backend_runs_in_the_real_workspace_with_the_same_limits(workspace, monkeypatch):
    monkeypatch.setenv("PROTOTYPE_STORE_FAKE_SECRET", "sk-do-not-leak")
    sandbox = NoneSandbox(workspace, limits=SMALL, debug=True)

    pwd = sandbox.run(["bash", "-c", "pwd; env"], cwd="/workspace/src")
    spam = sandbox.run(["yes"], timeout=20)
    slow = sandbox.run(["sleep", "60"], timeout=0.5)

    assert pwd.output.splitlines()[0] == str(workspace.resolve() / "src")
    assert "sk-do-not-leak" not in pwd.output
    assert spam.killed_reason == "output_limit" and spam.truncated
    assert slow.killed_reason == "timeout" and slow.exit_code == 137


def test_backends_are_loaded_by_name_or_dotted_path():
    assert load_backend("bwrap") is BwrapSandbox
    assert load_backend("none") is NoneSandbox
    assert load_backend("agents.sandbox.bwrap.BwrapSandbox") is BwrapSandbox
    for wrong in ("docker-maybe", "os.path.join", "agents.sandbox.nothing.Here"):
        with pytest.raises(SandboxError, match="Unknown sandbox backend"):
            load_backend(wrong)


def test_the_removed_docker_backend_is_refused_with_the_reason():
    with pytest.raises(SandboxError, match="docker sandbox backend was removed: it was never proven"):
        load_backend("docker")
    with pytest.raises(SandboxError, match="Unknown sandbox backend"):
        load_backend("agents.sandbox.docker.DockerSandbox")
