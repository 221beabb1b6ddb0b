"""Download memory: does serving a 1 GB artifact cost the server more memory than serving 1 MB?

Serves the store on loopback with a real ASGI server (uvicorn when installed, and daphne) from a
temporary VAR_DIR with its own SQLite, and downloads through the real download view
(/artifacts/<id>/download/, signed in) with a client that reads and discards the body. For each download
it prints the server process's peak RSS growth (VmHWM after the download, its peak counter reset before,
minus VmRSS before) and the throughput. Side by side in the same run:
- a 1 MB artifact: the baseline,
- a 1 GB artifact, whole, and its last 512 MB as a range (a resumed download),
- for contrast, the same 1 GB file served by a plain Django FileResponse (what the download views did
  before prototypes/downloads.py; the preview view still serves files that way): under ASGI Django collects
  the whole body in memory first.

    .venv/bin/python bench/download.py     # BENCH_DOWNLOAD_MB=1024 to change the size; --no-contrast to skip it
"""

from __future__ import annotations

import http.client
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIG_MB = int(os.environ.get("BENCH_DOWNLOAD_MB", "1024"))
SMALL_MB = 1
SLOW_MBPS = 50  # a client on a fast office network, slower than the server can read the file
FLOOR = 1 << 20  # growth below 1 MB is noise (allocator arenas, page granularity): ratios use at least this


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_file(path: Path, megabytes: int) -> None:
    """A file of real (non-sparse) bytes: every byte is read from the page cache as a real file would be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(1 << 20)
    with open(path, "wb") as out:
        for _ in range(megabytes):
            out.write(block)


def seed(var: Path) -> tuple[str, dict[str, str]]:
    """An owner, a prototype with a 1 MB and a 1 GB artifact, and a web artifact whose preview folder holds
    the 1 GB file. Returns a session cookie and the paths to fetch."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command

    from prototypes.models import Artifact, Build, Prototype, Revision, Target
    from prototypes.pipeline import preview_dir
    from store.previews import preview_token

    call_command("migrate", verbosity=0)
    owner = get_user_model().objects.create(username="alice")
    target = Target.objects.create(slug="podcast-api", name="Podcast API", kind="backend", git_url="/nowhere")
    prototype = Prototype.objects.create(slug="big", title="Big", owner=owner, target=target, listing="listed",
                                         visibility="company")  # fmt: skip
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="Ship it", author=owner)
    build = Build.objects.create(revision=revision, state=Build.State.SUCCEEDED)
    paths = {}
    big = settings.MEDIA_ROOT / f"artifacts/{build.pk}/big.bin"
    write_file(big, BIG_MB)
    write_file(settings.MEDIA_ROOT / f"artifacts/{build.pk}/small.bin", SMALL_MB)
    for name, kind, size in (("small.bin", "archive", SMALL_MB), ("big.bin", "archive", BIG_MB), ("web.zip", "web", 0)):
        artifact = Artifact.objects.create(build=build, kind=kind, filename=name, size=size << 20, sha256="0" * 64,
                                           content_type="application/octet-stream", file=f"artifacts/{build.pk}/{name}")  # fmt: skip
        paths[name] = f"/artifacts/{artifact.pk}/download/"
        if kind == "web":
            preview_dir(artifact).mkdir(parents=True)
            os.link(big, preview_dir(artifact) / "big.bin")  # the same bytes, no second gigabyte on disk
            paths["preview"] = f"/preview/{preview_token(artifact, user=owner)}/big.bin"
    session = SessionStore()
    session.update({"_auth_user_id": str(owner.pk), "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
                    "_auth_user_hash": owner.get_session_auth_hash()})  # fmt: skip
    session.create()
    return f"sessionid={session.session_key}", paths


