"""Escapes: the sandbox attacked the way a hostile repository or a confused agent would.

Every attempt must fail safely, `run()` must return, and the result (or the exception) must say what was
refused. `make test` runs this file as root (per-run cgroups, the launcher dropping to an unprivileged
user) and, through the last test, once more as an unprivileged user (no cgroups: rlimits only), from a
world-readable copy. No traffic leaves loopback: a non-loopback address is only tried for a connection
that must fail at once, inside a network namespace that has no route to it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from agents import workspace as git
from agents.sandbox import CommandResult, SandboxError, SandboxLimits, cgroup
from agents.sandbox.bwrap import BwrapSandbox

REPO = Path(os.environ.get("PROTOTYPE_STORE_ROOT") or Path(__file__).resolve().parents[2])
AS_ROOT = os.geteuid() == 0
UNPRIVILEGED = 65533  # the user of the second run: no account, no files, no groups
MiB = 1024 * 1024
LIMITS = SandboxLimits(
    memory_bytes=256 * MiB,
    pids=64,
    cpus=1.0,
    cpu_seconds=20,
    file_size_bytes=8 * MiB,
    tmp_bytes=4 * MiB,
    home_bytes=1 * MiB,
    output_bytes=64 * 1024,
)
CGROUPS = cgroup.create(LIMITS)  # as root here: per-run cgroups; unprivileged: None (rlimits only)
if CGROUPS:
    CGROUPS.remove()


@pytest.fixture
def scratch():
    # Not pytest's tmp_path: when the worker is root the sandbox's user must reach the workspace.
    path = Path(tempfile.mkdtemp(prefix="escape-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def workspace(scratch):
    path = scratch / "ws"
    path.mkdir()
    (path / "README.md").write_text("a repository\n")
    return path


@pytest.fixture
def sandbox(workspace):
    return BwrapSandbox(workspace, limits=LIMITS)


def sh(sandbox, script: str, **kwargs) -> CommandResult:
    kwargs.setdefault("timeout", 20)
    return sandbox.run(["bash", "-c", script], **kwargs)


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                pass
    return found


def own_address() -> str:
    """This machine's non-loopback IPv4 address (a UDP connect sends nothing), else TEST-NET-1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            address = probe.getsockname()[0]
        except OSError:
            return "192.0.2.1"
    return address if not address.startswith("127.") else "192.0.2.1"


# --- secrets ----------------------------------------------------------------------------------------
def test_the_workers_environment_cannot_be_read(sandbox, monkeypatch):
    key = f"sk-ant-api03-escape-{uuid.uuid4().hex}"
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    script = f"""
env
cat /proc/self/environ /proc/1/environ /proc/$PPID/environ /proc/{os.getpid()}/environ
for p in /proc/[0-9]*; do cat $p/environ $p/cmdline; done
ps -eo pid,args 2>/dev/null
grep -rs sk-ant /proc/*/environ /workspace /tmp /home 2>/dev/null
echo end
"""
    result = sh(sandbox, script)

    assert key not in result.output and "ANTHROPIC" not in result.output
    assert f"/proc/{os.getpid()}/environ: No such file or directory" in result.output or os.getpid() < 5
    assert result.output.endswith("end\n")


def test_the_settings_file_the_secret_key_shadow_and_root_are_not_there(sandbox):
    targets = [REPO / "store" / "settings.py", REPO / "var" / "secret_key", REPO, Path("/etc/shadow"),
               Path("/root"), Path("/proc/1/root/etc/shadow"), Path("/home") / "root"]  # fmt: skip
    assert (REPO / "store" / "settings.py").exists()  # on the host, it is

    result = sh(sandbox, "for f in " + " ".join(map(str, targets)) + '; do cat "$f" || ls "$f"; done 2>&1')

    for target in targets:
        assert f"cat: {target}: No such file or directory" in result.output, target
    assert "SECRET_KEY" not in result.output and "root:x:0:0" not in result.output
    secret = REPO / "var" / "secret_key"
    if os.access(secret, os.R_OK) and secret.read_text().strip():
        assert secret.read_text().strip() not in result.output


