"""Pictures of a web prototype for the store: headless Chromium opens the unpacked preview at desktop
and phone sizes after a successful build, and Pillow makes the small WebP thumbnails the catalog shows.

The page is untrusted code. It is served by a throwaway HTTP server on loopback that serves only its
own folder, with the same CSP sandbox as the real preview, and the browser is kept off every other
address in layers: Playwright aborts any request not for that server (and every WebSocket), all other
traffic is sent to a proxy that refuses connections, host names do not resolve, and WebRTC may not
bypass the proxy. Chromium gets a scrubbed environment, so a compromised renderer finds no secrets
there. Chromium itself runs without its own sandbox (the worker runs as root here).

A missing browser never fails a build: `store_screenshots` returns the reason instead, for the log.
"""

from __future__ import annotations

import io
import logging
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

from django.core.files.base import ContentFile
from django.db import transaction
from PIL import Image

from prototypes.models import Revision, Screenshot

log = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright's own browser downloads are never used
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic", "--disable-default-apps", "--disable-extensions",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
]  # fmt: skip
# The policy web previews are served with: store/views.py serves previews with this same constant, so the
# pictures show what viewers see.
CSP = "sandbox allow-scripts allow-forms allow-popups allow-modals; default-src 'self' data: blob: 'unsafe-inline'"
TIMEOUT = 20.0  # seconds for the whole capture, browser start included
SETTLE = 3.0  # at most this long waiting for the network to go quiet after "load"


@dataclass(frozen=True)
class Viewport:
    size: str  # Screenshot.Size
    width: int
    height: int
    scale: int
    mobile: bool
    thumbnail_width: int


VIEWPORTS = (
    Viewport("desktop", 1280, 800, scale=1, mobile=False, thumbnail_width=480),
    Viewport("phone", 390, 844, scale=2, mobile=True, thumbnail_width=240),
)


@dataclass(frozen=True)
class Shot:
    size: str
    png: bytes
    thumbnail: bytes  # WebP
    width: int  # of the PNG, in pixels (the phone's is twice its viewport)
    height: int


class ScreenshotsUnavailable(Exception):
    """Screenshots could not be taken; the message says why in plain words."""


def capture(folder: Path, entry: str = "index.html") -> list[Shot]:
    """Screenshots of `entry` in `folder` at every viewport, desktop first. Raises ScreenshotsUnavailable."""
    # Playwright's sync API refuses to run in a thread with a running asyncio loop (an ASGI worker);
    # a thread of our own never has one, so this is safe to call from anywhere.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="screenshots") as pool:
        return pool.submit(_capture, Path(folder), entry).result()


def store_screenshots(revision: Revision, folder: Path, entry: str = "index.html") -> str | None:
    """Take the revision's screenshots, replacing any it had. Returns None when they were saved, or the
    plain reason they were skipped: screenshots never fail a build."""
    try:
        shots = capture(folder, entry)
    except ScreenshotsUnavailable as exc:
        return str(exc)
    except Exception:  # noqa: BLE001 - a bug here must not fail a build that succeeded
        log.exception("screenshots of revision %s failed", revision.pk)
        return "something went wrong taking them (the worker log has the details)"
    old = list(revision.screenshots.all())
    new: list[Screenshot] = []
    try:
        with transaction.atomic():
            Screenshot.objects.filter(pk__in=[row.pk for row in old]).delete()
            for shot in shots:
                row = Screenshot(revision=revision, size=shot.size)
                new.append(row)
                # Named content: Django reads width and height only from a file with a name.
                row.image.save(f"{shot.size}.png", ContentFile(shot.png, name=f"{shot.size}.png"), save=False)
                row.thumbnail.save(f"{shot.size}.webp", ContentFile(shot.thumbnail), save=False)
                row.save()
    except Exception:  # noqa: BLE001 - storage or database trouble: keep the old pictures, drop the new files
        log.exception("screenshots of revision %s could not be saved", revision.pk)
        _delete_files(new)
        return "they could not be saved (the worker log has the details)"
    transaction.on_commit(partial(_delete_files, old))
    return None


def _delete_files(rows: list[Screenshot]) -> None:
    for row in rows:
        for picture in (row.image, row.thumbnail):
            if picture:
                picture.delete(save=False)


