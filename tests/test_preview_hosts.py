"""Several preview hosts (prototypes/preview_hosts.py): two previews worker processes on a real Redis broker,
each acting as a host of its own (its own PREVIEW_HOST_NAME, LIVE_PREVIEW_ROOT and internal route), and this
test process as the web tier of a third host. An instance started on host A is reached through A's internal
route; when A is killed, the next visit gets the Starting page and the instance starts on B."""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import zipapp
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from agents import serve as runtime
from prototypes import instances, preview_hosts
from prototypes.models import PreviewHost, PreviewInstance
from store.management.commands.runstore import preview_worker_argv
from tests import test_live_proxy
from tests.services import ROOT, celery_broker, redis_server, shared_database_env, wait_until
from tests.test_instances import served_artifact
from tests.test_live_proxy import DOMAIN, call

pytestmark = [
    pytest.mark.django_db(transaction=True),  # the workers must see the rows: commit them
    pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server (scripts/system-deps.sh)"),
]
State = PreviewInstance.State
# The proxy tests' fixtures (a test app on a Unix socket, the proxy with a lifecycle pointed at it).
app_socket, live, prototype = test_live_proxy.app_socket, test_live_proxy.live, test_live_proxy.prototype

# The app lists its data files at any path (the seed writes greeting.txt), keeps what is POSTed, and at
# /probe/<host>/<port> says whether it could open a TCP connection there (it should have no network at all).
PROBE_APP = r"""
import http.server, pathlib, socket, sys

args = sys.argv[1:]
if args[:1] == ["seed"]:
    pathlib.Path("data").mkdir(exist_ok=True)
    pathlib.Path("data/greeting.txt").write_text("hello")
    sys.exit(0)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/probe/"):
            _, _, host, port = self.path.split("/")
            try:
                socket.create_connection((host, int(port)), timeout=3).close()
                body = b"reached"
            except OSError as exc:
                body = type(exc).__name__.encode()
        else:
            body = ",".join(sorted(p.name for p in pathlib.Path("data").glob("*.txt"))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        pathlib.Path("data", self.path.strip("/") + ".txt").write_text("typed")
        self.send_response(204)
        self.end_headers()

http.server.ThreadingHTTPServer(("127.0.0.1", int(args[args.index("--port") + 1])), Handler).serve_forever()
"""


@pytest.fixture
def probe_pyz(tmp_path) -> bytes:
    source = tmp_path / "probe"
    source.mkdir()
    (source / "__main__.py").write_text(PROBE_APP)
    zipapp.create_archive(source, tmp_path / "probe.pyz", interpreter="/usr/bin/env python3")
    return (tmp_path / "probe.pyz").read_bytes()


@pytest.fixture
def redis():
    with redis_server() as server:
        yield server


@pytest.fixture
def short_root():
    """Hosts' LIVE_PREVIEW_ROOTs under a short path: a Unix socket path is limited to 107 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="ph-"))
    folder.chmod(0o755)  # the apps' sandbox user must reach the unpacked app (mkdtemp makes it private)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


class PreviewWorker:
    """A previews worker started as runstore starts one, acting as host `name`."""

    def __init__(self, name: str, root: Path, redis_url: str, log: Path):
        self.name, self.log = name, log
        env = shared_database_env(REDIS_URL=redis_url, PREVIEW_HOST_NAME=name, LIVE_PREVIEW_ROOT=str(root / name),
                                  PREVIEW_INTERNAL_LISTEN="127.0.0.1:0", PREVIEW_HOST_HEARTBEAT="2")  # fmt: skip
        with open(log, "ab") as out:
            self.process = subprocess_popen(preview_worker_argv(2, name=name), env, out)

    def wait_ready(self) -> str:
        """The address its internal route registered."""

        def registered():
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n{self.log.read_text(errors='replace')[-3000:]}")
            ready = " ready." in self.log.read_text(errors="replace")
            return ready and PreviewHost.objects.filter(name=self.name).values_list("address", flat=True).first()

        return wait_until(registered, timeout=60, what=f"{self.name} to register its internal route")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def subprocess_popen(argv, env, out):
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip


def raw_relay(address: str, request: bytes) -> bytes:
    """Send `request` to an internal route and return what it answered (up to the close, or 2 s of quiet)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        sock.settimeout(2)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            pass
        return answer


