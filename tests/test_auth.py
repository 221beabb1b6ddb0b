"""Sign-in: OpenID Connect configured by environment beside local accounts; the provider's groups map to
the store's roles. The provider itself is replaced at the backend's three calls to it (token, token
check, userinfo): no test talks to a real identity provider."""

import runpy
import sys
import types
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.urls import include, path

from store.auth import StoreOIDCBackend, parse_role_groups, roles_from_claims

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[1]
OIDC_ENV = {
    "OIDC_RP_CLIENT_ID": "prototype-store",
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "https://login.example.com/authorize",
    "OIDC_OP_TOKEN_ENDPOINT": "https://login.example.com/token",
    "OIDC_OP_USER_ENDPOINT": "https://login.example.com/userinfo",
    "OIDC_OP_JWKS_ENDPOINT": "https://login.example.com/jwks",
    "OIDC_PROVIDER_NAME": "Acme Login",
}


def settings_module(monkeypatch, env: dict[str, str]) -> dict:
    """store/settings.py evaluated afresh under `env` (plus the test run's own)."""
    for name in [*OIDC_ENV, "OIDC_RP_CLIENT_SECRET", "OIDC_RP_CLIENT_SECRET_FILE", "OIDC_GROUPS_CLAIM"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "store" / "settings.py"))


@pytest.fixture(autouse=True)
def routes(settings):
    """The sign-in routes, whether or not store/urls.py includes them yet."""
    module = types.ModuleType("auth_test_urls")
    module.urlpatterns = [path("", include("store.auth")), path("", include("store.urls"))]
    sys.modules[module.__name__] = module
    settings.ROOT_URLCONF = module.__name__


@pytest.fixture
def oidc(settings, monkeypatch):
    """OpenID Connect switched on, as the environment in OIDC_ENV would, with the provider replaced."""
    loaded = settings_module(monkeypatch, {**OIDC_ENV, "OIDC_RP_CLIENT_SECRET": "s3cret"})
    for name, value in loaded.items():
        if name.startswith("OIDC_") or name in ("AUTHENTICATION_BACKENDS", "LOGIN_REDIRECT_URL_FAILURE"):
            setattr(settings, name, value)
    provider = types.SimpleNamespace(claims={}, calls=[])

    def get_token(backend, payload):
        provider.calls.append(("token", payload["code"]))
        return {"id_token": "id-token", "access_token": "access-token"}

    def verify_token(backend, token, **kwargs):
        provider.calls.append(("verify", token))
        return {"nonce": kwargs.get("nonce"), "sub": "123"}

    def get_userinfo(backend, access_token, id_token, payload):
        provider.calls.append(("userinfo", access_token))
        return provider.claims

    monkeypatch.setattr(StoreOIDCBackend, "get_token", get_token)
    monkeypatch.setattr(StoreOIDCBackend, "verify_token", verify_token)
    monkeypatch.setattr(StoreOIDCBackend, "get_userinfo", get_userinfo)
    return provider


