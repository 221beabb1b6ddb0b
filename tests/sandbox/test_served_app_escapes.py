"""Escapes from a served app (agents/serve.py): live previews run untrusted code that keeps running and
is reachable from the store, so it is attacked here the way test_escapes.py attacks build commands.

Each app is a small Python server whose start-up runs the attack and prints what happened before it
starts serving; the test reads the app's log once the store's health check got through. Like the rest
of this folder, `make test` runs this file as root (cgroups, a data disk of its own) and again as an
unprivileged user (rlimits only, a plain data folder): every test holds in both.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from agents.sandbox import SandboxLimits, cgroup
from agents.serve import AppSpec, RunningApp, is_healthy, start_app, stop_app

AS_ROOT = os.geteuid() == 0
MiB = 1024 * 1024
LIMITS = SandboxLimits(
    memory_bytes=256 * MiB,
    pids=64,
    cpus=1.0,
    cpu_seconds=60,
    file_size_bytes=8 * MiB,
    tmp_bytes=4 * MiB,
    home_bytes=1 * MiB,
    data_bytes=16 * MiB,
)
CGROUPS = cgroup.create(LIMITS)
if CGROUPS:
    CGROUPS.remove()

PROBE = """\
import http.server, os, socket, subprocess, sys, threading

def attack():
ATTACK

try:
    attack()
except Exception as exc:
    print("attack raised", type(exc).__name__, exc)
print("attack done", flush=True)

class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass

http.server.HTTPServer(("0.0.0.0", int(sys.argv[1])), Page).serve_forever()
"""


@pytest.fixture
def scratch():
    # Not pytest's tmp_path: when the worker is root the sandbox's user must reach the app's folders.
    path = Path(tempfile.mkdtemp(prefix="served-escape-"))
    path.chmod(0o711)
    started: list[Path] = []
    yield path, started
    for run_dir in started:
        stop_app(run_dir, timeout=0)
    shutil.rmtree(path, ignore_errors=True)


def serve_probe(scratch, attack: str, *, name: str = "a", port: int = 8080, **spec) -> tuple[RunningApp, str]:
    """Start a probe app whose start-up runs `attack` (the body of a function); returns it and what the
    attack printed."""
    root, started = scratch
    app = root / name / "app"
    (app / "data").mkdir(parents=True)
    (app / "probe.py").write_text(PROBE.replace("ATTACK", textwrap.indent(textwrap.dedent(attack), "    ")))
    for path in [root / name, app, app / "data", app / "probe.py"]:
        path.chmod(0o755)
    spec = AppSpec(
        app_dir=app,
        data_dir=root / name / "data",
        command=f"python3 -u probe.py {port}",
        port=port,
        limits=LIMITS,
        env={"PLAIN_SETTING": "visible"},
        **spec,
    )
    started.append(root / name / "run")
    running = start_app(spec, root / name / "run", seed=False)
    until = time.monotonic() + 10
    while "attack done" not in (text := running.log_path.read_text()) and time.monotonic() < until:
        time.sleep(0.05)
    assert "attack done" in text, text
    return running, text


def own_address() -> str:
    """This machine's non-loopback IPv4 address (a UDP connect sends nothing), else TEST-NET-1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            address = probe.getsockname()[0]
        except OSError:
            return "192.0.2.1"
    return address if not address.startswith("127.") else "192.0.2.1"


CONNECT = """
def connect(where, address, family=socket.AF_INET):
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(address)
        print(where, "CONNECTED")
    except OSError as exc:
        print(where, "refused:", exc.strerror)
"""


