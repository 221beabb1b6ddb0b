"""An allowlisting HTTP proxy for recipe setup commands (standard library only).

Setup commands (`pip install`, `npm ci`) may need to download from the few hosts a target's admin
allowed. The sandbox keeps its own network namespace with only a loopback device, so nothing inside can
open a connection to anything. Instead this proxy runs in the worker and listens on a Unix socket in a
private directory; the directory is bind-mounted into the sandbox at INSIDE_DIR, and a forwarder started
inside (socat) exposes the socket on 127.0.0.1:3128, where HTTP_PROXY and HTTPS_PROXY point.

The proxy understands CONNECT (HTTPS tunnels: it never sees inside them) and plain-HTTP requests in
absolute form (`GET http://host/path`). It opens a connection only when:

- the host is a name, not an IP address: a bare IP could be anything, the cloud metadata service or
  the worker's own Redis;
- the name is one of the allowed hosts, exactly, or falls under a `*.example.com` wildcard (any name
  ending in `.example.com`, not `example.com` itself);
- the port is one of `ports` (80 and 443 unless told otherwise);
- the name is resolved once, and every address it resolves to is a public one: not loopback, private
  (10.0.0.0/8, 192.168.0.0/16, fc00::/7…), shared (100.64.0.0/10), link-local (169.254.169.254 is the
  cloud metadata service), multicast, unspecified, reserved or documentation, not an IPv6 form of such
  an IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64), and not an address of this machine's own network
  interfaces. One bad address refuses the name (an attacker's DNS answering "127.0.0.1" next to a
  public address is rebinding); the proxy then connects to the checked addresses themselves, never
  resolving the name again, so a second, different answer cannot slip in between check and use.
  A package mirror on the company's private network is out of reach unless the admin names its network
  (`private_networks`, the setting EGRESS_PRIVATE_NETWORKS): addresses inside a listed private range are
  then allowed for allowed names. Loopback, link-local, multicast and this machine's own addresses are
  refused whatever is listed, and only private ranges may be listed (`check_networks`).

Anything else is answered `403 Forbidden` with the reason in the body. Every decision is logged
(logger "agents.egress", host and port only, never paths or headers) and kept in `decisions`, so the
sandbox can tell the person which hosts were refused.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import selectors
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

log = logging.getLogger("agents.egress")

INSIDE_DIR = "/run/egress"  # where the socket's directory appears inside the sandbox
SOCKET_NAME = "proxy.sock"
INSIDE_PORT = 3128
HEAD_LIMIT = 64 * 1024  # request line and headers
HEAD_TIMEOUT = 30.0  # seconds a client has to send its request head
CHUNK = 64 * 1024
REASONS = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway", 503: "Service Unavailable"}
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "host", "te", "upgrade"}

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"^(?:\*\.)?{_LABEL}(?:\.{_LABEL})+$")
_NAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")

# What a command sees: the forwarder's address as its proxy, for every tool that reads these variables.
PROXY_ENV = {
    "HTTP_PROXY": f"http://127.0.0.1:{INSIDE_PORT}",
    "HTTPS_PROXY": f"http://127.0.0.1:{INSIDE_PORT}",
    "http_proxy": f"http://127.0.0.1:{INSIDE_PORT}",
    "https_proxy": f"http://127.0.0.1:{INSIDE_PORT}",
    "NO_PROXY": "localhost,127.0.0.1,::1",
    "no_proxy": "localhost,127.0.0.1,::1",
}

# Run inside the sandbox in front of the command: start socat on 127.0.0.1:3128 (the forwarder to the
# proxy's socket), wait until it listens (watching /proc/net/tcp costs no connection), then become the
# command. socat stays a child of the command and ends with the sandbox's pid namespace.
_FORWARD = f"""
command -v socat >/dev/null 2>&1 || {{
  echo "sandbox: socat is not installed in the sandbox, so this command cannot reach the network proxy" >&2
  exit 127
}}
socat TCP-LISTEN:{INSIDE_PORT},bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:{INSIDE_DIR}/{SOCKET_NAME} 2>/dev/null &
n=0
until grep -q '0100007F:{INSIDE_PORT:04X} 00000000:0000 0A' /proc/net/tcp 2>/dev/null; do
  n=$((n + 1))
  if [ "$n" -gt 500 ]; then echo "sandbox: the network forwarder did not start" >&2; exit 125; fi
  sleep 0.01
