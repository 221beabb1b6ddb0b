"""Bad input gets a clear answer, never a server error: malformed values posted to every form of the
store, numbers the database cannot hold, JSON nested too deep, text that shows nothing, names and titles
that try to reverse the text around them, and uploads too large to read."""

import re
from pathlib import Path

import pytest
from django import forms
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.urls import URLResolver
from django.utils import timezone

from prototypes import builds
from prototypes.inputs import INT_MAX, is_visibly_empty, parse_int, without_bidi_controls
from store import moderation_views
from store.api_parsers import MAX_DEPTH, nesting_depth
from store.models import Budget, Comment, Flag
from store.sharing import create_link
from store.urls import urlpatterns
from tests.test_pages import make_prototype, succeed

pytestmark = pytest.mark.django_db
STORE = Path(__file__).resolve().parent.parent / "store"

# One request per kind of bad value, with every field of every form set to it.
MALFORMED = {
    "a number past 64 bits": "9" * 40,
    "a negative one": "-" + "9" * 40,
    "not a number": "abc",
    "a float beyond range": "1e999",
    "nothing": "",
    "a NUL character": "a\x00b",
    "only invisible characters": "\u200b\u202e\u3164 ",
    "deep brackets": "[" * 5000 + "]" * 5000,
    "100,000 characters": "x" * 100_000,
    "odd text": "../../%s{{7*7}}<script>'\"\\",
    "an array where text is expected": ["1", "abc", "9" * 40],
}


