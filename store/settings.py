"""Settings for Prototype Store: one file, every value from the environment, with defaults under which
a fresh checkout runs (the embedded default: SQLite, files under var/, no Redis, replayed builds).
Every variable is listed in docker/.env.example."""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


def secret(name: str, default: str = "") -> str:
    """A secret from NAME, or from the file named by NAME_FILE (Docker and Kubernetes secrets)."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(name, default)


DEBUG = env_bool("DEBUG", False)
VAR_DIR = Path(env("VAR_DIR", str(BASE_DIR / "var")))
SECRET_KEY = secret("SECRET_KEY")
if not SECRET_KEY:
    # The embedded default keeps a generated key under var/ so sessions survive restarts.
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        import secrets as _secrets

        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(_secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    SECRET_KEY = key_file.read_text().strip()

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
# A separate origin for web previews (e.g. https://previews.example.com): a prototype's code then runs on
# another site than the store. Without it, previews are served by the store under a CSP sandbox.
PREVIEW_ORIGIN = env("PREVIEW_ORIGIN").rstrip("/")
if PREVIEW_ORIGIN:
    from urllib.parse import urlsplit

    PREVIEW_HOST = urlsplit(PREVIEW_ORIGIN).hostname or ""
    if PREVIEW_HOST and PREVIEW_HOST not in ALLOWED_HOSTS:
        ALLOWED_HOSTS.append(PREVIEW_HOST)
else:
    PREVIEW_HOST = ""
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
SITE_URL = env("SITE_URL", "http://127.0.0.1:8000").rstrip("/")


def _live_preview_domain() -> str:
    """Live previews (server apps) get an origin each: http://<label>.<LIVE_PREVIEW_DOMAIN>. By default
    localhost:<the store's port> (browsers resolve every *.localhost name to loopback; the same server
    answers: store/asgi.py), so `make run` works as is; `runstore` passes its port in STORE_PORT. In
    production: a wildcard domain of its own, never under the store's (a preview could set cookies
    for the store's domain)."""
    from urllib.parse import urlsplit

    site = urlsplit(SITE_URL)
    domain = env("LIVE_PREVIEW_DOMAIN").strip().strip(".").lower()
    if not domain:
        port = env_int("STORE_PORT", site.port or (443 if site.scheme == "https" else 80))
        return f"localhost:{port}"
    name, store = domain.rsplit(":", 1)[0], (site.hostname or "").lower()
    if store and (name == store or name.endswith("." + store)):
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            f"LIVE_PREVIEW_DOMAIN ({domain}) must not be the store's domain or under it ({store})."
        )
    return domain


LIVE_PREVIEW_DOMAIN = _live_preview_domain()
LIVE_PREVIEW_SCHEME = env("LIVE_PREVIEW_SCHEME", SITE_URL.split("://", 1)[0])
# How long the live preview proxy may reuse an access check (seconds): taking access away stops a live
# preview within this time. 0 checks every request.
LIVE_PREVIEW_ACCESS_CACHE = float(env("LIVE_PREVIEW_ACCESS_CACHE", "2"))

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "csp",
    "prototypes",
    "store",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "store.request_size.RequestSizeMiddleware",  # before anything reads the body (CSRF does)
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "store.middleware.DropNulCharacters",  # PostgreSQL cannot store NUL: no view ever sees one
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "store.ratelimit.CountAcceptedBuilds",  # builds count against the build limit once they were accepted
    "django.contrib.messages.middleware.MessageMiddleware",
    "store.middleware.PreviewHostMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "store.urls"
WSGI_APPLICATION = "store.wsgi.application"
ASGI_APPLICATION = "store.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "store.context.site",
                "store.auth.sign_in",
            ],
            # {{ user|person }} and {{ title|no_bidi }} in every template: see store/templatetags/display.py.
            "builtins": ["store.templatetags.display"],
        },
    },
]


def _database() -> dict:
    url = env("DATABASE_URL")
    if url:
        from urllib.parse import unquote, urlparse

        parsed = urlparse(url)
        if parsed.scheme not in {"postgres", "postgresql"}:
            raise ValueError("DATABASE_URL must be a postgres:// URL")
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": parsed.path.lstrip("/"),
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
            "CONN_MAX_AGE": env_int("DATABASE_CONN_MAX_AGE", 60),
        }
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": Path(env("SQLITE_PATH", str(VAR_DIR / "store.sqlite3"))),
        # The web process and the worker share this file: wait for locks and take write locks up front.
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
        # A file, not memory, so tests can race two connections (threads) against each other.
        "TEST": {"NAME": str(VAR_DIR / "test.sqlite3")},
    }


