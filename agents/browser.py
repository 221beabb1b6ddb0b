"""The browser check: a web prototype opened in headless Chromium before anyone sees it.

Unit tests can pass while the page itself throws on load (a module that declares a name twice, a script
that was never copied into the bundle). So after the app's own build and tests pass, the built folder is
opened in Chromium and what a person would run into is recorded, per page: console errors, uncaught
exceptions, failed requests, a blank page, then the recipe's simple steps ([check] in docs/recipes.md).
The same browser takes the screenshots (before and after the change, desktop and phone) and renders the
agent's `screenshot` tool.

Isolation, in layers. The page is untrusted code:
- Chromium runs inside the bwrap sandbox (agents/sandbox/chromium.py): its own network namespace with
  only loopback, no secrets in its environment, /usr read-only, a private tmp and home, the usual limits.
- The page never touches a network at all: every request it makes is answered by Playwright on the host
  (`context.route`), from the built folder, for the preview origin only (PREVIEW_ORIGIN, a name that
  cannot resolve); everything else is aborted. Files are served only from inside the folder, never
  through a symbolic link, with the content types and the CSP sandbox the store's previews use, so the
  page runs in an opaque origin here exactly as it does for viewers. WebSockets are closed, service
  workers blocked.

What counts as a problem, and why:
- console errors and uncaught exceptions (`pageerror`), including the CSP's refusals: a viewer's preview
  refuses the same loads.
- failed requests for what the page is made of (the document, scripts, styles, images, fonts, media):
  a missing file or one answered >= 400. A `fetch`/XHR the page makes itself and handles is not counted:
  a static preview has no API behind it (web-player's podcast section asks and hides itself), and an
  unhandled failure shows up as an exception anyway. Chromium's own "Failed to load resource" console
  line repeats a failed request, so it is not counted twice.
- Requests to other hosts are aborted and counted (as failed requests) whatever their kind: the preview
  people open has no network either (its CSP allows only its own files), so a page that needs a CDN is
  broken for them too, and the agent must hear it.
- a blank page: no visible text and no image, canvas, svg or video once it has loaded and settled.
Problems already present on the start commit (the same message on the same page, `before`) do not count
against the agent's change.

Every message is deterministic (no timestamps, no random ids, lists capped): it goes back to the model,
whose prompt cache depends on identical bytes. A missing Chromium or Playwright never fails a build: the
report is `skipped` with the reason.
"""

from __future__ import annotations

import base64
import http.client
import io
import mimetypes
import os
import re
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from agents.recipe import Check, CheckStep, Recipe
from agents.sandbox.chromium import CHROMIUM, CHROMIUM_BINARY, launcher_script, private_folder

PREVIEW_ORIGIN = "http://preview.invalid"  # .invalid never resolves: the page can only get what we answer
# The policy web previews are served with (store/views.py serves previews with this constant through
# prototypes/screenshots.py): the check sees what viewers see.
CSP = "sandbox allow-scripts allow-forms allow-popups allow-modals; default-src 'self' data: blob: 'unsafe-inline'"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic", "--disable-default-apps", "--disable-extensions",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
]  # fmt: skip
CHECK_TIMEOUT = 30.0  # seconds for a whole check (browser start, every page and step)
SHOT_TIMEOUT = 10.0  # seconds more for each screenshot taken in the same browser
LOAD_TIMEOUT = 10.0  # one page's load
SETTLE = 1.5  # at most this long for the network to go quiet after "load"
STEP_TIMEOUT = 4.0  # one step's click or fill, and its expected text
MAX_TEXT = 20_000  # characters of a page's visible text kept (the eval's page-text checks read it)
MAX_FINDINGS = 10  # of each kind, per page
MAX_MESSAGE = 300  # characters of one finding
MAX_FILE_BYTES = 64 * 2**20
MAX_REDIRECTS = 5
SERVED_FILE_KINDS = ("pyz",)  # served artifacts the check can start as they are (archives need unpacking)
RESOURCE_TYPES = {"document", "stylesheet", "script", "image", "font", "media", "manifest"}
EXTRA_TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
               ".json": "application/json", ".svg": "image/svg+xml", ".webmanifest": "application/manifest+json",
               ".wav": "audio/wav", ".webp": "image/webp", ".woff2": "font/woff2"}  # fmt: skip