def walk(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            yield prefix + str(pattern.pattern)


def field_names() -> set[str]:
    """Every name a store form or view reads from a POST: the fields of its form classes, and the keys
    its views read from request.POST."""
    names: set[str] = set()
    classes = [forms.Form]
    while classes:
        cls = classes.pop()
        classes += cls.__subclasses__()
        if cls.__module__.startswith("store."):
            names |= set(cls.base_fields)
    for source in STORE.glob("*.py"):
        names |= set(re.findall(r"""request\.POST(?:\.get\(|\[)\s*["'](\w+)["']""", source.read_text()))
    return names


@pytest.fixture
def world(alice, bob, target):
    """Something of everything, for the forms' addresses to reach their code rather than their 404s."""
    prototype, revision, build = make_prototype(alice, target, slug="tune")
    succeed(build, {"index.html": b"<h1>hi</h1>"})
    revision.result_commit = "a" * 40
    revision.save()
    theirs, _, _ = make_prototype(bob, target, slug="bobs")
    comment = prototype.comments.create(revision=revision, author=bob, body="Nice")
    _link, token = create_link(prototype, by=alice)
    flag = Flag.objects.create(prototype=theirs, reporter=alice, reason="Spam")
    budget = Budget.objects.create(user=bob, daily_builds=3)
    artifact = build.artifacts.get()
    return {"slug": "tune", "token": token, "number": 1, "size": 57, "filename": "index.html", "path": "index.html",
            "comments": comment.pk, "builds": build.pk, "artifacts": artifact.pk, "flags": flag.pk,
            "budgets": budget.pk, "share": _link.pk, "screenshots": 1, "attachments": 1, "attempt": 1}  # fmt: skip


@pytest.fixture
def target():
    from prototypes.models import Target

    return Target.objects.create(
        slug="web-player", name="Web Player", kind="web", git_url="/nowhere", recipe_checked_at=timezone.now()
    )


def addresses(world) -> list[str]:
    """Every page address of the store (the API has its own fuzzing: tests/test_api_schema.py), with
    real slugs, ids and tokens, and once more with an id no integer column can hold."""
    actions = sorted(set(moderation_views.PROTOTYPE_ACTIONS) | set(moderation_views.COMMENT_ACTIONS))
    urls = set()
    for route in walk(urlpatterns):
        if route.startswith(("admin/", "api/", "oidc/")):
            continue
        owner = re.search(r"(\w+)/[^/]*<int:pk>", route)  # whose id: "comments/<int:pk>/…" → a comment's
        for pk in {str(world.get(owner.group(1), world["builds"])) if owner else "", "9" * 40}:
            for action in actions if "<str:action>" in route else [""]:
                values = {**world, "pk": pk, "action": action}
                urls.add("/" + re.sub(r"<\w+:(\w+)>", lambda match, values=values: str(values[match.group(1)]), route))
    return sorted(urls)


def test_every_form_answers_malformed_values_without_a_server_error(client, world, alice, ada, monkeypatch, settings):
    """Every page that takes a POST, as the owner (an admin for staff pages), every field malformed in each way
    (and with none at all, and with a file that is not an image): a page or a form error, never a 5xx."""
    settings.RATELIMIT_BUILDS = settings.RATELIMIT_COMMENTS = settings.RATELIMIT_SHARE_LINKS = ""
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    monkeypatch.setattr(builds, "_enqueue", lambda build: None)
    client.raise_request_exception = False  # a server error is a 500 to count, not an exception
    names = field_names()
    assert {"idea", "title", "body", "revision", "parent", "daily_builds", "expires", "reason", "flag"} <= names
    payloads = {label: dict.fromkeys(names, value) for label, value in MALFORMED.items()}
    payloads["no fields at all"] = {}
    payloads["a file that is not an image"] = {**dict.fromkeys(names, "1"), "images": SimpleUploadedFile(
        "mockup.png", b"\x89PNG not really", content_type="image/png")}  # fmt: skip
    taking_post, errors = [], []
    for url in addresses(world):
        # The owner reaches the most code behind the store's own forms; an admin, the staff pages.
        for person in [ada if url.startswith(("/costs/", "/moderation/", "/admin-tools/")) else alice]:
            # An id past 64 bits is a 404 before any field is read: one request is enough there.
            for label, data in list(payloads.items())[: 1 if "9" * 40 in url else None]:
                client.force_login(person)
                with transaction.atomic():  # each request on the same world: what one does, the next never sees
                    if hasattr(data.get("images"), "seek"):
                        data["images"].seek(0)
                    response = client.post(url, data)
                    transaction.set_rollback(True)
                if response.status_code == 405:
                    break
                taking_post.append(url)
                if response.status_code >= 500:
                    errors.append(f"POST {url[:80]} as {person} with {label}: {response.status_code}")
    assert errors == []
    expected = ["/new/", "/p/tune/change/", "/p/tune/comment/", "/p/tune/share/", "/costs/budgets/", "/p/tune/flag/"]
    assert set(expected) <= set(taking_post), "the forms were not reached"


def test_numbers_people_type_are_whole_numbers_the_database_can_hold():
    assert parse_int("42") == 42 and parse_int(" 7 ") == 7 and parse_int(3) == 3
    for junk in ["", None, "abc", "1.5", "1e3", "١٢", "1_000", "9" * 40, "-1", str(2**63), "9" * 5000]:
        assert parse_int(junk) is None, junk
    assert parse_int("-5", minimum=-10) == -5
    assert parse_int(str(INT_MAX + 1), maximum=INT_MAX) is None and parse_int("0", minimum=1) is None


def test_an_integer_too_large_for_the_database_is_a_form_error_not_a_crash(client, ada, bob):
    client.force_login(ada)
    response = client.post("/costs/budgets/", {"username": "bob", "daily_builds": "9" * 30})
    assert response.status_code == 400
    assert f"less than or equal to {INT_MAX}" in response.content.decode()
    assert not Budget.objects.exists()


def test_a_version_that_is_not_a_number_or_does_not_exist_is_never_shared(client, world, alice):
    client.force_login(alice)
    for revision in ["abc", "9" * 40, "7"]:
        response = client.post("/p/tune/share/", {"revision": revision, "expires": "7"})
        assert response.status_code == 400 and "no such version" in response.content.decode()
    assert client.post("/p/tune/share/", {"revision": "1", "expires": "7"}).status_code == 200


def test_a_comment_naming_a_version_or_parent_by_junk_still_lands_on_the_current_version(client, world, bob):
    client.force_login(bob)
    response = client.post("/p/tune/comment/", {"body": "Lovely", "revision": "v1", "parent": "9" * 40})
    assert response.status_code == 302
    comment = Comment.objects.get(body="Lovely")
    assert comment.revision.number == 1 and comment.parent is None


def test_nul_characters_never_reach_a_view_or_the_database(client, world, bob, mo):
    # PostgreSQL cannot store NUL in text: before one rule dropped them, every view reading
    # request.POST itself (comments, flags, moderation reasons) answered 500 there.
    client.force_login(bob)
    response = client.post("/p/tune/comment/", {"body": "Lov\x00ely", "revision": "1\x00"})
    assert response.status_code == 302
    assert Comment.objects.filter(body="Lovely").exists()
    assert client.get("/?q=tu\x00ne").status_code == 200
    assert client.get("/api/prototypes/?q=tu\x00ne").status_code == 200


def test_the_api_refuses_json_nested_too_deep_before_decoding_it(client, world, bob):
    assert nesting_depth('{"a": [1, {"b": "[[[["}]}') == 3
    assert nesting_depth("[" * 5000) == MAX_DEPTH + 1  # it stops counting there
    assert nesting_depth('"\\"[[[' + "\\" * 3) == 0  # brackets in a string (escaped quote, unterminated)
    client.force_login(bob)
    deep = '{"prototype": "tune", "body": ' + "[" * 5000 + "]" * 5000 + "}"
    response = client.post("/api/comments/", deep, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"
    assert f"more than {MAX_DEPTH} deep" in response.json()["error"]["message"]
    fine = client.post("/api/comments/", {"prototype": "tune", "body": "Fine"}, content_type="application/json")
    assert fine.status_code == 201


def test_an_api_filter_past_64_bits_is_a_400_naming_it(client, world, bob):
    client.force_login(bob)
    response = client.get("/api/artifacts/", {"build": "9" * 30})
    assert response.status_code == 400 and "build" in response.json()["error"]["fields"]
    assert client.get("/api/artifacts/", {"build": world["builds"]}).status_code == 200


# --- text that shows nothing, and text that turns the text around it ---------------------------------

INVISIBLE = "\u200b \u202e\u2066\ufeff\u3164\n\u00ad\u034f"  # zero width, bidi, BOM, Hangul filler, marks


def test_one_rule_says_when_text_shows_nothing():
    for empty in ["", None, "   \n\t", INVISIBLE, "\u2800", "\U000e0041\U000e007f"]:
        assert is_visibly_empty(empty), repr(empty)
    for shown in ["a", " \u200b.", "مرحبا", "👍", "\u200b👨\u200d👩\u200d👧", "漢"]:
        assert not is_visibly_empty(shown), repr(shown)
    assert without_bidi_controls("Invoice\u202efdp.exe\u2066x\u2069") == "Invoicefdp.exex"
    assert without_bidi_controls("שלום \u200f") == "שלום \u200f"  # letters and marks keep their direction


def test_pages_refuse_ideas_titles_and_comments_made_only_of_invisible_characters(client, world, alice, bob, target):
    from prototypes.models import Build, Prototype

    client.force_login(alice)
    before = Build.objects.count()
    page = client.post("/new/", {"target": target.pk, "idea": INVISIBLE, "visibility": "company"})
    assert page.status_code == 200 and "Write something a person can read" in page.content.decode()
    page = client.post("/p/tune/change/", {"idea": INVISIBLE})
    assert "Write something a person can read" in page.content.decode()
    assert Build.objects.count() == before
    edit = client.post("/p/tune/edit/", {"title": INVISIBLE, "visibility": "company"})
    assert edit.status_code == 200 and Prototype.objects.get(slug="tune").title == "Tune up"
    made = client.post("/new/", {"target": target.pk, "idea": "\u200b\nA sleep timer", "title": INVISIBLE,
                                 "visibility": "company"})  # fmt: skip
    assert made.status_code == 302 and Prototype.objects.latest("pk").title == "A sleep timer"
    client.force_login(bob)
    client.post("/p/tune/comment/", {"body": INVISIBLE})
    assert not Comment.objects.exclude(body="Nice").exists()


def test_the_api_refuses_them_as_empty_fields(client, world, alice, bob, target):
    client.force_login(alice)
    new = client.post("/api/prototypes/", {"target": target.slug, "idea": INVISIBLE}, content_type="application/json")
    assert new.status_code == 400 and "idea" in new.json()["error"]["fields"]
    edit = client.patch("/api/prototypes/tune/", {"title": INVISIBLE}, content_type="application/json")
    assert edit.status_code == 400 and "title" in edit.json()["error"]["fields"]
    client.force_login(bob)
    comment = client.post("/api/comments/", {"prototype": "tune", "body": INVISIBLE}, content_type="application/json")
    assert comment.status_code == 400 and "body" in comment.json()["error"]["fields"]


def test_names_and_titles_are_shown_without_bidi_controls_and_an_invisible_name_as_the_username(
    client, world, alice, bob
):
    from prototypes.models import Prototype

    alice.first_name, alice.last_name = "\u200b", "\u2066"
    alice.save()
    bob.first_name, bob.last_name = "Bob\u202e", "evil"
    bob.save()
    Prototype.objects.filter(slug="tune").update(title="Invoice\u202efdp.exe")
    client.force_login(bob)
    for url in ["/", "/p/tune/"]:
        html = client.get(url).content.decode()
        assert "Invoicefdp.exe" in html, url
        assert not re.search("[\u202a-\u202e\u2066-\u2069]", html), url
        assert ">alice<" in html or "by alice" in html, url  # her name shows nothing: her username stands in
    assert "Bob evil" in client.get("/p/tune/").content.decode()  # the comment's author, and the header


def test_every_template_shows_people_and_titles_through_the_filters():
    """New pages keep the rule: a person through `|person`, a prototype's title through `|no_bidi`."""
    unsafe = []
    for path in (STORE.parent / "templates").rglob("*.html"):
        for line in path.read_text().splitlines():
            if "get_full_name" in line or re.search(r"\{\{ *(?:[\w.]+\.)?(?:prototype|p)\.title *\}\}", line):
                unsafe.append(f"{path.name}: {line.strip()[:100]}")
    assert unsafe == []


def test_a_name_from_single_sign_on_made_of_invisible_characters_is_not_kept(alice):
    from store.auth import StoreOIDCBackend

    StoreOIDCBackend._update_profile(alice, {"given_name": "\u200b\u200b", "family_name": "Liddell",
                                             "email": alice.email})  # fmt: skip
    alice.refresh_from_db()
    assert alice.first_name == "Alice" and alice.last_name == "Liddell"


# --- uploads too large to read -----------------------------------------------------------------------


class Unreadable:
    """A request body that fails the test if anyone reads it."""

    def read(self, *args):
        raise AssertionError("the body of an oversized request was read")

    readline = read


@pytest.fixture
def without_connection_resets():
    """Django closes "old" connections around each request, which would throw the test's transaction
    away when the real WSGI or ASGI app is called (its test client does the same)."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def wsgi_post(path: str, size: int) -> tuple[str, dict, bytes]:
    from store.wsgi import application

    answer = {}
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "SERVER_NAME": "testserver", "SERVER_PORT": "80",
               "wsgi.url_scheme": "http", "wsgi.input": Unreadable(), "wsgi.errors": None,
               "CONTENT_TYPE": "multipart/form-data; boundary=xyz", "CONTENT_LENGTH": str(size)}  # fmt: skip
    body = b"".join(application(environ, lambda status, headers: answer.update(status=status, headers=headers)))
    return answer["status"], dict(answer["headers"]), body


def test_an_oversized_upload_is_refused_by_its_declared_size_without_reading_it(without_connection_resets):
    from store.request_size import max_request_bytes, too_large

    status, headers, body = wsgi_post("/new/", 60 * 2**20)
    assert status.startswith("413") and "text/html" in headers["Content-Type"]
    assert "too large" in body.decode() and "Back button" in body.decode()
    status, headers, body = wsgi_post("/api/prototypes/", 60 * 2**20)
    assert status.startswith("413") and json_error(body)["code"] == "too_large"
    assert "at most 22.5 MB" in json_error(body)["message"]
    assert not too_large(str(max_request_bytes())) and too_large(str(max_request_bytes() + 1))
    assert not too_large("") and not too_large("-5") and not too_large(None)
    assert too_large("9" * 30) and too_large("+1_000_000_000")  # as Django's int() reads them


def json_error(body: bytes) -> dict:
    import json

    return json.loads(body)["error"]


def asgi_post(path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes, int]:
    """POST through the store's real ASGI app; returns the status, the body and how many body chunks the
    app asked for."""
    from asgiref.sync import async_to_sync

    from store.asgi import application

    pending, asked, sent = list(chunks), [0], []

    async def receive():
        asked[0] += 1
        if not pending:
            raise AssertionError("the app asked for more after the body ended")
        return {"type": "http.request", "body": pending.pop(0), "more_body": bool(pending)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), *headers], "client": ("127.0.0.1", 5000),
             "server": ("testserver", 80)}  # fmt: skip
    async_to_sync(application)(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"), asked[0]


def test_under_asgi_a_declared_oversized_body_never_reaches_django(without_connection_resets):
    megabyte = b"x" * 2**20
    status, body, asked = asgi_post("/new/", [megabyte] * 60, [(b"content-length", str(60 * 2**20).encode())])
    assert status == 413 and asked == 0 and b"too large" in body


def test_under_asgi_a_body_sent_without_a_size_is_cut_off_at_the_limit(without_connection_resets):
    from store.request_size import max_request_bytes

    megabyte = b"x" * 2**20
    status, body, asked = asgi_post("/api/prototypes/", [megabyte] * 60, [(b"transfer-encoding", b"chunked")])
    assert status == 413 and b"too_large" in body
    assert asked == max_request_bytes() // 2**20 + 1  # it stopped reading just past the limit
