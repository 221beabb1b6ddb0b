"""Screenshots of web previews: real headless Chromium (Debian's), a page that may reach nothing but its
own folder, and a build that goes on without pictures where there is no browser."""

import asyncio
import io
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from prototypes import screenshots
from prototypes.models import Prototype, Revision, Screenshot, Target
from prototypes.screenshots import ScreenshotsUnavailable, capture, store_screenshots

RED = (200, 30, 60)
GREEN = (20, 160, 90)
PAGE = """<!doctype html>
<html><head><meta name="viewport" content="width=device-width, initial-scale=1"><title>Sleep timer</title></head>
<body style="margin:0"><div id="box" style="width:100vw;height:100vh;background:rgb{color}"></div>
{extra}</body></html>"""


def write_page(folder, color=RED, extra="", name="index.html"):
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(PAGE.format(color=color, extra=extra))
    return folder


def near(pixel, color, slack=12):
    return all(abs(a - b) <= slack for a, b in zip(pixel[:3], color, strict=True))


@pytest.fixture
def counting_server():
    """A server on another loopback port that counts every request (HTTP or WebSocket) it gets."""
    hits = []

    class Counting(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Access-Control-Allow-Origin", "*")
            self.end_headers()

        do_POST = do_GET

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def red_shots(tmp_path_factory):
    """Pictures of a red page, taken once for the module, from inside a running asyncio loop (where
    Playwright's sync API would refuse to start if capture ran it on the caller's thread)."""
    site = write_page(tmp_path_factory.mktemp("red") / "site", name="app.html")

    async def inside_a_loop():
        return capture(site, "app.html")

    # A thread of its own: another test's Playwright session may hold this thread's event loop.
    result = {}
    thread = threading.Thread(target=lambda: result.update(shots=asyncio.run(inside_a_loop())))
    thread.start()
    thread.join()
    return result["shots"]


def test_it_takes_desktop_and_phone_pictures_with_webp_thumbnails(red_shots):
    assert [(s.size, s.width, s.height) for s in red_shots] == [("desktop", 1280, 800), ("phone", 780, 1688)]
    for shot, thumbnail_size in zip(red_shots, [(480, 300), (240, 519)], strict=True):
        with Image.open(io.BytesIO(shot.png)) as picture:
            assert (picture.format, picture.size) == ("PNG", (shot.width, shot.height))
            assert near(picture.convert("RGB").getpixel((shot.width // 2, shot.height // 2)), RED, slack=0)
        with Image.open(io.BytesIO(shot.thumbnail)) as thumbnail:
            assert (thumbnail.format, thumbnail.size) == ("WEBP", thumbnail_size)
            assert near(thumbnail.convert("RGB").getpixel((thumbnail_size[0] // 2, thumbnail_size[1] // 2)), RED)


def test_it_can_be_called_where_an_asyncio_loop_is_running(red_shots):
    assert [shot.size for shot in red_shots] == ["desktop", "phone"]  # red_shots was taken inside a loop


@pytest.mark.parametrize("csp", [screenshots.CSP, "sandbox allow-scripts"], ids=["preview-csp", "loose-csp"])
def test_the_page_reaches_nothing_but_its_own_folder(tmp_path, counting_server, monkeypatch, csp):
    # With a loose CSP the browser-side layers (request routing, the refusing proxy) must hold on their own.
    monkeypatch.setattr(screenshots, "CSP", csp)
    other, hits = counting_server
    script = f"""
<img src="http://{other}/img"><iframe src="http://{other}/frame"></iframe>
<script src="http://{other}/script.js"></script>
<link rel="stylesheet" href="http://{other}/style.css"><link rel="prefetch" href="http://{other}/prefetch">
<script>
  fetch("http://{other}/fetch").catch(() => {{}});
  fetch("https://example.com/").catch(() => {{}});
  fetch("http://localhost:{other.split(":")[1]}/localhost").catch(() => {{}});
  navigator.sendBeacon("http://{other}/beacon", "hello");
  try {{ new WebSocket("ws://{other}/socket"); }} catch (e) {{}}
  try {{ new Worker("data:text/javascript,fetch('http://{other}/worker')"); }} catch (e) {{}}
  document.getElementById("box").style.background = "rgb{GREEN}";
</script>"""
    shots = capture(write_page(tmp_path / "site", extra=script), "index.html")

    with Image.open(io.BytesIO(shots[0].png)) as picture:
        assert near(picture.convert("RGB").getpixel((640, 400)), GREEN, slack=0)  # its script did run
    assert hits == []


def test_the_folder_server_serves_no_listing_and_nothing_outside_the_folder(tmp_path):
    (tmp_path / "secret.txt").write_text("the worker's secret")
    site = tmp_path / "site"
    (site / "assets").mkdir(parents=True)
    (site / "assets" / "app.js").write_text("console.log('hi')")
    (site / "leak.txt").symlink_to(tmp_path / "secret.txt")

    with screenshots._serve(site.resolve()) as origin:
        with urllib.request.urlopen(f"{origin}/assets/app.js") as response:
            assert response.read() == b"console.log('hi')"
            assert response.headers["Content-Security-Policy"] == screenshots.CSP
        for path in ["/leak.txt", "/../secret.txt", "/%2e%2e/secret.txt", "/assets/", "/"]:
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(origin + path)
            assert refused.value.code == 404, path


def test_it_gives_up_on_a_page_that_never_finishes_loading(tmp_path, monkeypatch):
    monkeypatch.setattr(screenshots, "TIMEOUT", 3.0)
    site = write_page(tmp_path / "site", extra="<script>while (true) {}</script>")

    with pytest.raises(ScreenshotsUnavailable, match="^the page did not finish loading within 3 seconds$"):
        capture(site, "index.html")


def test_a_missing_entry_page_is_reported_in_plain_words(tmp_path):
    site = write_page(tmp_path / "site")

    for entry in ["missing.html", "../site/../../etc/passwd"]:
        with pytest.raises(ScreenshotsUnavailable, match=r"^the preview has no page called "):
            capture(site, entry)


def test_a_browser_that_does_not_start_is_reported_in_plain_words(tmp_path, monkeypatch):
    broken = tmp_path / "chromium"
    broken.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setattr(screenshots, "CHROMIUM", str(broken))

    with pytest.raises(ScreenshotsUnavailable, match=r"^Chromium could not start: cannot open display$"):
        capture(write_page(tmp_path / "site"), "index.html")


@pytest.fixture
def revision(alice):
    target = Target.objects.create(slug="player", name="Player", git_url="/nowhere")
    prototype = Prototype.objects.create(slug="sleep-timer", title="Sleep timer", owner=alice, target=target)
    return Revision.objects.create(prototype=prototype, number=1, prompt="add a sleep timer", author=alice)


@pytest.mark.django_db
def test_without_chromium_the_build_goes_on_with_a_plain_reason(tmp_path, monkeypatch, revision):
    monkeypatch.setattr(screenshots, "CHROMIUM", str(tmp_path / "no-chromium"))
    site = write_page(tmp_path / "site")

    with pytest.raises(ScreenshotsUnavailable) as missing:
        capture(site, "index.html")
    assert str(missing.value) == f"Chromium is not installed (no {tmp_path / 'no-chromium'})"

    assert store_screenshots(revision, site, "index.html") == str(missing.value)
    assert not Screenshot.objects.exists()


@pytest.mark.django_db
def test_it_saves_screenshots_for_a_revision_replacing_earlier_ones(
    tmp_path, monkeypatch, revision, red_shots, django_capture_on_commit_callbacks
):
    site = write_page(tmp_path / "site")
    monkeypatch.setattr(screenshots, "capture", lambda folder, entry: red_shots)  # taken by the real browser
    assert store_screenshots(revision, site, "index.html") is None

    rows = list(revision.screenshots.all())
    assert [(row.size, row.width, row.height) for row in rows] == [("desktop", 1280, 800), ("phone", 780, 1688)]
    for row in rows:
        assert row.image.name.startswith(f"screenshots/{revision.prototype_id}/{revision.pk}/")
        with Image.open(row.image.path) as image, Image.open(row.thumbnail.path) as thumbnail:
            assert (image.format, thumbnail.format) == ("PNG", "WEBP")
            assert thumbnail.width == {"desktop": 480, "phone": 240}[row.size]

    # The same revision built again: its new pictures replace the first ones, files included.
    with django_capture_on_commit_callbacks(execute=True):
        assert store_screenshots(revision, site, "index.html") is None
    fresh = list(revision.screenshots.all())
    assert [row.size for row in fresh] == ["desktop", "phone"]
    assert not {row.pk for row in fresh} & {row.pk for row in rows}
    for old in rows:
        assert not old.image.storage.exists(old.image.name)
        assert not old.thumbnail.storage.exists(old.thumbnail.name)
    for row in fresh:
        assert row.image.storage.exists(row.image.name) and row.thumbnail.storage.exists(row.thumbnail.name)


@pytest.mark.django_db
def test_a_broken_screenshot_step_never_fails_the_build(tmp_path, monkeypatch, revision):
    def broken(folder, entry):
        raise RuntimeError("a bug")

    monkeypatch.setattr(screenshots, "capture", broken)
    reason = store_screenshots(revision, write_page(tmp_path / "site"), "index.html")
    assert reason == "something went wrong taking them (the worker log has the details)"
    assert not Screenshot.objects.exists()