@dataclass(frozen=True)
class Size:
    name: str  # "desktop" or "phone"
    width: int
    height: int
    scale: int
    mobile: bool


SIZES = {
    "desktop": Size("desktop", 1280, 800, scale=1, mobile=False),
    "phone": Size("phone", 390, 844, scale=2, mobile=True),
}


@dataclass
class PageReport:
    path: str
    title: str = ""
    text: str = ""  # visible text, at most MAX_TEXT characters
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    blank: bool = False
    steps: list[dict] = field(default_factory=list)  # {"step": description, "passed": bool, "note": str}

    def problems(self) -> list[str]:
        """Every finding as one line, in a fixed order; the unit `before` is compared in."""
        found = [f"uncaught exception: {m}" for m in self.exceptions]
        found += [f"console error: {m}" for m in self.console_errors]
        found += [f"failed request: {m}" for m in self.failed_requests]
        if self.blank:
            found.append("the page is blank (no text and no pictures)")
        found += [f"step failed, {s['step']}: {s['note']}" for s in self.steps if not s["passed"]]
        return found


@dataclass
class SmokeReport:
    passed: bool
    skipped: str = ""  # why the check did not run; "" when it ran
    pages: list[PageReport] = field(default_factory=list)
    before: list[PageReport] = field(default_factory=list)  # problems already there on the start commit
    duration: float = 0.0

    def new_problems(self, page: PageReport) -> list[str]:
        """The page's problems that were not there before the change."""
        old = {p for b in self.before if b.path == page.path for p in b.problems()}
        return [p for p in page.problems() if p not in old]

    def old_problems(self) -> list[str]:
        now = {(page.path, p) for page in self.pages for p in page.problems()}
        return [f"{b.path}: {p}" for b in self.before for p in b.problems() if (b.path, p) in now]

    def headline(self) -> str:
        if self.skipped:
            return f"The page was not checked in a browser: {self.skipped}."
        if self.passed:
            pages = ", ".join(page.path for page in self.pages)
            return f"The page opened in a browser without new errors ({pages})."
        page, problem = next((page, p) for page in self.pages for p in self.new_problems(page))
        return f"The page shows problems in a browser: {page.path}: {problem}"

    def for_model(self) -> str:
        """What the agent reads: each page's new problems, and those that were there before."""
        lines = [("PASSED: " if self.passed else "FAILED: ") + self.headline()]
        for page in self.pages:
            problems = self.new_problems(page)
            if problems:
                lines.append(f"Page {page.path} (title {page.title!r}):")
                lines += [f"  {p}" for p in problems]
        old = self.old_problems()
        if old:
            lines.append("Already there before the change (not counted): " + "; ".join(old[:MAX_FINDINGS]))
        return "\n".join(lines)

    def as_event(self) -> dict:
        return {
            "passed": self.passed, "skipped": self.skipped, "headline": self.headline(),
            "duration": round(self.duration, 2),
            "pages": [{**asdict(page), "new_problems": self.new_problems(page)} for page in self.pages],
            # Without their text: the page's text as it is now is in `pages`.
            "before": [{**asdict(page), "text": ""} for page in self.before],
        }  # fmt: skip


@dataclass(frozen=True)
class Shot:
    path: Path  # a PNG file
    page: str  # the check path, like "/"
    size: str  # "desktop" or "phone"
    moment: str  # "before" or "after"


class BrowserUnavailable(Exception):
    """The browser could not run here; the message says why in plain words (the check is skipped)."""


