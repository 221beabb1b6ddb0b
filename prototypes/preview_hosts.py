"""Several preview hosts: how the web tier reaches an instance that runs on another machine.

Each previews worker (one per host; PREVIEW_HOST_NAME names it, and instances record that name) serves an
internal route on PREVIEW_INTERNAL_LISTEN from the moment it is ready (`serve_internal_route`, started by
prototypes/tasks.py on worker_ready). The web tier's proxy (prototypes/live_proxy.py) connects to it when an
instance runs elsewhere, and asks, HTTP-style:

    CONNECT /instances/<id> HTTP/1.1
    X-Preview-Relay: <unix time> <hex HMAC-SHA256(PREVIEW_INTERNAL_SECRET, "preview-relay:<id>:<time>")>

The route refuses (403, then closes) anything without a valid MAC made within RELAY_WINDOW seconds, and
answers 404 for an instance that is not running here. Otherwise it answers 200 and from then on relays raw
bytes both ways between that connection and the instance's Unix socket: the proxy speaks HTTP or the
websocket protocol through it exactly as it does to a local socket.

Why this is safe enough: the route only ever opens sockets of instances this host runs (found by id in the
database, host and state checked), never an address the caller names; the secret is shared by the store's
own processes only (by default derived from SECRET_KEY); and the apps cannot reach it, as they run without a
network (agents/serve.py). It is plain TCP: run it on a private network, since anyone who can read that
traffic sees the preview's requests and could reuse a MAC within its window for the same instance.

Registry: each host keeps a PreviewHost row (its route's address and a heartbeat every
PREVIEW_HOST_HEARTBEAT seconds). The web tier cannot read another machine's /proc, so an instance on a host
whose heartbeat is older than PREVIEW_HOST_TIMEOUT counts as not running, and a route that does not answer
marks the instance lost at once (the proxy's instance_lost): either way the next visit starts it again, on
whichever live previews worker takes the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

log = logging.getLogger(__name__)
HEADER = "x-preview-relay"
RELAY_WINDOW = 30  # seconds a MAC is accepted either side of the route's clock (the hosts' clocks must agree)
HEAD_LIMIT = 8 * 1024  # the request head; anything longer is refused
HEAD_TIMEOUT = 5  # seconds a caller has to send its head
CHUNK = 64 * 1024
SCHEME = "relay://"

_started: dict[str, object] = {}  # the route this process serves, once started: "address", "thread"


# --- who am I, who is alive ----------------------------------------------------------------------------


def this_host() -> str:
    """The name this process's instances are recorded under (unique per previews worker)."""
    return settings.PREVIEW_HOST_NAME


def host_route(name: str) -> str | None:
    """The internal route address (host:port) of a preview host whose heartbeat is recent, else None: a host
    that stopped beating is lost, and so are the instances it ran."""
    from prototypes.models import PreviewHost

    fresh = timezone.now() - timedelta(seconds=settings.PREVIEW_HOST_TIMEOUT)
    row = PreviewHost.objects.filter(name=name, heartbeat_at__gte=fresh).values_list("address", flat=True).first()
    return row or None


def relay_address(host: str, instance_id: int) -> str | None:
    """Where the proxy reaches an instance of another host: relay://<route>/<id>, or None when that host is lost."""
    route = host_route(host)
    return f"{SCHEME}{route}/{instance_id}" if route else None


def is_relay(address: str) -> bool:
    return address.startswith(SCHEME)


# --- the MAC ---------------------------------------------------------------------------------------------


def relay_mac(instance_id: int, stamp: int) -> str:
    message = f"preview-relay:{instance_id}:{stamp}".encode()
    return hmac.new(settings.PREVIEW_INTERNAL_SECRET.encode(), message, hashlib.sha256).hexdigest()


def relay_header(instance_id: int, now: float | None = None) -> str:
    stamp = int(now if now is not None else time.time())
    return f"{stamp} {relay_mac(instance_id, stamp)}"


def valid_relay_header(instance_id: int, value: str, now: float | None = None) -> bool:
    """Whether `value` is a MAC for this instance made within RELAY_WINDOW seconds of now."""
    stamp_text, _, mac = value.strip().partition(" ")
    if not stamp_text.isdigit() or len(stamp_text) > 12:
        return False
    stamp = int(stamp_text)
    if abs((now if now is not None else time.time()) - stamp) > RELAY_WINDOW:
        return False
    return hmac.compare_digest(mac.strip().encode(), relay_mac(instance_id, stamp).encode())


# --- the web tier's side ----------------------------------------------------------------------------------


class RelayRefused(OSError):
    """The route answered, but not with a relay (the instance is not there, or the MAC was refused)."""


def _split(address: str) -> tuple[str, int, int]:
    parts = urlsplit(address)
    return parts.hostname or "", parts.port or 0, int(parts.path.strip("/"))