# --- the filesystem ---------------------------------------------------------------------------------
def test_nothing_outside_the_workspace_can_be_written(sandbox, workspace):
    marker = f"escape-{uuid.uuid4().hex}"
    passwd = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
    places = ["/usr/bin", "/etc", "/", "/workspace/..", "/proc/sys/kernel", "/dev", str(REPO), str(workspace.parent)]
    script = "".join(f"echo pwned > {place}/{marker} 2>&1 || echo 'refused {place}'\n" for place in places)
    script += f"ln -s /etc/passwd link && echo pwned >> link 2>&1 || echo 'refused link'\necho kept > /tmp/{marker}\n"

    result = sh(sandbox, script)

    for place in places:
        assert f"refused {place}" in result.output, place
        assert not (Path(place) / marker).exists()
    assert "Read-only file system" in result.output
    assert "refused link" in result.output
    assert hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest() == passwd
    assert not Path("/tmp", marker).exists()  # the sandbox's /tmp is its own
    assert not (workspace.parent / marker).exists()


def test_planted_git_hooks_and_config_never_run_on_the_host(scratch):
    marker = scratch / "planted-program-ran"
    source = scratch / "source"
    source.mkdir()
    (source / "app.py").write_text("print('hello')\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(scratch), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}  # fmt: skip
    for argv in (["init", "-q", "-b", "main"], ["add", "--all"], ["commit", "-q", "-m", "start"]):
        subprocess.run(["git", *argv], cwd=source, env=env, check=True, capture_output=True)
    mirror = scratch / "mirror.git"
    git.sync_mirror(str(source), mirror)
    base = git.resolve(mirror, "main")
    (scratch / "build").mkdir(mode=0o711)
    work = git.prepare_workspace(mirror, base, scratch / "build" / "ws")
    try:
        tree = work.tree
        sandbox = BwrapSandbox(tree, limits=LIMITS)
        evil = f"#!/bin/sh\ntouch {marker}\n"
        plant = f"""
set -e
git init -q .
printf '%s' '{evil}' > evil.sh && chmod +x evil.sh
mkdir -p hooks && cp evil.sh hooks/post-checkout && cp evil.sh hooks/pre-commit && cp evil.sh hooks/post-commit
for hook in post-checkout pre-commit post-commit post-index-change reference-transaction; do cp evil.sh .git/hooks/$hook; done
git config core.fsmonitor {tree}/evil.sh
git config core.hooksPath {tree}/hooks
git config diff.external {tree}/evil.sh
git config filter.evil.clean {tree}/evil.sh
git config core.pager {tree}/evil.sh
echo '* filter=evil diff=evil' > .gitattributes
git config diff.evil.textconv {tree}/evil.sh
echo 'print("changed")' > app.py
echo planted
"""
        result = sh(sandbox, plant)
        assert result.exit_code == 0 and result.output.endswith("planted\n"), result.output
        assert (tree / ".git" / "hooks" / "post-checkout").exists() and "fsmonitor" in (
            tree / ".git/config"
        ).read_text()
        planted = scratch / "planted.git"  # kept for the control below: host git removes it from the tree
        shutil.copytree(tree / ".git", planted, symlinks=True)

        diff = work.pending_diff()
        changed = work.changed()
        commit = work.commit("a prototype", "refs/prototypes/escape/1")
        work.diff(commit)
        work.diffstat(commit)
        files = git.list_files(mirror, commit)

        assert not marker.exists(), "host-side git ran a program planted in the workspace"
        assert changed and 'print("changed")' in diff
        assert not any(name.startswith(".git/") for name in files)
        assert not (tree / ".git").exists()  # host git never reads a .git the build planted
        # The control: plain `git status` with the planted repository would have run its fsmonitor.
        subprocess.run(["git", "-c", "safe.directory=*", f"--git-dir={planted}", f"--work-tree={tree}", "status"],
                       cwd=tree, env=env, capture_output=True, timeout=30)  # fmt: skip
        assert marker.exists(), "the planted fsmonitor should fire for naive host git (the test plants it wrong)"
    finally:
        getattr(work, "close", lambda: None)()


# --- the network ------------------------------------------------------------------------------------
def test_no_server_on_loopback_or_beyond_can_be_reached(sandbox):
    own = own_address()
    servers = []
    for address in ("127.0.0.1", own):
        server = socket.socket()
        try:
            server.bind((address, 0))
        except OSError:  # TEST-NET: not ours, nothing to listen on
            server.close()
            servers.append((address, 9))
            continue
        server.listen()
        server.setblocking(False)
        servers.append((address, server.getsockname()[1], server))
    script = "import socket\n" + "".join(
        f"""
try:
    socket.create_connection(("{s[0]}", {s[1]}), timeout=2)
    print("{s[0]} CONNECTED")
except OSError as e:
    print("{s[0]} refused:", e.strerror)
"""
        for s in servers
    )
    script += """
for name in ("pypi.org", "localhost.localdomain"):
    try:
        socket.getaddrinfo(name, 443)
        print(name, "RESOLVED")
    except OSError as e:
        print(name, "not resolved")
print("interfaces", sorted(n for _, n in socket.if_nameindex()))
"""
    try:
        result = sandbox.run(["python3", "-c", script], timeout=20)
        for s in servers:
            if len(s) == 3:
                with pytest.raises(BlockingIOError):
                    s[2].accept()
    finally:
        for s in servers:
            if len(s) == 3:
                s[2].close()

    assert result.exit_code == 0, result.output
    assert "CONNECTED" not in result.output and "RESOLVED" not in result.output
    assert "127.0.0.1 refused: Connection refused" in result.output
    assert f"{own} refused: Network is unreachable" in result.output
    assert "interfaces ['lo']" in result.output


def test_network_for_setup_reaches_no_local_address_and_no_unlisted_host(workspace):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    port = server.getsockname()[1]
    sandbox = BwrapSandbox(workspace, limits=LIMITS, egress_hosts=["pypi.org"])
    script = f"""
import socket
for target in ("127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}", "evil.example:443", "169.254.169.254:80"):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    s.sendall(f"CONNECT {{target}} HTTP/1.1\\r\\n\\r\\n".encode())
    print(target, s.recv(200).split(b"\\r\\n")[0].decode())
s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
s.sendall(b"GET http://127.0.0.1:{port}/ HTTP/1.1\\r\\n\\r\\n")
print("plain", s.recv(200).split(b"\\r\\n")[0].decode())
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2)
    print("direct connected")
except OSError as e:
    print("direct refused:", e.strerror)
"""
    try:
        result = sandbox.run(["python3", "-c", script], network=True, timeout=30)
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()

    assert result.exit_code == 0, result.output
    assert result.output.count("HTTP/1.1 403 Forbidden") == 6
    assert "direct refused: Connection refused" in result.output
    assert "[sandbox: the network proxy refused 127.0.0.1:" in result.output
    assert "evil.example:443 (not an allowed host)" in result.output and "Allowed hosts: pypi.org]" in result.output


def test_network_cannot_be_asked_for_without_allowed_hosts(sandbox):
    with pytest.raises(SandboxError, match="allows no hosts, so commands run without network"):
        sandbox.run(["true"], network=True)


# --- resources --------------------------------------------------------------------------------------
def test_a_fork_bomb_is_contained_and_the_run_returns(sandbox):
    marker = f"bomb-{uuid.uuid4().hex}"

    result = sandbox.run(["bash", "-c", "bomb() { bomb | bomb & }; bomb; sleep 2; echo survived", marker], timeout=4)

    assert result.killed_reason in (None, "timeout")
    if CGROUPS:  # the cgroup's pids.max, and the sandbox says so
        assert f"[sandbox: the command reached its limit of {LIMITS.pids} processes and threads;" in result.output
    else:  # RLIMIT_NPROC: bash says so
        assert "fork: retry: Resource temporarily unavailable" in result.output, result.output[-2000:]
    assert processes_with(marker) == []


def test_a_memory_bomb_is_stopped_and_the_run_returns(sandbox):
    script = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))\n"

    result = sandbox.run(["python3", "-c", script], timeout=20)

    assert result.exit_code != 0
    if CGROUPS:  # the cgroup: the kernel killed it
        assert result.exit_code == 137 and result.killed_reason == "memory_limit"
        assert "used more than its memory limit of 256 MiB, so the kernel killed a process" in result.output
    else:  # RLIMIT_AS, without cgroups: the allocation failed
        assert "MemoryError" in result.output, result.output[-2000:]