def check_folder(
    folder: Path | App,
    check: Check,
    *,
    entry: str = "index.html",
    before: list[PageReport] | None = None,
    shots: str = "",
    shots_dir: Path | None = None,
) -> tuple[SmokeReport, list[Shot]]:
    """Open the built folder's pages (check.paths) and run check.steps. With `shots` ("before" or
    "after") and `shots_dir`, also take desktop and phone screenshots of each path there, in the same
    browser. Never raises for the page's sake; a browser that cannot run gives a skipped report."""
    started = time.monotonic()
    report = SmokeReport(passed=True, before=list(before or []))
    taken: list[Shot] = []
    pictures = len(check.paths) * len(SIZES) if shots and shots_dir is not None else 0
    try:
        with open_browser(CHECK_TIMEOUT + pictures * SHOT_TIMEOUT) as browser:
            report.pages = browser.check(folder, check, entry=entry)
            if shots and shots_dir is not None:
                taken = _take(browser, folder, check.paths, shots, shots_dir, entry)
    except BrowserUnavailable as exc:
        report.skipped = str(exc)
    except Exception as exc:  # noqa: BLE001 - a page that crashes or hangs the browser fails its check
        report.pages.append(PageReport(path="/", exceptions=[f"the browser failed on the page: {_first_line(exc)}"]))
    report.passed = not any(report.new_problems(page) for page in report.pages)
    report.duration = time.monotonic() - started
    return report, taken


def take_screenshots(
    folder: Path | App, paths: tuple[str, ...], moment: str, shots_dir: Path, *, entry: str = "index.html"
) -> list[Shot] | str:
    """Desktop and phone screenshots of each path, PNG files in `shots_dir`; or why there are none."""
    try:
        with open_browser(CHECK_TIMEOUT + len(paths) * len(SIZES) * SHOT_TIMEOUT) as browser:
            return _take(browser, folder, paths, moment, shots_dir, entry)
    except BrowserUnavailable as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - pictures never fail a build
        return f"the browser failed taking them: {_first_line(exc)}"


def _take(browser: Browser, folder: Path | App, paths, moment: str, shots_dir: Path, entry: str) -> list[Shot]:
    shots_dir.mkdir(parents=True, exist_ok=True)
    taken = []
    for path in paths:
        for size in SIZES.values():
            file = shots_dir / f"{moment}-{size.name}-{_slug(path)}.png"
            file.write_bytes(browser.screenshot(folder, path, size.name, entry=entry))
            taken.append(Shot(file, path, size.name, moment))
    return taken


def picture(folder: Path | App, path: str, size: str, *, entry: str = "index.html") -> tuple[PageReport, dict] | str:
    """The screenshot tool's answer: what the page showed and an image block of it; or why there is none."""
    try:
        with open_browser() as browser:
            page, png = browser.page_report(folder, path, size, entry=entry)
    except BrowserUnavailable as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - the agent reads why, and can try again
        return f"the browser failed on the page: {_first_line(exc)}"
    return page, image_block(png)


def skipped(reason: str) -> SmokeReport:
    return SmokeReport(passed=True, skipped=reason)


