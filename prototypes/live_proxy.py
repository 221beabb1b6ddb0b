"""The live preview proxy: a raw ASGI app that puts a running preview instance under its own origin.

Every instance is reached at http://<label>.<LIVE_PREVIEW_DOMAIN>/ (store/asgi.py sends every request
for such a host here, before Django: no store page, cookie or middleware ever answers on a preview
origin). The app behind it is untrusted code, so the proxy is the whole gate:

- `/__preview/open?t=<token>` takes the signed token the store minted when Open was clicked
  (store/previews.py `live_url`, through the store's open views), checks it — and that it is at most
  OPEN_LINK_MAX_AGE old, so the link is no lasting bearer capability — and keeps it in a host-only,
  HttpOnly `__preview` cookie; the app never sees that cookie, so it cannot replay it elsewhere.
- Every request then passes the cookie's token to `authorize` (given by store/asgi.py, so this module
  never imports the store). It re-checks, like the static preview tokens, that the person or share
  link the token names may still see the version; its answer is kept at most
  LIVE_PREVIEW_ACCESS_CACHE seconds. The token must also belong to this host's label: a token for one
  instance never opens another.
- A running instance gets the request streamed both ways (bodies are never collected whole), with
  X-Forwarded-* added, the `__preview` cookie removed, and `Domain=` taken out of the app's Set-Cookie
  so that an app can only set cookies for its own host. Websockets are relayed both ways.
- An instance that is not running, or whose socket does not answer (it crashed, or its host was lost),
  gets a "Starting…" page that polls `/__preview/status` and reloads when it is ready: never a 5xx page.

The instance lifecycle (prototypes/instances.py) is one boundary, `lifecycle`: tests pass their own.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

import h11
from channels.db import database_sync_to_async
from django.conf import settings
from django.template.loader import render_to_string

from prototypes import preview_hosts

# Database work runs on Django's thread for sync code, with stale connections closed around it as Django
# does per request (the proxy has no requests in Django's sense). Tests inside a transaction swap it.
in_db_thread = database_sync_to_async

COOKIE = "__preview"
RESERVED = "/__preview/"
LABEL = re.compile(r"[a-z0-9]{20}")
CHUNK = 64 * 1024
MAX_IDLE_CONNECTIONS = 16  # kept-alive connections per instance socket
MAX_CACHED_TOKENS = 10_000
WS_MAX_MESSAGE = 16 * 2**20
# The open link is minted by the store when Open is clicked (a signed-in page, or a share link), so it
# only has to live for the redirect: a link copied from the address bar later opens nothing.
OPEN_LINK_MAX_AGE = 120  # seconds
WS_RECHECK = 1.0  # seconds, at least, between access checks of an open websocket
# The proxy's own pages (Starting, refused) run nothing but their one script from this origin.
PAGE_CSP = (
    b"default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'"
)
# Hop-by-hop headers (RFC 9110 7.6.1) are about one connection, never forwarded; Host is set again.
HOP_BY_HOP = {
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection",
    b"te", b"trailer", b"transfer-encoding", b"upgrade",
}  # fmt: skip


@dataclass(frozen=True)
class Access:
    """What `authorize` answers for a token whose principal may still see the version."""

    artifact: Any  # the Artifact
    viewer: str  # the instance's viewer key (prototypes.instances.viewer_key)
    manager: bool = False  # the prototype's owner or an admin: may read the instance's error and log


def label_of(host: str, domain: str) -> str | None:
    """The instance label of a Host header on the live preview domain, else None. Hosts are compared
    without their port, case-insensitively (`domain` may carry one: localhost:8000)."""
    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    domain_name = domain.rsplit(":", 1)[0]
    hostname, domain_name = hostname.lower().rstrip("."), domain_name.lower()
    if not domain_name or not hostname.endswith("." + domain_name):
        return None
    return hostname[: -len(domain_name) - 1]


def is_live_host(host: str) -> bool:
    """Whether a request is for a live preview origin (anything under the domain: unknown labels too,
    so that the store itself never answers there)."""
    return label_of(host, settings.LIVE_PREVIEW_DOMAIN) is not None


def _header(scope, name: bytes) -> str:
    for key, value in scope.get("headers") or []:
        if key == name:
            return value.decode("latin-1")
    return ""


def preview_tokens(cookie_header: str) -> list[str]:
    """Every `__preview` value the browser sent (another preview origin's script can toss one more in
    with Domain=: the proxy takes the first that is valid for this host)."""
    tokens = []
    for part in cookie_header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            tokens.append(value.strip('"'))
    return tokens


def without_preview_cookie(cookie_header: str) -> str:
    """The Cookie header the app sees: its own cookies, never the store's token."""
    parts = [part.strip() for part in cookie_header.split(";")]
    return "; ".join(p for p in parts if p and p.partition("=")[0].strip() != COOKIE)