@pytest.fixture
def route(app_socket, monkeypatch):
    """An internal route served in a thread, relaying to the test app's socket as a host relays to the
    socket of one of its instances; yields its port."""
    monkeypatch.setattr(preview_hosts, "local_socket", lambda instance_id: app_socket)
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        asyncio.start_server(preview_hosts.handle_relay, "127.0.0.1", 0, limit=preview_hosts.HEAD_LIMIT)
    )
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield server.sockets[0].getsockname()[1]

    async def shut_down():  # the proxy keeps relayed connections alive: end their relays first
        server.close()
        relays = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in relays:
            task.cancel()
        await asyncio.gather(*relays, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(shut_down(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_http_streams_and_websockets_pass_through_a_hosts_internal_route(route, live, bob, prototype):
    live.lifecycle.socket = f"relay://127.0.0.1:{route}/42"  # the instance runs on another host
    test_live_proxy.test_websockets_relay_both_ways(live, bob, prototype)
    test_live_proxy.test_response_bodies_stream_through_the_proxy(live, bob, prototype)
    test_live_proxy.test_head_post_redirects_and_query_strings_pass_through_intact(live, bob, prototype)
    assert not live.lifecycle.lost, "nothing was lost on the way"


def test_a_relay_mac_is_bound_to_its_instance_and_expires():
    now = time.time()
    header = preview_hosts.relay_header(7, now)
    assert preview_hosts.valid_relay_header(7, header, now + 5)
    assert not preview_hosts.valid_relay_header(8, header, now), "a MAC for one instance opens no other"
    assert not preview_hosts.valid_relay_header(7, header, now + preview_hosts.RELAY_WINDOW + 5), "an old MAC"
    stamp, mac = header.split(" ")
    assert not preview_hosts.valid_relay_header(7, f"{stamp} {'0' * len(mac)}", now)
    assert not preview_hosts.valid_relay_header(7, "", now) and not preview_hosts.valid_relay_header(7, "x y", now)


def test_an_instance_is_reached_through_its_hosts_route_and_a_lost_host_moves_it(
    settings, monkeypatch, redis, short_root, alice, probe_pyz, tmp_path
):
    import store.asgi
    from prototypes import live_proxy
    from store.previews import live_url

    settings.PREVIEW_HOST_NAME = "host-w"  # this process is the web tier of a host that runs no instances
    settings.LIVE_PREVIEW_DOMAIN, settings.LIVE_PREVIEW_SCHEME, settings.LIVE_PREVIEW_ACCESS_CACHE = DOMAIN, "http", 0
    monkeypatch.setattr(store.asgi, "live_proxy", live_proxy.LiveProxy(store.asgi.authorize))  # the real lifecycle
    workers = [PreviewWorker("host-a", short_root, redis.url, tmp_path / "a.log")]
    try:
        with celery_broker(redis.url):
            route_a = workers[0].wait_ready()
            artifact = served_artifact(alice, probe_pyz, mode="shared")
            parts = urlsplit(live_url(artifact, user=alice))
            host = parts.netloc
            opening = call(store.asgi.application, "GET", f"{parts.path}?{parts.query}", host=host)
            cookie = opening.header("set-cookie")[0].split(";")[0]

            def visit(path="/", method="GET"):
                return call(store.asgi.application, method, path, host=host, cookie=cookie)

            first = visit()
            assert first.status == 200 and b"Starting Tiny" in first.body
            instance = PreviewInstance.objects.get(artifact=artifact, viewer="shared")

            def started():
                instance.refresh_from_db()
                return instance.state in (State.RUNNING, State.FAILED) and instance

            wait_until(started, timeout=60, what="host A to start the instance")
            assert (instance.state, instance.host) == (State.RUNNING, "host-a"), (instance.error, instance.log_tail)
            assert Path(instance.socket_path).is_relative_to(short_root / "host-a")

            # The web tier (host W) does not use A's socket, but A's internal route.
            assert instances.instance_socket(instance) is None
            assert instances.instance_address(instance) == f"relay://{route_a}/{instance.pk}"
            assert visit().body == b"greeting.txt"
            assert visit("/typed", "POST").status == 204 and visit().body == b"greeting.txt,typed.txt"

            # The route relays only with the right MAC, and only to its own running instances.
            target = f"CONNECT /instances/{instance.pk} HTTP/1.1\r\n".encode()
            get = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            assert raw_relay(route_a, target + b"\r\n" + get).startswith(b"HTTP/1.1 403")
            forged = f"X-Preview-Relay: {int(time.time())} {'ab' * 32}\r\n\r\n".encode()
            assert raw_relay(route_a, target + forged + get).startswith(b"HTTP/1.1 403")
            other = preview_hosts.relay_header(instance.pk + 1)  # valid, for an instance A does not run
            answer = raw_relay(route_a, f"CONNECT /instances/{instance.pk + 1} HTTP/1.1\r\n"
                                        f"X-Preview-Relay: {other}\r\n\r\n".encode())  # fmt: skip
            assert answer.startswith(b"HTTP/1.1 404"), answer
            signed = f"X-Preview-Relay: {preview_hosts.relay_header(instance.pk)}\r\n\r\n".encode()
            answer = raw_relay(route_a, target + signed + get)
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"greeting.txt,typed.txt"), answer

            # The app cannot reach the internal route (nor anything else: it has no network).
            port = route_a.rsplit(":", 1)[1]
            probe = visit(f"/probe/127.0.0.1/{port}").body
            assert probe != b"reached" and probe.endswith(b"Error"), probe

            workers.append(PreviewWorker("host-b", short_root, redis.url, tmp_path / "b.log"))
            workers[1].wait_ready()
            workers[0].kill()  # host A is lost, with its apps; its heartbeat is still recent

            lost = visit()
            assert lost.status == 200 and b"Starting Tiny" in lost.body, "a lost host gives the Starting page"
            instance.refresh_from_db()
            assert instance.state in (State.STOPPED, State.STARTING)
            assert b"Starting Tiny" in visit().body  # asks for the start, which only B can take
            wait_until(started, timeout=60, what="host B to start the instance again")
            assert (instance.state, instance.host) == (State.RUNNING, "host-b"), (instance.error, instance.log_tail)
            # It answers from B, seeded again there: what was typed on A stayed on A's disk.
            assert visit().body == b"greeting.txt"
    finally:
        for worker in workers:
            worker.kill()
        for run_dir in PreviewInstance.objects.exclude(run_dir="").values_list("run_dir", flat=True):
            runtime.stop_app(Path(run_dir))


def test_a_host_whose_heartbeat_stopped_counts_as_lost(settings, monkeypatch, alice, probe_pyz):
    """The web tier cannot see another machine's processes: an instance on a silent host is not running, and
    the next visit asks for a new start (a live host takes it)."""
    from django.utils import timezone

    from prototypes import tasks

    settings.PREVIEW_HOST_NAME = "host-w"
    artifact = served_artifact(alice, probe_pyz, mode="shared")
    instance = PreviewInstance.objects.create(
        artifact=artifact, viewer="shared", label="x" * 20, state=State.RUNNING, host="host-a",
        run_dir="/elsewhere/run/x", socket_path="/elsewhere/run/x/app.sock", started_at=timezone.now(),
    )  # fmt: skip
    PreviewHost.objects.create(name="host-a", address="10.0.0.5:7000", heartbeat_at=timezone.now())
    assert instances.instance_address(instance) == f"relay://10.0.0.5:7000/{instance.pk}"
    assert instances.open_instance(artifact, "shared").state == State.RUNNING  # trusted while A beats

    silent = timezone.now() - timedelta(seconds=settings.PREVIEW_HOST_TIMEOUT + 1)
    PreviewHost.objects.filter(name="host-a").update(heartbeat_at=silent)
    assert instances.instance_address(instance) is None
    sent = []
    monkeypatch.setattr(tasks.start_instance, "apply_async", lambda args, **kw: sent.append(args))
    again = instances.open_instance(artifact, "shared")
    assert again.state == State.STARTING and sent == [(instance.pk,)]