def test_filling_the_disk_stops_at_the_limits_and_the_host_disk_is_untouched(sandbox, workspace):
    script = """
head -c 64M /dev/zero 2>&1 > /tmp/fill || echo "tmp full"
head -c 64M /dev/zero 2>&1 > $HOME/fill || echo "home full"
head -c 64M /dev/zero 2>&1 > /dev/shm/fill || echo "shm full"
head -c 64M /dev/zero 2>&1 > /workspace/big || echo "file too large"
fallocate -l 4G /workspace/sparse 2>&1 || echo "fallocate refused"
truncate -s 4G /workspace/hole 2>&1 || echo "truncate refused"
"""
    result = sh(sandbox, script)

    for said in ("tmp full", "home full", "shm full", "file too large", "fallocate refused", "truncate refused"):
        assert said in result.output, said
    assert "No space left on device" in result.output  # the tmpfs are full
    assert "File size limit exceeded" in result.output or "File too large" in result.output  # RLIMIT_FSIZE
    used = sum(p.stat().st_blocks * 512 for p in workspace.rglob("*") if p.is_file())
    assert used <= LIMITS.file_size_bytes + MiB


def test_endless_output_is_capped(sandbox):
    text = sandbox.run(["yes", "spam"], timeout=20)
    binary = sh(sandbox, "cat /dev/urandom")

    for result in (text, binary):
        assert result.killed_reason == "output_limit" and result.truncated
        assert len(result.output.encode()) < 3 * LIMITS.output_bytes
        assert "bytes cut …]" in result.output


