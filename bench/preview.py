"""Live previews: requests per second through the store's proxy against the same app on its own socket.

A temporary VAR_DIR with its own SQLite holds a version of the example server app (examples/targets/
notes-app, built into its .pyz here) with its recipe's [serve]. Its preview instance is started the
real way (prototypes.instances.start_instance: the app in the sandbox, in its own network namespace,
reachable only through its Unix socket). Then, in the same run, a client with a few keep-alive
connections asks for the app's front page a fixed number of times:
- direct: on the instance's Unix socket (the baseline: nothing of the store in between),
- through the store: uvicorn serving store.asgi:application as `make run` runs it, on loopback, with the
  Host of the instance's origin and the `__preview` cookie the open link sets — access check (cached
  for LIVE_PREVIEW_ACCESS_CACHE), label, instance lookup, streaming proxy to the same socket.
It prints both rates, their ratio and the goal (through the store at least 0.8 of direct).

    .venv/bin/python bench/preview.py        # BENCH_PREVIEW_REQUESTS=2000 BENCH_PREVIEW_CONNECTIONS=8
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "targets" / "notes-app"
REQUESTS = int(os.environ.get("BENCH_PREVIEW_REQUESTS", "1000"))  # per round and path
ROUNDS = int(os.environ.get("BENCH_PREVIEW_ROUNDS", "5"))  # alternating, so that other load on the machine hits both
CONNECTIONS = int(os.environ.get("BENCH_PREVIEW_CONNECTIONS", "8"))
PATH = os.environ.get("BENCH_PREVIEW_PATH", "/sign-in")  # a real page, open to anyone
GOAL = 0.8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_app(folder: Path) -> Path:
    """The notes app's .pyz, built the way its recipe builds it."""
    work = folder / "notes-app"
    shutil.copytree(APP, work, ignore=shutil.ignore_patterns("__pycache__", "build", "dist", ".git"))
    from agents.recipe import parse_recipe

    recipe = parse_recipe((work / "prototype.toml").read_text())
    subprocess.run(["/bin/sh", "-c", recipe.build.command], cwd=work, check=True, capture_output=True)
    return work / recipe.artifact.path, recipe


def seed(folder: Path):
    """A prototype whose version serves the notes app; its instance started for real. Returns the live
    URL (with the open link's token) and the instance."""
    from django.contrib.auth import get_user_model
    from django.core.files import File
    from django.core.management import call_command

    from prototypes import instances
    from prototypes.models import Artifact, Build, PreviewInstance, Prototype, Revision, Target
    from store.previews import live_url

    call_command("migrate", verbosity=0)
    for queue in ("queue", "queue-done", "queue-control"):  # the embedded broker's folders (no worker reads them here)
        (folder / "var" / queue).mkdir(parents=True, exist_ok=True)
    pyz, recipe = build_app(folder)
    owner = get_user_model().objects.create(username="alice")
    target = Target.objects.create(slug="notes-app", name="Notes", kind="backend", git_url="/nowhere")
    prototype = Prototype.objects.create(slug="notes", title="Notes", owner=owner, target=target, listing="listed",
                                         visibility="company")  # fmt: skip
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="Ship it", author=owner)
    build = Build.objects.create(revision=revision, state=Build.State.SUCCEEDED)
    artifact = Artifact(build=build, kind="pyz", filename=pyz.name, size=pyz.stat().st_size, sha256="0" * 64,
                        content_type="application/zip", metadata={"serve": asdict(recipe.serve)})  # fmt: skip
    with open(pyz, "rb") as handle:
        artifact.file.save(pyz.name, File(handle), save=True)
    url = live_url(artifact, user=owner)
    viewer = instances.viewer_key(recipe.serve, user=owner)
    instance = instances.open_instance(artifact, viewer)  # asks for a start (the task is not sent: no worker)
    instances.start_instance(instance.pk)  # what the preview worker does: here, in this process
    instance = PreviewInstance.objects.get(pk=instance.pk)
    if instances.instance_socket(instance) is None:
        raise RuntimeError(f"the app did not start: {instance.error}\n{instance.log_tail}")
    return url, instance


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
                raise RuntimeError("uvicorn did not start") from None
            time.sleep(0.2)