# --- secrets ----------------------------------------------------------------------------------------
def test_the_workers_environment_is_not_in_a_served_app(scratch, monkeypatch):
    secret = f"sk-ant-api03-served-{uuid.uuid4().hex}"
    monkeypatch.setenv("ANTHROPIC_API_KEY", secret)
    monkeypatch.setenv("DATABASE_URL", f"postgres://store:{secret}@db/store")
    attack = f"""
    print("env", sorted(os.environ))
    print("PLAIN_SETTING", os.environ.get("PLAIN_SETTING"))
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            for what in ("environ", "cmdline"):
                try:
                    if b"{secret[:20]}" in open(f"/proc/{{pid}}/{{what}}", "rb").read():
                        print("FOUND in", pid, what)
                except OSError:
                    pass
    print("worker visible:", os.path.exists("/proc/{os.getpid()}/environ"))
    """

    _, output = serve_probe(scratch, attack)

    assert secret not in output and "FOUND" not in output
    assert "ANTHROPIC" not in output and "DATABASE_URL" not in output
    names = eval(output.split("env ")[1].splitlines()[0])  # a printed list of names
    assert set(names) - {"PWD", "SHLVL", "_"} == {
        "HOME",
        "LANG",
        "PATH",
        "PLAIN_SETTING",
        "PORT",
        "USER",
    }  # bash adds 3
    assert "PLAIN_SETTING visible" in output
    assert "worker visible: False" in output or os.getpid() < 5


# --- the network ------------------------------------------------------------------------------------
def test_a_served_app_reaches_no_server_on_the_hosts_loopback_and_no_network(scratch):
    own = own_address()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    port = server.getsockname()[1]
    attack = CONNECT + textwrap.dedent(f"""
    connect("host loopback", ("127.0.0.1", {port}))
    connect("own address", ("{own}", {port}))
    connect("metadata", ("169.254.169.254", 80))
    for name in ("pypi.org", "localhost.localdomain"):
        try:
            socket.getaddrinfo(name, 443)
            print(name, "RESOLVED")
        except OSError:
            print(name, "not resolved")
    print("interfaces", sorted(n for _, n in socket.if_nameindex()))
    """)
    try:
        _, output = serve_probe(scratch, attack)
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()

    assert "CONNECTED" not in output and "RESOLVED" not in output
    assert "host loopback refused: Connection refused" in output
    assert "own address refused: Network is unreachable" in output
    assert "metadata refused: Network is unreachable" in output
    assert "interfaces ['lo']" in output


def test_a_served_app_cannot_reach_another_instance(scratch):
    abstract = f"served-b-{uuid.uuid4().hex}"
    other, _ = serve_probe(
        scratch,
        f"""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind("\\0{abstract}")
        listener.listen()
        threading.Thread(target=lambda: [listener.accept() for _ in iter(int, 1)], daemon=True).start()
        """,
        name="b",
        port=8081,
    )
    attack = CONNECT + textwrap.dedent(f"""
    connect("other port", ("127.0.0.1", 8081))
    connect("other abstract socket", "\\0{abstract}", socket.AF_UNIX)
    connect("other socket", "{other.socket_path}", socket.AF_UNIX)
    print("other run folder visible:", os.path.exists("{other.run_dir}"))
    print("/run exists:", os.path.exists("/run"))
    """)

    _, output = serve_probe(scratch, attack, name="a")

    assert "CONNECTED" not in output
    assert "other port refused: Connection refused" in output
    assert "other abstract socket refused: Connection refused" in output
    assert "other socket refused: No such file or directory" in output
    assert "other run folder visible: False" in output
    assert "/run exists: False" in output  # no backends bound: nothing of anyone else's
    assert is_healthy(other.socket_path, "/")  # the other instance itself works