@pytest.mark.parametrize("ending", ["timeout", "exit"])
def test_a_daemon_cannot_outlive_its_command(sandbox, workspace, ending):
    marker = f"daemon-{uuid.uuid4().hex}"
    daemon = """
import os, sys, time
if os.fork(): sys.exit(0)
os.setsid()
if os.fork(): sys.exit(0)
while True:
    with open("/workspace/heartbeat", "a") as f:
        f.write(".")
    time.sleep(0.05)
"""
    script = (f"setsid nohup bash -c 'sleep 1000; true' {marker} >/dev/null 2>&1 &\n"
              f"python3 -c '{daemon}' {marker} &\nsleep 0.5\n") + ("sleep 1000" if ending == "timeout" else "echo done")  # fmt: skip

    result = sandbox.run(["bash", "-c", script, marker], timeout=2)

    assert result.killed_reason == ("timeout" if ending == "timeout" else None)
    assert processes_with(marker) == []
    beats = (workspace / "heartbeat").stat().st_size
    assert beats > 0  # the daemon did run
    time.sleep(0.3)
    assert (workspace / "heartbeat").stat().st_size == beats  # and is gone


def test_ptrace_and_new_namespaces_are_refused(sandbox):
    script = """
import ctypes, errno, os, subprocess
libc = ctypes.CDLL(None, use_errno=True)
def call(name, *args):
    ok = getattr(libc, name)(*[ctypes.c_long(a) for a in args]) >= 0
    return "ok" if ok else errno.errorcode[ctypes.get_errno()]
print("ptrace-attach-init", call("ptrace", 16, 1, 0, 0))
print("ptrace-traceme", call("ptrace", 0, 0, 0, 0))
child = subprocess.Popen(["sleep", "5"])
print("ptrace-attach-child", call("ptrace", 16, child.pid, 0, 0))
print("process_vm_readv", call("syscall", 310, child.pid, 0, 0, 0, 0, 0))
child.kill()
print("unshare-user", call("unshare", 0x10000000))
print("mount", call("mount", 0, 0, 0, 0, 0))
"""
    result = sandbox.run(["python3", "-c", script], timeout=20)
    strace = sandbox.run(["strace", "-f", "true"], timeout=20) if shutil.which("strace") else None

    assert result.exit_code == 0, result.output
    answers = dict(line.split() for line in result.output.splitlines())
    assert answers == dict.fromkeys(answers, "EPERM") and len(answers) == 6, answers
    if strace is not None:
        assert strace.exit_code != 0 and "Operation not permitted" in strace.output


