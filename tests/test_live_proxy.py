"""The live preview proxy (prototypes/live_proxy.py) in front of a real app on a Unix socket.

The app here is a small ASGI app served by uvicorn on a Unix socket in a thread, the way a preview
instance's sandbox exposes one; the proxy is driven through the store's own ASGI entry point
(store/asgi.py) with the Host of a live preview origin. The instance lifecycle (which instance runs,
on which socket) is the one thing replaced: `Lifecycle` below points at the test app's socket and
records what the proxy tells it. Access goes through the real `authorize` (store/previews.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
import uvicorn
from asgiref.sync import async_to_sync, sync_to_async
from django.core import signing
from django.test import TestCase

from prototypes import live_proxy
from prototypes.models import Build, Prototype, Revision, Target
from store.models import ShareLink
from tests import test_instances
from tests.test_pages import succeed

pytestmark = pytest.mark.django_db
# The instance tests' fixtures (a tiny served app, the starts asked for, cleanup), for the real-lifecycle test.
tiny_pyz, sent, cleanup = test_instances.tiny_pyz, test_instances.sent, test_instances.cleanup
ROOT = Path(__file__).resolve().parents[1]
DOMAIN = "localhost:8000"
SERVE = {"command": "python3 app.py", "port": 8080, "instances": "per-person"}
STREAM_HOLD = threading.Event()  # the /stream endpoint waits for this before sending its second half
STREAM_LOG: list[str] = []


# --- the app behind the proxy ----------------------------------------------------------------------


async def read_body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def the_app(scope, receive, send):
    """What a served prototype might do: echo what it was sent, redirect, set cookies, stream, chat."""
    if scope["type"] == "lifespan":
        return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept", "subprotocol": (scope.get("subprotocols") or [None])[0]})
        await send({"type": "websocket.send", "text": "hello from the app"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": "echo:" + message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})
    path = scope["path"]
    headers = [(b"content-type", b"application/json")]
    if path == "/redirect":
        await send({"type": "http.response.start", "status": 302, "headers": [(b"location", b"/echo?from=redirect")]})
        return await send({"type": "http.response.body", "body": b""})
    if path == "/cookie":
        cookies = [(b"set-cookie", b"sid=abc; Domain=localhost; Path=/; HttpOnly"),
                   (b"set-cookie", b"theme=dark; path=/; domain=.localhost"),
                   (b"set-cookie", b"__preview=forged; Path=/")]  # fmt: skip
        await send({"type": "http.response.start", "status": 200, "headers": headers + cookies})
        return await send({"type": "http.response.body", "body": b"{}"})
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first " * 1000, "more_body": True})
        released = await asyncio.get_running_loop().run_in_executor(None, STREAM_HOLD.wait, 5)
        STREAM_LOG.append("released" if released else "timed out")
        return await send({"type": "http.response.body", "body": b"rest", "more_body": False})
    body = await read_body(receive)
    echo = {
        "method": scope["method"], "path": path, "raw_path": scope.get("raw_path", b"").decode(),
        "query": scope["query_string"].decode(), "body": len(body), "tail": body[-16:].decode("latin-1"),
        "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
    }  # fmt: skip
    data = json.dumps(echo).encode()
    await send({"type": "http.response.start", "status": 201 if scope["method"] == "POST" else 200,
                "headers": headers + [(b"content-length", str(len(data)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": data})


@pytest.fixture(scope="module")
def app_socket():
    """The app, listening on a Unix socket (uvicorn in a thread, like an instance's exposed socket)."""
    folder = Path(tempfile.mkdtemp(prefix="live-app-"))
    path = folder / "app.sock"
    server = uvicorn.Server(uvicorn.Config(the_app, uds=str(path), log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the test app did not start on its socket"
    yield path
    server.should_exit = True
    thread.join(5)


@dataclass
class Lifecycle:
    """Contract B's web-tier functions, pointed at the test app: an instance 'runs' while `running`."""

    socket: Path
    running: bool = True
    state: str = "running"
    lost: list = field(default_factory=list)
    opened: list = field(default_factory=list)

    @staticmethod
    def instance_label(artifact_id: int, viewer: str) -> str:
        from prototypes.instances import instance_label

        return instance_label(artifact_id, viewer)

    def open_instance(self, artifact, viewer):
        self.opened.append((artifact.pk, viewer))
        state = "running" if self.running else self.state
        return SimpleNamespace(
            artifact=artifact, viewer=viewer, state=state, error="It crashed.", log_tail="Traceback: boom"
        )

    def instance_socket(self, instance):
        return self.socket if instance.state == "running" else None

    instance_address = instance_socket  # all on this host

    def instance_lost(self, instance):
        self.lost.append(instance)
        self.running, self.state = False, "starting"


@pytest.fixture
def live(settings, app_socket, monkeypatch):
    """The store's ASGI app with the proxy's lifecycle pointed at the test app; access checked on every
    request unless a test sets the cache window itself."""
    import store.asgi

    settings.LIVE_PREVIEW_DOMAIN = DOMAIN
    settings.LIVE_PREVIEW_SCHEME = "http"
    settings.LIVE_PREVIEW_ACCESS_CACHE = 0
    lifecycle = Lifecycle(app_socket)
    proxy = live_proxy.LiveProxy(store.asgi.authorize, lifecycle=lifecycle)
    monkeypatch.setattr(store.asgi, "live_proxy", proxy)
    # Without closing connections around each call: the test's transaction must stay open.
    monkeypatch.setattr(live_proxy, "in_db_thread", sync_to_async)
    return SimpleNamespace(app=store.asgi.application, lifecycle=lifecycle, proxy=proxy)


@pytest.fixture
def prototype(alice):
    target = Target.objects.create(slug="notes-app", name="Notes", kind="backend", git_url="/nowhere")
    prototype = Prototype.objects.create(slug="notes", title="Shared notes", owner=alice, target=target,
                                         visibility="company", listing="listed")  # fmt: skip
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="Add tags", author=alice)
    artifact = succeed(Build.objects.create(revision=revision), {}, kind="archive", filename="notes.tar.gz")
    artifact.metadata = {"serve": SERVE}
    artifact.save()
    prototype.refresh_from_db()
    prototype.artifact = artifact
    return prototype


# --- a small ASGI client ---------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: list
    chunks: list

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def header(self, name: str) -> list[str]:
        return [v.decode("latin-1") for k, v in self.headers if k.decode().lower() == name]

    def json(self):
        return json.loads(self.body)


def call(app, method: str, path: str, *, host: str, cookie: str = "", body=(b"",), headers=(), on_chunk=None) -> Answer:
    """One request through the ASGI app, the way uvicorn hands it over. Runs through async_to_sync, so
    the proxy's database work happens on this thread (inside the test's transaction)."""
    target, _, query = path.partition("?")
    raw = [(b"host", host.encode())] + [(k.encode(), v.encode()) for k, v in headers]
    if cookie:
        raw.append((b"cookie", cookie.encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": target, "raw_path": target.encode(), "query_string": query.encode(), "headers": raw,
             "client": ("10.1.2.3", 5555), "server": ("127.0.0.1", 8000)}  # fmt: skip
    answer = Answer(0, [], [])
    parts = list(body)

    async def run():
        async def receive():
            if parts:
                chunk = parts.pop(0)
                return {"type": "http.request", "body": chunk, "more_body": bool(parts)}
            await asyncio.Event().wait()  # the client stays connected

        async def send(message):
            if message["type"] == "http.response.start":
                answer.status, answer.headers = message["status"], message.get("headers", [])
            elif message["type"] == "http.response.body" and message.get("body"):
                answer.chunks.append(message["body"])
                if on_chunk:
                    on_chunk(message["body"])

        await app(scope, receive, send)

    async_to_sync(run)()
    return answer


def opened(live, url: str) -> tuple[str, str]:
    """Follow a live URL's open link: (host, the __preview cookie it set)."""
    parts = urlsplit(url)
    answer = call(live.app, "GET", f"{parts.path}?{parts.query}", host=parts.netloc)
    assert answer.status == 302, answer.body
    cookie = answer.header("set-cookie")[0]
    return parts.netloc, cookie.split(";")[0]


def url_for(prototype, **principal) -> str:
    from store.previews import live_url

    return live_url(prototype.artifact, **principal)


# --- access ----------------------------------------------------------------------------------------


def test_the_open_link_sets_a_host_only_cookie_and_redirects_to_the_app(live, bob, prototype):
    url = url_for(prototype, user=bob)
    parts = urlsplit(url)
    assert re.fullmatch(r"[a-z0-9]{20}\.localhost:8000", parts.netloc) and parts.path == "/__preview/open"
    answer = call(live.app, "GET", f"{parts.path}?{parts.query}", host=parts.netloc)
    assert answer.status == 302 and answer.header("location") == ["/"]
    cookie = answer.header("set-cookie")[0]
    attributes = [a.strip().lower() for a in cookie.split(";")[1:]]
    assert cookie.startswith("__preview=") and "httponly" in attributes and "samesite=lax" in attributes
    assert "path=/" in attributes and not any(a.startswith("domain") for a in attributes), cookie
    page = call(live.app, "GET", "/echo", host=parts.netloc, cookie=cookie.split(";")[0])
    assert page.status == 200 and page.json()["path"] == "/echo"


def test_requests_without_a_valid_cookie_get_a_plain_403_page_never_the_app(live, bob, prototype):
    host, cookie = opened(live, url_for(prototype, user=bob))
    forged = signing.dumps({"a": prototype.artifact.pk, "u": bob.pk, "p": "", "v": f"u{bob.pk}"}, salt="other")
    static = "__preview=" + __import__("store.previews").previews.preview_token(prototype.artifact, user=bob)
    for attempt in ["", "__preview=nonsense", f"__preview={forged}", static, "sid=abc"]:
        answer = call(live.app, "GET", "/echo", host=host, cookie=attempt)
        assert answer.status == 403, attempt
        assert b"You cannot open this preview" in answer.body and b'"path"' not in answer.body
    bad_open = call(live.app, "GET", "/__preview/open?t=" + forged, host=host)
    assert bad_open.status == 403 and not bad_open.header("set-cookie")
    assert live.lifecycle.opened == [], "a refused request never reaches the instance"
    assert call(live.app, "GET", "/echo", host=host, cookie=cookie).status == 200


def test_open_links_are_minted_on_the_click_and_an_old_one_opens_nothing(
    live, client, monkeypatch, alice, bob, prototype
):
    # The store's Open goes through a signed-in view that mints the instance's link there and then, so
    # no page carries a lasting capability; a link copied out of an address bar later is refused.
    # Nobody mints a link they may not have: a private prototype's Open, or a revoked share link's.
    link, token = ShareLink.create(prototype=prototype, created_by=alice)
    assert client.get(f"/s/{token}/artifacts/{prototype.artifact.pk}/open/").status_code == 302
    ShareLink.objects.filter(pk=link.pk).update(revoked=True)
    assert client.get(f"/s/{token}/artifacts/{prototype.artifact.pk}/open/").status_code == 404
    Prototype.objects.filter(pk=prototype.pk).update(visibility="private")
    client.force_login(bob)
    assert client.get(f"/p/{prototype.slug}/artifacts/{prototype.artifact.pk}/open/").status_code == 404
    assert client.get(f"/artifacts/{prototype.artifact.pk}/open/").status_code == 404
    Prototype.objects.filter(pk=prototype.pk).update(visibility="company")
    client.force_login(bob)
    clicked = client.get(f"/p/{prototype.slug}/artifacts/{prototype.artifact.pk}/open/")
    assert clicked.status_code == 302 and "/__preview/open?t=" in clicked["Location"]
    opened(live, clicked["Location"])
    client.logout()
    assert client.get(f"/p/{prototype.slug}/artifacts/{prototype.artifact.pk}/open/").status_code == 302  # sign in
    minted = time.time() - live_proxy.OPEN_LINK_MAX_AGE - 5
    monkeypatch.setattr("django.core.signing.time.time", lambda: minted)
    stale = urlsplit(url_for(prototype, user=bob))
    monkeypatch.undo()
    answer = call(live.app, "GET", f"{stale.path}?{stale.query}", host=stale.netloc)
    assert answer.status == 403 and not answer.header("set-cookie")


def test_a_token_for_one_instance_does_not_open_another(live, alice, bob, prototype):
    """Per-person instances: bob's token is refused on alice's origin, and an unknown label is refused."""
    bob_host, bob_cookie = opened(live, url_for(prototype, user=bob))
    alice_host = urlsplit(url_for(prototype, user=alice)).netloc
    assert alice_host != bob_host
    assert call(live.app, "GET", "/echo", host=alice_host, cookie=bob_cookie).status == 403
    assert call(live.app, "GET", "/echo", host="a" * 20 + "." + DOMAIN, cookie=bob_cookie).status == 403
    token = bob_cookie.split("=", 1)[1]
    assert call(live.app, "GET", "/__preview/open?t=" + token, host=alice_host).status == 403
    assert call(live.app, "GET", "/echo", host=bob_host, cookie=bob_cookie).status == 200


def test_access_taken_away_stops_the_next_request_within_the_cache_window(live, settings, alice, bob, carol, prototype):
    host, cookie = opened(live, url_for(prototype, user=bob))
    assert call(live.app, "GET", "/echo", host=host, cookie=cookie).status == 200
    Prototype.objects.filter(pk=prototype.pk).update(visibility="private")
    assert call(live.app, "GET", "/echo", host=host, cookie=cookie).status == 403

    prototype.collaborators.add(carol)
    carol_host, carol_cookie = opened(live, url_for(prototype, user=carol))
    assert call(live.app, "GET", "/echo", host=carol_host, cookie=carol_cookie).status == 200
    prototype.collaborators.remove(carol)
    assert call(live.app, "GET", "/echo", host=carol_host, cookie=carol_cookie).status == 403

    link, _ = ShareLink.create(prototype=prototype, created_by=alice)
    link_host, link_cookie = opened(live, url_for(prototype, share_link=link))
    assert call(live.app, "GET", "/echo", host=link_host, cookie=link_cookie).status == 200
    ShareLink.objects.filter(pk=link.pk).update(revoked=True)
    assert call(live.app, "GET", "/echo", host=link_host, cookie=link_cookie).status == 403

    # With a cache window, the answer is reused within it and asked again after it.
    settings.LIVE_PREVIEW_ACCESS_CACHE = 0.5
    Prototype.objects.filter(pk=prototype.pk).update(visibility="company")
    assert call(live.app, "GET", "/echo", host=host, cookie=cookie).status == 200
    Prototype.objects.filter(pk=prototype.pk).update(visibility="private")
    time.sleep(0.6)
    assert call(live.app, "GET", "/echo", host=host, cookie=cookie).status == 403


def test_the_preview_cookie_never_reaches_the_app_and_forwarded_headers_are_the_proxys(live, bob, prototype):
    host, cookie = opened(live, url_for(prototype, user=bob))
    answer = call(live.app, "GET", "/echo", host=host, cookie=f"theme=dark; {cookie}; sid=1",
                  headers=[("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-Host", "store.example.com")])  # fmt: skip
    seen = answer.json()["headers"]
    assert seen["cookie"] == "theme=dark; sid=1"
    assert "__preview" not in json.dumps(seen)
    assert seen["x-forwarded-for"] == "10.1.2.3" and seen["x-forwarded-host"] == host
    assert seen["x-forwarded-proto"] == "http" and seen["host"] == host
    alone = call(live.app, "GET", "/echo", host=host, cookie=cookie).json()["headers"]
    assert "cookie" not in alone


def test_domain_is_stripped_from_the_apps_cookies_and_it_cannot_set_the_preview_cookie(live, bob, prototype):
    host, cookie = opened(live, url_for(prototype, user=bob))
    answer = call(live.app, "GET", "/cookie", host=host, cookie=cookie)
    assert answer.header("set-cookie") == ["sid=abc; Path=/; HttpOnly", "theme=dark; path=/"]


def test_head_post_redirects_and_query_strings_pass_through_intact(live, bob, prototype):
    host, cookie = opened(live, url_for(prototype, user=bob))
    get = call(live.app, "GET", "/echo/a%2Fb?q=1&q=2&x=%20y", host=host, cookie=cookie).json()
    assert get["raw_path"] == "/echo/a%2Fb" and get["query"] == "q=1&q=2&x=%20y"
    head = call(live.app, "HEAD", "/echo", host=host, cookie=cookie)
    assert head.status == 200 and head.body == b"" and int(head.header("content-length")[0]) > 0
    body = [b"a" * 100_000, b"b" * 100_000, b"end"]
    post = call(live.app, "POST", "/echo", host=host, cookie=cookie, body=body,
                headers=[("content-length", str(200_003)), ("content-type", "text/plain")])  # fmt: skip
    assert post.status == 201 and post.json()["body"] == 200_003 and post.json()["tail"].endswith("bbbend")
    chunked = call(live.app, "PUT", "/echo", host=host, cookie=cookie, body=body,
                   headers=[("transfer-encoding", "chunked")]).json()  # fmt: skip
    assert chunked["method"] == "PUT" and chunked["body"] == 200_003
    redirect = call(live.app, "GET", "/redirect", host=host, cookie=cookie)
    assert redirect.status == 302 and redirect.header("location") == ["/echo?from=redirect"]


def test_response_bodies_stream_through_the_proxy(live, bob, prototype):
    """The first part of the answer reaches the browser while the app still holds back the rest: the
    proxy does not collect the body before passing it on."""
    host, cookie = opened(live, url_for(prototype, user=bob))
    STREAM_HOLD.clear()
    STREAM_LOG.clear()
    seen_before_release = []

    def on_chunk(chunk):
        if not STREAM_HOLD.is_set():
            seen_before_release.append(len(chunk))
            STREAM_HOLD.set()  # only now does the app send the rest

    answer = call(live.app, "GET", "/stream", host=host, cookie=cookie, on_chunk=on_chunk)
    assert STREAM_LOG == ["released"], "the app timed out: the proxy held the first chunk back"
    assert sum(seen_before_release) >= 6000 and answer.body.endswith(b"rest")


def test_websockets_relay_both_ways(live, bob, prototype):
    host, cookie = opened(live, url_for(prototype, user=bob))
    messages = []

    async def run():
        inbox = asyncio.Queue()
        for message in [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "hi"},
                        {"type": "websocket.receive", "bytes": b"abc"}]:  # fmt: skip
            inbox.put_nowait(message)
        got_replies = asyncio.Event()

        async def send(message):
            messages.append(message)
            if len([m for m in messages if m["type"] == "websocket.send"]) == 3:
                got_replies.set()

        async def receive():
            if inbox.empty():
                await got_replies.wait()
                return {"type": "websocket.disconnect", "code": 1000}
            return await inbox.get()

        scope = {"type": "websocket", "path": "/ws", "raw_path": b"/ws", "query_string": b"room=1",
                 "headers": [(b"host", host.encode()), (b"cookie", cookie.encode())], "subprotocols": ["chat"],
                 "scheme": "ws", "client": ("10.1.2.3", 5555)}  # fmt: skip
        await asyncio.wait_for(live.app(scope, receive, send), 10)

    async_to_sync(run)()
    assert messages[0] == {"type": "websocket.accept", "subprotocol": "chat"}
    replies = [m.get("text") or m.get("bytes") for m in messages if m["type"] == "websocket.send"]
    assert replies == ["hello from the app", "echo:hi", b"cba"]


def test_an_open_websocket_ends_when_access_is_taken_away(live, bob, prototype):
    host, cookie = opened(live, url_for(prototype, user=bob))
    messages = []

    async def run():
        connected = [{"type": "websocket.connect"}]
        closed = asyncio.Event()

        async def send(message):
            messages.append(message)
            if message["type"] == "websocket.close":
                closed.set()

        async def receive():
            if connected:
                return connected.pop()
            await closed.wait()
            return {"type": "websocket.disconnect", "code": 4403}

        scope = {"type": "websocket", "path": "/ws", "query_string": b"",
                 "headers": [(b"host", host.encode()), (b"cookie", cookie.encode())]}  # fmt: skip
        relay = asyncio.ensure_future(live.app(scope, receive, send))
        while len(messages) < 2:  # accepted, and the app's greeting
            await asyncio.sleep(0.05)
        await sync_to_async(Prototype.objects.filter(pk=prototype.pk).update)(visibility="private")
        await asyncio.wait_for(relay, 5)

    async_to_sync(run)()
    assert messages[-1] == {"type": "websocket.close", "code": 4403}


def test_a_websocket_without_access_is_refused(live, bob, prototype):
    host, _ = opened(live, url_for(prototype, user=bob))
    messages = []

    async def run():
        async def receive():
            return {"type": "websocket.connect"}

        async def send(message):
            messages.append(message)

        scope = {"type": "websocket", "path": "/ws", "query_string": b"", "headers": [(b"host", host.encode())]}
        await live.app(scope, receive, send)

    async_to_sync(run)()
    assert messages == [{"type": "websocket.close", "code": 4403}]


def test_a_dead_socket_gives_the_starting_page_and_reports_the_instance_lost(live, bob, prototype, tmp_path):
    host, cookie = opened(live, url_for(prototype, user=bob))
    live.lifecycle.socket = tmp_path / "gone.sock"  # the app died: nothing listens there any more
    answer = call(live.app, "GET", "/echo", host=host, cookie=cookie)
    assert answer.status == 200 and b"Starting Shared notes" in answer.body
    assert len(live.lifecycle.lost) == 1
    status = call(live.app, "GET", "/__preview/status", host=host, cookie=cookie)
    assert status.json() == {"state": "starting"}
    script = call(live.app, "GET", "/__preview/starting.js", host=host, cookie=cookie)  # the page's poll
    assert script.header("content-type")[0].startswith("text/javascript") and b"/__preview/status" in script.body


def test_a_failed_instance_shows_its_error_and_the_log_only_to_its_owner(live, alice, bob, prototype):
    live.lifecycle.running, live.lifecycle.state = False, "failed"
    bob_host, bob_cookie = opened(live, url_for(prototype, user=bob))
    page = call(live.app, "GET", "/", host=bob_host, cookie=bob_cookie)
    assert page.status == 200 and b"It crashed." in page.body and b"boom" not in page.body
    assert call(live.app, "GET", "/__preview/status", host=bob_host, cookie=bob_cookie).json() == {
        "state": "failed", "error": "It crashed."}  # fmt: skip
    alice_host, alice_cookie = opened(live, url_for(prototype, user=alice))
    assert b"Traceback: boom" in call(live.app, "GET", "/", host=alice_host, cookie=alice_cookie).body
    status = call(live.app, "GET", "/__preview/status", host=alice_host, cookie=alice_cookie).json()
    assert status["log"] == "Traceback: boom"


def test_the_store_never_answers_on_a_preview_origin(live, client, bob):
    client.force_login(bob)
    assert client.get("/healthz").status_code == 200  # the store, on its own host
    for host in ["www." + DOMAIN, "a" * 20 + "." + DOMAIN]:
        answer = call(live.app, "GET", "/healthz", host=host)
        assert answer.status == 403 and answer.body != b"ok"
    assert call(live.app, "GET", "/healthz", host="127.0.0.1:8000").body == b"ok"


# --- the store's pages -----------------------------------------------------------------------------


def test_the_prototype_and_install_pages_offer_open_first_and_download_second(live, client, bob, prototype):
    client.force_login(bob)
    for page in [f"/p/{prototype.slug}/", f"/p/{prototype.slug}/artifacts/{prototype.artifact.pk}/install/"]:
        html = client.get(page).content.decode()
        open_at, download_at = html.find('id="open-live"'), html.find("Download notes.tar.gz")
        assert 0 <= open_at < download_at, page
        href = re.search(r'id="open-live" href="([^"]+)"', html).group(1).replace("&amp;", "&")
        host, cookie = opened(live, client.get(href)["Location"])  # the store mints the link on the click
        assert call(live.app, "GET", "/echo", host=host, cookie=cookie).status == 200
    prototype.artifact.metadata = {}
    prototype.artifact.save()
    html = client.get(f"/p/{prototype.slug}/").content.decode()
    assert 'id="open-live"' not in html and "Download notes.tar.gz" in html


def test_a_share_link_page_opens_the_links_own_live_preview(live, client, alice, prototype):
    link, token = ShareLink.create(prototype=prototype, created_by=alice)
    html = client.get(f"/s/{token}/").content.decode()
    href = re.search(r'id="open-live" href="([^"]+)"', html).group(1).replace("&amp;", "&")
    host, cookie = opened(live, client.get(href)["Location"])  # minted on the click, for the link
    assert call(live.app, "GET", "/echo", host=host, cookie=cookie).status == 200
    ShareLink.objects.filter(pk=link.pk).update(revoked=True)
    assert call(live.app, "GET", "/echo", host=host, cookie=cookie).status == 403


def test_only_the_owner_and_admins_restart_reset_and_read_the_log(client, monkeypatch, alice, bob, ada, prototype):
    from prototypes import instances
    from prototypes.models import PreviewInstance

    shared = PreviewInstance.objects.create(artifact=prototype.artifact, viewer="shared", label="a" * 20,
                                            state="failed", error="It crashed.", log_tail="Traceback: boom")  # fmt: skip
    bobs = PreviewInstance.objects.create(artifact=prototype.artifact, viewer=f"u{bob.pk}", label="b" * 20)
    asked = []
    monkeypatch.setattr(instances, "restart_instance", lambda i: asked.append(("restart", i.pk)))
    monkeypatch.setattr(instances, "reset_instance", lambda i: asked.append(("reset", i.pk)))
    base = f"/p/{prototype.slug}/live/{shared.pk}/"

    client.force_login(bob)  # sees the prototype, does not own it
    assert 'id="live-instances"' not in client.get(f"/p/{prototype.slug}/").content.decode()
    for url in [base + "restart/", base + "reset/"]:
        assert client.post(url).status_code == 403
    assert client.get(base + "log/").status_code == 403 and asked == []

    client.force_login(alice)
    page = client.get(f"/p/{prototype.slug}/").content.decode()
    assert f'id="instance-{shared.pk}"' in page and f'id="instance-{bobs.pk}"' not in page  # bob's data is bob's
    assert client.post(base + "restart/").status_code == 302 and client.post(base + "reset/").status_code == 302
    assert asked == [("restart", shared.pk), ("reset", shared.pk)]
    log = client.get(base + "log/").content.decode()
    assert "Traceback: boom" in log and "It crashed." in log
    assert client.get(f"/p/{prototype.slug}/live/{bobs.pk}/log/").status_code == 404

    client.force_login(ada)
    assert client.get(f"/p/{prototype.slug}/live/{bobs.pk}/log/").status_code == 200


# --- through the real instance lifecycle ------------------------------------------------------------


def test_through_the_real_lifecycle_a_visit_starts_the_app_and_a_crash_restarts_it(
    settings, monkeypatch, alice, tiny_pyz, sent, cleanup
):
    """prototypes/instances.py and the app in its sandbox for real: the first visit gets the Starting
    page and asks for a start; once the worker started it, the app answers through the proxy; when its
    process dies, the next request gets the Starting page again (no error) and a new start is asked for."""
    import store.asgi
    from agents import serve as runtime
    from prototypes import instances
    from prototypes.models import PreviewInstance

    settings.LIVE_PREVIEW_DOMAIN, settings.LIVE_PREVIEW_SCHEME, settings.LIVE_PREVIEW_ACCESS_CACHE = DOMAIN, "http", 0
    monkeypatch.setattr(live_proxy, "in_db_thread", sync_to_async)
    monkeypatch.setattr(store.asgi, "live_proxy", live_proxy.LiveProxy(store.asgi.authorize))  # the real lifecycle
    artifact = test_instances.served_artifact(alice, tiny_pyz, mode="shared")
    app = store.asgi.application

    def visit(path="/", method="GET"):
        with TestCase.captureOnCommitCallbacks(execute=True):
            return call(app, method, path, host=host, cookie=cookie)

    from store.previews import live_url

    parts = urlsplit(live_url(artifact, user=alice))
    host = parts.netloc
    opening = call(app, "GET", f"{parts.path}?{parts.query}", host=host)
    cookie = opening.header("set-cookie")[0].split(";")[0]
    first = visit()
    assert first.status == 200 and b"Starting Tiny" in first.body and len(sent) == 1
    instances.start_instance(sent[0])  # the preview worker's part
    assert visit().body == b"greeting.txt"
    assert visit("/typed", "POST").status == 204 and visit().body == b"greeting.txt,typed.txt"

    instance = PreviewInstance.objects.get(pk=sent[0])
    runtime.stop_app(Path(instance.run_dir))  # the app's process dies
    after = visit()
    assert after.status == 200 and b"Starting Tiny" in after.body
    assert PreviewInstance.objects.get(pk=instance.pk).state in ("stopped", "starting")
    assert len(sent) == 2, "the next visit asks for a new start"
    instances.start_instance(sent[1])
    assert visit().body == b"greeting.txt,typed.txt"  # the same data, kept across the restart


# --- settings --------------------------------------------------------------------------------------


def live_settings(tmp_path, **env) -> subprocess.CompletedProcess:
    """LIVE_PREVIEW_* as a fresh store process computes them from its environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LIVE_PREVIEW_", "STORE_PORT", "SITE_URL"))}
    code = "from django.conf import settings as s; print(s.LIVE_PREVIEW_DOMAIN, s.LIVE_PREVIEW_SCHEME)"
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**clean, "VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "store.settings", **env},
    )  # fmt: skip


def test_live_previews_default_to_localhost_on_the_stores_port_and_refuse_a_domain_under_the_store(tmp_path):
    assert live_settings(tmp_path).stdout.split() == ["localhost:8000", "http"]
    assert live_settings(tmp_path, STORE_PORT="9123").stdout.split() == ["localhost:9123", "http"]  # runstore's port
    production = live_settings(
        tmp_path, SITE_URL="https://prototypes.example.com", LIVE_PREVIEW_DOMAIN="preview-example.com"
    )
    assert production.stdout.split() == ["preview-example.com", "https"]
    under = live_settings(tmp_path, SITE_URL="https://example.com", LIVE_PREVIEW_DOMAIN="previews.example.com")
    assert under.returncode != 0 and "must not be the store's domain or under it" in under.stderr
