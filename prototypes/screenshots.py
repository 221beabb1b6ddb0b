"""Pictures of a web prototype for the store: headless Chromium opens the unpacked preview at desktop
and phone sizes after a successful build, and Pillow makes the small WebP thumbnails the catalog shows.

The page is untrusted code. It is served by a throwaway HTTP server on loopback that serves only its
own folder, with the same CSP sandbox as the real preview, and the browser is kept off every other
address in layers: Playwright aborts any request not for that server (and every WebSocket), all other
traffic is sent to a proxy that refuses connections, host names do not resolve, and WebRTC may not
bypass the proxy. Chromium gets a scrubbed environment, so a compromised renderer finds no secrets
there. Chromium itself runs without its own sandbox (the worker runs as root here).

A missing browser never fails a build: `store_screenshots` returns the reason instead, for the log.

The engine's own browser check (agents/browser.py, inside the build's sandbox) takes pictures too, before
and after the change: `store_evidence` keeps them as the build's evidence, and `show_in_gallery` makes
the kept attempt's "after" pictures the version's gallery. The capture here is the fallback for builds
whose check took none.
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

from agents import browser
from agents.sandbox.chromium import CHROMIUM
from prototypes.models import Build, Revision, Screenshot

log = logging.getLogger(__name__)

# CSP: the policy web previews are served with, defined once in the engine (whose browser check opens
# pages under it too); store/views.py serves previews with it, so the pictures show what viewers see.
# CHROMIUM_ARGS: the same browser flags as the engine's check.
CHROMIUM_ARGS, CSP = browser.CHROMIUM_ARGS, browser.CSP
TIMEOUT = 20.0  # seconds for the whole capture, browser start included
SETTLE = 3.0  # at most this long waiting for the network to go quiet after "load"
MAX_EVIDENCE_BYTES = 20 * 2**20  # a picture the engine took that is larger is left out (it is no page's screenshot)


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


def store_screenshots(
    revision: Revision, folder: Path, entry: str = "index.html", *, build: Build | None = None
) -> str | None:
    """Take pictures of the unpacked preview in `folder` and save them, replacing the ones they stand for:
    without `build`, the revision's gallery; with one, that build's "after" evidence of the entry page
    (the pipeline's fallback when the engine's own browser check took none). Returns None when they were
    saved, or the plain reason they were skipped: screenshots never fail a build."""
    try:
        shots = capture(folder, entry)
    except ScreenshotsUnavailable as exc:
        return str(exc)
    except Exception:  # noqa: BLE001 - a bug here must not fail a build that succeeded
        log.exception("screenshots of revision %s failed", revision.pk)
        return "something went wrong taking them (the worker log has the details)"
    if build is None:
        old = revision.screenshots.gallery()
        rows = [Screenshot(revision=revision, size=shot.size) for shot in shots]
    else:
        page = "/" if entry == "index.html" else f"/{entry}"
        old = build.evidence.filter(moment=Screenshot.Moment.AFTER, page=page)
        rows = [Screenshot(revision=revision, build=build, moment=Screenshot.Moment.AFTER, page=page, size=shot.size)
                for shot in shots]  # fmt: skip
    return _replace(
        list(old), [(row, shot.size, shot.png, shot.thumbnail) for row, shot in zip(rows, shots, strict=True)]
    )


def store_evidence(build: Build, shots) -> list[str]:
    """Save the pictures the engine's browser check took of a build (agents.browser.Shot: a PNG file in the
    build's output folder, with its page, size and moment) as that build's evidence, replacing any it had.
    Returns what was left out and why, for the build's log: a picture that cannot be read never fails a
    build, and neither does storage trouble (then everything is left out)."""
    skipped: list[str] = []
    new: list[tuple[Screenshot, str, bytes, bytes]] = []
    seen: set[tuple[str, str, str]] = set()
    for number, shot in enumerate(shots):
        moment, size, page = str(shot.moment), str(shot.size), str(shot.page)[:300]
        what = f"{page} ({size}, {moment})"
        if moment not in (Screenshot.Moment.BEFORE, Screenshot.Moment.AFTER) or size not in Screenshot.Size.values:
            skipped.append(f"{what}: not a known moment or size")
            continue
        if (moment, page, size) in seen:
            skipped.append(f"{what}: taken twice")
            continue
        try:
            path = Path(shot.path)
            if path.stat().st_size > MAX_EVIDENCE_BYTES:
                raise ValueError(f"over {MAX_EVIDENCE_BYTES // 2**20} MB")
            png = path.read_bytes()
            small, _width, _height = thumbnail(png, size)
        except (OSError, ValueError) as exc:
            skipped.append(f"{what}: {exc}")
            continue
        seen.add((moment, page, size))
        # The file's name says which picture it is; the page's own words stay in the row, never in a path.
        row = Screenshot(revision=build.revision, build=build, moment=moment, page=page, size=size)
        new.append((row, f"b{build.pk}-{moment}-{number}-{size}", png, small))
    reason = _replace(list(build.evidence.all()), new)
    if reason:
        skipped.append(f"all of them: {reason}")
    return skipped


def show_in_gallery(build: Build) -> str | None:
    """Make the store's pictures of the build's version (the gallery) copies of the build's "after"
    evidence of its first page, desktop and phone; with no such evidence the gallery is emptied, so it
    never shows another attempt's work. Returns None, or the plain reason the gallery was left alone."""
    after = list(build.evidence.filter(moment=Screenshot.Moment.AFTER).order_by("pk"))
    first = [shot for shot in after if shot.page == after[0].page] if after else []
    new = []
    try:
        for shot in first:
            with shot.image.open("rb") as image, shot.thumbnail.open("rb") as small:
                new.append((Screenshot(revision=build.revision, size=shot.size), shot.size, image.read(), small.read()))
    except OSError as exc:
        log.warning("the evidence of build %s could not be read for the gallery", build.pk, exc_info=True)
        return f"its pictures could not be read ({exc})"
    return _replace(list(build.revision.screenshots.gallery()), new)


