"""Graduate: a version becomes a branch on the real repository and a pull request on GitHub.

Real git (a bare repository stands in for the target's remote) and a local fake of GitHub's REST API
that records every request."""

import base64
import json
import logging
import subprocess
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.files.base import ContentFile

from agents import workspace
from prototypes import graduation
from prototypes.models import Artifact, Build, Prototype, Revision, Target

pytestmark = pytest.mark.django_db

TOKEN = "ghp_s3cretTokenValue0123456789"
BASIC = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()


@pytest.fixture(autouse=True)
def fast_site(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # the personas log in by force


class FakeGitHub(BaseHTTPRequestHandler):
    """GitHub's pulls API for acme/player, and a git http remote that refuses pushes."""

    requests: list = []
    pulls: dict = {}  # head branch -> html_url of an open pull request
    status: int | None = None  # answer everything with this status instead
    headers_out: dict = {}

    def _answer(self, status, data, headers=None):
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def _record(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        FakeGitHub.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                    "json": body})  # fmt: skip
        return body

    def do_GET(self):
        self._record()
        url = urllib.parse.urlsplit(self.path)
        if url.path.endswith("/info/refs"):  # git's smart http: refuse, as GitHub does a bad token
            return self._answer(403, {"message": "denied"})
        if FakeGitHub.status:
            return self._answer(FakeGitHub.status, {"message": "Bad credentials"}, FakeGitHub.headers_out)
        query = urllib.parse.parse_qs(url.query)
        head = query["head"][0].split(":", 1)[1]
        found = (
            [{"html_url": FakeGitHub.pulls[head]}] if head in FakeGitHub.pulls and query["state"] == ["open"] else []
        )
        self._answer(200, found)

    def do_POST(self):
        body = self._record()
        if FakeGitHub.status:
            return self._answer(FakeGitHub.status, {"message": "Bad credentials"}, FakeGitHub.headers_out)
        if body["head"] in FakeGitHub.pulls:
            return self._answer(422, {"message": "Validation Failed", "errors": [
                {"resource": "PullRequest", "code": "custom",
                 "message": f"A pull request already exists for acme:{body['head']}."}]})  # fmt: skip
        url = f"https://github.example/acme/player/pull/{len(FakeGitHub.pulls) + 7}"
        FakeGitHub.pulls[body["head"]] = url
        self._answer(201, {"html_url": url, "number": len(FakeGitHub.pulls) + 6})

    def log_message(self, *args):
        pass


@pytest.fixture
def github():
    FakeGitHub.requests, FakeGitHub.pulls, FakeGitHub.status, FakeGitHub.headers_out = [], {}, None, {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGitHub)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_port}"
    yield server
    server.shutdown()
    server.server_close()


def commit(git_dir, files: dict[str, str], message: str, parent: str | None = None) -> str:
    entries = ""
    for name, text in sorted(files.items()):
        blob = workspace.git("hash-object", "-w", "--stdin", git_dir=git_dir, input=text).strip()
        entries += f"100644 blob {blob}\t{name}\n"
    tree = workspace.git("mktree", git_dir=git_dir, input=entries).strip()
    args = ["commit-tree", tree, "-m", message] + (["-p", parent] if parent else [])
    return workspace.git(*args, git_dir=git_dir).strip()


@pytest.fixture
def remote(tmp_path):
    """The target's real repository: a bare repository with one commit on main."""
    repo = tmp_path / "player.git"
    workspace.git("init", "--bare", "--quiet", "--initial-branch=main", str(repo))
    first = commit(repo, {"player.js": "play()\n"}, "The player")
    workspace.git("update-ref", "refs/heads/main", first, git_dir=repo)
    return repo


@pytest.fixture
def target(remote, github, settings, tmp_path, monkeypatch):
    settings.MIRROR_ROOT = tmp_path / "mirrors"
    settings.SITE_URL = "https://store.example.com"
    monkeypatch.setenv("ACME_GITHUB_TOKEN", TOKEN)
    monkeypatch.delenv("ACME_GITHUB_TOKEN_FILE", raising=False)
    target = Target.objects.create(slug="player", name="Player", git_url=str(remote), default_branch="main",
                                   github_repo="acme/player", github_api_url=github.url,
                                   github_token_env="ACME_GITHUB_TOKEN")  # fmt: skip
    workspace.sync_mirror(target.git_url, settings.MIRROR_ROOT / "player.git")
    return target


