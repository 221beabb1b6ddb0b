"""Which key signs the store's Android apps, from settings: the company's keystore when one is set,
else the store's own debug key (made on first use). The key stays on the worker: agents/packaging.py
signs the APK after the sandboxed build (agents/apksign.py)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from agents.apksign import SigningKey, debug_key


def apk_signing_key() -> SigningKey:
    if settings.ANDROID_SIGNING_KEYSTORE:
        keystore = Path(settings.ANDROID_SIGNING_KEYSTORE)
        if not settings.ANDROID_SIGNING_KEY_ALIAS or not settings.ANDROID_SIGNING_KEYSTORE_PASSWORD:
            raise ImproperlyConfigured(
                "ANDROID_SIGNING_KEYSTORE is set, so ANDROID_SIGNING_KEY_ALIAS and ANDROID_SIGNING_KEYSTORE_PASSWORD "
                "(or ANDROID_SIGNING_KEYSTORE_PASSWORD_FILE) must be too"
            )
        return SigningKey(
            keystore,
            settings.ANDROID_SIGNING_KEY_ALIAS,
            settings.ANDROID_SIGNING_KEYSTORE_PASSWORD,
            settings.ANDROID_SIGNING_KEY_PASSWORD,
            kind="company",
        )
    return debug_key(settings.ANDROID_DEBUG_KEY_DIR)


def signing_secrets(key: SigningKey | None) -> tuple[str, ...]:
    """The key's passwords, for the engine to scrub from everything a build reports."""
    return tuple(p for p in (key.store_password, key.key_password) if p) if key else ()