def _slug(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", path).strip("-") or "home"


@contextmanager
def open_browser(timeout: float = CHECK_TIMEOUT) -> Iterator[Browser]:
    """A sandboxed Chromium driven by Playwright, in a thread of its own (Playwright's sync API refuses
    to run where an asyncio loop is running), closed at the end. Raises BrowserUnavailable."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="browser") as pool:
        browser = Browser(pool, time.monotonic() + timeout)
        pool.submit(browser.start).result()
        try:
            yield browser
        finally:
            pool.submit(browser.close).result()


class Browser:
    """One sandboxed Chromium. Every call runs in the owner's thread (see open_browser)."""

    def __init__(self, pool: ThreadPoolExecutor, deadline: float):
        self.pool = pool
        self.deadline = deadline
        self.folder: Path | None = None
        self.playwright = None
        self.browser = None

    def left(self, at_most: float | None = None) -> float:
        """Milliseconds Playwright may wait (never 0, which would mean no limit)."""
        seconds = self.deadline - time.monotonic()
        if at_most is not None:
            seconds = min(seconds, at_most)
        return max(1.0, seconds * 1000)

    def start(self) -> None:
        try:
            from playwright.sync_api import Error as PlaywrightError
            from playwright.sync_api import sync_playwright
        except ImportError:
            raise BrowserUnavailable("Playwright is not installed") from None
        if not os.access(CHROMIUM_BINARY, os.X_OK):
            raise BrowserUnavailable(f"Chromium is not installed (no {CHROMIUM})")
        if not shutil.which("bwrap"):
            raise BrowserUnavailable("bubblewrap is not installed, and the browser runs only in its sandbox")
        self.folder = private_folder()
        try:
            self.playwright = sync_playwright().start()
        except Exception as exc:  # noqa: BLE001 - its driver fails in many ways; all mean "no browser"
            self.close()
            raise BrowserUnavailable(f"Playwright could not start: {_first_line(exc)}") from None
        try:
            self.browser = self.playwright.chromium.launch(
                executable_path=str(launcher_script(self.folder)), args=CHROMIUM_ARGS,
                # The launcher runs on the host; Chromium itself gets a clean environment from bwrap.
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(self.folder)},
                timeout=self.left(),
            )  # fmt: skip
        except PlaywrightError as exc:
            self.close()
            raise BrowserUnavailable(f"Chromium could not start in the sandbox: {_launch_error(exc)}") from None

    def close(self) -> None:
        for part in (self.browser, self.playwright):
            try:
                if part is self.playwright and part is not None:
                    part.stop()
                elif part is not None:
                    part.close()
            except Exception:  # noqa: BLE001,S110 - closing a browser that already died
                pass
        self.browser = self.playwright = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    # --- called from the owner's thread: each hops onto the browser's thread ------------------------
    def check(self, folder: Path | App, check: Check, *, entry: str) -> list[PageReport]:
        return self.pool.submit(self._check, _source(folder), check, entry).result()

    def screenshot(self, folder: Path | App, path: str, size: str, *, entry: str) -> bytes:
        return self.pool.submit(self._screenshot, _source(folder), path, SIZES[size], entry).result()

    def page_report(self, folder: Path | App, path: str, size: str, *, entry: str) -> tuple[PageReport, bytes]:
        return self.pool.submit(self._page_and_picture, _source(folder), path, SIZES[size], entry).result()

    # --- in the browser's thread ---------------------------------------------------------------------
    def _context(self, root: Path | App, entry: str, size: Size, report: PageReport | None):
        context = self.browser.new_context(
            viewport={"width": size.width, "height": size.height}, device_scale_factor=size.scale,
            is_mobile=size.mobile, has_touch=size.mobile, service_workers="block", accept_downloads=False,
        )  # fmt: skip
        context.route("**/*", lambda route: _answer(route, root, entry, report))
        context.route_web_socket(re.compile(".*"), lambda ws: ws.close())
        return context

    def _open(self, context, path: str, report: PageReport):
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        page = context.new_page()
        page.on("console", lambda message: _console(message, report))
        page.on("pageerror", lambda error: _add(report.exceptions, _error_text(error)))
        page.on("requestfailed", lambda request: _request_failed(request, report))
        page.on("response", lambda response: _response(response, report))
        try:
            page.goto(PREVIEW_ORIGIN + path, wait_until="load", timeout=self.left(LOAD_TIMEOUT))
        except PlaywrightTimeout:
            _add(report.failed_requests, f"{path} did not finish loading within {LOAD_TIMEOUT:.0f} seconds")
        except PlaywrightError as exc:
            _add(report.failed_requests, f"{path} could not be opened: {_first_line(exc)}")
        try:
            page.wait_for_load_state("networkidle", timeout=self.left(SETTLE))
        except PlaywrightError:
            pass  # a page that keeps polling is still checked
        return page

    def _read(self, page, report: PageReport) -> None:
        from playwright.sync_api import Error as PlaywrightError

        try:
            report.title = page.title()[:MAX_MESSAGE]
            state = page.evaluate(
                "() => ({text: document.body ? document.body.innerText : '',"
                " media: !!document.querySelector('img, canvas, svg, video, object, embed')})"
            )
        except PlaywrightError as exc:
            _add(report.exceptions, f"the page could not be read: {_first_line(exc)}")
            return
        text = "\n".join(line.strip() for line in str(state["text"]).splitlines() if line.strip())
        report.text = text[:MAX_TEXT]
        report.blank = not text and not state["media"]

    def _check(self, root: Path | App, check: Check, entry: str) -> list[PageReport]:
        reports = []
        paths = list(dict.fromkeys([*check.paths, *(step.path for step in check.steps)]))
        for path in paths:
            report = PageReport(path=path)
            context = self._context(root, entry, SIZES["desktop"], report)
            try:
                page = self._open(context, path, report)
                self._read(page, report)
                for step in check.steps:
                    if step.path == path:
                        report.steps.append(self._step(page, step))
                if any(step.path == path for step in check.steps):
                    self._read(page, report)  # the text after the steps, as the eval reads it
            finally:
                context.close()
            reports.append(report)
        return reports

    def _step(self, page, step: CheckStep) -> dict:
        from playwright.sync_api import Error as PlaywrightError

        outcome = {"step": step.describe(), "passed": False, "note": ""}
        try:
            if step.click:
                name = re.compile(re.escape(step.click), re.IGNORECASE)
                what = f'nothing called "{step.click}" could be clicked'
                target = _first_of(page.get_by_role("button", name=name), page.get_by_role("link", name=name),
                                   page.get_by_text(step.click))  # fmt: skip
                target.click(timeout=self.left(STEP_TIMEOUT))
            else:
                what = f'no field labelled "{step.fill}" could be filled'
                target = _first_of(page.get_by_label(step.fill), page.get_by_placeholder(step.fill))
                target.fill(step.text, timeout=self.left(STEP_TIMEOUT))
        except PlaywrightError:
            outcome["note"] = what + f" within {STEP_TIMEOUT:.0f} seconds"
            return outcome
        try:
            # Its text, or the name of a control that has no text (an icon button's aria-label).
            expected = page.get_by_text(step.expect).or_(page.get_by_label(step.expect, exact=True))
            expected.first.wait_for(state="visible", timeout=self.left(STEP_TIMEOUT))
        except PlaywrightError:
            outcome["note"] = f'"{step.expect}" did not appear within {STEP_TIMEOUT:.0f} seconds'
            return outcome
        outcome["passed"] = True
        return outcome

    def _screenshot(self, root: Path | App, path: str, size: Size, entry: str) -> bytes:
        return self._page_and_picture(root, path, size, entry)[1]

    def _page_and_picture(self, root: Path | App, path: str, size: Size, entry: str) -> tuple[PageReport, bytes]:
        report = PageReport(path=path)
        context = self._context(root, entry, size, report)
        try:
            page = self._open(context, path, report)
            self._read(page, report)
            png = page.screenshot(type="png", animations="disabled", timeout=self.left())
        finally:
            context.close()
        return report, png