def sign_in_through_provider(client, claims: dict, provider, next_url="/"):
    """What the browser does: start at the store, come back from the provider with a code."""
    provider.claims = claims
    start = client.get(f"/oidc/authenticate/?next={next_url}")
    assert start.status_code == 302
    location = urlsplit(start["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == OIDC_ENV["OIDC_OP_AUTHORIZATION_ENDPOINT"]
    query = parse_qs(location.query)
    assert query["client_id"] == ["prototype-store"] and "code_challenge" in query  # PKCE
    return client.get(f"/oidc/callback/?code=the-code&state={query['state'][0]}")


def test_without_oidc_settings_only_local_accounts_sign_in(client, monkeypatch, alice):
    loaded = settings_module(monkeypatch, {})
    assert loaded["OIDC_ENABLED"] is False
    assert loaded["AUTHENTICATION_BACKENDS"] == ["django.contrib.auth.backends.ModelBackend"]
    page = client.get("/accounts/login/").content.decode()
    assert "Sign in with" not in page and 'name="password"' in page
    assert client.get("/oidc/authenticate/").status_code == 404
    from tests.conftest import PASSWORD

    assert client.post("/accounts/login/", {"username": "alice", "password": PASSWORD}).status_code == 302


def test_the_environment_switches_oidc_on_and_reads_the_secret_from_a_file(monkeypatch, tmp_path):
    (tmp_path / "secret").write_text("from-a-file\n")
    loaded = settings_module(monkeypatch, {**OIDC_ENV, "OIDC_RP_CLIENT_SECRET_FILE": str(tmp_path / "secret")})
    assert loaded["OIDC_ENABLED"] is True
    assert loaded["AUTHENTICATION_BACKENDS"] == [
        "store.auth.StoreOIDCBackend",
        "django.contrib.auth.backends.ModelBackend",
    ]
    assert loaded["OIDC_RP_CLIENT_SECRET"] == "from-a-file"
    assert (
        loaded["OIDC_OP_JWKS_ENDPOINT"] == "https://login.example.com/jwks" and loaded["OIDC_RP_SIGN_ALGO"] == "RS256"
    )


def test_a_half_configured_provider_stops_the_store_at_start(monkeypatch):
    with pytest.raises(ImproperlyConfigured, match="OIDC_OP_TOKEN_ENDPOINT, OIDC_OP_USER_ENDPOINT, OIDC_OP_JWKS"):
        settings_module(monkeypatch, {"OIDC_RP_CLIENT_ID": "store", "OIDC_OP_AUTHORIZATION_ENDPOINT": "https://x"})


def test_the_login_page_offers_the_provider_beside_local_accounts(client, oidc):
    page = client.get("/accounts/login/?next=/p/player/").content.decode()
    assert "Sign in with Acme Login" in page and 'href="/oidc/authenticate/?next=/p/player/"' in page
    assert 'name="password"' in page  # local accounts stay


def test_a_new_person_signs_in_through_the_provider_and_becomes_a_maker(client, oidc):
    claims = {"email": "dana@example.com", "email_verified": True, "preferred_username": "dana",
              "given_name": "Dana", "family_name": "Scully"}  # fmt: skip
    response = sign_in_through_provider(client, claims, oidc, next_url="/new/")
    assert response.status_code == 302 and response["Location"] == "/new/"
    dana = User.objects.get(email="dana@example.com")
    assert (dana.username, dana.get_full_name()) == ("dana", "Dana Scully")
    assert list(dana.groups.values_list("name", flat=True)) == ["maker"]
    assert not dana.has_usable_password() and not dana.is_staff
    assert [call[0] for call in oidc.calls] == ["token", "verify", "userinfo"]
    assert client.get("/").status_code == 200  # signed in


def test_the_providers_groups_decide_the_roles_at_every_sign_in(client, oidc, settings, alice):
    settings.OIDC_GROUPS_CLAIM = "groups"
    settings.OIDC_ROLE_GROUPS = "store-admins=admin,store-mods=moderator,everyone=viewer"
    # Alice's local account is matched by her email.
    sign_in_through_provider(client, {"email": "alice@example.com", "groups": ["store-mods", "hr"]}, oidc)
    alice.refresh_from_db()
    assert set(alice.groups.values_list("name", flat=True)) == {"moderator"}
    assert alice.has_perm("prototypes.moderate_prototype") and not alice.is_superuser
    client.logout()
    sign_in_through_provider(client, {"email": "alice@example.com", "groups": ["store-admins"]}, oidc)
    alice = User.objects.get(pk=alice.pk)
    assert alice.is_superuser and alice.is_staff and set(alice.groups.values_list("name", flat=True)) == {"admin"}
    client.logout()
    sign_in_through_provider(client, {"email": "alice@example.com", "groups": ["hr"]}, oidc)
    alice = User.objects.get(pk=alice.pk)
    assert not alice.is_superuser and set(alice.groups.values_list("name", flat=True)) == {"maker"}


def test_an_email_the_provider_has_not_verified_signs_nobody_in(client, oidc, alice):
    response = sign_in_through_provider(client, {"email": "alice@example.com", "email_verified": False}, oidc)
    assert response["Location"] == "/accounts/login/?sso=failed"
    assert "Signing in with Acme Login did not work" in client.get(response["Location"]).content.decode()
    assert client.get("/").status_code == 302  # still signed out


def test_claims_map_to_roles():
    mapping = parse_role_groups("store-admins=admin, store-mods = moderator,,team=a=maker")
    assert mapping == {"store-admins": "admin", "store-mods": "moderator", "team=a": "maker"}
    mapping = {"store-admins": "admin", "store-mods": "moderator"}
    roles = lambda claims: roles_from_claims(claims, claim="groups", mapping=mapping, default="maker")  # noqa: E731
    assert roles({"groups": ["store-mods", "store-admins"]}) == {"moderator", "admin"}
    assert roles({"groups": "store-mods"}) == {"moderator"}  # some providers send one group as a string
    assert roles({"groups": ["nothing-we-know"]}) == {"maker"}
    assert roles({"email": "x@example.com"}) is None  # no claim: roles stay as they are
    assert roles_from_claims({"groups": ["store-mods"]}, claim="", mapping=mapping, default="maker") is None
    with pytest.raises(ImproperlyConfigured):
        parse_role_groups("store-admins=root")