@pytest.fixture
def sleep_timer(alice, target, settings):
    """Alice's prototype with two built versions; their results are in the mirror under result_ref."""
    mirror = settings.MIRROR_ROOT / "player.git"
    main = workspace.resolve(mirror, "main")
    prototype = Prototype.objects.create(slug="sleep-timer", title="Sleep timer", owner=alice, target=target)
    first = Revision.objects.create(prototype=prototype, number=1, author=alice, prompt="Add a sleep timer to the player",
                                    summary="Added a sleep timer menu.", base_commit=main)  # fmt: skip
    first.result_commit = commit(mirror, {"player.js": "play()\n", "timer.js": "sleep()\n"}, "v1", main)
    first.save()
    second = Revision.objects.create(prototype=prototype, number=2, author=alice, parent=first,
                                     prompt="Fade the music out before it stops", summary="The volume fades over 10 s.",
                                     diffstat={"files": [{"path": "timer.js", "added": 2, "deleted": 1}],
                                               "added": 2, "deleted": 1})  # fmt: skip
    second.result_commit = commit(mirror, {"player.js": "play()\n", "timer.js": "fade()\nsleep()\n"}, "v2",
                                  first.result_commit)  # fmt: skip
    second.save()
    for revision in (first, second):
        workspace.git("update-ref", revision.result_ref, revision.result_commit, git_dir=mirror)
    prototype.current_revision = second
    prototype.save()
    return second


def branch_on(remote, branch):
    return workspace.git("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", git_dir=remote,
                         check=False).strip()  # fmt: skip


def test_graduating_pushes_the_branch_and_opens_a_pull_request(alice, sleep_timer, remote, github):
    url = graduation.graduate(sleep_timer, by=alice)

    assert url == "https://github.example/acme/player/pull/7"
    assert branch_on(remote, "prototype/sleep-timer-v2") == sleep_timer.result_commit
    [request] = github_requests("POST")
    assert request["path"] == "/repos/acme/player/pulls"
    assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
    sent = request["json"]
    assert (sent["title"], sent["head"], sent["base"]) == ("Sleep timer", "prototype/sleep-timer-v2", "main")
    body = sent["body"]
    assert "> Add a sleep timer to the player" in body and "> Fade the music out before it stops" in body
    assert "Added a sleep timer menu." in body and "The volume fades over 10 s." in body
    assert "| `timer.js` | 2 | 1 |" in body
    assert "https://store.example.com/p/sleep-timer/" in body
    sleep_timer.refresh_from_db()
    assert (sleep_timer.branch, sleep_timer.pull_request_url) == ("prototype/sleep-timer-v2", url)


def github_requests(method):
    return [r for r in FakeGitHub.requests if r["method"] == method]


def test_a_remix_tells_reviewers_what_was_asked_in_the_original_too(bob, sleep_timer, target, settings, remote):
    mirror = settings.MIRROR_ROOT / "player.git"
    mine = Prototype.objects.create(slug="bedtime", title="Bedtime mode", owner=bob, target=target,
                                    forked_from=sleep_timer)  # fmt: skip
    remix = Revision.objects.create(prototype=mine, number=1, author=bob, prompt="Dim the screen at bedtime")
    remix.result_commit = commit(mirror, {"timer.js": "dim()\n"}, "remix", sleep_timer.result_commit)
    remix.save()

    graduation.graduate(remix, by=bob)

    body = github_requests("POST")[0]["json"]["body"]
    asked = [body.index(words) for words in ("> Add a sleep timer", "> Fade the music out", "> Dim the screen")]
    assert asked == sorted(asked)  # oldest first
    assert "“Sleep timer” version 2 (remixed from)" in body and "https://store.example.com/p/bedtime/" in body
    assert branch_on(remote, "prototype/bedtime-v1") == remix.result_commit