def _capture(folder: Path, entry: str) -> list[Shot]:
    deadline = time.monotonic() + TIMEOUT
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import TimeoutError as PlaywrightTimeout
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise ScreenshotsUnavailable("Playwright is not installed") from None
    if not os.access(CHROMIUM, os.X_OK) or not Path(CHROMIUM).is_file():
        raise ScreenshotsUnavailable(f"Chromium is not installed (no {CHROMIUM})")
    root = folder.resolve()
    page = (root / entry).resolve()
    if not page.is_relative_to(root) or not page.is_file():
        raise ScreenshotsUnavailable(f"the preview has no page called {entry}")

    with _serve(root) as origin, _refusing_port() as dead_port, tempfile.TemporaryDirectory() as home:
        url = f"{origin}/{quote(page.relative_to(root).as_posix())}"
        try:
            playwright = sync_playwright().start()
        except Exception as exc:  # noqa: BLE001 - its driver fails in many ways; all mean "no browser"
            raise ScreenshotsUnavailable(f"Playwright could not start: {_first_line(exc)}") from None
        try:
            try:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM,
                    args=[
                        *CHROMIUM_ARGS,
                        f"--proxy-server=http://127.0.0.1:{dead_port}",
                        # Our server is reached directly; everything else, other loopback ports
                        # included (Chromium never proxies loopback unless told), goes to the proxy.
                        f"--proxy-bypass-list=<-loopback>;{origin.removeprefix('http://')}",
                        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                    ],
                    env={"PATH": "/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8"},
                    timeout=_left(deadline),
                )
            except PlaywrightError as exc:
                raise ScreenshotsUnavailable(f"Chromium could not start: {_launch_error(exc)}") from None
            try:
                return [_shoot(browser, url, origin, viewport, deadline) for viewport in VIEWPORTS]
            except PlaywrightTimeout:
                raise ScreenshotsUnavailable(f"the page did not finish loading within {TIMEOUT:.0f} seconds") from None
            except PlaywrightError as exc:
                if "crash" in str(exc).lower():
                    raise ScreenshotsUnavailable("the page crashed while loading") from None
                raise ScreenshotsUnavailable(f"the page could not be captured: {_first_line(exc)}") from None
            finally:
                browser.close()
        finally:
            playwright.stop()


def _shoot(browser, url: str, origin: str, viewport: Viewport, deadline: float) -> Shot:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    context = browser.new_context(
        viewport={"width": viewport.width, "height": viewport.height},
        device_scale_factor=viewport.scale, is_mobile=viewport.mobile, has_touch=viewport.mobile,
        service_workers="block", accept_downloads=False,
    )  # fmt: skip
    try:
        # Context-wide, so popups and workers are covered too.
        context.route("**/*", partial(_only_from, origin + "/"))
        context.route_web_socket(re.compile(".*"), lambda ws: ws.close())
        page = context.new_page()
        page.goto(url, wait_until="load", timeout=_left(deadline))
        try:
            page.wait_for_load_state("networkidle", timeout=min(SETTLE * 1000, _left(deadline)))
        except PlaywrightTimeout:
            pass  # a page that keeps polling is still worth a picture
        png = page.screenshot(type="png", animations="disabled", timeout=_left(deadline))
    finally:
        context.close()
    with Image.open(io.BytesIO(png)) as image:
        width, height = image.size
        picture = image.convert("RGB")
    small = picture.resize((viewport.thumbnail_width, round(height * viewport.thumbnail_width / width)), Image.LANCZOS)
    thumbnail = io.BytesIO()
    small.save(thumbnail, "WEBP", quality=80)
    return Shot(viewport.size, png, thumbnail.getvalue(), width, height)


def _only_from(prefix: str, route) -> None:
    if route.request.url.startswith(prefix):
        route.continue_()
    else:
        route.abort("blockedbyclient")


def _left(deadline: float) -> float:
    """Milliseconds until the deadline, as Playwright wants them (0 would mean "no timeout")."""
    return max(1.0, (deadline - time.monotonic()) * 1000)


def _first_line(exc: BaseException) -> str:
    """The error without Playwright's call log, and without its "Page.goto: " prefix."""
    lines = str(exc).strip().splitlines()
    return re.sub(r"^\w+\.\w+: ", "", lines[0])[:200] if lines else type(exc).__name__


def _launch_error(exc: BaseException) -> str:
    """What Chromium said last on stderr before it gave up, which names the cause far better than
    Playwright's "Target page, context or browser has been closed"."""
    said = re.findall(r"^\[pid=\d+\]\[err\] (.+)$", str(exc), re.MULTILINE)
    return said[-1].strip()[:200] if said else _first_line(exc)


class _FolderHandler(SimpleHTTPRequestHandler):
    """Serves one folder and nothing else: no listings, nothing outside it (symlinks included)."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript", ".wasm": "application/wasm"}

    def send_head(self):
        root = Path(self.directory)
        if not Path(self.translate_path(self.path)).resolve().is_relative_to(root):
            self.send_error(404)
            return None
        return super().send_head()

    def list_directory(self, path):
        self.send_error(404)
        return None

    def end_headers(self):
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Access-Control-Allow-Origin", "*")  # module scripts from the opaque origin are CORS
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format, *args):
        pass


@contextmanager
def _serve(root: Path) -> Iterator[str]:
    """Serve `root` on a free loopback port for as long as the block runs; yields the origin."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_FolderHandler, directory=str(root)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="screenshots-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def _refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, so nothing else can take it, but not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
