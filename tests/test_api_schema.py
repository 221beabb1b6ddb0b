"""The API's OpenAPI schema: it generates without a single warning, its docs page works offline, and
Schemathesis, calling the real WSGI app as a script signed in as Alice, finds no operation that
answers a server error — with data made to fit the schema and data made not to, on made-up ids and on
real ones, and with what generated data never holds: JSON nested thousands deep, numbers past 64 bits."""

import re
import time

import pytest
import schemathesis
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode

from prototypes import builds
from store import feedback
from store.models import Flag, Reaction
from store.sharing import create_link
from store.wsgi import application
from tests.test_pages import make_prototype, succeed

pytestmark = pytest.mark.django_db
EXAMPLES = 5  # per operation, per way of generating: the whole walk stays well under a minute


def test_the_schema_generates_and_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))  # raises on any warning
    text = out.read_text()
    for path in ["/api/prototypes/", "/api/builds/{id}/events/", "/api/share-links/", "/api/flags/"]:
        assert f"  {path}:" in text
    assert "tokenAuth" in text and "#/components/schemas/Error" in text


def test_the_docs_page_works_offline(client, alice):
    assert client.get("/api/docs/")["Location"].startswith("/accounts/login/")  # for signed-in people, like the pages
    assert client.get("/api/schema/").status_code == 401
    client.force_login(alice)
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert not re.search(r"<script>", html)  # every script from a file: the store's CSP allows no inline script
    assert "script-src 'self'" in page["Content-Security-Policy"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and not [url for url in assets if "//" in url]  # nothing from another host
    for url in assets:
        if url.startswith("/static/"):
            assert finders.find(url.removeprefix("/static/")), url
    script = next(url for url in assets if "script" in url and not url.startswith("/static/"))
    init = client.get(script.replace("&amp;", "&"))
    assert init.status_code == 200 and "/api/schema/" in init.content.decode()


@pytest.fixture
def wsgi_app():
    """The real WSGI app, on the test's database connection: Django closes "old" connections around
    each request, which here would throw the test's transaction away (its test client does the same)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield application
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def world(alice, bob, target_fixture):
    """Something of everything, so that operations on real ids reach their code, not only their 404s."""
    prototype, revision, build = make_prototype(alice, target_fixture, slug="tune")
    artifact = succeed(build, {"index.html": b"<h1>hi</h1>"}, kind="archive", filename="tune.zip")
    revision.result_commit = "a" * 40
    revision.save()
    theirs, _, _ = make_prototype(bob, target_fixture, slug="bobs")
    comment = feedback.add_comment(prototype=prototype, revision=revision, author=bob, body="Nice")
    return {
        "/api/prototypes/{slug}": prototype.slug,
        "/api/targets/{slug}": target_fixture.slug,
        "/api/revisions/{id}": revision.pk,
        "/api/builds/{id}": build.pk,
        "/api/artifacts/{id}": artifact.pk,
        "/api/comments/{id}": comment.pk,
        "/api/reactions/{id}": Reaction.objects.create(prototype=prototype, user=alice, kind="like").pk,
        "/api/share-links/{id}": create_link(prototype, by=alice)[0].pk,
        "/api/flags/{id}": Flag.objects.create(prototype=theirs, reporter=alice, reason="Spam").pk,
    }


@pytest.fixture
def target_fixture():
    from prototypes.models import Target

    return Target.objects.create(
        slug="web-player", name="Web Player", kind="web", git_url="/nowhere", recipe_checked_at=timezone.now()
    )


def real_ids(path: str, world: dict) -> dict:
    for prefix, value in world.items():
        if path.startswith(prefix):
            return {prefix.rsplit("{", 1)[1].rstrip("}"): value}
    return {}


def test_no_operation_answers_a_server_error(wsgi_app, world, alice, monkeypatch, settings):
    settings.RATELIMIT_BUILDS = settings.RATELIMIT_COMMENTS = ""  # the fuzzing makes many; limits are tested apart
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    monkeypatch.setattr(builds, "_enqueue", lambda build: None)
    auth = {"Authorization": f"Token {Token.objects.create(user=alice).key}"}
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app, headers=auth)
    started, calls, errors, operations = time.monotonic(), [], [], 0

    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        known = real_ids(operation.path, world)
        ways = [(GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, None)]
        if known:
            ways.append((GenerationMode.POSITIVE, known))
            if len(operation.query) or len(operation.body):  # else a real id leaves nothing to make invalid
                ways.append((GenerationMode.NEGATIVE, known))
        for mode, path_parameters in ways:
            strategy = operation.as_strategy(generation_mode=mode, headers=auth, path_parameters=path_parameters)

            @given(case=strategy)
            @hypothesis_settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))  # fmt: skip
            def call(case):
                response = case.call(headers=auth)
                calls.append(response.status_code)
                if response.status_code >= 500:
                    errors.append(f"{case.method} {case.formatted_path} {case.query} {case.body!r}: "
                                  f"{response.status_code} {response.text[:300]}")  # fmt: skip

            try:
                call()
            except Unsatisfiable:
                assert mode == GenerationMode.NEGATIVE  # nothing of this operation left to make invalid

    assert operations >= 30  # every operation of the schema was walked
    assert errors == []
    assert 200 in calls and 201 in calls and 404 in calls and 400 in calls  # real ids reached real code
    assert time.monotonic() - started < 90


DEEP = "[" * 5000 + "]" * 5000  # json.loads recursed once per level: RecursionError, a 500
HUGE = [10**30, -(10**30), "9" * 40, 2**63, 1e308]  # past 64 bits: OverflowError in SQLite, int4 in PostgreSQL


def body_properties(operation, raw_schema: dict) -> list[str]:
    """The names a JSON request body of this operation may hold (its schema, with $refs followed)."""
    content = operation.definition.raw.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema", {})
    if "$ref" in schema:
        schema = raw_schema["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return list(schema.get("properties", {}))


def test_no_operation_answers_a_server_error_to_deep_nesting_or_huge_numbers(wsgi_app, world, alice, ada, monkeypatch,
                                                                              settings):  # fmt: skip
    """Made by hand, since generated data stays shallow and small: bodies nested 5,000 deep, and numbers
    past 64 bits in every body field, query parameter and id, on real ids. Each is answered in the API's
    error format, never with a 5xx, and every operation that reads a body refuses the deep one with a 400.
    Operations only admins may use (registering targets) refuse Alice with a 403 before reading anything,
    so their bodies are sent again as Ada."""
    settings.RATELIMIT_BUILDS = settings.RATELIMIT_COMMENTS = ""
    monkeypatch.setattr(builds, "_enqueue", lambda build: None)
    auth = {"Authorization": f"Token {Token.objects.create(user=alice).key}"}
    as_admin = {"Authorization": f"Token {Token.objects.create(user=ada).key}"}
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app, headers=auth)
    errors, answers, deep_answers = [], [], {}

    def send(operation, headers=auth, **parts):
        case = operation.Case(**parts)
        response = case.call(headers=headers)
        answers.append(response.status_code)
        refused_in_its_format = response.status_code < 400 or "error" in response.json()
        if response.status_code >= 500 or not refused_in_its_format:
            errors.append(f"{case.method} {case.formatted_path} {case.query} {str(case.body)[:80]}: "
                          f"{response.status_code} {response.text[:200]}")  # fmt: skip
        return response

    for result in schema.get_all_operations():
        operation = result.ok()
        names = [p.name for p in operation.path_parameters]
        known = real_ids(operation.path, world) or {name: 1 for name in names}
        for name in names:  # an id no integer column can hold
            send(operation, path_parameters={**known, name: "9" * 40},
                 query={p.name: "1" for p in operation.query if p.is_required})  # fmt: skip
        for parameter in operation.query:
            for value in HUGE:
                send(operation, path_parameters=known, query={parameter.name: value})
        if operation.method.upper() in {"POST", "PUT", "PATCH"}:
            headers = auth
            response = send(operation, path_parameters=known, body=DEEP, media_type="application/json")
            if response.status_code == 403 and response.json()["error"]["message"].startswith("Only admins"):
                headers = as_admin
                response = send(operation, headers, path_parameters=known, body=DEEP, media_type="application/json")
            if body_properties(operation, schema.raw_schema):  # (the others never read their body)
                deep_answers[f"{operation.method.upper()} {operation.path}"] = response.status_code
            for name in body_properties(operation, schema.raw_schema):
                for value in [*HUGE, [[[[[[[[1]]]]]]]], {"a": {"b": {"c": []}}}]:
                    send(operation, headers, path_parameters=known, body={name: value}, media_type="application/json")

    assert errors == []
    assert len(deep_answers) >= 8 and set(deep_answers.values()) == {400}, deep_answers
    assert 400 in answers and 404 in answers
