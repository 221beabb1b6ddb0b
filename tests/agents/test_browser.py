"""The browser check (agents/browser.py): real Chromium, inside the real bwrap sandbox, driven by the real
Playwright. The pages are the web-player example's own source folder (its build only copies it) and small
hand-written sample pages."""

from __future__ import annotations

import base64
import dataclasses
import io
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from agents.browser import PageCheck, check_folder, skipped
from agents.recipe import Check, CheckStep, RecipeError, parse_recipe
from agents.sandbox import load_backend
from agents.sandbox.chromium import CHROMIUM_BINARY, launcher_script, private_folder
from agents.tools import Toolbox, tool_list
from agents.verify import failure_code, run_verify

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM_BINARY, os.X_OK) or shutil.which("bwrap") is None, reason="needs Chromium and bubblewrap"
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "targets"
PLAYER = EXAMPLES / "web-player"

# Sample pages, written for these tests.
TOGGLE_PAGE = """<!doctype html><title>Toggle</title>
<label>Search <input id="q"></label> <p id="echo"></p>
<button id="b" type="button">Dark mode</button>
<script>
  document.querySelector("#b").onclick = (e) => { e.target.textContent = "Light mode"; };
  document.querySelector("#q").oninput = (e) => { document.querySelector("#echo").textContent = "Found " + e.target.value; };
</script>
"""


def page_folder(scratch_dir, files: dict[str, str]) -> Path:
    folder = scratch_dir("page-")
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def player_source(scratch_dir, *, duplicate_import: bool = False) -> Path:
    """A copy of the web-player example, optionally with the mistake of the broken remix: app.js
    importing the same name twice."""
    folder = scratch_dir("player-")
    shutil.copytree(PLAYER, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("dist", "node_modules"))
    if duplicate_import:
        app = folder / "src" / "app.js"
        line = 'import { formatTime, progress } from "./time.js";\n'
        assert line in app.read_text()
        app.write_text(app.read_text().replace(line, line + 'import { formatTime } from "./time.js";\n'))
    return folder


def built_player(scratch_dir, *, duplicate_import: bool = False) -> Path:
    """The web-player as its own build makes it (node build.mjs: pages, modules and rendered songs)."""
    source = player_source(scratch_dir, duplicate_import=duplicate_import)
    subprocess.run(["node", "build.mjs"], cwd=source, check=True, capture_output=True, timeout=120)
    return source / "dist"


def test_a_page_that_declares_an_imported_name_twice_fails_with_the_browsers_syntax_error(scratch_dir):
    report, _ = check_folder(built_player(scratch_dir, duplicate_import=True), Check())

    assert not report.passed and not report.skipped
    [page] = report.pages
    assert page.exceptions == ["SyntaxError: Identifier 'formatTime' has already been declared"]
    assert "SyntaxError: Identifier 'formatTime' has already been declared" in report.for_model()
    assert report.for_model().startswith("FAILED: ")
    assert report.as_event()["pages"][0]["new_problems"]


def test_the_players_own_page_passes_and_its_text_and_title_are_kept(scratch_dir):
    report, _ = check_folder(built_player(scratch_dir), Check())

    assert report.passed, report.for_model()
    [page] = report.pages
    assert page.title == "Web Player"
    assert "Morning Set" in page.text and "Morning Light" in page.text
    assert not page.blank and not page.problems()
    assert report.headline() == "The page opened in a browser without new errors (/)."


def test_a_blank_page_is_a_problem(scratch_dir):
    folder = page_folder(scratch_dir, {"index.html": "<!doctype html><title>Empty</title><div id=app></div>"})

    report, _ = check_folder(folder, Check())

    assert not report.passed
    assert report.pages[0].blank
    assert "the page is blank" in report.for_model()


def test_a_missing_script_is_a_failed_request_and_a_page_cannot_read_past_its_folder(scratch_dir):
    folder = page_folder(scratch_dir, {
        "index.html": "<title>Links</title><p>Hello</p><script src=missing.js></script><img src=secret.png alt=x>",
    })  # fmt: skip
    (folder / "secret.png").symlink_to("/etc/hostname")  # a build could link to any file of the host

    report, _ = check_folder(folder, Check())

    assert not report.passed
    assert set(report.pages[0].failed_requests) == {"/missing.js: answered 404", "/secret.png: answered 404"}


