"""The build's long-lived sandbox (agents/sandbox/session.py): later commands enter it, each in a cgroup of
its own, and find nothing an earlier command left behind. Root only: without cgroups every command gets a
fresh sandbox, as before (the unprivileged run of test_escapes.py covers that path)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from agents.sandbox import SandboxLimits, cgroup
from agents.sandbox.bwrap import BwrapSandbox

MiB = 1024 * 1024
LIMITS = SandboxLimits(memory_bytes=256 * MiB, pids=64, cpu_seconds=20, tmp_bytes=4 * MiB, home_bytes=1 * MiB)
PROBE = cgroup.create(LIMITS)
if PROBE:
    PROBE.remove()

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or PROBE is None, reason="sessions need a root worker that can make cgroups"
)


@pytest.fixture
def workspace():
    # Not pytest's tmp_path: the sandbox's user (65534) must reach the workspace.
    path = Path(tempfile.mkdtemp(prefix="session-"))
    path.chmod(0o711)
    (path / "ws").mkdir()
    yield path / "ws"
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sandbox(workspace):
    sandbox = BwrapSandbox(workspace, limits=LIMITS)
    yield sandbox
    sandbox.close()


def sh(sandbox, script: str, **kwargs):
    kwargs.setdefault("timeout", 20)
    return sandbox.run(["bash", "-c", script], **kwargs)


def test_later_commands_enter_the_same_sandbox_each_in_a_cgroup_of_its_own(sandbox):
    first = sh(sandbox, "readlink /proc/self/ns/pid /proc/self/ns/mnt; grep pids /proc/self/cgroup")
    second = sh(sandbox, "readlink /proc/self/ns/pid /proc/self/ns/mnt; grep pids /proc/self/cgroup")

    assert first.exit_code == second.exit_code == 0, first.output + second.output
    namespaces, cgroups = first.output.splitlines()[:2], [first.output.splitlines()[2], second.output.splitlines()[2]]
    assert second.output.splitlines()[:2] == namespaces
    assert cgroups[0] != cgroups[1] and all("prototype-store-" in line for line in cgroups)
    assert sandbox.session_processes()


def test_a_command_finds_nothing_an_earlier_one_left_in_tmp_home_or_shm(sandbox):
    left = sh(sandbox, "touch /tmp/a ~/b /dev/shm/c && mkdir -p /tmp/d/e && touch /tmp/d/e/f && chmod 000 /tmp/d/e /tmp/d"
                       " && ln -s /workspace /tmp/link && echo made")  # fmt: skip
    found = sh(sandbox, "ls -A /tmp ~ /dev/shm")

    assert left.output.strip() == "made", left.output
    assert found.exit_code == 0
    assert [line for line in found.output.splitlines() if line and not line.endswith(":")] == []


def test_shared_memory_a_command_left_is_gone_for_the_next_one(sandbox):
    make = "import ctypes; libc = ctypes.CDLL(None); print(libc.shmget(0, 1 << 20, 0o1600), libc.semget(0, 1, 0o1600))"
    made = sandbox.run(["python3", "-c", make])
    seen = sh(sandbox, "tail -n +2 /proc/sysvipc/shm /proc/sysvipc/sem")

    assert made.exit_code == 0 and "-1" not in made.output.split(), made.output
    assert [line for line in seen.output.splitlines() if line and not line.startswith("==>")] == [], seen.output


def test_the_workspace_through_a_link_in_tmp_is_left_alone(sandbox, workspace):
    (workspace / "kept.txt").write_text("kept\n")
    sh(sandbox, "ln -s /workspace /tmp/ws && ln -s /workspace/kept.txt ~/kept")
    sh(sandbox, "true")

    assert (workspace / "kept.txt").read_text() == "kept\n"


def test_nothing_a_command_started_is_left_for_the_next_one(sandbox):
    sh(sandbox, "setsid nohup sleep 1000 >/dev/null 2>&1 & (sleep 1000 &) ; echo started")
    seen = sh(sandbox, 'for p in /proc/[0-9]*; do echo "$(cat $p/comm 2>/dev/null)"; done')

    names = [line for line in seen.output.split() if line]
    assert "sleep" not in names, seen.output


def test_a_command_cannot_read_the_executors_files_or_sockets(sandbox):
    result = sh(sandbox, "for p in /proc/[0-9]*; do [ \"$(cat $p/comm)\" = python3 ] && { ls $p/fd; cat $p/environ; }; done;"
                         " echo done")  # fmt: skip

    assert result.output.count("Permission denied") >= 2, result.output
    assert "socket:" not in result.output


def test_a_command_inherits_no_file_but_its_input_and_output(sandbox):
    result = sh(sandbox, "ls /proc/$$/fd; true")  # not exec'd: the shell itself

    assert result.output.split() == ["0", "1", "2"], result.output


def test_a_command_that_ends_the_sandbox_is_reported_and_the_next_one_gets_a_new_sandbox(sandbox):
    before = sh(sandbox, "readlink /proc/self/ns/pid").output.strip()

    killed = sh(sandbox, "kill -9 -1; sleep 5")
    after = sh(sandbox, "readlink /proc/self/ns/pid; echo ok")

    assert killed.exit_code == 137
    assert after.exit_code == 0 and after.output.splitlines()[-1] == "ok", after.output
    assert after.output.splitlines()[0] != before


def test_a_timeout_kills_the_command_and_the_session_goes_on(sandbox):
    slow = sh(sandbox, "sleep 60", timeout=1)
    after = sh(sandbox, "echo ok")

    assert (slow.killed_reason, slow.exit_code) == ("timeout", 137)
    assert after.output == "ok\n"


def test_a_missing_program_says_so_like_a_fresh_sandbox(sandbox):
    result = sandbox.run(["no-such-program"])

    assert result.exit_code == 127
    assert "no-such-program" in result.output


def test_commands_with_network_share_one_proxy_and_report_their_own_refusals(workspace, monkeypatch):
    sandbox = BwrapSandbox(workspace, limits=LIMITS, egress_hosts=["pypi.org"])
    made = []
    make_proxy = sandbox.make_proxy
    monkeypatch.setattr(sandbox, "make_proxy", lambda owner=None: made.append(owner) or make_proxy(owner))
    ask = "import socket; s = socket.create_connection(('127.0.0.1', 3128), timeout=10); " \
          "s.sendall(b'CONNECT {}:443 HTTP/1.1\\r\\n\\r\\n'); print(s.recv(100).split(b'\\r\\n')[0].decode())"  # fmt: skip
    try:
        first = sandbox.run(["python3", "-c", ask.format("evil.example")], network=True, timeout=30)
        second = sandbox.run(["python3", "-c", ask.format("other.example")], network=True, timeout=30)
        offline = sandbox.run(["python3", "-c", ask.format("pypi.org")], timeout=30)
    finally:
        sandbox.close()

    assert len(made) == 1
    assert "403 Forbidden" in first.output and "evil.example:443" in first.output
    assert "403 Forbidden" in second.output and "other.example:443" in second.output
    assert "evil.example" not in second.output  # each command is told only of its own refusals
    assert offline.exit_code != 0 and "Connection refused" in offline.output  # no network unless asked