def status(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux 4.0+; needs permission over the process)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def download(port: int, path: str, cookie: str, pid: int, headers: dict | None = None, rate: float = 0) -> dict:
    """Fetch path, discarding the body (at most `rate` MB/s when given: a slow client); the server's RSS
    growth at its peak, bytes, seconds."""
    before = status(pid)["VmRSS"]
    exact = reset_peak(pid)
    peak = [before]
    done = threading.Event()

    def sample():  # a fallback where the peak counter cannot be reset, and a check of it
        while not done.wait(0.01):
            try:
                peak[0] = max(peak[0], status(pid)["VmRSS"])
            except OSError:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    started = time.perf_counter()
    conn.request("GET", path, headers={"Cookie": cookie, "Host": "127.0.0.1", **(headers or {})})
    response = conn.getresponse()
    if response.status not in (200, 206):
        raise RuntimeError(f"{path} answered {response.status}: {response.read()[:300]!r}")
    received = 0
    while chunk := response.read(1 << 18):
        received += len(chunk)
        if rate:
            time.sleep(max(0.0, started + received / (rate * 2**20) - time.perf_counter()))
    seconds = time.perf_counter() - started
    conn.close()
    done.set()
    sampler.join()
    after = status(pid)
    high = max(after["VmHWM"], peak[0]) if exact else peak[0]
    return {"growth": max(high - before, 0), "bytes": received, "seconds": seconds, "exact": exact}


def serve(argv: list[str], port: int, env: dict) -> subprocess.Popen:
    server = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return server
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"{argv[2]} did not start") from None
            time.sleep(0.2)


def servers(port: int) -> dict[str, list[str]]:
    found = {}
    if importlib.util.find_spec("uvicorn"):
        found["uvicorn"] = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port),
                            "--no-access-log", "--lifespan", "off", "store.asgi:application"]  # fmt: skip
    found["daphne"] = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "store.asgi:application"]
    return found


def mb(n: float) -> str:
    return f"{n / 2**20:,.1f} MB"


def main() -> int:
    contrast = "--no-contrast" not in sys.argv
    var = Path(tempfile.mkdtemp(prefix="bench-download-"))
    os.environ.update({"VAR_DIR": str(var), "DJANGO_SETTINGS_MODULE": "store.settings", "DEBUG": "false",
                       "LOG_LEVEL": "WARNING", "DOWNLOAD_ACCEL_REDIRECT": ""})  # fmt: skip
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    rows = []
    try:
        cookie, paths = seed(var)
        for name, argv in servers(free_port()).items():
            port = int(argv[argv.index("--port" if "--port" in argv else "-p") + 1])
            server = serve(argv, port, os.environ.copy())
            try:
                download(port, paths["small.bin"], cookie, server.pid)  # warm up: imports, connections
                download(port, paths["big.bin"], cookie, server.pid, {"Range": "bytes=0-1048575"})
                runs = [
                    (f"{SMALL_MB} MB artifact (baseline)", paths["small.bin"], None),
                    (f"{BIG_MB} MB artifact", paths["big.bin"], None),
                    (f"{BIG_MB} MB artifact, last half (Range)", paths["big.bin"], {"Range": f"bytes=-{BIG_MB << 19}"}),
                    (
                        f"last {BIG_MB // 4} MB, client reading {SLOW_MBPS} MB/s",
                        paths["big.bin"],
                        {"Range": f"bytes=-{BIG_MB << 18}"},
                    ),
                ]
                if contrast:
                    runs.append((f"{BIG_MB} MB, plain FileResponse (contrast)", paths["preview"], None))
                for label, path, headers in runs:
                    rate = SLOW_MBPS if "client reading" in label else 0
                    rows.append((name, label, download(port, path, cookie, server.pid, headers, rate)))
            finally:
                server.terminate()
                try:
                    server.wait(10)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
    finally:
        shutil.rmtree(var, ignore_errors=True)

    exact = all(result["exact"] for _, _, result in rows)
    print(
        f"\nDownloads through the real view, loopback, server peak RSS growth ({'VmHWM' if exact else 'sampled VmRSS'})"
    )
    print("(ratios: growth over the 1 MB download's growth, each counted as at least 1 MB)")
    print(f"{'server':8} {'download':42} {'received':>12} {'peak RSS growth':>16} {'vs 1 MB':>8} {'MB/s':>8}")
    for server in dict.fromkeys(name for name, _, _ in rows):
        mine = [(label, result) for name, label, result in rows if name == server]
        base = max(mine[0][1]["growth"], FLOOR)
        for label, result in mine:
            rate = result["bytes"] / 2**20 / result["seconds"]
            ratio = max(result["growth"], FLOOR) / base
            print(f"{server:8} {label:42} {mb(result['bytes']):>12} {mb(result['growth']):>16} "
                  f"{ratio:>7.1f}x {rate:>8.0f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