# --- the same suite as an unprivileged worker ----------------------------------------------------------
# Tests the unprivileged run skips, and why: nothing else may be skipped there.
UNPRIVILEGED_SKIPS = (
    "this run is already unprivileged",
    "the sandbox's files belong to the worker's own user",
    "only a root worker gives a build a filesystem of its quota's size",
    "sessions need a root worker that can make cgroups",  # test_sessions.py: the fallback is what runs here
)


def test_the_escape_suite_holds_for_an_unprivileged_worker():
    """Re-runs this folder's suites (this file and test_host_side.py) as uid 65533 (no cgroups, no
    setpriv, no overlay: bwrap as an ordinary user, rlimits only, full checkouts) from a world-readable
    copy of `agents/` and of the test files."""
    if not AS_ROOT:
        pytest.skip("this run is already unprivileged")
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to run the suite as an unprivileged user"
    copy = Path(tempfile.mkdtemp(prefix="escape-unprivileged-"))
    try:
        shutil.copytree(REPO / "agents", copy / "agents", ignore=shutil.ignore_patterns("__pycache__"))
        suites = sorted(path.name for path in Path(__file__).parent.glob("test_*.py"))
        for name in suites:
            shutil.copy(Path(__file__).parent / name, copy / name)
        for path in [copy, *copy.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        drop = [setpriv, f"--reuid={UNPRIVILEGED}", f"--regid={UNPRIVILEGED}", "--clear-groups", "--"]
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(copy),
            "LANG": "C.UTF-8",
            "PYTHONPATH": f"{copy}:{sysconfig.get_paths()['purelib']}",  # this run's pytest, readable by all
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
            "PROTOTYPE_STORE_ROOT": str(REPO),
        }
        python = _python_for(drop, env)

        run = subprocess.run(
            [*drop, python, "-m", "pytest", *suites, "-q", "-rs", "-p", "no:cacheprovider"],
            cwd=copy, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        shutil.rmtree(copy, ignore_errors=True)

    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
    skipped = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    unexpected = [line for line in skipped if not any(reason in line for reason in UNPRIVILEGED_SKIPS)]
    assert skipped and not unexpected, unexpected  # this test itself and the root-only checks, nothing else


def _python_for(drop: list[str], env: dict[str, str]) -> str:
    """An interpreter the unprivileged user can run that imports this run's pytest: ours if its
    files are readable by others (a pyenv under /root is not), else Debian's of the same version."""
    candidates = [sys.executable, f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}", "/usr/bin/python3"]
    for python in candidates:
        probe = subprocess.run([*drop, python, "-c", "import pytest, agents"], env=env, capture_output=True, timeout=30)
        if probe.returncode == 0:
            return python
    pytest.fail(f"no Python that uid {UNPRIVILEGED} can run imports pytest (tried {', '.join(candidates)})")