def test_an_open_pull_request_for_the_branch_is_found_and_returned(alice, sleep_timer, remote):
    FakeGitHub.pulls["prototype/sleep-timer-v2"] = "https://github.example/acme/player/pull/3"

    url = graduation.graduate(sleep_timer, by=alice)

    assert url == "https://github.example/acme/player/pull/3"
    [lookup] = github_requests("GET")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(lookup["path"]).query)
    assert query == {"head": ["acme:prototype/sleep-timer-v2"], "state": ["open"]}
    assert lookup["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert graduation.graduate(sleep_timer, by=alice) == url  # and again: nothing new, no error


def test_a_branch_with_other_commits_is_never_overwritten(alice, sleep_timer, remote):
    other = commit(remote, {"player.js": "someone else's work\n"}, "theirs", branch_on(remote, "main"))
    workspace.git("update-ref", "refs/heads/prototype/sleep-timer-v2", other, git_dir=remote)

    with pytest.raises(graduation.GraduationFailed, match="already exists on acme/player") as failed:
        graduation.graduate(sleep_timer, by=alice)

    assert failed.value.code == "branch_taken"
    assert branch_on(remote, "prototype/sleep-timer-v2") == other
    assert not github_requests("POST")


@pytest.mark.parametrize("status, headers, code, words", [
    (401, {}, "token_rejected", "did not accept the store's token"),
    (403, {}, "no_access", "may not open pull requests on acme/player"),
    (403, {"X-RateLimit-Remaining": "0"}, "rate_limited", "slow down"),
    (404, {}, "repo_not_found", "does not know the repository acme/player"),
    (502, {}, "github_down", "did not answer"),
])  # fmt: skip
def test_github_refusing_becomes_a_plain_message_without_the_token(
    alice, sleep_timer, caplog, status, headers, code, words
):
    FakeGitHub.status, FakeGitHub.headers_out = status, headers
    with caplog.at_level(logging.DEBUG), pytest.raises(graduation.GraduationFailed) as failed:
        graduation.graduate(sleep_timer, by=alice)

    assert failed.value.code == code and words in str(failed.value)
    for text in (str(failed.value), repr(failed.value), failed.value.detail, caplog.text):
        assert TOKEN not in text and BASIC not in text
    sleep_timer.refresh_from_db()
    assert sleep_timer.branch == "prototype/sleep-timer-v2" and sleep_timer.pull_request_url == ""


def test_github_not_answering_is_a_plain_message(alice, sleep_timer, target):
    target.github_api_url = "http://127.0.0.1:9"  # nothing listens on the discard port
    target.save()
    sleep_timer.refresh_from_db()
    with pytest.raises(graduation.GraduationFailed, match="GitHub did not answer"):
        graduation.graduate(sleep_timer, by=alice)


def test_the_push_token_travels_in_a_header_from_the_environment_never_on_the_command_line(
    alice, sleep_timer, target, github, monkeypatch, caplog
):
    target.git_url = f"{github.url}/acme/player.git"
    target.save()
    sleep_timer.refresh_from_db()
    argvs = []
    real_run = subprocess.run

    def spy(argv, *args, **kwargs):
        argvs.append(argv)
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(workspace.subprocess, "run", spy)
    with caplog.at_level(logging.DEBUG), pytest.raises(graduation.GraduationFailed) as failed:
        graduation.graduate(sleep_timer, by=alice)

    assert failed.value.code == "push_failed"
    assert "did not accept the branch prototype/sleep-timer-v2" in str(failed.value)
    [refs] = [r for r in FakeGitHub.requests if "/info/refs" in r["path"]][:1]
    assert refs["headers"]["Authorization"] == f"Basic {BASIC}"
    assert any("push" in argv for argv in argvs)
    for text in [*(" ".join(argv) for argv in argvs), str(failed.value), failed.value.detail, caplog.text]:
        assert TOKEN not in text and BASIC not in text
    assert not github_requests("POST")


def test_the_token_may_come_from_a_file(alice, sleep_timer, tmp_path, monkeypatch):
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    monkeypatch.delenv("ACME_GITHUB_TOKEN")
    monkeypatch.setenv("ACME_GITHUB_TOKEN_FILE", str(secret))

    graduation.graduate(sleep_timer, by=alice)

    assert github_requests("POST")[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"


def test_only_the_owner_can_graduate_a_built_version(alice, bob, sleep_timer, remote):
    with pytest.raises(graduation.NotAllowed, match="owner"):
        graduation.graduate(sleep_timer, by=bob)
    unbuilt = Revision.objects.create(prototype=sleep_timer.prototype, number=3, author=alice, prompt="Pink")
    with pytest.raises(graduation.NotAllowed, match="built"):
        graduation.graduate(unbuilt, by=alice)
    assert not branch_on(remote, "prototype/sleep-timer-v2") and not FakeGitHub.requests


def test_an_app_not_connected_to_github_gets_a_plain_message(alice, sleep_timer, target, remote, monkeypatch):
    target.github_repo = ""
    target.save()
    sleep_timer.refresh_from_db()
    with pytest.raises(graduation.GraduationFailed, match="not connected to GitHub yet"):
        graduation.graduate(sleep_timer, by=alice)

    target.github_repo = "acme/player"
    target.save()
    monkeypatch.delenv("ACME_GITHUB_TOKEN")
    sleep_timer.refresh_from_db()
    with pytest.raises(graduation.GraduationFailed, match="ACME_GITHUB_TOKEN is not set"):
        graduation.graduate(sleep_timer, by=alice)

    monkeypatch.setenv("ACME_GITHUB_TOKEN", TOKEN)
    target.github_api_url = "http://github.example.com/api/v3"
    target.save()
    sleep_timer.refresh_from_db()
    with pytest.raises(graduation.GraduationFailed, match="does not use https"):
        graduation.graduate(sleep_timer, by=alice)
    assert not branch_on(remote, "prototype/sleep-timer-v2") and not FakeGitHub.requests


def test_the_owner_graduates_from_the_page(client, alice, sleep_timer, remote):
    client.force_login(alice)
    page = client.get("/p/sleep-timer/v/2/graduate/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "prototype/sleep-timer-v2" in html and "acme/player" in html and "<code>main</code>" in html
    assert "Open the pull request" in html and TOKEN not in html

    response = client.post("/p/sleep-timer/v/2/graduate/", follow=True)

    assert response.redirect_chain == [("/p/sleep-timer/", 302)]
    html = response.content.decode()
    assert '<a href="https://github.example/acme/player/pull/7">' in html
    assert branch_on(remote, "prototype/sleep-timer-v2") == sleep_timer.result_commit


def test_the_page_shows_github_failures_in_plain_words(client, alice, sleep_timer):
    FakeGitHub.status = 401
    client.force_login(alice)
    response = client.post("/p/sleep-timer/v/2/graduate/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "did not accept the store&#x27;s token" in html and TOKEN not in html and BASIC not in html


def test_the_page_refuses_others_and_hides_private_work(client, bob, carol, sleep_timer, remote):
    prototype = sleep_timer.prototype
    prototype.listing = Prototype.Listing.LISTED
    prototype.save()
    client.force_login(bob)
    assert "Open the pull request" not in client.get("/p/sleep-timer/v/2/graduate/").content.decode()
    response = client.post("/p/sleep-timer/v/2/graduate/")
    assert response.status_code == 403 and "owner" in response.content.decode()
    prototype.visibility = Prototype.Visibility.PRIVATE
    prototype.save()
    client.force_login(carol)
    assert client.post("/p/sleep-timer/v/2/graduate/").status_code == 404
    assert not branch_on(remote, "prototype/sleep-timer-v2") and not FakeGitHub.requests


def test_an_app_without_github_offers_the_patch_instead(client, alice, sleep_timer, target):
    target.github_repo = ""
    target.save()
    build = Build.objects.create(revision=sleep_timer, state=Build.State.SUCCEEDED)
    Artifact.objects.create(build=build, kind=Artifact.Kind.PATCH, file=ContentFile(b"diff\n", name="v2.patch"),
                            filename="sleep-timer-v2.patch", content_type="text/x-diff")  # fmt: skip
    client.force_login(alice)
    html = client.get("/p/sleep-timer/v/2/graduate/").content.decode()
    assert "not connected to GitHub yet" in html and "Open the pull request" not in html
    assert 'href="/p/sleep-timer/v/2/patch/">Download the change as a patch' in html
