"""Preview URLs for web prototypes.

A prototype's page runs in an opaque origin (CSP sandbox), so the browser sends it no cookies: the
preview URL itself carries a signed, expiring capability for one artifact. Pages hand out these URLs
only after the visibility check, so the URL grants exactly what the page already showed.
"""

from __future__ import annotations

from django.conf import settings
from django.core import signing
from django.urls import reverse

SALT = "store.preview"
MAX_AGE = 12 * 3600


def preview_token(artifact_id: int) -> str:
    return signing.dumps(artifact_id, salt=SALT, compress=True)


def artifact_for_token(token: str) -> int | None:
    try:
        value = signing.loads(token, salt=SALT, max_age=MAX_AGE)
    except signing.BadSignature:
        return None
    return value if isinstance(value, int) else None


def preview_url(artifact) -> str:
    """Where a web prototype opens: on the preview origin when one is configured."""
    return settings.PREVIEW_ORIGIN + reverse("preview", args=[preview_token(artifact.pk)])