class Recorder(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - the standard library's name
        Recorder.hits.append(self.path)
        self.send_response(200)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        self.wfile.write(b"reached")

    def log_message(self, format, *args):
        pass


@pytest.fixture
def host_server():
    """A server on the host's loopback, as a store, its database or a developer's tool would be."""
    Recorder.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_fetch_to_another_host_is_blocked_and_reported(scratch_dir, host_server):
    folder = page_folder(
        scratch_dir,
        {
            "index.html": f"""<title>Leak</title><p id=out>waiting</p><script>
        fetch("http://127.0.0.1:{host_server}/steal").then(() => out.textContent = "reached",
              () => out.textContent = "blocked");
        fetch("https://cdn.example.com/lib.js").catch(() => {{}});</script>"""
        },
    )

    report, _ = check_folder(folder, Check())

    assert Recorder.hits == []
    page = report.pages[0]
    assert "blocked" in page.text and "reached" not in page.text
    assert not report.passed
    assert any(f"127.0.0.1:{host_server}" in problem for problem in page.problems())


def test_chromium_itself_cannot_reach_the_hosts_loopback_and_gets_no_secrets(scratch_dir, host_server, monkeypatch):
    """Below Playwright's routes: the browser process runs in the sandbox's own network namespace and
    with a clean environment, whatever the page or the launcher's caller has."""
    import urllib.request

    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    assert urllib.request.urlopen(f"http://127.0.0.1:{host_server}/host").read() == b"reached"  # it is up
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-secret-in-the-worker")
    folder = private_folder()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(launcher_script(folder)), timeout=20_000)
            try:
                page = browser.new_page()
                with pytest.raises(PlaywrightError, match="ERR_CONNECTION_REFUSED|ERR_ADDRESS_UNREACHABLE"):
                    page.goto(f"http://127.0.0.1:{host_server}/from-the-browser", timeout=10_000)
                environments = [
                    Path(f"/proc/{pid}/environ").read_bytes() for pid in os.listdir("/proc") if pid.isdigit()
                    and _exe(pid) == CHROMIUM_BINARY
                ]  # fmt: skip
                assert environments
                assert not any(b"sk-test-secret" in env for env in environments)
            finally:
                browser.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert Recorder.hits == ["/host"]


