"""Live build events: latency from an event written by a worker to its arrival at the browsers following
the build.

Starts a real redis-server and the store's production web server (uvicorn, as `runstore` does) on
loopback with the Redis channel layer, connects websocket clients to one build as a signed-in person,
then writes events the way a build worker does (append_events: a database row, then a broadcast on
commit) and times each event's arrival at every client: arrival time minus the moment the worker began
writing the event. Two cases:

  one:  100 clients on one web process        goal: p50 under 10 ms, p99 under 100 ms
  two:  1,000 clients over two web processes  goal: p99 under 250 ms
        (two uvicorn processes on two ports, the clients split between them, one Redis channel layer)

The build already has a long history (BENCH_HISTORY events, a fifth of them model calls) and every
event written is a model call plus a log line, as in a real build: each frame carries the build's
summary as of its events, so a summary that re-read the build's history would grow with it here.

The clients run in several processes of their own (BENCH_CLIENT_PROCS per case), each measuring its
own event-loop lag: when the clients' lag is near the latency, the clients are the bottleneck, not
the store. Side by side, the same run measures the channel layer alone (group_send to 100 channels,
no server or websockets) as the baseline.

    .venv/bin/python bench/events.py    # BENCH_CASES=one,two BENCH_EVENTS BENCH_HISTORY BENCH_PROFILE=dir
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVENTS = int(os.environ.get("BENCH_EVENTS", "100"))
HISTORY = int(os.environ.get("BENCH_HISTORY", "2000"))
RATE = 20  # events per second, about what a busy build emits
# name: (clients, web processes, client processes, goal p50 ms or None, goal p99 ms)
CASES = {"one": (100, 1, 2, 10.0, 100.0), "two": (1000, 2, 4, None, 250.0)}
STAMP = re.compile(r"bench (\d+\.\d+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 120  # a busy shared machine starts Django slowly
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


# -- the clients: a process of their own (run as `bench/events.py --clients SPEC.json`) ----------------


async def clients_run(spec: dict) -> dict:
    """Connect spec["count"] websocket clients (over spec["urls"] in turn), say ready, and record each
    bench event's arrival. The arrival time is read as the frame comes off the socket, before anything
    else; the timestamp is found with a regular expression rather than parsing the whole frame. A
    ticker records how late this process's event loop runs (its lag): the clients' own cost."""
    import websockets

    latencies: list[float] = []
    lags: list[float] = []
    connected = 0
    ready = asyncio.Event()
    done = asyncio.Event()

    opening = asyncio.Semaphore(20)  # pages open a few at a time, as people arrive, not 1,000 at once

    async def one(url: str):
        nonlocal connected
        async with opening:
            socket_ = await websockets.connect(url, additional_headers={"Cookie": spec["cookie"],
                                               "Origin": spec["origin"]}, max_size=2**22, open_timeout=120)  # fmt: skip
        async with socket_:
            connected += 1
            if connected == spec["count"]:
                ready.set()
            seen = 0
            while seen < spec["expected"]:
                text = await socket_.recv()
                now = time.time()
                for stamp in STAMP.findall(text):
                    latencies.append(now - float(stamp))
                    seen += 1

    async def ticker():
        while not done.is_set():
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - before - 0.01)

    tasks = [asyncio.create_task(one(spec["urls"][n % len(spec["urls"])])) for n in range(spec["count"])]
    await asyncio.wait_for(ready.wait(), 120)
    Path(spec["ready"]).write_text("1")
    tick = asyncio.create_task(ticker())
    # Events that never arrive (a client left behind for good) are counted as missing, not waited for.
    _, late = await asyncio.wait(tasks, timeout=60 + 2 * spec["expected"] / RATE)
    for task in late:
        task.cancel()
    done.set()
    await tick
    return {"latencies": latencies, "lags": lags}


def clients_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    try:
        import uvloop

        uvloop.install()  # what uvicorn runs on too
    except ImportError:
        pass
    result = asyncio.run(clients_run(spec))
    Path(spec["out"]).write_text(json.dumps(result))
    return 0


# -- the worker side -------------------------------------------------------------------------------


def model_call(turn: int) -> tuple[str, dict]:
    return ("model_call", {"turn": turn, "model": "claude", "input_tokens": 100, "output_tokens": 20,
                           "cache_write_tokens": 0, "cache_read_tokens": 300, "cost": "0.0100",
                           "latency_ms": 900, "stop_reason": "tool_use", "price_version": "2025-01"})  # fmt: skip


def fill_history(build_id: int) -> None:
    """A build well under way: HISTORY events, a fifth of them model calls."""
    from prototypes.models import append_events

    items = []
    for n in range(HISTORY):
        items.append(model_call(n // 5 + 1) if n % 5 == 0 else ("log", {"text": f"line {n}"}))
    for start in range(0, len(items), 500):
        append_events(build_id, items[start : start + 500])


def emit_events(build_id: int) -> float:
    """Write EVENTS events at RATE a second as the worker does, each stamped with when writing began.
    Returns the worker's CPU seconds per event (the row, the summary, the broadcast)."""
    from prototypes.models import append_events

    turn = HISTORY // 5 + 1
    next_at = time.monotonic()
    cpu = 0.0
    for n in range(EVENTS):
        start = time.thread_time()
        append_events(build_id, [model_call(turn + n), ("log", {"text": f"bench {time.time():.6f}"})])
        cpu += time.thread_time() - start
        next_at += 1 / RATE
        time.sleep(max(0.0, next_at - time.monotonic()))
    return cpu / EVENTS


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far (user and system), from /proc: what it cost, whatever else ran."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def layer_baseline(count: int) -> list[float]:
    """The channel layer alone: one group_send reaching `count` channels through Redis."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    channels = [await layer.new_channel() for _ in range(count)]
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


def start_web(port: int, env: dict, log: Path) -> subprocess.Popen:
    """The production web server, started as `runstore` starts it."""
    argv = [sys.executable, "-m", "uvicorn", "store.asgi:application", "--host", "127.0.0.1", "--port", str(port),
            "--no-server-header", "--log-level", "warning", *os.environ.get("BENCH_UVICORN_ARGS", "").split()]  # fmt: skip
    return subprocess.Popen(argv, cwd=ROOT, env=env, stderr=open(log, "wb"))


def profile(pid: int, out: Path, seconds: float) -> subprocess.Popen | None:
    """py-spy (when installed) sampling a web process while the events flow: BENCH_PROFILE=dir."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("BENCH_PROFILE: py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return None
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "250",
                             "--duration", str(math.ceil(seconds)), "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def run_case(name: str, var: Path, env: dict, cookie: str) -> dict:
    from prototypes.models import Build, BuildEvent, Prototype, Revision

    clients, webs, procs, _, _ = CASES[name]
    prototype = Prototype.objects.get(slug="bench")
    number = prototype.revisions.count() + 1
    revision = Revision.objects.create(prototype=prototype, number=number, prompt="bench", author=prototype.owner)
    build = Build.objects.create(revision=revision)
    fill_history(build.pk)
    ports = [free_port() for _ in range(webs)]
    servers = [start_web(port, env, var / f"uvicorn-{name}-{port}.log") for port in ports]
    client_procs: list[subprocess.Popen] = []
    spies: list[subprocess.Popen] = []
    try:
        for port, server in zip(ports, servers, strict=True):
            wait_for_port(port, server, "uvicorn")
        last = BuildEvent.objects.filter(build=build).count()
        urls = [f"ws://127.0.0.1:{port}/ws/builds/{build.pk}/?after={last}" for port in ports]
        specs = []
        for n in range(procs):
            share = clients // procs + (1 if n < clients % procs else 0)
            # Each client process spreads its clients over every web process, so the split is even.
            spec = {"urls": urls[n % len(urls):] + urls[: n % len(urls)], "count": share, "cookie": cookie,
                    "origin": f"http://127.0.0.1:{ports[0]}", "expected": EVENTS,
                    "ready": str(var / f"ready-{name}-{n}"), "out": str(var / f"out-{name}-{n}.json")}  # fmt: skip
            path = var / f"spec-{name}-{n}.json"
            path.write_text(json.dumps(spec))
            specs.append(spec)
            client_procs.append(subprocess.Popen([sys.executable, __file__, "--clients", str(path)], cwd=ROOT, env=env))
        deadline = time.monotonic() + 180
        while not all(Path(s["ready"]).exists() for s in specs):
            if any(p.poll() not in (None, 0) for p in client_procs) or time.monotonic() > deadline:
                raise RuntimeError(f"the clients of case {name} could not connect")
            time.sleep(0.1)
        print(f"case {name}: {clients} websocket clients connected to {webs} web process(es)", file=sys.stderr)
        time.sleep(3)  # the pages' opening work (a look at the event table each) is over before the events
        if folder := os.environ.get("BENCH_PROFILE"):
            Path(folder).mkdir(parents=True, exist_ok=True)
            spies = [p for server in servers
                     if (p := profile(server.pid, Path(folder) / f"{name}-{server.pid}.txt", EVENTS / RATE))]  # fmt: skip
        processes = {p.pid: p for p in [*servers, *client_procs]}
        before = {pid: cpu_seconds(pid) for pid in processes}
        worker_cpu = emit_events(build.pk)
        # Sampled until the clients are done (a process's /proc entry goes with it).
        after = dict(before)
        while any(process.poll() is None for process in client_procs) and time.monotonic() < deadline + 300:
            for pid, process in processes.items():
                try:
                    after[pid] = cpu_seconds(pid) if process.poll() is None else after[pid]
                except OSError:
                    pass
            time.sleep(0.05)
        spent = {pid: after[pid] - before[pid] for pid in processes}
        for process in client_procs:
            if process.wait(120) != 0:
                raise RuntimeError(f"a client process of case {name} failed")
        for spy in spies:
            spy.wait(60)
        latencies, lags = [], []
        for spec in specs:
            result = json.loads(Path(spec["out"]).read_text())
            latencies += result["latencies"]
            lags += result["lags"]
        cpu = {"worker": worker_cpu, "web": sum(spent[s.pid] for s in servers) / EVENTS,
               "clients": sum(spent[p.pid] for p in client_procs) / EVENTS}  # fmt: skip
        return {"latencies": latencies, "lags": lags, "cpu": cpu, "load": os.getloadavg()[0]}
    finally:
        for process in [*client_procs, *servers]:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:  # uvicorn waits for open websockets to close
                    process.kill()