DATABASES = {"default": _database()}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    INSTALLED_APPS.append("django.contrib.postgres")  # full-text search in the catalog
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# --- sign-in with OpenID Connect (store/auth.py); local accounts always work too ---------------------
OIDC_RP_CLIENT_ID = env("OIDC_RP_CLIENT_ID")
OIDC_ENABLED = bool(OIDC_RP_CLIENT_ID)
OIDC_RP_CLIENT_SECRET = secret("OIDC_RP_CLIENT_SECRET")
OIDC_OP_AUTHORIZATION_ENDPOINT = env("OIDC_OP_AUTHORIZATION_ENDPOINT")
OIDC_OP_TOKEN_ENDPOINT = env("OIDC_OP_TOKEN_ENDPOINT")
OIDC_OP_USER_ENDPOINT = env("OIDC_OP_USER_ENDPOINT")
OIDC_OP_JWKS_ENDPOINT = env("OIDC_OP_JWKS_ENDPOINT") or None
OIDC_RP_SIGN_ALGO = env("OIDC_RP_SIGN_ALGO", "RS256")
OIDC_RP_SCOPES = env("OIDC_RP_SCOPES", "openid email profile")
OIDC_PROVIDER_NAME = env("OIDC_PROVIDER_NAME", "single sign-on")
OIDC_GROUPS_CLAIM = env("OIDC_GROUPS_CLAIM")  # e.g. "groups": the claim listing the person's groups at the provider
OIDC_ROLE_GROUPS = env("OIDC_ROLE_GROUPS")  # "provider-group=role,...", roles: viewer, maker, moderator, admin
OIDC_DEFAULT_ROLE = env("OIDC_DEFAULT_ROLE", "maker")
OIDC_USE_PKCE = True
OIDC_TIMEOUT = 15
LOGIN_REDIRECT_URL_FAILURE = "/accounts/login/?sso=failed"
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]
if OIDC_ENABLED:
    AUTHENTICATION_BACKENDS.insert(0, "store.auth.StoreOIDCBackend")
    # Checked here, at start: a half-configured provider would otherwise break every sign-in, local ones too.
    _needed = ["OIDC_OP_AUTHORIZATION_ENDPOINT", "OIDC_OP_TOKEN_ENDPOINT", "OIDC_OP_USER_ENDPOINT"]
    if OIDC_RP_SIGN_ALGO.startswith(("RS", "ES")):
        _needed.append("OIDC_OP_JWKS_ENDPOINT")
    if _missing := [name for name in _needed if not globals()[name]]:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"OIDC_RP_CLIENT_ID is set, so single sign-on also needs {', '.join(_missing)}")

# --- security headers and cookies: strict when the store is served over https without DEBUG ----------
HTTPS = SITE_URL.startswith("https://") and not DEBUG
# Behind a proxy that terminates TLS: the header it sets to "https" (e.g. X-Forwarded-Proto). Only set
# it when the proxy always sets or strips that header, or anyone could claim https.
_proxy_header = env("SECURE_PROXY_SSL_HEADER")
if _proxy_header:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_header.upper().replace("-", "_"), "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", HTTPS)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]  # health checks come over plain http from inside
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# DENY for the store's own pages; the preview view allows framing itself (store/views.py preview).
X_FRAME_OPTIONS = "DENY"
SILENCED_SYSTEM_CHECKS = []
if HTTPS and not SECURE_HSTS_PRELOAD:
    # Preloading is a decision for the company's whole domain (hstspreload.org takes registrable
    # domains only), not for this app: without SECURE_HSTS_PRELOAD=true the store does not ask for it.
    SILENCED_SYSTEM_CHECKS.append("security.W021")
if HTTPS and not SECURE_SSL_REDIRECT:
    # SECURE_SSL_REDIRECT=false was chosen explicitly: the proxy in front redirects http to https.
    SILENCED_SYSTEM_CHECKS.append("security.W008")