def _first_of(*locators):
    """The first match of the first locator that has one, in the order given (a button named "Sign in"
    before a heading that says it); when none matches yet, whichever appears first."""
    for locator in locators:
        if locator.count():
            return locator.first
    combined = locators[0]
    for locator in locators[1:]:
        combined = combined.or_(locator)
    return combined.first


# --- serving the built folder -------------------------------------------------------------------------
@dataclass(frozen=True)
class App:
    """A served app ([serve], agents/serve.py) the check talks to, through the Unix socket it listens on."""

    socket_path: Path


def _answer(route, source: Path | App, entry: str, report: PageReport | None) -> None:
    """Answer one request of the page for the preview origin: a file of the built folder, or the served
    app's answer; anything for another origin is aborted."""
    request = route.request
    url = urlsplit(request.url)
    if f"{url.scheme}://{url.netloc}" != PREVIEW_ORIGIN:
        if report is not None and url.scheme in ("http", "https", "ws", "wss"):
            # Named by host only: a full URL may carry a query that changes every load.
            _add(report.failed_requests, f"blocked: {url.scheme}://{url.netloc} (a preview has no network)")
        route.abort("blockedbyclient")
        return
    if isinstance(source, App):
        _forward(route, source)
        return
    root = source
    file = _file_for(root, unquote(url.path), entry)
    headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
               # module scripts and fetches from the opaque origin are cross-origin requests
               "Access-Control-Allow-Origin": "*"}  # fmt: skip
    if file is None:
        route.fulfill(status=404, headers=headers, content_type="text/plain", body="Not found")
        return
    content_type = EXTRA_TYPES.get(file.suffix.lower()) or mimetypes.guess_type(file.name)[0]
    route.fulfill(status=200, headers=headers, content_type=content_type or "application/octet-stream",
                  body=file.read_bytes())  # fmt: skip