async def fetch_once(reader, writer, request: bytes) -> tuple[int, bool]:
    """One request on an open connection: (status, whether the connection can be used again)."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.read()  # until the server closes
        return status, False
    keep = lines[0].startswith("HTTP/1.1") and headers.get("connection", "").lower() != "close"
    return status, keep


async def load(open_connection, request: bytes, total: int, connections: int) -> float:
    """Requests per second for `total` requests over `connections` keep-alive connections (a fresh one
    whenever the server closes it)."""
    left = [total]
    statuses: dict[int, int] = {}

    async def worker():
        reader = writer = None
        while left[0] > 0:
            left[0] -= 1
            if writer is None:
                reader, writer = await open_connection()
            status, keep = await fetch_once(reader, writer, request)
            statuses[status] = statuses.get(status, 0) + 1
            if not keep:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    seconds = time.perf_counter() - started
    if set(statuses) != {200}:
        raise RuntimeError(f"unexpected answers: {statuses}")
    return total / seconds


def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="bench-preview-"))
    folder.chmod(0o711)  # the sandbox's user must reach the app folder under it
    port = free_port()
    os.environ.update({"VAR_DIR": str(folder / "var"), "DJANGO_SETTINGS_MODULE": "store.settings", "DEBUG": "false",
                       "LOG_LEVEL": "WARNING", "STORE_PORT": str(port), "LIVE_PREVIEW_DOMAIN": ""})  # fmt: skip
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from prototypes import instances

    server = instance = None
    try:
        url, instance = seed(folder)
        parts = urlsplit(url)
        host, socket_path = parts.netloc, instance.socket_path
        argv = [sys.executable, "-m", "uvicorn", "store.asgi:application", "--host", "127.0.0.1", "--port", str(port),
                "--no-server-header", "--log-level", "warning"]  # fmt: skip
        server = serve(argv, port, os.environ.copy())

        async def run() -> tuple[float, float]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            writer.close()
            cookie = next(line.split(":", 1)[1].split(";")[0].strip() for line in head.split("\r\n")
                          if line.lower().startswith("set-cookie:"))  # fmt: skip
            direct_request = f"GET {PATH} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            proxy_request = f"GET {PATH} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n\r\n".encode()

            def direct():
                return asyncio.open_unix_connection(socket_path)

            def proxied():
                return asyncio.open_connection("127.0.0.1", port)

            await load(direct, direct_request, 100, CONNECTIONS)  # warm up both paths
            await load(proxied, proxy_request, 100, CONNECTIONS)
            rates = []
            for _ in range(ROUNDS):
                rates.append((await load(direct, direct_request, REQUESTS, CONNECTIONS),
                              await load(proxied, proxy_request, REQUESTS, CONNECTIONS)))  # fmt: skip
            return rates

        rates = asyncio.run(run())
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        if instance is not None:
            instances.stop_instance(instance)
        shutil.rmtree(folder, ignore_errors=True)

    direct_rate = statistics.median(direct for direct, _ in rates)
    proxy_rate = statistics.median(proxied for _, proxied in rates)
    ratio = proxy_rate / direct_rate
    print(f"\nLive preview: GET {PATH} of the notes app (in its sandbox), {ROUNDS} rounds of {REQUESTS} requests "
          f"per path over {CONNECTIONS} connections, loopback; medians (range)")  # fmt: skip
    print(f"{'path':34} {'requests/s':>12} {'range':>14}")
    for name, rate, column in (
        ("direct to the app socket", direct_rate, 0),
        ("through the store (uvicorn+proxy)", proxy_rate, 1),
    ):
        low, high = min(r[column] for r in rates), max(r[column] for r in rates)
        print(f"{name:34} {rate:>12,.0f} {f'{low:,.0f}-{high:,.0f}':>14}")
    print(f"through the store / direct: {ratio:.2f} (goal >= {GOAL}): {'met' if ratio >= GOAL else 'not met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