def host_only_set_cookie(value: str) -> str | None:
    """An app's Set-Cookie without its Domain attribute (so the cookie stays on this instance's host and
    can never be tossed onto the store's or another instance's), or None for one naming `__preview`."""
    name = value.split(";", 1)[0].partition("=")[0].strip()
    if name == COOKIE:
        return None
    parts = value.split(";")
    kept = [parts[0]] + [p for p in parts[1:] if p.strip().partition("=")[0].strip().lower() != "domain"]
    return ";".join(kept)


class _Lost(Exception):
    """The instance's socket did not answer."""


class _Gone(Exception):
    """The browser went away before its request was read."""


class _Upstream:
    """One HTTP/1.1 connection to an instance's Unix socket (h11 keeps the protocol honest)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reused: bool = False):
        self.reader, self.writer, self.reused = reader, writer, reused
        self.loop = asyncio.get_running_loop()  # streams belong to the event loop that opened them
        self.conn = h11.Connection(h11.CLIENT)

    async def write(self, event) -> None:
        data = self.conn.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()  # backpressure: a slow app slows the upload down, nothing piles up

    async def next_event(self):
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(await self.reader.read(CHUNK))

    def close(self) -> None:
        if not self.loop.is_closed():
            self.writer.close()


class LiveProxy:
    def __init__(self, authorize: Callable[[str], Access | None], lifecycle=None):
        self.authorize = authorize
        self._lifecycle = lifecycle
        self._grants: dict[str, tuple[float, Access | None]] = {}
        self._sockets: dict[tuple[int, str], tuple[float, Any, str]] = {}
        self._idle: dict[str, list[_Upstream]] = {}

    @property
    def lifecycle(self):
        if self._lifecycle is None:
            from prototypes import instances  # the real one, on first use (it needs the app registry)

            self._lifecycle = instances
        return self._lifecycle

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            return await self.websocket(scope, receive, send)
        if scope["type"] != "http":
            return
        label = label_of(_header(scope, b"host"), settings.LIVE_PREVIEW_DOMAIN) or ""
        path = scope["path"]
        if path == RESERVED + "open":
            return await self.open(scope, send, label)
        access = await self.access(scope, label)
        if access is None:
            return await self.refuse(scope, send)
        if path == RESERVED + "status":
            return await self.status(scope, send, access)
        if path == RESERVED + "starting.js":
            script = render_to_string("live/starting.js").encode()
            return await self.page(scope, send, 200, "text/javascript; charset=utf-8", script)
        if path.startswith(RESERVED):
            return await self.page(scope, send, 404, "text/plain", b"Not found.")
        instance, socket_path = await self.target(access)
        if socket_path is None:
            return await self.starting(scope, send, access, instance)
        try:
            await self.forward(scope, receive, send, socket_path)
        except _Gone:
            return
        except _Lost:
            await self.lose(access, instance, socket_path)
            await self.starting(scope, send, access, instance)

    # --- access ---------------------------------------------------------------------------------------

    async def access(self, scope, label: str) -> Access | None:
        for token in preview_tokens(_header(scope, b"cookie")):
            access = await self.check(token, label)
            if access is not None:
                return access
        return None

    async def check(self, token: str, label: str) -> Access | None:
        """The token's access if it is valid now and belongs to this host's label. The answer is kept
        for LIVE_PREVIEW_ACCESS_CACHE seconds (0: asked on every request), so taking access away stops
        the preview within that time."""
        if not LABEL.fullmatch(label):
            return None
        window = float(settings.LIVE_PREVIEW_ACCESS_CACHE)
        now = time.monotonic()
        cached = self._grants.get(token)
        if cached is not None and cached[0] > now:
            access = cached[1]
        else:
            access = await in_db_thread(self.authorize)(token)
            if window > 0:
                if len(self._grants) >= MAX_CACHED_TOKENS:
                    self._grants.clear()
                self._grants[token] = (now + window, access)
        if access is None or self.lifecycle.instance_label(access.artifact.pk, access.viewer) != label:
            return None
        return access

    async def open(self, scope, send, label: str):
        """Keep the token of a store link in a host-only cookie, then go to the app's front page."""
        token = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("t") or [""])[0]
        fresh = token and await in_db_thread(self.authorize)(token, max_age=OPEN_LINK_MAX_AGE)
        if not fresh or self.lifecycle.instance_label(fresh.artifact.pk, fresh.viewer) != label:
            return await self.refuse(scope, send)
        cookie = SimpleCookie()
        cookie[COOKIE] = token
        morsel = cookie[COOKIE]
        morsel["path"], morsel["httponly"], morsel["samesite"] = "/", True, "Lax"
        if scope.get("scheme") == "https" or settings.LIVE_PREVIEW_SCHEME == "https":
            morsel["secure"] = True
        headers = [(b"location", b"/"), (b"set-cookie", morsel.OutputString().encode("latin-1")),
                   (b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer")]  # fmt: skip
        await send({"type": "http.response.start", "status": 302, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    # --- the instance ------------------------------------------------------------------------------

    async def target(self, access: Access) -> tuple[Any, str | None]:
        """The instance for this access and its socket when it runs (asking the lifecycle to start it
        otherwise). A running instance's socket is remembered for the access cache's window, so a
        busy page costs the database one visit every few seconds, not one per request."""
        key = (access.artifact.pk, access.viewer)
        cached = self._sockets.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1], cached[2]
        instance, socket_path = await in_db_thread(self._open)(access)
        window = float(settings.LIVE_PREVIEW_ACCESS_CACHE)
        if socket_path is not None and window > 0:
            self._sockets[key] = (time.monotonic() + window, instance, socket_path)
        return instance, socket_path

    def _open(self, access: Access) -> tuple[Any, str | None]:
        instance = self.lifecycle.open_instance(access.artifact, access.viewer)
        # A socket path on this host, or relay://<host's internal route>/<id> for another host's instance.
        address = self.lifecycle.instance_address(instance)
        return instance, str(address) if address else None

    async def lose(self, access: Access, instance, socket_path: str) -> None:
        self._sockets.pop((access.artifact.pk, access.viewer), None)
        for upstream in self._idle.pop(socket_path, []):
            upstream.close()
        await in_db_thread(self.lifecycle.instance_lost)(instance)

    async def status(self, scope, send, access: Access):
        instance, socket_path = await in_db_thread(self._open)(access)
        # "running" only when the socket is there: a row that says running over a dead app is starting.
        state = "running" if socket_path else ("failed" if str(instance.state) == "failed" else "starting")
        body = {"state": state}
        if state == "failed":
            body["error"] = instance.error or "The app did not start."
            if access.manager:
                body["log"] = instance.log_tail or ""
        await self.page(scope, send, 200, "application/json", json.dumps(body).encode())

    # --- pages of the proxy's own ----------------------------------------------------------------------

    async def page(self, scope, send, status: int, content_type: str, body: bytes, extra=()):
        headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
                   (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"),
                   (b"content-security-policy", PAGE_CSP), *extra]  # fmt: skip
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})

    async def refuse(self, scope, send):
        html = render_to_string("live/refused.html", {"store_url": settings.SITE_URL})
        await self.page(scope, send, 403, "text/html; charset=utf-8", html.encode())

    async def starting(self, scope, send, access: Access, instance):
        """The page a person sees while the app starts (200, not an error: it reloads itself when ready),
        or the plain reason it failed — with the app's last log lines for its owner only."""
        prototype = access.artifact.build.revision.prototype
        failed = str(getattr(instance, "state", "")) == "failed"
        # A full-stack version starts its backends first; a backend's default branch may need building.
        backends = [
            b.get("target", "") for b in ((access.artifact.metadata or {}).get("serve") or {}).get("backends") or ()
        ]
        html = render_to_string("live/starting.html", {
            "title": prototype.title, "failed": failed, "error": getattr(instance, "error", "") if failed else "",
            "backends": backends,
            "log": getattr(instance, "log_tail", "") if failed and access.manager else "",
            "store_url": settings.SITE_URL,
        })  # fmt: skip
        await self.page(scope, send, 200, "text/html; charset=utf-8", html.encode(), [(b"retry-after", b"1")])

    # --- HTTP ----------------------------------------------------------------------------------------

    def request_headers(self, scope) -> list[tuple[bytes, bytes]]:
        """What the app is told: the browser's headers minus hop-by-hop ones, the store's cookie and any
        X-Forwarded-* the client made up, plus the proxy's own X-Forwarded-*."""
        headers = []
        for name, value in scope.get("headers") or []:
            if name in HOP_BY_HOP or name == b"content-length" or name.startswith(b"x-forwarded-"):
                continue
            if name == b"cookie":
                value = without_preview_cookie(value.decode("latin-1")).encode("latin-1")
                if not value:
                    continue
            headers.append((name, value))
        client = scope.get("client") or ("", 0)
        secure = scope.get("scheme") in ("https", "wss")
        headers += [(b"x-forwarded-for", str(client[0]).encode()),
                    (b"x-forwarded-proto", b"https" if secure else b"http"),
                    (b"x-forwarded-host", _header(scope, b"host").encode("latin-1"))]  # fmt: skip
        return headers

    async def connect(self, socket_path: str) -> _Upstream:
        idle = self._idle.get(socket_path)
        while idle:
            upstream = idle.pop()
            if upstream.loop is asyncio.get_running_loop():
                upstream.reused = True
                return upstream
            # Another event loop's (a server runs one; tests run many): unusable here, left to be collected.
        return await self._fresh(socket_path)

    def release(self, socket_path: str, upstream: _Upstream) -> None:
        if upstream.conn.our_state is h11.DONE and upstream.conn.their_state is h11.DONE:
            upstream.conn.start_next_cycle()
            idle = self._idle.setdefault(socket_path, [])
            if len(idle) < MAX_IDLE_CONNECTIONS:
                idle.append(upstream)
                return
        upstream.close()

    async def forward(self, scope, receive, send, socket_path: str):
        """Stream one request to the app and its answer back. Raises _Lost when the socket does not
        answer before the response began (the caller shows the Starting page instead)."""
        declared = _header(scope, b"content-length")
        chunked = "chunked" in _header(scope, b"transfer-encoding").lower()
        has_body = chunked or declared not in ("", "0")
        headers = self.request_headers(scope)
        if chunked:
            headers.append((b"transfer-encoding", b"chunked"))
        elif declared:
            headers.append((b"content-length", declared.encode("latin-1")))
        if not has_body:
            await self._send_body(receive, None)  # the (empty) request message, so that only a disconnect is left
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        request = h11.Request(method=scope["method"], target=target, headers=headers)
        # A kept-alive connection may have been closed by the app meanwhile: a request without a body
        # is sent again on a fresh one. Requests with a body always get a fresh connection (the body
        # is streamed, so it could not be sent twice).
        for attempt in range(2):
            upstream = await self.connect(socket_path) if not has_body else await self._fresh(socket_path)
            try:
                await upstream.write(request)
                if has_body:
                    await self._send_body(receive, upstream)
                await upstream.write(h11.EndOfMessage())
                response = await upstream.next_event()
                while isinstance(response, h11.InformationalResponse):
                    response = await upstream.next_event()
                if not isinstance(response, h11.Response):
                    raise h11.RemoteProtocolError("no response")
                break
            except _Gone:
                upstream.close()
                raise
            except (OSError, h11.ProtocolError, asyncio.IncompleteReadError) as exc:
                upstream.close()
                if upstream.reused and attempt == 0:
                    continue
                raise _Lost from exc
        await self._stream_response(scope, receive, send, upstream, response, socket_path)

    async def _fresh(self, socket_path: str) -> _Upstream:
        try:
            if preview_hosts.is_relay(socket_path):  # another host's instance, through its internal route
                sock = await preview_hosts.dial_relay(socket_path)
                reader, writer = await asyncio.open_connection(sock=sock, limit=CHUNK)
            else:
                reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(socket_path, limit=CHUNK), 5)
        except (TimeoutError, OSError) as exc:
            raise _Lost from exc
        return _Upstream(reader, writer)

    async def _send_body(self, receive, upstream: _Upstream | None) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Gone
            if message.get("body") and upstream is not None:
                await upstream.write(h11.Data(data=message["body"]))
            if not message.get("more_body", False):
                return

    async def _stream_response(self, scope, receive, send, upstream: _Upstream, response, socket_path: str):
        headers = []
        for name, value in response.headers:
            if name in HOP_BY_HOP:
                continue
            if name == b"set-cookie":
                cookie = host_only_set_cookie(value.decode("latin-1"))
                if cookie is None:
                    continue
                value = cookie.encode("latin-1")
            headers.append((name, value))
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        # Once the request is read, the only thing receive() can say is that the client left: then the
        # app's answer is not read further and its connection is dropped.
        gone = asyncio.ensure_future(receive())
        try:
            while True:
                event = await upstream.next_event()
                if isinstance(event, h11.Data):
                    if gone.done() and gone.result()["type"] == "http.disconnect":
                        upstream.close()
                        return
                    await send({"type": "http.response.body", "body": bytes(event.data), "more_body": True})
                elif isinstance(event, h11.EndOfMessage):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    self.release(socket_path, upstream)
                    return
                else:
                    raise h11.RemoteProtocolError("connection closed in the middle of a response")
        except (OSError, h11.ProtocolError):
            # Too late for a Starting page: the response began. End it; the browser sees a cut answer.
            upstream.close()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            gone.cancel()

    # --- websockets -----------------------------------------------------------------------------------

    async def websocket(self, scope, receive, send):
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        if (await receive())["type"] != "websocket.connect":
            return
        label = label_of(_header(scope, b"host"), settings.LIVE_PREVIEW_DOMAIN) or ""
        access = await self.access(scope, label)
        if access is None:
            return await send({"type": "websocket.close", "code": 4403})  # before accept: a 403 answer
        instance, socket_path = await self.target(access)
        if socket_path is None:
            return await send({"type": "websocket.close", "code": 1013})  # try again later
        query = scope.get("query_string", b"").decode("latin-1")
        uri = f"ws://{_header(scope, b'host')}{scope['path']}" + (f"?{query}" if query else "")
        forwarded = [(k.decode(), v.decode("latin-1")) for k, v in self.request_headers(scope)
                     if not k.startswith(b"sec-websocket-") and k not in (b"host", b"origin", b"user-agent")]  # fmt: skip
        try:
            if preview_hosts.is_relay(socket_path):  # the upgrade goes through the host's internal route
                dial = {"sock": await preview_hosts.dial_relay(socket_path)}
            else:
                dial = {"unix": True, "path": socket_path}
            upstream = await connect(
                uri, **dial, additional_headers=forwarded, origin=_header(scope, b"origin") or None,
                subprotocols=scope.get("subprotocols") or None, user_agent_header=_header(scope, b"user-agent") or None,
                compression=None, max_size=WS_MAX_MESSAGE, ping_interval=None, proxy=None, open_timeout=10,
            )  # fmt: skip
        except InvalidHandshake:
            return await send({"type": "websocket.close", "code": 1011})  # the app refused the upgrade
        except (TimeoutError, OSError):
            await self.lose(access, instance, socket_path)
            return await send({"type": "websocket.close", "code": 1013})
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})

        async def to_app():
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("text") if message.get("text") is not None else message.get("bytes")
                if data is not None:
                    try:
                        await upstream.send(data)
                    except ConnectionClosed:
                        return

        async def to_browser():
            try:
                async for data in upstream:
                    key = "text" if isinstance(data, str) else "bytes"
                    await send({"type": "websocket.send", key: data})
            except ConnectionClosed:
                pass
            code = upstream.close_code or 1000
            await send({"type": "websocket.close", "code": 1000 if code in (1005, 1006, 1015) else code})

        async def still_allowed():
            # A websocket is one long request: its access is checked again as often as the cache allows,
            # and the connection ends once it is gone (made private, a link revoked, a collaborator removed).
            while True:
                await asyncio.sleep(max(float(settings.LIVE_PREVIEW_ACCESS_CACHE), WS_RECHECK))
                if await self.access(scope, label) is None:
                    return await send({"type": "websocket.close", "code": 4403})

        tasks = [asyncio.ensure_future(job()) for job in (to_app, to_browser, still_allowed)]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await upstream.close()
