"""A real store for browser tests: `manage.py runstore` (the web server, a build worker and a preview
worker) on a free loopback port with its own var/ folder, driven through Debian's Chromium by Playwright."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "test-results"
PASSWORD = "e2e-pass-2026"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic", "--disable-default-apps", "--disable-extensions",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def live_store():
    var = Path(tempfile.mkdtemp(prefix="store-e2e-"))
    var.chmod(0o711)
    port = _free_port()
    # The example recordings, plus a slow one (a long command) to cancel.
    recordings = var / "recordings"
    shutil.copytree(ROOT / "examples" / "recordings", recordings)
    shutil.copytree(Path(__file__).parent / "recordings", recordings, dirs_exist_ok=True)
    # Live previews at <label>.localhost:<port> (Chromium resolves *.localhost to loopback; runstore's own
    # server answers), their access asked again on every request so that taking it away shows at once.
    env = {**os.environ, "VAR_DIR": str(var), "DEMO_PASSWORD": PASSWORD, "ALLOWED_HOSTS": "127.0.0.1,localhost",
           "RECORDINGS_DIR": str(recordings), "REPLAY_PACE": "0.5", "SCREENSHOTS": "true", "BROWSER_CHECK": "true",
           "SITE_URL": f"http://127.0.0.1:{port}", "LIVE_PREVIEW_DOMAIN": f"localhost:{port}",
           "LIVE_PREVIEW_ACCESS_CACHE": "0",
           # alice builds in most of these tests, more than the default ten an hour in one session (the limit
           # itself is tested in tests/test_ratelimit.py)
           "RATELIMIT_BUILDS": "100/h"}  # fmt: skip
    for name in ("ANTHROPIC_API_KEY", "AGENT_PROVIDER", "DATABASE_URL", "REDIS_URL", "LIVE_PREVIEW_SCHEME"):
        env.pop(name, None)
    # When the suite runs on PostgreSQL, so does the store: in a database of its own.
    database = os.environ.get("TEST_DATABASE_URL")
    if database:
        from tests.services import fresh_database

        env["DATABASE_URL"] = database = fresh_database(database, "store_e2e")
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, check=True, cwd=ROOT)
    subprocess.run([*manage, "seed"], env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    log = open(var / "store.log", "wb")
    server = subprocess.Popen([*manage, "runstore", "--port", str(port)], env=env, cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120  # a busy two-core machine (CI runs beside other work) can be slow
    while True:
        try:
            urllib.request.urlopen(base + "/healthz", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                if server.poll() is None:
                    os.killpg(server.pid, 9)  # never leave a half-started store (and its workers) running
                raise RuntimeError(f"the store did not start:\n{(var / 'store.log').read_text()[-3000:]}") from None
            time.sleep(0.3)
    yield base
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, 9)
    log.close()
    from agents.workspace import close_stale_workspaces

    close_stale_workspaces(var / "builds")  # a build cut short by the shutdown leaves its overlay mounted
    if database:
        from tests.services import drop_database

        drop_database(database)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        RESULTS.mkdir(exist_ok=True)
        for number, open_page in enumerate(context.pages):
            open_page.screenshot(path=str(RESULTS / f"{request.node.name}-{number}.png"), full_page=True)
    context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def keep_screenshot(page, name: str) -> None:
    """`make screenshots` sets SCREENSHOTS_DIR (docs/images) to refresh the README's pictures."""
    folder = os.environ.get("SCREENSHOTS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


def wait_for_finished_page(page, timeout: float = 30) -> None:
    """After a build finishes, its page reloads itself (static/build.js) to show the finished build: wait
    for that reload rather than race it with one of our own (which it would abort)."""
    from playwright.sync_api import Error

    deadline = time.monotonic() + timeout
    while True:
        try:
            if page.evaluate("performance.getEntriesByType('navigation')[0].type") == "reload":
                page.wait_for_load_state()
                return
        except Error:
            pass  # between two documents
        if time.monotonic() > deadline:
            raise AssertionError("the finished build's page did not reload itself")
        page.wait_for_timeout(100)


def sign_in(page, base, username):
    page.goto(base + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")