# Content-Security-Policy (django-csp) for the store's own pages. Responses that set their own policy
# keep it: web previews (a sandbox for untrusted code) and attachments. Inline styles stay allowed
# (a progress bar's width, the highlighted diff's stylesheet); inline scripts never are.
_ws_origin = SITE_URL.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "frame-src": ["'self'", *([PREVIEW_ORIGIN] if PREVIEW_ORIGIN else [])],
        "connect-src": ["'self'", _ws_origin],  # the live build page's websocket
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'self'"],
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
SERVE_STATIC = env_bool("SERVE_STATIC", True)
MEDIA_ROOT = Path(env("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"  # never served directly: downloads go through views that check visibility
PREVIEW_ROOT = Path(env("PREVIEW_ROOT", str(VAR_DIR / "previews")))


def _storages() -> dict:
    """Artifacts, screenshots and attachments: in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2, ...) when
    STORAGE_BUCKET is set, else as files under MEDIA_ROOT. Without keys, boto3 finds credentials itself
    (instance or pod roles, ~/.aws)."""
    bucket = env("STORAGE_BUCKET")
    if not bucket:
        default = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    else:
        default = {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "location": env("STORAGE_PREFIX"),  # a folder inside the bucket, e.g. "store/"
                "endpoint_url": env("STORAGE_ENDPOINT_URL") or None,  # e.g. http://minio:9000; empty: AWS
                "region_name": env("STORAGE_REGION") or None,
                "access_key": secret("STORAGE_ACCESS_KEY_ID") or None,
                "secret_key": secret("STORAGE_SECRET_ACCESS_KEY") or None,
                "custom_domain": env("STORAGE_CUSTOM_DOMAIN") or None,
                "addressing_style": env("STORAGE_ADDRESSING_STYLE") or None,  # "path" for most MinIO setups
                "file_overwrite": False,  # like the file system: a new name rather than replacing a file
                "default_acl": None,  # the bucket's policy decides; files are only ever served through views
                "querystring_auth": True,
                "max_memory_size": 16 * 2**20,  # a file being read spills to disk past this
            },
        }
    return {"default": default, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}


STORAGES = _storages()
# Downloads behind nginx (docs/deploy.md): a URL prefix that nginx maps, as an internal location, to
# MEDIA_ROOT. Views then answer with X-Accel-Redirect and nginx sends the file. File-system storage only.
DOWNLOAD_ACCEL_REDIRECT = env("DOWNLOAD_ACCEL_REDIRECT")

# --- builds ----------------------------------------------------------------------------------------
BUILD_ROOT = Path(env("BUILD_ROOT", str(VAR_DIR / "builds")))
MIRROR_ROOT = Path(env("MIRROR_ROOT", str(VAR_DIR / "mirrors")))
TARGET_REPO_ROOT = Path(env("TARGET_REPO_ROOT", str(VAR_DIR / "targets")))
EXAMPLES_DIR = BASE_DIR / "examples"
SANDBOX_BACKEND = env("SANDBOX_BACKEND", "bwrap")
if SANDBOX_BACKEND == "docker":
    # Checked here, at start: every build would fail otherwise, and no other backend may stand in for it.
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        "SANDBOX_BACKEND=docker: the docker sandbox backend was removed, because it was never proven to work "
        "(agents.sandbox.REMOVED_BACKENDS says why). Set SANDBOX_BACKEND=bwrap; see docs/deploy.md."
    )