def main() -> int:
    if not shutil.which("redis-server"):
        print("redis-server is not installed (make installs it: apt-get install redis-server)", file=sys.stderr)
        return 1
    chosen = [c for c in os.environ.get("BENCH_CASES", "one,two").split(",") if c]
    var = Path(tempfile.mkdtemp(prefix="bench-events-"))
    redis_port = free_port()
    env = {**os.environ, "VAR_DIR": str(var), "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
           "DJANGO_SETTINGS_MODULE": "store.settings", "BUILD_EVENTS_POLL": "300"}  # fmt: skip
    os.environ.update(env)
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL)  # fmt: skip
    results = {}
    try:
        wait_for_port(redis_port, redis, "redis-server")
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.contrib.sessions.backends.db import SessionStore
        from django.core.management import call_command

        from prototypes.models import Prototype, Target

        call_command("migrate", verbosity=0)
        user = get_user_model().objects.create_user("bench", password="bench-pass")
        target = Target.objects.create(slug="bench", name="Bench", git_url="/nowhere")
        Prototype.objects.create(slug="bench", title="Bench", owner=user, target=target)
        session = SessionStore()
        session["_auth_user_id"] = str(user.pk)
        session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
        session["_auth_user_hash"] = user.get_session_auth_hash()
        session.create()
        cookie = f"{settings.SESSION_COOKIE_NAME}={session.session_key}"
        for name in chosen:
            results[name] = run_case(name, var, env, cookie)
        base = asyncio.run(layer_baseline(100))
    finally:
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(var, ignore_errors=True)

    def row(label, values):
        ms = [v * 1000 for v in values]
        return f"{label:52} {len(ms):>9} {statistics.median(ms):>8.1f} {percentile(ms, 0.99):>8.1f} {max(ms):>8.1f}"

    print(f"\n{EVENTS} events at {RATE}/s after {HISTORY} earlier ones, Redis channel layer, uvicorn, SQLite")
    print(f"{'path':52} {'arrivals':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    verdicts = []
    for name in chosen:
        clients, webs, procs, goal50, goal99 = CASES[name]
        full, lags = results[name]["latencies"], results[name]["lags"]
        print(row(f"worker event -> {clients} browsers, {webs} web process(es)", full))
        if len(full) < clients * EVENTS:
            print(f"  {clients * EVENTS - len(full)} arrivals missing after waiting {60 + 2 * EVENTS / RATE:.0f} s")
        print(row(f"  the clients' own event-loop lag ({procs} processes)", lags))
        cpu = results[name]["cpu"]
        print(f"  CPU ms per event: worker {cpu['worker'] * 1000:.1f}, web process(es) {cpu['web'] * 1000:.1f}, "
              f"clients {cpu['clients'] * 1000:.1f}; {(cpu['web'] * 1000) / clients * 1000:.0f} us per page "
              f"in the web process")  # fmt: skip
        # What the load alone asks of the machine, whatever else runs on it: when it nears the cores there
        # are, no latency goal can be met on this machine, and the line says so.
        need = (cpu["worker"] + cpu["web"] + cpu["clients"]) * RATE
        print(f"  at {RATE} events/s this case needs {need:.2f} of the {os.cpu_count()} cores "
              f"(load average {results[name]['load']:.1f} while it ran)")  # fmt: skip
        p50, p99 = statistics.median(full) * 1000, percentile(full, 0.99) * 1000
        ok = p99 < goal99 and (goal50 is None or p50 < goal50) and len(full) == clients * EVENTS
        goal = (f"p50 under {goal50:.0f} ms, " if goal50 else "") + f"p99 under {goal99:.0f} ms"
        verdicts.append((name, goal, ok))
    print(row("channel layer alone, 100 channels (baseline)", base))
    print()
    for name, goal, ok in verdicts:
        print(f"case {name}: goal {goal}: {'met' if ok else 'not met'}")
    print("met" if verdicts and all(ok for *_, ok in verdicts) else "not met")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--clients":
        sys.exit(clients_main(sys.argv[2]))
    sys.exit(main())
