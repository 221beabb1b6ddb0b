"""Preview URLs for web prototypes.

A prototype's page runs in an opaque origin (CSP sandbox) or on PREVIEW_ORIGIN, so the browser sends
it no cookies: the preview URL itself must say on whose behalf it was issued. Its signed token names
the artifact and a principal — the signed-in person it was shown to (with the prototype's slug when
the page was opened by its link), or the share link it was opened through — and every request for
the preview, each asset included, checks that principal against the visibility rule again
(`Artifact.objects.available_to`, or the share link's own rule). So making a prototype private,
removing a collaborator, revoking or expiring a share link, or a moderator's takedown stops every
preview URL issued before, at the next request. The token's age limit is only a backstop.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.urls import reverse

from prototypes.models import Artifact
from store import sharing

SALT = "store.preview"
MAX_AGE = 12 * 3600


def preview_token(artifact: Artifact, *, user=None, share_link=None, slug: str = "") -> str:
    """A token for one artifact on behalf of `share_link`, or else of `user` (who reached it through
    `slug`, if the page was opened by its link)."""
    if share_link is not None:
        value = {"a": artifact.pk, "s": share_link.pk}
    elif user is not None and user.is_authenticated:
        value = {"a": artifact.pk, "u": user.pk, "p": slug}
    else:
        raise ValueError("A preview URL is issued to a signed-in person or through a share link.")
    return signing.dumps(value, salt=SALT, compress=True)


def artifact_for_token(token: str) -> Artifact | None:
    """The web artifact a token opens, if the person or share link it was issued for may have it now;
    None for a forged, stale or old-style token, and for one whose principal lost access."""
    try:
        value = signing.loads(token, salt=SALT, max_age=MAX_AGE)
    except signing.BadSignature:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("a"), int):
        return None  # also tokens from before principals were named: they were bearer capabilities
    if isinstance(value.get("s"), int):
        link = sharing.resolve_id(value["s"])
        artifacts = sharing.shared_artifacts(link) if link is not None else Artifact.objects.none()
    elif isinstance(value.get("u"), int):
        user = get_user_model().objects.filter(pk=value["u"], is_active=True).first()
        slug = value.get("p") if isinstance(value.get("p"), str) else ""
        artifacts = Artifact.objects.available_to(user, slug=slug) if user else Artifact.objects.none()
    else:
        return None
    return artifacts.filter(pk=value["a"], kind=Artifact.Kind.WEB).select_related("build__revision__prototype").first()


def preview_url(artifact: Artifact, *, user=None, share_link=None, slug: str = "") -> str:
    """Where a web prototype opens: on the preview origin when one is configured."""
    token = preview_token(artifact, user=user, share_link=share_link, slug=slug)
    return settings.PREVIEW_ORIGIN + reverse("preview", args=[token])