SANDBOX_RO_BINDS = env_list("SANDBOX_RO_BINDS")
# Language versions a recipe's [toolchain] may name, one folder each: <root>/node/22, <root>/python/3.12
# (agents/toolchains.py; docs/deploy.md says how to fill it). Shown read-only to the builds that ask.
TOOLCHAIN_ROOT = Path(env("TOOLCHAIN_ROOT", str(VAR_DIR / "toolchains")))
# Android apps are signed on the worker after the sandboxed build (agents/apksign.py), never inside it:
# with the company's keystore when one is set (PKCS12 or JKS; passwords also from NAME_FILE secrets), else
# with the store's own debug key, made on first use in ANDROID_DEBUG_KEY_DIR (share that folder between
# workers, or every worker signs with a key of its own and phones refuse updates across them).
ANDROID_SIGNING_KEYSTORE = env("ANDROID_SIGNING_KEYSTORE", "")
ANDROID_SIGNING_KEY_ALIAS = env("ANDROID_SIGNING_KEY_ALIAS", "")
ANDROID_SIGNING_KEYSTORE_PASSWORD = secret("ANDROID_SIGNING_KEYSTORE_PASSWORD")
ANDROID_SIGNING_KEY_PASSWORD = secret("ANDROID_SIGNING_KEY_PASSWORD")  # empty: the keystore's password
ANDROID_DEBUG_KEY_DIR = Path(env("ANDROID_DEBUG_KEY_DIR", str(VAR_DIR / "android-debug-key")))
# Private networks (CIDR) that targets' allowed hosts may resolve into, e.g. a company package mirror at
# 10.20.0.0/16; by default setup commands reach public addresses only (agents/egress.py).
EGRESS_PRIVATE_NETWORKS = env_list("EGRESS_PRIVATE_NETWORKS")
BUILD_TIMEOUT = env_int("BUILD_TIMEOUT", 1800)
COMMAND_TIMEOUT = env_int("COMMAND_TIMEOUT", 300)
BUILD_DISK_QUOTA_MB = env_int("BUILD_DISK_QUOTA_MB", 4096)  # what one build may write to disk
BUILD_MAX_FILE_MB = env_int("BUILD_MAX_FILE_MB", 50)  # larger files are not committed to the mirror
BUILD_HEARTBEAT_LIMIT = env_int("BUILD_HEARTBEAT_LIMIT", 60)
# A build runner (docs/runners.md) silent this long loses its job: re-queued once, then failed as "runner lost".
RUNNER_LEASE_SECONDS = env_int("RUNNER_LEASE_SECONDS", 60)
# A build still queued this long after its task was sent gets it sent again (the message may have been lost
# with a broker restart, or never sent while the broker was down); a duplicate delivery is harmless.
QUEUED_RESEND_AFTER = env_int("QUEUED_RESEND_AFTER", 300)
# The browser check of web and served prototypes before they are published (docs/agent.md); off: their own
# build and tests only, said in each build's log.
BROWSER_CHECK = env_bool("BROWSER_CHECK", True)
SCREENSHOTS = env_bool("SCREENSHOTS", True)  # pictures of web prototypes with headless Chromium after a build
AGENT_MAX_TURNS = env_int("AGENT_MAX_TURNS", 40)
AGENT_MAX_TOKENS = env_int("AGENT_MAX_TOKENS", 3_000_000)
AGENT_MAX_COST = env("AGENT_MAX_COST", "5")
AGENT_MAX_VERIFY_ROUNDS = env_int("AGENT_MAX_VERIFY_ROUNDS", 4)
# Attempts of one idea a maker may ask for at once (prototypes/attempts.py); each is a whole build, counted
# and charged like one, and the budget is checked for all of them up front. Targets default to 1.
MAX_ATTEMPTS = env_int("MAX_ATTEMPTS", 4)
# The judge (agents/judge.py): a checklist written from the idea, and the finished change graded against it
# before it is published. On unless AGENT_JUDGE=off; with the replay provider it runs only for sample
# conversations that carry their own sample review.
AGENT_JUDGE = env_bool("AGENT_JUDGE", True)

# --- live previews (prototypes/instances.py): served versions run on demand, stopped when idle ---------
# Per host: unpacked artifacts (apps/, shared by instances), each instance's data (data/, kept across idle
# stops until reset or retention) and its running folders (run/, with the app's socket: keep the path short).
LIVE_PREVIEW_ROOT = Path(env("LIVE_PREVIEW_ROOT", str(VAR_DIR / "live")))
PREVIEW_MAX_RUNNING = env_int("PREVIEW_MAX_RUNNING", 20)  # running instances per host; the least recently used stop
PREVIEW_WORKERS = env_int("PREVIEW_WORKERS", 4)  # instances the preview worker may be starting at once (threads)
# Several preview hosts (prototypes/preview_hosts.py): each previews worker names itself (unique per worker),
# serves its instances to the web tier on an internal route and keeps a heartbeat in the PreviewHost registry.
PREVIEW_HOST_NAME = env("PREVIEW_HOST_NAME") or socket.gethostname()
PREVIEW_INTERNAL_LISTEN = env("PREVIEW_INTERNAL_LISTEN", "127.0.0.1:0")  # host:port (0: any free port)
PREVIEW_INTERNAL_ADDRESS = env("PREVIEW_INTERNAL_ADDRESS")  # host:port the web tier dials; default: the listen one
# The web tier and every previews worker must share it; by default one derived from SECRET_KEY (shared already).
PREVIEW_INTERNAL_SECRET = (
    secret("PREVIEW_INTERNAL_SECRET")
    or hmac.new(SECRET_KEY.encode(), b"preview-internal-route", hashlib.sha256).hexdigest()
)
PREVIEW_HOST_HEARTBEAT = env_int("PREVIEW_HOST_HEARTBEAT", 10)  # seconds between a previews worker's heartbeats
PREVIEW_HOST_TIMEOUT = env_int("PREVIEW_HOST_TIMEOUT", 45)  # a host silent this long is lost: its instances move