done
exec "$@"
"""


def forwarder_argv(argv: Sequence[str]) -> list[str]:
    """`argv` preceded by the forwarder (run with /bin/sh inside the sandbox)."""
    return ["/bin/sh", "-c", _FORWARD, "sandbox-egress", *argv]


def check_hosts(hosts: Iterable[str]) -> tuple[str, ...]:
    """The allowed hosts, lower-cased and without duplicates. Raises ValueError, naming the first
    entry that is not a host name (`pypi.org`) or a wildcard (`*.example.com`)."""
    if isinstance(hosts, str):
        raise ValueError("give a list of host names, not one string")
    result: list[str] = []
    for host in hosts:
        name = str(host).strip().lower().rstrip(".")
        if is_ip(name):
            raise ValueError(f"{host!r} is an IP address; only host names can be allowed")
        if len(name) > 253 or not _HOST.match(name):
            raise ValueError(f"{host!r} is not a host name like pypi.org, or a wildcard like *.example.com")
        if name not in result:
            result.append(name)
    return tuple(result)


def host_allowed(name: str, allowed: Iterable[str]) -> bool:
    return any(name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])) for pattern in allowed)


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def check_networks(networks: Iterable[str]) -> tuple[Network, ...]:
    """The private networks an admin opened to setup commands (a company package mirror), parsed.
    Raises ValueError for anything that is not a private range: listing 127.0.0.0/8, 169.254.0.0/16
    (the cloud metadata service), a public range or 0.0.0.0/0 would undo the check it relaxes."""
    parsed = []
    for text in networks:
        try:
            net = ipaddress.ip_network(str(text).strip(), strict=False)
        except ValueError as exc:
            raise ValueError(f"'{text}' is not a network (write it like 10.20.0.0/16)") from exc
        first, last = net.network_address, net.broadcast_address
        if not (first.is_private and last.is_private) or any(
            a.is_loopback or a.is_link_local or a.is_multicast or a.is_unspecified for a in (first, last)
        ):
            raise ValueError(f"{net} is not a private network; only private ranges may be opened to setup commands")
        parsed.append(net)
    return tuple(parsed)


def is_local_address(address: str, own: Iterable[str] = (), open_networks: Iterable[Network] = ()) -> bool:
    """True for the addresses the proxy never connects to: every address that is not globally
    reachable (loopback, private, shared, link-local, unspecified, reserved, documentation…), multicast,
    IPv6 forms of such IPv4 addresses (mapped, compatible, 6to4, Teredo, NAT64), and the addresses in
    `own` (this machine's interfaces). A private address inside one of `open_networks` (see
    `check_networks`) is allowed, unless it is one of `own`."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return True  # not an address at all: never connect
    candidates = [ip]
    if ip.version == 6:
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        # NAT64, and the old IPv4-compatible ::a.b.c.d form, carry an IPv4 address in the last 32 bits.
        if embedded is None and (any(ip in net for net in _NAT64) or int(ip) >> 32 == 0):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            candidates.append(embedded)
    mine = {ipaddress.ip_address(a.split("%")[0]) for a in own}
    opened = tuple(open_networks)

    def refused(c) -> bool:
        if c.is_multicast or c in mine or c.is_loopback or c.is_link_local or c.is_unspecified:
            return True
        return not c.is_global and not any(c.version == net.version and c in net for net in opened)

    return any(refused(c) for c in candidates)


def host_addresses() -> frozenset[str]:
    """The addresses of this machine's network interfaces (Linux /proc; empty where it is not there),
    so that an allowed name pointed at the worker's own public address is refused too."""
    found: set[str] = set()
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        lines = []
    for previous, line in zip(lines, lines[1:], strict=False):
        # "|-- 10.1.2.3" followed by "/32 host LOCAL" is an address of this machine.
        if line.strip() == "/32 host LOCAL" and "-- " in previous:
            found.add(previous.rsplit("-- ", 1)[1].strip())
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0]
            found.add(str(ipaddress.IPv6Address(int(raw, 16))))
    except (OSError, ValueError, IndexError):
        pass
    return frozenset(found)