# Headers about one connection (RFC 9110 7.6.1), never passed on; Host is set again.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
              "trailer", "transfer-encoding", "upgrade", "host", "accept-encoding", "content-length"}  # fmt: skip


def _forward(route, app: App) -> None:
    """Pass one request to the served app through its socket and fulfil the page's request with the
    answer, the app's own headers included (a live preview is served on its own origin, as it sends it).
    Uncompressed: the browser is handed the body as it is.

    Redirects within the app are followed here (a request that follows a fulfilled redirect would go to
    the network, which the browser does not have): the page gets the final answer at the URL it asked
    for, with every cookie set on the way."""
    from agents.serve import UnixHTTPConnection

    request = route.request
    url = urlsplit(request.url)
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    method, body = request.method, request.post_data_buffer
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    cookies: list[str] = []
    for _hop in range(MAX_REDIRECTS + 1):
        headers["Host"] = "localhost"
        connection = UnixHTTPConnection(app.socket_path, timeout=STEP_TIMEOUT)
        try:
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            content = response.read(MAX_FILE_BYTES)
            answer = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
        except (OSError, http.client.HTTPException):
            route.abort("connectionfailed")
            return
        finally:
            connection.close()
        set_cookies = [v for k, v in answer if k.lower() == "set-cookie"]
        cookies += set_cookies
        location = urlsplit(urljoin(PREVIEW_ORIGIN + target, response.getheader("Location") or ""))
        same_app = not location.netloc or location.netloc in ("localhost", urlsplit(PREVIEW_ORIGIN).netloc)
        if response.status not in (301, 302, 303, 307, 308) or not response.getheader("Location") or not same_app:
            break
        if response.status in (301, 302, 303):
            method, body = "GET", None
        target = location.path + (f"?{location.query}" if location.query else "")
        sent = [headers.get("cookie") or headers.get("Cookie") or ""]
        sent += [cookie.split(";", 1)[0] for cookie in set_cookies]
        headers = {k: v for k, v in headers.items() if k.lower() not in ("cookie", "content-type")}
        headers["Cookie"] = "; ".join(part for part in sent if part)
    fulfilled = {k: v for k, v in answer if k.lower() != "set-cookie"}
    if cookies:
        fulfilled["Set-Cookie"] = "\n".join(cookies)  # Playwright's way of sending several
    route.fulfill(status=response.status, headers=fulfilled, body=content)


def _source(folder: Path | App) -> Path | App:
    return folder if isinstance(folder, App) else Path(folder)