# --- retention (prototypes/retention.py): files of old versions expire; 0 turns a rule off -----------
# Never expired: pinned artifacts, those of a prototype's current version, and patches (the record of
# what changed). Screenshots are kept.
RETENTION_DAYS = env_int("RETENTION_DAYS", 90)
RETENTION_KEEP_REVISIONS = env_int("RETENTION_KEEP_REVISIONS", 0)  # per prototype, the newest built versions
RETENTION_MAX_BYTES = env_int("RETENTION_MAX_BYTES", 0)  # all artifacts together; the oldest go first

# The model. Without ANTHROPIC_API_KEY (and no other provider chosen) builds replay sample conversations.
ANTHROPIC_API_KEY = secret("ANTHROPIC_API_KEY")
ANTHROPIC_BASE_URL = env("ANTHROPIC_BASE_URL")
AGENT_PROVIDER = env("AGENT_PROVIDER", "anthropic" if ANTHROPIC_API_KEY else "replay")
AGENT_MODEL = env("AGENT_MODEL", "claude-sonnet-5-5")
AGENT_REGION = env("AGENT_REGION")
AGENT_PROJECT = env("AGENT_PROJECT")
RECORDINGS_DIR = Path(env("RECORDINGS_DIR", str(EXAMPLES_DIR / "recordings")))
REPLAY_PACE = float(env("REPLAY_PACE", "0.4"))  # seconds before each replayed response: a demo build to watch

# --- budgets and rate limits -----------------------------------------------------------------------
# Called as gate(user, target) before any build is created; returns why not (plain words) or None.
BUILD_GATE = env("BUILD_GATE", "store.budgets.check_build")
# Per person, unless an admin set other limits (cost page): 0 or empty means no limit.
BUDGET_DAILY_BUILDS = env_int("BUDGET_DAILY_BUILDS", 20)
BUDGET_MONTHLY_BUILDS = env_int("BUDGET_MONTHLY_BUILDS", 200)
BUDGET_DAILY_DOLLARS = env("BUDGET_DAILY_DOLLARS", "10")
BUDGET_MONTHLY_DOLLARS = env("BUDGET_MONTHLY_DOLLARS", "100")
BUDGET_CONTACT = env("BUDGET_CONTACT")  # who to ask for more, e.g. "#prototype-store on Slack"; default: the admins
# "<count>/<s|m|h|d>"; empty or 0 turns a limit off.
RATELIMIT_BUILDS = env("RATELIMIT_BUILDS", "10/h")  # new builds per person
RATELIMIT_COMMENTS = env("RATELIMIT_COMMENTS", "30/h")  # comments per person
RATELIMIT_SHARE_LINKS = env("RATELIMIT_SHARE_LINKS", "120/m")  # share-link requests per client address
RATELIMIT_CLIENT_IP_HEADER = env("RATELIMIT_CLIENT_IP_HEADER")  # e.g. X-Forwarded-For behind one proxy

# --- moderation ------------------------------------------------------------------------------------
# On: a prototype for the whole company waits for a moderator's approval before it is listed.
MODERATION_REQUIRED = env_bool("MODERATION_REQUIRED", False)


# --- background work -------------------------------------------------------------------------------
def redis_channel_layer(url: str) -> dict:
    # redis-py (8) gives up a read after 5 s by default, while channels_redis blocks up to 5 s waiting for
    # a message: without a longer socket timeout an idle build page loses its feed after a few seconds.
    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": url, "socket_timeout": 15}]},
    }