# --- the filesystem ---------------------------------------------------------------------------------
def test_a_served_app_writes_only_its_data_folder(scratch):
    root, _ = scratch
    attack = """
    for place in ("/app", "/app/data/..", "/", "/run", "/usr/lib", "/etc", "/proc/sys/kernel", "/dev"):
        try:
            with open(os.path.join(place, "planted"), "w") as f:
                f.write("pwned")
            print("WROTE", place)
        except OSError as exc:
            print("refused", place, exc.strerror)
    try:
        with open("probe.py", "a") as f:
            f.write("pwned")
        print("WROTE probe.py")
    except OSError as exc:
        print("refused probe.py", exc.strerror)
    with open("data/kept.txt", "w") as f:
        f.write("mine")
    print("wrote data")
    """

    running, output = serve_probe(scratch, attack)

    assert "WROTE" not in output
    assert "refused /app Read-only file system" in output
    assert "refused probe.py" in output  # read-only, and not its file (as root it belongs to root)
    assert "wrote data" in output
    app = root / "a" / "app"
    assert sorted(p.name for p in app.iterdir()) == ["data", "probe.py"]
    assert list((app / "data").iterdir()) == []  # the folder in the artifact stays empty: data lives elsewhere
    assert not (app / "probe.py").read_text().endswith("pwned")
    assert not any(p.name == "planted" for p in running.run_dir.iterdir())
    stop_app(running.run_dir)
    data = root / "a" / "data"
    if (data / "disk.img").exists():  # a root worker: an image of its own, never mounted on the host
        assert (data / "disk.img").stat().st_mode & 0o777 == 0o600
        assert list((data / "mnt").iterdir()) == [] and not os.path.ismount(data / "mnt")
    else:  # a plain folder: the data is right there
        assert not AS_ROOT or not Path("/dev/loop-control").exists()
        assert (data / "files" / "kept.txt").read_text() == "mine"


def test_a_served_app_cannot_fill_more_than_its_data_disk(scratch):
    attack = """
    written = 0
    try:
        for n in range(16):
            with open(f"data/fill-{n}", "wb") as f:
                f.write(b"x" * (4 * 1024 * 1024))
            written += 4
    except OSError as exc:
        print("stopped:", exc.strerror)
    print("written MiB", written)
    try:
        with open("data/huge", "wb") as f:
            f.write(b"x" * (12 * 1024 * 1024))
        print("HUGE WRITTEN")
    except OSError as exc:
        print("huge refused:", exc.strerror)
    """

    _, output = serve_probe(scratch, attack)

    assert "HUGE WRITTEN" not in output
    assert "huge refused: File too large" in output or "huge refused: No space left on device" in output
    if AS_ROOT:  # a data disk of 16 MiB of its own
        assert "stopped: No space left on device" in output
        assert int(output.split("written MiB ")[1].split()[0]) <= 16


# --- resources --------------------------------------------------------------------------------------
def test_a_served_app_is_held_to_its_memory_and_process_limits(scratch):
    attack = """
    bomb = subprocess.run(
        [sys.executable, "-c", "chunks = []\\nwhile True: chunks.append(bytearray(16 * 1024 * 1024))"],
        capture_output=True, text=True,
    )
    print("memory bomb exit", bomb.returncode, "MemoryError" in bomb.stderr)
    threads = 0
    stop = threading.Event()
    try:
        for _ in range(1000):
            threading.Thread(target=stop.wait, daemon=True).start()
            threads += 1
    except RuntimeError as exc:
        print("threads refused:", exc)
    print("threads", threads)
    stop.set()
    """

    running, output = serve_probe(scratch, attack)

    code, memory_error = output.split("memory bomb exit ")[1].split()[:2]
    if CGROUPS:  # the cgroup's memory limit: the kernel killed it
        assert code == "-9", output
    else:  # RLIMIT_AS: the allocation failed
        assert code == "1" and memory_error == "True", output
    assert "threads refused: can't start new thread" in output
    assert int(output.split("threads ")[-1].split()[0]) < LIMITS.pids
    assert is_healthy(running.socket_path, "/"), "the app itself should still be up"


def test_nothing_a_served_app_started_outlives_its_stop(scratch):
    marker = f"served-daemon-{uuid.uuid4().hex}"
    attack = f"""
    subprocess.Popen(["bash", "-c", "setsid nohup bash -c 'sleep 1000; :' {marker} >/dev/null 2>&1 & disown"])
    subprocess.Popen(["bash", "-c", "sleep 999; :", "{marker}"], start_new_session=True)
    """
    running, _ = serve_probe(scratch, attack)
    until = time.monotonic() + 5
    while len(processes_with(marker)) < 2 and time.monotonic() < until:
        time.sleep(0.05)
    assert len(processes_with(marker)) == 2, "the daemons should have started: " + running.log_path.read_text()

    stop_app(running.run_dir)

    assert processes_with(marker) == []
    assert not is_healthy(running.socket_path, "/")


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
