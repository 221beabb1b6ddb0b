"""Security headers: a Content-Security-Policy on the store's pages (previews keep their own sandbox),
HSTS and secure cookies in production, and `manage.py check --deploy` clean with production settings."""

import os
import re
import runpy
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.files.base import ContentFile

from prototypes.models import Artifact, Build, Prototype, Revision, Target
from prototypes.pipeline import preview_dir
from store.previews import preview_url
from store.views import PREVIEW_CSP

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": secrets.token_urlsafe(64),
    "SITE_URL": "https://store.example.com",
    "ALLOWED_HOSTS": "store.example.com",
}


def production_env(tmp_path, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "OIDC_", "DATABASE_URL", "REDIS_URL"))}
    return {**env, "VAR_DIR": str(tmp_path), **PRODUCTION, **extra}


def settings_under(monkeypatch, tmp_path, **extra) -> dict:
    for name, value in production_env(tmp_path, **extra).items():
        monkeypatch.setenv(name, value)
    for name in ("SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_PROXY_SSL_HEADER", "PREVIEW_ORIGIN"):
        if name not in extra:
            monkeypatch.delenv(name, raising=False)
    return runpy.run_path(str(ROOT / "store" / "settings.py"))


SSO = {
    "OIDC_RP_CLIENT_ID": "store",
    **{
        f"OIDC_OP_{name}_ENDPOINT": f"https://login.example.com/{name.lower()}"
        for name in ("AUTHORIZATION", "TOKEN", "USER", "JWKS")
    },
}


@pytest.mark.parametrize(
    "extra", [{}, {"PREVIEW_ORIGIN": "https://previews.example.com", **SSO}], ids=["plain", "full"]
)
def test_check_deploy_is_clean_with_production_settings(tmp_path, extra):
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "check", "--deploy", "--fail-level", "WARNING"],
        env=production_env(tmp_path, **extra), cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_turns_on_hsts_secure_cookies_and_the_https_redirect(monkeypatch, tmp_path):
    loaded = settings_under(monkeypatch, tmp_path)
    assert loaded["SESSION_COOKIE_SECURE"] and loaded["CSRF_COOKIE_SECURE"] and loaded["SECURE_SSL_REDIRECT"]
    assert loaded["SECURE_HSTS_SECONDS"] == 31_536_000 and loaded["SECURE_CONTENT_TYPE_NOSNIFF"]
    assert "SECURE_PROXY_SSL_HEADER" not in loaded  # trusting a proxy's header is the operator's choice
    behind_proxy = settings_under(monkeypatch, tmp_path, SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto",
                                  SECURE_SSL_REDIRECT="false", SECURE_HSTS_SECONDS="600")  # fmt: skip
    assert behind_proxy["SECURE_PROXY_SSL_HEADER"] == ("HTTP_X_FORWARDED_PROTO", "https")
    assert behind_proxy["SECURE_SSL_REDIRECT"] is False and behind_proxy["SECURE_HSTS_SECONDS"] == 600
    # The embedded default (http, on a laptop) keeps cookies working over plain http.
    local = settings_under(monkeypatch, tmp_path, SITE_URL="http://127.0.0.1:8000")
    assert not local["SESSION_COOKIE_SECURE"] and not local["SECURE_SSL_REDIRECT"] and local["SECURE_HSTS_SECONDS"] == 0


def test_the_csp_allows_the_preview_origin_in_frames_and_the_sites_websocket(monkeypatch, tmp_path):
    loaded = settings_under(monkeypatch, tmp_path, PREVIEW_ORIGIN="https://previews.example.com")
    directives = loaded["CONTENT_SECURITY_POLICY"]["DIRECTIVES"]
    assert directives["frame-src"] == ["'self'", "https://previews.example.com"]
    assert directives["connect-src"] == ["'self'", "wss://store.example.com"]


@pytest.mark.django_db
def test_store_pages_carry_the_csp(client, alice):
    for response in (client.get("/accounts/login/"), client.get("/healthz")):
        policy = response["Content-Security-Policy"]
        directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
        assert directives["default-src"] == "'self'" and directives["script-src"] == "'self'"
        assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'self'"
        assert directives["form-action"] == "'self'" and directives["base-uri"] == "'self'"
        assert "ws://127.0.0.1:8000" in directives["connect-src"]
    client.force_login(alice)
    home = client.get("/")["Content-Security-Policy"]
    assert "script-src 'self'" in [part.strip() for part in home.split(";")]  # the order of directives varies


@pytest.mark.django_db
def test_a_preview_keeps_its_own_sandbox_policy_and_may_be_framed_by_the_store(client, alice, settings):
    target = Target.objects.create(slug="web-player", name="Web Player", kind="web", git_url="/nowhere")
    prototype = Prototype.objects.create(slug="p", title="P", owner=alice, target=target)
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="idea", author=alice)
    build = Build.objects.create(revision=revision, state=Build.State.SUCCEEDED)
    artifact = Artifact(build=build, kind="web", filename="b.zip", size=3, sha256="0" * 64,
                        content_type="application/zip", metadata={"entry": "index.html"})  # fmt: skip
    artifact.file.save("b.zip", ContentFile(b"zip"), save=True)
    preview_dir(artifact).mkdir(parents=True, exist_ok=True)  # ids repeat across rolled-back tests
    (preview_dir(artifact) / "index.html").write_text("<script>document.title = 'hi'</script>")
    response = client.get(preview_url(artifact, user=alice))
    assert response.status_code == 200
    # Not replaced by the store's policy: the sandbox, and framing by the store only.
    assert response["Content-Security-Policy"] == f"{PREVIEW_CSP}; frame-ancestors 'self'"
    assert response["Content-Security-Policy"].startswith("sandbox allow-scripts")
    # On a separate preview origin, X-Frame-Options SAMEORIGIN alone would block the store's iframes.
    settings.PREVIEW_ORIGIN, settings.PREVIEW_HOST = "http://previews.testserver", "previews.testserver"
    settings.SITE_URL = "https://store.example.com"
    response = client.get(preview_url(artifact, user=alice).removeprefix(settings.PREVIEW_ORIGIN))
    assert response["Content-Security-Policy"].endswith("; frame-ancestors https://store.example.com")


def test_templates_and_scripts_hold_no_inline_script_the_policy_would_block():
    """script-src 'self' blocks inline scripts and on…= handlers: behaviour lives in static/*.js."""
    for template in (ROOT / "templates").rglob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), f"{template}: an inline <script>"
        assert not re.search(r"\son[a-z]+\s*=", text), f"{template}: an inline event handler"
        assert "javascript:" not in text, f"{template}: a javascript: URL"