def resolve_host(host: str) -> list[str]:
    return [info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)]


class Decision(NamedTuple):
    host: str
    port: int
    allowed: bool
    reason: str  # why it was refused, or "" when allowed


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class EgressProxy:
    """The proxy of one sandboxed command: `start()` it, bind `dir` into the sandbox, `stop()` it after.

    `owner` (uid, gid) is given the directory and the socket, so that the sandbox's user, and only it,
    may connect. `resolve` (host name → addresses) and `refuse_address` are there for tests, which
    point a made-up name at a server on 127.0.0.1 without any real DNS. By default every address that
    is not public, and every address of this machine (read when the proxy is made), is refused.
    """

    def __init__(
        self,
        allowed_hosts: Iterable[str],
        *,
        ports: Iterable[int] = (80, 443),
        owner: tuple[int, int] | None = None,
        resolve: Callable[[str], Sequence[str]] = resolve_host,
        refuse_address: Callable[[str], bool] | None = None,
        private_networks: Iterable[str] = (),
        connect_timeout: float = 15.0,
        max_connections: int = 64,
    ) -> None:
        self.allowed_hosts = check_hosts(allowed_hosts)
        self.ports = tuple(int(p) for p in ports)
        self.owner = owner
        self.resolve = resolve
        if refuse_address is None:
            own, opened = host_addresses(), check_networks(private_networks)
            refuse_address = lambda address: is_local_address(address, own, opened)  # noqa: E731
        self.refuse_address = refuse_address
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.decisions: list[Decision] = []
        self.dir: Path | None = None
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._wake: tuple[int, int] | None = None

    @property
    def socket_path(self) -> Path:
        assert self.dir is not None, "start() the proxy first"
        return self.dir / SOCKET_NAME

    # --- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> EgressProxy:
        self.dir = Path(tempfile.mkdtemp(prefix="sandbox-egress-"))  # mode 0700
        try:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(self.socket_path))
            os.chmod(self.socket_path, 0o600)
            if self.owner:
                os.chown(self.socket_path, *self.owner)
                os.chown(self.dir, *self.owner)
            listener.listen(self.max_connections)
            listener.setblocking(False)
        except OSError:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self._listener = listener
        self._wake = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="egress-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (their threads then end by themselves)."""
        if self._thread is None:
            return
        os.write(self._wake[1], b"x")
        self._thread.join(5)
        self._thread = None
        self._listener.close()
        for fd in self._wake:
            os.close(fd)
        with self._lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EgressProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def refusals(self, since: int = 0) -> str | None:
        """The refused hosts in one sentence for the person reading the command's output, or None.
        `since`: only decisions from that index on (a proxy kept for several commands, see
        agents/sandbox/session.py, reports each command's own)."""
        refused: dict[str, str] = {}
        for decision in list(self.decisions)[since:]:
            if not decision.allowed:
                refused.setdefault(_where(decision.host, decision.port), decision.reason)
        if not refused:
            return None
        listed = "; ".join(f"{where} ({reason})" for where, reason in refused.items())
        return f"the network proxy refused {listed}. Allowed hosts: {', '.join(self.allowed_hosts)}"

    # --- serving ------------------------------------------------------------------------------------
    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake[0], selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj == self._wake[0]:
                        return
                    try:
                        conn, _ = self._listener.accept()
                    except OSError:
                        continue
                    conn.setblocking(True)
                    with self._lock:
                        busy = len(self._open) >= 2 * self.max_connections
                    if busy:
                        _answer(conn, 503, "The sandbox's network proxy has too many open connections.")
                        conn.close()
                        continue
                    threading.Thread(target=self._handle, args=(conn,), name="egress-conn", daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        upstream = None
        self._track(conn)
        try:
            conn.settimeout(HEAD_TIMEOUT)
            head, rest = _read_head(conn)
            method, target, version, headers = _parse_head(head)
            if method == "CONNECT":
                url = urlsplit("//" + target)
            else:
                url = urlsplit(target)
                if url.scheme != "http":
                    raise Refused(
                        400, "Send plain-HTTP requests with an absolute http:// URL, and HTTPS through CONNECT."
                    )
            try:
                host, port = (url.hostname or "").rstrip("."), url.port or (443 if method == "CONNECT" else 80)
            except ValueError as exc:
                raise Refused(400, f"The request names an invalid port: {target[:200]!r}.") from exc
            upstream = self._connect(host, port)
            self._track(upstream)
            if method == "CONNECT":
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                first = rest
            else:
                first = _origin_request(method, url, version, headers) + rest
            conn.settimeout(None)
            if first:
                upstream.sendall(first)
            _splice(conn, upstream)
        except Refused as refused:
            _answer(conn, refused.status, refused.message)
        except OSError:
            pass  # the client or the server went away
        finally:
            for sock in (conn, upstream):
                if sock is not None:
                    self._untrack(sock)
                    sock.close()

    def _connect(self, host: str, port: int) -> socket.socket:
        """The decision for host:port, logged; a connected socket, or Refused with the reason."""
        status, reason, addresses = 403, "", []
        if not host:
            status, reason = 400, "no host"
        elif is_ip(host):
            reason = "an IP address: only host names can be allowed"
        elif not _NAME.match(host):
            reason = "not a valid host name"
        elif not host_allowed(host, self.allowed_hosts):
            reason = "not an allowed host"
        elif port not in self.ports:
            reason = f"port {port} is not allowed, only {', '.join(map(str, self.ports))}"
        else:
            try:
                found = list(self.resolve(host))
            except OSError:
                found = []
            # Every address is checked, and one bad address refuses the name; those checked are the
            # ones connected to below (the name is never resolved again).
            refused = [a for a in found if self.refuse_address(a)]
            addresses = [] if refused else found
            if not found:
                status, reason = 502, "the name could not be resolved"
            elif refused:
                reason = f"it resolves to {refused[0]}, an address the sandbox may not reach"
        if reason:
            self._decide(host, port, False, reason)
            raise Refused(status, f"The sandbox's network proxy refused {_where(host, port)}: {reason}.")
        self._decide(host, port, True, "")
        failure: OSError | None = None
        for address in addresses:
            try:
                return socket.create_connection((address, port), timeout=self.connect_timeout)
            except OSError as exc:
                failure = exc
        raise Refused(502, f"The sandbox's network proxy could not connect to {_where(host, port)}: {failure}.")

    def _decide(self, host: str, port: int, allowed: bool, reason: str) -> None:
        with self._lock:
            self.decisions.append(Decision(host, port, allowed, reason))
        if allowed:
            log.info("egress allowed: %s", _where(host, port))
        else:
            log.warning("egress refused: %s (%s)", _where(host, port), reason)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)