def _exe(pid: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def test_a_step_that_clicks_and_sees_its_text_passes(scratch_dir):
    folder = page_folder(scratch_dir, {"index.html": TOGGLE_PAGE})
    check = Check(steps=(
        CheckStep(path="/", click="Dark mode", expect="Light mode"),
        CheckStep(path="/", fill="Search", text="jazz", expect="Found jazz"),
    ))  # fmt: skip

    report, _ = check_folder(folder, check)

    assert report.passed, report.for_model()
    assert [step["passed"] for step in report.pages[0].steps] == [True, True]
    assert "Found jazz" in report.pages[0].text  # the text after the steps


def test_a_step_whose_text_never_shows_fails_and_says_which(scratch_dir):
    folder = page_folder(scratch_dir, {"index.html": TOGGLE_PAGE})
    check = Check(steps=(CheckStep(path="/", click="Dark mode", expect="Night mode"),
                         CheckStep(path="/", click="Shuffle", expect="Shuffled")))  # fmt: skip

    report, _ = check_folder(folder, check)

    assert not report.passed
    assert [step["note"] for step in report.pages[0].steps] == [
        '"Night mode" did not appear within 4 seconds',
        'nothing called "Shuffle" could be clicked within 4 seconds',
    ]
    assert 'step failed, on /: click "Dark mode", expect "Night mode"' in report.for_model()


def test_problems_that_were_there_before_the_change_do_not_count(scratch_dir):
    folder = page_folder(
        scratch_dir, {"index.html": "<title>Old</title><p>Hi</p><script>console.error('old warning')</script>"}
    )
    before, _ = check_folder(folder, Check())
    assert not before.passed

    (folder / "index.html").write_text("<title>Old</title><p>Hi there</p><script>console.error('old warning')</script>")
    again, _ = check_folder(folder, Check(), before=before.pages)
    assert again.passed
    assert "Already there before the change (not counted): /: console error: old warning" in again.for_model()

    (folder / "index.html").write_text(
        "<title>Old</title><p>Hi</p><script>console.error('old warning'); null.boom</script>"
    )
    worse, _ = check_folder(folder, Check(), before=before.pages)
    assert not worse.passed
    assert worse.new_problems(worse.pages[0]) == [
        "uncaught exception: TypeError: Cannot read properties of null (reading 'boom')"
    ]


def test_screenshots_are_png_files_at_desktop_and_phone_size(scratch_dir):
    shots_dir = scratch_dir("shots-")
    report, shots = check_folder(built_player(scratch_dir), Check(), shots="before", shots_dir=shots_dir)

    assert report.passed
    assert [(s.page, s.size, s.moment) for s in shots] == [("/", "desktop", "before"), ("/", "phone", "before")]
    sizes = [Image.open(s.path).size for s in shots]
    assert sizes == [(1280, 800), (780, 1688)]  # the phone at twice its 390x844 viewport
    assert all(s.path.parent == shots_dir for s in shots)


PLAYER_RECIPE = (PLAYER / "prototype.toml").read_text()
WEB_RECIPE = """\
[prototype]
name = "Sample page"
kind = "web"

[build]
command = "rm -rf dist && mkdir dist && cp -r src/. dist/"

[test]
command = "true"

[artifact]
kind = "web"
path = "dist"
"""


def test_the_screenshot_tool_builds_the_change_and_returns_a_real_image_block(scratch_dir):
    tree = player_source(scratch_dir)
    recipe = parse_recipe(PLAYER_RECIPE)
    sandbox = load_backend("bwrap")(tree)
    page_check = PageCheck(tree, recipe)
    toolbox = Toolbox(tree, sandbox, recipe, max_verify_rounds=3, command_timeout=30, remaining=lambda: 600.0,
                      smoke=page_check.run, browser=page_check.picture)  # fmt: skip

    outcome = toolbox.call("screenshot", {"path": "/", "size": "desktop"})

    assert not outcome.is_error, outcome.content
    image, text = outcome.content
    assert image["type"] == "image" and image["source"]["media_type"] == "image/jpeg"
    picture = Image.open(io.BytesIO(base64.b64decode(image["source"]["data"])))
    assert picture.format == "JPEG" and picture.size == (1280, 800)
    assert text == {
        "type": "text",
        "text": "The page / at desktop size, title 'Web Player'.\nNo errors in the browser.",
    }
    assert (tree / "dist" / "index.html").is_file()  # built in the sandbox first

    # An edit makes the next picture build again: it shows the page as the code now is.
    toolbox.call("str_replace_based_edit_tool", {"command": "str_replace", "path": "src/index.html",
                                                 "old_str": "<title>Web Player</title>",
                                                 "new_str": "<title>Web Player 2</title>"})  # fmt: skip
    outcome = toolbox.call("screenshot", {"path": "/", "size": "phone"})
    assert "title 'Web Player 2'" in outcome.content[1]["text"]
    assert Image.open(io.BytesIO(base64.b64decode(outcome.content[0]["source"]["data"]))).size == (780, 1688)


def test_the_screenshot_tool_is_offered_only_with_the_check_and_keeps_the_tools_sorted():
    names = [tool["name"] for tool in tool_list(screenshot=True)]
    assert names == sorted(names) and "screenshot" in names
    assert "screenshot" not in [tool["name"] for tool in tool_list(screenshot=False)]
    assert tool_list(screenshot=True) == tool_list(screenshot=True)


def test_verify_fails_on_the_browser_check_after_the_tests_pass(scratch_dir):
    tree = player_source(scratch_dir, duplicate_import=True)
    recipe = parse_recipe(PLAYER_RECIPE)
    sandbox = load_backend("bwrap")(tree)

    report = run_verify(sandbox, recipe, timeout=lambda wanted: wanted, smoke=PageCheck(tree, recipe).run)

    assert not report.passed
    assert [(s.step, s.ok) for s in report.steps] == [("build", True), ("test", True), ("smoke", False)]
    assert failure_code(report) == "smoke_failed"
    assert "SyntaxError: Identifier 'formatTime' has already been declared" in report.for_model()
    assert report.as_event()["smoke"]["passed"] is False


def test_a_skipped_check_never_fails_verify(scratch_dir):
    tree = scratch_dir("tree-")
    (tree / "src").mkdir()
    (tree / "src" / "index.html").write_text("<p>hi</p>")
    recipe = parse_recipe(WEB_RECIPE)
    sandbox = load_backend("bwrap")(tree)

    report = run_verify(sandbox, recipe, timeout=lambda wanted: wanted,
                        smoke=lambda: skipped("Chromium is not installed"))  # fmt: skip

    assert report.passed
    assert [s.step for s in report.steps] == ["build", "test"]
    assert report.as_event()["smoke"]["skipped"] == "Chromium is not installed"


def test_the_check_section_of_the_recipe():
    plain = parse_recipe(WEB_RECIPE)
    assert plain.check == Check(paths=("/",), steps=(), enabled=True)  # a web artifact is checked by default

    recipe = parse_recipe(WEB_RECIPE + """
[check]
paths = ["/", "/about.html"]
steps = [
  { path = "/", click = "Dark mode", expect = "Light mode" },
  { fill = "Search", text = "jazz", expect = "Jazz" },
]
""")  # fmt: skip
    assert recipe.check.paths == ("/", "/about.html")
    assert recipe.check.steps == (
        CheckStep(path="/", click="Dark mode", expect="Light mode"),
        CheckStep(path="/", fill="Search", text="jazz", expect="Jazz"),
    )
    assert parse_recipe(WEB_RECIPE + "[check]\nenabled = false\n").check.enabled is False
    backend = WEB_RECIPE.replace('kind = "web"\n\n[build]', 'kind = "backend"\n\n[build]').replace(
        'kind = "web"\npath = "dist"', 'kind = "archive"\npath = "dist"'
    )
    assert parse_recipe(backend).check.enabled is False  # neither a web artifact nor served

    for bad, problem in [
        ('paths = ["https://example.com/"]', "is not a page of the prototype"),
        ('steps = [{ click = "A" }]', "a step clicks or fills one thing and expects a text"),
        ('steps = [{ click = "A", fill = "B", text = "c", expect = "d" }]', "a step clicks or fills one thing"),
        ('steps = [{ press = "A", expect = "B" }]', "each step is written like"),
        ("enabled = 1", "'enabled' must be true or false"),
    ]:
        with pytest.raises(RecipeError, match=problem) as caught:
            parse_recipe(WEB_RECIPE + "[check]\n" + bad + "\n")
        assert caught.value.key.startswith("check.")


def test_a_served_app_is_started_from_its_artifact_and_a_sign_in_step_goes_through(scratch_dir):
    """notes-app has no web artifact, only [serve]: its .pyz is run the way a live preview runs it, and
    the page talks to it through its socket, redirects and cookies included."""
    tree = scratch_dir("notes-")
    shutil.copytree(EXAMPLES / "notes-app", tree, dirs_exist_ok=True)
    recipe = parse_recipe((tree / "prototype.toml").read_text())
    assert recipe.check.enabled and recipe.artifact.kind == "pyz"
    built = load_backend("bwrap")(tree).run(["bash", "-c", recipe.build.command], timeout=120)
    assert built.exit_code == 0, built.output
    steps = (
        CheckStep(path="/", fill="Username", text="demo", expect="Sign in"),
        CheckStep(path="/", fill="Password", text="demo-notes", expect="Sign in"),
        CheckStep(path="/", click="Sign in", expect="Sign out"),
    )

    report = PageCheck(tree, dataclasses.replace(recipe, check=Check(steps=steps))).run()

    assert report.passed, report.for_model()
    assert "Your notes" in report.pages[0].text  # the seeded demo account's notes, after signing in


def test_a_served_app_that_does_not_start_fails_the_check_with_its_reason(scratch_dir):
    tree = scratch_dir("notes-")
    shutil.copytree(EXAMPLES / "notes-app", tree, dirs_exist_ok=True)
    recipe = parse_recipe((tree / "prototype.toml").read_text())
    broken = dataclasses.replace(recipe.serve, command="python3 -c 'raise SystemExit(3)'", seed="")
    (tree / "dist").mkdir()
    (tree / "dist" / "notes-app.pyz").write_text("sample: not a real app\n")

    report = PageCheck(tree, dataclasses.replace(recipe, serve=broken)).run()

    assert not report.passed
    assert report.pages[0].exceptions[0].startswith("the app did not start")
