"""Settings for Prototype Store: one file, every value from the environment, with defaults under which
a fresh checkout runs (the embedded default: SQLite, files under var/, no Redis, replayed builds).
Every variable is listed in docker/.env.example."""

from __future__ import annotations

import os
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

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "channels",
    "prototypes",
    "store",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
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
            ],
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
        "NAME": VAR_DIR / "store.sqlite3",
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
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

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
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# --- builds ----------------------------------------------------------------------------------------
BUILD_ROOT = Path(env("BUILD_ROOT", str(VAR_DIR / "builds")))
MIRROR_ROOT = Path(env("MIRROR_ROOT", str(VAR_DIR / "mirrors")))
TARGET_REPO_ROOT = Path(env("TARGET_REPO_ROOT", str(VAR_DIR / "targets")))
EXAMPLES_DIR = BASE_DIR / "examples"
SANDBOX_BACKEND = env("SANDBOX_BACKEND", "bwrap")
SANDBOX_RO_BINDS = env_list("SANDBOX_RO_BINDS")
BUILD_TIMEOUT = env_int("BUILD_TIMEOUT", 1800)
COMMAND_TIMEOUT = env_int("COMMAND_TIMEOUT", 300)
BUILD_HEARTBEAT_LIMIT = env_int("BUILD_HEARTBEAT_LIMIT", 120)
SCREENSHOTS = env_bool("SCREENSHOTS", True)  # pictures of web prototypes with headless Chromium after a build
AGENT_MAX_TURNS = env_int("AGENT_MAX_TURNS", 40)
AGENT_MAX_TOKENS = env_int("AGENT_MAX_TOKENS", 3_000_000)
AGENT_MAX_COST = env("AGENT_MAX_COST", "5")
AGENT_MAX_VERIFY_ROUNDS = env_int("AGENT_MAX_VERIFY_ROUNDS", 4)
AGENT_JUDGE = env("AGENT_JUDGE", "off").lower() in {"on", "1", "true", "yes"}  # a reviewer call before finishing

# The model. Without ANTHROPIC_API_KEY (and no other provider chosen) builds replay recordings.
ANTHROPIC_API_KEY = secret("ANTHROPIC_API_KEY")
ANTHROPIC_BASE_URL = env("ANTHROPIC_BASE_URL")
AGENT_PROVIDER = env("AGENT_PROVIDER", "anthropic" if ANTHROPIC_API_KEY else "replay")
AGENT_MODEL = env("AGENT_MODEL", "claude-sonnet-5-5")
AGENT_REGION = env("AGENT_REGION")
AGENT_PROJECT = env("AGENT_PROJECT")
RECORDINGS_DIR = Path(env("RECORDINGS_DIR", str(EXAMPLES_DIR / "recordings")))
REPLAY_PACE = float(env("REPLAY_PACE", "0.4"))  # seconds before each replayed response: a demo build to watch

# --- background work -------------------------------------------------------------------------------
REDIS_URL = env("REDIS_URL")
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}}
else:
    # Embedded default: a broker in plain files under var/, shared by the web process and the worker.
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(VAR_DIR / "queue"),
        "data_folder_out": str(VAR_DIR / "queue"),
        "processed_folder": str(VAR_DIR / "queue-done"),
        "control_folder": str(VAR_DIR / "queue-control"),
        "store_processed": False,
    }
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
# How often a live build page also checks the event table (the only feed when the worker's broadcasts
# cannot reach the web process, as with the in-memory layer of the embedded default).
BUILD_EVENTS_POLL = float(env("BUILD_EVENTS_POLL", "2" if REDIS_URL else "0.5"))
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
if REDIS_URL:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": BUILD_TIMEOUT + 600}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
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

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