def _where(host: str, port: int) -> str:
    host = host[:253] or "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _read_head(conn: socket.socket) -> tuple[bytes, bytes]:
    """The request head (up to the blank line) and whatever the client sent after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > HEAD_LIMIT:
            raise Refused(400, "The request head is too long.")
        chunk = conn.recv(CHUNK)
        if not chunk:
            raise OSError("the client closed the connection")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise Refused(400, "This is an HTTP proxy: send an HTTP request or CONNECT.")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise Refused(400, "The request has a malformed header.")
        headers.append((name, value.strip()))
    return parts[0].upper(), parts[1], parts[2], headers


def _origin_request(method: str, url, version: str, headers: list[tuple[str, str]]) -> bytes:
    """A plain-HTTP request as the origin server expects it: path only, the URL's host as Host, no
    proxy headers, and one request per connection (so a kept-alive connection cannot be reused for
    another host)."""
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    lines = [f"{method} {path} {version}", f"Host: {url.netloc.rpartition('@')[2]}"]
    lines += [f"{name}: {value}" for name, value in headers if name.lower() not in HOP_BY_HOP]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _splice(client: socket.socket, upstream: socket.socket) -> None:
    """Copy both ways until both sides are done (or `stop()` shuts the sockets down)."""
    other = threading.Thread(target=_copy, args=(upstream, client), name="egress-copy", daemon=True)
    other.start()
    _copy(client, upstream)
    other.join()


def _copy(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(CHUNK):
            target.sendall(chunk)
    except OSError:
        pass
    try:
        target.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _answer(conn: socket.socket, status: int, message: str) -> None:
    body = (message + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    try:
        conn.sendall(head.encode() + body)
    except OSError:
        pass