def _file_for(root: Path, path: str, entry: str) -> Path | None:
    """The file of `root` a URL path names ("/" is the entry; a folder its index.html), or None when it
    is missing, too large, outside the folder, or reached through a symbolic link (the build is untrusted
    and could link to any file of the host)."""
    root = root.resolve()
    relative = path.lstrip("/")
    if not relative:
        relative = entry
    elif relative.endswith("/"):
        relative += "index.html"
    if "\0" in relative or ".." in relative.split("/"):
        return None
    candidate = root / relative
    current = root
    for part in Path(relative).parts:
        current = current / part
        if current.is_symlink():
            return None
    if not candidate.is_file() or not candidate.resolve().is_relative_to(root):
        return None
    if candidate.stat().st_size > MAX_FILE_BYTES:
        return None
    return candidate


# --- recording what the page did ------------------------------------------------------------------------
def _add(found: list[str], message: str) -> None:
    message = " ".join(str(message).split())[:MAX_MESSAGE]
    if message and message not in found and len(found) < MAX_FINDINGS:
        found.append(message)


def _console(message, report: PageReport) -> None:
    if message.type != "error":
        return
    text = message.text
    if text.startswith("Failed to load resource"):
        return  # the request itself is reported (or deliberately not), see the module's docstring
    _add(report.console_errors, text)


def _error_text(error) -> str:
    name = getattr(error, "name", "") or "Error"
    message = getattr(error, "message", "") or str(error)
    return message if message.startswith(name) else f"{name}: {message}"


def _request_failed(request, report: PageReport) -> None:
    if not request.url.startswith(PREVIEW_ORIGIN + "/"):
        return  # counted where it was blocked (_answer)
    if request.resource_type in RESOURCE_TYPES:
        _add_request(report, _path_of(request.url), request.failure or "failed")


def _response(response, report: PageReport) -> None:
    request = response.request
    if response.status >= 400 and request.url.startswith(PREVIEW_ORIGIN + "/"):
        if request.resource_type in RESOURCE_TYPES:
            _add_request(report, _path_of(request.url), f"answered {response.status}")


def _add_request(report: PageReport, path: str, what: str) -> None:
    """One line per file: a 404 is often followed by the browser's own "aborted" for the same file."""
    if not any(line.startswith(f"{path}: ") for line in report.failed_requests):
        _add(report.failed_requests, f"{path}: {what}")


def _path_of(url: str) -> str:
    """The path of a preview URL without its query (a build stamps versions there)."""
    return urlsplit(url).path or "/"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return re.sub(r"^\w+\.\w+: ", "", lines[0])[:200] if lines else type(exc).__name__


def _launch_error(exc: BaseException) -> str:
    said = re.findall(r"^\[pid=\d+\]\[err\] (.+)$", str(exc), re.MULTILINE)
    return said[-1].strip()[:200] if said else _first_line(exc)


# --- the agent's screenshot tool ----------------------------------------------------------------------------
def image_block(png: bytes, *, max_width: int = 1280) -> dict:
    """An image content block for the Messages API: the picture as JPEG (quality 70), at most
    `max_width` pixels wide, which keeps a tool result small (a phone shot is taken at 2x)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as picture:
        image = picture.convert("RGB")
    if image.width > max_width:
        image = image.resize((max_width, round(image.height * max_width / image.width)), Image.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=70, optimize=True)
    data = base64.b64encode(out.getvalue()).decode("ascii")
    return {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": data}}


def built_folder(tree: Path, recipe: Recipe) -> Path | None:
    """The folder the check opens in a build tree: a web artifact's folder; None for other kinds."""
    if recipe.artifact.kind != "web":
        return None
    return tree / recipe.artifact.path