def _replace(old: list[Screenshot], new: list[tuple[Screenshot, str, bytes, bytes]]) -> str | None:
    """Delete the rows `old` and save the rows `new` (each with a file name, its PNG and its WebP) in one
    transaction.
    Returns None, or the plain reason nothing changed: then the old pictures are kept and the new files
    removed. The old files are removed once the change is committed."""
    saved: list[Screenshot] = []
    try:
        with transaction.atomic():
            Screenshot.objects.filter(pk__in=[row.pk for row in old]).delete()
            for row, name, png, small in new:
                saved.append(row)
                # Named content: Django reads width and height only from a file with a name.
                row.image.save(f"{name}.png", ContentFile(png, name=f"{name}.png"), save=False)
                row.thumbnail.save(f"{name}.webp", ContentFile(small), save=False)
                row.save()
    except Exception:  # noqa: BLE001 - storage or database trouble: keep the old pictures, drop the new files
        log.exception("screenshots could not be saved")
        _delete_files(saved)
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
    small, width, height = thumbnail(png, viewport.size)
    return Shot(viewport.size, png, small, width, height)


def thumbnail(png: bytes, size: str) -> tuple[bytes, int, int]:
    """The small WebP of a PNG taken at `size` (a Screenshot.Size), with the PNG's width and height.
    Raises OSError or ValueError for a file that is no readable picture or one too large to open safely."""
    width_wanted = next(v.thumbnail_width for v in VIEWPORTS if v.size == size)
    try:
        with Image.open(io.BytesIO(png)) as image:
            width, height = image.size
            picture = image.convert("RGB")
    except Image.DecompressionBombError as exc:  # a page can make a picture of any size
        raise ValueError(str(exc)) from None
    small = picture.resize((width_wanted, max(1, round(height * width_wanted / width))), Image.LANCZOS)
    out = io.BytesIO()
    small.save(out, "WEBP", quality=80)
    return out.getvalue(), width, height


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
