"""Live build events: latency from an event written by a worker to its arrival at 100 browsers.

Starts a real redis-server and the store's ASGI server (daphne) on loopback with the Redis channel
layer, connects 100 websocket clients to one build as a signed-in person, then writes events the way
a build worker does (append_events: a database row, then a broadcast on commit) and times each
event's arrival at every client. Side by side, the same run measures the channel layer alone
(group_send to 100 channels, no server or websockets) as the baseline.

    .venv/bin/python bench/events.py          # goal: p99 under 100 ms with 100 clients
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "100"))
EVENTS = int(os.environ.get("BENCH_EVENTS", "100"))
RATE = 20  # events per second, about what a busy build emits


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited early")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not start")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def clients_run(url: str, cookie: str, origin: str, expected: int) -> list[float]:
    import websockets

    latencies: list[float] = []
    ready = asyncio.Event()
    connected = 0

    async def one():
        nonlocal connected
        async with websockets.connect(url, additional_headers={"Cookie": cookie, "Origin": origin},
                                      max_size=2**22) as socket_:  # fmt: skip
            connected += 1
            if connected == CLIENTS:
                ready.set()
            seen = 0
            while seen < expected:
                message = json.loads(await socket_.recv())
                now = time.time()
                for item in message.get("items", []):
                    if item.get("kind") == "note" and item.get("text", "").startswith("bench "):
                        sent = float(item["text"].split()[1])
                        latencies.append(now - sent)
                        seen += 1

    tasks = [asyncio.create_task(one()) for _ in range(CLIENTS)]
    await asyncio.wait_for(ready.wait(), 60)
    print(f"{CLIENTS} websocket clients connected", file=sys.stderr)
    (Path(os.environ["BENCH_READY"])).write_text("1")
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return latencies


def emit_events(build_id: int) -> None:
    from prototypes.models import append_events

    for _ in range(EVENTS):
        append_events(build_id, [("log", {"text": f"bench {time.time():.6f}"})])
        time.sleep(1 / RATE)


async def layer_baseline() -> list[float]:
    """The channel layer alone: one group_send reaching CLIENTS channels through Redis."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    channels = [await layer.new_channel() for _ in range(CLIENTS)]
    for name in channels:
        await layer.group_add("bench", name)
    latencies = []

    async def receive(name):
        message = await layer.receive(name)
        latencies.append(time.time() - message["t"])

    for _ in range(min(EVENTS, 50)):
        receivers = [asyncio.create_task(receive(name)) for name in channels]
        await asyncio.sleep(0.01)
        await layer.group_send("bench", {"type": "bench", "t": time.time()})
        await asyncio.gather(*receivers)
    for name in channels:
        await layer.group_discard("bench", name)
    return latencies


def main() -> int:
    if not shutil.which("redis-server"):
        print("redis-server is not installed (make installs it: apt-get install redis-server)", file=sys.stderr)
        return 1
    var = Path(tempfile.mkdtemp(prefix="bench-events-"))
    redis_port, web_port = free_port(), free_port()
    env = {**os.environ, "VAR_DIR": str(var), "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
           "DJANGO_SETTINGS_MODULE": "store.settings", "BUILD_EVENTS_POLL": "30"}  # fmt: skip
    os.environ.update(env)
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL)  # fmt: skip
    web = None
    try:
        wait_for_port(redis_port, redis, "redis-server")
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.contrib.sessions.backends.db import SessionStore
        from django.core.management import call_command

        from prototypes.models import Build, Prototype, Revision, Target

        call_command("migrate", verbosity=0)
        user = get_user_model().objects.create_user("bench", password="bench-pass")
        target = Target.objects.create(slug="bench", name="Bench", git_url="/nowhere")
        prototype = Prototype.objects.create(slug="bench", title="Bench", owner=user, target=target)
        revision = Revision.objects.create(prototype=prototype, number=1, prompt="bench", author=user)
        build = Build.objects.create(revision=revision)
        session = SessionStore()
        session["_auth_user_id"] = str(user.pk)
        session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
        session["_auth_user_hash"] = user.get_session_auth_hash()
        session.create()
        cookie = f"{settings.SESSION_COOKIE_NAME}={session.session_key}"

        web = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(web_port),
                                "store.asgi:application"], cwd=ROOT, env=env, stderr=open(var / "daphne.log", "wb"))  # fmt: skip
        wait_for_port(web_port, web, "daphne")

        ready = var / "ready"
        os.environ["BENCH_READY"] = str(ready)
        url = f"ws://127.0.0.1:{web_port}/ws/builds/{build.pk}/?after=0"
        result: dict = {}

        import threading

        def listen():
            result["latencies"] = asyncio.run(clients_run(url, cookie, f"http://127.0.0.1:{web_port}", EVENTS))

        listener = threading.Thread(target=listen)
        listener.start()
        while not ready.exists():
            if not listener.is_alive():
                raise RuntimeError("the clients could not connect")
            time.sleep(0.1)
        emit_events(build.pk)
        listener.join()
        if "latencies" not in result:
            print((var / "daphne.log").read_text()[-3000:], file=sys.stderr)
            return 1
        full = result["latencies"]
        base = asyncio.run(layer_baseline())
    finally:
        if web is not None:
            web.terminate()
            web.wait(10)
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(var, ignore_errors=True)

    def row(name, values):
        ms = [v * 1000 for v in values]
        return f"{name:44} {len(ms):>9} {statistics.median(ms):>9.1f} {percentile(ms, 0.99):>9.1f} {max(ms):>9.1f}"

    print(f"\n{CLIENTS} clients, {EVENTS} events at {RATE}/s, Redis channel layer, daphne, SQLite")
    print(f"{'path':44} {'arrivals':>9} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    print(row("worker event -> 100 browsers (full path)", full))
    print(row("channel layer alone (baseline)", base))
    p99_full, p99_base = percentile(full, 0.99), percentile(base, 0.99)
    print(f"\nfull path p99 / layer p99: {p99_full / p99_base:.1f}x   goal: full path p99 under 100 ms "
          f"({'met' if p99_full < 0.1 else 'not met'})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