class PageCheck:
    """The browser check of one build: what its tree has built, the recipe's [check], and the problems
    the app had before the change (`before`, filled by `before_change`).

    A web artifact's folder is opened as it is in the tree. An app that is only served ([serve] with a
    single-file artifact, like a .pyz) is started from its built artifact for each check, the way a live
    preview runs it (agents/serve.py: its own sandbox and network namespace, seeded fresh data, no
    backends), and the page's requests are passed to it through its socket."""

    def __init__(self, tree: Path, recipe: Recipe):
        self.tree = tree
        self.recipe = recipe
        self.folder = built_folder(tree, recipe)
        self.check = recipe.check
        self.entry = recipe.artifact.entry
        self.before: list[PageReport] = []
        self.unsupported = ""
        if self.folder is None and (recipe.serve is None or recipe.artifact.kind not in SERVED_FILE_KINDS):
            self.unsupported = "only a web artifact or a served single-file app (like a .pyz) can be opened so far"

    @contextmanager
    def source(self) -> Iterator[Path | App | str]:
        """What the browser is pointed at: the web folder, the started app, or why the app did not
        start (the app's own failure, a problem of the change)."""
        if self.folder is not None:
            yield self.folder
            return
        from agents.serve import AppFailed, AppSpec, start_app, stop_app

        work = private_folder()
        work.chmod(0o711)  # the app's sandbox user reaches its folders inside
        run_dir = work / "run"
        try:
            artifact = self.tree / self.recipe.artifact.path
            if not artifact.is_file() or artifact.is_symlink():
                yield f"the build made no {self.recipe.artifact.path}"
                return
            app_dir = work / "app"
            app_dir.mkdir(mode=0o755)
            shutil.copyfile(artifact, app_dir / artifact.name)  # a copy: the app sees it read-only, never the tree
            (app_dir / artifact.name).chmod(0o644)
            serve = self.recipe.serve
            (app_dir / serve.data).mkdir(mode=0o755, parents=True)
            spec = AppSpec.from_serve(serve, app_dir=app_dir, data_dir=work / "data", services=self.recipe.services)
            try:
                running = start_app(spec, run_dir, seed=bool(spec.seed))
            except AppFailed as exc:
                tail = f" Its last output: {exc.log_tail[-600:]}" if exc.log_tail.strip() else ""
                yield f"the app did not start: {exc.message}{tail}"
                return
            yield App(running.socket_path)
        finally:
            if run_dir.exists():
                stop_app(run_dir, timeout=0)
            shutil.rmtree(work, ignore_errors=True)

    def run(self) -> SmokeReport:
        """The check of what is built now, with what was there before not counted."""
        if self.unsupported:
            return skipped(self.unsupported)
        with self.source() as source:
            if isinstance(source, str):
                return _not_started(source, before=self.before)
            return check_folder(source, self.check, entry=self.entry, before=self.before)[0]

    def before_change(self, shots_dir: Path) -> tuple[SmokeReport, list[Shot]]:
        """The check and the "before" screenshots of the app as it is (built already)."""
        if self.unsupported:
            return skipped(self.unsupported), []
        with self.source() as source:
            if isinstance(source, str):
                report, shots = _not_started(source), []
            else:
                report, shots = check_folder(source, self.check, entry=self.entry, shots="before", shots_dir=shots_dir)
        self.before = report.pages
        return report, shots

    def after_change(self, shots_dir: Path) -> list[Shot] | str:
        if self.unsupported:
            return self.unsupported
        with self.source() as source:
            if isinstance(source, str):
                return source
            return take_screenshots(source, self.check.paths, "after", shots_dir, entry=self.entry)

    def picture(self, path: str, size: str) -> tuple[PageReport, dict] | str:
        if self.unsupported:
            return self.unsupported
        with self.source() as source:
            if isinstance(source, str):
                return source
            return picture(source, path, size, entry=self.entry)


def _not_started(why: str, *, before: list[PageReport] | None = None) -> SmokeReport:
    """The report of an app that did not start: a problem of the change (the same one before does not
    count)."""
    report = SmokeReport(passed=True, pages=[PageReport(path="/", exceptions=[why[:MAX_MESSAGE]])], before=before or [])
    report.passed = not report.new_problems(report.pages[0])
    return report
