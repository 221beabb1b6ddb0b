"""The docker backend. Without a Docker engine (as in CI) only its command line and its refusals are
checked; the tests that run containers skip, saying why."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path, PurePosixPath

import pytest

from agents.sandbox import SandboxError, SandboxLimits
from agents.sandbox.docker import DockerSandbox, docker_run_argv

MiB = 1024 * 1024
SMALL = SandboxLimits(memory_bytes=512 * MiB, pids=64, cpus=1.5, cpu_seconds=10, file_size_bytes=8 * MiB,
                      tmp_bytes=4 * MiB, home_bytes=1 * MiB, output_bytes=64 * 1024)  # fmt: skip


def engine_answers() -> str | None:
    """None when a Docker engine answers, else why not."""
    if not shutil.which("docker"):
        return "the docker CLI is not installed"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`docker info` failed: {exc}"
    if info.returncode != 0:
        return f"no Docker engine answers (`docker info` failed: {(info.stderr.strip().splitlines() or ['?'])[-1]})"
    return None


NO_ENGINE = engine_answers()
needs_engine = pytest.mark.skipif(NO_ENGINE is not None, reason=str(NO_ENGINE))


@pytest.fixture
def workspace():
    path = Path(tempfile.mkdtemp(prefix="docker-test-"))
    (path / "hello.txt").write_text("hello from the repository\n")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_container_is_locked_down_and_secrets_stay_out_of_its_command_line(workspace):
    (workspace / ".git").mkdir()
    client_env = {"PATH": "/usr/bin:/bin", "HOME": "/root"}
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/home/sandbox", "BUILD_TOKEN": "t0k3n-value"}

    argv = docker_run_argv(
        "/usr/bin/docker", "debian:bookworm-slim", "prototype-store-x", ["bash", "-c", "make"], workspace=workspace,
        cwd=PurePosixPath("/workspace/src"), env=env, client_env=client_env, limits=SMALL, user=(1000, 1000),
        ro_binds=[Path("/opt/toolchain")],
    )  # fmt: skip

    line = " ".join(argv)
    for flag in ("run --rm --name prototype-store-x", "--network none", "--read-only", "--user 1000:1000",
                 f"--memory {512 * MiB} --memory-swap {512 * MiB}", "--pids-limit 64", "--cpus 1.5",
                 "--cap-drop ALL", "--security-opt no-new-privileges", "--log-driver none", "--pull never",
                 f"--tmpfs /tmp:rw,nosuid,nodev,mode=1777,size={4 * MiB}", f"--ulimit fsize={8 * MiB}:{8 * MiB}",
                 f"--mount type=bind,source={workspace},target=/workspace ",
                 f"--mount type=bind,source={workspace}/.git,target=/workspace/.git,readonly",
                 "--mount type=bind,source=/opt/toolchain,target=/opt/toolchain,readonly",
                 "--workdir /workspace/src"):  # fmt: skip
        assert flag in line, flag
    assert argv[-5:] == ["--entrypoint", "bash", "debian:bookworm-slim", "-c", "make"]
    assert "t0k3n-value" not in line and "--env BUILD_TOKEN " in line
    assert client_env["BUILD_TOKEN"] == "t0k3n-value"  # the client hands it over by name


def test_a_missing_docker_cli_is_explained(workspace):
    class NotInstalled(DockerSandbox):
        executable = "docker-that-is-not-installed"

    with pytest.raises(SandboxError, match="docker CLI is not installed"):
        NotInstalled(workspace)


def test_a_missing_engine_is_explained(workspace):
    if NO_ENGINE is None:
        pytest.skip("a Docker engine answers here")
    if not shutil.which("docker"):
        pytest.skip("the docker CLI is not installed")

    with pytest.raises(SandboxError, match="No Docker engine answers"):
        DockerSandbox(workspace)


@pytest.fixture
def sandbox(workspace):
    return DockerSandbox(workspace, limits=SMALL)


@needs_engine
def test_a_command_runs_in_the_workspace_without_network_or_privileges(sandbox, workspace, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-do-not-leak")
    script = ("pwd; cat hello.txt; id -u; echo built > out.txt; env; echo x > /etc/x || echo read-only; "
              "cat /proc/self/status | grep CapEff; (echo > /dev/tcp/1.1.1.1/53) 2>&1 || echo no-network")  # fmt: skip

    result = sandbox.run(["bash", "-c", script], env={"BUILD_TOKEN": "t0k3n"})

    assert result.exit_code == 0, result.output
    assert result.output.startswith("/workspace\nhello from the repository\n1000\n")
    assert "BUILD_TOKEN=t0k3n" in result.output and "sk-ant-do-not-leak" not in result.output
    assert "read-only" in result.output and "no-network" in result.output
    assert "CapEff:\t0000000000000000" in result.output
    assert (workspace / "out.txt").read_text() == "built\n"


@needs_engine
def test_a_timeout_kills_the_container(sandbox):
    result = sandbox.run(["sleep", "60"], timeout=2)

    assert result.killed_reason == "timeout"
    time.sleep(0.5)
    left = subprocess.run(["docker", "ps", "-q", "--filter", "name=prototype-store-"], capture_output=True, text=True)
    assert left.stdout.strip() == ""


@needs_engine
def test_endless_output_is_stopped_in_docker_too(sandbox):
    result = sandbox.run(["yes"], timeout=30)

    assert result.killed_reason == "output_limit" and result.truncated


@needs_engine
def test_a_fork_bomb_and_a_memory_bomb_are_contained(sandbox):
    fork = sandbox.run(["bash", "-c", "bomb() { bomb | bomb & }; bomb; sleep 3"], timeout=10)
    memory = sandbox.run(["bash", "-c", "head -c 2G /dev/zero | tail > /dev/null; echo $?"], timeout=30)

    assert fork.duration < 10
    assert memory.exit_code != 0 or memory.output.strip() != "0"