REDIS_URL = env("REDIS_URL")
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CHANNEL_LAYERS = {"default": redis_channel_layer(REDIS_URL)}
else:
    # Embedded default: a broker in plain files under var/, shared by the web process and the worker.
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(VAR_DIR / "queue"),
        "data_folder_out": str(VAR_DIR / "queue"),
        "processed_folder": str(VAR_DIR / "queue-done"),
        "control_folder": str(VAR_DIR / "queue-control"),
        "store_processed": False,
        # A worker lists the queue folder this often when it is empty (kombu's default is 1 s). A live
        # preview's start waits for that poll while a person looks at the "Starting" page: at 1 s it was
        # most of the store's share of a cold start (bench/preview.py); an idle worker's listing at 0.1 s
        # costs well under 1% of a core.
        "polling_interval": 0.1,
    }
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
# How often a live build page also checks the event table (the only feed when the worker's broadcasts
# cannot reach the web process, as with the in-memory layer of the embedded default).
BUILD_EVENTS_POLL = float(env("BUILD_EVENTS_POLL", "2" if REDIS_URL else "0.5"))
# The cache holds rate-limit counters: shared by all web processes through Redis; per process without it.
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                          "KEY_PREFIX": "store"}}  # fmt: skip
    # Sessions read from the shared cache (the database stays their record): one query fewer on every
    # signed-in page. Only with a shared cache: per-process caches would let a session signed out in one
    # web process live on in another's copy.
    SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "store"}}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_ACKS_LATE = True
# Live preview instances run as children of their own worker (`-Q previews --pool threads`), never of a
# build worker: a long build must not hold up a start, and the apps end with the process that started them.
CELERY_TASK_ROUTES = {
    "prototypes.tasks.start_instance": {"queue": "previews"},
    "prototypes.tasks.stop_idle_instances": {"queue": "previews"},
}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A running build needs the database, not the broker: when Redis restarts, let it finish (Celery 6 would
# cancel it by default). Its message is redelivered, and the conditional state move makes that a no-op.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # workers log through LOGGING below (JSON lines, build ids)
if REDIS_URL:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": BUILD_TIMEOUT + 600}

# The REST API (/api/, docs at /api/docs/): tokens for scripts (from /api/token/), the session for people.
# Token first, so a request with no credentials answers 401 (with WWW-Authenticate), not 403.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Signed in, and the role table allows the verb (a viewset's `role_actions`; prototypes/access.py).
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "prototypes.api_permissions.RoleAllows",
    ],
    "DEFAULT_PAGINATION_CLASS": "store.api_policies.Pages",
    "DEFAULT_THROTTLE_CLASSES": ["store.api_policies.Limits"],
    "EXCEPTION_HANDLER": "store.api_errors.handle",
    # JSON nested too deep (or too large) is a 400 before json.loads can recurse: see store/api_parsers.py.
    "DEFAULT_PARSER_CLASSES": [
        "store.api_parsers.ShallowJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Prototype Store API",
    "DESCRIPTION": "Targets, prototypes, versions, builds and their logs, artifacts, comments, reactions, share "
    "links and flags. Send your token (from /api/token/) as `Authorization: Token <token>`. Every error "
    'has one shape: `{"error": {"code", "message", "fields"}}`.',
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/",
    "SWAGGER_UI_DIST": "SIDECAR",  # served from our static files: the docs page works offline
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},  # no call to swagger.io's validator
    "ENUM_NAME_OVERRIDES": {
        "TargetKind": "prototypes.models.Target.Kind",
        "Visibility": "prototypes.models.Prototype.Visibility",
        "Listing": "prototypes.models.Prototype.Listing",
        "BuildState": "prototypes.models.Build.State",
        "ArtifactKind": "prototypes.models.Artifact.Kind",
        "ReactionKind": "store.models.Reaction.Kind",
        "FlagState": "store.models.Flag.State",
    },
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "store.api_errors.document_errors"],
}

# Seeded demo accounts (embedded default); disable in production.
DEMO_USERS = env_bool("DEMO_USERS", True)
DEMO_PASSWORD = env("DEMO_PASSWORD", "demo-pass-2026")

EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = secret("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "Prototype Store <prototypes@localhost>")
SLACK_WEBHOOK_URL = secret("SLACK_WEBHOOK_URL")  # an incoming-webhook URL: builds and feedback are posted there

# --- observability (store/observability.py) ------------------------------------------------------
LOG_FORMAT = env("LOG_FORMAT", "plain")  # plain | json (one object per line, with build_id during builds)
# /metrics asks for "Authorization: Bearer <token>" when set; without it only loopback and private addresses
# reaching the server directly (no proxy header) may read it.
METRICS_TOKEN = secret("METRICS_TOKEN")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"build": {"()": "store.observability.BuildIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s%(build)s %(message)s"},
        "json": {"()": "store.observability.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["build"],
        }
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