def dial_relay_blocking(address: str, timeout: float = 5) -> socket.socket:
    """A connected socket relayed to the instance of a relay:// address (raises OSError when the route does
    not answer or refuses). Blocking; the proxy runs it in a thread and takes the socket over."""
    host, port, instance_id = _split(address)
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(
            f"CONNECT /instances/{instance_id} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"X-Preview-Relay: {relay_header(instance_id)}\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            # One byte at a time: nothing after the head may be read here, it belongs to the app's answer.
            byte = sock.recv(1)
            if not byte or len(head) > HEAD_LIMIT:
                raise RelayRefused(f"the preview host at {host}:{port} closed the relay")
            head += byte
        status = head.split(b"\r\n", 1)[0]
        if status.split(b" ")[1:2] != [b"200"]:
            raise RelayRefused(f"the preview host at {host}:{port} answered {status.decode('latin-1')!r}")
        sock.settimeout(None)
        sock.setblocking(False)
        return sock
    except BaseException:
        sock.close()
        raise


async def dial_relay(address: str, timeout: float = 5) -> socket.socket:
    return await asyncio.to_thread(dial_relay_blocking, address, timeout)


# --- the preview worker's side: the route ---------------------------------------------------------------


def local_socket(instance_id: int) -> Path | None:
    """The socket of an instance this host runs, alive, else None. Never a path the caller chose."""
    from agents import serve as runtime
    from prototypes.models import PreviewInstance

    close_old_connections()
    try:
        row = (
            PreviewInstance.objects.filter(pk=instance_id, host=this_host(), state=PreviewInstance.State.RUNNING)
            .exclude(socket_path="")
            .values("run_dir", "socket_path")
            .first()
        )
    finally:
        close_old_connections()
    if row is None or not row["run_dir"] or not runtime.app_alive(Path(row["run_dir"])):
        return None
    return Path(row["socket_path"])


async def _answer(writer: asyncio.StreamWriter, status: str) -> None:
    writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
    with contextlib.suppress(OSError):
        await writer.drain()
    writer.close()


def parse_head(head: bytes) -> tuple[int | None, str]:
    """The instance id of a `CONNECT /instances/<id>` request head and its X-Preview-Relay value."""
    lines = head.decode("latin-1").split("\r\n")
    request = lines[0].split(" ")
    instance_id = None
    if len(request) == 3 and request[0] == "CONNECT" and request[1].startswith("/instances/"):
        number = request[1].removeprefix("/instances/")
        instance_id = int(number) if number.isdigit() and len(number) < 19 else None
    value = ""
    for line in lines[1:]:
        name, _, rest = line.partition(":")
        if name.strip().lower() == HEADER:
            value = rest.strip()
    return instance_id, value


async def handle_relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One connection to the internal route: authenticate, then relay to the instance's socket."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
        return await _answer(writer, "400 Bad Request")
    instance_id, value = parse_head(head)
    if instance_id is None or not valid_relay_header(instance_id, value):
        return await _answer(writer, "403 Forbidden")
    path = await asyncio.to_thread(local_socket, instance_id)
    if path is None:
        return await _answer(writer, "404 Not Found")
    try:
        app_reader, app_writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path), limit=CHUNK), 5)
    except (TimeoutError, OSError):
        return await _answer(writer, "502 Bad Gateway")
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    try:
        await asyncio.gather(_pipe(reader, app_writer), _pipe(app_reader, writer))
    finally:
        app_writer.close()
        writer.close()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until the source ends, then pass the end on (a half-close: the answer may still be coming)."""
    try:
        while data := await source.read(CHUNK):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
    except (OSError, RuntimeError):
        sink.close()  # one side is gone: the other direction ends too


def _listen_address() -> tuple[str, int]:
    host, _, port = settings.PREVIEW_INTERNAL_LISTEN.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port or 0)


def _reachable(listen_host: str) -> str:
    """The address others dial when none is configured: the listening one, or for a wildcard listen this
    machine's own address as its name resolves (a container's or pod's IP; set PREVIEW_INTERNAL_ADDRESS
    where that resolves to loopback)."""
    if listen_host not in ("0.0.0.0", "::", ""):
        return listen_host
    return socket.gethostbyname(socket.gethostname())


def beat(address: str) -> None:
    """Record this host's route and that it is alive (the registry row the web tier reads)."""
    from prototypes.models import PreviewHost

    close_old_connections()
    try:
        now = timezone.now()
        updated = PreviewHost.objects.filter(name=this_host()).update(address=address, heartbeat_at=now)
        if not updated:
            PreviewHost.objects.update_or_create(name=this_host(), defaults={"address": address, "heartbeat_at": now})
    finally:
        close_old_connections()


async def _serve(ready: threading.Event) -> None:
    listen_host, listen_port = _listen_address()
    server = await asyncio.start_server(handle_relay, listen_host, listen_port, limit=HEAD_LIMIT)
    port = server.sockets[0].getsockname()[1]
    advertised = settings.PREVIEW_INTERNAL_ADDRESS or f"{_reachable(listen_host)}:{port}"
    _started["address"] = advertised
    await asyncio.to_thread(beat, advertised)
    ready.set()
    log.info("preview host %s: internal route on %s:%s (reached at %s)", this_host(), listen_host, port, advertised)
    async with server:
        while True:
            await asyncio.sleep(settings.PREVIEW_HOST_HEARTBEAT)
            try:
                await asyncio.to_thread(beat, advertised)
            except Exception:  # the database away for a moment: the next beat tries again
                log.warning("preview host %s: heartbeat failed", this_host(), exc_info=True)


def serve_internal_route(timeout: float = 30) -> str:
    """Start the internal route in a daemon thread of this previews worker (once per process) and return
    the address it was registered under. It ends with the process, as the instances it relays to do."""
    if "address" in _started:
        return str(_started["address"])
    ready = threading.Event()
    failure: list[BaseException] = []

    def run():
        try:
            asyncio.run(_serve(ready))
        except BaseException as exc:  # reported to the caller when it happens before the route was ready
            failure.append(exc)
            ready.set()
            log.exception("preview host %s: the internal route stopped", this_host())

    thread = threading.Thread(target=run, name="preview-internal-route", daemon=True)
    thread.start()
    ready.wait(timeout)
    if failure:
        raise RuntimeError(f"the preview host's internal route could not start: {failure[0]}") from failure[0]
    _started["thread"] = thread
    return str(_started["address"])
